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
