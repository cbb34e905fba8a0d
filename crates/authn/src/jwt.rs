//! Verifying signed JSON Web Tokens (RFC 7519, JWS compact form of RFC 7515) the way RFC 8725
//! asks of a consumer. Pure code over the token, a key set and `now`; fetching keys is
//! [`crate::oidc`]'s job.
//!
//! What is checked, in order, before any claim is believed:
//! - size (at most [`MAX_TOKEN_BYTES`]), exactly three parts, strict unpadded base64url;
//! - header and claims are UTF-8 JSON objects without duplicate members;
//! - `alg` is on the issuer's allow-list (so `none`, any spelling, and every HMAC algorithm are
//!   refused); `crit`, `zip`, `enc`, `b64`, and embedded or remote keys (`jwk`, `jku`, `x5c`, `x5u`)
//!   are refused; a nested token (`cty: JWT`) is refused;
//! - explicit typing: an access token must say `typ: at+jwt` (RFC 9068) and carry no `nonce`; an
//!   ID token must not say `at+jwt`; a logout token (`events`) is neither;
//! - the key is looked up by (`kid`, `alg`) in memory only, and each key verifies with exactly
//!   one algorithm, so an RSA key never checks an ES256 signature and no key is ever an HMAC
//!   secret;
//! - the signature, with aws-lc-rs;
//! - `iss` exactly equal to the configured issuer; `aud` present and naming one of ours (for ID
//!   tokens: only ours, with `azp` when there are several); `sub` present; `exp` required, `nbf`
//!   and `iat` honoured, all with a leeway of at most [`MAX_LEEWAY`].

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents, VerificationAlgorithm};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// The largest token accepted, in bytes: real tokens are a few KiB; a bigger one is refused before
/// it is decoded.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The largest clock leeway a [`Validation`] accepts.
pub const MAX_LEEWAY: Duration = Duration::from_secs(30);
/// The longest `kid` looked up; longer ones are refused without a lookup.
const MAX_KID_BYTES: usize = 256;

/// A JWS signature algorithm zerogate verifies. HMAC (`HS*`) and `none` are deliberately absent:
/// a gateway that verifies tokens of an identity provider only ever holds public keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// Every algorithm, in the order they are listed to users.
    pub const ALL: [Algorithm; 9] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
    ];

    /// The algorithm named exactly `name` (JOSE names are case-sensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }

    fn is_rsa(self) -> bool {
        matches!(self, Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 | Self::PS384 | Self::PS512)
    }

    fn rsa_parameters(self) -> Option<&'static signature::RsaParameters> {
        Some(match self {
            Self::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Self::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            Self::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
            Self::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
            _ => return None,
        })
    }

    fn ec_verification(self) -> Option<(&'static dyn VerificationAlgorithm, &'static str, usize)> {
        match self {
            Self::ES256 => Some((&signature::ECDSA_P256_SHA256_FIXED, "P-256", 32)),
            Self::ES384 => Some((&signature::ECDSA_P384_SHA384_FIXED, "P-384", 48)),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which kind of JWT an issuer's tokens are accepted as. The rules are mutually exclusive
/// (RFC 8725 §3.12), so a token of one kind can never pass as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// OAuth 2.0 access tokens in the RFC 9068 profile: `typ: at+jwt`, no `nonce`.
    Access,
    /// OpenID Connect ID tokens presented as bearer credentials: `typ` absent or `JWT`, every
    /// audience trusted.
    Id,
}

/// Why a token is refused. The variants are stable categories for audit records and metrics;
/// the messages never quote the token or attacker-chosen values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of bounded size (including JWE's five parts).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header or claims are not a UTF-8 JSON object without duplicate members.
    #[error("malformed token {0}: not a JSON object with unique members")]
    BadJson(&'static str),
    /// `alg` is missing, not a string, or not on this issuer's allow-list (`none` included).
    #[error("signature algorithm is not allowed for this issuer")]
    AlgorithmNotAllowed,
    /// A header parameter zerogate refuses (`crit`, `zip`, embedded keys, nested tokens, …).
    #[error("header parameter `{0}` is not accepted")]
    ForbiddenHeader(&'static str),
    /// The token's `typ` does not match the kind of token this issuer is configured for.
    #[error("token type does not match: {0}")]
    WrongType(&'static str),
    /// No key of this issuer has the token's `kid` and `alg`.
    #[error("no key of this issuer matches the token's key id and algorithm")]
    UnknownKey,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// `iss` is missing or not exactly the configured issuer.
    #[error("issuer does not match")]
    WrongIssuer,
    /// `aud` is missing, empty, or names none of (or not only) our audiences.
    #[error("audience does not match: {0}")]
    WrongAudience(&'static str),
    /// `exp` is in the past (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iat` is older than the configured maximum age.
    #[error("token was issued too long ago")]
    TooOld,
    /// A required claim is missing or has the wrong type.
    #[error("claim `{0}` is missing or malformed")]
    BadClaim(&'static str),
}

impl JwtError {
    /// A short, stable name of the refusal, for audit records and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::BadJson(_) => "bad_json",
            Self::AlgorithmNotAllowed => "alg_not_allowed",
            Self::ForbiddenHeader(_) => "forbidden_header",
            Self::WrongType(_) => "wrong_type",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience(_) => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::TooOld => "too_old",
            Self::BadClaim(_) => "bad_claim",
        }
    }
}

/// What a token of one issuer must satisfy. Built with [`Validation::new`], which refuses settings
/// that would weaken verification.
#[derive(Debug, Clone)]
pub struct Validation {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    kind: TokenKind,
    leeway: Duration,
    max_age: Option<Duration>,
    groups_claim: String,
}

/// A [`Validation`] that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The issuer is empty.
    #[error("issuer must not be empty")]
    EmptyIssuer,
    /// No audience, or an empty one.
    #[error("at least one non-empty audience is required")]
    NoAudience,
    /// No algorithm allowed.
    #[error("at least one signature algorithm must be allowed")]
    NoAlgorithm,
    /// Leeway above [`MAX_LEEWAY`].
    #[error("leeway of {0:?} is above the maximum of 30 s")]
    LeewayTooLarge(Duration),
}

impl Validation {
    /// Tokens from `issuer` (compared exactly), for one of `audiences`, signed with one of
    /// `algorithms`, of `kind`. Leeway starts at 30 s, no maximum age, groups from `groups`.
    pub fn new(
        issuer: impl Into<String>,
        audiences: Vec<String>,
        algorithms: Vec<Algorithm>,
        kind: TokenKind,
    ) -> Result<Self, ValidationError> {
        let issuer = issuer.into();
        if issuer.is_empty() {
            return Err(ValidationError::EmptyIssuer);
        }
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            return Err(ValidationError::NoAudience);
        }
        if algorithms.is_empty() {
            return Err(ValidationError::NoAlgorithm);
        }
        Ok(Self {
            issuer,
            audiences,
            algorithms,
            kind,
            leeway: MAX_LEEWAY,
            max_age: None,
            groups_claim: "groups".to_owned(),
        })
    }

    /// Sets the clock leeway for `exp`, `nbf` and `iat` (at most [`MAX_LEEWAY`]).
    pub fn with_leeway(mut self, leeway: Duration) -> Result<Self, ValidationError> {
        if leeway > MAX_LEEWAY {
            return Err(ValidationError::LeewayTooLarge(leeway));
        }
        self.leeway = leeway;
        Ok(self)
    }

    /// Refuses tokens whose `iat` is older than `max_age` (and then requires `iat`).
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Reads group names from `claim` (an array of strings) instead of `groups`.
    pub fn with_groups_claim(mut self, claim: impl Into<String>) -> Self {
        self.groups_claim = claim.into();
        self
    }

    /// The issuer, exactly as configured.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The allowed algorithms.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// The clock leeway.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }
}

/// One verification key of an issuer, bound to exactly one algorithm.
struct Key {
    algorithm: Algorithm,
    public: ParsedPublicKey,
}

/// An issuer's verification keys, from its JWKS document, indexed by (`kid`, `alg`).
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<(String, Algorithm), Key>,
    /// Keys published without a `kid`: usable only by tokens without one, and only while they
    /// are the single key of the token's algorithm.
    without_kid: Vec<Key>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<String> = self.by_kid.keys().map(|(kid, alg)| format!("{kid}/{alg}")).collect();
        kids.sort();
        f.debug_struct("KeySet").field("keys", &kids).field("without_kid", &self.without_kid.len()).finish()
    }
}

/// A JWKS document that cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not JSON, or no `keys` array.
    #[error("JWKS document is not a JSON object with a `keys` array")]
    NotJwks,
    /// No key in the document can verify any allowed algorithm.
    #[error("JWKS document has no usable signing key ({skipped} skipped)")]
    NoUsableKey {
        /// How many keys were skipped.
        skipped: usize,
    },
}

impl KeySet {
    /// Parses a JWKS document (RFC 7517), keeping the signing keys usable with one of
    /// `allowed` algorithms. Each key is bound to one algorithm: its `alg` when present; for EC
    /// and OKP keys the one their curve implies; for RSA keys without `alg`, the first RSA
    /// algorithm on the allow-list. Keys that cannot be used (encryption keys, symmetric keys,
    /// unknown curves, RSA below 2048 bits, malformed values) are skipped and described in the
    /// returned list; a document with no usable key is an error.
    pub fn from_jwks(document: &[u8], allowed: &[Algorithm]) -> Result<(Self, Vec<String>), JwksError> {
        let value: Value = serde_json::from_slice(document).map_err(|_| JwksError::NotJwks)?;
        let keys = value.get("keys").and_then(Value::as_array).ok_or(JwksError::NotJwks)?;
        let mut set = KeySet::default();
        let mut skipped = Vec::new();
        let mut duplicates = Vec::new();
        for (index, jwk) in keys.iter().enumerate() {
            match parse_jwk(jwk, allowed) {
                Ok((Some(kid), key)) => {
                    let id = (kid, key.algorithm);
                    match set.by_kid.entry(id) {
                        std::collections::hash_map::Entry::Occupied(entry) => duplicates.push(entry.key().clone()),
                        std::collections::hash_map::Entry::Vacant(entry) => {
                            entry.insert(key);
                        }
                    }
                }
                Ok((None, key)) => set.without_kid.push(key),
                Err(reason) => skipped.push(format!("key {index}: {reason}")),
            }
        }
        for id in duplicates {
            // Two keys claim the same id: neither can be trusted to be the one meant.
            set.by_kid.remove(&id);
            skipped.push(format!("kid `{}` with {} is published twice; both ignored", id.0, id.1));
        }
        if set.is_empty() {
            return Err(JwksError::NoUsableKey { skipped: skipped.len() });
        }
        Ok((set, skipped))
    }

    /// True if no key is usable.
    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty() && self.without_kid.is_empty()
    }

    /// The number of usable keys.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }

    /// True if a key with this `kid` exists for `alg` (the lookup never does IO).
    pub fn has(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        self.find(kid, alg).is_some()
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&Key> {
        match kid {
            Some(kid) => self.by_kid.get(&(kid.to_owned(), alg)),
            None => {
                let mut candidates = self.without_kid.iter().filter(|key| key.algorithm == alg);
                let only = candidates.next();
                if candidates.next().is_some() { None } else { only }
            }
        }
    }
}

fn parse_jwk(jwk: &Value, allowed: &[Algorithm]) -> Result<(Option<String>, Key), String> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) if kid.len() <= MAX_KID_BYTES => Some(kid.clone()),
        Some(_) => return Err("`kid` is not a string of at most 256 bytes".into()),
    };
    if jwk.get("use").is_some_and(|usage| usage.as_str() != Some("sig")) {
        return Err("not a signing key (`use` is not `sig`)".into());
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops.as_array().is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("`key_ops` does not include `verify`".into());
        }
    }
    let kty = field("kty").ok_or("no `kty`")?;
    let declared = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => {
            Some(Algorithm::from_name(name).ok_or_else(|| format!("algorithm `{name}` is not supported"))?)
        }
        Some(_) => return Err("`alg` is not a string".into()),
    };
    let algorithm = match (kty, declared) {
        ("RSA", Some(alg)) if alg.is_rsa() => alg,
        ("RSA", None) => {
            allowed.iter().copied().find(|alg| alg.is_rsa()).ok_or("RSA key, but no RSA algorithm is allowed")?
        }
        ("EC", Some(alg)) if alg.ec_verification().is_some() => alg,
        ("EC", None) => match field("crv") {
            Some("P-256") => Algorithm::ES256,
            Some("P-384") => Algorithm::ES384,
            _ => return Err("EC key on an unsupported curve".into()),
        },
        ("OKP", None | Some(Algorithm::EdDSA)) => Algorithm::EdDSA,
        ("oct", _) => return Err("symmetric (`oct`) keys are never accepted".into()),
        (kty, Some(alg)) => return Err(format!("`alg` {alg} does not fit a `{kty}` key")),
        (kty, None) => return Err(format!("key type `{kty}` is not supported")),
    };
    if !allowed.contains(&algorithm) {
        return Err(format!("algorithm {algorithm} is not allowed for this issuer"));
    }
    let decode = |name: &str| -> Result<Vec<u8>, String> {
        let text = field(name).ok_or_else(|| format!("no `{name}`"))?;
        URL_SAFE_NO_PAD.decode(text).map_err(|_| format!("`{name}` is not base64url"))
    };
    let public = if let Some(params) = algorithm.rsa_parameters() {
        let n = decode("n")?;
        let e = decode("e")?;
        if n.first() == Some(&0) || e.first() == Some(&0) {
            return Err("RSA `n` or `e` has a leading zero".into());
        }
        if n.len() < 256 {
            return Err(format!("RSA key of {} bits is below 2048", n.len() * 8));
        }
        RsaPublicKeyComponents { n: &n, e: &e }
            .to_parsed_public_key(params)
            .map_err(|_| "RSA key is invalid".to_owned())?
    } else if let Some((verification, curve, size)) = algorithm.ec_verification() {
        if field("crv") != Some(curve) {
            return Err(format!("{algorithm} needs curve {curve}"));
        }
        let (x, y) = (decode("x")?, decode("y")?);
        if x.len() != size || y.len() != size {
            return Err("EC coordinates have the wrong length".into());
        }
        let mut point = Vec::with_capacity(1 + 2 * size);
        point.push(4);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        ParsedPublicKey::new(verification, point).map_err(|_| "EC point is not on the curve".to_owned())?
    } else {
        if field("crv") != Some("Ed25519") {
            return Err("OKP key on a curve other than Ed25519".into());
        }
        let x = decode("x")?;
        ParsedPublicKey::new(&signature::ED25519, x).map_err(|_| "Ed25519 key is invalid".to_owned())?
    };
    Ok((kid, Key { algorithm, public }))
}

/// A JSON object whose members are unique (serde_json alone keeps the last of duplicates, and
/// two parsers disagreeing on which one counts is how a forged claim gets through).
struct UniqueObject(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueObject, A::Error> {
                let mut members: Vec<(String, Value)> = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    if members.iter().any(|(seen, _)| *seen == name) {
                        return Err(serde::de::Error::custom("duplicate member"));
                    }
                    members.push((name, value));
                }
                Ok(UniqueObject(members))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

impl UniqueObject {
    fn parse(bytes: &[u8], what: &'static str) -> Result<Self, JwtError> {
        // from_slice checks UTF-8 and lone surrogates; check the whole input first so that bytes
        // outside strings are covered by the same rule.
        std::str::from_utf8(bytes).map_err(|_| JwtError::BadJson(what))?;
        serde_json::from_slice(bytes).map_err(|_| JwtError::BadJson(what))
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(member, _)| member == name).map(|(_, value)| value)
    }

    fn string(&self, name: &'static str) -> Result<Option<&str>, JwtError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(JwtError::BadClaim(name)),
        }
    }

    fn date(&self, name: &'static str) -> Result<Option<f64>, JwtError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(number)) => {
                number.as_f64().filter(|n| n.is_finite()).map(Some).ok_or(JwtError::BadClaim(name))
            }
            Some(_) => Err(JwtError::BadClaim(name)),
        }
    }

    /// A string or an array of strings, as a list; `label` names the claim in the error.
    fn strings(&self, name: &str, label: &'static str) -> Result<Vec<String>, JwtError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::String(one)) => Ok(vec![one.clone()]),
            Some(Value::Array(items)) => {
                items.iter().map(|item| item.as_str().map(str::to_owned).ok_or(JwtError::BadClaim(label))).collect()
            }
            Some(_) => Err(JwtError::BadClaim(label)),
        }
    }
}

/// A token split and decoded, not yet trusted: only its routing facts (issuer, key id, algorithm
/// name) may be read, to pick the issuer and its keys.
pub struct UnverifiedToken<'a> {
    signing_input: &'a str,
    signature: Vec<u8>,
    header: UniqueObject,
    claims: UniqueObject,
}

impl<'a> UnverifiedToken<'a> {
    /// Splits and decodes `token` (no signature check yet).
    pub fn parse(token: &'a str) -> Result<Self, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed("token is too large"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("not three dot-separated parts (encrypted tokens are not accepted)"));
        };
        let decode = |part: &str, what| URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Malformed(what));
        let header_bytes = decode(header, "header is not base64url")?;
        let claims_bytes = decode(claims, "claims are not base64url")?;
        let signature = decode(signature, "signature is not base64url")?;
        let signing_input = token.get(..header.len() + 1 + claims.len()).ok_or(JwtError::Malformed("bad split"))?;
        Ok(Self {
            signing_input,
            signature,
            header: UniqueObject::parse(&header_bytes, "header")?,
            claims: UniqueObject::parse(&claims_bytes, "claims")?,
        })
    }

    /// The `iss` claim, unverified: used only to choose which issuer's rules apply.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// The `kid` header, unverified, if it is a string of reasonable length.
    pub fn key_id(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str).filter(|kid| kid.len() <= MAX_KID_BYTES)
    }

    /// The `alg` header if it is one zerogate verifies at all.
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.header.get("alg").and_then(Value::as_str).and_then(Algorithm::from_name)
    }

    /// Checks the header against `validation` without keys: everything that does not need the
    /// key set, so a bad token never causes a key refetch.
    pub fn check_header(&self, validation: &Validation) -> Result<Algorithm, JwtError> {
        let alg = match self.header.get("alg") {
            Some(Value::String(name)) => Algorithm::from_name(name).filter(|alg| validation.algorithms.contains(alg)),
            _ => None,
        }
        .ok_or(JwtError::AlgorithmNotAllowed)?;
        for (name, label) in FORBIDDEN_HEADERS {
            if self.header.get(name).is_some() {
                return Err(JwtError::ForbiddenHeader(label));
            }
        }
        match self.header.get("kid") {
            None => {}
            Some(Value::String(kid)) if kid.len() <= MAX_KID_BYTES => {}
            Some(_) => return Err(JwtError::UnknownKey),
        }
        if let Some(cty) = self.header.get("cty") {
            let nested = cty.as_str().is_none_or(|cty| cty.eq_ignore_ascii_case("JWT"));
            if nested {
                return Err(JwtError::ForbiddenHeader("cty"));
            }
        }
        let typ = match self.header.get("typ") {
            None => None,
            Some(Value::String(typ)) => Some(typ.to_ascii_lowercase()),
            Some(_) => return Err(JwtError::WrongType("`typ` is not a string")),
        };
        match (validation.kind, typ.as_deref()) {
            (TokenKind::Access, Some("at+jwt" | "application/at+jwt")) => {}
            (TokenKind::Access, _) => return Err(JwtError::WrongType("an access token must have `typ: at+jwt`")),
            (TokenKind::Id, None | Some("jwt" | "application/jwt")) => {}
            (TokenKind::Id, Some(_)) => return Err(JwtError::WrongType("an ID token must have `typ` absent or `JWT`")),
        }
        Ok(alg)
    }

    /// Verifies the token completely: header rules, key, signature, then claims at `now`.
    pub fn verify(&self, keys: &KeySet, validation: &Validation, now: SystemTime) -> Result<VerifiedToken, JwtError> {
        let verified = self.verify_untimed(keys, validation)?;
        verified.check_validity(now, validation)?;
        Ok(verified)
    }

    /// Everything that does not depend on the time: header rules, key, signature, claims. The
    /// result still has to pass [`VerifiedToken::check_validity`] at the time of each use; it
    /// can be cached, an expired token too, so that presenting it again costs no signature check.
    pub fn verify_untimed(&self, keys: &KeySet, validation: &Validation) -> Result<VerifiedToken, JwtError> {
        let alg = self.check_header(validation)?;
        let key_id = self.key_id();
        let key = keys.find(key_id, alg).ok_or(JwtError::UnknownKey)?;
        if key.algorithm != alg {
            return Err(JwtError::UnknownKey);
        }
        key.public.verify_sig(self.signing_input.as_bytes(), &self.signature).map_err(|_| JwtError::BadSignature)?;
        self.check_claims(validation, alg, key_id)
    }

    fn check_claims(
        &self,
        validation: &Validation,
        alg: Algorithm,
        key_id: Option<&str>,
    ) -> Result<VerifiedToken, JwtError> {
        let claims = &self.claims;
        if claims.string("iss").map_err(|_| JwtError::WrongIssuer)? != Some(validation.issuer.as_str()) {
            return Err(JwtError::WrongIssuer);
        }
        let audiences = claims
            .strings("aud", "aud")
            .map_err(|_| JwtError::WrongAudience("`aud` is not a string or an array of strings"))?;
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            return Err(JwtError::WrongAudience("`aud` is missing or empty"));
        }
        let audience = audiences
            .iter()
            .find(|aud| validation.audiences.contains(aud))
            .cloned()
            .ok_or(JwtError::WrongAudience("no audience of this gateway"))?;
        if claims.get("events").is_some() {
            return Err(JwtError::WrongType("a logout token is not a credential"));
        }
        match validation.kind {
            TokenKind::Access => {
                if claims.get("nonce").is_some() {
                    return Err(JwtError::WrongType("an access token carries no `nonce`"));
                }
            }
            TokenKind::Id => {
                if audiences.iter().any(|aud| !validation.audiences.contains(aud)) {
                    return Err(JwtError::WrongAudience("an ID token names an audience this gateway does not trust"));
                }
                if audiences.len() > 1 {
                    let azp = claims.string("azp")?.ok_or(JwtError::BadClaim("azp"))?;
                    if !validation.audiences.iter().any(|aud| aud == azp) {
                        return Err(JwtError::BadClaim("azp"));
                    }
                }
            }
        }
        let subject = claims.string("sub")?.filter(|sub| !sub.is_empty()).ok_or(JwtError::BadClaim("sub"))?;
        let expires_at = claims.date("exp")?.ok_or(JwtError::BadClaim("exp"))?;
        let issued_at = claims.date("iat")?;
        if validation.max_age.is_some() && issued_at.is_none() {
            return Err(JwtError::BadClaim("iat"));
        }
        let groups = claims.strings(&validation.groups_claim, "groups")?;
        Ok(VerifiedToken {
            issuer: validation.issuer.clone(),
            subject: subject.to_owned(),
            audience,
            token_id: claims.string("jti")?.map(str::to_owned),
            session_id: claims.string("sid")?.map(str::to_owned),
            client_id: claims.string("client_id")?.or(claims.string("azp")?).map(str::to_owned),
            email: claims.string("email")?.map(str::to_owned),
            groups,
            acr: claims.string("acr")?.map(str::to_owned),
            amr: claims.strings("amr", "amr")?,
            expires_at,
            not_before: claims.date("nbf")?,
            issued_at,
            key_id: key_id.map(str::to_owned),
            algorithm: alg,
        })
    }
}

const FORBIDDEN_HEADERS: [(&str, &str); 8] = [
    ("crit", "crit"),
    ("zip", "zip"),
    ("enc", "enc"),
    ("b64", "b64"),
    ("jwk", "jwk"),
    ("jku", "jku"),
    ("x5c", "x5c"),
    ("x5u", "x5u"),
];

fn seconds(time: SystemTime) -> f64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// A token that verified: the facts an authorization decision and an audit record use.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// `iss`, equal to the configured issuer.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// The audience of ours that the token names.
    pub audience: String,
    /// `jti`: the revocation key of this token, when the issuer sets one.
    pub token_id: Option<String>,
    /// `sid`: the session, for back-channel logout.
    pub session_id: Option<String>,
    /// `client_id` (RFC 9068) or `azp`.
    pub client_id: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// Group names from the configured groups claim.
    pub groups: Vec<String>,
    /// `acr`.
    pub acr: Option<String>,
    /// `amr`.
    pub amr: Vec<String>,
    /// `exp`, in seconds since the epoch.
    pub expires_at: f64,
    /// `nbf`.
    pub not_before: Option<f64>,
    /// `iat`.
    pub issued_at: Option<f64>,
    /// The `kid` of the key that verified it.
    pub key_id: Option<String>,
    /// The algorithm that verified it.
    pub algorithm: Algorithm,
}

impl VerifiedToken {
    /// Re-checks `exp`, `nbf` and `iat` at `now` (a cached verification is still subject to time).
    pub fn check_time(&self, now: SystemTime, leeway: Duration) -> Result<(), JwtError> {
        let now = seconds(now);
        let leeway = leeway.as_secs_f64();
        if now >= self.expires_at + leeway {
            return Err(JwtError::Expired);
        }
        if self.not_before.is_some_and(|nbf| nbf > now + leeway) || self.issued_at.is_some_and(|iat| iat > now + leeway)
        {
            return Err(JwtError::NotYetValid);
        }
        Ok(())
    }

    /// Everything time-bound at `now`: `exp`, `nbf`, `iat` with the leeway, and the maximum age
    /// since `iat` if the validation sets one.
    pub fn check_validity(&self, now: SystemTime, validation: &Validation) -> Result<(), JwtError> {
        self.check_time(now, validation.leeway)?;
        if let (Some(max_age), Some(iat)) = (validation.max_age, self.issued_at)
            && seconds(now) - iat > (max_age + validation.leeway).as_secs_f64()
        {
            return Err(JwtError::TooOld);
        }
        Ok(())
    }

    /// The stable identifier of this credential for audit: the `jti`, else the session id, else
    /// the subject at its issuer.
    pub fn credential_id(&self) -> String {
        self.credential_ids().swap_remove(0)
    }

    /// Every id that names this credential, most specific first: `jti:…` and `sid:…` when the
    /// token carries them, and always `sub:…@issuer`. A revocation of any of them refuses the
    /// token: revoking a session (`sid`) reaches every token issued in it, whatever its `jti`.
    pub fn credential_ids(&self) -> Vec<String> {
        let mut ids = Vec::with_capacity(3);
        ids.extend(self.token_id.as_ref().map(|jti| format!("jti:{jti}")));
        ids.extend(self.session_id.as_ref().map(|sid| format!("sid:{sid}")));
        ids.push(format!("sub:{}@{}", self.subject, self.issuer));
        ids
    }
}
