//! zerogate's authentication: each method turns a credential into an authenticated identity or a
//! clear refusal, and never authorizes. AWS Signature Version 4 ([`sigv4`]), so that API clients
//! sign with the stock AWS SDKs and CLIs; signed JWTs checked as RFC 8725 asks ([`jwt`], pure
//! code over the token, keys and `now`) with keys fetched from OpenID Connect providers
//! ([`oidc`], the only part that does IO); client certificates verified by `zerogate-pki`'s
//! `SvidVerifier`. Each ends in one [`identity::Authenticated`] shape, and revocation is keyed on
//! stable identifiers.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod identity;
pub mod jwt;
pub mod oidc;
pub mod sigv4;

/// The fuzz target's body (`fuzz/fuzz_targets/jwt.rs`), also replayed by the tests: every parser
/// of untrusted authentication input must refuse bad input without panicking.
pub fn fuzz_input(data: &[u8]) {
    use jwt::{Algorithm, KeySet, TokenKind, UnverifiedToken, Validation};
    // The generator point of P-256: a valid key that verifies nothing the fuzzer makes.
    const JWKS: &[u8] = br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY","y":"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"}]}"#;
    let _ = KeySet::from_jwks(data, &Algorithm::ALL);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok((keys, _)) = KeySet::from_jwks(JWKS, &Algorithm::ALL) else { return };
    for kind in [TokenKind::Access, TokenKind::Id] {
        let Ok(validation) = Validation::new("https://idp.example", vec!["gw".into()], Algorithm::ALL.to_vec(), kind)
        else {
            return;
        };
        if let Ok(token) = UnverifiedToken::parse(text) {
            let _ = token.issuer();
            let _ = token.check_header(&validation);
            let _ = token.verify(&keys, &validation, std::time::SystemTime::UNIX_EPOCH);
        }
    }
}
