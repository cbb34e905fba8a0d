//! The identity the upstream receives: one signed, audience-bound, short-lived JWT per request
//! (ES256), in the `x-zerogate-identity` header, and the JWKS that verifies it. Upstreams trust
//! this header only; every identity header a client sent was stripped before it is added.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::header::HeaderValue;
use serde_json::json;
use zerogate_authn::identity::{Authenticated, Method, PrincipalKind};

/// The header that carries the assertion to the upstream.
pub const ASSERTION_HEADER: &str = "x-zerogate-identity";
/// How long an assertion is valid.
pub const ASSERTION_TTL_SECONDS: u64 = 60;

/// A signing key could not be made or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identity assertion key: {0}")]
pub struct AssertionKeyError(&'static str);

/// Signs identity assertions with the gateway's own P-256 key.
pub struct AssertionSigner {
    key: EcdsaKeyPair,
    key_id: String,
    issuer: String,
    rng: SystemRandom,
    /// Assertions already signed, by (principal, credential, groups, audience), with when they
    /// were issued: reused for half their lifetime, so a busy client costs one signature per
    /// 30 s instead of one per request.
    recent: Mutex<Recent>,
}

/// Principal, credential id, groups and audience: what an assertion says.
/// Assertions signed lately, by credential id: everything else an assertion says is compared
/// field by field, so a lookup borrows the caller's identity and allocates nothing.
type Recent = HashMap<String, Vec<RecentAssertion>>;

/// One signed assertion and what it was signed for.
struct RecentAssertion {
    kind: PrincipalKind,
    id: String,
    method: Method,
    groups: Vec<String>,
    audience: String,
    value: HeaderValue,
    issued: u64,
}

impl RecentAssertion {
    fn is_for(&self, who: &Authenticated, audience: &str) -> bool {
        self.kind == who.kind
            && self.method == who.method
            && self.id == who.id
            && self.groups == who.groups
            && self.audience == audience
    }
}

/// Signed assertions remembered at most.
const RECENT_CAPACITY: usize = 16 * 1024;

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner").field("key_id", &self.key_id).field("issuer", &self.issuer).finish()
    }
}

impl AssertionSigner {
    /// A new key (PKCS#8 DER returned alongside, for the data directory).
    pub fn generate(issuer: impl Into<String>) -> Result<(Self, Vec<u8>), AssertionKeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| AssertionKeyError("cannot generate a P-256 key"))?;
        let der = pkcs8.as_ref().to_vec();
        Ok((Self::from_pkcs8(issuer, &der)?, der))
    }

    /// The key stored as PKCS#8 DER.
    pub fn from_pkcs8(issuer: impl Into<String>, der: &[u8]) -> Result<Self, AssertionKeyError> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| AssertionKeyError("not a P-256 PKCS#8 key"))?;
        // The key id is a hash of the public key, so it changes when the key does.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().as_ref());
        let key_id = URL_SAFE_NO_PAD.encode(digest.as_ref().get(..12).unwrap_or_default());
        Ok(Self { key, key_id, issuer: issuer.into(), rng: SystemRandom::new(), recent: Mutex::default() })
    }

    /// The key id in the JWKS and in each assertion's header.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The JWKS (RFC 7517) that verifies assertions.
    pub fn jwks(&self) -> serde_json::Value {
        let point = self.key.public_key().as_ref();
        let (x, y) = (point.get(1..33).unwrap_or_default(), point.get(33..65).unwrap_or_default());
        json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.key_id,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]})
    }

    /// The assertion header for `who` at `audience`: one signed less than half its lifetime ago
    /// for the same principal, credential, groups and audience, else a new one.
    pub fn header_for(
        &self,
        who: &Authenticated,
        audience: &str,
        now: SystemTime,
    ) -> Result<HeaderValue, AssertionKeyError> {
        let seconds = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let fresh = |issued: u64| seconds >= issued && seconds - issued < ASSERTION_TTL_SECONDS / 2;
        if let Ok(recent) = self.recent.lock()
            && let Some(entry) = recent
                .get(who.credential_id.as_str())
                .and_then(|entries| entries.iter().find(|entry| entry.is_for(who, audience)))
            && fresh(entry.issued)
        {
            return Ok(entry.value.clone());
        }
        let token = self.sign(who, audience, now)?;
        let value = HeaderValue::from_str(&token).map_err(|_| AssertionKeyError("assertion is not a header value"))?;
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() >= RECENT_CAPACITY {
                recent.clear();
            }
            let entries = recent.entry(who.credential_id.clone()).or_default();
            entries.retain(|entry| !entry.is_for(who, audience) && fresh(entry.issued));
            entries.push(RecentAssertion {
                kind: who.kind,
                id: who.id.clone(),
                method: who.method,
                groups: who.groups.clone(),
                audience: audience.to_owned(),
                value: value.clone(),
                issued: seconds,
            });
        }
        Ok(value)
    }

    /// An assertion of `who` for the application `audience`, valid from `now` for
    /// [`ASSERTION_TTL_SECONDS`].
    pub fn sign(&self, who: &Authenticated, audience: &str, now: SystemTime) -> Result<String, AssertionKeyError> {
        let issued = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut nonce = [0u8; 12];
        self.rng.fill(&mut nonce).map_err(|_| AssertionKeyError("no randomness"))?;
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": self.key_id });
        let claims = json!({
            "iss": self.issuer,
            "aud": audience,
            "sub": who.id,
            "iat": issued,
            "nbf": issued,
            "exp": issued + ASSERTION_TTL_SECONDS,
            "jti": URL_SAFE_NO_PAD.encode(nonce),
            "principal": who.cedar_uid(),
            "kind": format!("{:?}", who.kind).to_lowercase(),
            "authn": who.method.as_str(),
            "credential_id": who.credential_id,
            "groups": who.groups,
        });
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = self.key.sign(&self.rng, input.as_bytes()).map_err(|_| AssertionKeyError("signing failed"))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())))
    }
}
