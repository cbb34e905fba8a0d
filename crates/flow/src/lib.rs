//! `zerogate-flow` owns everything between raw AWS flow logs and the traffic map: parsing every
//! VPC and Transit Gateway flow-log format by its header (text, gzip, Parquet, S3 layouts),
//! resolving addresses to assets with the inventory, orienting each flow (client and server),
//! counting each connection once across vantage points, setting scans and backscatter aside as
//! noise, and writing the versioned map. It never prints or exits: the CLI does that.

// Untrusted input flows through here: no panics outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod aggregate;
pub mod field;
pub mod format;
pub mod inventory;
pub mod map;
pub mod noise;
pub mod orient;
#[cfg(feature = "parquet")]
mod parquet_input;
pub mod prefix;
pub mod query_result;
pub mod record;
pub mod render;
pub mod sketch;
pub mod source;

pub use field::Field;
pub use format::{LogFormat, LogKind};
pub use inventory::{Endpoint, Inventory};
pub use map::{Edge, SCHEMA, TrafficMap};
pub use source::{InputInfo, Progress, ReadOptions, StrictError, build_map, discover, sniff_format};
