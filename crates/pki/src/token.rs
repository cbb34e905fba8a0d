//! One-time enrollment tokens. A token names one identity, works once, and only before its
//! expiry. The store keeps only a hash of its secret. The token also carries the SHA-256 of the
//! root certificate, so `zerogate enroll` can pin the server without a separate trust step.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::spiffe::SpiffeId;

const PREFIX: &str = "zgt1.";
const ID_LEN: usize = 16;
const SECRET_LEN: usize = 32;
const PIN_LEN: usize = 32;

/// Why a token is refused. The messages are safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a zerogate token.
    #[error("the token is malformed")]
    Malformed,
    /// No token with this id exists.
    #[error("the token is not known")]
    Unknown,
    /// The secret does not match.
    #[error("the token is not valid")]
    Forged,
    /// The token was used before.
    #[error("the token was already used")]
    AlreadyUsed,
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// Randomness failed.
    #[error("no randomness available")]
    Random,
}

/// A token as stored: everything except the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public id (hex).
    pub id: String,
    /// SHA-256 of the secret.
    pub secret_hash: Vec<u8>,
    /// The identity the token enrolls.
    pub spiffe_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; the token fails at and after this instant.
    pub expires_at: i64,
    /// When it was used, if it was.
    pub used_at: Option<i64>,
}

/// A token as a client presents it.
#[derive(Clone, PartialEq, Eq)]
pub struct PresentedToken {
    /// Public id (hex).
    pub id: String,
    secret: [u8; SECRET_LEN],
    /// SHA-256 of the root certificate that the server must chain to.
    pub root_fingerprint: [u8; PIN_LEN],
}

impl std::fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedToken").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Creates a token for `id`, valid for `ttl` seconds from `now`. Returns what to store and the
/// text to hand to the device (shown once).
pub fn create(
    id: &SpiffeId,
    ttl: u64,
    now: i64,
    root_fingerprint: [u8; 32],
) -> Result<(TokenRecord, String), TokenError> {
    let rng = SystemRandom::new();
    let mut raw = [0u8; ID_LEN + SECRET_LEN];
    rng.fill(&mut raw).map_err(|_| TokenError::Random)?;
    let (token_id, secret) = raw.split_at(ID_LEN);
    let mut wire = raw.to_vec();
    wire.extend_from_slice(&root_fingerprint);
    let record = TokenRecord {
        id: crate::hex(token_id),
        secret_hash: digest::digest(&digest::SHA256, secret).as_ref().to_vec(),
        spiffe_id: id.to_string(),
        created_at: now,
        expires_at: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        used_at: None,
    };
    Ok((record, format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(wire))))
}

/// Parses the text of a token.
pub fn parse(text: &str) -> Result<PresentedToken, TokenError> {
    let body = text.trim().strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    if body.len() > 200 {
        return Err(TokenError::Malformed);
    }
    let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| TokenError::Malformed)?;
    if raw.len() != ID_LEN + SECRET_LEN + PIN_LEN {
        return Err(TokenError::Malformed);
    }
    let (id, rest) = raw.split_at(ID_LEN);
    let (secret, pin) = rest.split_at(SECRET_LEN);
    Ok(PresentedToken {
        id: crate::hex(id),
        secret: secret.try_into().map_err(|_| TokenError::Malformed)?,
        root_fingerprint: pin.try_into().map_err(|_| TokenError::Malformed)?,
    })
}

/// Checks a presented token against its stored record at `now`: the secret first (in constant
/// time), then single use, then expiry. Returns the identity the token enrolls.
pub fn check(record: &TokenRecord, presented: &PresentedToken, now: i64) -> Result<SpiffeId, TokenError> {
    let hash = digest::digest(&digest::SHA256, &presented.secret);
    if record.id != presented.id || verify_slices_are_equal(hash.as_ref(), &record.secret_hash).is_err() {
        return Err(TokenError::Forged);
    }
    if record.used_at.is_some() {
        return Err(TokenError::AlreadyUsed);
    }
    if now >= record.expires_at {
        return Err(TokenError::Expired);
    }
    SpiffeId::parse(&record.spiffe_id).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SpiffeId {
        SpiffeId::parse("spiffe://example.org/device/laptop-42").unwrap()
    }

    #[test]
    fn life_of_a_token() {
        let (mut record, text) = create(&id(), 900, 1_000, [7; 32]).unwrap();
        let presented = parse(&text).unwrap();
        assert_eq!(presented.root_fingerprint, [7; 32]);
        assert_eq!(check(&record, &presented, 1_000).unwrap(), id());
        assert_eq!(check(&record, &presented, 1_899).unwrap(), id());
        assert_eq!(check(&record, &presented, 1_900), Err(TokenError::Expired));
        record.used_at = Some(1_100);
        assert_eq!(check(&record, &presented, 1_200), Err(TokenError::AlreadyUsed));
    }

    #[test]
    fn forged_and_malformed_tokens() {
        let (record, text) = create(&id(), 900, 1_000, [7; 32]).unwrap();
        let (_, other) = create(&id(), 900, 1_000, [7; 32]).unwrap();
        // Another token's secret under this token's id.
        let mut forged = parse(&other).unwrap();
        forged.id = record.id.clone();
        assert_eq!(check(&record, &forged, 1_000), Err(TokenError::Forged));
        for bad in ["", "zgt1.", "zgt2.AAAA", &text[..text.len() - 4], &format!("{text}AAAA"), &"zgt1.A".repeat(100)] {
            assert_eq!(parse(bad), Err(TokenError::Malformed), "{bad}");
        }
        assert!(!format!("{:?}", parse(&text).unwrap()).contains("secret"));
    }
}
