//! OpenID Connect bearer tokens from any standard provider: discovery and JWKS fetched over HTTPS
//! (certificates verified, no redirects, bounded size and time), keys cached and rotated by
//! `kid`, several issuers side by side, and a cache of verified tokens so that a token seen
//! before costs a hash and a clock check.
//!
//! Failure is closed and bounded. When the provider cannot be reached, the keys fetched last keep
//! serving until they are [`FetchSettings::max_key_age`] old; after that every token of that
//! issuer is refused until a fetch succeeds. An unknown `kid` causes at most one fetch per
//! [`FetchSettings::cooldown`], however many tokens ask, so forged `kid`s cannot turn the gateway
//! into a load generator against the provider. A discovery document whose `issuer` is not exactly
//! the configured one is refused (the issuer is not ready).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::digest;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::jwt::{JwtError, KeySet, UnverifiedToken, Validation, VerifiedToken};

/// The largest discovery or JWKS document read.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// How many verified tokens are remembered.
const TOKEN_CACHE_CAPACITY: usize = 16 * 1024;

/// How an issuer's keys are fetched and how long they are trusted.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// The JWKS address; when `None`, found by OpenID Connect discovery from the issuer.
    pub jwks_uri: Option<String>,
    /// A JWKS document given in the configuration instead of fetched (an air-gapped provider):
    /// its keys never age and nothing is fetched.
    pub static_jwks: Option<Vec<u8>>,
    /// Extra trust anchors for the provider's HTTPS (a private provider); the public web roots
    /// are always trusted.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Whole-request time limit of one fetch (connect, TLS, response). Default 5 s.
    pub timeout: Duration,
    /// The least time between two fetches of one issuer. Default 30 s.
    pub cooldown: Duration,
    /// The age after which fetched keys are no longer used. Default 10 minutes.
    pub max_key_age: Duration,
    /// The age after which the background refresher fetches again. Default 5 minutes.
    pub refresh_after: Duration,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            jwks_uri: None,
            static_jwks: None,
            extra_roots: Vec::new(),
            timeout: Duration::from_secs(5),
            cooldown: Duration::from_secs(30),
            max_key_age: Duration::from_secs(600),
            refresh_after: Duration::from_secs(300),
        }
    }
}

/// Why a bearer token was refused or an issuer is not usable. Safe to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// The token itself fails verification.
    #[error(transparent)]
    Token(#[from] JwtError),
    /// The token's `iss` is not a configured issuer.
    #[error("the token's issuer is not configured here")]
    UnknownIssuer,
    /// No keys of this issuer may be used now (never fetched, or older than their maximum age and
    /// the provider unreachable).
    #[error("keys of issuer `{issuer}` are unavailable: {reason}")]
    KeysUnavailable {
        /// The issuer.
        issuer: String,
        /// The last fetch error.
        reason: String,
    },
    /// Fetching discovery or the JWKS failed.
    #[error("fetching `{url}`: {reason}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A fetch was skipped because the last one was less than the cool-down ago.
    #[error("issuer `{0}` was fetched less than the cool-down ago")]
    CoolingDown(String),
    /// The configuration is not usable.
    #[error("OIDC configuration: {0}")]
    Config(String),
}

impl OidcError {
    /// A short, stable name of the refusal, for audit records and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token(error) => error.kind(),
            Self::UnknownIssuer => "unknown_issuer",
            Self::KeysUnavailable { .. } => "keys_unavailable",
            Self::Fetch { .. } => "fetch_failed",
            Self::CoolingDown(_) => "cooling_down",
            Self::Config(_) => "config",
        }
    }
}

/// One configured issuer.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// What its tokens must satisfy.
    pub validation: Validation,
    /// How its keys are fetched.
    pub fetch: FetchSettings,
}

struct FetchedKeys {
    set: KeySet,
    fetched_at: Instant,
    generation: u64,
}

#[derive(Debug, Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    jwks_uri: Option<String>,
    last_error: Option<String>,
}

struct Issuer {
    validation: Validation,
    fetch: FetchSettings,
    tls: TlsConnector,
    keys: RwLock<Option<Arc<FetchedKeys>>>,
    state: tokio::sync::Mutex<FetchState>,
    fetches: AtomicU64,
}

impl Issuer {
    /// The keys, if fetched and younger than their maximum age.
    fn usable_keys(&self) -> Option<Arc<FetchedKeys>> {
        let keys = self.keys.read().ok()?.clone()?;
        (self.fetch.static_jwks.is_some() || keys.fetched_at.elapsed() < self.fetch.max_key_age).then_some(keys)
    }

    fn unavailable(&self, reason: String) -> OidcError {
        OidcError::KeysUnavailable { issuer: self.validation.issuer().to_owned(), reason }
    }

    /// Fetches the keys once, unless another fetch happened less than the cool-down ago.
    /// Concurrent callers wait for the one fetch in progress.
    async fn refresh(&self) -> Result<usize, OidcError> {
        if self.fetch.static_jwks.is_some() {
            return Ok(self.usable_keys().map_or(0, |keys| keys.set.len()));
        }
        let mut state = self.state.lock().await;
        if state.last_attempt.is_some_and(|last| last.elapsed() < self.fetch.cooldown) {
            return Err(OidcError::CoolingDown(self.validation.issuer().to_owned()));
        }
        state.last_attempt = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = self.fetch_keys(&mut state).await;
        state.last_error = result.as_ref().err().map(ToString::to_string);
        let set = result?;
        let count = set.len();
        let mut slot = self.keys.write().map_err(|_| self.unavailable("key store poisoned".into()))?;
        let generation = slot.as_ref().map_or(1, |keys| keys.generation + 1);
        *slot = Some(Arc::new(FetchedKeys { set, fetched_at: Instant::now(), generation }));
        Ok(count)
    }

    async fn fetch_keys(&self, state: &mut FetchState) -> Result<KeySet, OidcError> {
        let jwks_uri = match (&self.fetch.jwks_uri, &state.jwks_uri) {
            (Some(configured), _) => configured.clone(),
            (None, Some(discovered)) => discovered.clone(),
            (None, None) => {
                let discovered = self.discover().await?;
                state.jwks_uri = Some(discovered.clone());
                discovered
            }
        };
        let document = https_get(&jwks_uri, &self.tls, self.fetch.timeout).await?;
        let (set, skipped) = KeySet::from_jwks(&document, self.validation.algorithms())
            .map_err(|e| OidcError::Fetch { url: jwks_uri.clone(), reason: e.to_string() })?;
        for reason in skipped {
            tracing::warn!(issuer = self.validation.issuer(), %reason, "JWKS key skipped");
        }
        Ok(set)
    }

    /// OpenID Connect Discovery 1.0 §4: the document's `issuer` must be exactly ours.
    async fn discover(&self) -> Result<String, OidcError> {
        let issuer = self.validation.issuer();
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let document = https_get(&url, &self.tls, self.fetch.timeout).await?;
        let bad = |reason: &str| OidcError::Fetch { url: url.clone(), reason: reason.to_owned() };
        let value: Value = serde_json::from_slice(&document).map_err(|_| bad("not JSON"))?;
        if value.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err(bad("the discovery document names another issuer"));
        }
        let jwks_uri = value.get("jwks_uri").and_then(Value::as_str).ok_or_else(|| bad("no `jwks_uri`"))?;
        if !jwks_uri.starts_with("https://") {
            return Err(bad("`jwks_uri` is not https"));
        }
        Ok(jwks_uri.to_owned())
    }
}

/// What the verifier knows about one issuer, for health and metrics.
#[derive(Debug, Clone)]
pub struct IssuerStatus {
    /// The issuer.
    pub issuer: String,
    /// Usable keys now (0 when none or too old).
    pub keys: usize,
    /// Age of the keys in use.
    pub key_age: Option<Duration>,
    /// Fetch attempts so far.
    pub fetches: u64,
}

struct CachedToken {
    issuer: Arc<Issuer>,
    generation: u64,
    /// Shared with every caller that presents the token again: a cache hit copies nothing.
    token: Arc<VerifiedToken>,
}

/// Verifies bearer JWTs of the configured issuers.
pub struct OidcVerifier {
    issuers: HashMap<String, Arc<Issuer>>,
    cache: Mutex<HashMap<[u8; 32], CachedToken>>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier").field("issuers", &self.status()).finish()
    }
}

impl OidcVerifier {
    /// A verifier for `issuers` (no fetch yet: call [`OidcVerifier::refresh_all`] to be ready).
    pub fn new(issuers: Vec<IssuerConfig>) -> Result<Self, OidcError> {
        let mut by_name = HashMap::new();
        for config in issuers {
            let name = config.validation.issuer().to_owned();
            if config.fetch.max_key_age.is_zero() || config.fetch.cooldown > config.fetch.max_key_age {
                return Err(OidcError::Config(format!(
                    "issuer `{name}`: the cool-down must be shorter than the maximum key age"
                )));
            }
            let static_keys = match &config.fetch.static_jwks {
                Some(document) => {
                    let (set, _) = KeySet::from_jwks(document, config.validation.algorithms())
                        .map_err(|e| OidcError::Config(format!("issuer `{name}`: static JWKS: {e}")))?;
                    Some(Arc::new(FetchedKeys { set, fetched_at: Instant::now(), generation: 1 }))
                }
                None => None,
            };
            if static_keys.is_some() {
                // Nothing is fetched.
            } else if let Some(uri) = &config.fetch.jwks_uri {
                if !uri.starts_with("https://") {
                    return Err(OidcError::Config(format!("issuer `{name}`: jwks_uri must be https")));
                }
            } else if !name.starts_with("https://") {
                return Err(OidcError::Config(format!(
                    "issuer `{name}`: discovery needs an https issuer, or set jwks_uri"
                )));
            }
            let tls =
                connector(&config.fetch.extra_roots).map_err(|e| OidcError::Config(format!("issuer `{name}`: {e}")))?;
            let issuer = Issuer {
                validation: config.validation,
                fetch: config.fetch,
                tls,
                keys: RwLock::new(static_keys),
                state: tokio::sync::Mutex::new(FetchState::default()),
                fetches: AtomicU64::new(0),
            };
            if by_name.insert(name.clone(), Arc::new(issuer)).is_some() {
                return Err(OidcError::Config(format!("issuer `{name}` is configured twice")));
            }
        }
        Ok(Self { issuers: by_name, cache: Mutex::new(HashMap::new()) })
    }

    /// Fetches the keys of every issuer; the result per issuer says whether it is ready.
    pub async fn refresh_all(&self) -> Vec<(String, Result<usize, OidcError>)> {
        let mut results = Vec::new();
        for (name, issuer) in &self.issuers {
            results.push((name.clone(), issuer.refresh().await));
        }
        results.sort_by(|a, b| a.0.cmp(&b.0));
        results
    }

    /// Refreshes, in the background, keys older than `refresh_after`; stops when the verifier
    /// is dropped.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(verifier) = weak.upgrade() else { return };
                for issuer in verifier.issuers.values() {
                    let stale = issuer
                        .keys
                        .read()
                        .ok()
                        .and_then(|keys| keys.as_ref().map(|k| k.fetched_at.elapsed() >= issuer.fetch.refresh_after))
                        .unwrap_or(true);
                    if !stale {
                        continue;
                    }
                    match issuer.refresh().await {
                        Ok(_) | Err(OidcError::CoolingDown(_)) => {}
                        Err(error) => tracing::warn!(%error, "OIDC key refresh failed"),
                    }
                }
            }
        })
    }

    /// What each issuer's key cache holds.
    pub fn status(&self) -> Vec<IssuerStatus> {
        let mut all: Vec<IssuerStatus> = self
            .issuers
            .iter()
            .map(|(name, issuer)| {
                let keys = issuer.usable_keys();
                IssuerStatus {
                    issuer: name.clone(),
                    keys: keys.as_ref().map_or(0, |k| k.set.len()),
                    key_age: keys.map(|k| k.fetched_at.elapsed()),
                    fetches: issuer.fetches.load(Ordering::Relaxed),
                }
            })
            .collect();
        all.sort_by(|a, b| a.issuer.cmp(&b.issuer));
        all
    }

    /// Verifies `token` at `now`: a token verified before (under the same keys) is only re-checked
    /// for time; otherwise fully, fetching the issuer's keys when needed and allowed.
    pub async fn verify(&self, token: &str, now: SystemTime) -> Result<Arc<VerifiedToken>, OidcError> {
        let fingerprint = fingerprint(token);
        if let Some(cached) = self.cached(&fingerprint, now) {
            return cached;
        }
        let unverified = UnverifiedToken::parse(token)?;
        let issuer = unverified.issuer().and_then(|iss| self.issuers.get(iss)).ok_or(OidcError::UnknownIssuer)?;
        // Everything that needs no key first, so a malformed or forbidden token never fetches.
        let alg = unverified.check_header(&issuer.validation)?;
        let kid = unverified.key_id();
        let mut keys = issuer.usable_keys();
        if !keys.as_ref().is_some_and(|keys| keys.set.has(kid, alg)) {
            match issuer.refresh().await {
                Ok(_) | Err(OidcError::CoolingDown(_)) => {}
                Err(error) => tracing::warn!(%error, "OIDC key fetch failed"),
            }
            keys = issuer.usable_keys();
        }
        let Some(keys) = keys else {
            let reason = issuer.state.lock().await.last_error.clone().unwrap_or_else(|| "not fetched yet".to_owned());
            return Err(issuer.unavailable(reason));
        };
        // Cached once the signature and claims hold, before the time is checked: an expired
        // token presented again (a stale client, a replay) is refused from the cache, not with
        // another signature check each time.
        let verified = Arc::new(unverified.verify_untimed(&keys.set, &issuer.validation)?);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= TOKEN_CACHE_CAPACITY {
                cache.retain(|_, entry| entry.token.check_validity(now, &entry.issuer.validation).is_ok());
                if cache.len() >= TOKEN_CACHE_CAPACITY {
                    cache.clear();
                }
            }
            let entry =
                CachedToken { issuer: Arc::clone(issuer), generation: keys.generation, token: Arc::clone(&verified) };
            cache.insert(fingerprint, entry);
        }
        verified.check_validity(now, &issuer.validation)?;
        Ok(verified)
    }

    fn cached(&self, fingerprint: &[u8; 32], now: SystemTime) -> Option<Result<Arc<VerifiedToken>, OidcError>> {
        let cache = self.cache.lock().ok()?;
        let entry = cache.get(fingerprint)?;
        let keys = entry.issuer.usable_keys()?;
        if keys.generation != entry.generation {
            // The keys changed: the key that verified this token may be gone. Verify again.
            return None;
        }
        Some(match entry.token.check_validity(now, &entry.issuer.validation) {
            Ok(()) => Ok(Arc::clone(&entry.token)),
            Err(error) => Err(error.into()),
        })
    }
}

fn fingerprint(token: &str) -> [u8; 32] {
    let digest = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn connector(extra_roots: &[CertificateDer<'static>]) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for root in extra_roots {
        roots.add(root.clone()).map_err(|e| format!("extra root certificate: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// GET an https URL: certificate verified, 200 only, no redirects, bounded size and time.
async fn https_get(url: &str, tls: &TlsConnector, timeout: Duration) -> Result<Vec<u8>, OidcError> {
    let fail = |reason: String| OidcError::Fetch { url: url.to_owned(), reason };
    match tokio::time::timeout(timeout, https_get_inner(url, tls)).await {
        Ok(result) => result.map_err(fail),
        Err(_) => Err(fail(format!("no complete answer within {timeout:?}"))),
    }
}

async fn https_get_inner(url: &str, tls: &TlsConnector) -> Result<Vec<u8>, String> {
    let uri: Uri = url.parse().map_err(|_| "not a URL".to_owned())?;
    if uri.scheme_str() != Some("https") {
        return Err("not https".into());
    }
    let authority = uri.authority().ok_or("no host")?.clone();
    if authority.as_str().contains('@') {
        return Err("user information in the URL".into());
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = authority.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(host.clone()).map_err(|_| "bad host name".to_owned())?;
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("connect: {e}"))?;
    let stream = tls.connect(server_name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    if response.status() != StatusCode::OK {
        driver.abort();
        return Err(format!("HTTP status {}", response.status().as_u16()));
    }
    let body =
        Limited::new(response.into_body(), MAX_DOCUMENT_BYTES).collect().await.map_err(|e| format!("body: {e}"))?;
    driver.abort();
    Ok(body.to_bytes().to_vec())
}
