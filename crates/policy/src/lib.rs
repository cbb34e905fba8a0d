//! zerogate's policy: the Cedar schema that describes principals, resources, actions and the
//! request context ([`SCHEMA`]); policy sets validated strictly against it before they are
//! accepted; and decisions that fail closed: any evaluation error is a deny, whatever the
//! policies said, so a `forbid` that errors can never let a `permit` win. Policies are sliced by
//! the application they guard, so a decision evaluates only the policies that can apply.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

mod engine;

pub use engine::{Decision, DecisionRequest, PolicyEngine, PolicyError, Posture, RequestContext};

/// The Cedar schema shipped with zerogate (Cedar schema syntax).
pub const SCHEMA: &str = include_str!("zerogate.cedarschema");
