//! The chain: how a line is hashed and how a checkpoint is signed and checked.

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 of a line (without its newline), as lowercase hex.
pub(crate) fn line_hash(line: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, line).as_ref())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let digit = |nibble: u8| char::from(if nibble < 10 { b'0' + nibble } else { b'a' + nibble - 10 });
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(digit(byte >> 4));
        text.push(digit(byte & 0x0f));
    }
    text
}

/// What a checkpoint signs: the position and hash of the chain's head, and when.
pub(crate) fn checkpoint_message(seq: u64, head: &str, at_ms: i64) -> Vec<u8> {
    format!("zerogate-audit-checkpoint/v1\n{seq}\n{head}\n{at_ms}").into_bytes()
}

/// The Ed25519 key that signs checkpoints.
pub struct CheckpointKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointKey").field("public", &self.public_key_b64()).finish_non_exhaustive()
    }
}

impl CheckpointKey {
    /// A new random key.
    pub fn generate() -> Result<Self, String> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|e| e.to_string())?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// A key from its PKCS#8 bytes.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
        Ok(Self { pair, pkcs8: pkcs8.to_vec() })
    }

    /// The PKCS#8 bytes, to store (owner-only).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key, base64: what `verify` needs.
    pub fn public_key_b64(&self) -> String {
        STANDARD.encode(self.pair.public_key().as_ref())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(self.pair.sign(message).as_ref())
    }
}

/// Checks a checkpoint signature with a base64 public key.
pub(crate) fn check_signature(public_b64: &str, message: &[u8], signature_b64: &str) -> bool {
    let (Ok(public), Ok(signature)) = (STANDARD.decode(public_b64), STANDARD.decode(signature_b64)) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, public).verify(message, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_hash_is_the_lowercase_hex_sha256_of_the_line() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(line_hash(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hex(&[0x00, 0x09, 0x0a, 0xf0, 0xff]), "00090af0ff");
    }
}
