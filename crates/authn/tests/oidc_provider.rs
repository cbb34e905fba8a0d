//! OIDC over real HTTPS: a small provider on loopback serves discovery and JWKS (with a CA of its
//! own), PyJWT makes the tokens, and the verifier is observed from the provider's side (how often
//! it fetched) as well as from its answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use zerogate_authn::jwt::TokenKind;
use zerogate_authn::oidc::{FetchSettings, IssuerConfig, OidcVerifier};

/// What the provider serves at each path, and how often each path was asked for.
#[derive(Default)]
struct Provider {
    documents: Mutex<HashMap<String, Vec<u8>>>,
    hits: Mutex<HashMap<String, usize>>,
    requests: AtomicUsize,
}

impl Provider {
    fn set(&self, path: &str, body: Vec<u8>) {
        self.documents.lock().unwrap().insert(path.to_owned(), body);
    }
    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

struct Running {
    base: String,
    root: CertificateDer<'static>,
    provider: Arc<Provider>,
    server: tokio::task::JoinHandle<()>,
}

async fn start_provider() -> Running {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let provider = Arc::new(Provider::default());
    let shared = Arc::clone(&provider);
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let provider = Arc::clone(&shared);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let provider = Arc::clone(&provider);
                    async move {
                        let path = request.uri().path().to_owned();
                        provider.requests.fetch_add(1, Ordering::SeqCst);
                        *provider.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                        let body = provider.documents.lock().unwrap().get(&path).cloned();
                        Ok::<_, Infallible>(match body {
                            Some(body) => Response::new(Full::new(Bytes::from(body))),
                            None => {
                                Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::new())).unwrap()
                            }
                        })
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    Running { base: format!("https://localhost:{port}"), root: ca.der().clone(), provider, server }
}

fn discovery(issuer: &str, jwks: &str) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"issuer": issuer, "jwks_uri": jwks, "id_token_signing_alg_values_supported": ["RS256"]}),
    )
    .unwrap()
}

fn settings(root: &CertificateDer<'static>, cooldown: Duration, max_key_age: Duration) -> FetchSettings {
    FetchSettings {
        extra_roots: vec![root.clone()],
        cooldown,
        max_key_age,
        refresh_after: max_key_age,
        ..FetchSettings::default()
    }
}

fn verifier(issuers: &[(&str, FetchSettings)]) -> OidcVerifier {
    OidcVerifier::new(
        issuers
            .iter()
            .map(|(issuer, fetch)| IssuerConfig {
                validation: common::validation(issuer, TokenKind::Access),
                fetch: fetch.clone(),
            })
            .collect(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_jwks_cache_rotation_and_the_unknown_kid_cooldown() {
    let running = start_provider().await;
    let (first, second) = (format!("{}/a", running.base), format!("{}/b", running.base));
    let dir = common::temp_dir("oidc-main");
    let cases = common::make(&first, &second, &dir);
    let provider = &running.provider;
    provider.set("/a/.well-known/openid-configuration", discovery(&first, &format!("{}/a/jwks", running.base)));
    provider.set("/a/jwks", cases.file("jwks.json"));
    provider.set("/b/.well-known/openid-configuration", discovery(&second, &format!("{}/b/jwks", running.base)));
    provider.set("/b/jwks", cases.file("jwks-second.json"));
    let cooldown = Duration::from_secs(2);
    let fetch = settings(&running.root, cooldown, Duration::from_secs(600));
    let verifier = verifier(&[(&first, fetch.clone()), (&second, fetch)]);

    // Discovery then JWKS, on first use.
    let token = &cases.get("rs256").token;
    let verified = verifier.verify(token, cases.now).await.unwrap();
    assert_eq!(verified.issuer, first);
    assert_eq!((provider.hits("/a/.well-known/openid-configuration"), provider.hits("/a/jwks")), (1, 1));
    // Seen again: from the cache, same answer, no fetch.
    assert_eq!(verifier.verify(token, cases.now).await.unwrap(), verified);
    assert_eq!(provider.hits("/a/jwks"), 1);

    // Several issuers side by side, each with its own keys only.
    for case in cases.cases.iter().filter(|case| case.issuers == 2) {
        let got = match verifier.verify(&case.token, cases.now).await {
            Ok(_) => "ok".to_owned(),
            Err(error) => error.kind().to_owned(),
        };
        assert_eq!(got, case.expect, "{}", case.name);
    }

    // An unknown kid fetches at most once per cool-down, however many tokens ask.
    let unknown = &cases.get("rotated-key").token;
    let before = provider.hits("/a/jwks");
    for _ in 0..20 {
        assert_eq!(verifier.verify(unknown, cases.now).await.unwrap_err().kind(), "unknown_key");
    }
    assert!(provider.hits("/a/jwks") - before <= 1, "fetched {} times", provider.hits("/a/jwks") - before);
    let forged = &cases.get("kid-path-traversal").token;
    for _ in 0..20 {
        assert_eq!(verifier.verify(forged, cases.now).await.unwrap_err().kind(), "unknown_key");
    }
    assert!(provider.hits("/a/jwks") - before <= 1);
    // A malformed or forbidden token never causes a fetch.
    for name in ["alg-none-empty-signature", "embedded-jwk", "jku", "padded-signature"] {
        verifier.verify(&cases.get(name).token, cases.now).await.unwrap_err();
    }
    assert!(provider.hits("/a/jwks") - before <= 1);

    // Rotation: the provider publishes the new key; after the cool-down the new kid is fetched and
    // verifies, and a token under the removed key is refused although it was cached.
    provider.set("/a/jwks", cases.file("jwks-rotated.json"));
    tokio::time::sleep(cooldown + Duration::from_millis(200)).await;
    verifier.verify(unknown, cases.now).await.unwrap();
    assert_eq!(verifier.verify(token, cases.now).await.unwrap_err().kind(), "unknown_key");
    assert_eq!(provider.hits("/a/.well-known/openid-configuration"), 1, "discovery is remembered");
    running.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_verification_is_held_to_expiry_and_maximum_age_at_every_use() {
    let running = start_provider().await;
    let issuer = format!("{}/a", running.base);
    let dir = common::temp_dir("oidc-age");
    let cases = common::make(&issuer, "https://unused.example/b", &dir);
    running
        .provider
        .set("/a/.well-known/openid-configuration", discovery(&issuer, &format!("{}/a/jwks", running.base)));
    running.provider.set("/a/jwks", cases.file("jwks.json"));
    // Tokens were issued 10 s before `now` and expire 300 s after it; at most 60 s old here.
    let verifier = OidcVerifier::new(vec![IssuerConfig {
        validation: common::validation(&issuer, TokenKind::Access).with_max_age(Duration::from_secs(60)),
        fetch: settings(&running.root, Duration::from_secs(2), Duration::from_secs(600)),
    }])
    .unwrap();
    let token = &cases.get("es256").token;
    verifier.verify(token, cases.now).await.unwrap();
    // Seen again later: the cached verification is too old by then, then expired.
    let kind = |at: u64| {
        let verifier = &verifier;
        async move {
            match verifier.verify(token, cases.now + Duration::from_secs(at)).await {
                Ok(_) => "ok".to_owned(),
                Err(error) => error.kind().to_owned(),
            }
        }
    };
    assert_eq!(kind(20).await, "ok");
    assert_eq!(kind(120).await, "too_old");
    assert_eq!(kind(400).await, "expired");
    // A token first seen after it expired is refused, and refused again from the cache: the
    // key set was fetched once, and the answer stays the same.
    let late = &cases.get("rs256").token;
    for _ in 0..3 {
        let error = verifier.verify(late, cases.now + Duration::from_secs(400)).await.unwrap_err();
        assert_eq!(error.kind(), "expired");
    }
    assert_eq!(running.provider.hits("/a/jwks"), 1);
    running.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_provider_is_down_cached_keys_serve_until_their_maximum_age() {
    let running = start_provider().await;
    let issuer = format!("{}/a", running.base);
    let dir = common::temp_dir("oidc-outage");
    let cases = common::make(&issuer, "https://unused.example/b", &dir);
    running
        .provider
        .set("/a/.well-known/openid-configuration", discovery(&issuer, &format!("{}/a/jwks", running.base)));
    running.provider.set("/a/jwks", cases.file("jwks.json"));
    let max_age = Duration::from_secs(3);
    let verifier = verifier(&[(&issuer, settings(&running.root, Duration::from_millis(500), max_age))]);
    let results = verifier.refresh_all().await;
    assert_eq!(results[0].1.as_ref().unwrap(), &6);
    let fetched = std::time::Instant::now();

    running.server.abort();
    let _ = running.server.await;
    // The provider is unreachable; tokens never seen before still verify with the cached keys.
    verifier.verify(&cases.get("es256").token, cases.now).await.unwrap();
    verifier.verify(&cases.get("eddsa").token, cases.now).await.unwrap();
    assert_eq!(verifier.status()[0].keys, 6);

    tokio::time::sleep(max_age.saturating_sub(fetched.elapsed()) + Duration::from_millis(300)).await;
    // Past the maximum age, nothing of this issuer is accepted, cached verifications included.
    for name in ["rs256", "es256", "ps256"] {
        let error = verifier.verify(&cases.get(name).token, cases.now).await.unwrap_err();
        assert_eq!(error.kind(), "keys_unavailable", "{name}: {error}");
    }
    assert_eq!(verifier.status()[0].keys, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_document_for_another_issuer_or_an_untrusted_certificate_is_not_ready() {
    let running = start_provider().await;
    let issuer = format!("{}/a", running.base);
    let dir = common::temp_dir("oidc-mismatch");
    let cases = common::make(&issuer, "https://unused.example/b", &dir);
    // The document claims an issuer that differs only by a trailing slash.
    running.provider.set(
        "/a/.well-known/openid-configuration",
        discovery(&format!("{issuer}/"), &format!("{}/a/jwks", running.base)),
    );
    running.provider.set("/a/jwks", cases.file("jwks.json"));
    let fetch = settings(&running.root, Duration::from_millis(100), Duration::from_secs(60));
    let mismatched = verifier(&[(&issuer, fetch)]);
    let results = mismatched.refresh_all().await;
    assert!(results[0].1.as_ref().unwrap_err().to_string().contains("another issuer"), "{results:?}");
    let error = mismatched.verify(&cases.get("rs256").token, cases.now).await.unwrap_err();
    assert_eq!(error.kind(), "keys_unavailable");
    assert_eq!(running.provider.hits("/a/jwks"), 0, "no keys are fetched from an issuer that does not match");

    // Without the provider's CA, TLS fails and nothing is trusted.
    let untrusted = verifier(&[(&issuer, FetchSettings::default())]);
    let results = untrusted.refresh_all().await;
    assert!(results[0].1.as_ref().unwrap_err().to_string().contains("TLS"), "{results:?}");
    running.server.abort();
}

#[test]
fn plain_http_and_duplicate_issuers_are_configuration_errors() {
    let plain = IssuerConfig {
        validation: common::validation("http://idp.example", TokenKind::Access),
        fetch: FetchSettings::default(),
    };
    assert!(OidcVerifier::new(vec![plain]).is_err());
    let jwks_http = IssuerConfig {
        validation: common::validation("https://idp.example", TokenKind::Access),
        fetch: FetchSettings { jwks_uri: Some("http://idp.example/jwks".into()), ..FetchSettings::default() },
    };
    assert!(OidcVerifier::new(vec![jwks_http]).is_err());
    let one = IssuerConfig {
        validation: common::validation("https://idp.example", TokenKind::Access),
        fetch: FetchSettings::default(),
    };
    assert!(OidcVerifier::new(vec![one.clone(), one]).unwrap_err().to_string().contains("twice"));
}
