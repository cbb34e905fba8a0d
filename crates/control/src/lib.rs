//! zerogate's control plane, first part: the data directory (CA files and the store), the
//! identity service (enrollment with one-time tokens, renewal with the current certificate,
//! direct issuance, revocation, CRL) with an event for every attempt, its TLS endpoints
//! (`zerogate server`), and the client that devices and workloads run (`zerogate enroll`,
//! `zerogate agent`). The decisions live in `zerogate-pki`; this crate does the IO around them.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod api;
pub mod client;
pub mod datadir;
pub mod server;
pub mod service;

pub use datadir::{DataDir, DataDirError};
pub use service::{IdentityService, Origin, Refusal};
