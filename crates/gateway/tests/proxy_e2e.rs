//! The gateway on loopback with real clients: curl with certificates from zerogate's CA, an
//! upstream that records what reaches it. For each refusal class, the upstream never sees the
//! request; for each allowed one, it sees the canonical request, no client identity header, and
//! a signed assertion; every decision is in the audit log and the log verifies.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use zerogate_audit::{AuditLog, CheckpointKey, Options};
use zerogate_authn::identity::Revocations;
use zerogate_authn::jwt::Validation;
use zerogate_authn::oidc::{FetchSettings, IssuerConfig, OidcVerifier};
use zerogate_gateway::assertion::AssertionSigner;
use zerogate_gateway::certificate::ServerCertificate;
use zerogate_gateway::config::GatewayConfig;
use zerogate_gateway::proxy::{Gateway, GatewayParts, SharedKeys, tls_config};
use zerogate_pki::{Authority, Lifetimes, RevocationList, Serial, SpiffeId, SvidVerifier, TrustDomain, VerifiedCsr};
use zerogate_policy::{LivePolicy, PolicyFiles};

const POLICY: &str = r#"
@id("devices-reports")
permit (principal is Zerogate::Device, action == Zerogate::Action::"http", resource == Zerogate::Route::"billing-reports");
@id("api-engineering")
permit (principal in Zerogate::Group::"engineering", action, resource == Zerogate::Application::"api")
when { context.authn == "oidc" };
@id("ci-deployer")
permit (principal == Zerogate::ApiClient::"deployer", action, resource == Zerogate::Application::"ci")
when { context.authn == "sigv4" };
@id("wiki-devices")
permit (principal is Zerogate::Device, action, resource == Zerogate::Application::"wiki");
@id("wiki-drafts-closed")
forbid (principal, action == Zerogate::Action::"http", resource == Zerogate::Application::"wiki")
when { context has path && context.path like "/drafts*" };
@id("grpc-devices")
permit (principal is Zerogate::Device, action, resource == Zerogate::Application::"grpc");
@id("legacy-devices")
permit (principal is Zerogate::Device, action, resource == Zerogate::Application::"legacy");
@id("vault-engineering")
permit (principal in Zerogate::Group::"engineering", action, resource == Zerogate::Application::"vault")
when { context.authn == "oidc" };
@id("vault-deployer")
permit (principal == Zerogate::ApiClient::"deployer", action, resource == Zerogate::Application::"vault")
when { context.authn == "sigv4" };
"#;

const OIDC_ISSUER: &str = "https://idp.example.test/realms/zerogate";

struct Setup {
    dir: PathBuf,
    port: u16,
    seen: Arc<Mutex<Vec<Value>>>,
    svid_revocations: Arc<RwLock<RevocationList>>,
    device_serial: String,
    audit_key_b64: String,
    audit_path: PathBuf,
    jwks: Value,
    access_keys: SharedKeys,
    connections: Arc<AtomicUsize>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    key_id: String,
    key_secret: String,
    gateway: Arc<Gateway>,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn issue(ca: &Authority, id: &str, names: &[String]) -> (String, String, String) {
    let key = KeyPair::generate().unwrap();
    let csr = CertificateParams::default().serialize_request(&key).unwrap();
    let csr = VerifiedCsr::from_der(csr.der()).unwrap();
    let issued = if names.is_empty() {
        ca.issue_for_csr(&SpiffeId::parse(id).unwrap(), &csr, None, now()).unwrap()
    } else {
        ca.issue(&SpiffeId::parse(id).unwrap(), &csr.public_key, names, None, now()).unwrap()
    };
    (issued.chain_pem, key.serialize_pem(), issued.serial.to_string())
}

/// An endless response: a line every 100 ms, as server-sent events or a long download would.
struct Ticker(tokio::time::Interval);

impl hyper::body::Body for Ticker {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0.poll_tick(cx).map(|_| Some(Ok(hyper::body::Frame::data(Bytes::from_static(b"tick\n")))))
    }
}

/// A response that never ends and sends as fast as it is read.
struct Flood;

impl hyper::body::Body for Flood {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(vec![b'x'; 16 * 1024])))))
    }
}

/// A response that sends its first line, falls silent for 3 s, then sends the last.
struct Stalling {
    lines_sent: u8,
    pause: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for Stalling {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        use std::future::Future;
        use std::task::Poll;
        match self.lines_sent {
            0 => {
                self.lines_sent = 1;
                Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(b"first line\n")))))
            }
            1 => match self.pause.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    self.lines_sent = 2;
                    Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(b"last line\n")))))
                }
            },
            _ => Poll::Ready(None),
        }
    }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// An upstream that records what reaches it (HTTP/1.1, or HTTP/2 with prior knowledge).
async fn start_upstream(seen: Arc<Mutex<Vec<Value>>>, connections: Arc<AtomicUsize>, http2: bool) -> u16 {
    start_upstream_with(seen, connections, http2, true).await
}

/// [`start_upstream`]; an HTTP/2 upstream without `extended_connect` does not take WebSockets
/// (as most HTTP/2 servers out of the box).
async fn start_upstream_with(
    seen: Arc<Mutex<Vec<Value>>>,
    connections: Arc<AtomicUsize>,
    http2: bool,
    extended_connect: bool,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            connections.fetch_add(1, Ordering::SeqCst);
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        if request.method() == hyper::Method::CONNECT {
                            // A WebSocket over HTTP/2 (RFC 8441): after 200, echo whatever arrives.
                            let headers: serde_json::Map<String, Value> = request
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or("?"))))
                                .collect();
                            let protocol =
                                request.extensions().get::<hyper::ext::Protocol>().map(|p| p.as_str().to_owned());
                            seen.lock().unwrap().push(json!({
                                "method": "CONNECT",
                                "protocol": protocol,
                                "target": request.uri().path(),
                                "version": format!("{:?}", request.version()),
                                "headers": headers,
                            }));
                            if request.uri().path().ends_with("/no-upgrade") {
                                let response = Response::builder().status(404).body(Full::new(Bytes::new()).boxed());
                                return Ok::<_, Infallible>(response.unwrap());
                            }
                            let upgrade = hyper::upgrade::on(&mut request);
                            tokio::spawn(async move {
                                if let Ok(upgraded) = upgrade.await {
                                    let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
                                    let _ = tokio::io::copy(&mut read, &mut write).await;
                                }
                            });
                            let response = Response::builder()
                                .status(200)
                                .header("sec-websocket-protocol", "chat")
                                .body(Full::new(Bytes::new()).boxed());
                            return Ok::<_, Infallible>(response.unwrap());
                        }
                        if request.headers().get("upgrade").is_some() {
                            // A WebSocket upgrade (RFC 6455): after 101, echo whatever arrives.
                            let headers: serde_json::Map<String, Value> = request
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or("?"))))
                                .collect();
                            seen.lock().unwrap().push(json!({
                                "method": request.method().as_str(),
                                "target": request.uri().path(),
                                "upgrade": true,
                                "headers": headers,
                            }));
                            if request.uri().path().ends_with("/no-upgrade") {
                                // An application that answers the handshake as an ordinary GET.
                                let body = Full::new(Bytes::from_static(b"not a websocket")).boxed();
                                return Ok::<_, Infallible>(Response::new(body));
                            }
                            let key = request.headers().get("sec-websocket-key").map(|k| k.as_bytes().to_vec());
                            let accept = key.map(|mut key| {
                                use base64::Engine as _;
                                key.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
                                let digest =
                                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &key);
                                base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
                            });
                            // An application that switches protocols without accepting the key.
                            let accept =
                                if request.uri().path().ends_with("/bare-101") { Some("wrong".into()) } else { accept };
                            let upgrade = hyper::upgrade::on(&mut request);
                            tokio::spawn(async move {
                                if let Ok(upgraded) = upgrade.await {
                                    let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
                                    let _ = tokio::io::copy(&mut read, &mut write).await;
                                }
                            });
                            let response = Response::builder()
                                .status(101)
                                .header("upgrade", "websocket")
                                .header("connection", "upgrade")
                                .header("sec-websocket-accept", accept.unwrap_or_default())
                                .header("sec-websocket-protocol", "chat")
                                .body(Full::new(Bytes::new()).boxed())
                                .unwrap();
                            return Ok::<_, Infallible>(response);
                        }
                        if request.uri().path().ends_with("/trailers") {
                            // As a gRPC service: reads the request with its trailers, answers with
                            // a body and trailers of its own.
                            let target = request.uri().path().to_owned();
                            let collected = request.into_body().collect().await.unwrap();
                            let trailers: serde_json::Map<String, Value> = collected
                                .trailers()
                                .into_iter()
                                .flatten()
                                .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or("?"))))
                                .collect();
                            seen.lock().unwrap().push(json!({ "target": target, "request_trailers": trailers }));
                            let mut answer = hyper::HeaderMap::new();
                            answer.insert("grpc-status", "0".parse().unwrap());
                            answer.insert("grpc-message", "done".parse().unwrap());
                            let body =
                                Full::new(Bytes::from_static(b"reply")).with_trailers(async { Some(Ok(answer)) });
                            return Ok(Response::new(body.boxed()));
                        }
                        if request.uri().path().ends_with("/stream") {
                            let ticks = tokio::time::interval(Duration::from_millis(100));
                            return Ok(Response::new(Ticker(ticks).boxed()));
                        }
                        if request.uri().path().ends_with("/flood") {
                            return Ok(Response::new(Flood.boxed()));
                        }
                        if request.uri().path().ends_with("/refused-upload") {
                            // Answers before reading the body, as an application that refuses
                            // an upload by its size does; hyper then closes the connection.
                            seen.lock().unwrap().push(json!({ "target": request.uri().path(), "body": "unread" }));
                            let response = Response::builder()
                                .status(413)
                                .body(Full::new(Bytes::from_static(b"too large for this application")).boxed())
                                .unwrap();
                            return Ok(response);
                        }
                        if request.uri().path().ends_with("/stalls") {
                            let pause = Box::pin(tokio::time::sleep(Duration::from_secs(3)));
                            return Ok(Response::new(Stalling { lines_sent: 0, pause }.boxed()));
                        }
                        if request.uri().path() == "/reports/slow" {
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                        }
                        let headers: serde_json::Map<String, Value> = request
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or("?"))))
                            .collect();
                        let mut entry = json!({
                            "method": request.method().as_str(),
                            "target": request.uri().path_and_query().map(|t| t.as_str()),
                            "version": format!("{:?}", request.version()),
                            "authority": request.uri().authority().map(|a| a.as_str()),
                            "headers": headers,
                        });
                        // The body as it arrived: its length, or how it failed.
                        let late = entry["target"].as_str().is_some_and(|t| t.ends_with("/answers-late"));
                        entry["body"] = match request.into_body().collect().await {
                            Ok(body) => json!(body.to_bytes().len()),
                            Err(error) => json!(format!("failed: {error}")),
                        };
                        if late {
                            // Takes the whole upload, then thinks for longer than wiki's timeout.
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                        }
                        seen.lock().unwrap().push(entry.clone());
                        let body: TestBody = Full::new(Bytes::from(entry.to_string())).boxed();
                        Ok::<_, Infallible>(Response::new(body))
                    }
                });
                if http2 {
                    let mut builder = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                    if extended_connect {
                        builder.enable_connect_protocol();
                    }
                    let _ = builder.max_concurrent_streams(64).serve_connection(TokioIo::new(tcp), service).await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                }
            });
        }
    });
    port
}

async fn setup(name: &str) -> Setup {
    setup_with(name, Duration::from_secs(60)).await
}

/// [`setup`] with the gateway's client timeout set to `client_timeout`.
async fn setup_with(name: &str, client_timeout: Duration) -> Setup {
    setup_tuned(name, Tuning { client_timeout, ..Tuning::default() }).await
}

/// The gateway's limits in a test, and where its audit log is (`None`: in the test's directory).
struct Tuning {
    client_timeout: Duration,
    max_connections: usize,
    max_requests_per_principal: usize,
    audit_path: Option<PathBuf>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            client_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_requests_per_principal: 128,
            audit_path: None,
        }
    }
}

/// [`setup`] with the gateway's limits set to `tuning`.
async fn setup_tuned(name: &str, tuning: Tuning) -> Setup {
    let Tuning { client_timeout, max_connections, max_requests_per_principal, audit_path } = tuning;
    let dir = std::env::temp_dir().join(format!("zerogate-gw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policy")).unwrap();
    let domain = TrustDomain::parse("corp.example").unwrap();
    let new = Authority::init(&domain, now() - 60).unwrap();
    let ca = Authority::load(domain.clone(), &new.material, Lifetimes::default()).unwrap();
    std::fs::write(dir.join("root.pem"), &new.material.root_cert_pem).unwrap();
    let names =
        ["billing", "wiki", "api", "ci", "grpc", "vault", "legacy"].map(|app| format!("{app}.example.org")).to_vec();
    let (server_chain, server_key, _) = issue(&ca, "spiffe://corp.example/workload/gateway", &names);
    let (device_chain, device_key, device_serial) = issue(&ca, "spiffe://corp.example/device/laptop-42", &[]);
    std::fs::write(dir.join("device.pem"), &device_chain).unwrap();
    std::fs::write(dir.join("device.key"), &device_key).unwrap();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let upstream = start_upstream(Arc::clone(&seen), Arc::clone(&connections), false).await;
    let upstream_h2 = start_upstream(Arc::clone(&seen), Arc::clone(&connections), true).await;
    let upstream_h2_plain = start_upstream_with(Arc::clone(&seen), Arc::clone(&connections), true, false).await;
    std::fs::write(dir.join("policy/main.cedar"), POLICY).unwrap();
    let entities = json!([
        { "uid": { "type": "Zerogate::Application", "id": "billing" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "Zerogate::Route", "id": "billing-reports" }, "attrs": {}, "parents": [{ "type": "Zerogate::Application", "id": "billing" }] },
        { "uid": { "type": "Zerogate::Application", "id": "wiki" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "Zerogate::Application", "id": "api" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "Zerogate::Application", "id": "ci" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "Zerogate::Application", "id": "grpc" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "Zerogate::Application", "id": "vault" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "Zerogate::Application", "id": "legacy" }, "attrs": {}, "parents": [] },
    ]);
    // Tokens made by PyJWT (an independent implementation), keys published as a static JWKS.
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../authn/tests/jwt/make_tokens.py");
    let made = Command::new("python3")
        .arg(&script)
        .arg(now().to_string())
        .args([OIDC_ISSUER, "https://second.example.test"])
        .arg(&tokens)
        .output()
        .expect("python3 runs");
    assert!(made.status.success(), "make_tokens.py: {}", String::from_utf8_lossy(&made.stderr));
    std::fs::write(dir.join("policy/entities.json"), entities.to_string()).unwrap();
    let config = format!(
        r#"
[gateway]
listen = "127.0.0.1:0"
id = "gw-test"
[policy]
policies = "policy"
entities = "policy/entities.json"
[[app]]
host = "billing.example.org"
upstream = "http://127.0.0.1:{upstream}"
resource = 'Zerogate::Application::"billing"'
authn = ["mtls"]
routes = {{ "/reports" = 'Zerogate::Route::"billing-reports"' }}
[[app]]
host = "wiki.example.org"
upstream = "http://127.0.0.1:{upstream}"
resource = 'Zerogate::Application::"wiki"'
authn = ["mtls"]
mode = "shadow"
upstream_timeout_seconds = 1
[[oidc]]
issuer = "{OIDC_ISSUER}"
audiences = ["zerogate-gateway"]
algorithms = ["RS256", "ES256", "EdDSA", "PS256", "ES384"]
[[app]]
host = "api.example.org"
upstream = "http://127.0.0.1:{upstream}"
resource = 'Zerogate::Application::"api"'
authn = ["oidc"]
[[app]]
host = "ci.example.org"
upstream = "http://127.0.0.1:{upstream}"
resource = 'Zerogate::Application::"ci"'
authn = ["sigv4"]
[[app]]
host = "grpc.example.org"
upstream = "http://127.0.0.1:{upstream_h2}"
upstream_protocol = "http2"
resource = 'Zerogate::Application::"grpc"'
authn = ["mtls"]
[[app]]
host = "vault.example.org"
upstream = "http://127.0.0.1:{upstream}"
resource = 'Zerogate::Application::"vault"'
authn = ["oidc", "sigv4", "mtls"]
client_certificates = "required"
[[app]]
host = "legacy.example.org"
upstream = "http://127.0.0.1:{upstream_h2_plain}"
upstream_protocol = "http2"
resource = 'Zerogate::Application::"legacy"'
authn = ["mtls"]
"#
    );
    std::fs::write(dir.join("gateway.toml"), config).unwrap();
    let config = GatewayConfig::load(&dir.join("gateway.toml")).unwrap();

    let key = CheckpointKey::generate().unwrap();
    let audit_key_b64 = key.public_key_b64();
    let audit_path = audit_path.unwrap_or_else(|| dir.join("audit.jsonl"));
    let audit = Arc::new(AuditLog::open(&audit_path, key, Options::default()).unwrap());
    let policy = Arc::new(
        LivePolicy::start(PolicyFiles { policies: config.policies.clone(), entities: config.entities.clone() })
            .unwrap(),
    );
    let svid = Arc::new(SvidVerifier::default().with_domain(domain, &[ca.root_der().clone()]).unwrap());
    let svid_revocations = Arc::new(RwLock::new(RevocationList::default()));
    let (signer, _) = AssertionSigner::generate("https://gw-test.zerogate").unwrap();
    let (key_id, key_secret) = zerogate_pki::access_key::generate().unwrap();
    let access_keys = SharedKeys::default();
    access_keys.0.write().unwrap().insert(key_id.clone(), (key_secret.clone(), "deployer".to_owned()));
    let jwks = signer.jwks();
    let gateway = Gateway::new(GatewayParts {
        id: config.id.clone(),
        apps: config.apps.clone(),
        policy,
        audit,
        svid,
        svid_revocations: Arc::clone(&svid_revocations),
        revocations: Arc::new(RwLock::new(Revocations::default())),
        access_keys: access_keys.clone(),
        oidc: Some(Arc::new(
            OidcVerifier::new(
                config
                    .issuers
                    .iter()
                    .map(|settings| IssuerConfig {
                        validation: Validation::new(
                            &settings.issuer,
                            settings.audiences.clone(),
                            settings.algorithms.clone(),
                            settings.token_kind,
                        )
                        .unwrap(),
                        fetch: FetchSettings {
                            static_jwks: Some(std::fs::read(tokens.join("jwks.json")).unwrap()),
                            ..FetchSettings::default()
                        },
                    })
                    .collect(),
            )
            .unwrap(),
        )),
        user_id_from_email: false,
        assertion: Arc::new(signer),
        reauthorize_every: Duration::from_millis(300),
        client_timeout,
        max_connections,
        max_requests_per_principal,
    })
    .unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server_chain.as_bytes()).collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from_pem_slice(server_key.as_bytes()).unwrap());
    let certificate = Arc::new(ServerCertificate::new(chain, key).unwrap());
    let tls = tls_config(certificate, &[ca.root_der().clone()]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(Arc::clone(&gateway).serve(listener, Arc::new(tls), stop, Duration::from_secs(10)));
    Setup {
        dir,
        port,
        seen,
        svid_revocations,
        device_serial,
        audit_key_b64,
        audit_path,
        jwks,
        access_keys,
        connections,
        key_id,
        key_secret,
        shutdown,
        server,
        gateway,
    }
}

/// curl through the gateway over HTTP/1.1; returns (status, body).
fn curl(setup: &Setup, host: &str, path: &str, with_cert: bool, extra: &[&str]) -> (u16, String) {
    let mut args = vec!["--http1.1"];
    args.extend_from_slice(extra);
    let (status, body, _) = curl_versioned(setup, host, path, with_cert, &args);
    (status, body)
}

/// curl through the gateway (HTTP/2 when `extra` asks for it); returns (status, body, the HTTP
/// version curl spoke: `1.1` or `2`).
fn curl_versioned(setup: &Setup, host: &str, path: &str, with_cert: bool, extra: &[&str]) -> (u16, String, String) {
    let dir: &Path = &setup.dir;
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--path-as-is", "-o", "-", "-w", "\n%{http_version} %{http_code}", "--max-time", "10"])
        .arg("--cacert")
        .arg(dir.join("root.pem"))
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", setup.port));
    if with_cert {
        command.arg("--cert").arg(dir.join("device.pem")).arg("--key").arg(dir.join("device.key"));
    }
    command.args(extra).arg(format!("https://{host}:{}{path}", setup.port));
    let out = command.output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", "0 0"));
    let (version, status) = last.split_once(' ').unwrap_or(("0", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned(), version.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_authenticated_authorized_audited_then_forwarded() {
    let setup = setup("main").await;
    let run = |host: &'static str, path: &'static str, cert: bool, extra: Vec<&'static str>| {
        let setup = &setup;
        tokio::task::block_in_place(move || curl(setup, host, path, cert, &extra))
    };
    let billing = "billing.example.org";

    // Allowed: a device on its route; spoofed identity headers never arrive; the assertion does.
    let (status, body) = run(
        billing,
        "/reports/q3?format=csv",
        true,
        vec![
            "-H",
            "X-Forwarded-User: admin",
            "-H",
            "X-Zerogate-Identity: forged",
            "-H",
            "Connection: x-zerogate-identity",
            "-H",
            "X-Zerogate-Audit-Record: gw-test:1",
        ],
    );
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["target"], "/reports/q3?format=csv");
    // The upstream is told which record let the request in; the client's claim never arrives.
    let record = record_of(&setup, &seen);
    assert_eq!((record["decision"].as_str(), record["request"]["host"].as_str()), (Some("allow"), Some(billing)));
    assert!(seen["headers"].get("x-forwarded-user").is_none());
    let assertion = seen["headers"]["x-zerogate-identity"].as_str().unwrap();
    assert_ne!(assertion, "forged");
    let keys = zerogate_authn::jwt::KeySet::from_jwks(
        setup.jwks.to_string().as_bytes(),
        &[zerogate_authn::jwt::Algorithm::ES256],
    )
    .unwrap()
    .0;
    let validation = zerogate_authn::jwt::Validation::new(
        "https://gw-test.zerogate",
        vec![billing.into()],
        vec![zerogate_authn::jwt::Algorithm::ES256],
        zerogate_authn::jwt::TokenKind::Id,
    )
    .unwrap();
    let verified = zerogate_authn::jwt::UnverifiedToken::parse(assertion)
        .unwrap()
        .verify(&keys, &validation, std::time::SystemTime::now())
        .unwrap();
    assert_eq!(verified.subject, "spiffe://corp.example/device/laptop-42");
    assert_eq!(setup.seen.lock().unwrap().len(), 1);

    // Refusals: none of these reach the upstream.
    let refusals = [
        (billing, "/reports/q3", false, vec![], 401),          // no certificate
        (billing, "/invoices", true, vec![], 403),             // no permit
        (billing, "/reports/../admin", true, vec![], 400),     // dot segment
        (billing, "/reports/%2e%2e/admin", true, vec![], 400), // encoded dot
        (billing, "/reports%2fq3", true, vec![], 400),         // encoded slash
        (billing, "/reports;x=1", true, vec![], 400),          // path parameter
        (billing, "/reports/q3", true, vec!["-H", "Host: wiki.example.org"], 421), // Host is not SNI
        (billing, "/reports/q3", true, vec!["-H", "X_Forwarded_User: admin"], 400), // underscore
        (
            billing,
            "/reports/q3",
            true,
            vec!["-H", "Content-Length: 1", "-H", "Content-Length: 2", "-X", "POST", "--data-binary", "x"],
            400,
        ),
        ("unknown.example.org", "/", true, vec!["-k"], 404),
    ];
    for (host, path, cert, extra, expected) in refusals {
        let (status, body) = run(host, path, cert, extra.clone());
        assert_eq!(status, expected, "{host}{path} {extra:?}: {body}");
        assert!(!body.contains("target"), "upstream body leaked: {body}");
    }
    assert_eq!(setup.seen.lock().unwrap().len(), 1, "a refused request reached the upstream");

    // Content-Length with Transfer-Encoding: two framings, two readings — refused (and the
    // connection closed), never resolved in favour of one of them.
    let both = vec!["-H", "Content-Length: 1", "-H", "Transfer-Encoding: chunked", "-X", "POST", "--data-binary", "x"];
    let (status, body) = run(billing, "/reports/q3", true, both);
    assert_eq!(status, 400, "{body}");
    assert_eq!(setup.seen.lock().unwrap().len(), 1, "a request with two framings reached the upstream");

    // Revocation applies to the very next request.
    setup.svid_revocations.write().unwrap().serials.insert(Serial::parse(&setup.device_serial).unwrap());
    assert_eq!(run(billing, "/reports/q3", true, vec![]).0, 401);
    assert_eq!(setup.seen.lock().unwrap().len(), 1);
    setup.svid_revocations.write().unwrap().serials.clear();

    // Shadow mode: a would-be deny goes through and is recorded as such.
    let (status, _) = run("wiki.example.org", "/page", false, vec![]);
    assert_eq!(status, 200);
    assert_eq!(setup.seen.lock().unwrap().len(), 2);

    // Upstream connections are reused: more requests, at most one new connection.
    let before = setup.connections.load(Ordering::SeqCst);
    for _ in 0..4 {
        assert_eq!(run(billing, "/reports/q4", true, vec![]).0, 200);
    }
    assert!(setup.connections.load(Ordering::SeqCst) - before <= 1, "upstream connections are not reused");
    for _ in 0..4 {
        setup.seen.lock().unwrap().pop();
    }

    // Every decision is in the log, and the log verifies.
    let text = std::fs::read_to_string(&setup.audit_path).unwrap();
    let records: Vec<Value> =
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|l| l["kind"] == "decision").collect();
    // Every request has exactly one record, the refusals of two framings too.
    let decisions: Vec<&str> = records.iter().map(|r| r["record"]["decision"].as_str().unwrap()).collect();
    let count = |kind: &str| decisions.iter().filter(|d| **d == kind).count();
    assert_eq!((count("allow"), count("deny"), count("shadow-deny")), (5, refusals_len() + 2, 1), "{decisions:?}");
    assert_eq!(decisions.first(), Some(&"allow"));
    assert_eq!(decisions.get(decisions.len() - 5), Some(&"shadow-deny"));
    let reasons: Vec<String> = records
        .iter()
        .filter_map(|r| r["record"]["errors"].get(0).and_then(Value::as_str).map(str::to_owned))
        .collect();
    for expected in [
        "authentication: no_credential",
        "dot segment",
        "encoded `/`",
        "the Host is not the TLS server name",
        "no application",
        "revoked",
        "conflicting Content-Length headers",
        "Content-Length together with Transfer-Encoding",
    ] {
        assert!(reasons.iter().any(|r| r.contains(expected)), "no record says {expected}: {reasons:?}");
    }
    let report = zerogate_audit::verify(
        std::io::BufReader::new(std::fs::File::open(&setup.audit_path).unwrap()),
        &setup.audit_key_b64,
    )
    .unwrap();
    assert!(report.is_intact(), "{report:?}");
}

/// The token of a PyJWT case by name.
fn token(setup: &Setup, name: &str) -> String {
    let cases: Vec<Value> =
        serde_json::from_slice(&std::fs::read(setup.dir.join("tokens/cases.json")).unwrap()).unwrap();
    cases.iter().find(|c| c["name"] == name).unwrap()["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_requires_a_client_certificate_requires_a_good_one_whatever_else_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = setup("required-certificate").await;
    let vault = "vault.example.org";
    let bearer = format!("Authorization: Bearer {}", token(&setup, "rs256"));
    let call = |with_cert: bool, extra: &[&str]| {
        tokio::task::block_in_place(|| curl(&setup, vault, "/secrets/db", with_cert, extra).0)
    };
    assert_eq!(call(false, &["-H", &bearer]), 401, "a token without a certificate");
    assert_eq!(call(true, &["-H", &bearer]), 200, "a token with a good certificate");
    // The scheme is case-insensitive: a bearer token however spelled is verified as one (and
    // this one fails), not passed over for the certificate (whose device vault does not permit).
    assert_eq!(call(true, &["-H", "Authorization: BEARER not-a-token"]), 401);
    let url = format!("https://{vault}:{}/secrets/db", setup.port);
    let signed = botocore_sign(&setup, "GET", &url, "", false);
    let signed_call = |with_cert: bool| {
        tokio::task::block_in_place(|| send_signed_with(&setup, "GET", &signed, "", "--http1.1", with_cert))
    };
    assert_eq!(signed_call(false).0, 401, "a SigV4 request without a certificate");
    // Without the certificate a signed body is not even read: a large one that has barely begun
    // is refused at once.
    let mut anonymous = anonymous_connection(&setup, vault, &[]).await;
    let head = signed_upload_head(1_000_000).replace("ci.example.org", vault) + "first bytes";
    anonymous.write_all(head.as_bytes()).await.unwrap();
    let mut answer = [0u8; 12];
    let read = tokio::time::timeout(Duration::from_secs(5), anonymous.read_exact(&mut answer)).await;
    assert!(read.is_ok(), "the gateway waited for the body of a request it refuses anyway");
    assert_eq!(&answer, b"HTTP/1.1 401");
    // The unread body is never taken for a next request: the connection ends after the answer.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), anonymous.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the connection stayed open with the refused request's body unread");
    assert_eq!(statuses(&format!("HTTP/1.1 401{}", String::from_utf8_lossy(&rest))), [401]);
    assert_eq!(signed_call(true).0, 200, "a SigV4 request with a good certificate");
    // A response that streams for a token holder ends when the required certificate is revoked.
    let (elapsed, received, clean) = tokio::task::block_in_place(|| {
        stream_until_cut_with(&setup, vault, false, Duration::from_millis(800), &["-H", &bearer])
    });
    assert!(received.contains("tick"), "the stream began: {received:?}");
    assert!(!clean && elapsed < Duration::from_secs(3), "still streaming {elapsed:?} after the revocation");
    // A revoked certificate is no certificate, whatever credential comes with it.
    setup.svid_revocations.write().unwrap().serials.insert(Serial::parse(&setup.device_serial).unwrap());
    assert_eq!(call(true, &["-H", &bearer]), 401, "a token with a revoked certificate");
    assert_eq!(signed_call(true).0, 401, "a SigV4 request with a revoked certificate");
    let log = std::fs::read_to_string(&setup.audit_path).unwrap();
    assert!(log.contains("client_certificate_required") && log.contains("the certificate is revoked"));
}

/// The head of a SigV4-looking upload of `length` bytes to ci.example.org (its signature is
/// never checked: the body is read first).
fn signed_upload_head(length: usize) -> String {
    format!(
        "POST /deploy HTTP/1.1\r\nHost: ci.example.org\r\nContent-Length: {length}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261207/us-east-1/execute-api/aws4_request, \
         SignedHeaders=host, Signature=00\r\n\r\n"
    )
}

/// Starts a signed upload of a declared 7.9 MiB to ci.example.org from `source`, sends 7.5 MiB
/// of it and stalls: the connection is returned with the upload held open.
async fn stalled_signed_upload(
    setup: &Setup,
    source: std::net::Ipv4Addr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut tls = device_connection_from(setup, "ci.example.org", &[], source).await;
    tls.write_all(signed_upload_head(7_900_000).as_bytes()).await.unwrap();
    let _ = tls.write_all(&vec![b'x'; 7 * 1024 * 1024 + 512 * 1024]).await;
    tls
}

/// What the gateway answers on `tls` (whatever it sends until it closes, up to 5 s).
async fn answer_on(mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_bodies_read_before_authentication_share_one_bounded_budget_fairly() {
    use std::net::Ipv4Addr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = setup("signed-budget").await;
    let host = |n: u8| Ipv4Addr::new(127, 0, 0, n);
    // One client address may hold two stalled uploads (15 MiB of its 16 MiB share); its third
    // is refused with 429, recorded, while the budget still has room for others.
    let mut stalled = vec![stalled_signed_upload(&setup, host(1)).await, stalled_signed_upload(&setup, host(1)).await];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = answer_on(stalled_signed_upload(&setup, host(1)).await).await;
    assert!(third.starts_with("HTTP/1.1 429"), "{third}");
    assert!(audit_log_shows(&setup, "from this client address hold its share").await, "the refusal is recorded");
    let metrics = setup.gateway.metrics().render();
    assert!(metrics.contains("zerogate_client_share_reached_total 1\n"), "{metrics}");
    // Three more hosts with two each: eight uploads, 60 MiB of the 64 held.
    for n in 2..=4 {
        stalled.push(stalled_signed_upload(&setup, host(n)).await);
        stalled.push(stalled_signed_upload(&setup, host(n)).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A fifth host, within its own share, goes past the whole budget: 503 (and recorded).
    let ninth = answer_on(stalled_signed_upload(&setup, host(5)).await).await;
    assert!(ninth.starts_with("HTTP/1.1 503"), "{ninth}");
    assert!(audit_log_shows(&setup, "signed bodies being read hold the budget").await, "the refusal is recorded");
    // Once the stalled uploads go away, the budget and every share return: the first host's
    // upload is read (and its signature refused) again.
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let piece = vec![b'x'; 7 * 1024 * 1024 + 512 * 1024];
    let mut tenth = device_connection_from(&setup, "ci.example.org", &[], host(1)).await;
    tenth.write_all(signed_upload_head(piece.len()).as_bytes()).await.unwrap();
    tenth.write_all(&piece).await.unwrap();
    let mut head = [0u8; 12];
    tenth.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 401", "the budget and the share were given back");
}

/// The claims of an identity assertion the upstream received (its signature is checked elsewhere).
fn assertion_claims(assertion: &str) -> Value {
    use base64::Engine as _;
    let claims = assertion.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
}

/// The audit record the upstream was told let `seen` in (`x-zerogate-audit-record`): the
/// decision line in the gateway's log, checked to be this request's allow.
fn record_of(setup: &Setup, seen: &Value) -> Value {
    let reference = seen["headers"]["x-zerogate-audit-record"].as_str().expect("the decision's record");
    let seq: u64 =
        reference.strip_prefix("gw-test:").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{reference}"));
    let text = std::fs::read_to_string(&setup.audit_path).unwrap();
    let line: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["seq"] == seq)
        .unwrap_or_else(|| panic!("no line {seq}"));
    assert_eq!(line["kind"], "decision");
    assert_eq!(line["record"]["request"]["path"], seen["target"], "{line}");
    line["record"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_lets_a_policy_deny_through_marked_and_still_strips_forged_identities() {
    let setup = setup("shadow").await;
    let forged = ["-H", "X-Zerogate-Identity: forged", "-H", "X-Forwarded-User: admin", "-H", "Remote-User: admin"];
    // A device the policy forbids on /drafts: forwarded (shadow), with the gateway's assertion
    // of who it is and none of the identities the client stated.
    let (status, body) = curl(&setup, "wiki.example.org", "/drafts/q4", true, &forged);
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["target"], "/drafts/q4");
    for spoofed in ["x-forwarded-user", "remote-user"] {
        assert!(seen["headers"].get(spoofed).is_none(), "{spoofed} reached the upstream: {seen}");
    }
    let assertion = seen["headers"]["x-zerogate-identity"].as_str().expect("the gateway's assertion");
    assert_ne!(assertion, "forged");
    let claims = assertion_claims(assertion);
    assert!(claims["sub"].as_str().unwrap().starts_with("spiffe://corp.example/device/"), "{claims}");
    // No credential at all: forwarded too, with no identity whatever the client claims.
    let (status, body) = curl(&setup, "wiki.example.org", "/page", false, &forged);
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert!(seen["headers"].get("x-zerogate-identity").is_none(), "no identity to assert: {seen}");
    assert!(seen["headers"].get("x-forwarded-user").is_none() && seen["headers"].get("remote-user").is_none());
    // Both are on record as shadow denies, the forbid named as the reason.
    let text = std::fs::read_to_string(&setup.audit_path).unwrap();
    let shadow: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["record"]["decision"] == "shadow-deny")
        .collect();
    assert_eq!(shadow.len(), 2, "{text}");
    assert_eq!(shadow[0]["record"]["policies"], json!(["wiki-drafts-closed"]), "{}", shadow[0]);
    assert!(shadow[1]["record"]["errors"][0].as_str().unwrap().contains("no_credential"), "{}", shadow[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_audit_log_cannot_be_written_nothing_is_forwarded() {
    // /dev/full: every write fails as on a full disk (ENOSPC).
    let tuning = Tuning { audit_path: Some(PathBuf::from("/dev/full")), ..Tuning::default() };
    let setup = setup_tuned("audit-full", tuning).await;
    // A request policy allows (HTTP/1.1 and HTTP/2 upstreams), one it denies, one shadow mode
    // would let through, one without a credential, on both client protocols: each refused with
    // 503, and the upstreams see none of them.
    for (host, path, with_cert) in [
        ("billing.example.org", "/reports/q3", true),
        ("grpc.example.org", "/svc.Api/Call", true),
        ("billing.example.org", "/invoices", true),
        ("wiki.example.org", "/page", false),
        ("api.example.org", "/v1/things", false),
    ] {
        for protocol in ["--http1.1", "--http2"] {
            let (status, body) = curl(&setup, host, path, with_cert, &[protocol]);
            assert_eq!(status, 503, "{host}{path} {protocol}: {body}");
            assert!(!body.contains("audit"), "the body is generic: {body}");
        }
    }
    assert!(setup.seen.lock().unwrap().is_empty(), "nothing reached an upstream");
    let metrics = setup.gateway.metrics().render();
    assert!(metrics.contains("zerogate_audit_failures_total 10\n"), "one per refused request: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_from_an_oidc_provider_pass_only_when_valid_and_permitted() {
    let setup = setup("oidc").await;
    let api = "api.example.org";
    let call = |token: String, extra: Vec<String>| {
        let setup = &setup;
        tokio::task::block_in_place(move || {
            let header = format!("Authorization: Bearer {token}");
            let mut args: Vec<&str> = vec!["-H", &header];
            args.extend(extra.iter().map(String::as_str));
            curl(setup, api, "/v1/items", false, &args)
        })
    };
    let (status, body) = call(token(&setup, "rs256"), vec!["-H".into(), "X-Auth-Request-User: root".into()]);
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert!(seen["headers"].get("authorization").is_none(), "the bearer token is not forwarded");
    assert!(seen["headers"].get("x-auth-request-user").is_none());
    let assertion = seen["headers"]["x-zerogate-identity"].as_str().unwrap();
    let claims = assertion_claims(assertion);
    assert_eq!((claims["sub"].as_str(), claims["authn"].as_str()), (Some("alice"), Some("oidc")));
    assert_eq!(claims["groups"], json!(["engineering"]));
    for ok in ["es256", "eddsa", "ps256"] {
        assert_eq!(call(token(&setup, ok), vec![]).0, 200, "{ok}");
    }
    // Each attack class: 401, never forwarded.
    let before = setup.seen.lock().unwrap().len();
    for attack in [
        "alg-none-empty-signature",
        "hs256-with-rsa-public-key-as-secret",
        "embedded-jwk",
        "jku",
        "aud-other",
        "iss-trailing-slash",
        "exp-31s-ago",
        "kid-unknown",
        "claims-swapped-under-old-signature",
        "access-without-typ",
        "crit-unknown-extension",
        "duplicate-sub",
    ] {
        let (status, body) = call(token(&setup, attack), vec![]);
        assert_eq!(status, 401, "{attack}: {body}");
    }
    assert_eq!(call("not-a-token".into(), vec![]).0, 401);
    assert_eq!(setup.seen.lock().unwrap().len(), before, "a refused token reached the upstream");
    let records = std::fs::read_to_string(&setup.audit_path).unwrap();
    assert!(
        records.contains("authentication: alg_not_allowed") && records.contains("authentication: expired"),
        "{records}"
    );
}

/// Signs with botocore (the AWS SDK for Python's signer): headers for the header form, or a
/// presigned URL.
fn botocore_sign(setup: &Setup, method: &str, url: &str, body: &str, presign: bool) -> Value {
    let script = r#"
import json, sys
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
method, url, body, akid, secret, presign = sys.argv[1:7]
creds = Credentials(akid, secret)
request = AWSRequest(method=method, url=url, data=body.encode() if body else None,
                     headers={"Content-Type": "application/json"} if body else {})
if presign == "1":
    SigV4QueryAuth(creds, "execute-api", "us-east-1", expires=300).add_auth(request)
else:
    SigV4Auth(creds, "execute-api", "us-east-1").add_auth(request)
print(json.dumps({"url": request.url, "headers": dict(request.headers.items())}))
"#;
    let out = Command::new("python3")
        .args(["-c", script, method, url, body, &setup.key_id, &setup.key_secret, if presign { "1" } else { "0" }])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "botocore (pip install botocore): {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Sends a botocore-signed request as signed, with curl.
fn send_signed(setup: &Setup, method: &str, signed: &Value, body: &str, protocol: &str) -> (u16, String) {
    send_signed_with(setup, method, signed, body, protocol, false)
}

/// [`send_signed`], presenting the device's certificate when `with_cert`.
fn send_signed_with(
    setup: &Setup,
    method: &str,
    signed: &Value,
    body: &str,
    protocol: &str,
    with_cert: bool,
) -> (u16, String) {
    let url = signed["url"].as_str().unwrap();
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--path-as-is", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10", "-X", method, protocol])
        .arg("--cacert")
        .arg(setup.dir.join("root.pem"));
    for host in ["ci.example.org", "vault.example.org"] {
        command.arg("--resolve").arg(format!("{host}:{}:127.0.0.1", setup.port));
    }
    if with_cert {
        command.arg("--cert").arg(setup.dir.join("device.pem")).arg("--key").arg(setup.dir.join("device.key"));
    }
    command.args(["-H", "Accept:", "-H", "User-Agent: botocore-via-curl"]);
    for (name, value) in signed["headers"].as_object().unwrap() {
        command.arg("-H").arg(format!("{name}: {}", value.as_str().unwrap()));
    }
    if !body.is_empty() {
        command.args(["--data-binary", body]);
    }
    let out = command.arg(url).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_signed_by_the_aws_sdk_signer_pass_with_sigv4() {
    let setup = setup("sigv4").await;
    let url = format!("https://ci.example.org:{}/deploy?env=prod", setup.port);
    let body = r#"{"version":"1.2.3"}"#;
    let blocking = |f: &dyn Fn() -> (u16, String)| tokio::task::block_in_place(f);

    let signed = botocore_sign(&setup, "POST", &url, body, false);
    let (status, seen) = blocking(&|| send_signed(&setup, "POST", &signed, body, "--http1.1"));
    assert_eq!(status, 200, "{seen}");
    let seen: Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(seen["target"], "/deploy?env=prod");
    assert!(seen["headers"].get("authorization").is_none(), "the signature is the gateway's credential");
    assert!(seen["headers"]["x-zerogate-identity"].is_string());

    // The same request again: a replay within the window is refused.
    assert_eq!(blocking(&|| send_signed(&setup, "POST", &signed, body, "--http1.1")).0, 401);
    // Another body under the signature: refused.
    let signed = botocore_sign(&setup, "POST", &url, body, false);
    assert_eq!(blocking(&|| send_signed(&setup, "POST", &signed, r#"{"version":"6.6.6"}"#, "--http2")).0, 401);

    // Over HTTP/2 the signed `host` is the request's `:authority`. (Another URL: signed in the
    // same second as the first request, the same URL would give the same signature — a replay.)
    let url_h2 = format!("https://ci.example.org:{}/deploy?env=prod&via=http2", setup.port);
    let signed = botocore_sign(&setup, "POST", &url_h2, body, false);
    assert_eq!(blocking(&|| send_signed(&setup, "POST", &signed, body, "--http2")).0, 200);

    // A presigned URL, on either protocol (two URLs: the same one twice would be a replay).
    for protocol in ["--http1.1", "--http2"] {
        let url = format!("https://ci.example.org:{}/status?via={}", setup.port, protocol.trim_start_matches('-'));
        let presigned = botocore_sign(&setup, "GET", &url, "", true);
        assert_eq!(blocking(&|| send_signed(&setup, "GET", &presigned, "", protocol)).0, 200, "{protocol}");
    }

    // A revoked key: the next request is refused.
    setup.access_keys.0.write().unwrap().clear();
    let signed = botocore_sign(&setup, "POST", &url, body, false);
    assert_eq!(blocking(&|| send_signed(&setup, "POST", &signed, body, "--http1.1")).0, 401);
    let records = std::fs::read_to_string(&setup.audit_path).unwrap();
    assert!(records.contains("ApiClient::\\\"deployer\\\""), "{records}");
    assert!(records.contains("replay"), "{records}");
    // The presigned URLs are on record, but not their signatures: whoever reads the log could
    // replay them until they expire.
    assert!(records.contains("X-Amz-Signature=REDACTED"), "{records}");
    assert!(!records.lines().any(|l| l.contains("X-Amz-Signature=") && !l.contains("X-Amz-Signature=REDACTED")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_flight_and_accepts_no_more() {
    let setup = setup("shutdown").await;
    let setup = Arc::new(setup);
    let slow = {
        let setup = Arc::clone(&setup);
        tokio::task::spawn_blocking(move || curl(&setup, "billing.example.org", "/reports/slow", true, &[]))
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    setup.shutdown.send(true).unwrap();
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200, "the request in flight was finished: {body}");
    let setup = Arc::into_inner(setup).unwrap_or_else(|| panic!("setup still shared"));
    tokio::time::timeout(Duration::from_secs(5), setup.server).await.expect("serve returns after draining").unwrap();
    let after = tokio::task::block_in_place(|| curl_status_only(setup.port));
    assert_eq!(after, 0, "no connection is accepted after shutdown");
}

/// A TLS connection to the gateway for `billing.example.org` with the device certificate, over
/// rustls, speaking HTTP/1.1 (no ALPN).
async fn device_connection(setup: &Setup, name: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    device_connection_speaking(setup, name, &[]).await
}

/// [`device_connection`], offering the `alpn` protocols.
async fn device_connection_speaking(
    setup: &Setup,
    name: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    device_connection_from(setup, name, alpn, std::net::Ipv4Addr::LOCALHOST).await
}

/// [`device_connection_speaking`] from the loopback address `source` (any of 127.0.0.0/8), as
/// another host would connect.
async fn device_connection_from(
    setup: &Setup,
    name: &str,
    alpn: &[&[u8]],
    source: std::net::Ipv4Addr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let root = std::fs::read(setup.dir.join("root.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&root) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&std::fs::read(setup.dir.join("device.pem")).unwrap())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&std::fs::read(setup.dir.join("device.key")).unwrap()).unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    let tcp = socket.connect(([127, 0, 0, 1], setup.port).into()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap()
}

/// Sends `raw` bytes as they are on a device connection and returns everything the gateway
/// answers until it closes the connection; `None` if it kept the connection open for 5 s.
async fn raw_http1(setup: &Setup, raw: &[u8]) -> Option<String> {
    raw_http1_to(setup, "billing.example.org", raw, false).await
}

/// [`raw_http1`] to the application `name`; with `end_after`, the client ends its side of the
/// connection (TLS close_notify) after the bytes, as a client that breaks off does.
async fn raw_http1_to(setup: &Setup, name: &str, raw: &[u8], end_after: bool) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = device_connection(setup, name).await;
    tls.write_all(raw).await.unwrap();
    if end_after {
        tls.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await {
        // A reset after the answer (the gateway closing with unread bytes) still ends it.
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) => None,
    }
}

/// The status codes of every response in `answer`, in order.
fn statuses(answer: &str) -> Vec<u16> {
    answer.split("HTTP/1.1 ").skip(1).filter_map(|rest| rest.get(..3).and_then(|code| code.parse().ok())).collect()
}

/// What the gateway answers (within 5 s) to an HTTP/1.1 WebSocket handshake for `path` on
/// `host` that is not expected to open a tunnel.
async fn refused_websocket_handshake(setup: &Setup, host: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = device_connection(setup, host).await;
    let handshake = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tls.write_all(handshake.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A WebSocket handshake through the gateway with the device certificate.
async fn websocket(setup: &Setup) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    websocket_to(setup, "billing.example.org", "/reports/live").await.0
}

/// An HTTP/1.1 WebSocket handshake (the sample key of RFC 6455) to `host`; the open
/// connection and the 101's head.
async fn websocket_to(
    setup: &Setup,
    host: &str,
    path: &str,
) -> (tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = device_connection(setup, host).await;
    let handshake = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Zerogate-Identity: forged\r\n\r\n",
        setup.port
    );
    tls.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            tls.read(&mut byte).await.unwrap(),
            1,
            "connection closed during the handshake: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (tls, head)
}

/// An open WebSocket tunnel carries bytes both ways while access holds (three rounds, 1.2 s,
/// past several re-authorizations); once the device's certificate is revoked it is cut within
/// the re-authorization interval (300 ms here), not only new requests refused, and the cut is
/// recorded.
async fn echoes_then_is_cut_on_revocation<S>(setup: &Setup, socket: &mut S, what: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for round in 0..3 {
        let message = format!("ping {round}");
        socket.write_all(message.as_bytes()).await.unwrap();
        let mut echo = vec![0u8; message.len()];
        socket.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, message.as_bytes(), "{what}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let revoked_at = std::time::Instant::now();
    setup.svid_revocations.write().unwrap().serials.insert(Serial::parse(&setup.device_serial).unwrap());
    let mut buffer = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{what} was still open 3 s after the revocation");
    assert!(revoked_at.elapsed() < Duration::from_secs(2), "{what} cut after {:?}", revoked_at.elapsed());
    let log = std::fs::read_to_string(&setup.audit_path).unwrap();
    let cuts: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["record"]["errors"].to_string().contains("long-lived connection cut"))
        .collect();
    assert!(!cuts.is_empty(), "{what}: the cut is recorded: {log}");
    // Marked as a reauthorization, so that it is not read as one more refused request; no
    // other record is.
    assert!(cuts.iter().all(|cut| cut["record"]["reauthorization"] == true), "{what}: {cuts:#?}");
    let marked = log.lines().filter(|l| l.contains("\"reauthorization\"")).count();
    assert_eq!(marked, cuts.len(), "{what}: only the cuts: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_is_cut_when_its_certificate_is_revoked() {
    let setup = setup("websocket").await;
    // A 101 that does not accept the client's key opens no tunnel.
    let handshake = "GET /reports/bare-101 HTTP/1.1\r\nHost: billing.example.org\r\nConnection: Upgrade\r\n\
        Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let answer = raw_http1_to(&setup, "billing.example.org", handshake.as_bytes(), true).await.expect("answered");
    assert_eq!(statuses(&answer), [502], "{answer}");
    let mut socket = websocket(&setup).await;
    echoes_then_is_cut_on_revocation(&setup, &mut socket, "the WebSocket").await;
}

/// In shadow mode an open WebSocket the policy would cut goes on; the first reauthorization that
/// would have cut it is recorded (a would-be deny, once, not every 300 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_shadow_mode_a_websocket_the_policy_would_cut_goes_on_and_is_recorded_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = setup("websocket-shadow").await;
    // `wiki-drafts-closed` forbids /drafts: a would-be deny from the handshake on.
    let (mut socket, _) = websocket_to(&setup, "wiki.example.org", "/drafts/live").await;
    for round in 0..5 {
        let message = format!("ping {round}");
        socket.write_all(message.as_bytes()).await.unwrap();
        let mut echo = vec![0u8; message.len()];
        socket.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, message.as_bytes(), "still open after {round} rounds");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let log = std::fs::read_to_string(&setup.audit_path).unwrap();
    let noted: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["record"]["errors"].to_string().contains("would be cut (shadow mode)"))
        .collect();
    assert_eq!(noted.len(), 1, "once over about five reauthorizations: {log}");
    let record = &noted[0]["record"];
    assert_eq!((&record["decision"], &record["reauthorization"]), (&json!("shadow-deny"), &json!(true)), "{record}");
    assert_eq!(record["policies"], json!(["wiki-drafts-closed"]), "{record}");
    assert!(record["principal"].as_str().unwrap().contains("Device"), "{record}");
    assert!(!log.contains("long-lived connection cut"), "nothing was cut: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_over_http2_is_decided_tunnelled_and_cut_when_access_ends() {
    let setup = setup("websocket-h2").await;
    let tls = device_connection_speaking(&setup, "billing.example.org", &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let (mut sender, driver) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(driver);
    let authority = format!("billing.example.org:{}", setup.port);
    // One ordinary request first: the gateway's SETTINGS (which allow extended CONNECT) have
    // arrived once it is answered.
    let get = Request::get(format!("https://{authority}/reports/first")).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(sender.send_request(get).await.unwrap().status(), 200);
    let connect = |path: &str| {
        let mut request = Request::builder()
            .method("CONNECT")
            .uri(format!("https://{authority}{path}"))
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "chat")
            .header("x-zerogate-identity", "forged")
            .body(Full::new(Bytes::new()))
            .unwrap();
        request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
        request
    };
    // Not permitted (no route for /admin): refused, recorded, never forwarded.
    let before = setup.seen.lock().unwrap().len();
    let refused = sender.send_request(connect("/admin/live")).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(setup.seen.lock().unwrap().len(), before, "a refused WebSocket reached the upstream");
    // Permitted: the upstream sees the HTTP/1.1 handshake, with the gateway's identity assertion
    // and not the client's; the client gets 200 and a tunnel.
    let opened = sender.send_request(connect("/reports/live")).await.unwrap();
    assert_eq!(opened.status(), 200);
    assert_eq!(opened.headers().get("sec-websocket-protocol").map(|v| v.as_bytes()), Some(b"chat".as_slice()));
    let seen = setup.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen["method"], "GET", "{seen}");
    assert_eq!(seen["target"], "/reports/live", "{seen}");
    assert_eq!(seen["headers"]["upgrade"], "websocket", "{seen}");
    assert_eq!(seen["headers"]["sec-websocket-version"], "13", "{seen}");
    let assertion = seen["headers"]["x-zerogate-identity"].as_str().unwrap_or_default();
    assert!(assertion.starts_with("eyJ"), "the gateway's assertion, not the client's: {seen}");
    // An upstream that answers the handshake with a 200 has not opened a tunnel: the client
    // must not be told it has one.
    let not_upgraded = sender.send_request(connect("/reports/no-upgrade")).await.unwrap();
    assert_eq!(not_upgraded.status(), 502);
    let mut socket = TokioIo::new(hyper::upgrade::on(opened).await.unwrap());
    echoes_then_is_cut_on_revocation(&setup, &mut socket, "the WebSocket over HTTP/2").await;
    let log = std::fs::read_to_string(&setup.audit_path).unwrap();
    let refusal = log.lines().find(|line| line.contains("/admin/live")).expect("the refusal is recorded");
    assert!(refusal.contains(r#""decision":"deny""#), "{refusal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_to_an_http2_upstream_go_as_extended_connect_from_either_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = setup("websocket-to-h2").await;
    let grpc = "grpc.example.org";
    // An HTTP/1.1 client's upgrade: a 101 with the accept of its own key (RFC 6455's sample).
    let (mut from_http1, head) = websocket_to(&setup, grpc, "/svc.Chat/Live").await;
    let head = head.to_ascii_lowercase();
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"), "{head}");
    assert!(head.contains("sec-websocket-protocol: chat\r\n"), "{head}");
    let seen = setup.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!((seen["method"].as_str(), seen["protocol"].as_str()), (Some("CONNECT"), Some("websocket")), "{seen}");
    assert_eq!((seen["version"].as_str(), seen["target"].as_str()), (Some("HTTP/2.0"), Some("/svc.Chat/Live")));
    assert_eq!(seen["headers"]["sec-websocket-version"], "13", "{seen}");
    assert!(seen["headers"].get("sec-websocket-key").is_none(), "RFC 8441 has no key: {seen}");
    assert!(seen["headers"].get("upgrade").is_none() && seen["headers"].get("connection").is_none(), "{seen}");
    let assertion = seen["headers"]["x-zerogate-identity"].as_str().unwrap_or_default();
    assert!(assertion.starts_with("eyJ"), "the gateway's assertion, not the client's: {seen}");
    from_http1.write_all(b"over http/1.1").await.unwrap();
    let mut echo = [0u8; 13];
    from_http1.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"over http/1.1");

    // An upstream that refuses the extended CONNECT: its status, and no 101.
    let answer = refused_websocket_handshake(&setup, grpc, "/no-upgrade").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    // An HTTP/2 client's extended CONNECT: a 200 passed on, and the same tunnel.
    let (mut sender, _connection) = http2_connection_to(&setup, grpc, None).await;
    let authority = format!("{grpc}:{}", setup.port);
    let get =
        Request::get(format!("https://{authority}/svc.Inventory/List")).body(Full::new(Bytes::new()).boxed()).unwrap();
    assert_eq!(sender.send_request(get).await.unwrap().status(), 200);
    let connect = |path: &str| {
        let mut request = Request::builder()
            .method("CONNECT")
            .uri(format!("https://{authority}{path}"))
            .header("sec-websocket-version", "13")
            .body(Full::new(Bytes::new()).boxed())
            .unwrap();
        request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
        request
    };
    assert_eq!(sender.send_request(connect("/no-upgrade")).await.unwrap().status(), 404);
    let opened = sender.send_request(connect("/svc.Chat/Live")).await.unwrap();
    assert_eq!(opened.status(), 200);
    assert_eq!(opened.headers().get("sec-websocket-protocol").map(|v| v.as_bytes()), Some(b"chat".as_slice()));
    let mut from_http2 = TokioIo::new(hyper::upgrade::on(opened).await.unwrap());
    // An HTTP/2 upstream that has not enabled extended CONNECT (most, out of the box) resets
    // the stream: 502 on either protocol, no tunnel, while its ordinary requests go on.
    let legacy = "legacy.example.org";
    let answer = refused_websocket_handshake(&setup, legacy, "/live").await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    let (status, _, _) =
        tokio::task::block_in_place(|| curl_versioned(&setup, legacy, "/svc.Inventory/List", true, &["--http2"]));
    assert_eq!(status, 200, "ordinary requests to that upstream go on");
    // Revoking the device cuts both tunnels.
    echoes_then_is_cut_on_revocation(&setup, &mut from_http2, "the HTTP/2 client's WebSocket").await;
    let mut rest = Vec::new();
    let cut = tokio::time::timeout(Duration::from_secs(3), from_http1.read_to_end(&mut rest)).await;
    assert!(cut.is_ok(), "the HTTP/1.1 client's WebSocket outlived the revocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_requests_are_refused_at_the_gateway_and_never_reach_the_upstream() {
    let setup = setup("ambiguous").await;
    let host = "Host: billing.example.org\r\n";
    // Every request here would be allowed (a device, under /reports) were it not ambiguous: the
    // refusal is the canonical request's alone. Raw bytes, so nothing on the way normalizes them.
    let attempts: Vec<(&str, String, u16)> = [
        ("dot segment", "GET /reports/../admin HTTP/1.1", 400),
        ("encoded dot segment", "GET /reports/%2e%2e/admin HTTP/1.1", 400),
        ("encoded slash", "GET /reports%2f..%2fadmin HTTP/1.1", 400),
        ("encoded backslash", "GET /reports/%5c..%5cadmin HTTP/1.1", 400),
        ("raw backslash", "GET /reports\\..\\admin HTTP/1.1", 400),
        ("path parameter", "GET /reports;jsessionid=1/q3 HTTP/1.1", 400),
        ("encoded NUL", "GET /reports/q3%00.csv HTTP/1.1", 400),
        ("encoded CRLF", "GET /reports/q3%0d%0aX-Injected:%201 HTTP/1.1", 400),
        ("double encoding", "GET /reports/%252e%252e/admin HTTP/1.1", 400),
        ("fragment", "GET /reports/q3#admin HTTP/1.1", 400),
        ("authority form", "GET billing.example.org:443 HTTP/1.1", 400),
        ("asterisk form", "OPTIONS * HTTP/1.1", 400),
        ("CONNECT", "CONNECT billing.example.org:443 HTTP/1.1", 400),
        ("lower-case method", "delete /reports/q3 HTTP/1.1", 400),
    ]
    .into_iter()
    .map(|(name, line, status)| (name, format!("{line}\r\n{host}\r\n"), status))
    .chain([
        ("two Host headers", format!("GET /reports/q3 HTTP/1.1\r\n{host}{host}\r\n"), 400),
        ("Host of another application", "GET /reports/q3 HTTP/1.1\r\nHost: wiki.example.org\r\n\r\n".to_owned(), 421),
        ("Host on another port", "GET /reports/q3 HTTP/1.1\r\nHost: billing.example.org:8443\r\n\r\n".to_owned(), 421),
        ("no Host", "GET /reports/q3 HTTP/1.1\r\n\r\n".to_owned(), 400),
        ("underscore in a name", format!("GET /reports/q3 HTTP/1.1\r\n{host}X_Forwarded_User: admin\r\n\r\n"), 400),
        (
            "method override",
            format!("POST /reports/q3 HTTP/1.1\r\n{host}X-HTTP-Method-Override: DELETE\r\nContent-Length: 0\r\n\r\n"),
            400,
        ),
        ("target override", format!("GET /reports/q3 HTTP/1.1\r\n{host}X-Original-URL: /admin\r\n\r\n"), 400),
    ])
    .collect();
    for (name, raw, status) in &attempts {
        let answer = raw_http1(&setup, raw.as_bytes()).await.unwrap_or_else(|| panic!("{name}: left open"));
        assert_eq!(statuses(&answer), [*status], "{name}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{name}: closed after it: {answer}");
    }
    // Raw control characters in the target and a NUL in a header value: refused by the parser.
    for (name, raw) in [
        ("raw NUL in the target", b"GET /reports/q3\x00x HTTP/1.1\r\nHost: billing.example.org\r\n\r\n".to_vec()),
        (
            "raw NUL in a header",
            b"GET /reports/q3 HTTP/1.1\r\nHost: billing.example.org\r\nX-A: a\x00b\r\n\r\n".to_vec(),
        ),
    ] {
        let answer = raw_http1(&setup, &raw).await.unwrap_or_else(|| panic!("{name}: left open"));
        assert_eq!(statuses(&answer), [400], "{name}: {answer}");
    }
    // Over HTTP/2: `:authority` and Host that disagree, another application's name, a dot segment.
    let port = setup.port;
    for (authority, host_header, path, want) in [
        (format!("billing.example.org:{port}"), Some(format!("wiki.example.org:{port}")), "/reports/q3", 400),
        (format!("wiki.example.org:{port}"), None, "/reports/q3", 421),
        (format!("billing.example.org:{port}"), None, "/reports/../admin", 400),
    ] {
        let (mut sender, _driver) = http2_connection_to(&setup, "billing.example.org", None).await;
        let mut request = Request::get(format!("https://{authority}{path}"));
        if let Some(host) = &host_header {
            request = request.header("host", host);
        }
        let answer = sender.send_request(request.body(Full::new(Bytes::new()).boxed()).unwrap()).await;
        let status = answer.map(|r| r.status().as_u16()).unwrap_or(0);
        assert_eq!(status, want, "HTTP/2 {authority} {host_header:?} {path}");
    }
    assert!(setup.seen.lock().unwrap().is_empty(), "the upstream saw none of them: {:?}", setup.seen.lock().unwrap());
    assert!(audit_log_shows(&setup, "fragment in the request target").await, "each refusal is on record");
    // A fragment in HTTP/2's `:path` (raw frames: a client library would drop it before
    // sending) cannot be refused: the HTTP/2 layer (the `http` crate's URI parser) drops it
    // before the gateway sees the request. One reading still holds: the request is decided,
    // recorded and forwarded as `/reports/q3`, the path without it.
    {
        use tokio::io::AsyncWriteExt;
        // With the device's certificate: only the fragment stands between it and the upstream.
        let mut tls = device_connection_speaking(&setup, "billing.example.org", &[b"h2"]).await;
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(h2_frame(0x4, 0, 0, &[]));
        let path = b"/reports/q3#admin";
        let authority = format!("billing.example.org:{port}");
        // :method GET, :scheme https (static), :path and :authority (literals, indexed names).
        let mut block = vec![0x82, 0x87, 0x04, path.len() as u8];
        block.extend_from_slice(path);
        block.extend_from_slice(&[0x01, authority.len() as u8]);
        block.extend_from_slice(authority.as_bytes());
        bytes.extend(h2_frame(0x1, 0x5, 1, &block));
        tls.write_all(&bytes).await.unwrap();
        loop {
            match h2_read_frame(&mut tls).await {
                (0x1, _, 1, block) => break assert_eq!(block.first(), Some(&0x88), "answered 200"),
                (0x3 | 0x7, ..) => panic!("the stream or connection was refused"),
                _ => {}
            }
        }
    }
    let seen = setup.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["target"], "/reports/q3", "forwarded as decided, without the fragment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_over_raw_http1_never_reach_the_upstream() {
    let setup = setup("smuggling").await;
    let host = "Host: billing.example.org\r\n";
    let smuggled = "GET /reports/smuggled HTTP/1.1\r\nHost: billing.example.org\r\n\r\n";
    // Each is one way two HTTP parsers can read one byte stream differently; each must end in a
    // 400 and a closed connection, with the request behind it never forwarded.
    let attempts: Vec<(&str, String)> = vec![
        (
            "CL.TE",
            format!(
                "POST /reports/a HTTP/1.1\r\n{host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE.CL",
            format!(
                "POST /reports/a HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nContent-Length: 70\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE.TE",
            format!(
                "POST /reports/a HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE list",
            format!("POST /reports/a HTTP/1.1\r\n{host}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "xchunked",
            format!("POST /reports/a HTTP/1.1\r\n{host}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "two lengths",
            format!("POST /reports/a HTTP/1.1\r\n{host}Content-Length: 0\r\nContent-Length: 61\r\n\r\n{smuggled}"),
        ),
        ("signed length", format!("POST /reports/a HTTP/1.1\r\n{host}Content-Length: +0\r\n\r\n{smuggled}")),
        ("length list", format!("POST /reports/a HTTP/1.1\r\n{host}Content-Length: 0, 0\r\n\r\n{smuggled}")),
        ("bare LF", format!("POST /reports/a HTTP/1.1\n{host}Content-Length: 0\n\n{smuggled}")),
        (
            "folded header",
            format!(
                "POST /reports/a HTTP/1.1\r\n{host}Content-Length: 0\r\n Transfer-Encoding: chunked\r\n\r\n{smuggled}"
            ),
        ),
        (
            "space before colon",
            format!("POST /reports/a HTTP/1.1\r\n{host}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "TE in HTTP/1.0",
            format!("POST /reports/a HTTP/1.0\r\n{host}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "chunk size +3",
            format!(
                "POST /reports/a HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "chunk data too long",
            format!(
                "POST /reports/a HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        ("absolute form", format!("GET https://billing.example.org/reports/a HTTP/1.1\r\n{host}\r\n{smuggled}")),
    ];
    for (name, raw) in &attempts {
        let answer = raw_http1(&setup, raw.as_bytes()).await;
        let answer = answer.unwrap_or_else(|| panic!("{name}: the connection stayed open"));
        assert_eq!(statuses(&answer), [400], "{name}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{name}: {answer}");
    }
    let targets: Vec<String> =
        setup.seen.lock().unwrap().iter().map(|entry| entry["target"].as_str().unwrap_or("").to_owned()).collect();
    assert!(targets.iter().all(|target| !target.contains("smuggled")), "{targets:?}");

    // Pipelined requests are answered one after the other, in order, and both reach the upstream.
    let pipelined = format!(
        "GET /reports/first HTTP/1.1\r\n{host}\r\nGET /reports/second HTTP/1.1\r\n{host}Connection: close\r\n\r\n"
    );
    let answer = raw_http1(&setup, pipelined.as_bytes()).await.expect("closed after the second");
    assert_eq!(statuses(&answer), [200, 200], "{answer}");
    let first = answer.find("/reports/first").expect("first answered");
    let second = answer.find("/reports/second").expect("second answered");
    assert!(first < second, "{answer}");

    // Every refusal is on record with its reason, and the log verifies.
    let log = std::fs::read_to_string(&setup.audit_path).unwrap();
    for reason in ["Content-Length together with Transfer-Encoding", "LF without CR", "transfer coding"] {
        assert!(log.contains(reason), "no record says {reason:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_from_http1_clients_reach_an_http2_upstream_whole_or_not_at_all() {
    let setup = setup("upload").await;
    let grpc = "grpc.example.org";
    // Larger than any buffer of the gateway: streamed, with a length and chunked.
    let size = 9 * 1024 * 1024 + 7;
    let file = setup.dir.join("upload.bin");
    std::fs::write(&file, vec![b'u'; size]).unwrap();
    let data = format!("@{}", file.display());
    for (path, extra) in [("/upload-length", vec![]), ("/upload-chunked", vec!["-H", "Transfer-Encoding: chunked"])] {
        let mut args = vec!["-X", "POST", "--data-binary", data.as_str()];
        args.extend(extra);
        let (status, body) = tokio::task::block_in_place(|| curl(&setup, grpc, path, true, &args));
        assert_eq!(status, 200, "{path}: {body}");
        let seen: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["version"], "HTTP/2.0", "{path}");
        assert_eq!(seen["body"], size, "{path}: the upstream got the whole body");
    }

    // A client that breaks its body off: a 400, and the upstream's stream fails rather than
    // ending as if the five bytes were the whole body.
    let broken =
        "POST /upload-broken HTTP/1.1\r\nHost: grpc.example.org\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    let answer = raw_http1_to(&setup, grpc, broken.as_bytes(), true).await.expect("closed");
    assert_eq!(statuses(&answer), [400], "{answer}");
    let mut outcome = None;
    for _ in 0..50 {
        let seen = setup.seen.lock().unwrap().clone();
        outcome = seen.into_iter().find(|entry| entry["target"] == "/upload-broken").map(|entry| entry["body"].clone());
        if outcome.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let outcome = outcome.expect("the upstream saw the request head");
    assert!(
        outcome.as_str().is_some_and(|text| text.starts_with("failed")),
        "the upstream saw a complete body: {outcome}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_answers_before_reading_the_body_is_heard() {
    let setup = setup("early-answer").await;
    let size = 9 * 1024 * 1024;
    let file = setup.dir.join("upload.bin");
    std::fs::write(&file, vec![b'u'; size]).unwrap();
    let data = format!("@{}", file.display());
    // Without `Expect: 100-continue` the body is on its way when the upstream answers and
    // closes; with it, curl waits for the go-ahead the upstream never gives.
    for (path, extra) in [
        ("/reports/refused-upload", vec!["-H", "Expect:"]),
        ("/reports/chunked/refused-upload", vec!["-H", "Expect:", "-H", "Transfer-Encoding: chunked"]),
        ("/reports/expecting/refused-upload", vec![]),
    ] {
        let mut args = vec!["-X", "POST", "--data-binary", data.as_str(), "-D", "-"];
        args.extend(extra);
        let (status, body) = tokio::task::block_in_place(|| curl(&setup, "billing.example.org", path, true, &args));
        assert_eq!(status, 413, "{path}: the upstream's answer, not a 502: {body}");
        assert!(body.contains("too large for this application"), "{path}: {body}");
        assert!(
            body.to_ascii_lowercase().contains("connection: close"),
            "{path}: the rest of the body is unread: {body}"
        );
    }
    // And the gateway still serves the next client.
    let (status, _) = tokio::task::block_in_place(|| curl(&setup, "billing.example.org", "/reports/after", true, &[]));
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_does_not_answer_in_time_gets_a_504_on_http1_and_http2() {
    let setup = setup("upstream-timeout").await;
    // wiki's upstream timeout is 1 s; /reports/slow takes 1.5 s at the upstream.
    for version in ["--http1.1", "--http2"] {
        let (status, _, spoken) = tokio::task::block_in_place(|| {
            curl_versioned(&setup, "wiki.example.org", "/reports/slow", true, &[version])
        });
        assert_eq!(status, 504, "{version}");
        assert_eq!(spoken, if version == "--http2" { "2" } else { "1.1" });
        // The next request is served.
        let (status, _, _) =
            tokio::task::block_in_place(|| curl_versioned(&setup, "wiki.example.org", "/page", true, &[version]));
        assert_eq!(status, 200, "{version}");
    }
    // A large upload (not timed while it streams in) is timed from its end: the upstream that
    // takes it all and then does not answer in time is a 504 too.
    let upload = setup.dir.join("upload");
    std::fs::write(&upload, "u".repeat(3 * 1024 * 1024)).unwrap();
    let data = format!("@{}", upload.display());
    for version in ["--http1.1", "--http2"] {
        let args = [version, "-X", "POST", "-H", "Expect:", "--data-binary", data.as_str()];
        let (status, body, _) = tokio::task::block_in_place(|| {
            curl_versioned(&setup, "wiki.example.org", "/reports/answers-late", true, &args)
        });
        assert_eq!(status, 504, "{version}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_falls_silent_in_the_middle_of_a_response_is_cut() {
    let setup = setup("upstream-silent").await;
    // wiki's upstream timeout is 1 s; /reports/stalls sends a line, then nothing for 3 s, then
    // the last line. Without a bound between reads the client would get both lines after 3 s.
    for version in ["--http1.1", "--http2"] {
        let (status, body, spoken) = tokio::task::block_in_place(|| {
            curl_versioned(&setup, "wiki.example.org", "/reports/stalls", true, &[version])
        });
        assert_eq!(spoken, if version == "--http2" { "2" } else { "1.1" });
        assert_eq!(status, 200, "{version}: the response had begun");
        assert!(body.contains("first line"), "{version}: {body}");
        assert!(!body.contains("last line"), "{version}: the silent upstream was waited for: {body}");
        // The next request is served.
        let (status, _, _) =
            tokio::task::block_in_place(|| curl_versioned(&setup, "wiki.example.org", "/page", true, &[version]));
        assert_eq!(status, 200, "{version}");
    }
    // An upstream that keeps talking is not cut: /stream ticks every 100 ms for longer than
    // the timeout, until curl gives up after 2.5 s.
    let (_, body, _) = tokio::task::block_in_place(|| {
        curl_versioned(&setup, "wiki.example.org", "/reports/stream", true, &["--max-time", "2.5"])
    });
    assert!(body.matches("tick").count() >= 15, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_still_gets_its_answer_while_the_body_streams() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = setup("refused-upload").await;
    // Not permitted (no route for /admin): refused before any of the body is read, which keeps
    // coming, as it does from a client that writes and reads at the same time.
    for _ in 0..5 {
        let tls = device_connection(&setup, "billing.example.org").await;
        let (mut read, mut write) = tokio::io::split(tls);
        let size = 8 * 1024 * 1024;
        let sender = tokio::spawn(async move {
            let head = format!("POST /admin HTTP/1.1\r\nHost: billing.example.org\r\nContent-Length: {size}\r\n\r\n");
            write.write_all(head.as_bytes()).await?;
            let block = vec![b'x'; 64 * 1024];
            for _ in 0..size / block.len() {
                write.write_all(&block).await?;
            }
            std::io::Result::Ok(())
        });
        let mut answer = Vec::new();
        let outcome = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(outcome.is_ok(), "the connection stayed open");
        assert_eq!(statuses(&answer), [403], "{outcome:?}: {answer}");
        sender.abort();
    }
}

fn curl_status_only(port: u16) -> u16 {
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3"])
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

fn refusals_len() -> usize {
    10
}

/// A TLS connection to the gateway for billing.example.org that has agreed on HTTP/2 (ALPN),
/// for frames written by hand.
async fn raw_http2(setup: &Setup) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tls = anonymous_connection(setup, "billing.example.org", &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    tls
}

/// A TLS connection to the gateway for `name` without a client certificate.
async fn anonymous_connection(
    setup: &Setup,
    name: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&std::fs::read(setup.dir.join("root.pem")).unwrap()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", setup.port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap()
}

/// One HTTP/2 frame: type, flags, stream, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Reads the server's next frame: type, flags, stream, payload.
async fn h2_read_frame<S: tokio::io::AsyncRead + Unpin>(tls: &mut S) -> (u8, u8, u32, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 9];
    tls.read_exact(&mut head).await.expect("the connection stays open");
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0; len];
    tls.read_exact(&mut payload).await.unwrap();
    (head[3], head[4], u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff, payload)
}

/// Waits (a few seconds at most) until the audit log holds `text`.
async fn audit_log_shows(setup: &Setup, text: &str) -> bool {
    for _ in 0..100 {
        if std::fs::read_to_string(&setup.audit_path).unwrap().contains(text) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    false
}

/// Opens HTTP/2 and sends a SETTINGS frame on stream 1, which RFC 9113 makes a connection
/// error; returns once the gateway has closed the connection.
async fn h2_protocol_violation(setup: &Setup) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = raw_http2(setup).await;
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 1]);
    tls.write_all(&bytes).await.unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the connection stayed open after a protocol error");
    // The record is appended after the connection ends.
    assert!(audit_log_shows(setup, "not parsed as HTTP/2").await, "the h2 layer's refusal is recorded");
}

/// Sends three requests the h2 layer itself refuses (a connection-specific header, which RFC
/// 9113 makes malformed) on one connection: each stream is reset, the connection goes on, the
/// first reset is on record while it is open and the other two once it closes.
async fn h2_malformed_streams(setup: &Setup) {
    use tokio::io::AsyncWriteExt;
    let mut tls = raw_http2(setup).await;
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(h2_frame(0x4, 0, 0, &[]));
    // :method GET, :scheme https, :path / (static table), :authority (literal), then
    // `connection: close` (a literal with a new name).
    let mut block = vec![0x82, 0x87, 0x84, 0x01, 19];
    block.extend_from_slice(b"billing.example.org");
    block.extend_from_slice(&[0x00, 10]);
    block.extend_from_slice(b"connection");
    block.extend_from_slice(&[5]);
    block.extend_from_slice(b"close");
    bytes.extend(h2_frame(0x1, 0x5, 1, &block));
    tls.write_all(&bytes).await.unwrap();
    loop {
        match h2_read_frame(&mut tls).await {
            (0x3, _, 1, code) => break assert_eq!(code, 1u32.to_be_bytes(), "stream 1 reset with PROTOCOL_ERROR"),
            (0x3 | 0x1, _, stream, _) => panic!("stream {stream} answered before stream 1 was reset"),
            _ => {}
        }
    }
    assert!(
        audit_log_shows(setup, "stream 1 reset with PROTOCOL_ERROR: a malformed request").await,
        "the first malformed stream is on record while its connection is open"
    );
    let mut more = h2_frame(0x1, 0x5, 3, &block);
    more.extend(h2_frame(0x1, 0x5, 5, &block));
    more.extend(h2_frame(0x6, 0, 0, b"stillup!"));
    tls.write_all(&more).await.unwrap();
    // Both reset and the PING answered (h2 sends the answer ahead of other frames), in any order.
    let (mut reset, mut pong) = (Vec::new(), false);
    while reset.len() < 2 || !pong {
        match h2_read_frame(&mut tls).await {
            (0x3, _, stream, code) => reset.push((stream, code)),
            (0x6, 1, 0, payload) => pong = payload == b"stillup!",
            (0x1, _, stream, _) => panic!("a malformed stream {stream} was answered"),
            _ => {}
        }
    }
    assert_eq!(reset, [(3, 1u32.to_be_bytes().to_vec()), (5, 1u32.to_be_bytes().to_vec())]);
    tls.shutdown().await.unwrap();
    drop(tls);
    assert!(
        audit_log_shows(setup, "2 more streams reset with PROTOCOL_ERROR on this connection").await,
        "the other resets are on record once the connection ends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_and_upstreams_get_the_same_pipeline() {
    let setup = setup("http2").await;
    let run = |host: &'static str, path: &'static str, cert: bool, extra: Vec<&'static str>| {
        let setup = &setup;
        let mut args = vec!["--http2"];
        args.extend(extra);
        tokio::task::block_in_place(move || curl_versioned(setup, host, path, cert, &args))
    };
    // HTTP/2 from the client (ALPN h2), HTTP/1.1 to the upstream: the authority becomes Host,
    // split cookies one line, spoofed identity headers never arrive.
    let (status, body, version) = run(
        "billing.example.org",
        "/reports/q3?x=1",
        true,
        vec![
            "-H",
            "Cookie: a=1",
            "-H",
            "Cookie: b=2",
            "-H",
            "X-Forwarded-User: admin",
            "-H",
            "x-zerogate-identity: forged",
            "-H",
            "x-zerogate-audit-record: gw-test:1",
        ],
    );
    assert_eq!((status, version.as_str()), (200, "2"), "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(record_of(&setup, &seen)["decision"], "allow", "an HTTP/2 client's request, on record");
    assert_eq!((seen["version"].as_str(), seen["target"].as_str()), (Some("HTTP/1.1"), Some("/reports/q3?x=1")));
    assert!(seen["headers"]["host"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(seen["headers"]["cookie"], "a=1; b=2");
    assert!(seen["headers"].get("x-forwarded-user").is_none());
    assert_ne!(seen["headers"]["x-zerogate-identity"], "forged");
    assert!(seen["headers"]["x-zerogate-identity"].is_string());

    // HTTP/2 on both sides: the upstream gets HTTP/2 with the upstream's authority.
    let (status, body, version) = run("grpc.example.org", "/svc.Inventory/List", true, vec![]);
    assert_eq!((status, version.as_str()), (200, "2"), "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["target"], "/svc.Inventory/List");
    assert!(seen["authority"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(seen["headers"]["x-zerogate-identity"].is_string());
    assert_eq!(record_of(&setup, &seen)["request"]["host"], "grpc.example.org", "to an HTTP/2 upstream too");
    let before = setup.seen.lock().unwrap().len();

    // Each refusal class over HTTP/2; none reaches an upstream.
    let refusals = [
        ("billing.example.org", "/reports/q3", false, vec![], 401),
        ("billing.example.org", "/invoices", true, vec![], 403),
        ("billing.example.org", "/reports/../admin", true, vec![], 400),
        ("billing.example.org", "/reports%2fq3", true, vec![], 400),
        ("billing.example.org", "/reports;x=1", true, vec![], 400),
        ("billing.example.org", "/reports/q3", true, vec!["-H", "Host: wiki.example.org"], 421),
        ("billing.example.org", "/reports/q3", true, vec!["-H", "X_Forwarded_User: admin"], 400),
    ];
    for (host, path, cert, extra, expected) in refusals {
        let (status, body, version) = run(host, path, cert, extra.clone());
        assert_eq!((status, version.as_str()), (expected, "2"), "{host}{path} {extra:?}: {body}");
    }
    assert_eq!(setup.seen.lock().unwrap().len(), before, "a refused HTTP/2 request reached the upstream");

    // A client that breaks the HTTP/2 protocol itself (SETTINGS on a stream) loses the
    // connection in the h2 layer, and the attempt is on record.
    h2_protocol_violation(&setup).await;
    assert_eq!(setup.seen.lock().unwrap().len(), before);
    // Requests the h2 layer resets as malformed never reach a handler: they are on record too.
    h2_malformed_streams(&setup).await;
    assert_eq!(setup.seen.lock().unwrap().len(), before, "a malformed HTTP/2 request reached the upstream");

    // Revocation applies to the next stream on HTTP/2 too.
    setup.svid_revocations.write().unwrap().serials.insert(Serial::parse(&setup.device_serial).unwrap());
    assert_eq!(run("grpc.example.org", "/svc.Inventory/List", true, vec![]).0, 401);
    let report = zerogate_audit::verify(
        std::io::BufReader::new(std::fs::File::open(&setup.audit_path).unwrap()),
        &setup.audit_key_b64,
    )
    .unwrap();
    assert!(report.is_intact(), "{report:?}");
}

/// Streams an endless response through the gateway with curl, revokes the device's certificate
/// after `revoke_after`; returns how long the stream lasted after that, what arrived, and
/// whether curl saw a clean end.
fn stream_until_cut(setup: &Setup, host: &str, http2: bool, revoke_after: Duration) -> (Duration, String, bool) {
    stream_until_cut_with(setup, host, http2, revoke_after, &[])
}

/// [`stream_until_cut`], with `extra` curl arguments (a bearer token, say).
fn stream_until_cut_with(
    setup: &Setup,
    host: &str,
    http2: bool,
    revoke_after: Duration,
    extra: &[&str],
) -> (Duration, String, bool) {
    let dir: &Path = &setup.dir;
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-N", "--max-time", "6", if http2 { "--http2" } else { "--http1.1" }])
        .args(extra)
        .arg("--cacert")
        .arg(dir.join("root.pem"))
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", setup.port))
        .arg("--cert")
        .arg(dir.join("device.pem"))
        .arg("--key")
        .arg(dir.join("device.key"))
        .arg(format!("https://{host}:{}/reports/stream", setup.port))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let child = command.spawn().expect("curl runs");
    std::thread::sleep(revoke_after);
    let revoked_at = std::time::Instant::now();
    setup.svid_revocations.write().unwrap().serials.insert(Serial::parse(&setup.device_serial).unwrap());
    let out = child.wait_with_output().unwrap();
    let elapsed = revoked_at.elapsed();
    setup.svid_revocations.write().unwrap().serials.clear();
    (elapsed, String::from_utf8_lossy(&out.stdout).into_owned(), out.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_response_is_cut_when_access_ends_on_http1_and_http2() {
    let setup = setup("stream").await;
    for (host, http2) in [("billing.example.org", false), ("billing.example.org", true), ("grpc.example.org", true)] {
        let (elapsed, received, clean) =
            tokio::task::block_in_place(|| stream_until_cut(&setup, host, http2, Duration::from_millis(1000)));
        // Bytes flowed while access held; the cut came within the 300 ms interval (plus slack),
        // long before curl's own 6 s limit, and as an error, not a clean end.
        assert!(received.matches("tick").count() >= 5, "{host} http2={http2}: {received:?}");
        assert!(elapsed < Duration::from_secs(2), "{host} http2={http2}: cut after {elapsed:?}");
        assert!(!clean, "{host} http2={http2}: the cut looked like a complete response");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = std::fs::read_to_string(&setup.audit_path).unwrap();
    assert_eq!(log.matches("long-lived connection cut").count(), 3, "each cut is recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_never_pauses_is_still_cut_when_access_ends() {
    // The upstream sends as fast as the client reads, so the gateway never waits for it: the
    // interval must still come round.
    let setup = setup("flood").await;
    for (host, http2) in [
        ("billing.example.org", false),
        ("billing.example.org", true),
        ("grpc.example.org", false),
        ("grpc.example.org", true),
    ] {
        let curl = Command::new("curl")
            .args(["-sS", "--max-time", "8", "-o", "/dev/null", "-w", "%{size_download}"])
            .arg(if http2 { "--http2" } else { "--http1.1" })
            .arg("--cacert")
            .arg(setup.dir.join("root.pem"))
            .args(["--resolve", &format!("{host}:{}:127.0.0.1", setup.port)])
            .arg("--cert")
            .arg(setup.dir.join("device.pem"))
            .arg("--key")
            .arg(setup.dir.join("device.key"))
            .arg(format!("https://{host}:{}/reports/flood", setup.port))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("curl runs");
        tokio::time::sleep(Duration::from_millis(800)).await;
        let revoked_at = std::time::Instant::now();
        setup.svid_revocations.write().unwrap().serials.insert(Serial::parse(&setup.device_serial).unwrap());
        let out = tokio::task::block_in_place(|| curl.wait_with_output().unwrap());
        let elapsed = revoked_at.elapsed();
        setup.svid_revocations.write().unwrap().serials.clear();
        let size: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        assert!(size > 1024 * 1024, "{host} http2={http2}: the download ran ({size} bytes)");
        assert!(elapsed < Duration::from_secs(2), "{host} http2={http2}: cut after {elapsed:?}");
        assert!(!out.status.success(), "{host} http2={http2}: the cut looked like a complete response");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = std::fs::read_to_string(&setup.audit_path).unwrap();
    assert_eq!(log.matches("long-lived connection cut").count(), 4, "each cut is recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_still_arriving_is_cut_when_access_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = setup("upload-cut").await;
    let revoke =
        || setup.svid_revocations.write().unwrap().serials.insert(Serial::parse(&setup.device_serial).unwrap());
    let restore = || setup.svid_revocations.write().unwrap().serials.clear();
    // HTTP/1.1 clients, to an HTTP/1.1 and an HTTP/2 upstream: a chunk every 100 ms, the
    // certificate revoked after 800 ms; the gateway must close within the interval.
    for host in ["billing.example.org", "grpc.example.org"] {
        let mut tls = device_connection(&setup, host).await;
        let head = format!("POST /reports/upload HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n");
        tls.write_all(head.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        let mut revoked_at = None;
        let ended = loop {
            if revoked_at.is_none() && started.elapsed() > Duration::from_millis(800) {
                revoke();
                revoked_at = Some(std::time::Instant::now());
            }
            if tls.write_all(b"5\r\ntick\n\r\n").await.is_err() {
                break revoked_at.map(|at| at.elapsed());
            }
            let mut byte = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(100), tls.read(&mut byte)).await {
                Ok(Ok(0) | Err(_)) => break revoked_at.map(|at| at.elapsed()),
                Ok(Ok(_)) => {}
                Err(_) => {}
            }
            assert!(started.elapsed() < Duration::from_secs(6), "{host}: the upload outlived its access");
        };
        restore();
        let ended = ended.unwrap_or_else(|| panic!("{host}: ended before the revocation"));
        assert!(ended < Duration::from_secs(2), "{host}: cut {ended:?} after the revocation");
    }
    // An HTTP/2 client, to both upstreams: answered as the refusal that ended access (401: the
    // certificate is revoked), never counted as the upstream failing.
    let upstream_failures = || {
        let metrics = setup.gateway.metrics().render();
        metrics.lines().find(|l| l.starts_with("zerogate_upstream_failures_total")).unwrap().to_owned()
    };
    let failures_before = upstream_failures();
    for host in ["billing.example.org", "grpc.example.org"] {
        let (mut sender, _driver) = http2_connection_to(&setup, host, None).await;
        let body = Ticker(tokio::time::interval(Duration::from_millis(100))).boxed();
        let request = Request::post(format!("https://{host}:{}/reports/upload", setup.port)).body(body).unwrap();
        let started = std::time::Instant::now();
        let answer = tokio::spawn(async move { sender.send_request(request).await.map(|r| r.status()) });
        tokio::time::sleep(Duration::from_millis(800)).await;
        revoke();
        let revoked_at = std::time::Instant::now();
        let answered = tokio::time::timeout(Duration::from_secs(4), answer).await;
        restore();
        let elapsed = revoked_at.elapsed();
        let answered = answered.unwrap_or_else(|_| panic!("{host} over HTTP/2: the upload outlived its access"));
        assert!(elapsed < Duration::from_secs(2), "{host} over HTTP/2: cut {elapsed:?} after the revocation");
        assert!(started.elapsed() > Duration::from_millis(800));
        let status = answered.unwrap().unwrap_or_else(|e| panic!("{host} over HTTP/2: no answer: {e}"));
        assert_eq!(status, 401, "{host} over HTTP/2: a cut upload is answered as the revocation that cut it");
    }
    assert_eq!(upstream_failures(), failures_before, "a cut upload is not an upstream failure");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = std::fs::read_to_string(&setup.audit_path).unwrap();
    assert_eq!(log.matches("long-lived connection cut").count(), 4, "each cut is recorded");
    // Each upstream saw its upload fail, never end as if it were whole.
    let seen = setup.seen.lock().unwrap().clone();
    let uploads: Vec<&Value> = seen.iter().filter(|s| s["target"] == "/reports/upload").collect();
    assert!(!uploads.is_empty());
    for upload in uploads {
        assert!(
            upload["body"].as_str().is_some_and(|b| b.starts_with("failed")),
            "a cut upload looked whole: {upload}"
        );
    }
}

/// Signs with the AWS SDK for Rust's signer (the aws-sigv4 crate), as {url, headers}.
fn aws_sigv4_sign(setup: &Setup, method: &str, url: &str, body: &str) -> Value {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity =
        aws_credential_types::Credentials::new(&setup.key_id, &setup.key_secret, None, None, "zerogate-test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("execute-api")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [("content-type", "application/json")];
    let signable =
        SignableRequest::new(method, url, headers.iter().copied(), SignableBody::Bytes(body.as_bytes())).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut request = hyper::Request::builder().method(method).uri(url).header("content-type", "application/json");
    for (name, value) in instructions.headers() {
        request = request.header(name, value);
    }
    let request = request.body(()).unwrap();
    let headers: serde_json::Map<String, Value> = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), json!(value.to_str().unwrap())))
        .collect();
    json!({ "url": url, "headers": headers })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_signed_by_the_aws_sdk_for_rust_pass_with_sigv4() {
    let setup = setup("sigv4-rust").await;
    let url = format!("https://ci.example.org:{}/deploy?env=prod&run=7", setup.port);
    let body = r#"{"version":"2.0.0"}"#;
    let blocking = |f: &dyn Fn() -> (u16, String)| tokio::task::block_in_place(f);
    for protocol in ["--http1.1", "--http2"] {
        let signed = aws_sigv4_sign(&setup, "POST", &format!("{url}&via={protocol}"), body);
        let (status, seen) = blocking(&|| send_signed(&setup, "POST", &signed, body, protocol));
        assert_eq!(status, 200, "{protocol}: {seen}");
        let seen: Value = serde_json::from_str(&seen).unwrap();
        assert!(seen["headers"].get("authorization").is_none());
        assert!(seen["headers"]["x-zerogate-identity"].is_string());
        // The same signature over another body, or replayed: refused.
        assert_eq!(blocking(&|| send_signed(&setup, "POST", &signed, r#"{"version":"6.6.6"}"#, protocol)).0, 401);
    }
    let signed = aws_sigv4_sign(&setup, "GET", &format!("https://ci.example.org:{}/status", setup.port), "");
    // A key that is not the gateway's: refused.
    let mut forged = signed.clone();
    let authorization =
        forged["headers"]["authorization"].as_str().unwrap().replace(&setup.key_id, "AKIAFORGEDFORGED0000");
    forged["headers"]["authorization"] = json!(authorization);
    assert_eq!(blocking(&|| send_signed(&setup, "GET", &forged, "", "--http1.1")).0, 401);
    assert_eq!(blocking(&|| send_signed(&setup, "GET", &signed, "", "--http1.1")).0, 200);
}

/// An HTTP/2 connection to billing with the device certificate; the client's stream window is
/// `window` bytes. Returns the sender and the connection's task, which ends when the gateway
/// closes the connection.
async fn http2_connection(
    setup: &Setup,
    window: u32,
) -> (hyper::client::conn::http2::SendRequest<TestBody>, tokio::task::JoinHandle<()>) {
    http2_connection_to(setup, "billing.example.org", Some(window)).await
}

/// [`http2_connection`] to the application `host`, with hyper's stream window unless `window`.
async fn http2_connection_to(
    setup: &Setup,
    host: &str,
    window: Option<u32>,
) -> (hyper::client::conn::http2::SendRequest<TestBody>, tokio::task::JoinHandle<()>) {
    let tls = device_connection_speaking(setup, host, &[b"h2"]).await;
    let mut builder = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    if let Some(window) = window {
        builder.initial_stream_window_size(window);
    }
    let (sender, driver) = builder.handshake(TokioIo::new(tls)).await.unwrap();
    (
        sender,
        tokio::spawn(async move {
            let _ = driver.await;
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_trailers_pass_both_ways_but_not_identities_a_client_states_in_them() {
    let setup = setup("trailers").await;
    let (mut sender, _connection) = http2_connection_to(&setup, "grpc.example.org", None).await;
    let mut stated = hyper::HeaderMap::new();
    stated.insert("checksum", "c0ffee".parse().unwrap());
    stated.insert("x-zerogate-identity", "forged".parse().unwrap());
    stated.insert("x-forwarded-user", "admin".parse().unwrap());
    stated.insert("x-amzn-oidc-identity", "admin".parse().unwrap());
    stated.insert("authorization", "Bearer stolen".parse().unwrap());
    let body = Full::new(Bytes::from_static(b"request")).with_trailers(async { Some(Ok(stated)) });
    let request = Request::post(format!("https://grpc.example.org:{}/svc.Echo/trailers", setup.port))
        .header("te", "trailers")
        .body(body.boxed())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("the upstream's trailers reach the client");
    let field = |name: &str| trailers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!((field("grpc-status"), field("grpc-message")), (Some("0".into()), Some("done".into())));
    assert_eq!(collected.to_bytes(), "reply");
    let seen = setup.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen["request_trailers"], json!({ "checksum": "c0ffee" }), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_connection_limit_the_gateway_accepts_again_only_when_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = setup_tuned("max-connections", Tuning { max_connections: 2, ..Tuning::default() }).await;
    let first = device_connection(&setup, "billing.example.org").await;
    let mut second = device_connection(&setup, "billing.example.org").await;
    // A third is not taken up (its handshake waits in the backlog) while two are open ...
    let waiting = tokio::time::timeout(Duration::from_secs(1), device_connection(&setup, "billing.example.org")).await;
    assert!(waiting.is_err(), "a third connection was served past the limit of two");
    let metrics = setup.gateway.metrics().render();
    assert!(metrics.contains("zerogate_connections_open 2\n"), "{metrics}");
    assert!(metrics.contains("zerogate_connection_limit_reached_total 1\n"), "{metrics}");
    // ... and is once one of them closes; the others go on being served.
    drop(first);
    let mut third = tokio::time::timeout(Duration::from_secs(5), device_connection(&setup, "billing.example.org"))
        .await
        .expect("served once a connection closed");
    for tls in [&mut second, &mut third] {
        tls.write_all(b"GET /reports/a HTTP/1.1\r\nHost: billing.example.org\r\n\r\n").await.unwrap();
        let mut head = [0u8; 12];
        tls.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holding_many_http2_upstream_streams_does_not_starve_the_others() {
    let setup = setup("h2-upstream-pool").await;
    let (mut sender, _connection) = http2_connection_to(&setup, "grpc.example.org", None).await;
    // As many endless streams as the upstream allows on one connection (64, in this test).
    let mut held = Vec::new();
    for _ in 0..64 {
        let request = Request::get(format!("https://grpc.example.org:{}/svc.Feed/stream", setup.port))
            .body(Full::new(Bytes::new()).boxed())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        held.push(response.into_body());
    }
    let upstream_connections = setup.connections.load(Ordering::SeqCst);
    // Another client's request is answered at once, on another upstream connection, instead of
    // waiting behind them for a stream that never ends.
    let started = std::time::Instant::now();
    let (status, body, _) = tokio::task::block_in_place(|| {
        curl_versioned(&setup, "grpc.example.org", "/svc.Inventory/List", true, &["--http2"])
    });
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
    assert!(setup.connections.load(Ordering::SeqCst) > upstream_connections, "a second upstream connection");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_past_its_share_of_requests_in_flight_is_refused_until_one_ends() {
    let setup = setup_tuned("principal-share", Tuning { max_requests_per_principal: 3, ..Tuning::default() }).await;
    let grpc = "grpc.example.org";
    let (mut sender, _connection) = http2_connection_to(&setup, grpc, None).await;
    let stream = |path: &str| {
        Request::get(format!("https://{grpc}:{}{path}", setup.port)).body(Full::new(Bytes::new()).boxed()).unwrap()
    };
    // The device holds its whole share (3) in endless streams.
    let mut held = Vec::new();
    for _ in 0..3 {
        let response = sender.send_request(stream("/svc.Feed/stream")).await.unwrap();
        assert_eq!(response.status(), 200);
        held.push(response.into_body());
    }
    let seen = setup.seen.lock().unwrap().len();
    // One more from the same device is refused, on this connection and on a new HTTP/1.1 one ...
    let refused = sender.send_request(stream("/svc.Inventory/List")).await.unwrap();
    assert_eq!(refused.status(), 429);
    let (status, _) = tokio::task::block_in_place(|| curl(&setup, grpc, "/svc.Inventory/List", true, &[]));
    assert_eq!(status, 429);
    assert_eq!(setup.seen.lock().unwrap().len(), seen, "the upstream saw neither");
    assert!(audit_log_shows(&setup, "gateway.max_requests_per_principal").await, "the refusal is recorded");
    let metrics = setup.gateway.metrics().render();
    assert!(metrics.contains("zerogate_principal_limit_reached_total 2\n"), "{metrics}");
    // ... while another principal is served as before.
    let bearer = format!("Authorization: Bearer {}", token(&setup, "rs256"));
    let (status, body) =
        tokio::task::block_in_place(|| curl(&setup, "api.example.org", "/v1/me", false, &["-H", &bearer]));
    assert_eq!(status, 200, "{body}");
    // Once one of its streams ends, the device has a place again.
    drop(held.pop());
    let mut status = 0;
    for _ in 0..50 {
        status = sender.send_request(stream("/svc.Inventory/List")).await.unwrap().status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "a place returns when a stream ends");
}

fn billing_get(setup: &Setup, path: &str) -> Request<TestBody> {
    Request::get(format!("https://billing.example.org:{}{path}", setup.port))
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}

/// A request body that sends its first KiB and then nothing, never ending.
struct FallsSilent(bool);

impl hyper::body::Body for FallsSilent {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.0 {
            return std::task::Poll::Pending;
        }
        self.0 = true;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(vec![b'u'; 1024])))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_go_quiet_or_stop_reading_are_let_go_after_the_client_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let patience = Duration::from_secs(2);
    let setup = setup_with("client-timeout", patience).await;
    let within = |started: tokio::time::Instant, what: &str| {
        let took = started.elapsed();
        assert!(took >= patience - Duration::from_millis(300), "{what}: let go after {took:?}, before the timeout");
        assert!(took <= patience * 3, "{what}: let go only after {took:?}");
    };

    // An idle HTTP/1.1 keep-alive connection is closed.
    let mut tls = device_connection(&setup, "billing.example.org").await;
    tls.write_all(b"GET /reports/a HTTP/1.1\r\nHost: billing.example.org\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    tls.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(patience * 4, tls.read_to_end(&mut rest)).await.expect("closed");
    within(started, "an idle HTTP/1.1 connection");

    // A signed (SigV4) HTTP/1.1 upload is read whole before any credential is checked: one that
    // stops arriving is given up (answered 400, closed), as every other wait on the client is.
    let mut tls = device_connection(&setup, "ci.example.org").await;
    let signed = signed_upload_head(100_000) + "first bytes";
    tls.write_all(signed.as_bytes()).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(patience * 4, tls.read_to_end(&mut answer)).await.expect("closed");
    within(started, "a signed upload that stopped arriving");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
    // ... and one that trickles in, a byte well within the timeout each time, is given up
    // once it has taken the timeout as a whole.
    let mut tls = device_connection(&setup, "ci.example.org").await;
    tls.write_all(signed_upload_head(100_000).as_bytes()).await.unwrap();
    let started = tokio::time::Instant::now();
    let trickle = async {
        loop {
            if tls.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(patience / 4).await;
        }
    };
    let _ = tokio::time::timeout(patience * 4, trickle).await;
    within(started, "a signed upload that trickles in");

    // An HTTP/1.1 client that stops reading an endless response is cut: once it reads again,
    // what was sent before the cut arrives, then the end.
    let mut tls = device_connection(&setup, "billing.example.org").await;
    tls.write_all(b"GET /reports/flood HTTP/1.1\r\nHost: billing.example.org\r\n\r\n").await.unwrap();
    tokio::time::sleep(patience * 2).await;
    let mut taken = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => taken += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the HTTP/1.1 response went on after its client stopped reading ({taken} bytes read)");
    assert!(taken > 16 * 1024, "the response had begun: {taken} bytes");

    // A WebSocket may be quiet for longer than the timeout; one whose client stops reading
    // what the upstream sends is cut.
    let mut socket = websocket(&setup).await;
    tokio::time::sleep(patience * 2).await;
    socket.write_all(b"still here").await.unwrap();
    let mut echo = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut echo)).await.unwrap().unwrap();
    assert_eq!(&echo, b"still here", "a quiet WebSocket was cut");
    let started = tokio::time::Instant::now();
    let chunk = vec![b'w'; 64 * 1024];
    let mut written = 0usize;
    let cut = tokio::time::timeout(Duration::from_secs(30), async {
        while socket.write_all(&chunk).await.is_ok() {
            written += chunk.len();
        }
    })
    .await;
    assert!(cut.is_ok(), "a WebSocket whose client stopped reading went on ({written} bytes written)");
    assert!(started.elapsed() >= patience, "cut after {:?}, before the timeout", started.elapsed());

    // An idle HTTP/2 connection is closed (after its one request).
    let (mut sender, connection) = http2_connection(&setup, 1 << 20).await;
    let answered = sender.send_request(billing_get(&setup, "/reports/h2")).await.unwrap();
    assert_eq!(answered.status(), 200);
    answered.into_body().collect().await.unwrap();
    let started = tokio::time::Instant::now();
    tokio::time::timeout(patience * 4, connection).await.expect("the idle HTTP/2 connection was closed").unwrap();
    within(started, "an idle HTTP/2 connection");

    // An HTTP/2 client that stops sending its request body: the upload fails within the
    // timeout (the upstream never takes a partial body as whole) and the client is answered.
    let (mut sender, _connection) = http2_connection(&setup, 1 << 20).await;
    let upload = Request::post(format!("https://billing.example.org:{}/reports/upload", setup.port))
        .header("content-length", "1048576")
        .body(FallsSilent(false).boxed())
        .unwrap();
    let started = tokio::time::Instant::now();
    let answered = tokio::time::timeout(patience * 4, sender.send_request(upload)).await.expect("answered in time");
    within(started, "an HTTP/2 upload that stalled");
    if let Ok(response) = answered {
        assert_ne!(response.status(), 200, "a stalled upload was answered as a success");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = setup.seen.lock().unwrap().iter().find(|e| e["target"] == "/reports/upload").cloned();
    if let Some(seen) = seen {
        assert!(
            seen["body"].as_str().is_some_and(|b| b.starts_with("failed")),
            "the upstream took a partial body: {seen}"
        );
    }

    // A full-duplex exchange whose client sent once and now only reads is not cut: once the
    // upstream answers, the quiet request body is no longer the client's fault.
    let (mut sender, _connection) = http2_connection(&setup, 1 << 20).await;
    let duplex = Request::post(format!("https://billing.example.org:{}/reports/stream", setup.port))
        .body(FallsSilent(false).boxed())
        .unwrap();
    let answered = sender.send_request(duplex).await.unwrap();
    assert_eq!(answered.status(), 200);
    let mut ticks = answered.into_body();
    let reading = tokio::time::Instant::now();
    while reading.elapsed() < patience * 2 {
        ticks.frame().await.expect("the duplex stream goes on").expect("the duplex stream was cut");
    }
    drop(ticks);

    // A small response that the client's window (0) never lets out: its stream stalls on the
    // last frame, and the connection is cut.
    let (mut sender, connection) = http2_connection(&setup, 0).await;
    let held = sender.send_request(billing_get(&setup, "/reports/h2")).await.unwrap();
    assert_eq!(held.status(), 200);
    let started = tokio::time::Instant::now();
    tokio::time::timeout(patience * 4, connection).await.expect("a last frame that never left was timed").unwrap();
    within(started, "a response held by a closed window");

    // An HTTP/2 stream that its client keeps reading is not cut, however long it lasts; one
    // whose client stops reading (its window closed) is: the whole connection goes.
    let (mut sender, connection) = http2_connection(&setup, 16 * 1024).await;
    let ticking = sender.send_request(billing_get(&setup, "/reports/stream")).await.unwrap();
    assert_eq!(ticking.status(), 200);
    let mut ticks = ticking.into_body();
    let reading = tokio::time::Instant::now();
    let mut read = 0usize;
    while reading.elapsed() < patience * 2 {
        let frame = ticks.frame().await.expect("the stream goes on").expect("no error");
        read += frame.data_ref().map_or(0, |d| d.len());
    }
    assert!(read > 0);
    assert!(!connection.is_finished(), "a stream that is read was cut");
    let flood = sender.send_request(billing_get(&setup, "/reports/flood")).await.unwrap();
    assert_eq!(flood.status(), 200);
    let _unread = flood.into_body();
    let started = tokio::time::Instant::now();
    // The ticking stream, still read, does not keep a connection whose other stream stalls.
    let kept_reading = tokio::spawn(async move { while let Some(Ok(_)) = ticks.frame().await {} });
    tokio::time::timeout(patience * 4, connection).await.expect("the stalled HTTP/2 connection was cut").unwrap();
    within(started, "an HTTP/2 client that stopped reading");
    tokio::time::timeout(Duration::from_secs(2), kept_reading).await.expect("its other stream ended too").unwrap();
}
