//! zerogate's policy: the Cedar schema that describes principals, resources, actions and the
//! request context ([`SCHEMA`]); policy sets validated strictly against it before they are
//! accepted; and decisions that fail closed: any evaluation error is a deny, whatever the
//! policies said, so a `forbid` that errors can never let a `permit` win. Policies are sliced by
//! the application they guard, so a decision evaluates only the policies that can apply. A
//! running system holds a [`LivePolicy`]: reloaded atomically, and kept at its last good set
//! when new files do not validate.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

mod engine;
mod live;

pub use engine::{
    Decision, DecisionRequest, MAX_ASSERTED_GROUPS, PolicyEngine, PolicyError, Posture, Principal, RequestContext,
};
pub use live::{LivePolicy, PolicyFiles, Reload, read_entities, read_sources};

/// The Cedar schema shipped with zerogate (Cedar schema syntax).
pub const SCHEMA: &str = include_str!("zerogate.cedarschema");
