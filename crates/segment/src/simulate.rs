//! Replaying observed flows against a policy: for every edge of a traffic map (client asset,
//! server asset, protocol, server port), the Cedar decision a policy would give, the policies that
//! decided it, and what that means in connections and bytes; and drift: edges no rule covers, and
//! rules no flow has used for a number of days.
//!
//! Flows are attributed to assets with the identities valid at the time (the map resolves each
//! address to the asset that held it at the flow's start, see the inventory's validity), then
//! placed with the policy's own entities: the client is `Zerogate::Workload::"<asset>"`,
//! the target `Zerogate::TcpTarget::"<server segment>:<protocol>/<port>"` where the server's
//! segment is its workload's group (`segment:<name>`), as `zerogate recommend` writes them. Flows
//! from the internet have no identity for Cedar; they are reported as entry points, for the
//! security groups, and not decided.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use zerogate_flow::map::{parse_rfc3339, rfc3339};
use zerogate_policy::{PolicyEngine, RequestContext};

use crate::recommend::{EdgeInput, MapInput};

/// What a policy does with one edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A permit matched.
    Allowed,
    /// Nothing permits it (or a forbid matched, or evaluation failed: a deny either way).
    Blocked,
    /// From the internet: no identity to decide on; the security groups guard it.
    EntryPoint,
}

/// One replayed edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replayed {
    /// Client asset.
    pub client: String,
    /// Server asset.
    pub server: String,
    /// `tcp/5432`, …
    pub service: String,
    /// The Cedar resource it was decided on.
    pub target: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The policies that decided (the permits that allowed, or the forbids that denied).
    pub policies: Vec<String>,
    /// Evaluation errors (each one alone makes a deny).
    pub errors: Vec<String>,
    /// Connections.
    pub connections: u64,
    /// Bytes.
    pub bytes: u64,
    /// Last seen.
    pub last_seen: Option<String>,
}

/// Totals per verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Edges.
    pub edges: u64,
    /// Connections.
    pub connections: u64,
    /// Bytes.
    pub bytes: u64,
}

/// A replay of a map against a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Simulation {
    /// Totals per verdict.
    pub totals: BTreeMap<String, Totals>,
    /// Every edge, blocked ones first, then by connections.
    pub edges: Vec<Replayed>,
}

/// The segment of an asset according to the entities: its workload's `segment:` group.
fn segments_of(entities: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entity in entities.as_array().into_iter().flatten() {
        if entity.pointer("/uid/type").and_then(Value::as_str) != Some("Zerogate::Workload") {
            continue;
        }
        let Some(id) = entity.pointer("/uid/id").and_then(Value::as_str) else { continue };
        let group = entity
            .get("parents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("Zerogate::Group"))
            .find_map(|p| p.get("id")?.as_str()?.strip_prefix("segment:"));
        if let Some(segment) = group {
            out.insert(id.to_owned(), segment.to_owned());
        }
    }
    out
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// Replays every edge of `map` against `engine`, placing flows with `entities`.
pub fn simulate(map: &MapInput, engine: &PolicyEngine, entities: &Value) -> Simulation {
    let segments = segments_of(entities);
    let kinds: BTreeMap<&str, &str> = map.assets.iter().map(|a| (a.id.as_str(), a.kind.as_str())).collect();
    let addresses: BTreeMap<&str, &str> =
        map.assets.iter().filter_map(|a| Some((a.id.as_str(), a.addresses.first()?.as_str()))).collect();
    let action = r#"Zerogate::Action::"connect""#;
    let replay = |edge: &EdgeInput| {
        let service = format!("{}/{}", edge.protocol_name, edge.port);
        let server_segment = segments.get(&edge.server).cloned().unwrap_or_else(|| edge.server.clone());
        let target = format!("{server_segment}:{service}");
        let mut replayed = Replayed {
            client: edge.client.clone(),
            server: edge.server.clone(),
            service,
            target: target.clone(),
            verdict: Verdict::Blocked,
            policies: Vec::new(),
            errors: Vec::new(),
            connections: edge.connections,
            bytes: edge.bytes,
            last_seen: edge.last_seen.clone(),
        };
        if kinds.get(edge.client.as_str()) == Some(&"internet") {
            replayed.verdict = Verdict::EntryPoint;
            return replayed;
        }
        let decision = engine.decide_with(
            &format!("Zerogate::Workload::{}", quoted(&edge.client)),
            action,
            &format!("Zerogate::TcpTarget::{}", quoted(&target)),
            &context(edge, addresses.get(edge.client.as_str()).copied()),
        );
        replayed.verdict = if decision.allow { Verdict::Allowed } else { Verdict::Blocked };
        replayed.policies = decision.policies;
        replayed.errors = decision.errors;
        replayed
    };
    // Decisions are independent: one chunk of edges per core.
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let chunk = map.edges.len().div_ceil(threads).max(1);
    let mut edges: Vec<Replayed> = std::thread::scope(|scope| {
        let workers: Vec<_> = map
            .edges
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(replay).collect::<Vec<_>>()))
            .collect();
        // A worker that panicked passes its panic on: no edge is ever silently missing.
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    edges.sort_by(|a, b| {
        (a.verdict != Verdict::Blocked).cmp(&(b.verdict != Verdict::Blocked)).then(b.connections.cmp(&a.connections))
    });
    let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
    for edge in &edges {
        let name =
            serde_json::to_value(edge.verdict).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let total = totals.entry(name).or_default();
        total.edges += 1;
        total.connections += edge.connections;
        total.bytes += edge.bytes;
    }
    Simulation { totals, edges }
}

/// The context of a replayed flow: the client's first address, the edge's last time.
fn context(edge: &EdgeInput, address: Option<&str>) -> RequestContext {
    let time = edge.last_seen.as_deref().and_then(parse_rfc3339).unwrap_or(0);
    let ip = address
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    RequestContext {
        authn: "mtls".into(),
        credential_id: format!("flow:{}", edge.client),
        source_ip: ip,
        time: i64::try_from(time).unwrap_or(0),
        hour: i64::try_from(time % 86_400 / 3600).unwrap_or(0),
        device: None,
        posture: None,
        method: None,
        host: None,
        path: None,
        acr: None,
        amr: None,
    }
}

/// A policy no flow has used recently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnusedRule {
    /// The policy id.
    pub policy: String,
    /// When a flow last used it; `None`: never in these flows.
    pub last_used: Option<String>,
}

/// Drift between a policy and the flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// Edges no rule covers (the policy would block them).
    pub uncovered: Vec<Replayed>,
    /// Rules no flow used within the last `unused_days` of the flows' window.
    pub unused: Vec<UnusedRule>,
    /// The days.
    pub unused_days: u64,
}

/// Drift: blocked edges, and policies whose last use is older than `unused_days` before the end
/// of the map's window (or that no flow used at all). `policy_ids` are all the policies' ids.
pub fn drift(map: &MapInput, simulation: &Simulation, policy_ids: &[String], unused_days: u64) -> Drift {
    let end = map.window.last_seen.as_deref().and_then(parse_rfc3339).unwrap_or(0);
    let mut last_used: BTreeMap<&str, u64> = BTreeMap::new();
    for edge in simulation.edges.iter().filter(|e| e.verdict == Verdict::Allowed) {
        let seen = edge.last_seen.as_deref().and_then(parse_rfc3339).unwrap_or(0);
        for policy in &edge.policies {
            let used = last_used.entry(policy.as_str()).or_insert(seen);
            *used = (*used).max(seen);
        }
    }
    let cutoff = end.saturating_sub(unused_days * 86_400);
    let unused = policy_ids
        .iter()
        .filter_map(|id| match last_used.get(id.as_str()) {
            Some(&used) if used >= cutoff => None,
            Some(&used) => Some(UnusedRule { policy: id.clone(), last_used: Some(rfc3339(used)) }),
            None => Some(UnusedRule { policy: id.clone(), last_used: None }),
        })
        .collect();
    let uncovered = simulation.edges.iter().filter(|e| e.verdict == Verdict::Blocked).cloned().collect();
    Drift { uncovered, unused, unused_days }
}
