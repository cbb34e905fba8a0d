//! One canonical request: the path, host and headers the gateway verifies are the ones it
//! authorizes and the ones it forwards. Nothing is normalized or guessed: a request that two
//! parsers could read differently is refused, so an upstream can never see a different request
//! than the policy saw.
//!
//! Refused (400 unless said otherwise): a target that is not origin-form (absolute-form and
//! authority-form on ordinary methods, `*` except for `OPTIONS`), a fragment, control characters
//! or raw non-ASCII bytes, dot segments, empty segments, `;` path parameters, backslashes,
//! percent-encoded slashes, backslashes, control characters or unreserved characters, bad
//! percent-encoding; a missing, repeated or malformed `Host`; a `Host` that is not the TLS server
//! name (421); conflicting `Content-Length`, or `Content-Length` with `Transfer-Encoding`; a
//! transfer coding other than `chunked`; header names with underscores; method and target
//! overrides (`X-HTTP-Method-Override`, `X-Original-URL`, …). On HTTP/1.1 the gateway's
//! own loop (`h1.rs`) hands every field over as the client sent it, so each of these is seen and
//! refused here rather than resolved by a parser in front.
//!
//! On HTTP/2 the target comes as `:scheme` (https only), `:authority` and `:path`: the authority
//! takes the place of `Host` (both present: they must be equal), and `:path` gets the same checks
//! as an HTTP/1.1 origin-form target. Connection-specific headers are refused by the HTTP/2
//! layer itself (the h2 crate resets the stream).
//!
//! Then the request is cleaned for the upstream: hop-by-hop headers (and those `Connection`
//! names) are removed first, then every identity header a client could send (zerogate's own and
//! the well-known families of other proxies and load balancers); the gateway adds its own
//! identity assertion afterwards, so `Connection:` can never remove it.

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Uri, Version};

/// Why a request is refused, with the status to answer. The reason is for the audit record and
/// logs; clients get a generic body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// 400 or 421.
    pub status: u16,
    /// What is wrong, never quoting the request.
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> Refusal {
    Refusal { status: 400, reason }
}

/// The request as verified, authorized and forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    /// The host, lowercase, without port or trailing dot: the application's name.
    pub host: String,
    /// The path exactly as received (it passed every check, so it has one reading).
    pub path: String,
    /// The query exactly as received, without `?`.
    pub query: Option<String>,
}

impl CanonicalRequest {
    /// Path and query, as forwarded.
    pub fn target(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }

    /// Path and query as the audit log keeps them: the values of query parameters that carry
    /// a secret (a presigned URL's signature and session token, OAuth tokens, codes and client
    /// assertions, API keys, passwords, session ids), and any value holding a JWT, replaced by
    /// `REDACTED`, since whoever reads the log could use them; the names and every other value
    /// stay, to say what was asked. A name is secret when any part of it is (`user[password]`,
    /// `auth.token`), however it is spelled (`API-Key`, `api_key`, `%61pi_key`), and when it
    /// contains a word only secrets' names do (`new_password`, `private_token`,
    /// `oauth_signature`). Parameters are separated by `&`; a `;` (which some servers also take
    /// as a separator) starts a new name, but once a secret's value begins everything up to the
    /// next `&` is hidden, since `;` may as well be part of that value.
    pub fn recorded_target(&self) -> String {
        let Some(query) = &self.query else { return self.path.clone() };
        let mut out = String::with_capacity(self.path.len() + 1 + query.len());
        out.push_str(&self.path);
        out.push('?');
        for (index, pair) in query.split('&').enumerate() {
            if index > 0 {
                out.push('&');
            }
            for (part_index, part) in pair.split(';').enumerate() {
                if part_index > 0 {
                    out.push(';');
                }
                // `Some(Some(name))`: the value is hidden; `Some(None)`: all of it is (a JWT
                // with no name, or in the name).
                let named = part.split_once('=');
                let hidden = if holds_jwt(part) {
                    Some(named.map(|(name, _)| name).filter(|name| !holds_jwt(name)))
                } else {
                    named
                        .filter(|(name, value)| carries_secret(name) || nests_secret(value))
                        .map(|(name, _)| Some(name))
                };
                match hidden {
                    Some(Some(name)) => {
                        out.push_str(name);
                        out.push_str("=REDACTED");
                    }
                    Some(None) => out.push_str("REDACTED"),
                    None => {
                        out.push_str(part);
                        continue;
                    }
                }
                // The rest of this `&` pair may be the secret's own value.
                break;
            }
        }
        out
    }
}

/// Words that, anywhere in a parameter's name (compared percent-decoded, without case, and with
/// everything but ASCII letters and digits left out), make its value a secret: only secrets'
/// names hold them.
const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "passw",
    "passcode",
    "signature",
    "sessid",
    "sessionid",
    "apikey",
    "accesskey",
    "privatekey",
    "subscriptionkey",
    "licensekey",
    "signingkey",
    "hmackey",
    "encryptionkey",
    "authcode",
    "authorizationcode",
    "devicecode",
    "authorization",
    "assertion",
    "samlresponse",
    "jwt",
];

/// Names whose value is a secret only as the whole name (as words they are too common:
/// `keyword`, `monkey`, `zipcode`, `passenger`).
const SECRET_NAMES: &[&str] = &["key", "code", "sig", "pwd", "pass", "sid", "ticket", "otp"];

/// Whether any part of a parameter name is a secret's: the name is split at `[`, `]` and `.`,
/// the ways frameworks nest names (`user[password]`, `auth.token`), and each part folded to its
/// letters and digits (`API-Key`, `api+key`, `api%20key` are `apikey`).
fn carries_secret(name: &str) -> bool {
    let decoded = percent_decode(name.as_bytes());
    decoded.split(|b| matches!(b, b'[' | b']' | b'.')).any(|part| {
        let folded: Vec<u8> = part.iter().filter(|b| b.is_ascii_alphanumeric()).map(u8::to_ascii_lowercase).collect();
        !folded.is_empty()
            && (SECRET_NAMES.iter().any(|secret| folded == secret.as_bytes())
                || SECRET_WORDS.iter().any(|word| folded.windows(word.len()).any(|w| w == word.as_bytes())))
    })
}

/// Whether a value carries parameters of its own with a secret among them, as a return URL
/// does (`next=%2Fcb%3Faccess_token%3Dabc`, `redirect=https://app/cb#access_token=abc`,
/// `filter=token%3Dabc`): the value is read as it is, percent-decoded, and decoded twice (for a
/// URL encoded inside an encoded URL), each time split at `?`, `&`, `;` and `#` into
/// `name=value` pieces whose names are checked as a parameter's are. Linear in the value.
fn nests_secret(value: &str) -> bool {
    let names_secret = |text: &[u8]| {
        text.split(|b| matches!(b, b'?' | b'&' | b';' | b'#')).any(|piece| {
            piece
                .iter()
                .position(|b| *b == b'=')
                .and_then(|at| piece.get(..at))
                .is_some_and(|name| carries_secret(&String::from_utf8_lossy(name)))
        })
    };
    if !value.contains(['%', '=', '?', '#']) {
        return false;
    }
    let once = percent_decode(value.as_bytes());
    names_secret(value.as_bytes()) || names_secret(&once) || names_secret(&percent_decode(&once))
}

/// Whether text (percent-decoded) holds a compact JWS or JWE anywhere: a base64url run holding
/// `eyJ` (`{"` encoded, the start of a header), a dot, a base64url run (empty in a JWE with
/// `alg: dir`) and another dot, as in `next=/cb?id_token=eyJ…` or `Bearer eyJ…`. One pass over
/// the text: every `eyJ` in a run ends where the run does, so each run is looked at once.
fn holds_jwt(text: &str) -> bool {
    let decoded = percent_decode(text.as_bytes());
    let base64url = |b: &&u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_');
    let run_at = |at: usize| decoded.get(at..).unwrap_or_default().iter().take_while(base64url).count();
    let mut at = 0;
    while at < decoded.len() {
        let run = run_at(at);
        if run == 0 {
            at += 1;
            continue;
        }
        let end = at + run;
        let header = decoded.get(at..end).unwrap_or_default();
        if decoded.get(end) == Some(&b'.') && header.windows(3).any(|w| w == b"eyJ") {
            let payload = run_at(end + 1);
            if decoded.get(end + 1 + payload) == Some(&b'.') {
                return true;
            }
        }
        at = end;
    }
    false
}

/// `%XX` escapes decoded (a malformed escape kept as it is); `+` left alone.
fn percent_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    while let Some(&b) = text.get(at) {
        match percent_byte(text, at).filter(|_| b == b'%') {
            Some(decoded) => {
                out.push(decoded);
                at += 3;
            }
            None => {
                out.push(b);
                at += 1;
            }
        }
    }
    out
}

/// Checks a request as received on a TLS connection whose client asked for `server_name` (SNI),
/// on a listener at `port`. On HTTP/2 the host comes from `:authority` (which hyper puts in the
/// URI, with `:scheme`), or from `Host` when `:authority` is absent; when both are present they
/// must agree.
pub fn canonicalize(
    version: Version,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    server_name: Option<&str>,
    port: u16,
) -> Result<CanonicalRequest, Refusal> {
    let authority = if version == Version::HTTP_2 {
        if uri.scheme_str().is_some_and(|scheme| scheme != "https") {
            return Err(bad("HTTP/2 `:scheme` is not https"));
        }
        uri.authority().map(hyper::http::uri::Authority::as_str)
    } else {
        if uri.scheme().is_some() || uri.authority().is_some() {
            return Err(bad("the request target must be origin-form (absolute and authority forms are refused)"));
        }
        None
    };
    let target = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or_default();
    if target == "*" {
        return Err(if method == Method::OPTIONS { bad("`OPTIONS *` is not served") } else { bad("`*` target") });
    }
    // Methods are case-sensitive (RFC 9110 9.1): `delete` is not DELETE to a policy, but some
    // frameworks upper-case it and act as if it were. Refused, not guessed.
    if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(bad("a method with lower-case letters (methods are case-sensitive)"));
    }
    if method == Method::CONNECT {
        return Err(bad("CONNECT is not served on an HTTP application"));
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    check_path(path)?;
    if let Some(query) = query {
        check_query(query)?;
    }
    let host = check_host(host_value(authority, headers)?, server_name, port)?;
    check_headers(headers)?;
    Ok(CanonicalRequest { host, path: path.to_owned(), query: query.map(str::to_owned) })
}

fn check_path(path: &str) -> Result<(), Refusal> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(bad("the path must start with `/`"));
    }
    check_target_bytes(bytes)?;
    if bytes.contains(&b';') {
        return Err(bad("`;` path parameters are refused"));
    }
    // Percent-encoding: well-formed, and never hiding a character that changes the reading.
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let decoded = percent_byte(bytes, i).ok_or(bad("malformed percent-encoding in the path"))?;
            match decoded {
                b'/' => return Err(bad("encoded `/` in the path")),
                b'\\' => return Err(bad("encoded `\\` in the path")),
                b'.' => return Err(bad("encoded `.` in the path")),
                b';' => return Err(bad("encoded `;` in the path")),
                // `%25` before two hex digits is a percent-encoding encoded again: an upstream
                // that decodes twice reads another character than the one decided on.
                b'%' if bytes.get(i + 3..i + 5).is_some_and(|next| next.iter().all(u8::is_ascii_hexdigit)) => {
                    return Err(bad("double percent-encoding in the path"));
                }
                b'%' => {}
                0..=0x1f | 0x7f => return Err(bad("encoded control character in the path")),
                b if is_unreserved(b) => return Err(bad("encoded unreserved character in the path")),
                _ => {}
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    if path.split('/').any(|segment| segment == "." || segment == "..") {
        return Err(bad("dot segment in the path"));
    }
    if path.contains("//") {
        return Err(bad("empty segment in the path"));
    }
    Ok(())
}

fn check_query(query: &str) -> Result<(), Refusal> {
    let bytes = query.as_bytes();
    check_target_bytes(bytes)?;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let decoded = percent_byte(bytes, i).ok_or(bad("malformed percent-encoding in the query"))?;
            if decoded < 0x20 || decoded == 0x7f {
                return Err(bad("encoded control character in the query"));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// Bytes any part of a target may hold: visible ASCII without `#`, `\`, quotes, angle brackets or
/// spaces.
fn check_target_bytes(bytes: &[u8]) -> Result<(), Refusal> {
    for &b in bytes {
        match b {
            b'#' => return Err(bad("fragment in the request target")),
            b'\\' => return Err(bad("backslash in the request target")),
            0..=0x20 | 0x7f => return Err(bad("control character or space in the request target")),
            0x80.. => return Err(bad("raw non-ASCII byte in the request target")),
            b'"' | b'<' | b'>' | b'`' | b'{' | b'}' | b'|' | b'^' => {
                return Err(bad("character not allowed in a request target"));
            }
            _ => {}
        }
    }
    Ok(())
}

fn percent_byte(bytes: &[u8], at: usize) -> Option<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let high = hex(*bytes.get(at + 1)?)?;
    let low = hex(*bytes.get(at + 2)?)?;
    u8::try_from(high * 16 + low).ok()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The one host the request names: its `Host` header, or on HTTP/2 its `:authority` (a `Host`
/// beside it must say the same).
fn host_value<'a>(authority: Option<&'a str>, headers: &'a HeaderMap) -> Result<&'a str, Refusal> {
    let mut values = headers.get_all(header::HOST).iter();
    let host = values.next();
    if values.next().is_some() {
        return Err(bad("more than one Host header"));
    }
    let host = host.map(|v| v.to_str().map_err(|_| bad("malformed Host header"))).transpose()?;
    match (authority, host) {
        (Some(authority), Some(host)) if !authority.eq_ignore_ascii_case(host) => {
            Err(bad("`:authority` and Host differ"))
        }
        (Some(authority), _) => Ok(authority),
        (None, Some(host)) => Ok(host),
        (None, None) => Err(bad("no Host header")),
    }
}

fn check_host(value: &str, server_name: Option<&str>, port: u16) -> Result<String, Refusal> {
    let (name, host_port) = split_host_port(value).ok_or(bad("malformed Host header"))?;
    if host_port.is_some_and(|p| p != port) {
        return Err(Refusal { status: 421, reason: "the Host port is not this listener's" });
    }
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty()
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'))
    {
        return Err(bad("malformed Host header"));
    }
    if let Some(sni) = server_name {
        let sni = sni.strip_suffix('.').unwrap_or(sni);
        if !sni.eq_ignore_ascii_case(&name) {
            return Err(Refusal { status: 421, reason: "the Host is not the TLS server name" });
        }
    }
    Ok(name)
}

fn split_host_port(value: &str) -> Option<(&str, Option<u16>)> {
    if value.starts_with('[') {
        let end = value.find(']')?;
        let (name, rest) = value.split_at(end + 1);
        return match rest {
            "" => Some((name, None)),
            _ => Some((name, Some(rest.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match value.split_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            Some((name, Some(port.parse().ok()?)))
        }
        Some(_) => None,
        None => Some((value, None)),
    }
}

fn check_headers(headers: &HeaderMap) -> Result<(), Refusal> {
    if headers.keys().any(|name| name.as_str().contains('_')) {
        return Err(bad("header names with `_` are refused"));
    }
    // Decided as one method and target, acted on as another by the frameworks that honour
    // these: refused, not stripped (a stripped override would change what the request does).
    if headers.keys().any(|name| OVERRIDES.contains(&name.as_str())) {
        return Err(bad("a method or target override header (x-http-method-override, x-original-url, ...)"));
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let has_length = match lengths.next() {
        None => false,
        Some(first) => {
            if lengths.any(|other| other != first) {
                return Err(bad("conflicting Content-Length headers"));
            }
            let text = first.to_str().map_err(|_| bad("malformed Content-Length"))?;
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("malformed Content-Length"));
            }
            true
        }
    };
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_some() {
        if has_length {
            return Err(bad("Content-Length together with Transfer-Encoding"));
        }
        let all: Vec<&HeaderValue> = codings.collect();
        let only_chunked = all.len() == 1 && all.first().is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
        if !only_chunked {
            return Err(bad("a transfer coding other than `chunked`"));
        }
    }
    Ok(())
}

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Identity headers that clients could send to impersonate someone, by family: zerogate's own,
/// oauth2-proxy, AWS ALB (OIDC and mTLS), Google IAP, Azure App Service (principal, tokens,
/// client certificate), Cloudflare Access, Pomerium, Envoy, Traefik, nginx/Apache
/// client-certificate forwarding, Authelia, authentik, Tailscale, vouch-proxy, Kubernetes'
/// authenticating-proxy and impersonation headers, Keycloak gatekeeper (Louketo), Kong, Apache
/// APISIX, Teleport, and generic remote-user conventions.
const IDENTITY_PREFIXES: &[&str] = &[
    "x-zerogate-",
    "x-auth-request-",
    "x-amzn-oidc-",
    "x-amzn-mtls-clientcert",
    "x-goog-authenticated-user-",
    "x-goog-iap-",
    "x-ms-client-principal",
    "x-ms-token-",
    "x-arr-clientcert",
    "cf-access-",
    "x-pomerium-",
    "x-ssl-client-",
    "ssl-client-",
    "x-client-cert",
    "x-webauth-",
    "x-forwarded-client-cert",
    "x-forwarded-tls-client-cert",
    "remote-",
    "x-remote-",
    "x-authentik-",
    "tailscale-",
    "x-vouch-",
    "x-consumer-",
    "x-credential-",
    "x-authenticated-",
    "impersonate-",
    "teleport-",
    "x-ssl-",
];

const IDENTITY_NAMES: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-forwarded-for-user",
    "x-user",
    "x-user-id",
    "x-email",
    "x-jwt-assertion",
    "x-client-verify",
    "x-client-dn",
    // Keycloak gatekeeper's (not its `x-auth-token`: OpenStack clients send their own token so).
    "x-auth-audience",
    "x-auth-email",
    "x-auth-expiresin",
    "x-auth-groups",
    "x-auth-roles",
    "x-auth-subject",
    "x-auth-user",
    "x-auth-userid",
    "x-auth-username",
    "x-userinfo",
    "x-id-token",
    "x-access-token",
];

/// Fields some frameworks read as the request's method or target in place of the one sent
/// (Rack's and Symfony's method override, OData's `X-HTTP-Method`, IIS's original URL): a
/// request with one is refused (and, should one get here, never forwarded), so the upstream acts
/// on the request that was decided or on nothing.
const OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
];

/// Whether a (lowercase) header name carries a client-asserted identity.
pub fn is_identity_header(name: &str) -> bool {
    IDENTITY_NAMES.contains(&name) || IDENTITY_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// Whether a header name (any case) belongs to one connection and is never forwarded.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop.as_bytes()))
}

/// Removes the headers that belong to one connection: those `Connection` names first, then the
/// standard hop-by-hop set (requests to the upstream and responses to the client alike).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// HTTP/2 lets a client split `Cookie` into one field per cookie; an HTTP/1.1 upstream expects
/// one line, joined with `; ` (RFC 9113 §8.2.3).
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else { return };
    let mut joined = first.as_bytes().to_vec();
    for value in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// Client address claims (every `x-forwarded-*` too: for, host, proto, port, prefix, ssl):
/// the upstream gets the address the gateway saw instead.
const ADDRESS_CLAIMS: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-envoy-external-address",
    "x-original-forwarded-for",
    "client-ip",
    "x-originating-ip",
];

/// Whether a (lowercase) header name claims the client's address or how it reached the gateway.
pub fn is_address_claim(name: &str) -> bool {
    name.starts_with("x-forwarded-") || ADDRESS_CLAIMS.contains(&name)
}

/// The request headers an upstream may receive, in the order received: not hop-by-hop, not
/// named by the client's `Connection`, not `credentials` (the header that carried the caller's
/// credential to the gateway), not an identity header of any family, not a client address
/// claim and not a method or target override. The one rule both of the gateway's paths forward by; the gateway adds its own headers
/// after it, so `Connection:` can never remove them.
pub fn forwardable<'h>(
    headers: &'h HeaderMap,
    credentials: Option<&'h HeaderName>,
) -> impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)> + 'h {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    headers.iter().filter(move |(name, _)| {
        let text = name.as_str();
        !is_hop_by_hop(text.as_bytes())
            && !named.contains(name)
            && credentials != Some(*name)
            && !is_identity_header(text)
            && !is_address_claim(text)
            && !OVERRIDES.contains(&text)
    })
}

/// Cleans the headers for the upstream: keeps only what [`forwardable`] lets through. Returns
/// the number of headers removed.
pub fn clean_for_upstream(headers: &mut HeaderMap, credentials: Option<&HeaderName>) -> usize {
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in forwardable(headers, credentials) {
        kept.append(name.clone(), value.clone());
    }
    let removed = headers.len() - kept.len();
    *headers = kept;
    removed
}
