//! The device and workload side: `zerogate enroll` (make a key that never leaves the machine,
//! send a CSR with a one-time token, receive the chain) and renewal with the current
//! certificate, writing each file atomically. Enrollment trusts the server through the root
//! fingerprint that the token carries; renewal through the bundle saved at enrollment.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::api::{self, EnrollRequest, ErrorResponse, IssuedResponse, RenewRequest};
use crate::datadir::write_atomic;

/// Why enrollment or renewal failed, each saying what and where.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server address is not `https://host:port`.
    #[error("server `{0}`: expected https://host[:port]")]
    BadServer(String),
    /// The token does not parse.
    #[error("token: {0}")]
    Token(String),
    /// Connecting or TLS failed.
    #[error("connecting to {server}: {reason}")]
    Connect {
        /// The server.
        server: String,
        /// What failed.
        reason: String,
    },
    /// The server refused.
    #[error("the server refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The reply was not what the protocol says.
    #[error("unexpected reply from the server: {0}")]
    Protocol(String),
    /// Local files.
    #[error(transparent)]
    Files(#[from] crate::datadir::DataDirError),
    /// A local file is missing or invalid.
    #[error("`{path}`: {reason}")]
    Local {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The files of an identity in its directory.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    dir: PathBuf,
}

impl IdentityFiles {
    /// The identity in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    /// Leaf and intermediate, PEM.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("svid.pem")
    }
    /// The private key (0600).
    pub fn key(&self) -> PathBuf {
        self.dir.join("svid.key.pem")
    }
    /// The root to trust, PEM.
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle.pem")
    }
    /// A TLS client configuration that presents this identity and trusts only its bundle: for
    /// renewal at the control plane, and for tunnels through the gateway (`zerogate connect`).
    /// Read from the files each time, so a renewed certificate is used from the next connection.
    pub fn tls_client_config(&self) -> Result<rustls::ClientConfig, ClientError> {
        self.tls_client_config_trusting(&self.bundle())
    }

    /// As [`Self::tls_client_config`], trusting the roots in `roots` (PEM) for the server's
    /// certificate instead of the bundle: a gateway that serves a certificate from another CA.
    pub fn tls_client_config_trusting(&self, roots_file: &Path) -> Result<rustls::ClientConfig, ClientError> {
        let local = |path: PathBuf, reason: String| ClientError::Local { path, reason };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.read(&self.cert())?)
            .collect::<Result<_, _>>()
            .map_err(|e| local(self.cert(), e.to_string()))?;
        let private =
            PrivateKeyDer::from_pem_slice(&self.read(&self.key())?).map_err(|e| local(self.key(), e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for root in CertificateDer::pem_slice_iter(&self.read(roots_file)?) {
            let root = root.map_err(|e| local(roots_file.to_owned(), e.to_string()))?;
            roots.add(root).map_err(|e| local(roots_file.to_owned(), e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(local(roots_file.to_owned(), "no certificate in it".into()));
        }
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private)
            .map_err(|e| local(self.cert(), e.to_string()))
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>, ClientError> {
        std::fs::read(path).map_err(|e| ClientError::Local { path: path.to_owned(), reason: e.to_string() })
    }
}

/// What was issued.
pub type Issued = IssuedResponse;

struct Endpoint {
    host: String,
    port: u16,
    text: String,
}

fn endpoint(server: &str) -> Result<Endpoint, ClientError> {
    let bad = || ClientError::BadServer(server.to_owned());
    let rest = server.strip_prefix("https://").ok_or_else(bad)?.trim_end_matches('/');
    if rest.contains('/') || rest.is_empty() {
        return Err(bad());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse() {
            Ok(port) => (h, port),
            Err(_) if rest.starts_with('[') && rest.ends_with(']') => (rest, 443),
            Err(_) => return Err(bad()),
        },
        _ => (rest, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    Ok(Endpoint { host, port, text: server.to_owned() })
}

/// Trusts a server whose chain contains the root with this SHA-256, verified as usual against
/// that root (names, validity, signatures).
#[derive(Debug)]
struct PinnedRoot {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedRoot {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let root = intermediates
            .iter()
            .find(|c| zerogate_pki::ca::fingerprint(c) == self.pin)
            .ok_or(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))?;
        let mut roots = RootCertStore::empty();
        roots.add(root.clone().into_owned())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&self.provider))
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

async fn post(
    config: rustls::ClientConfig,
    server: &Endpoint,
    path: &str,
    body: Vec<u8>,
) -> Result<Bytes, ClientError> {
    let connect_err = |reason: String| ClientError::Connect { server: server.text.clone(), reason };
    let name = ServerName::try_from(server.host.clone()).map_err(|e| connect_err(e.to_string()))?;
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((server.host.as_str(), server.port)))
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| connect_err(e.to_string()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| connect_err(e.to_string()))?;
    tokio::spawn(connection);
    let request = Request::post(path)
        .header(hyper::header::HOST, server.host.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .map_err(|_| connect_err("no reply within 30 s".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .to_bytes();
    if status != StatusCode::OK {
        let message =
            serde_json::from_slice::<ErrorResponse>(&bytes).map(|e| e.error).unwrap_or_else(|_| status.to_string());
        return Err(ClientError::Refused { status: status.as_u16(), message });
    }
    Ok(bytes)
}

fn csr_for(key: &KeyPair) -> Result<String, ClientError> {
    CertificateParams::default()
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| ClientError::Protocol(format!("cannot build the CSR: {e}")))
}

fn parse_issued(bytes: &[u8]) -> Result<Issued, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// Enrolls at `server` with `token`: a new P-256 key made here, a CSR sent, and the
/// certificate, key and root written to `files` (key first, 0600; each file atomically).
pub async fn enroll(
    server: &str,
    token: &str,
    files: &IdentityFiles,
    spiffe_id: Option<&str>,
) -> Result<Issued, ClientError> {
    let endpoint = endpoint(server)?;
    let presented = zerogate_pki::token::parse(token).map_err(|e| ClientError::Token(e.to_string()))?;
    let provider = provider();
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedRoot { pin: presented.root_fingerprint, provider }))
        .with_no_client_auth();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let request =
        EnrollRequest { token: token.trim().to_owned(), csr: csr_for(&key)?, spiffe_id: spiffe_id.map(str::to_owned) };
    let body = serde_json::to_vec(&request).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let issued = parse_issued(&post(config, &endpoint, api::ENROLL, body).await?)?;
    let root =
        CertificateDer::from_pem_slice(issued.bundle.as_bytes()).map_err(|e| ClientError::Protocol(e.to_string()))?;
    if zerogate_pki::ca::fingerprint(&root) != presented.root_fingerprint {
        return Err(ClientError::Protocol("the bundle is not the root the token names".into()));
    }
    std::fs::create_dir_all(&files.dir)
        .map_err(|e| ClientError::Local { path: files.dir.clone(), reason: e.to_string() })?;
    write_atomic(&files.key(), key.serialize_pem().as_bytes(), true)?;
    write_atomic(&files.bundle(), issued.bundle.as_bytes(), false)?;
    write_atomic(&files.cert(), issued.chain.as_bytes(), false)?;
    Ok(issued)
}

/// Renews the identity in `files` at `server`, authenticating with the current certificate; the
/// key stays the same, the certificate file is replaced atomically.
pub async fn renew(server: &str, files: &IdentityFiles) -> Result<Issued, ClientError> {
    let endpoint = endpoint(server)?;
    let local = |path: PathBuf, reason: String| ClientError::Local { path, reason };
    let key_pem = files.read(&files.key())?;
    let key_text = String::from_utf8(key_pem.clone()).map_err(|e| local(files.key(), e.to_string()))?;
    let key = KeyPair::from_pem(&key_text).map_err(|e| local(files.key(), e.to_string()))?;
    let config = files.tls_client_config()?;
    let body =
        serde_json::to_vec(&RenewRequest { csr: csr_for(&key)? }).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let issued = parse_issued(&post(config, &endpoint, api::RENEW, body).await?)?;
    write_atomic(&files.cert(), issued.chain.as_bytes(), false)?;
    Ok(issued)
}

/// When the certificate in `files` should be renewed (Unix seconds): half-way through its life,
/// or, when it was renewed at `renewed_at`, half-way through what remained of it then (the
/// certificate starts a little before it is issued, so a short-lived one would otherwise be due
/// at once).
pub fn renewal_due(files: &IdentityFiles, renewed_at: Option<i64>) -> Result<i64, ClientError> {
    let der = CertificateDer::pem_slice_iter(&files.read(&files.cert())?)
        .next()
        .ok_or_else(|| ClientError::Local { path: files.cert(), reason: "no certificate".into() })?
        .map_err(|e| ClientError::Local { path: files.cert(), reason: e.to_string() })?;
    let (not_before, not_after) = zerogate_pki::ca::validity(&der)
        .ok_or_else(|| ClientError::Local { path: files.cert(), reason: "not a certificate".into() })?;
    let midpoint = not_before + (not_after - not_before) / 2;
    Ok(match renewed_at {
        Some(at) => midpoint.max(at + (not_after - at) / 2),
        None => midpoint,
    })
}
