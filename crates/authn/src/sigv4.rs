//! Verifying AWS Signature Version 4, in the header form (`Authorization: AWS4-HMAC-SHA256 …`)
//! and the presigned-URL form (`X-Amz-Signature=…` in the query): the canonical request rebuilt
//! exactly as AWS builds it, the signing key derived from the secret of the access key, the
//! signature compared in constant time, the clock window (±5 minutes by default) and the
//! expiry of presigned URLs enforced, the payload hash checked against the body (or
//! `UNSIGNED-PAYLOAD` where allowed), and a captured request refused when replayed.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::{digest, hmac};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The SHA-256 of an empty payload.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// The payload hash a client may send instead of hashing the body.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// An HTTP request as received: the target's path and query exactly as they came on the wire.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The path, as sent (percent-encoded).
    pub path: &'a str,
    /// The query string without `?`, as sent.
    pub query: &'a str,
    /// Headers in the order received (names in any case).
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

/// Why a signature is refused. Safe to log; never contains the secret or the signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// Neither an `Authorization` header nor a presigned query.
    #[error("the request is not signed with SigV4")]
    NotSigned,
    /// The authorization is malformed.
    #[error("malformed SigV4 authorization: {0}")]
    Malformed(&'static str),
    /// The access key is not known.
    #[error("unknown access key `{0}`")]
    UnknownKey(String),
    /// The credential scope is for another region or service, or its date is not the request's.
    #[error("credential scope `{0}` is not accepted here")]
    WrongScope(String),
    /// The request time is outside the allowed window.
    #[error("request time is outside the allowed window")]
    ClockSkew,
    /// A presigned URL past its expiry, or with too long an expiry.
    #[error("the presigned URL has expired or asks for too long a lifetime")]
    Expired,
    /// `host` (and the date header, in the header form) must be signed.
    #[error("required header `{0}` is not signed")]
    UnsignedHeader(&'static str),
    /// The body does not match its declared hash, or unsigned payloads are not allowed.
    #[error("the payload does not match its signed hash")]
    PayloadMismatch,
    /// The signature does not match.
    #[error("the signature does not match")]
    SignatureMismatch,
    /// The same signed request was already accepted.
    #[error("the request was already used (replay)")]
    Replay,
}

/// Where secrets come from: zerogate's own access keys.
pub trait SecretLookup {
    /// The secret access key of `access_key_id`, if it exists and is not revoked.
    fn secret(&self, access_key_id: &str) -> Option<String>;
}

impl SecretLookup for HashMap<String, String> {
    fn secret(&self, access_key_id: &str) -> Option<String> {
        self.get(access_key_id).cloned()
    }
}

/// Settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The region in the credential scope (`us-east-1`, or zerogate's own name).
    pub region: String,
    /// The service in the credential scope.
    pub service: String,
    /// Normalize the path (remove dot segments and repeated slashes), as every AWS service but S3.
    pub normalize_path: bool,
    /// Allowed clock difference, seconds (AWS: 300).
    pub window: i64,
    /// Longest presigned URL lifetime accepted, seconds (AWS: 7 days).
    pub max_expires: i64,
    /// Accept `x-amz-content-sha256: UNSIGNED-PAYLOAD`.
    pub allow_unsigned_payload: bool,
}

impl Config {
    /// AWS's defaults for a service in a region.
    pub fn new(region: &str, service: &str) -> Self {
        Self {
            region: region.to_owned(),
            service: service.to_owned(),
            normalize_path: true,
            window: 300,
            max_expires: 7 * 86_400,
            allow_unsigned_payload: true,
        }
    }
}

/// What a verified signature establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The access key that signed: the stable credential id for audit and revocation.
    pub access_key_id: String,
    /// The headers the signature covers (lowercase).
    pub signed_headers: Vec<String>,
    /// Whether the body is covered by the signature.
    pub payload_signed: bool,
    /// Presigned URL rather than `Authorization` header.
    pub presigned: bool,
}

/// The parts of a SigV4 authorization, from either form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authorization {
    access_key_id: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
    amz_date: String,
    expires: Option<i64>,
}

/// Verifies SigV4 signatures for one credential scope.
pub struct Verifier<K> {
    config: Config,
    keys: K,
    replay: Mutex<ReplayCache>,
    /// Derived signing keys by (access key, date), with the secret they came from: a changed
    /// secret is never served from here.
    signing_keys: Mutex<HashMap<(String, String), (String, hmac::Key)>>,
}

impl<K> std::fmt::Debug for Verifier<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<K: SecretLookup> Verifier<K> {
    /// A verifier with these settings and keys.
    pub fn new(config: Config, keys: K) -> Self {
        Self { config, keys, replay: Mutex::new(ReplayCache::default()), signing_keys: Mutex::new(HashMap::new()) }
    }

    /// The signing key for a secret and date (region and service are this verifier's).
    fn signing_key(&self, access_key_id: &str, secret: &str, date: &str) -> hmac::Key {
        let id = (access_key_id.to_owned(), date.to_owned());
        if let Ok(cache) = self.signing_keys.lock()
            && let Some((cached_secret, key)) = cache.get(&id)
            && cached_secret == secret
        {
            return key.clone();
        }
        let key =
            hmac::Key::new(hmac::HMAC_SHA256, &signing_key(secret, date, &self.config.region, &self.config.service));
        if let Ok(mut cache) = self.signing_keys.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(id, (secret.to_owned(), key.clone()));
        }
        key
    }

    /// Verifies `request` at `now` (Unix seconds).
    pub fn verify(&self, request: &Request<'_>, now: i64) -> Result<Verified, SigV4Error> {
        let presigned = query_param(request.query, "X-Amz-Signature").is_some();
        let auth = if presigned { from_query(request.query)? } else { from_header(request.headers)? };
        let scope = format!("{}/{}/{}/{}/aws4_request", auth.access_key_id, auth.date, auth.region, auth.service);
        if auth.region != self.config.region
            || auth.service != self.config.service
            || !auth.amz_date.starts_with(&auth.date)
        {
            return Err(SigV4Error::WrongScope(scope));
        }
        let signed_at = parse_amz_date(&auth.amz_date).ok_or(SigV4Error::Malformed("X-Amz-Date"))?;
        match auth.expires {
            Some(expires) => {
                if !(1..=self.config.max_expires).contains(&expires) || now > signed_at + expires {
                    return Err(SigV4Error::Expired);
                }
                if signed_at > now + self.config.window {
                    return Err(SigV4Error::ClockSkew);
                }
            }
            None => {
                if (now - signed_at).abs() > self.config.window {
                    return Err(SigV4Error::ClockSkew);
                }
            }
        }
        if !auth.signed_headers.iter().any(|h| h == "host") {
            return Err(SigV4Error::UnsignedHeader("host"));
        }
        if !presigned && !auth.signed_headers.iter().any(|h| h == "x-amz-date" || h == "date") {
            return Err(SigV4Error::UnsignedHeader("x-amz-date"));
        }
        // The payload: the declared hash must be the body's, unless unsigned payloads are allowed.
        let declared = header_values(request.headers, "x-amz-content-sha256");
        let body_hash = hex(digest::digest(&digest::SHA256, request.body).as_ref());
        let (payload_hash, payload_signed) = match declared.as_deref() {
            Some(UNSIGNED_PAYLOAD) if self.config.allow_unsigned_payload => (UNSIGNED_PAYLOAD.to_owned(), false),
            Some(UNSIGNED_PAYLOAD) => return Err(SigV4Error::PayloadMismatch),
            Some(declared) if declared.eq_ignore_ascii_case(&body_hash) => (declared.to_owned(), true),
            Some(_) => return Err(SigV4Error::PayloadMismatch),
            None => (body_hash, true),
        };
        let secret =
            self.keys.secret(&auth.access_key_id).ok_or_else(|| SigV4Error::UnknownKey(auth.access_key_id.clone()))?;
        let given = auth.signature.to_ascii_lowercase();
        let key = self.signing_key(&auth.access_key_id, &secret, &auth.date);
        let expected_with = |omit_token: bool| -> Result<String, SigV4Error> {
            let canonical = canonical_request(
                request,
                &auth.signed_headers,
                &payload_hash,
                self.config.normalize_path,
                presigned,
                omit_token,
            )?;
            let to_sign = string_to_sign(&auth.amz_date, &auth.date, &auth.region, &auth.service, &canonical);
            Ok(hex(hmac::sign(&key, to_sign.as_bytes()).as_ref()))
        };
        let matches = |expected: &str| verify_slices_are_equal(expected.as_bytes(), given.as_bytes()).is_ok();
        let mut expected = expected_with(false)?;
        if !matches(&expected) && presigned && query_param(request.query, "X-Amz-Security-Token").is_some() {
            expected = expected_with(true)?;
        }
        if !matches(&expected) {
            return Err(SigV4Error::SignatureMismatch);
        }
        // Only a valid signature enters the replay cache, so forgeries cannot fill it.
        let horizon = auth.expires.map_or(signed_at + self.config.window, |e| signed_at + e);
        if !self.replay.lock().map_err(|_| SigV4Error::Replay)?.first_use(&expected, horizon, now) {
            return Err(SigV4Error::Replay);
        }
        Ok(Verified {
            access_key_id: auth.access_key_id,
            signed_headers: auth.signed_headers,
            payload_signed,
            presigned,
        })
    }
}

/// Signatures seen, kept until they could no longer verify.
#[derive(Debug, Default)]
struct ReplayCache {
    seen: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

impl ReplayCache {
    fn first_use(&mut self, signature: &str, valid_until: i64, now: i64) -> bool {
        while let Some((until, _)) = self.order.front() {
            if *until >= now {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        if self.seen.contains_key(signature) {
            return false;
        }
        self.seen.insert(signature.to_owned(), valid_until);
        // Insertion order is close to expiry order; exact order does not matter for safety
        // (an entry is only ever removed after its own expiry has passed the front).
        let position = self.order.partition_point(|(until, _)| *until <= valid_until);
        self.order.insert(position, (valid_until, signature.to_owned()));
        true
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The values of a header, joined with `,` in the order received; `None` if absent.
fn header_values(headers: &[(&str, &str)], name: &str) -> Option<String> {
    let values: Vec<String> =
        headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| canonical_value(v)).collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// A header value as SigV4 canonicalizes it: trimmed, runs of whitespace (folded lines included)
/// made one space.
fn canonical_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn from_header(headers: &[(&str, &str)]) -> Result<Authorization, SigV4Error> {
    let mut authorizations = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("authorization"));
    let (_, value) = authorizations.next().ok_or(SigV4Error::NotSigned)?;
    if authorizations.next().is_some() {
        return Err(SigV4Error::Malformed("more than one Authorization header"));
    }
    let rest = value.trim().strip_prefix(ALGORITHM).ok_or(SigV4Error::NotSigned)?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, value) =
            part.trim().split_once('=').ok_or(SigV4Error::Malformed("Authorization part without `=`"))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(SigV4Error::Malformed("unknown Authorization part")),
        };
        if slot.replace(value).is_some() {
            return Err(SigV4Error::Malformed("repeated Authorization part"));
        }
    }
    let amz_date = header_values(headers, "x-amz-date").ok_or(SigV4Error::Malformed("no X-Amz-Date header"))?;
    authorization(
        credential.ok_or(SigV4Error::Malformed("no Credential"))?,
        signed_headers.ok_or(SigV4Error::Malformed("no SignedHeaders"))?,
        signature.ok_or(SigV4Error::Malformed("no Signature"))?,
        amz_date,
        None,
    )
}

fn from_query(query: &str) -> Result<Authorization, SigV4Error> {
    let get = |name: &'static str| query_param(query, name).ok_or(SigV4Error::Malformed(name));
    if get("X-Amz-Algorithm")? != ALGORITHM {
        return Err(SigV4Error::Malformed("X-Amz-Algorithm"));
    }
    let expires = get("X-Amz-Expires")?.parse::<i64>().map_err(|_| SigV4Error::Malformed("X-Amz-Expires"))?;
    authorization(
        &get("X-Amz-Credential")?,
        &get("X-Amz-SignedHeaders")?,
        &get("X-Amz-Signature")?,
        get("X-Amz-Date")?,
        Some(expires),
    )
}

fn authorization(
    credential: &str,
    signed_headers: &str,
    signature: &str,
    amz_date: String,
    expires: Option<i64>,
) -> Result<Authorization, SigV4Error> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = parts.as_slice() else {
        return Err(SigV4Error::Malformed("Credential is not key/date/region/service/aws4_request"));
    };
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SigV4Error::Malformed("Signature is not 64 hex digits"));
    }
    let signed: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
    let sorted = signed.windows(2).all(|w| matches!(w, [a, b] if a < b));
    if signed.iter().any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase())) || !sorted {
        return Err(SigV4Error::Malformed("SignedHeaders must be lowercase, sorted and unique"));
    }
    Ok(Authorization {
        access_key_id: (*access_key_id).to_owned(),
        date: (*date).to_owned(),
        region: (*region).to_owned(),
        service: (*service).to_owned(),
        signed_headers: signed,
        signature: signature.to_owned(),
        amz_date,
        expires,
    })
}

/// The decoded value of a query parameter (the first with that name).
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find_map(|(k, v)| (percent_decode(k).as_deref() == Some(name.as_bytes())).then(|| percent_decode(v)).flatten())
        .and_then(|v| String::from_utf8(v).ok())
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = char::from(*bytes.get(i + 1)?).to_digit(16)?;
            let lo = char::from(*bytes.get(i + 2)?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// RFC 3986 unreserved characters stay; everything else (and `/` unless `keep_slash`) is `%XX`.
fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Removes `.` and `..` segments and empty segments, keeping a trailing slash.
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = path.len() > 1
        && (path.ends_with('/') || path.ends_with("/.") || path.ends_with("/.."))
        && !segments.is_empty();
    let mut out = format!("/{}", segments.join("/"));
    if trailing {
        out.push('/');
    }
    out
}

/// The canonical request, as AWS defines it. `omit_session_token`: a presigned URL whose
/// `X-Amz-Security-Token` was added after signing (as some services, IoT among them, do).
pub fn canonical_request(
    request: &Request<'_>,
    signed_headers: &[String],
    payload_hash: &str,
    normalize: bool,
    presigned: bool,
    omit_session_token: bool,
) -> Result<String, SigV4Error> {
    let path = if request.path.is_empty() { "/" } else { request.path };
    let path = if normalize { normalize_path(path) } else { path.to_owned() };
    let canonical_uri = uri_encode(path.as_bytes(), true);
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in request.query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k).ok_or(SigV4Error::Malformed("bad percent-encoding in the query"))?;
        if presigned && (key == b"X-Amz-Signature" || (omit_session_token && key == b"X-Amz-Security-Token")) {
            continue;
        }
        let value = percent_decode(v).ok_or(SigV4Error::Malformed("bad percent-encoding in the query"))?;
        params.push((uri_encode(&key, false), uri_encode(&value, false)));
    }
    params.sort();
    let query: Vec<String> = params.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers = String::new();
    for name in signed_headers {
        let value = header_values(request.headers, name).ok_or(SigV4Error::Malformed("a signed header is missing"))?;
        let _ = writeln!(headers, "{name}:{value}");
    }
    Ok(format!(
        "{}\n{canonical_uri}\n{}\n{headers}\n{}\n{payload_hash}",
        request.method,
        query.join("&"),
        signed_headers.join(";")
    ))
}

/// The string to sign.
pub fn string_to_sign(amz_date: &str, date: &str, region: &str, service: &str, canonical: &str) -> String {
    let hashed = hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref());
    format!("{ALGORITHM}\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{hashed}")
}

/// The signing key derived from `secret` for a date, region and service.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let step = |key: &[u8], data: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes());
    let k_date = step(format!("AWS4{secret}").as_bytes(), date);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), service);
    step(k_service.as_ref(), "aws4_request").as_ref().to_vec()
}

/// The signature (hex) of `to_sign` with the key derived from `secret`.
pub fn signature(secret: &str, date: &str, region: &str, service: &str, to_sign: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &signing_key(secret, date, region, service));
    hex(hmac::sign(&key, to_sign.as_bytes()).as_ref())
}

/// `20150830T123600Z` as Unix seconds.
fn parse_amz_date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 16 || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
        return None;
    }
    let num = |from: usize, to: usize| text.get(from..to)?.parse::<i64>().ok();
    let (y, m, d) = (num(0, 4)?, num(4, 6)?, num(6, 8)?);
    let (hh, mm, ss) = (num(9, 11)?, num(11, 13)?, num(13, 15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = zerogate_civil::days_from_civil(y, u32::try_from(m).ok()?, u32::try_from(d).ok()?);
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("20240229T235959Z"), Some(1_709_251_199));
        for bad in ["", "20150830T123600", "20151330T123600Z", "2015-08-30T12:36:00Z", "20150830T246000Z"] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn paths_normalize_like_aws() {
        for (raw, want) in [
            ("/", "/"),
            ("//example//", "/example/"),
            ("/example1/example2/../..", "/"),
            ("/example/..", "/"),
            ("/./example", "/example"),
            ("/example/.", "/example/"),
            ("/a/b/../c", "/a/c"),
        ] {
            assert_eq!(normalize_path(raw), want, "{raw}");
        }
    }

    #[test]
    fn replay_cache_forgets_only_after_expiry() {
        let mut cache = ReplayCache::default();
        assert!(cache.first_use("a", 100, 0));
        assert!(!cache.first_use("a", 100, 50));
        assert!(cache.first_use("b", 50, 60), "b is new");
        assert!(!cache.first_use("a", 100, 100), "a is kept until its horizon");
        assert!(cache.first_use("a", 200, 101), "and forgotten after it");
    }
}
