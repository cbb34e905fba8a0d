//! `zerogate recommend` on the repo's example estate, end to end: map, recommend, the files it
//! writes, and `zerogate policy validate` accepting the Cedar it wrote. Checked against the
//! estate's ground truth (examples/estate/truth.json).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zerogate")).args(args).output().expect("run zerogate")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn recommend_on_the_example_estate_writes_valid_cedar_and_only_real_rules() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let estate = repo.join("examples/estate");
    let dir = std::env::temp_dir().join(format!("zerogate-cli-{}-recommend", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let map = dir.join("map.json");
    let s = |p: &PathBuf| p.display().to_string();
    ok(run(&[
        "map",
        &s(&estate),
        "-i",
        &s(&estate.join("inventory.csv")),
        "-i",
        &s(&estate.join("ip-ranges.json")),
        "-o",
        &s(&map),
        "-q",
    ]));
    let out = dir.join("out");
    let report = ok(run(&["recommend", &s(&map), "-o", &s(&out)]));
    assert!(report.contains("Start here"), "{report}");
    assert!(report.contains("Instance metadata service"), "platform services are stated");
    assert!(report.contains("Security groups:"), "{report}");
    for file in [
        "recommended.cedar",
        "entities.json",
        "security-groups.tf.json",
        "security-groups.cfn.json",
        "recommendation.json",
        "report.txt",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let validated = ok(run(&[
        "policy",
        "validate",
        &s(&out.join("recommended.cedar")),
        "--entities",
        &s(&out.join("entities.json")),
    ]));
    assert!(validated.contains("valid"), "{validated}");

    // Against the ground truth, by segment (the tier tag).
    let rec: serde_json::Value = serde_json::from_str(&ok(run(&["recommend", &s(&map), "--format", "json"]))).unwrap();
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(estate.join("truth.json")).unwrap()).unwrap();
    let segment_of = |asset: &str| -> String {
        rec["segments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["members"].as_array().unwrap().iter().any(|m| m == asset))
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{asset} in no segment"))
    };
    let key = |v: &serde_json::Value, client: String, server: String| {
        (client, server, v["protocol"].as_u64().unwrap(), v["port"].as_u64().unwrap())
    };
    let real: BTreeSet<_> = truth["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| key(e, segment_of(e["client"].as_str().unwrap()), segment_of(e["server"].as_str().unwrap())))
        .collect();
    let rules: BTreeSet<_> = rec["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| key(r, r["client"].as_str().unwrap().to_owned(), r["server"].as_str().unwrap().to_owned()))
        .collect();
    let unreal: Vec<_> = rules.difference(&real).collect();
    assert!(unreal.is_empty(), "rules that are not real: {unreal:?}");
    let missing: Vec<_> = real.difference(&rules).collect();
    assert!(missing.len() <= 1, "real segment edges without a rule: {missing:?}");

    let terraform: serde_json::Value =
        serde_json::from_str(&ok(run(&["recommend", &s(&map), "--format", "terraform"]))).unwrap();
    assert!(terraform["resource"]["aws_security_group"]["zg_web"].is_object(), "{terraform:#}");
    let cloudformation: serde_json::Value =
        serde_json::from_str(&ok(run(&["recommend", &s(&map), "--format", "cloudformation"]))).unwrap();
    assert_eq!(cloudformation["Resources"]["ZgWebSg"]["Type"], "AWS::EC2::SecurityGroup");

    // Replay: the flow logs themselves against the recommended policy; every edge accounted for.
    let replay = ok(run(&[
        "simulate",
        "--policy",
        &s(&out),
        "--flows",
        &s(&estate),
        "-i",
        &s(&estate.join("inventory.csv")),
        "-i",
        &s(&estate.join("ip-ranges.json")),
        "--json",
    ]));
    let replay: serde_json::Value = serde_json::from_str(&replay).unwrap();
    let map_json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&map).unwrap()).unwrap();
    assert_eq!(replay["edges"].as_array().unwrap().len(), map_json["edges"].as_array().unwrap().len());
    let blocked = replay["totals"]["blocked"]["edges"].as_u64().unwrap_or(0);
    let held_back = rec["held_back"].as_array().unwrap().len() as u64;
    assert_eq!(blocked, held_back, "only what was held back is blocked");
    assert!(replay["edges"].as_array().unwrap().iter().any(|e| e["verdict"] == "allowed"
        && e["policies"][0].as_str().is_some_and(|p| p.starts_with("lb-to-web"))));
    // Drift against the same flows: the held-back edges are uncovered (exit code 1 says drift).
    let drifted = run(&["drift", "--policy", &s(&out), "--map", &s(&map), "--json"]);
    assert_eq!(drifted.status.code(), Some(u8::from(held_back > 0).into()));
    let drifted: serde_json::Value = serde_json::from_slice(&drifted.stdout).unwrap();
    assert_eq!(drifted["uncovered"].as_array().unwrap().len() as u64, held_back);
    assert!(drifted["unused"].as_array().unwrap().is_empty(), "{drifted:#}");
    // A policy that does not validate is refused, naming the file.
    std::fs::write(out.join("broken.cedar"), "permit (principal, action, resource) when { nonsense };").unwrap();
    let broken = run(&["simulate", "--policy", &s(&out), "--map", &s(&map)]);
    assert!(!broken.status.success());
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("broken.cedar"),
        "{}",
        String::from_utf8_lossy(&broken.stderr)
    );

    // Without tags, assets that behave alike group (the web servers all serve the load balancers
    // on 8080 and use the same services); with --no-behaviour-grouping each stays alone.
    let by_behaviour = ok(run(&["recommend", &s(&map), "--segment-tag", "nothing", "--format", "json"]));
    let by_behaviour: serde_json::Value = serde_json::from_str(&by_behaviour).unwrap();
    let web = by_behaviour["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["members"].as_array().unwrap().iter().any(|m| m == "web-1"))
        .unwrap();
    assert_eq!(web["source"], "behaviour", "{web}");
    assert!(web["members"].as_array().unwrap().len() >= 2, "{web}");
    let alone =
        ok(run(&["recommend", &s(&map), "--segment-tag", "nothing", "--no-behaviour-grouping", "--format", "json"]));
    let alone: serde_json::Value = serde_json::from_str(&alone).unwrap();
    assert!(alone["segments"].as_array().unwrap().iter().any(|s| s["name"] == "web-1"));
    std::fs::write(dir.join("bad.json"), "[1]").unwrap();
    let bad = run(&["recommend", &s(&map), "--segments", &s(&dir.join("bad.json"))]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad.json"), "{}", String::from_utf8_lossy(&bad.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Flow-log lines (version 2, the default format) of TCP conversations `client:port ->
/// server:port` at `start`, both directions.
fn conversations(list: &[(&str, u16, &str, u16, u64)]) -> String {
    let mut text = String::from(
        "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n",
    );
    for (client, cport, server, sport, start) in list {
        let end = start + 60;
        text +=
            &format!("2 123456789012 eni-0a1 {client} {server} {cport} {sport} 6 10 2000 {start} {end} ACCEPT OK\n");
        text += &format!("2 123456789012 eni-0a1 {server} {client} {sport} {cport} 6 8 9000 {start} {end} ACCEPT OK\n");
    }
    text
}

#[test]
fn simulate_places_each_flow_with_the_identity_that_held_the_address_then() {
    let dir = std::env::temp_dir().join(format!("zerogate-cli-{}-reassigned", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (before, after) = (dir.join("logs/before"), dir.join("logs/after"));
    std::fs::create_dir_all(&before).unwrap();
    std::fs::create_dir_all(&after).unwrap();
    // 10.0.3.5 was the orders database until 10 December; then the address went to another
    // team's analytics database, which also serves PostgreSQL.
    let inventory = dir.join("inventory.csv");
    std::fs::write(
        &inventory,
        "cidr,name,tags\n\
         10.0.1.10/32,app-1,tier=app\n\
         10.0.3.5/32,orders-db,tier=db,listen=5432/tcp,valid_until=2025-12-10T00:00:00Z\n\
         10.0.3.5/32,analytics-db,tier=analytics,listen=5432/tcp,valid_from=2025-12-10T00:00:00Z\n",
    )
    .unwrap();
    let (dec5, dec6, dec12) = (1_764_928_800, 1_765_015_200, 1_765_533_600);
    std::fs::write(
        before.join("flows.log"),
        conversations(&[("10.0.1.10", 40_001, "10.0.3.5", 5432, dec5), ("10.0.1.10", 40_002, "10.0.3.5", 5432, dec6)]),
    )
    .unwrap();
    std::fs::write(after.join("flows.log"), conversations(&[("10.0.1.10", 41_001, "10.0.3.5", 5432, dec12)])).unwrap();
    let s = |p: &PathBuf| p.display().to_string();

    // The map of all flows has two edges: one to each owner of the address, each in its time.
    let map = dir.join("map.json");
    ok(run(&["map", &s(&dir.join("logs")), "-i", &s(&inventory), "-o", &s(&map), "-q"]));
    let parsed: serde_json::Value = serde_json::from_slice(&std::fs::read(&map).unwrap()).unwrap();
    let mut edges: Vec<(String, String, u64)> = parsed["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["client"].as_str().unwrap().into(),
                e["server"].as_str().unwrap().into(),
                e["days_seen"].as_u64().unwrap(),
            )
        })
        .collect();
    edges.sort();
    assert_eq!(
        edges,
        [("app-1".into(), "analytics-db".into(), 1), ("app-1".into(), "orders-db".into(), 2)],
        "{parsed}"
    );

    // The policy recommended from the flows before the change allows the app its database;
    // replayed over all flows, the same port on the address's new owner is blocked and named.
    let map_before = dir.join("map-before.json");
    ok(run(&["map", &s(&before), "-i", &s(&inventory), "-o", &s(&map_before), "-q"]));
    let policy = dir.join("policy");
    ok(run(&["recommend", &s(&map_before), "-o", &s(&policy)]));
    let out = ok(run(&[
        "simulate",
        "--policy",
        &s(&policy),
        "--flows",
        &s(&dir.join("logs")),
        "-i",
        &s(&inventory),
        "--json",
    ]));
    let simulation: serde_json::Value = serde_json::from_str(&out).unwrap();
    let verdict = |server: &str| -> String {
        let edge = simulation["edges"].as_array().unwrap().iter().find(|e| e["server"] == server).unwrap();
        edge["verdict"].as_str().unwrap().to_owned()
    };
    assert_eq!(verdict("orders-db"), "allowed", "{simulation}");
    assert_eq!(verdict("analytics-db"), "blocked", "{simulation}");
    let _ = std::fs::remove_dir_all(&dir);
}
