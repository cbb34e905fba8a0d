//! zerogate's identity authority: a root and an intermediate CA that issue short-lived X.509-SVIDs
//! (certificates carrying one SPIFFE ID) to devices and workloads, one-time enrollment tokens,
//! revocation (a signed CRL and a list that gateways consult), trust bundles, and the one function
//! that turns a verified peer certificate into a SPIFFE ID ([`SvidVerifier::verify`]). Everything
//! here is plain code that takes `now` and returns results: no sockets, no clock reads, no files;
//! the store and the server do the IO.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod access_key;
pub mod bundle;
pub mod ca;
pub mod csr;
pub mod spiffe;
pub mod svid;
pub mod token;

pub use ca::{Authority, CaError, CaMaterial, Issued, Lifetimes, NewCa, Serial};
pub use csr::{CsrError, KeyType, VerifiedCsr};
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
pub use svid::{RevocationList, SvidError, SvidVerifier, VerifiedSvid, check_leaf};
pub use token::{PresentedToken, TokenError, TokenRecord};

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Bytes of a hex string, or `None` if it is not hex of even length.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok())).collect()
}

/// Feeds arbitrary bytes to every parser of untrusted input in this crate (CSR DER and PEM,
/// certificates as SVIDs, tokens, SPIFFE IDs) and discards the results: the fuzz target and its
/// corpus replay call this. Nothing here may panic.
pub fn fuzz_input(data: &[u8]) {
    let _ = VerifiedCsr::from_der(data);
    let _ = VerifiedCsr::from_pem(data);
    let _ = check_leaf(data);
    let _ = ca::validity(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = token::parse(text);
        let _ = SpiffeId::parse(text);
        let _ = TrustDomain::parse(text);
        let _ = Serial::parse(text);
    }
}
