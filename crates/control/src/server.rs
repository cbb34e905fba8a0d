//! `zerogate server`: the control plane's identity endpoints over TLS (rustls, TLS 1.2 and 1.3,
//! no session resumption so a revoked client certificate cannot ride an old session). Client
//! certificates are optional at the TLS layer and required by the renewal endpoint, where the
//! chain is verified as an SVID with revocation consulted on every request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData};
use rustls::RootCertStore;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use zerogate_store::Store;

use crate::api::{self, EnrollRequest, ErrorResponse, IssuedResponse, RenewRequest};
use crate::service::{IdentityService, Origin, Refusal};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TLS configuration failed.
    #[error("tls: {0}")]
    Tls(String),
    /// The server certificate could not be issued.
    #[error("server certificate: {0}")]
    Certificate(String),
}

/// The current Unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The server's own certificate, replaced before it expires.
#[derive(Debug)]
struct ServerCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

fn issue_server_cert<S: Store>(
    service: &IdentityService<S>,
    names: &[String],
) -> Result<(CertifiedKey, i64), ServerError> {
    let now = unix_now();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| ServerError::Certificate(e.to_string()))?;
    let issued = service
        .issue_server(&key.subject_public_key_info(), names, now)
        .map_err(|e| ServerError::Certificate(e.to_string()))?;
    let mut chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| ServerError::Certificate(e.to_string()))?;
    // The root goes last, so an enrolling client can find the root its token pins.
    chain.push(service.authority().root_der().clone());
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .map_err(|e| ServerError::Certificate(e.to_string()))?;
    Ok((CertifiedKey::new(chain, signing), issued.not_after - issued.not_before))
}

/// A running server's settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// DNS names and IP addresses the server certificate carries (clients check them).
    pub names: Vec<String>,
}

/// Serves the identity endpoints on `listener` until `shutdown` completes.
pub async fn serve<S: Store + 'static>(
    service: Arc<IdentityService<S>>,
    listener: TcpListener,
    options: ServerOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let (certified, lifetime) = issue_server_cert(&service, &options.names)?;
    let resolver = Arc::new(ServerCert { current: RwLock::new(Arc::new(certified)) });
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(service.authority().root_der().clone()).map_err(|e| ServerError::Tls(e.to_string()))?;
    let client_verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .allow_unauthenticated()
        .build()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_client_cert_verifier(client_verifier)
        .with_cert_resolver(resolver.clone());
    // No resumption: every connection presents and proves its certificate again.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    // Replace the server certificate at half its lifetime.
    let renewer = {
        let service = Arc::clone(&service);
        let resolver = Arc::clone(&resolver);
        let names = options.names.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs(u64::try_from(lifetime / 2).unwrap_or(1800).max(60));
            loop {
                tokio::time::sleep(period).await;
                let service = Arc::clone(&service);
                let names = names.clone();
                match tokio::task::spawn_blocking(move || issue_server_cert(&service, &names)).await {
                    Ok(Ok((fresh, _))) => {
                        if let Ok(mut current) = resolver.current.write() {
                            *current = Arc::new(fresh);
                        }
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "server certificate renewal failed"),
                    Err(e) => tracing::error!(error = %e, "server certificate renewal panicked"),
                }
            }
        })
    };

    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let chain: Arc<Vec<CertificateDer<'static>>> = Arc::new(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                    .unwrap_or_default(),
            );
            let handler = hyper::service::service_fn(move |request| {
                handle(Arc::clone(&service), Arc::clone(&chain), peer, request)
            });
            let result = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(tls), handler)
                .await;
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    renewer.abort();
    Ok(())
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    if let Ok(value) = "no-store".parse() {
        response.headers_mut().insert(hyper::header::CACHE_CONTROL, value);
    }
    response
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Reply {
    reply(status, "application/json", serde_json::to_vec(body).unwrap_or_default())
}

fn refusal(r: &Refusal) -> Reply {
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &ErrorResponse { error: r.to_string() })
}

fn error(status: StatusCode, message: &str) -> Reply {
    json(status, &ErrorResponse { error: message.to_owned() })
}

/// Reads a JSON body of at most [`api::MAX_BODY`] bytes.
async fn read_json<T: serde::de::DeserializeOwned>(request: Request<Incoming>) -> Result<T, (StatusCode, String)> {
    let bytes = match Limited::new(request.into_body(), api::MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err((StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {} bytes", api::MAX_BODY)));
        }
        Err(_) => return Err((StatusCode::BAD_REQUEST, "request body could not be read".into())),
    };
    serde_json::from_slice(&bytes).map_err(|e| (StatusCode::BAD_REQUEST, json_problem(&e)))
}

/// What is wrong with a request body, without quoting it: serde's own message can carry a value
/// (a token sent in the wrong place), and this text reaches the event and audit logs.
fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => "not JSON",
        Category::Data => "not the expected fields (token, csr, spiffe_id for enrollment; csr for renewal)",
    };
    format!("invalid request: {what} (line {}, column {})", e.line(), e.column())
}

/// A refusal before the service saw the request, recorded as an event all the same.
async fn recorded_refusal<S: Store + 'static>(
    service: Arc<IdentityService<S>>,
    action: &'static str,
    status: StatusCode,
    message: String,
    peer: SocketAddr,
) -> Reply {
    let text = message.clone();
    let recorded = tokio::task::spawn_blocking(move || {
        let peer = peer.to_string();
        service.record_refusal(action, &text, unix_now(), Origin { peer: Some(&peer) })
    })
    .await;
    match recorded {
        Ok(Ok(())) => error(status, &message),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

fn issued_reply<S: Store>(service: &IdentityService<S>, issued: &zerogate_pki::Issued) -> Reply {
    json(
        StatusCode::OK,
        &IssuedResponse {
            spiffe_id: issued.spiffe_id.to_string(),
            serial: issued.serial.to_string(),
            not_before: issued.not_before,
            not_after: issued.not_after,
            chain: issued.chain_pem.clone(),
            bundle: zerogate_pki::ca::pem_block("CERTIFICATE", service.authority().root_der()),
        },
    )
}

async fn handle<S: Store + 'static>(
    service: Arc<IdentityService<S>>,
    chain: Arc<Vec<CertificateDer<'static>>>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let reply = match (method, path.as_str()) {
        (Method::GET, api::HEALTH) => reply(StatusCode::OK, "text/plain", "ok\n"),
        (Method::GET, api::BUNDLE) => reply(
            StatusCode::OK,
            "application/x-pem-file",
            zerogate_pki::ca::pem_block("CERTIFICATE", service.authority().root_der()),
        ),
        (Method::GET, api::SPIFFE_BUNDLE) => {
            match zerogate_pki::bundle::spiffe_bundle(&[service.authority().root_der().as_ref()], 1, 300) {
                Ok(bundle) => json(StatusCode::OK, &bundle),
                Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            }
        }
        (Method::GET, api::REVOCATIONS) => {
            blocking(service, move |s| s.revocation_list().map(|l| json(StatusCode::OK, &l))).await
        }
        (Method::GET, api::CRL) => {
            blocking(service, move |s| {
                s.current_crl(unix_now(), 3600).map(|der| reply(StatusCode::OK, "application/pkix-crl", der))
            })
            .await
        }
        (Method::POST, api::ENROLL) => match read_json::<EnrollRequest>(request).await {
            Err((status, message)) => recorded_refusal(service, "enroll", status, message, peer).await,
            Ok(req) => {
                let peer = peer.to_string();
                blocking(service, move |s| {
                    let origin = Origin { peer: Some(&peer) };
                    s.enroll(&req.token, req.csr.as_bytes(), req.spiffe_id.as_deref(), unix_now(), origin)
                        .map(|issued| issued_reply(s, &issued))
                })
                .await
            }
        },
        (Method::POST, api::RENEW) => match read_json::<RenewRequest>(request).await {
            Err((status, message)) => recorded_refusal(service, "renew", status, message, peer).await,
            Ok(req) => {
                let peer = peer.to_string();
                blocking(service, move |s| {
                    let origin = Origin { peer: Some(&peer) };
                    s.renew(&chain, req.csr.as_bytes(), unix_now(), origin).map(|issued| issued_reply(s, &issued))
                })
                .await
            }
        },
        (
            _,
            api::HEALTH | api::BUNDLE | api::SPIFFE_BUNDLE | api::REVOCATIONS | api::CRL | api::ENROLL | api::RENEW,
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(reply)
}

/// Runs store-touching work off the async threads; a panic there is a 500, never a crash.
async fn blocking<S: Store + 'static>(
    service: Arc<IdentityService<S>>,
    work: impl FnOnce(&IdentityService<S>) -> Result<Reply, Refusal> + Send + 'static,
) -> Reply {
    match tokio::task::spawn_blocking(move || work(&service)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(r)) => refusal(&r),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}
