//! `zerogate-segment` turns the traffic map into what operators deploy and query: least-privilege
//! recommendations between segments (`recommend`), written as Cedar over zerogate's schema
//! (`cedar`), and the Athena (Trino) SQL that computes the map's aggregates where the flow logs
//! already live (`zerogate map --emit-sql`), whose result `zerogate map --from-query-result` reads
//! back. Replay and drift will live here too. It never parses raw logs itself: it reads maps.

// Untrusted input flows through here: no panics outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod athena;
pub mod aws;
pub mod cedar;
pub mod recommend;
pub mod simulate;
