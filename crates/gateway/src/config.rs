//! The gateway's configuration file (TOML), loaded in one place. Unknown keys are errors, every
//! error names the key and the reason, and nothing starts on a bad file.
//!
//! ```toml
//! [gateway]
//! listen = "0.0.0.0:8443"          # the public HTTPS listener
//! admin_listen = "127.0.0.1:9090"  # metrics and health, never on the public listener
//! id = "gw-eu-1"                   # names this gateway in audit records
//! reauthorize_seconds = 5          # WebSockets and streaming responses (HTTP/1.1 and HTTP/2) are
//!                                  # authorized again this often, cut when refused
//! client_timeout_seconds = 60      # a client that sends or takes nothing this long while the
//!                                  # gateway waits on it has broken off: idle keep-alive
//!                                  # connections (HTTP/1.1 and HTTP/2), request bodies that stop,
//!                                  # responses the client stops reading
//! max_connections = 10000          # client connections open at once; past it new ones wait in
//!                                  # the listen backlog until one closes
//! max_requests_per_principal = 128 # requests one identity may have in flight at once (open
//!                                  # streams and WebSockets included); past it 429, recorded
//! audit_segment_mib = 256          # the audit log closes a segment this large and goes on in
//!                                  # a new file (closed segments are for the archive or SIEM)
//! # certificate = "tls/fullchain.pem" # a certificate to serve (a public CA's, for browsers),
//! # private_key = "tls/key.pem"       # leaf first, with its key; read again when they change.
//!                                  # Without them the gateway serves one from zerogate's CA
//!
//! [policy]
//! policies = "policy/"             # a .cedar file or a directory of them
//! entities = "policy/entities.json"
//!
//! [[oidc]]
//! issuer = "https://login.example.com"
//! audiences = ["zerogate"]
//! algorithms = ["RS256", "ES256"]
//! token_kind = "access"            # or "id"
//! # jwks_uri = "https://…"         # instead of discovery; or jwks_file = "keys.json" (no fetch)
//!
//! [[app]]
//! host = "billing.example.org"
//! upstream = "https://10.0.3.7:8443"
//! upstream_protocol = "http1"      # or "http2" (ALPN h2 over https, prior knowledge over http)
//! resource = 'Zerogate::Application::"billing"'
//! authn = ["oidc", "mtls"]
//! mode = "shadow"                  # or "enforce"
//! client_certificates = "optional" # or "required"
//! routes = { "/admin" = 'Zerogate::Route::"billing-admin"' }
//! # sigv4_region = "us-east-1"     # the scope SigV4 clients sign for (only with "sigv4" in authn)
//! # sigv4_service = "execute-api"
//! upstream_timeout_seconds = 60    # connect + answer, and the longest stall while the request
//!                                  # body is sent: 504 past it (for tcp://, the connect only)
//! # certificate = "tls/billing.pem" # a certificate of its own for this host (chosen by SNI),
//! # private_key = "tls/billing.key" # else the gateway's
//!
//! [[app]]                          # a TCP service: reached through TLS asking for its host
//! host = "db.internal"             # (SNI), the client certificate its only credential
//! upstream = "tcp://10.0.3.9:5432"
//! resource = 'Zerogate::TcpTarget::"db:tcp/5432"'
//! authn = ["mtls"]
//! # proxy_protocol = "v2"         # or "v1": a PROXY protocol header first, so the service sees
//!                                  # the client's address (v2 also names the service and the
//!                                  # tunnel's audit record); only if the service expects one
//! # idle_timeout_seconds = 3600    # a tunnel nothing crosses this long is closed (none by default)
//! ```

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zerogate_authn::identity::Method;
use zerogate_authn::jwt::{Algorithm, TokenKind};

use crate::certificate::CertificateFiles;
use crate::decide::{Action, App, Mode};
use crate::proxy_protocol::ProxyProtocol;

/// A configuration that cannot be used: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// The key, as a TOML path (`app[1].upstream`).
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gateway: RawGateway,
    policy: RawPolicy,
    #[serde(default)]
    oidc: Vec<RawIssuer>,
    #[serde(default)]
    app: Vec<RawApp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    listen: String,
    admin_listen: Option<String>,
    id: Option<String>,
    #[serde(default = "default_reauthorize")]
    reauthorize_seconds: u64,
    #[serde(default = "default_client_timeout")]
    client_timeout_seconds: u64,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_max_requests_per_principal")]
    max_requests_per_principal: usize,
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
    #[serde(default = "default_audit_segment_mib")]
    audit_segment_mib: u64,
}

fn default_audit_segment_mib() -> u64 {
    zerogate_audit::DEFAULT_SEGMENT_BYTES >> 20
}

fn default_max_connections() -> usize {
    10_000
}

/// As many streams as one client HTTP/2 connection may open, and a quarter of what the gateway opens to
/// one HTTP/2 upstream (8 connections of 64 streams): one identity cannot take an upstream.
pub const DEFAULT_MAX_REQUESTS_PER_PRINCIPAL: usize = 128;

fn default_max_requests_per_principal() -> usize {
    DEFAULT_MAX_REQUESTS_PER_PRINCIPAL
}

fn default_client_timeout() -> u64 {
    60
}

fn default_reauthorize() -> u64 {
    5
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    policies: PathBuf,
    entities: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<String>,
    #[serde(default = "access")]
    token_kind: String,
    jwks_uri: Option<String>,
    jwks_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    user_id_from_email: bool,
}

fn access() -> String {
    "access".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    host: String,
    upstream: String,
    resource: String,
    authn: Vec<String>,
    #[serde(default = "enforce")]
    mode: String,
    client_certificates: Option<String>,
    #[serde(default)]
    routes: BTreeMap<String, String>,
    upstream_ca_file: Option<PathBuf>,
    upstream_protocol: Option<String>,
    sigv4_region: Option<String>,
    sigv4_service: Option<String>,
    proxy_protocol: Option<String>,
    idle_timeout_seconds: Option<u64>,
    #[serde(default = "default_upstream_timeout")]
    upstream_timeout_seconds: u64,
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
}

fn default_upstream_timeout() -> u64 {
    60
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_service() -> String {
    "execute-api".into()
}

fn enforce() -> String {
    "enforce".into()
}

/// An OIDC issuer the gateway accepts tokens from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSettings {
    /// The issuer, exactly.
    pub issuer: String,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// The algorithm allow-list.
    pub algorithms: Vec<Algorithm>,
    /// Access or ID tokens.
    pub token_kind: TokenKind,
    /// A JWKS address instead of discovery.
    pub jwks_uri: Option<String>,
    /// A JWKS file instead of fetching (a provider the gateway cannot reach): keys never age.
    pub jwks_file: Option<PathBuf>,
    /// A private root for the provider's HTTPS.
    pub ca_file: Option<PathBuf>,
    /// User ids from the `email` claim instead of `sub`.
    pub user_id_from_email: bool,
}

/// An application behind the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSettings {
    /// What the decision needs.
    pub app: App,
    /// Where requests go: `http://` or `https://` host and port.
    pub upstream: String,
    /// A private root for the upstream's TLS (the public web roots otherwise).
    pub upstream_ca_file: Option<PathBuf>,
    /// HTTP/2 to the upstream (one multiplexed connection) instead of pooled HTTP/1.1.
    pub upstream_http2: bool,
    /// Whether TLS must carry a client certificate.
    pub require_client_certificate: bool,
    /// The SigV4 credential scope clients sign for: region (default `us-east-1`)…
    pub sigv4_region: String,
    /// …and service (default `execute-api`, as for API Gateway's IAM authorization).
    pub sigv4_service: String,
    /// How long the upstream has to accept the connection and answer, and the longest it may
    /// stall while the request body is sent (default 60 s): 504 past it.
    pub upstream_timeout: std::time::Duration,
    /// A certificate of its own for this host (the gateway's default otherwise).
    pub certificate: Option<CertificateFiles>,
    /// For a TCP service that expects it: the PROXY protocol header sent before the client's bytes.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// For a TCP service: a tunnel nothing crosses for this long is closed (none by default).
    pub idle_timeout: Option<std::time::Duration>,
}

/// The longest idle timeout a TCP service may set, in seconds: a week.
pub const MAX_IDLE_TIMEOUT: u64 = 7 * 24 * 3600;

/// The longest gateway id: with `:` and a line number it fits a PROXY header's unique id.
pub const MAX_GATEWAY_ID: usize = 64;

/// Whether `id` can name a gateway: it goes as it is into audit records, the upstream's
/// `x-zerogate-audit-record` header and PROXY headers.
pub fn is_gateway_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_GATEWAY_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The whole configuration, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The public listener.
    pub listen: SocketAddr,
    /// The admin listener (metrics, health).
    pub admin_listen: Option<SocketAddr>,
    /// This gateway's name in audit records.
    pub id: String,
    /// How often long-lived connections are authorized again (default 5 s).
    pub reauthorize_every: std::time::Duration,
    /// How long a client may send or take nothing while the gateway waits on it (default 60 s).
    pub client_timeout: std::time::Duration,
    /// Client connections open at once (default 10,000).
    pub max_connections: usize,
    /// Requests one principal may have in flight at once (default 128).
    pub max_requests_per_principal: usize,
    /// The size at which the audit log rolls over into a closed segment (default 256 MiB).
    pub audit_segment_bytes: u64,
    /// A certificate the operator brings for the public listener; `None`: one from zerogate's CA.
    pub certificate: Option<CertificateFiles>,
    /// The policy files.
    pub policies: PathBuf,
    /// The entities file.
    pub entities: Option<PathBuf>,
    /// OIDC issuers.
    pub issuers: Vec<IssuerSettings>,
    /// Applications, by host.
    pub apps: Vec<AppSettings>,
}

impl GatewayConfig {
    /// Reads and checks `path`; relative paths inside are relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &file, base)
    }

    /// Checks the configuration text `text` (named `file` in errors).
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Self, ConfigError> {
        let error = |key: &str, reason: String| ConfigError { file: file.to_owned(), key: key.to_owned(), reason };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let reason = e.message().to_owned();
            let key = e
                .span()
                .map(|span| {
                    let line = text.get(..span.start).map_or(1, |before| before.lines().count().max(1));
                    format!("line {line}")
                })
                .unwrap_or_else(|| "(document)".into());
            error(&key, reason)
        })?;
        let listen = raw.gateway.listen.parse().map_err(|_| error("gateway.listen", "not an address:port".into()))?;
        let admin_listen = match &raw.gateway.admin_listen {
            None => None,
            Some(text) => {
                let addr: SocketAddr =
                    text.parse().map_err(|_| error("gateway.admin_listen", "not an address:port".into()))?;
                if addr == listen {
                    return Err(error("gateway.admin_listen", "must differ from gateway.listen".into()));
                }
                Some(addr)
            }
        };
        let resolve = |p: &Path| if p.is_absolute() { p.to_owned() } else { base.join(p) };
        // A certificate and its key come together, or not at all.
        let certificate_files = |table: &str, chain: &Option<PathBuf>, key: &Option<PathBuf>| match (chain, key) {
            (None, None) => Ok(None),
            (Some(chain), Some(key)) => {
                Ok(Some(CertificateFiles { table: table.to_owned(), chain: resolve(chain), key: resolve(key) }))
            }
            (Some(_), None) => Err(error(&format!("{table}.private_key"), format!("needed with {table}.certificate"))),
            (None, Some(_)) => Err(error(&format!("{table}.certificate"), format!("needed with {table}.private_key"))),
        };
        let mut issuers = Vec::new();
        for (index, raw) in raw.oidc.iter().enumerate() {
            let key = |name: &str| format!("oidc[{index}].{name}");
            if !raw.issuer.starts_with("https://") {
                return Err(error(&key("issuer"), "must be an https URL".into()));
            }
            if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
                return Err(error(&key("audiences"), "at least one non-empty audience".into()));
            }
            let algorithms = raw
                .algorithms
                .iter()
                .map(|name| {
                    Algorithm::from_name(name).ok_or_else(|| {
                        error(
                            &key("algorithms"),
                            format!("`{name}` is not one of RS256…RS512, PS256…PS512, ES256, ES384, EdDSA"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if algorithms.is_empty() {
                return Err(error(&key("algorithms"), "at least one algorithm".into()));
            }
            let token_kind = match raw.token_kind.as_str() {
                "access" => TokenKind::Access,
                "id" => TokenKind::Id,
                other => return Err(error(&key("token_kind"), format!("`{other}` is not `access` or `id`"))),
            };
            if raw.jwks_uri.as_ref().is_some_and(|uri| !uri.starts_with("https://")) {
                return Err(error(&key("jwks_uri"), "must be an https URL".into()));
            }
            if raw.jwks_uri.is_some() && raw.jwks_file.is_some() {
                return Err(error(&key("jwks_file"), "give jwks_uri or jwks_file, not both".into()));
            }
            issuers.push(IssuerSettings {
                issuer: raw.issuer.clone(),
                audiences: raw.audiences.clone(),
                algorithms,
                token_kind,
                jwks_uri: raw.jwks_uri.clone(),
                jwks_file: raw.jwks_file.as_deref().map(resolve),
                ca_file: raw.ca_file.as_deref().map(resolve),
                user_id_from_email: raw.user_id_from_email,
            });
        }
        let mut hosts = HashSet::new();
        let mut apps = Vec::new();
        for (index, raw) in raw.app.iter().enumerate() {
            let key = |name: &str| format!("app[{index}].{name}");
            let host = raw.host.strip_suffix('.').unwrap_or(&raw.host).to_ascii_lowercase();
            if host.is_empty()
                || host.len() > 253
                || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(error(&key("host"), "not a host name".into()));
            }
            if !hosts.insert(host.clone()) {
                return Err(error(&key("host"), format!("`{host}` is configured twice")));
            }
            if raw.upstream.contains('@') {
                // Credentials in the address would reach logs; the upstream trusts the
                // gateway's identity assertion instead.
                return Err(error(&key("upstream"), "must not carry credentials (user:password@)".into()));
            }
            let tcp = raw.upstream.strip_prefix("tcp://");
            if let Some(address) = tcp {
                // A TCP service: the client's certificate is the only credential a tunnel can
                // carry, and the service decides nothing by path.
                if !address.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
                }) {
                    return Err(error(&key("upstream"), "must be tcp://host:port".into()));
                }
                // Its own entity type: a policy written for an application's HTTP requests
                // with its action left open does not open a tunnel to it.
                if !raw.resource.starts_with(zerogate_audit::TCP_TARGET_ENTITY) {
                    return Err(error(&key("resource"), "must be a Zerogate::TcpTarget entity".into()));
                }
                if host.parse::<std::net::IpAddr>().is_ok() {
                    return Err(error(
                        &key("host"),
                        format!(
                            "`{host}` is an IP address: clients send no server name (SNI) for one, so a tunnel could not ask for it"
                        ),
                    ));
                }
                if raw.authn != ["mtls"] {
                    return Err(error(&key("authn"), "a tcp:// service takes [\"mtls\"] only".into()));
                }
                if raw.client_certificates.as_deref().is_some_and(|c| c != "required") {
                    return Err(error(&key("client_certificates"), "a tcp:// service always requires one".into()));
                }
                let http_only = [
                    ("routes", !raw.routes.is_empty()),
                    ("upstream_protocol", raw.upstream_protocol.is_some()),
                    ("upstream_ca_file", raw.upstream_ca_file.is_some()),
                ];
                if let Some((name, _)) = http_only.iter().find(|(_, given)| *given) {
                    return Err(error(&key(name), "applies to http:// and https:// upstreams only".into()));
                }
            } else {
                // An HTTP upstream learns the client from the identity assertion and the
                // forwarded headers the gateway sets; an idle HTTP client is bounded by
                // [gateway] client_timeout_seconds.
                let tcp_only = [
                    ("proxy_protocol", raw.proxy_protocol.is_some()),
                    ("idle_timeout_seconds", raw.idle_timeout_seconds.is_some()),
                ];
                if let Some((name, _)) = tcp_only.iter().find(|(_, given)| *given) {
                    return Err(error(&key(name), "applies to tcp:// upstreams only".into()));
                }
                let upstream_ok = ["http://", "https://"].iter().any(|scheme| {
                    raw.upstream.strip_prefix(scheme).is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
                });
                if !upstream_ok {
                    return Err(error(
                        &key("upstream"),
                        "must be http://host:port or https://host:port, without a path (or tcp://host:port)".into(),
                    ));
                }
                if !raw.resource.starts_with(zerogate_audit::APPLICATION_ENTITY) {
                    return Err(error(&key("resource"), "must be a Zerogate::Application entity".into()));
                }
            }
            let proxy_protocol = match raw.proxy_protocol.as_deref() {
                None => None,
                Some("v1") => Some(ProxyProtocol::V1),
                Some("v2") => Some(ProxyProtocol::V2),
                Some(other) => return Err(error(&key("proxy_protocol"), format!("`{other}` is not `v1` or `v2`"))),
            };
            if raw.idle_timeout_seconds.is_some_and(|seconds| !(1..=MAX_IDLE_TIMEOUT).contains(&seconds)) {
                return Err(error(
                    &key("idle_timeout_seconds"),
                    format!("must be between 1 and {MAX_IDLE_TIMEOUT} (a week)"),
                ));
            }
            let upstream_http2 = match raw.upstream_protocol.as_deref().unwrap_or("http1") {
                "http1" => false,
                "http2" => true,
                other => return Err(error(&key("upstream_protocol"), format!("`{other}` is not `http1` or `http2`"))),
            };
            let methods = raw
                .authn
                .iter()
                .map(|name| match name.as_str() {
                    "oidc" => Ok(Method::Oidc),
                    "mtls" => Ok(Method::Mtls),
                    "sigv4" => Ok(Method::SigV4),
                    other => Err(error(&key("authn"), format!("`{other}` is not `oidc`, `mtls` or `sigv4`"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if methods.is_empty() {
                return Err(error(&key("authn"), "at least one method".into()));
            }
            // A SigV4 scope on an app that takes no SigV4 would be a setting that does nothing,
            // and a reader would believe it guards something.
            for (name, given) in [("sigv4_region", &raw.sigv4_region), ("sigv4_service", &raw.sigv4_service)] {
                if given.is_some() && !methods.contains(&Method::SigV4) {
                    return Err(error(&key(name), "applies only with `sigv4` in authn".into()));
                }
            }
            if methods.contains(&Method::Oidc) && issuers.is_empty() {
                return Err(error(&key("authn"), "`oidc` needs at least one [[oidc]] issuer".into()));
            }
            let mode = match raw.mode.as_str() {
                "enforce" => Mode::Enforce,
                "shadow" => Mode::Shadow,
                other => return Err(error(&key("mode"), format!("`{other}` is not `enforce` or `shadow`"))),
            };
            let default_certificates = if tcp.is_some() { "required" } else { "optional" };
            let require_client_certificate = match raw.client_certificates.as_deref().unwrap_or(default_certificates) {
                "optional" => false,
                "required" => true,
                other => {
                    return Err(error(
                        &key("client_certificates"),
                        format!("`{other}` is not `optional` or `required`"),
                    ));
                }
            };
            if require_client_certificate && !methods.contains(&Method::Mtls) {
                return Err(error(&key("client_certificates"), "`required` needs `mtls` in authn".into()));
            }
            let mut routes = Vec::new();
            for (prefix, route) in &raw.routes {
                if !prefix.starts_with('/') {
                    return Err(error(&key("routes"), format!("`{prefix}` must start with `/`")));
                }
                if !route.starts_with("Zerogate::Route::\"") {
                    return Err(error(&key("routes"), format!("`{prefix}` must map to a Zerogate::Route entity")));
                }
                routes.push((prefix.clone(), route.clone()));
            }
            if !(1..=3600).contains(&raw.upstream_timeout_seconds) {
                return Err(error(&key("upstream_timeout_seconds"), "must be between 1 and 3600".into()));
            }
            if raw.certificate.is_some() && host.parse::<std::net::Ipv4Addr>().is_ok() {
                // Clients send no server name (SNI) for an address, so a pair chosen by it
                // would never be served.
                return Err(error(
                    &key("certificate"),
                    format!(
                        "`{host}` is an IP address, for which clients send no SNI; bring it in [gateway] certificate"
                    ),
                ));
            }
            apps.push(AppSettings {
                app: App {
                    host,
                    resource: raw.resource.clone(),
                    routes,
                    methods,
                    mode,
                    action: if tcp.is_some() { Action::Connect } else { Action::Http },
                },
                upstream: raw.upstream.clone(),
                upstream_ca_file: raw.upstream_ca_file.as_deref().map(resolve),
                upstream_http2,
                require_client_certificate,
                sigv4_region: raw.sigv4_region.clone().unwrap_or_else(default_region),
                sigv4_service: raw.sigv4_service.clone().unwrap_or_else(default_service),
                upstream_timeout: std::time::Duration::from_secs(raw.upstream_timeout_seconds),
                certificate: certificate_files(&format!("app[{index}]"), &raw.certificate, &raw.private_key)?,
                proxy_protocol,
                idle_timeout: raw.idle_timeout_seconds.map(std::time::Duration::from_secs),
            });
        }
        if apps.is_empty() {
            return Err(error("app", "at least one [[app]] is needed".into()));
        }
        if !(1..=300).contains(&raw.gateway.reauthorize_seconds) {
            return Err(error("gateway.reauthorize_seconds", "must be between 1 and 300".into()));
        }
        if !(1..=3600).contains(&raw.gateway.client_timeout_seconds) {
            return Err(error("gateway.client_timeout_seconds", "must be between 1 and 3600".into()));
        }
        if !(1..=1_000_000).contains(&raw.gateway.max_connections) {
            return Err(error("gateway.max_connections", "must be between 1 and 1000000".into()));
        }
        if !(1..=1_000_000).contains(&raw.gateway.max_requests_per_principal) {
            return Err(error("gateway.max_requests_per_principal", "must be between 1 and 1000000".into()));
        }
        if !(1..=1 << 20).contains(&raw.gateway.audit_segment_mib) {
            return Err(error("gateway.audit_segment_mib", "must be between 1 and 1048576 (1 TiB)".into()));
        }
        let certificate = certificate_files("gateway", &raw.gateway.certificate, &raw.gateway.private_key)?;
        let id = raw.gateway.id.unwrap_or_else(|| "gateway".into());
        // A name in every audit record and in a PROXY header's record id: short, one word.
        if !is_gateway_id(&id) {
            return Err(error(
                "gateway.id",
                format!("must be 1 to {MAX_GATEWAY_ID} printable ASCII characters without spaces"),
            ));
        }
        Ok(Self {
            listen,
            admin_listen,
            id,
            reauthorize_every: std::time::Duration::from_secs(raw.gateway.reauthorize_seconds),
            client_timeout: std::time::Duration::from_secs(raw.gateway.client_timeout_seconds),
            max_connections: raw.gateway.max_connections,
            max_requests_per_principal: raw.gateway.max_requests_per_principal,
            audit_segment_bytes: raw.gateway.audit_segment_mib << 20,
            certificate,
            policies: resolve(&raw.policy.policies),
            entities: raw.policy.entities.as_deref().map(resolve),
            issuers,
            apps,
        })
    }
}
