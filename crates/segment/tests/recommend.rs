//! Recommendations on generated estates with known ground truth: every real segment-to-segment
//! service recommended, no rule that is not real, none from noise; the Cedar output validates
//! against zerogate's schema and decides as the rules say.

use std::collections::BTreeSet;

mod common;

use common::estate;
use serde_json::json;
use zerogate_flowgen::{Spec, Truth};
use zerogate_policy::{PolicyEngine, RequestContext};
use zerogate_segment::cedar::{group_id, target_id, to_cedar};
use zerogate_segment::recommend::{Options, Recommendation, parse_map, recommend};

type RuleKey = (String, String, u8, u16);

fn segment_of(rec: &Recommendation, asset: &str) -> String {
    rec.segments.iter().find(|s| s.members.iter().any(|m| m == asset)).map(|s| s.name.clone()).unwrap()
}

/// (share of real segment edges recommended, share of rules that are real, rules not real).
fn quality(rec: &Recommendation, truth: &Truth) -> (f64, f64, Vec<RuleKey>) {
    let real: BTreeSet<RuleKey> = truth
        .edges
        .iter()
        .map(|e| (segment_of(rec, &e.client), segment_of(rec, &e.server), e.protocol, e.port))
        .collect();
    let recommended: BTreeSet<RuleKey> =
        rec.rules.iter().map(|r| (r.client.clone(), r.server.clone(), r.protocol, r.port)).collect();
    let found = real.intersection(&recommended).count() as f64;
    let unreal: Vec<RuleKey> = recommended.difference(&real).cloned().collect();
    (found / real.len() as f64, found / recommended.len() as f64, unreal)
}

fn context() -> RequestContext {
    RequestContext {
        authn: "mtls".into(),
        credential_id: "serial:01".into(),
        source_ip: "10.0.2.10".parse().unwrap(),
        time: 1_764_547_200,
        hour: 0,
        device: None,
        posture: None,
        method: None,
        host: None,
        path: None,
        acr: None,
        amr: None,
    }
}

#[test]
fn generated_estates_give_every_real_rule_and_none_from_noise() {
    for (seed, days, scans) in [(3, 2, 0.3), (11, 8, 0.5)] {
        let spec = Spec { seed, records: 30_000, scan_share: scans, days, files: 3, ..Spec::default() };
        let (dir, truth, map) = estate(&format!("q{seed}"), &spec);
        let rec = recommend(&map, &Options::default());
        let (recall, precision, unreal) = quality(&rec, &truth);
        // The quality figures, for the closing note (`cargo test -p zerogate-segment -- --nocapture`).
        #[allow(clippy::print_stdout)]
        {
            println!(
                "seed {seed}, {days} day(s), {:.0}% scans: {} rules, recall {recall:.3}, precision {precision:.3}, held back {}",
                scans * 100.0,
                rec.rules.len(),
                rec.held_back.len()
            );
        }
        assert!(unreal.is_empty(), "rules that are not real (noise or misoriented): {unreal:?}");
        assert!(recall >= 0.9, "recall {recall}: held back {:?}", rec.held_back);
        // Segments come from the inventory's tier tags.
        let web = rec.segments.iter().find(|s| s.name == "web").unwrap();
        assert_eq!(web.source, "tag:tier");
        assert_eq!(web.members.len(), 6);
        // Rules name server ports, never ephemeral client ports: every rule matches a truth port.
        for rule in &rec.rules {
            assert!(truth.edges.iter().any(|e| e.port == rule.port), "{rule:?}");
            assert!(rule.evidence.connections > 0 && rule.evidence.first_seen.is_some());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn evidence_counts_the_days_a_rule_was_used_not_only_its_span() {
    // Three weeks: the batch job runs on Sundays only, the web tier calls the API every day.
    let spec = Spec { seed: 5, records: 40_000, scan_share: 0.1, days: 21, files: 3, ..Spec::default() };
    let (dir, _truth, map) = estate("days", &spec);
    let rec = recommend(&map, &Options::default());
    let rule = |client: &str, server: &str, port: u16| {
        rec.rules.iter().find(|r| r.client == client && r.server == server && r.port == port).unwrap().clone()
    };
    let weekly = rule("batch", "db", 5432);
    assert_eq!(weekly.evidence.days_seen, Some(3), "{weekly:?}");
    assert!(weekly.evidence.span_days >= 15, "{weekly:?}");
    let daily = rule("web", "api", 50051);
    assert_eq!(daily.evidence.days_seen, Some(21), "{daily:?}");
    assert_eq!(daily.evidence.span_days, 21);
    // In the map each of the batch job's edges lists Sundays only.
    for edge in map.edges.iter().filter(|e| e.port == 5432 && e.client.contains("batch")) {
        assert!(!edge.days.is_empty());
        assert!(edge.days.iter().all(|d| (d + 4) % 7 == 0), "{:?}", edge.active_days);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cedar_output_validates_and_decides_as_the_rules_say() {
    let spec = Spec { seed: 5, records: 20_000, days: 1, files: 2, ..Spec::default() };
    let (dir, _truth, map) = estate("cedar", &spec);
    let rec = recommend(&map, &Options::default());
    let cedar = to_cedar(&rec);
    let sources = [("recommended.cedar".to_owned(), cedar.policies.clone())];
    let engine =
        PolicyEngine::load(&sources, cedar.entities.clone()).unwrap_or_else(|e| panic!("{e}\n{}", cedar.policies));
    assert_eq!(engine.len(), rec.rules.iter().filter(|r| r.client != "internet").count());
    let connect = r#"Zerogate::Action::"connect""#;
    let target = |rule: &zerogate_segment::recommend::Rule| format!("Zerogate::TcpTarget::{}", json!(target_id(rule)));
    let rule = rec.rules.iter().find(|r| r.client == "web").expect("web is a client");
    let member = &rec.segments.iter().find(|s| s.name == "web").unwrap().members[0];
    let principal = format!("Zerogate::Workload::{}", json!(member));
    let allowed = engine.decide_with(&principal, connect, &target(rule), &context());
    assert!(allowed.allow, "{allowed:?}");
    // A target the web tier never used: denied.
    let unused = rec
        .rules
        .iter()
        .find(|r| {
            r.client != "internet" && !rec.rules.iter().any(|o| o.client == "web" && target_id(o) == target_id(r))
        })
        .expect("a target web does not use");
    let denied = engine.decide_with(&principal, connect, &target(unused), &context());
    assert!(!denied.allow, "{denied:?}");
    assert!(cedar.policies.contains(&format!("Zerogate::Group::\"{}\"", group_id("web"))));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn segment_names_from_tags_cannot_inject_cedar() {
    let map = json!({
        "schema": "zerogate.traffic-map/v1",
        "window": { "first_seen": "2025-12-01T00:00:00Z", "last_seen": "2025-12-01T01:00:00Z" },
        "assets": [
            { "id": "a", "kind": "named", "tags": { "tier": "x\"); permit (principal, action, resource); //" } },
            { "id": "b", "kind": "named", "tags": { "tier": "db\u{1b}[31m\n" } }
        ],
        "edges": [{
            "client": "a", "server": "b", "protocol": 6, "protocol_name": "tcp", "port": 5432,
            "connections": 3, "bytes": 100, "accepted": 6, "rejected": 0,
            "first_seen": "2025-12-01T00:00:00Z", "last_seen": "2025-12-01T00:10:00Z",
            "orientation": { "confidence": "high", "basis": "tcp-flags" }
        }]
    });
    let map = parse_map("m.json", map.to_string().as_bytes()).unwrap();
    let cedar = to_cedar(&recommend(&map, &Options::default()));
    let engine = PolicyEngine::load(&[("r.cedar".to_owned(), cedar.policies.clone())], cedar.entities).unwrap();
    assert_eq!(engine.len(), 1, "{}", cedar.policies);
}

#[test]
fn refused_and_port_range_edges_are_held_back_not_guessed() {
    let edge = |client: &str, port: u16, accepted: u64, confidence: &str, basis: &str| {
        json!({
            "client": client, "server": "db", "protocol": 6, "protocol_name": "tcp", "port": port,
            "connections": 2, "bytes": 10, "accepted": accepted, "rejected": 2,
            "first_seen": "2025-12-01T00:00:00Z", "last_seen": "2025-12-01T00:10:00Z",
            "orientation": { "confidence": confidence, "basis": basis }
        })
    };
    let map = json!({
        "schema": "zerogate.traffic-map/v1",
        "window": { "first_seen": "2025-12-01T00:00:00Z", "last_seen": "2025-12-20T00:00:00Z" },
        "assets": [
            { "id": "app", "kind": "named", "tags": { "tier": "app" } },
            { "id": "db", "kind": "named", "tags": { "tier": "db", "sensitivity": "high" } },
            { "id": "internet", "kind": "internet" }
        ],
        "edges": [edge("app", 5432, 4, "high", "tcp-flags"), edge("internet", 22, 0, "high", "tcp-flags"), edge("app", 40123, 3, "low", "port-range")]
    });
    let map = parse_map("m.json", map.to_string().as_bytes()).unwrap();
    let rec = recommend(&map, &Options::default());
    assert_eq!(rec.rules.len(), 1);
    assert_eq!((rec.rules[0].client.as_str(), rec.rules[0].port), ("app", 5432));
    // Quiet for 19 days of a 19-day window: stable.
    assert_eq!(rec.rules[0].stability, zerogate_segment::recommend::Stability::Stable);
    assert_eq!(rec.held_back.len(), 2);
    assert!(rec.held_back.iter().any(|h| h.reason.contains("REJECT")));
    assert!(rec.held_back.iter().any(|h| h.reason.contains("port-range")));
    assert_eq!(rec.priorities[0].segment, "db");
    let with_low = recommend(&map, &Options { include_low_confidence: true, ..Options::default() });
    assert_eq!(with_low.rules.len(), 2);
    assert_eq!(rec.platform.len(), 4, "platform services are stated");
}

#[test]
fn bad_maps_are_refused_with_the_reason() {
    let not_json = parse_map("m.json", b"{").unwrap_err().to_string();
    assert!(not_json.starts_with("m.json: not a zerogate traffic map"), "{not_json}");
    let other = parse_map("m.json", br#"{"schema":"other/v9","window":{},"assets":[],"edges":[]}"#).unwrap_err();
    assert!(other.to_string().contains("`other/v9`"), "{other}");
    let dangling = json!({
        "schema": "zerogate.traffic-map/v1", "window": {}, "assets": [],
        "edges": [{ "client": "a", "server": "b", "protocol": 6, "protocol_name": "tcp", "port": 1,
                    "connections": 1, "bytes": 1, "accepted": 1, "rejected": 0,
                    "orientation": { "confidence": "high", "basis": "tcp-flags" } }]
    });
    let error = parse_map("m.json", dangling.to_string().as_bytes()).unwrap_err().to_string();
    assert!(error.contains("edges[0] names asset `a`"), "{error}");
}

#[test]
fn without_tags_assets_that_behave_alike_are_grouped_and_groups_stay_pure() {
    let spec = Spec { seed: 17, records: 30_000, days: 3, files: 2, ..Spec::default() };
    let (dir, truth, map) = estate("behaviour", &spec);
    let untagged = Options { segment_tags: vec!["no-such-tag".into()], ..Options::default() };
    let rec = recommend(&map, &untagged);
    // Purity against the ground truth's tiers: a behaviour group never mixes tiers.
    let tier = |asset: &str| asset.rsplit_once('-').map_or(asset, |(tier, _)| tier).to_owned();
    let groups: Vec<_> = rec.segments.iter().filter(|s| s.source == "behaviour").collect();
    assert!(!groups.is_empty(), "{:#?}", rec.segments);
    for group in &groups {
        let tiers: BTreeSet<String> = group.members.iter().map(|m| tier(m)).collect();
        assert_eq!(tiers.len(), 1, "{} mixes tiers: {:?}", group.name, group.members);
    }
    // Each tier of more than one host is found whole, though not every member does exactly the
    // same (one web server is also scraped by monitoring; the caches serve different tiers).
    #[allow(clippy::print_stdout)]
    for group in &groups {
        println!("{}: {:?}", group.name, group.members);
    }
    for (member, size) in [("web-1", 6), ("api-1", 4), ("cache-1", 2), ("db-1", 2)] {
        let segment = rec.segments.iter().find(|s| s.members.iter().any(|m| m == member)).unwrap();
        assert_eq!(segment.source, "behaviour", "{segment:?}");
        assert_eq!(segment.members.len(), size, "{segment:?}");
    }
    // Rules stay real.
    let (_, _, unreal) = quality(&rec, &truth);
    assert!(unreal.is_empty(), "{unreal:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
