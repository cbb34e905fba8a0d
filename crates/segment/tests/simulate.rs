//! Replaying flows against a policy, and drift: on a generated estate, the recommended policy
//! allows every flow it was made from (except those held back for review), blocks a new lateral
//! flow with no rule, names the rule behind each allowed flow, and reports rules nobody used.

mod common;

use serde_json::json;
use zerogate_policy::PolicyEngine;
use zerogate_segment::cedar::to_cedar;
use zerogate_segment::recommend::{MapInput, Options, parse_map, recommend};
use zerogate_segment::simulate::{Verdict, drift, simulate};

fn generated_map() -> MapInput {
    let spec = zerogate_flowgen::Spec { seed: 13, records: 20_000, days: 10, files: 2, ..Default::default() };
    let (dir, _truth, map) = common::estate("simulate", &spec);
    let _ = std::fs::remove_dir_all(&dir);
    map
}

#[test]
fn the_recommended_policy_allows_what_it_was_made_from_and_blocks_what_is_new() {
    let map = generated_map();
    let rec = recommend(&map, &Options::default());
    let cedar = to_cedar(&rec);
    let engine = PolicyEngine::load(&[("r.cedar".to_owned(), cedar.policies.clone())], cedar.entities.clone()).unwrap();

    let replay = simulate(&map, &engine, &cedar.entities);
    let blocked: Vec<_> = replay.edges.iter().filter(|e| e.verdict == Verdict::Blocked).collect();
    // Only the edges held back for review are blocked; each allowed edge names its rule.
    assert_eq!(blocked.len(), rec.held_back.len(), "{blocked:#?}");
    for edge in replay.edges.iter().filter(|e| e.verdict == Verdict::Allowed) {
        assert_eq!(edge.policies.len(), 1, "{edge:?}");
        assert!(rec.rules.iter().any(|r| r.id == edge.policies[0]), "{edge:?}");
    }
    assert!(replay.edges.iter().any(|e| e.verdict == Verdict::EntryPoint && e.client == "internet"));
    assert_eq!(
        replay.totals.values().map(|t| t.edges).sum::<u64>(),
        map.edges.len() as u64,
        "every edge is accounted for"
    );

    // New traffic: the web tier opens connections straight to the database.
    let mut drifted = map.clone();
    let mut lateral = drifted.edges.iter().find(|e| e.client == "web-1").unwrap().clone();
    lateral.server = "db-1".into();
    lateral.port = 5432;
    lateral.protocol = 6;
    lateral.protocol_name = "tcp".into();
    drifted.edges.push(lateral);
    // And the bastion's SSH stops: its rule goes unused.
    drifted.edges.retain(|e| !(e.client.starts_with("bastion") && e.port == 22));
    let replay = simulate(&drifted, &engine, &cedar.entities);
    let report = drift(&drifted, &replay, &engine.policy_ids(), 7);
    assert!(
        report.uncovered.iter().any(|e| e.client == "web-1" && e.server == "db-1" && e.service == "tcp/5432"),
        "{:#?}",
        report.uncovered
    );
    assert!(
        report.unused.iter().any(|u| u.policy == "bastion-to-web-tcp-22" && u.last_used.is_none()),
        "{:#?}",
        report.unused
    );
    // Rules used within the window are not reported.
    assert!(!report.unused.iter().any(|u| u.policy.starts_with("lb-to-web")), "{:#?}", report.unused);
}

#[test]
fn a_rule_used_only_long_ago_is_unused_after_n_days() {
    let edge = |last: &str| {
        json!({
            "client": "app", "server": "db", "protocol": 6, "protocol_name": "tcp", "port": 5432,
            "connections": 2, "bytes": 10, "accepted": 4, "rejected": 0,
            "first_seen": "2025-12-01T00:00:00Z", "last_seen": last,
            "orientation": { "confidence": "high", "basis": "tcp-flags" }
        })
    };
    let map = json!({
        "schema": "zerogate.traffic-map/v1",
        "window": { "first_seen": "2025-12-01T00:00:00Z", "last_seen": "2025-12-30T00:00:00Z" },
        "assets": [
            { "id": "app", "kind": "named", "addresses": ["10.0.1.1"], "tags": { "tier": "app" } },
            { "id": "db", "kind": "named", "addresses": ["10.0.2.1"], "tags": { "tier": "db" } }
        ],
        "edges": [edge("2025-12-02T00:00:00Z")]
    });
    let map = parse_map("m.json", map.to_string().as_bytes()).unwrap();
    let cedar = to_cedar(&recommend(&map, &Options::default()));
    let engine = PolicyEngine::load(&[("r.cedar".to_owned(), cedar.policies)], cedar.entities.clone()).unwrap();
    let replay = simulate(&map, &engine, &cedar.entities);
    assert_eq!(replay.edges[0].verdict, Verdict::Allowed);
    let ids = engine.policy_ids();
    let stale = drift(&map, &replay, &ids, 14);
    assert_eq!(stale.unused.len(), 1);
    assert_eq!(stale.unused[0].last_used.as_deref(), Some("2025-12-02T00:00:00Z"));
    assert!(drift(&map, &replay, &ids, 30).unused.is_empty());
}
