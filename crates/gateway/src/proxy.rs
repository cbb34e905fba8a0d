//! The gateway's server: TLS termination with rustls (client certificates optional at the TLS
//! layer, required per application at the request), then for every request the pipeline in
//! order: one canonical request → the application by host → authentication (client
//! certificate, OIDC bearer token) → revocation → Cedar → the audit record, durable → only then
//! the upstream, with identity headers stripped and the signed assertion added.
//!
//! Every failure is an answer, never a pass: an ambiguous request is 400 or 421 and the
//! connection is closed; no application is 404; no credential is 401; a deny is 403; an audit
//! log that cannot be written is 503; an upstream that cannot be reached is 502. Bodies are
//! generic; the reason is in the audit record.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::{http1::SendRequest, http2};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use zerogate_audit::{AuditLog, Credential, Decision, DecisionRecord, RequestSummary};
use zerogate_authn::identity::{Authenticated, Method, Revocations};
use zerogate_authn::oidc::OidcVerifier;
use zerogate_authn::sigv4::{Config as SigV4Config, Request as SigV4Request, SecretLookup, Verifier};
use zerogate_pki::{RevocationList, SvidVerifier};
use zerogate_policy::LivePolicy;

use crate::assertion::{ASSERTION_HEADER, AssertionSigner};
use crate::canonical::{self, CanonicalRequest};
use crate::certificate::ServerCertificate;
use crate::config::AppSettings;
use crate::decide::{Action, Attempt, AuthnFailure, Outcome, decide};
use crate::pace::{Pace, Paced, Verdict};
use crate::resets::{ResetWatch, Resets};
use crate::share::{Held, InFlight, SIGNED_BODY_BUDGET, SIGNED_BODY_SHARE, SignedBodyBudget};
use crate::upstream_h2::{Http2Pool, Slotted, StreamSlot};

/// What a body can fail with: hyper's errors, or the gateway cutting a stream whose access ended.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body: a generic refusal, or a body streamed through.
pub type Body = BoxBody<Bytes, BoxError>;

fn boxed(body: Incoming) -> Body {
    body.map_err(BoxError::from).boxed()
}

/// A body that a signature covers, read whole: `Err(true)` past [`MAX_SIGNED_BODY`], `Err(false)`
/// when it fails (the client broke off, or sent nothing for the client timeout).
async fn read_signed_body(
    mut body: Body,
    budget: &SignedBodyBudget,
    client: std::net::IpAddr,
    patience: Duration,
) -> Result<Bytes, Unreadable> {
    if hyper::body::Body::size_hint(&body).lower() > MAX_SIGNED_BODY as u64 {
        return Err(Unreadable::TooLarge);
    }
    // All of it within the client's patience, as on HTTP/1.1 (h1's `read_whole_body`).
    let read = async {
        let mut whole = Vec::new();
        let mut held = budget.hold(client);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(|_| Unreadable::Broken)?.into_data() {
                if whole.len() + data.len() > MAX_SIGNED_BODY {
                    return Err(Unreadable::TooLarge);
                }
                held.more(data.len())?;
                whole.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(whole))
    };
    tokio::time::timeout(patience, read).await.unwrap_or(Err(Unreadable::Broken))
}

/// Why a signed request body (read whole before any credential is checked) was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// Over [`MAX_SIGNED_BODY`]: 413.
    TooLarge,
    /// It ended early, broke its framing or stopped arriving: 400.
    Broken,
    /// The bodies being read already hold [`SIGNED_BODY_BUDGET`]: 503.
    OverBudget,
    /// The bodies being read from this client's address already hold its share: 429.
    OverShare,
}

/// Streams open at once on one HTTP/2 connection from a client.
const MAX_CONCURRENT_STREAMS: u32 = 128;
/// Requests with bodies up to this size are bounded by the upstream timeout as a whole.
const TIMED_BODY_LIMIT: u64 = 1024 * 1024;

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// TLS settings.
    #[error("tls: {0}")]
    Tls(String),
    /// An upstream setting.
    #[error("upstream `{0}`: {1}")]
    Upstream(String, String),
    /// The gateway's id, which goes into headers and PROXY headers as it is.
    #[error("gateway id `{0}`: must be 1 to 64 printable ASCII characters without spaces")]
    Id(String),
}

/// Where an application's requests go.
pub(crate) struct Upstream {
    pub(crate) host: String,
    port: u16,
    pub(crate) authority: String,
    pub(crate) tls: Option<TlsConnector>,
    /// Idle HTTP/1.1 connections for the gateway's own HTTP/1.1 path (`h1`).
    pub(crate) idle: std::sync::Mutex<Vec<crate::h1::UpstreamConnection>>,
    /// Pooled hyper HTTP/1.1 connections, for HTTP/2 clients.
    pool: Arc<Pool>,
    /// With `upstream_protocol = "http2"`: its multiplexed connections.
    pub(crate) http2: Option<Http2Pool>,
}

impl Upstream {
    fn new(settings: &AppSettings) -> Result<Self, GatewayError> {
        let bad = |reason: &str| GatewayError::Upstream(settings.upstream.clone(), reason.to_owned());
        let (tls, rest, default_port) = match settings.upstream.split_once("://") {
            Some(("https", rest)) => (true, rest, 443),
            Some(("http", rest)) => (false, rest, 80),
            Some(("tcp", rest)) => (false, rest, 0),
            _ => return Err(bad("not http://, https:// or tcp://")),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                (host, port.parse().map_err(|_| bad("bad port"))?)
            }
            _ => (rest, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let tls = if tls {
            let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            if let Some(file) = &settings.upstream_ca_file {
                let pem = std::fs::read(file).map_err(|e| bad(&format!("{}: {e}", file.display())))?;
                for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                    let cert: CertificateDer<'static> = cert.map_err(|_| bad("upstream_ca_file is not PEM"))?;
                    roots.add(cert).map_err(|e| bad(&e.to_string()))?;
                }
            }
            let mut config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| bad(&e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            config.alpn_protocols = vec![if settings.upstream_http2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
            Some(TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        let http2 = settings.upstream_http2.then(Http2Pool::default);
        Ok(Self { authority: rest.to_owned(), host, port, tls, idle: Default::default(), pool: Arc::default(), http2 })
    }
}

pub(crate) struct AppRuntime {
    pub(crate) settings: AppSettings,
    pub(crate) upstream: Upstream,
    /// For applications that accept SigV4: the verifier of their credential scope.
    sigv4: Option<Verifier<SharedKeys>>,
}

/// The largest body read to check a SigV4 payload signature.
pub(crate) const MAX_SIGNED_BODY: usize = 8 * 1024 * 1024;

/// Live access keys (id → (secret, client)), shared with the task that refreshes them.
#[derive(Clone, Default)]
pub struct SharedKeys(pub Arc<RwLock<HashMap<String, (String, String)>>>);

impl SecretLookup for SharedKeys {
    fn secret(&self, access_key_id: &str) -> Option<String> {
        self.0.read().ok()?.get(access_key_id).map(|(secret, _)| secret.clone())
    }
}

/// What the gateway decides with; everything behind a lock can change while it runs.
pub struct GatewayParts {
    /// This gateway's name in audit records.
    pub id: String,
    /// Applications.
    pub apps: Vec<AppSettings>,
    /// The live policy set.
    pub policy: Arc<LivePolicy>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// Client certificate verification (zerogate's CA).
    pub svid: Arc<SvidVerifier>,
    /// Revoked serials and SPIFFE IDs, as the CA publishes them.
    pub svid_revocations: Arc<RwLock<RevocationList>>,
    /// Revoked credentials and principals.
    pub revocations: Arc<RwLock<Revocations>>,
    /// OIDC bearer tokens, when any issuer is configured.
    pub oidc: Option<Arc<OidcVerifier>>,
    /// SigV4 access keys, refreshed from the store while the gateway runs.
    pub access_keys: SharedKeys,
    /// User ids from the token's `email` instead of `sub`.
    pub user_id_from_email: bool,
    /// Signs the upstream's identity assertion.
    pub assertion: Arc<AssertionSigner>,
    /// How often a long-lived connection (a WebSocket) is authorized again; it is cut when the
    /// answer changes to a refusal.
    pub reauthorize_every: Duration,
    /// How long a client may send or take nothing while the gateway waits on it: an idle
    /// keep-alive connection (HTTP/1.1, or HTTP/2 without a stream) is closed, a request body
    /// that stops is given up, a connection whose client stops reading a response is cut.
    pub client_timeout: Duration,
    /// Client connections open at once; past it the gateway accepts no more until one closes
    /// (they wait in the listen backlog), as nginx's `worker_connections`.
    pub max_connections: usize,
    /// Requests one principal may have in flight at once (open response streams and tunnels
    /// included); past it a request is refused with 429 and recorded.
    pub max_requests_per_principal: usize,
}

/// What a long-lived connection was authorized for, to authorize it again.
pub(crate) struct Session {
    pub(crate) request: CanonicalRequest,
    pub(crate) method: String,
    pub(crate) source: IpAddr,
    pub(crate) who: Authenticated,
    /// The client certificate's identity, kept for an application that requires one whatever
    /// the credential: its revocation or expiry ends the session too.
    pub(crate) certificate: Option<Authenticated>,
    /// The exchange's place in its principal's share, held (never read) as long as the
    /// session lasts.
    #[allow(dead_code)]
    pub(crate) in_flight: Option<Held>,
    /// Whether the first would-be cut of a session in shadow mode is on record.
    pub(crate) shadow_noted: AtomicBool,
}

/// A refusal answered with a generic body: its status, and whether the connection closes after
/// it (after an ambiguous request nothing else on the connection is trusted).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused {
    pub(crate) status: StatusCode,
    pub(crate) close: bool,
}

/// A request past the checks that come before any credential.
pub(crate) struct Screened<'g> {
    pub(crate) app: &'g AppRuntime,
    pub(crate) canonical: CanonicalRequest,
    signed_with_sigv4: bool,
}

impl Screened<'_> {
    /// Whether the body must be read before deciding: the application accepts SigV4 and the
    /// request is signed with it (the signature covers the body).
    pub(crate) fn needs_signed_body(&self) -> bool {
        self.app.sigv4.is_some() && self.signed_with_sigv4
    }
}

/// A request that may be forwarded: who asked (none for an application in shadow mode that
/// let an unauthenticated request through), and the header that carried the credential.
pub(crate) struct Admitted {
    pub(crate) who: Option<Authenticated>,
    pub(crate) credential_header: Option<HeaderName>,
    /// The required client certificate's identity (see [`Session::certificate`]).
    pub(crate) certificate: Option<Authenticated>,
    /// The request's place in its principal's share ([`crate::share`]): whatever part of the
    /// exchange lives longest keeps it.
    pub(crate) in_flight: Option<Held>,
    /// The line of its decision record in the audit log (`seq`), which the upstream is told
    /// ([`AUDIT_RECORD_HEADER`]).
    pub(crate) record: u64,
    /// The signed identity assertion the upstream receives ([`ASSERTION_HEADER`]), signed
    /// before the decision was recorded: none for a caller without an identity.
    pub(crate) assertion: Option<HeaderValue>,
}

/// The header that tells the upstream which audit record let a request in:
/// `<gateway id>:<seq>`, for `zerogate audit show`. A client's own is stripped as every
/// `x-zerogate-` header is.
pub const AUDIT_RECORD_HEADER: &str = "x-zerogate-audit-record";

impl Admitted {
    /// The session a part of this exchange that outlives the decision (a request body still
    /// arriving, a response still streaming) is authorized again as; `None` for a caller without
    /// an identity (shadow mode let it through).
    pub(crate) fn session(&self, request: &CanonicalRequest, method: &str, source: IpAddr) -> Option<Session> {
        let who = self.who.as_ref()?;
        Some(Session {
            request: request.clone(),
            method: method.to_owned(),
            source,
            who: who.clone(),
            certificate: self.certificate.clone(),
            in_flight: self.in_flight.clone(),
            shadow_noted: AtomicBool::new(false),
        })
    }
}

/// A WebSocket handshake: `GET` with `Upgrade: websocket` and `Connection: upgrade`. Other
/// upgrades (h2c, …) are not forwarded.
pub(crate) fn is_websocket_upgrade(headers: &hyper::HeaderMap) -> bool {
    let upgrade = headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let connection = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    upgrade && connection
}

/// Whether an HTTP/2 connection ended because the client broke the protocol (the h2 layer
/// detected it and sent GOAWAY with an error), not because it went away or timed out.
fn is_client_protocol_violation(error: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(h2) = current.downcast_ref::<h2::Error>() {
            return !h2.is_io() && !h2.is_remote() && h2.reason().is_some_and(|r| r != h2::Reason::NO_ERROR);
        }
        source = current.source();
    }
    false
}

/// Resolves once `shutdown` is true (or its sender is gone).
/// One HTTP/2 connection: each stream is one request through the same pipeline. A stream the
/// h2 layer finds malformed (connection-specific or uppercase header names, bad pseudo-headers)
/// is reset there, before any handler and any upstream. The connection is closed when it has
/// had no stream for the client timeout, and cut when its client has not made room for a
/// response in that time ([`crate::pace`]).
async fn serve_http2(
    gateway: Arc<Gateway>,
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    connection: Arc<Connection>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let pace = Pace::new();
    let patience = gateway.parts.client_timeout;
    let resets = Arc::new(Resets::default());
    let service = {
        let (gateway, connection, pace) = (Arc::clone(&gateway), Arc::clone(&connection), pace.clone());
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let gateway = Arc::clone(&gateway);
            let connection = Arc::clone(&connection);
            // The stream is open while its handler runs, its response body is unfinished, or
            // (a WebSocket) its tunnel lasts: that holder takes the extension.
            let stream = pace.open();
            request.extensions_mut().insert(Arc::clone(&stream));
            async move {
                let response = Arc::clone(&gateway).handle(request, &connection).await;
                Ok::<_, Infallible>(response.map(|body| Paced::new(body, stream).boxed()))
            }
        })
    };
    let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(64 * 1024)
        // WebSockets over HTTP/2 (RFC 8441): extended CONNECT.
        .enable_connect_protocol()
        .serve_connection(TokioIo::new(ResetWatch::new(tls, Arc::clone(&resets))), service);
    tokio::pin!(served);
    let mut check = tokio::time::interval((patience / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Since when the connection is closing (GOAWAY sent).
    let mut closing: Option<tokio::time::Instant> = None;
    let mut first_reset_recorded = false;
    let outcome = loop {
        tokio::select! {
            outcome = served.as_mut() => break Some(outcome),
            stream = resets.first_found(), if !first_reset_recorded => {
                // Recorded beside the connection, which goes on serving its other streams.
                first_reset_recorded = true;
                let record = gateway.unparsed_record(&connection, &reset_reason(stream), "HTTP/2");
                let gateway = Arc::clone(&gateway);
                tokio::spawn(async move { gateway.audit(record).await });
            }
            () = stopped(&mut stop), if closing.is_none() => {
                served.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now());
            }
            _ = check.tick() => match pace.verdict(patience) {
                Verdict::Fine => {}
                Verdict::Idle => match closing {
                    None => {
                        served.as_mut().graceful_shutdown();
                        closing = Some(tokio::time::Instant::now());
                    }
                    // No stream left, and still not closed a timeout after the GOAWAY (the end
                    // of a last response may still be on its way to a slow client until then):
                    // the client holds it open.
                    Some(since) if since.elapsed() >= patience => break None,
                    Some(_) => {}
                },
                Verdict::Stalled => {
                    tracing::info!(peer = %connection.peer, timeout = ?patience, "an HTTP/2 client stopped reading a response: connection cut");
                    break None;
                }
            },
        }
    };
    // A client that breaks the HTTP/2 protocol loses its connection (GOAWAY) in the h2 layer,
    // before any handler: record the attempt, as for HTTP/1.1.
    if let Some(Err(error)) = outcome
        && is_client_protocol_violation(&error)
    {
        let record = gateway.unparsed_record(&connection, &error, "HTTP/2");
        let _ = gateway.audit(record).await;
    }
    // Streams the h2 layer reset as malformed, which no handler saw: the first on record by now
    // unless the connection ended first, the rest in one record.
    let count = resets.count();
    let reason = match (resets.first(), first_reset_recorded) {
        (_, true) if count > 1 => {
            let more = count - 1;
            let streams = if more == 1 { "stream" } else { "streams" };
            Some(format!("{more} more {streams} reset with PROTOCOL_ERROR on this connection"))
        }
        (Some(stream), false) if count == 1 => Some(reset_reason(stream)),
        (Some(stream), false) => {
            Some(format!("{count} streams reset with PROTOCOL_ERROR (malformed requests), the first stream {stream}"))
        }
        _ => None,
    };
    if let Some(reason) = reason {
        let record = gateway.unparsed_record(&connection, &reason, "HTTP/2");
        let _ = gateway.audit(record).await;
    }
}

/// Whether the certificate `who` was authenticated by has been revoked since (by serial, or
/// every certificate of its identity); a lookup, not a scan of the list.
fn certificate_revoked(list: &RevocationList, who: &Authenticated) -> bool {
    let serial = who.credential_id.strip_prefix("serial:").and_then(zerogate_pki::Serial::parse);
    serial.is_some_and(|serial| list.serials.contains(&serial)) || list.identities.contains(&who.id)
}

/// Why a stream the h2 layer reset is on record.
fn reset_reason(stream: u32) -> String {
    format!("stream {stream} reset with PROTOCOL_ERROR: a malformed request")
}

pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Counters for the admin listener's `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    allowed: AtomicU64,
    denied: AtomicU64,
    shadow_denied: AtomicU64,
    malformed: AtomicU64,
    unknown_host: AtomicU64,
    audit_failures: Arc<AtomicU64>,
    pub(crate) upstream_failures: AtomicU64,
    /// Client connections open now (a gauge).
    connections_open: AtomicU64,
    /// Times the connection limit was reached.
    connection_limit_reached: AtomicU64,
    /// Requests refused because their principal had its share in flight.
    principal_limit_reached: AtomicU64,
    /// Signed uploads refused because their client address held its share of the budget.
    client_share_reached: AtomicU64,
    /// When the certificate the public listener serves expires (Unix seconds; a gauge).
    server_certificate_expiry: AtomicU64,
    /// TCP service tunnels open now (a gauge).
    pub(crate) tunnels_open: AtomicU64,
    /// Tunnels cut because access ended.
    pub(crate) tunnels_cut: AtomicU64,
    /// Tunnels closed after their service's idle timeout.
    pub(crate) tunnels_idle_closed: AtomicU64,
}

impl Metrics {
    /// The certificate the public listener serves now expires at `not_after` (Unix seconds).
    pub fn server_certificate_expires(&self, not_after: i64) {
        self.server_certificate_expiry.store(u64::try_from(not_after).unwrap_or(0), Ordering::Relaxed);
    }

    /// The counters in Prometheus' text format.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::from(
            "# HELP zerogate_requests_total Requests by outcome.\n# TYPE zerogate_requests_total counter\n",
        );
        for (outcome, counter) in [
            ("allow", &self.allowed),
            ("deny", &self.denied),
            ("shadow_deny", &self.shadow_denied),
            ("malformed", &self.malformed),
            ("unknown_host", &self.unknown_host),
        ] {
            out.push_str(&format!("zerogate_requests_total{{outcome=\"{outcome}\"}} {}\n", get(counter)));
        }
        let singles: [(&str, &str, &str, &AtomicU64); 10] = [
            (
                "zerogate_audit_failures_total",
                "counter",
                "Requests refused because the audit log could not be written.",
                &self.audit_failures,
            ),
            (
                "zerogate_upstream_failures_total",
                "counter",
                "Allowed requests whose upstream could not be reached.",
                &self.upstream_failures,
            ),
            (
                "zerogate_connections_open",
                "gauge",
                "Client connections open now (max_connections bounds them).",
                &self.connections_open,
            ),
            (
                "zerogate_tunnels_open",
                "gauge",
                "TCP service tunnels open now (each also one of zerogate_connections_open).",
                &self.tunnels_open,
            ),
            (
                "zerogate_tunnels_cut_total",
                "counter",
                "TCP service tunnels cut because access ended (revoked, expired, policy, stale lists).",
                &self.tunnels_cut,
            ),
            (
                "zerogate_tunnels_idle_closed_total",
                "counter",
                "TCP service tunnels closed after nothing crossed them for the service's idle_timeout_seconds.",
                &self.tunnels_idle_closed,
            ),
            (
                "zerogate_connection_limit_reached_total",
                "counter",
                "Times new connections had to wait for max_connections.",
                &self.connection_limit_reached,
            ),
            (
                "zerogate_principal_limit_reached_total",
                "counter",
                "Requests refused (429) because their principal had max_requests_per_principal in flight.",
                &self.principal_limit_reached,
            ),
            (
                "zerogate_client_share_reached_total",
                "counter",
                "Signed uploads refused (429) because their client address held its share of the signed-body budget.",
                &self.client_share_reached,
            ),
            (
                "zerogate_server_certificate_expiry_timestamp_seconds",
                "gauge",
                "When the first of the certificates the public listener serves expires (Unix seconds).",
                &self.server_certificate_expiry,
            ),
        ];
        for (name, kind, help, value) in singles {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n", get(value)));
        }
        out
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One open connection in the `connections_open` gauge, taken out when dropped.
struct OpenConnection(Arc<Gateway>);

impl OpenConnection {
    fn count(gateway: Arc<Gateway>) -> Self {
        gateway.metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        Self(gateway)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The running gateway's shared state.
pub struct Gateway {
    pub(crate) parts: GatewayParts,
    pub(crate) apps: HashMap<String, AppRuntime>,
    pub(crate) metrics: Metrics,
    pub(crate) signed_body_budget: SignedBodyBudget,
    in_flight: Arc<InFlight>,
}

/// What one TLS connection established.
pub(crate) struct Connection {
    pub(crate) peer: SocketAddr,
    port: u16,
    pub(crate) server_name: Option<String>,
    chain: Option<Vec<CertificateDer<'static>>>,
    /// The client certificate verified once per connection (revocation and expiry are checked
    /// again on every request).
    certificate: OnceLock<Result<Authenticated, String>>,
}

/// A TLS configuration for the public listener: the gateway's certificate, and client
/// certificates from `client_roots` accepted but not required (each application decides). No
/// session resumption, so a revoked certificate cannot ride an old session.
pub fn tls_config(
    certificate: Arc<ServerCertificate>,
    client_roots: &[CertificateDer<'static>],
) -> Result<rustls::ServerConfig, GatewayError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for root in client_roots {
        roots.add(root.clone()).map_err(|e| GatewayError::Tls(e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .allow_unauthenticated()
        .build()
        .map_err(|e| GatewayError::Tls(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| GatewayError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The body of a refusal: says what kind, never why (the audit record does).
pub(crate) fn generic_text(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication required\n",
        403 => "access denied\n",
        404 => "no such application\n",
        421 => "misdirected request\n",
        502 => "upstream unavailable\n",
        503 => "service unavailable\n",
        _ => "bad request\n",
    }
}

/// A body without content.
pub(crate) fn empty_body() -> Body {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

pub(crate) fn generic(status: StatusCode, close: bool) -> Response<Body> {
    let text = generic_text(status);
    let mut response =
        Response::new(Full::new(Bytes::from_static(text.as_bytes())).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

impl Gateway {
    /// Prepares the gateway (upstreams checked, nothing listening yet).
    pub fn new(parts: GatewayParts) -> Result<Arc<Self>, GatewayError> {
        let id = &parts.id;
        if !crate::config::is_gateway_id(id) {
            return Err(GatewayError::Id(id.escape_debug().to_string()));
        }
        let mut apps = HashMap::new();
        for settings in &parts.apps {
            let upstream = Upstream::new(settings)?;
            let sigv4 = settings.app.methods.contains(&Method::SigV4).then(|| {
                Verifier::new(
                    SigV4Config::new(&settings.sigv4_region, &settings.sigv4_service),
                    parts.access_keys.clone(),
                )
            });
            apps.insert(settings.app.host.clone(), AppRuntime { settings: settings.clone(), upstream, sigv4 });
        }
        let signed_body_budget = SignedBodyBudget::new(SIGNED_BODY_BUDGET, SIGNED_BODY_SHARE);
        let in_flight = InFlight::new(parts.max_requests_per_principal);
        Ok(Arc::new(Self { parts, apps, metrics: Metrics::default(), signed_body_budget, in_flight }))
    }

    /// The request counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The JWKS that verifies the identity assertions upstreams receive.
    pub fn assertion_jwks(&self) -> serde_json::Value {
        self.parts.assertion.jwks()
    }

    /// Serves TLS connections from `listener` until `shutdown` turns true; then stops
    /// accepting, lets every open connection finish the request in flight (keep-alive
    /// connections close after it), and returns once all are done or `drain` has passed.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
        drain: Duration,
    ) {
        let acceptor = TlsAcceptor::from(tls);
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(443);
        // Each connection task holds a clone: the count says how many are still open.
        let open = Arc::new(());
        let slots = Arc::new(tokio::sync::Semaphore::new(self.parts.max_connections.max(1)));
        // Said once each time the limit is reached, not for every connection while it holds.
        let mut at_limit = false;
        loop {
            // A slot first: past the limit new connections wait in the kernel's backlog.
            let slot = match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => {
                    at_limit = false;
                    slot
                }
                Err(_) => {
                    if !std::mem::replace(&mut at_limit, true) {
                        bump(&self.metrics.connection_limit_reached);
                        tracing::warn!(
                            limit = self.parts.max_connections,
                            "connection limit reached: accepting again when one closes"
                        );
                    }
                    tokio::select! {
                        slot = Arc::clone(&slots).acquire_owned() => match slot {
                            Ok(slot) => slot,
                            Err(_) => break,
                        },
                        () = stopped(&mut shutdown) => break,
                    }
                }
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stopped(&mut shutdown) => break,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: retrying at once would spin on the same error.
                    tracing::warn!(%error, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Responses are written whole; waiting for more to fill a segment only adds latency.
            let _ = tcp.set_nodelay(true);
            let gateway = Arc::clone(&self);
            let acceptor = acceptor.clone();
            let stop = shutdown.clone();
            let held = Arc::clone(&open);
            tokio::spawn(async move {
                let _held = held;
                let _slot = slot;
                let _open = OpenConnection::count(Arc::clone(&gateway));
                let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                    return;
                };
                let (_, session) = tls.get_ref();
                let http2 = session.alpn_protocol() == Some(b"h2".as_slice());
                let connection = Arc::new(Connection {
                    peer,
                    port,
                    server_name: session.server_name().map(str::to_owned),
                    chain: session.peer_certificates().map(|c| c.iter().map(|c| c.clone().into_owned()).collect()),
                    certificate: OnceLock::new(),
                });
                // A connection that asks for a TCP service by name is that service's tunnel.
                let service = connection
                    .server_name
                    .as_deref()
                    .and_then(|name| gateway.apps.get(&name.to_ascii_lowercase()))
                    .filter(|app| app.settings.app.action == Action::Connect);
                if let Some(app) = service {
                    crate::tcp::keep_alive(tls.get_ref().0);
                    let reached_at = tls.get_ref().0.local_addr().ok();
                    crate::tcp::tunnel(Arc::clone(&gateway), app, tls, connection, reached_at, stop).await;
                    return;
                }
                if http2 {
                    serve_http2(gateway, tls, connection, stop).await;
                    return;
                }
                // HTTP/1.1 on the gateway's own connection loop (h1.rs): it sees the request
                // as sent, and forwards without a task or header map per request.
                crate::h1::serve(gateway, tls, connection, stop).await;
            });
        }
        drop(listener);
        let deadline = tokio::time::Instant::now() + drain;
        while Arc::strong_count(&open) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One HTTP/2 stream: the shared steps ([`Gateway::screen`], [`Gateway::authorize`]), then
    /// the upstream through hyper's client.
    async fn handle(self: Arc<Self>, request: Request<Incoming>, connection: &Connection) -> Response<Body> {
        let now = SystemTime::now();
        let (mut parts, body) = request.into_parts();
        // A WebSocket over HTTP/2 (RFC 8441) is an extended CONNECT; it is screened, decided
        // and recorded as the GET of the HTTP/1.1 handshake is, so that one policy covers both.
        // Any other CONNECT stays a CONNECT, which an application does not serve.
        let websocket = parts.method == hyper::Method::CONNECT
            && parts
                .extensions
                .get::<hyper::ext::Protocol>()
                .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
        if websocket {
            parts.method = hyper::Method::GET;
        }
        let screened = match self.screen(&parts, connection, now).await {
            Ok(screened) => screened,
            Err(refused) => return generic(refused.status, refused.close),
        };
        // A client that stops sending its request body has broken off: the body fails after
        // the client timeout, and with it the upstream exchange (or the read of a signed body).
        let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let body = IdleBounded::boxed(boxed(body), self.parts.client_timeout, Sender::Client(Arc::clone(&answered)));
        // A signed body is not read for a request that has already failed the application's
        // certificate requirement: the decision refuses it without.
        let reads_signed_body =
            screened.needs_signed_body() && self.required_certificate(screened.app, connection, now).is_ok();
        let (signed_body, body) = if reads_signed_body {
            // The signature covers the body: read it (bounded) before deciding.
            match read_signed_body(body, &self.signed_body_budget, connection.peer.ip(), self.parts.client_timeout)
                .await
            {
                Ok(bytes) => (Some(bytes.clone()), Full::new(bytes).map_err(|never| match never {}).boxed()),
                Err(unread) => {
                    let refused = self.refuse_unreadable_body(&parts, connection, &screened, unread, now).await;
                    return generic(refused.status, refused.close);
                }
            }
        } else {
            (None, body)
        };
        let admitted = match self.authorize(&screened, &parts, signed_body.as_ref(), connection, now).await {
            Ok(admitted) => admitted,
            Err(refused) => return generic(refused.status, refused.close),
        };
        let Screened { app, canonical, .. } = screened;
        if websocket {
            return crate::h1::websocket_over_http2(&self, app, parts, &canonical, &admitted, connection).await;
        }
        let method = parts.method.as_str().to_owned();
        // A request body still arriving (an upload, a client stream) is authorized again on the
        // interval too: an upload does not outlive access.
        let (body, upload_cut) = match admitted.session(&canonical, &method, connection.peer.ip()) {
            Some(session) if !hyper::body::Body::is_end_stream(&body) => {
                let (body, cut) = reverified_upload(Arc::clone(&self), session, body);
                (body, Some(cut))
            }
            _ => (body, None),
        };
        let response = self.forward(app, parts, body, upload_cut, &canonical, &admitted, connection.peer.ip()).await;
        answered.store(true, Ordering::Relaxed);
        match admitted.who {
            // A response that streams on (server-sent events, a long download, an HTTP/2 stream)
            // stays subject to access: authorized again on the interval, cut when refused.
            Some(who) => {
                let Admitted { certificate, in_flight, .. } = admitted;
                let session = Session {
                    request: canonical,
                    method,
                    source: connection.peer.ip(),
                    who,
                    certificate,
                    in_flight,
                    shadow_noted: AtomicBool::new(false),
                };
                let gateway = Arc::clone(&self);
                response.map(|inner| Reverified::new(inner, gateway, session).boxed())
            }
            None => response,
        }
    }

    /// The checks before any credential: one canonical request (else 400/421, recorded, and
    /// the connection closes), for an application this gateway serves (else 404, recorded).
    pub(crate) async fn screen(
        &self,
        parts: &hyper::http::request::Parts,
        connection: &Connection,
        now: SystemTime,
    ) -> Result<Screened<'_>, Refused> {
        let canonical = canonical::canonicalize(
            parts.version,
            &parts.method,
            &parts.uri,
            &parts.headers,
            connection.server_name.as_deref(),
            connection.port,
        );
        let canonical = match canonical {
            Ok(canonical) => canonical,
            Err(refusal) => {
                bump(&self.metrics.malformed);
                let record = self.bare_record(now, &parts.method, connection, None, format!("request: {refusal}"));
                let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
                // After an ambiguous request nothing else on this connection is trusted.
                return Err(match self.audit(record).await {
                    Ok(()) => Refused { status, close: true },
                    Err(()) => Refused { status: StatusCode::SERVICE_UNAVAILABLE, close: true },
                });
            }
        };
        // A TCP service is reached by its tunnel, never by HTTP requests.
        let Some(app) = self.apps.get(&canonical.host).filter(|app| app.settings.app.action == Action::Http) else {
            bump(&self.metrics.unknown_host);
            let record = self.bare_record(now, &parts.method, connection, Some(&canonical), "no application".into());
            return Err(match self.audit(record).await {
                Ok(()) => Refused { status: StatusCode::NOT_FOUND, close: false },
                Err(()) => Refused { status: StatusCode::SERVICE_UNAVAILABLE, close: false },
            });
        };
        let signed_with_sigv4 =
            parts.headers.get(header::AUTHORIZATION).is_some_and(|v| v.as_bytes().starts_with(b"AWS4-HMAC-SHA256"))
                || canonical.query.as_deref().is_some_and(|q| q.split('&').any(|p| p.starts_with("X-Amz-Signature=")));
        Ok(Screened { app, canonical, signed_with_sigv4 })
    }

    /// A SigV4-signed body that is too large (413) or broke off or broke its framing (400):
    /// recorded, closed.
    pub(crate) async fn refuse_unreadable_body(
        &self,
        parts: &hyper::http::request::Parts,
        connection: &Connection,
        screened: &Screened<'_>,
        unread: Unreadable,
        now: SystemTime,
    ) -> Refused {
        let (status, reason) = match unread {
            Unreadable::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request: signed body too large"),
            Unreadable::Broken => (StatusCode::BAD_REQUEST, "request: signed body unreadable"),
            Unreadable::OverBudget => {
                tracing::warn!(budget = SIGNED_BODY_BUDGET, "signed bodies being read hold the whole budget: refused");
                (StatusCode::SERVICE_UNAVAILABLE, "request: signed bodies being read hold the budget")
            }
            Unreadable::OverShare => {
                bump(&self.metrics.client_share_reached);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "request: signed bodies being read from this client address hold its share",
                )
            }
        };
        let record = self.bare_record(now, &parts.method, connection, Some(&screened.canonical), reason.into());
        match self.audit(record).await {
            Ok(()) => Refused { status, close: true },
            Err(()) => Refused { status: StatusCode::SERVICE_UNAVAILABLE, close: true },
        }
    }

    /// Authentication (the SigV4 signature over `signed_body`, a bearer token or the client
    /// certificate), revocations, the Cedar decision and its audit record, durable: only an
    /// `Ok` may be forwarded, and only after this returns.
    pub(crate) async fn authorize(
        &self,
        screened: &Screened<'_>,
        parts: &hyper::http::request::Parts,
        signed_body: Option<&Bytes>,
        connection: &Connection,
        now: SystemTime,
    ) -> Result<Admitted, Refused> {
        let app = screened.app;
        let (certificate, certificate_refused) = match self.required_certificate(app, connection, now) {
            Ok(certificate) => (certificate, None),
            Err(failure) => (None, Some(failure)),
        };
        let (authn, credential_header) = match (certificate_refused, &app.sigv4, signed_body) {
            (Some(failure), _, _) => (Err(failure), None),
            (None, Some(verifier), Some(body)) => {
                (self.verify_sigv4(verifier, parts, &screened.canonical, body, now), Some(header::AUTHORIZATION))
            }
            (None, _, _) => self.authenticate(&parts.headers, app, connection, now).await,
        };
        let attempt = Attempt {
            app: &app.settings.app,
            request: &screened.canonical,
            method: parts.method.as_str(),
            source: connection.peer.ip(),
            authn,
        };
        let mut outcome = self.decide_now(&attempt, now);
        // The assertion is signed before the record is written, so that a failure to sign is
        // recorded as the refusal it is, not after an allow that was never carried out.
        let assertion = match (outcome.forward, &attempt.authn) {
            (true, Ok(who)) => match self.parts.assertion.header_for(who, &app.settings.app.host, now) {
                Ok(value) => Some(value),
                Err(error) => {
                    tracing::error!(%error, "identity assertion not signed: request refused");
                    outcome.refuse(StatusCode::SERVICE_UNAVAILABLE.as_u16(), format!("gateway: {error}"));
                    None
                }
            },
            _ => None,
        };
        let in_flight = self.take_place(&mut outcome);
        let decision = outcome.record.decision;
        let Ok(receipt) = self.audit_receipt(outcome.record).await else {
            return Err(Refused { status: StatusCode::SERVICE_UNAVAILABLE, close: false });
        };
        self.count(decision);
        if !outcome.forward {
            let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::FORBIDDEN);
            return Err(Refused { status, close: false });
        }
        // The identity decided on is the one admitted (moved, not copied).
        let Attempt { authn, .. } = attempt;
        Ok(Admitted { who: authn.ok(), credential_header, certificate, in_flight, record: receipt.seq, assertion })
    }

    /// The headers an upstream receives: hop-by-hop headers, identity headers of every family,
    /// the credential header and client address claims removed (HTTP/2 cookies joined), then
    /// the gateway's own: the signed identity assertion, the decision's audit record,
    /// `x-forwarded-for` and `x-forwarded-proto`. `Host` is left to the caller (HTTP/1.1 and HTTP/2 differ).
    pub(crate) fn upstream_headers(
        &self,
        mut headers: hyper::HeaderMap,
        version: Version,
        admitted: &Admitted,
        peer: IpAddr,
    ) -> hyper::HeaderMap {
        canonical::clean_for_upstream(&mut headers, admitted.credential_header.as_ref());
        if version == Version::HTTP_2 {
            canonical::join_cookies(&mut headers);
        }
        if let Some(value) = &admitted.assertion {
            headers.insert(HeaderName::from_static(ASSERTION_HEADER), value.clone());
        }
        if let Ok(value) = HeaderValue::from_str(&format!("{}:{}", self.parts.id, admitted.record)) {
            headers.insert(HeaderName::from_static(AUDIT_RECORD_HEADER), value);
        }
        // Addresses the client claims are not evidence (clean_for_upstream removed them): the
        // upstream gets the one the gateway saw.
        if let Ok(value) = HeaderValue::from_str(&peer.to_string()) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), value);
        }
        headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("https"));
        headers
    }

    /// A record for a request hyper could not parse (it answered 400 or 431 and closed).
    pub(crate) fn unparsed_record(
        &self,
        connection: &Connection,
        error: &dyn std::fmt::Display,
        protocol: &str,
    ) -> DecisionRecord {
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        bump(&self.metrics.malformed);
        DecisionRecord {
            at_ms: i64::try_from(at_ms).unwrap_or(i64::MAX),
            gateway: self.parts.id.clone(),
            principal: None,
            credential: None,
            resource: zerogate_audit::NO_RESOURCE.to_owned(),
            action: r#"Zerogate::Action::"http""#.to_owned(),
            request: RequestSummary {
                method: None,
                host: connection.server_name.clone(),
                path: None,
                source: Some(connection.peer.ip().to_string()),
            },
            decision: Decision::Deny,
            policies: Vec::new(),
            errors: vec![format!("request: not parsed as {protocol} ({error})")],
            reauthorization: false,
        }
    }

    /// A record for a request refused before an application decided.
    fn bare_record(
        &self,
        now: SystemTime,
        method: &hyper::Method,
        connection: &Connection,
        canonical: Option<&CanonicalRequest>,
        error: String,
    ) -> DecisionRecord {
        let at_ms = now.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        DecisionRecord {
            at_ms: i64::try_from(at_ms).unwrap_or(i64::MAX),
            gateway: self.parts.id.clone(),
            principal: None,
            credential: None,
            resource: canonical.map_or_else(
                || zerogate_audit::NO_RESOURCE.to_owned(),
                |c| format!("{}{}", zerogate_audit::UNROUTED_HOST, c.host),
            ),
            action: r#"Zerogate::Action::"http""#.to_owned(),
            request: RequestSummary {
                method: Some(method.as_str().to_owned()),
                host: canonical.map(|c| c.host.clone()).or_else(|| connection.server_name.clone()),
                path: canonical.map(CanonicalRequest::recorded_target),
                source: Some(connection.peer.ip().to_string()),
            },
            decision: Decision::Deny,
            policies: Vec::new(),
            errors: vec![error],
            reauthorization: false,
        }
    }

    /// Decides `attempt` with the live policy and revocation lists. A poisoned list cannot be
    /// trusted: the credential then counts as revoked.
    pub(crate) fn decide_now(&self, attempt: &Attempt<'_>, now: SystemTime) -> Outcome {
        let engine = self.parts.policy.engine();
        match self.parts.revocations.read() {
            Ok(revocations) => decide(attempt, &engine, &revocations, &self.parts.id, now),
            Err(_) => {
                let mut all = Revocations::default();
                if let Ok(who) = &attempt.authn {
                    all.credentials.insert(who.credential_id.clone());
                }
                decide(attempt, &engine, &all, &self.parts.id, now)
            }
        }
    }

    /// A request or tunnel that would go through takes a place in its principal's share first;
    /// with the share spent it is refused (429), in shadow mode too: the limit protects the
    /// upstreams, it is not a policy question. (The record names the principal of every
    /// authenticated attempt; one let through unauthenticated in shadow mode has none and holds
    /// no place.)
    pub(crate) fn take_place(&self, outcome: &mut Outcome) -> Option<Held> {
        let (true, Some(principal)) = (outcome.forward, outcome.record.principal.as_deref()) else { return None };
        let held = self.in_flight.try_hold(principal);
        if held.is_none() {
            bump(&self.metrics.principal_limit_reached);
            outcome.refuse(
                StatusCode::TOO_MANY_REQUESTS.as_u16(),
                format!(
                    "principal: already has {} requests in flight (gateway.max_requests_per_principal)",
                    self.in_flight.limit()
                ),
            );
        }
        held
    }

    /// Counts a decision that was recorded.
    pub(crate) fn count(&self, decision: Decision) {
        match decision {
            Decision::Allow => bump(&self.metrics.allowed),
            Decision::Deny => bump(&self.metrics.denied),
            Decision::ShadowDeny => bump(&self.metrics.shadow_denied),
        }
    }

    /// Appends `record` and waits until it is durable.
    pub(crate) async fn audit(&self, record: DecisionRecord) -> Result<(), ()> {
        self.audit_receipt(record).await.map(drop)
    }

    /// [`Gateway::audit`], telling where the record landed in the log.
    pub(crate) async fn audit_receipt(&self, record: DecisionRecord) -> Result<zerogate_audit::Receipt, ()> {
        // (Taken by value: the record is the audit log's from here on.)
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.parts.audit.append_then(&record, move |result| {
            let _ = sender.send(result);
        });
        match receiver.await {
            Ok(Ok(receipt)) => Ok(receipt),
            Ok(Err(error)) => {
                bump(&self.metrics.audit_failures);
                tracing::error!(%error, "audit append failed: refusing the request");
                Err(())
            }
            Err(_) => {
                bump(&self.metrics.audit_failures);
                tracing::error!("the audit writer dropped an append: refusing the request");
                Err(())
            }
        }
    }

    /// A SigV4-signed request: the signature over the request as received (path and query raw,
    /// headers, body), then the key's owner as an API client.
    fn verify_sigv4(
        &self,
        verifier: &Verifier<SharedKeys>,
        parts: &hyper::http::request::Parts,
        canonical: &CanonicalRequest,
        body: &Bytes,
        now: SystemTime,
    ) -> Result<Authenticated, AuthnFailure> {
        let fail = |reason: String| AuthnFailure { method: Some(Method::SigV4), reason };
        let mut headers = Vec::with_capacity(parts.headers.len() + 1);
        for (name, value) in &parts.headers {
            let value = value.to_str().map_err(|_| fail("malformed: non-ASCII header value".into()))?;
            headers.push((name.as_str(), value));
        }
        // On HTTP/2 the host the client signed travels as `:authority` (canonicalize made sure
        // a `Host` beside it says the same).
        if let Some(authority) = parts.uri.authority()
            && !parts.headers.contains_key(header::HOST)
        {
            headers.push(("host", authority.as_str()));
        }
        let request = SigV4Request {
            method: parts.method.as_str(),
            path: &canonical.path,
            query: canonical.query.as_deref().unwrap_or(""),
            headers: &headers,
            body,
        };
        let seconds = i64::try_from(now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)).unwrap_or(0);
        let verified = verifier.verify(&request, seconds).map_err(|e| fail(format!("sigv4: {e}")))?;
        let client = self
            .parts
            .access_keys
            .0
            .read()
            .ok()
            .and_then(|keys| keys.get(&verified.access_key_id).map(|(_, client)| client.clone()))
            .ok_or_else(|| fail("sigv4: the access key was revoked".into()))?;
        Ok(Authenticated::from_access_key(&verified.access_key_id, &client))
    }

    /// The caller's identity: a bearer token if one is presented (and the application accepts
    /// OIDC), else the client certificate of the connection.
    async fn authenticate(
        &self,
        headers: &hyper::HeaderMap,
        app: &AppRuntime,
        connection: &Connection,
        now: SystemTime,
    ) -> (Result<Authenticated, AuthnFailure>, Option<HeaderName>) {
        let methods = &app.settings.app.methods;
        // The scheme is case-insensitive (RFC 9110 §11.1): `BEARER x` is a bearer token too,
        // verified as one, never passed by for the certificate.
        let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
            let (scheme, token) = v.split_once([' ', '\t'])?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        });
        if let (Some(token), true) = (bearer, methods.contains(&Method::Oidc)) {
            let outcome = match &self.parts.oidc {
                None => Err(AuthnFailure { method: Some(Method::Oidc), reason: "oidc_not_configured".into() }),
                Some(oidc) => match oidc.verify(token.trim(), now).await {
                    Ok(token) => Authenticated::from_token(&token, self.parts.user_id_from_email)
                        .ok_or(AuthnFailure { method: Some(Method::Oidc), reason: "no_email_claim".into() }),
                    Err(error) => Err(AuthnFailure { method: Some(Method::Oidc), reason: error.kind().to_owned() }),
                },
            };
            return (outcome, Some(header::AUTHORIZATION));
        }
        match self.certificate_identity(connection, now) {
            Some(outcome) => (outcome, None),
            None => (Err(AuthnFailure { method: None, reason: "no_credential".into() }), None),
        }
    }

    /// For an application that requires a client certificate, a good one (from the CA,
    /// unexpired, unrevoked) whatever other credential the request carries: its identity, or
    /// why there is none. Checked before a signed body is read, and on every decision.
    pub(crate) fn required_certificate(
        &self,
        app: &AppRuntime,
        connection: &Connection,
        now: SystemTime,
    ) -> Result<Option<Authenticated>, AuthnFailure> {
        if !app.settings.require_client_certificate {
            return Ok(None);
        }
        match self.certificate_identity(connection, now) {
            Some(outcome) => outcome.map(Some),
            None => Err(AuthnFailure { method: Some(Method::Mtls), reason: "client_certificate_required".into() }),
        }
    }

    /// The identity of the connection's client certificate: from zerogate's CA (verified once
    /// per connection), unexpired and unrevoked now; `None` without a certificate.
    fn certificate_identity(
        &self,
        connection: &Connection,
        now: SystemTime,
    ) -> Option<Result<Authenticated, AuthnFailure>> {
        let chain = connection.chain.as_ref()?;
        let verified = connection.certificate.get_or_init(|| {
            let seconds = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let revoked = self.parts.svid_revocations.read().map(|r| r.clone()).unwrap_or_default();
            Authenticated::from_certificate(&self.parts.svid, chain, i64::try_from(seconds).unwrap_or(0), &revoked)
                .map_err(|e| e.to_string())
        });
        let failed = |reason: String| AuthnFailure { method: Some(Method::Mtls), reason };
        Some(match verified {
            Err(reason) => Err(failed(format!("certificate: {reason}"))),
            Ok(who) => {
                let seconds = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                let expired = who.expires_at.is_some_and(|end| i64::try_from(seconds).unwrap_or(i64::MAX) >= end);
                let revoked = self.parts.svid_revocations.read().map_or(true, |list| certificate_revoked(&list, who));
                if expired {
                    Err(failed("certificate: expired".into()))
                } else if revoked {
                    Err(failed("certificate: revoked".into()))
                } else {
                    Ok(who.clone())
                }
            }
        })
    }

    /// Whether a long-lived session may go on: the credential unexpired and unrevoked, and the
    /// policy still allowing it. A refusal comes with the record to write.
    pub(crate) fn reauthorize(&self, app: &AppRuntime, session: &Session) -> Result<(), Box<DecisionRecord>> {
        self.reauthorize_answering(app, session).map_err(|(_, record)| record)
    }

    /// As [`Self::reauthorize`], with the status a refusal answers (401, 403, 503) where the
    /// exchange can still be answered (an upload cut before its response).
    pub(crate) fn reauthorize_answering(
        &self,
        app: &AppRuntime,
        session: &Session,
    ) -> Result<(), (u16, Box<DecisionRecord>)> {
        let now = SystemTime::now();
        let seconds = i64::try_from(now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)).unwrap_or(0);
        let who = &session.who;
        let mut reason = None;
        if who.expires_at.is_some_and(|end| seconds >= end) {
            reason = Some("the credential expired");
        }
        if who.method == Method::Mtls {
            let revoked = self.parts.svid_revocations.read().map_or(true, |list| certificate_revoked(&list, who));
            if revoked {
                reason = Some("the certificate was revoked");
            }
        }
        if let Some(certificate) = &session.certificate {
            let revoked =
                self.parts.svid_revocations.read().map_or(true, |list| certificate_revoked(&list, certificate));
            if certificate.expires_at.is_some_and(|end| seconds >= end) {
                reason = Some("the required client certificate expired");
            } else if revoked {
                reason = Some("the required client certificate was revoked");
            }
        }
        if who.method == Method::SigV4 {
            let key = who.credential_id.trim_start_matches("akid:");
            if !self.parts.access_keys.0.read().is_ok_and(|keys| keys.contains_key(key)) {
                reason = Some("the access key was revoked");
            }
        }
        let attempt = Attempt {
            app: &app.settings.app,
            request: &session.request,
            method: &session.method,
            source: session.source,
            authn: match reason {
                Some(reason) => Err(AuthnFailure { method: Some(who.method), reason: reason.to_owned() }),
                None => Ok(who.clone()),
            },
        };
        let outcome = self.decide_now(&attempt, now);
        let mut record = outcome.record;
        record.reauthorization = true;
        // Whose session it is, also when its credential is what failed (a refused
        // authentication names no principal on its own).
        if record.principal.is_none() {
            record.principal = Some(who.cedar_uid());
            record.credential = Some(Credential {
                kind: who.method.as_str().to_owned(),
                id: who.credential_id.clone(),
                also_known_as: who.also_known_as.clone(),
            });
        }
        if outcome.forward {
            // Shadow mode lets the session go on; the first time enforcing would have cut it
            // is recorded (once, not on every interval), so that shadow mode shows it.
            if record.decision == Decision::ShadowDeny && !session.shadow_noted.swap(true, Ordering::Relaxed) {
                record.errors.push("long-lived connection would be cut (shadow mode)".to_owned());
                let failures = Arc::clone(&self.metrics.audit_failures);
                self.parts.audit.append_then(&record, move |written| {
                    if let Err(error) = written {
                        bump(&failures);
                        tracing::error!(%error, "a shadow-mode record could not be written");
                    }
                });
            }
            return Ok(());
        }
        record.errors.push("long-lived connection cut".to_owned());
        Err((outcome.status, Box::new(record)))
    }

    /// The request to the upstream through hyper's client: HTTP/2 streams, and HTTP/1.1
    /// requests to an application whose upstream speaks HTTP/2.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn forward(
        self: &Arc<Self>,
        app: &AppRuntime,
        parts: hyper::http::request::Parts,
        body: Body,
        upload_cut: Option<UploadCut>,
        canonical: &CanonicalRequest,
        admitted: &Admitted,
        peer: IpAddr,
    ) -> Response<Body> {
        let mut headers = self.upstream_headers(parts.headers, parts.version, admitted, peer);
        let mut upstream = if app.upstream.http2.is_some() {
            // HTTP/2 names the host in `:authority`, from an absolute URI.
            headers.remove(header::HOST);
            let scheme = if app.upstream.tls.is_some() { "https" } else { "http" };
            let uri = format!("{scheme}://{}{}", app.upstream.authority, canonical.target());
            Request::builder().version(Version::HTTP_2).method(parts.method).uri(uri)
        } else {
            if let Ok(host) = HeaderValue::from_str(&app.upstream.authority) {
                headers.insert(header::HOST, host);
            }
            Request::builder().method(parts.method).uri(canonical.target())
        };
        if let Some(target) = upstream.headers_mut() {
            *target = headers;
        }
        // For a small body the timeout runs from the start of the exchange. A body that streams
        // (or is large) may take its time to arrive, which is not the upstream's fault: there
        // the timeout runs from the moment the whole body has been sent.
        let bounded = hyper::body::Body::size_hint(&body).upper().is_some_and(|upper| upper <= TIMED_BODY_LIMIT);
        let timeout = app.settings.upstream_timeout;
        let (body, sent_whole) = if bounded {
            (body, None)
        } else {
            let (signal, sent_whole) = tokio::sync::oneshot::channel();
            (EndSignalled { inner: body, signal: Some(signal) }.boxed(), Some(sent_whole))
        };
        let Ok(request) = upstream.body(body) else { return generic(StatusCode::BAD_GATEWAY, false) };
        let sent = match sent_whole {
            None => tokio::time::timeout(timeout, self.send(app, request)).await.map_err(drop),
            Some(sent_whole) => {
                let answer_due = async {
                    // (Also when the body is dropped unsent: then the exchange is ending anyway.)
                    let _ = sent_whole.await;
                    tokio::time::sleep(timeout).await;
                };
                tokio::select! {
                    sent = self.send(app, request) => Ok(sent),
                    () = answer_due => Err(()),
                }
            }
        };
        let (status, reason) = match sent {
            // Protocols switched on a request that asked for no upgrade (the client's `Upgrade`
            // is never forwarded): no answer to relay, and the connection is dropped with it.
            Ok(Ok(response)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                (StatusCode::BAD_GATEWAY, "a 101 to a request that asked for no upgrade".to_owned())
            }
            Ok(Ok(mut response)) => {
                canonical::remove_hop_by_hop(response.headers_mut());
                let gateway = Arc::clone(self);
                return response.map(|inner| IdleBounded::boxed(inner, timeout, Sender::Upstream(gateway)));
            }
            Ok(Err(reason)) => (StatusCode::BAD_GATEWAY, reason),
            Err(_) => (StatusCode::GATEWAY_TIMEOUT, format!("no answer within {timeout:?}")),
        };
        if let Some(status) = upload_cut.as_ref().and_then(UploadCut::answer) {
            // The upload was cut because access ended (and recorded so): the upstream did not
            // fail, the caller lost access.
            tracing::info!(upstream = %app.settings.upstream, "upload cut: access ended");
            return generic(status, false);
        }
        bump(&self.metrics.upstream_failures);
        tracing::warn!(upstream = %app.settings.upstream, %reason, "upstream request failed");
        generic(status, false)
    }

    /// Sends `request` upstream on an idle pooled connection when one is ready, else on a new
    /// one; a pooled connection that turns out closed is replaced once. The connection returns
    /// to the pool only after its response body has been read to the end.
    pub(crate) async fn send(&self, app: &AppRuntime, request: Request<Body>) -> Result<Response<Body>, String> {
        let upstream = &app.upstream;
        if upstream.http2.is_some() {
            let (response, slot) = upstream.send_http2(request).await?;
            return Ok(response.map(|inner| Slotted { inner: boxed(inner), slot: Some(slot) }.boxed()));
        }
        let mut request = request;
        while let Some(mut sender) = upstream.pool.take() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(upstream.pool.wrap(response, sender)),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(failed.into_error().to_string()),
                },
            }
        }
        let mut sender = upstream.connect().await?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        Ok(upstream.pool.wrap(response, sender))
    }
}

/// Idle upstream connections of one application.
#[derive(Default)]
struct Pool {
    idle: std::sync::Mutex<Vec<SendRequest<Body>>>,
}

/// Idle connections kept per upstream at most.
const MAX_IDLE: usize = 256;

impl Pool {
    fn take(&self) -> Option<SendRequest<Body>> {
        self.idle.lock().ok()?.pop()
    }

    fn put(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(sender);
        }
    }

    fn wrap(self: &Arc<Self>, response: Response<Incoming>, sender: SendRequest<Body>) -> Response<Body> {
        if hyper::body::Body::is_end_stream(response.body()) {
            self.put(sender);
            return response.map(boxed);
        }
        let pool = Arc::clone(self);
        response.map(|inner| PooledBody { inner, sender: Some(sender), pool }.map_err(BoxError::from).boxed())
    }
}

/// A response body that gives its connection back to the pool once read to the end (and drops
/// it on an error or if the client goes away first).
struct PooledBody {
    inner: Incoming,
    sender: Option<SendRequest<Body>>,
    pool: Arc<Pool>,
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => {
                if let Some(sender) = this.sender.take() {
                    this.pool.put(sender);
                }
            }
            std::task::Poll::Ready(Some(Err(_))) => this.sender = None,
            _ => {}
        }
        // A body of known length ends with its last byte: the server may never poll again.
        if hyper::body::Body::is_end_stream(&this.inner)
            && let Some(sender) = this.sender.take()
        {
            this.pool.put(sender);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take()
            && hyper::body::Body::is_end_stream(&self.inner)
        {
            self.pool.put(sender);
        }
    }
}

impl Upstream {
    /// A new hyper HTTP/1.1 connection (for HTTP/2 clients).
    async fn connect(&self) -> Result<SendRequest<Body>, String> {
        let tcp = self.tcp().await?;
        match &self.tls {
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
                let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
                handshake(TokioIo::new(tls)).await
            }
            None => handshake(TokioIo::new(tcp)).await,
        }
    }

    pub(crate) async fn tcp(&self) -> Result<TcpStream, String> {
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// Sends `request` as a stream on one of the upstream's HTTP/2 connections (see
    /// [`Http2Pool::stream`]); the answer and the stream's slot on its connection, to hold
    /// while the stream lasts.
    pub(crate) async fn send_http2(&self, request: Request<Body>) -> Result<(Response<Incoming>, StreamSlot), String> {
        let pool = self.http2.as_ref().ok_or("not an HTTP/2 upstream")?;
        let (mut sender, slot) = pool.stream(|| self.connect_http2()).await?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        Ok((response, slot))
    }

    /// A new HTTP/2 connection: ALPN `h2` over TLS (the upstream must agree), prior knowledge
    /// over plain TCP.
    async fn connect_http2(&self) -> Result<http2::SendRequest<Body>, String> {
        let tcp = self.tcp().await?;
        let builder = {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            builder
        };
        match &self.tls {
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
                let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
                if tls.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
                    return Err("the upstream did not agree to HTTP/2 (ALPN)".into());
                }
                let (sender, connection) = builder.handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                Ok(sender)
            }
            None => {
                let (sender, connection) = builder.handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                Ok(sender)
            }
        }
    }
}

/// An HTTP/1.1 client connection on `io`.
async fn handshake<T>(io: T) -> Result<SendRequest<Body>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A request body that says when it has been sent whole (see [`Gateway::forward`]).
struct EndSignalled {
    inner: Body,
    signal: Option<tokio::sync::oneshot::Sender<()>>,
}

impl hyper::body::Body for EndSignalled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if (matches!(polled, std::task::Poll::Ready(None)) || hyper::body::Body::is_end_stream(&self.inner))
            && let Some(signal) = self.signal.take()
        {
            let _ = signal.send(());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}

/// A body that may pause for at most `idle` between two frames: a response body from the
/// upstream (the application's upstream timeout; nginx's `proxy_read_timeout`) or a request
/// body from an HTTP/2 client (the gateway's client timeout). Past that the sender has failed
/// and the body fails, which resets an HTTP/2 stream and closes an HTTP/1.1 connection (a
/// request body failing fails its upstream exchange). The timer is armed only when the body has
/// to wait.
struct IdleBounded {
    inner: Body,
    idle: Duration,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    sender: Sender,
}

/// Who sends an [`IdleBounded`] body.
enum Sender {
    /// The upstream: its silence counts as an upstream failure.
    Upstream(Arc<Gateway>),
    /// The client, until the upstream has answered (the flag is set): from then on the exchange
    /// may be full duplex (a gRPC stream whose client sends once and then only reads), and the
    /// response's own bounds apply.
    Client(Arc<std::sync::atomic::AtomicBool>),
}

impl IdleBounded {
    fn boxed(inner: Body, idle: Duration, sender: Sender) -> Body {
        Self { inner, idle, pause: None, sender }.boxed()
    }
}

impl hyper::body::Body for IdleBounded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(polled) = polled {
            this.pause = None;
            return Poll::Ready(match (polled, &this.sender) {
                // A client's trailers are fields it states too: what may not pass as a header
                // (an identity of any family, hop-by-hop, a credential) does not pass here.
                (Some(Ok(frame)), Sender::Client(_)) => Some(Ok(match frame.into_trailers() {
                    Ok(mut trailers) => {
                        canonical::clean_for_upstream(&mut trailers, Some(&header::AUTHORIZATION));
                        hyper::body::Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                })),
                // An upstream's failure, as a plain error: hyper resets the client's stream with
                // the HTTP/2 reason it finds in an error's sources, and an upstream's own
                // PROTOCOL_ERROR passed on would read as the client's malformed request
                // (resets.rs records those); this way the client's stream ends INTERNAL_ERROR.
                (Some(Err(error)), Sender::Upstream(_)) => Some(Err(format!("upstream: {error}").into())),
                (polled, _) => polled,
            });
        }
        if let Sender::Client(answered) = &this.sender
            && answered.load(Ordering::Relaxed)
        {
            this.pause = None;
            return Poll::Pending;
        }
        let idle = this.idle;
        let pause = this.pause.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if pause.as_mut().poll(cx).is_ready() {
            let error: BoxError = match &this.sender {
                Sender::Upstream(gateway) => {
                    bump(&gateway.metrics.upstream_failures);
                    tracing::warn!(?idle, "upstream sent nothing in the middle of a response: cut");
                    format!("no response data for {idle:?}").into()
                }
                Sender::Client(_) => {
                    tracing::info!(?idle, "an HTTP/2 client sent nothing in the middle of a request body");
                    format!("no request body data for {idle:?}").into()
                }
            };
            return Poll::Ready(Some(Err(error)));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}

/// `body`, re-authorized for `session` while it streams (see [`Reverified`]).
pub(crate) fn reverified(gateway: Arc<Gateway>, session: Session, body: Body) -> Body {
    Reverified::new(body, gateway, session).boxed()
}

/// A request body (an upload) re-authorized for `session` while it arrives, and the flag it
/// sets when it is cut, so that the failed exchange is answered as the refusal that ended
/// access (401, 403, or 503 when the revocation lists went out of date) rather than as an
/// upstream failure.
pub(crate) fn reverified_upload(gateway: Arc<Gateway>, session: Session, body: Body) -> (Body, UploadCut) {
    let cut = UploadCut::default();
    let mut body = Reverified::new(body, gateway, session);
    body.upload_cut = Some(cut.clone());
    (body.boxed(), cut)
}

/// The status to answer once a request body was cut because access ended, 0 until then (see
/// [`reverified_upload`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct UploadCut(Arc<AtomicU16>);

impl UploadCut {
    fn answer(&self) -> Option<StatusCode> {
        StatusCode::from_u16(self.0.load(Ordering::Relaxed)).ok()
    }
}

/// A response body for an authenticated caller, authorized again every `reauthorize_every`
/// while it is still streaming (credential expiry, revocations, policy): when access ends the
/// body fails, which resets an HTTP/2 stream and closes an HTTP/1.1 connection, and the cut is
/// recorded. The timer starts only when the body first has to wait, so short responses never
/// arm one.
struct Reverified {
    inner: Body,
    gateway: Arc<Gateway>,
    session: Session,
    /// When the session is authorized again: checked on every frame, so a body that is always
    /// ready (a fast download) is re-authorized as one that waits is.
    due: tokio::time::Instant,
    /// Wakes the task at `due` while the body waits; made the first time it does.
    wake: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    cut: bool,
    /// Told of the cut (the status to answer), for a request body (see [`reverified_upload`]).
    upload_cut: Option<UploadCut>,
}

impl Reverified {
    fn new(inner: Body, gateway: Arc<Gateway>, session: Session) -> Self {
        let due = tokio::time::Instant::now() + gateway.parts.reauthorize_every;
        Self { inner, gateway, session, due, wake: None, cut: false, upload_cut: None }
    }
}

impl hyper::body::Body for Reverified {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::future::Future;
        let this = &mut *self;
        if this.cut {
            return std::task::Poll::Ready(None);
        }
        let now = tokio::time::Instant::now();
        if now >= this.due {
            let refused = match this.gateway.apps.get(&this.session.request.host) {
                Some(app) => this.gateway.reauthorize_answering(app, &this.session).err(),
                None => None,
            };
            if let Some((status, record)) = refused {
                this.cut = true;
                if let Some(upload_cut) = &this.upload_cut {
                    // The status of the decision that ended access: 401 (the credential expired
                    // or was revoked), 403 (policy), 503 (revocation lists out of date).
                    upload_cut.0.store(status, Ordering::Relaxed);
                }
                let gateway = Arc::clone(&this.gateway);
                tokio::spawn(async move {
                    let _ = gateway.audit(*record).await;
                });
                return std::task::Poll::Ready(Some(Err("access ended: the stream was cut".into())));
            }
            this.due = now + this.gateway.parts.reauthorize_every;
            if let Some(wake) = this.wake.as_mut() {
                wake.as_mut().reset(this.due);
            }
        }
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending() {
            let due = this.due;
            let wake = this.wake.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if wake.as_mut().poll(cx).is_ready() {
                // Due while we looked: come back at once to check.
                cx.waker().wake_by_ref();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.cut || hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}
