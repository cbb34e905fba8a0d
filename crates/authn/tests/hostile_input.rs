//! Hostile authentication input: the fuzz target's seed corpus (`fuzz/corpus/jwt`, tokens made
//! by PyJWT) replayed, with every truncation and every single-bit flip of each token: nothing
//! panics, the good seeds verify, and no altered token ever does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use zerogate_authn::jwt::{Algorithm, KeySet, TokenKind, UnverifiedToken, Validation};

/// When the seeds were made (`make_tokens.py 1795000000 https://idp.example.test/a …`).
const SEEDS_MADE_AT: u64 = 1_795_000_000;
const ISSUER: &str = "https://idp.example.test/a";

#[test]
fn seeds_and_their_mutations_never_panic_and_altered_tokens_never_verify() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/jwt");
    let jwks = std::fs::read(corpus.join("jwks.json")).unwrap();
    zerogate_authn::fuzz_input(&jwks);
    let allowed = vec![Algorithm::RS256, Algorithm::PS256, Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA];
    let (keys, _) = KeySet::from_jwks(&jwks, &allowed).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(SEEDS_MADE_AT);
    let validation = |kind| Validation::new(ISSUER, vec!["zerogate-gateway".into()], allowed.clone(), kind).unwrap();
    let verifies =
        |token: &str, kind| UnverifiedToken::parse(token).and_then(|t| t.verify(&keys, &validation(kind), now)).is_ok();

    let mut seeds = 0;
    let mut good = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jwt") {
            continue;
        }
        seeds += 1;
        let token = std::fs::read_to_string(&path).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let kind = if name.starts_with("id-") { TokenKind::Id } else { TokenKind::Access };
        zerogate_authn::fuzz_input(token.as_bytes());
        if !verifies(&token, kind) {
            continue;
        }
        good += 1;
        let bytes = token.as_bytes();
        for cut in 0..bytes.len() {
            let truncated = std::str::from_utf8(&bytes[..cut]).unwrap();
            zerogate_authn::fuzz_input(truncated.as_bytes());
            assert!(!verifies(truncated, kind), "{name} truncated to {cut} bytes verified");
        }
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.to_vec();
                flipped[index] ^= 1 << bit;
                zerogate_authn::fuzz_input(&flipped);
                if let Ok(text) = std::str::from_utf8(&flipped) {
                    assert!(!verifies(text, kind), "{name} with bit {bit} of byte {index} flipped verified");
                }
            }
        }
    }
    assert!(seeds >= 15, "seed corpus has {seeds} tokens");
    assert_eq!(good, 6, "the six good seeds (five algorithms and an ID token) verify");
}
