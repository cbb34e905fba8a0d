//! Access keys for API clients that sign requests with AWS Signature Version 4, so the stock AWS
//! SDKs and CLIs work as clients: an id shaped like AWS's (20 characters, `AKZG` and 16 of
//! A-Z2-7) and a 40-character secret, both from the system's secure random generator.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

/// The prefix of zerogate's access key ids.
pub const PREFIX: &str = "AKZG";

/// A new (id, secret) pair, or `None` if the system has no randomness to give.
pub fn generate() -> Option<(String, String)> {
    let rng = SystemRandom::new();
    let mut id_bytes = [0u8; 16];
    let mut secret_bytes = [0u8; 30];
    rng.fill(&mut id_bytes).ok()?;
    rng.fill(&mut secret_bytes).ok()?;
    const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let id: String = std::iter::once(PREFIX.to_owned())
        .chain(
            id_bytes.iter().map(|b| char::from(BASE32.get(usize::from(b % 32)).copied().unwrap_or(b'A')).to_string()),
        )
        .collect();
    Some((id, STANDARD_NO_PAD.encode(secret_bytes)))
}

/// Whether `text` has the shape of a zerogate access key id.
pub fn is_access_key_id(text: &str) -> bool {
    text.len() == 20
        && text.starts_with(PREFIX)
        && text.bytes().skip(4).all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_aws_shape_and_differ() {
        let (id, secret) = generate().unwrap();
        assert!(is_access_key_id(&id), "{id}");
        assert_eq!(secret.len(), 40);
        assert_ne!(generate().unwrap().0, id);
        assert!(!is_access_key_id("AKIAIOSFODNN7EXAMPLE"));
    }
}
