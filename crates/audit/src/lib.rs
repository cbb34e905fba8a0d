//! zerogate's audit log: one record per decision, appended as one JSON line that carries its
//! sequence number and the SHA-256 of the line before it, so any modified, removed, reordered or
//! inserted line breaks the chain where it happened. Every so often a checkpoint line signs the
//! head of the chain with the log's Ed25519 key. Appends are durable before they are
//! acknowledged (written and `fdatasync`ed), many at a time (group commit); when the log cannot
//! be written, the caller is told, so a gateway can deny. A log rolls over into segments (each
//! closed with a signed checkpoint, the next opening with one) that read as one chain.
//! [`verify`] and [`verify_log`] read a log back and say
//! where it was tampered with; [`shadow::shadow_report`] what enforcing would refuse.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

mod chain;
mod record;
pub mod shadow;
mod verify;
mod writer;

pub use chain::{CheckpointKey, GENESIS};
pub use record::{
    APPLICATION_ENTITY, Credential, Decision, DecisionRecord, NO_RESOURCE, RequestSummary, TCP_TARGET_ENTITY,
    UNROUTED_HOST,
};
pub use verify::{Problem, Report, Segment, open_segments, segments, verify, verify_log};
pub use writer::{AuditError, AuditLog, DEFAULT_SEGMENT_BYTES, Options, Receipt};
