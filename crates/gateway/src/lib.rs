//! zerogate's data plane, the gateway in front of each application: every request is made
//! canonical (one reading, or refused), authenticated, authorized by Cedar policy, recorded in
//! the audit log, and only then forwarded, with client-sent identity headers stripped and one
//! signed identity assertion added; a TCP service's tunnel is opened the same way, on the
//! client's certificate, and authorized again while it lasts. This crate owns that path; it
//! never trusts an identity the client states itself.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod admin;
pub mod assertion;
pub mod canonical;
pub mod certificate;
pub mod config;
pub mod decide;
pub mod demo;
pub mod freshness;
mod h1;
mod pace;
pub mod proxy;
pub mod proxy_protocol;
mod resets;
mod share;
mod tcp;
mod upstream_h2;
mod websocket;
