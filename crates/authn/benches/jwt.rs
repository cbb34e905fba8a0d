//! JWT verification: a full verification per algorithm (split, decode, header rules, signature,
//! claims) and the gateway's usual case, a token seen before (hash, cache lookup, clock check).
//! Tokens are signed here with aws-lc-rs; their correctness against an independent library is the
//! job of the tests. Run: `cargo bench -p zerogate-authn --bench jwt`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_main};
use zerogate_authn::jwt::{Algorithm, KeySet, TokenKind, UnverifiedToken, Validation};
use zerogate_authn::oidc::{FetchSettings, IssuerConfig, OidcVerifier};

const ISSUER: &str = "https://idp.example.test";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn signing_input(alg: &str, kid: &str, now: u64) -> String {
    let header = serde_json::json!({"alg": alg, "typ": "at+jwt", "kid": kid});
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": "gateway", "sub": "alice@example.com", "exp": now + 3600, "iat": now,
        "jti": "8f1d2c3b-4a5e-6f70-8192-a3b4c5d6e7f8", "client_id": "cli", "groups": ["engineering", "oncall"],
        "scope": "openid profile email",
    });
    format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()))
}

fn bench(c: &mut Criterion) {
    let now_secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let now = UNIX_EPOCH + Duration::from_secs(now_secs);
    let rng = SystemRandom::new();

    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let input = signing_input("RS256", "rsa-1", now_secs);
    let mut sig = vec![0; rsa.public_modulus_len()];
    rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig).unwrap();
    let rs256 = format!("{input}.{}", b64(&sig));
    let public = rsa.public_key();
    let rsa_jwk = serde_json::json!({"kty": "RSA", "kid": "rsa-1", "alg": "RS256",
        "n": b64(public.modulus().big_endian_without_leading_zero()),
        "e": b64(public.exponent().big_endian_without_leading_zero())});

    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let input = signing_input("ES256", "ec-1", now_secs);
    let es256 = format!("{input}.{}", b64(ec.sign(&rng, input.as_bytes()).unwrap().as_ref()));
    let point = ec.public_key().as_ref();
    let ec_jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "ec-1",
        "x": b64(&point[1..33]), "y": b64(&point[33..65])});

    let ed = Ed25519KeyPair::generate().unwrap();
    let input = signing_input("EdDSA", "ed-1", now_secs);
    let eddsa = format!("{input}.{}", b64(ed.sign(input.as_bytes()).as_ref()));
    let ed_jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": b64(ed.public_key().as_ref())});

    let jwks = serde_json::to_vec(&serde_json::json!({"keys": [rsa_jwk, ec_jwk, ed_jwk]})).unwrap();
    let allowed = vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
    let (keys, _) = KeySet::from_jwks(&jwks, &allowed).unwrap();
    let validation = Validation::new(ISSUER, vec!["gateway".into()], allowed, TokenKind::Access).unwrap();

    for (name, token) in [("RS256", &rs256), ("ES256", &es256), ("EdDSA", &eddsa)] {
        UnverifiedToken::parse(token).unwrap().verify(&keys, &validation, now).unwrap();
        c.bench_function(&format!("jwt full verification {name}"), |b| {
            b.iter(|| UnverifiedToken::parse(token).unwrap().verify(&keys, &validation, now).unwrap())
        });
    }

    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let fetch = FetchSettings { static_jwks: Some(jwks), ..FetchSettings::default() };
    let verifier = OidcVerifier::new(vec![IssuerConfig { validation, fetch }]).unwrap();
    runtime.block_on(verifier.verify(&rs256, now)).unwrap();
    c.bench_function("jwt cached verification (token seen before)", |b| {
        b.iter(|| runtime.block_on(verifier.verify(&rs256, now)).unwrap())
    });
}

fn benches() {
    let mut criterion = Criterion::default().configure_from_args().measurement_time(Duration::from_secs(3));
    bench(&mut criterion);
}

criterion_main!(benches);
