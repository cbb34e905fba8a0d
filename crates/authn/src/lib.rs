//! zerogate's authentication: each method turns a credential into an authenticated identity or a
//! clear refusal, and never authorizes. So far: AWS Signature Version 4 ([`sigv4`]), so that API
//! clients sign with the stock AWS SDKs and CLIs; mutual TLS peers are verified by
//! `zerogate-pki`'s `SvidVerifier`. Plain code over its inputs and `now`: no IO.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod sigv4;
