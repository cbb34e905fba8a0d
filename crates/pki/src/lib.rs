//! zerogate's identity authority: a root and an intermediate CA that issue short-lived X.509-SVIDs
//! (certificates carrying one SPIFFE ID) to devices and workloads, one-time enrollment tokens,
//! revocation (a signed CRL and a list that gateways consult), trust bundles, and the one function
//! that turns a verified peer certificate into a SPIFFE ID ([`SvidVerifier::verify`]). Everything
//! here is plain code that takes `now` and returns results: no sockets, no clock reads, no files;
//! the store and the server do the IO.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

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
