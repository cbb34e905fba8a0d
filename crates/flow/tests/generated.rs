//! Generated estates with known ground truth: every real edge found with its exact connections,
//! packets and bytes (each connection counted once across interfaces, NAT and TGW), no edge from
//! noise, and the same result whatever the layout or the number of threads.

use std::collections::BTreeMap;
use std::path::PathBuf;

use zerogate_flow::{Inventory, Progress, ReadOptions, TrafficMap, build_map, discover};
use zerogate_flowgen::{Format, Layout, Spec, Truth, generate};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zerogate-gen-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn estate(name: &str, spec: &Spec) -> (PathBuf, Truth) {
    let dir = scratch(name);
    let truth = generate(&dir, spec).expect("generate");
    (dir, truth)
}

fn inventory(dir: &std::path::Path) -> Inventory {
    let mut inv = Inventory::new();
    for f in ["inventory.csv", "ip-ranges.json"] {
        let path = dir.join(f);
        inv.load(&path.display().to_string(), &std::fs::read_to_string(&path).unwrap()).unwrap();
    }
    inv
}

fn map(dir: &std::path::Path, threads: usize) -> TrafficMap {
    let inputs = discover(&[dir.display().to_string()]);
    build_map(&inputs, &inventory(dir), &ReadOptions { threads, ..ReadOptions::default() }, &Progress::default())
        .unwrap()
}

type Key = (String, String, u8, u16);

fn edges(map: &TrafficMap) -> BTreeMap<Key, (u64, u64, u64)> {
    map.edges
        .iter()
        .map(|e| ((e.client.clone(), e.server.clone(), e.protocol, e.port), (e.connections, e.packets, e.bytes)))
        .collect()
}

fn truth_edges(truth: &Truth) -> BTreeMap<Key, (u64, u64, u64)> {
    truth
        .edges
        .iter()
        .map(|e| ((e.client.clone(), e.server.clone(), e.protocol, e.port), (e.connections, e.packets, e.bytes)))
        .collect()
}

/// Connection counts are exact up to 128 and HyperLogLog estimates above.
fn assert_connections(map: &TrafficMap, key: &Key, got: u64, expected: u64) {
    let edge = map
        .edges
        .iter()
        .find(|e| (&e.client, &e.server, e.protocol, e.port) == (&key.0, &key.1, key.2, key.3))
        .unwrap();
    if edge.connections_exact {
        assert_eq!(got, expected, "connections of {key:?}");
    } else {
        let error = (got as f64 - expected as f64).abs() / expected as f64;
        assert!(error < 0.1, "connections of {key:?}: {got} vs {expected}");
    }
}

fn assert_matches_truth(map: &TrafficMap, truth: &Truth) {
    let found = edges(map);
    let expected = truth_edges(truth);
    let missing: Vec<_> = expected.keys().filter(|k| !found.contains_key(*k)).collect();
    let extra: Vec<_> = found.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:#?}\nextra {extra:#?}");
    for (key, (connections, packets, bytes)) in &expected {
        let got = found[key];
        assert_connections(map, key, got.0, *connections);
        assert_eq!((got.1, got.2), (*packets, *bytes), "packets and bytes of {key:?} counted once");
    }
    assert_eq!(map.noise.records, truth.noise_records, "noise {:#?}", map.noise.by_kind);
    assert_eq!(map.coverage.records, truth.records);
    assert_eq!(map.dropped.problems, 0, "{:#?}", map.dropped.examples);
}

#[test]
fn every_format_with_flags_recovers_the_truth() {
    for format in [Format::V3, Format::V5, Format::V8] {
        let spec = Spec { records: 15_000, scan_share: 0.3, format, days: 7, seed: 7, ..Spec::default() };
        let (dir, truth) = estate(&format!("{format:?}"), &spec);
        let map = map(&dir, 0);
        assert_matches_truth(&map, &truth);
        assert!(
            map.edges
                .iter()
                .all(|e| e.orientation.basis != zerogate_flow::orient::Basis::PortRange || e.protocol == 17)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn the_weekly_batch_job_is_an_edge() {
    let spec = Spec { records: 20_000, format: Format::V5, days: 14, seed: 3, ..Spec::default() };
    let (dir, truth) = estate("batch", &spec);
    assert!(truth.edges.iter().any(|e| e.client == "batch-1"), "the generator ran the batch job");
    let map = map(&dir, 0);
    let batch: Vec<_> = map.edges.iter().filter(|e| e.client == "batch-1" && e.server.starts_with("db-")).collect();
    assert!(!batch.is_empty());
    assert!(batch.iter().all(|e| e.port == 5432 && e.orientation.basis == zerogate_flow::orient::Basis::TcpFlags));
    let active_hours: usize = batch.iter().map(|e| e.hours.iter().filter(|h| **h > 0).count()).sum();
    assert!(active_hours > 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn v2_without_flags_orients_by_port_statistics() {
    let spec = Spec { records: 15_000, format: Format::V2, days: 1, seed: 11, ..Spec::default() };
    let (dir, truth) = estate("v2", &spec);
    let map = map(&dir, 0);
    let found = edges(&map);
    // Without pkt-* fields the NAT gateway and the TGW interface appear as endpoints: every
    // other real edge is found, with its exact connection count.
    for e in truth.edges.iter().filter(|e| e.server != "internet" && e.client != "monitoring") {
        let key = (e.client.clone(), e.server.clone(), e.protocol, e.port);
        let got = found.get(&key).unwrap_or_else(|| panic!("missing {key:?}"));
        assert_connections(&map, &key, got.0, e.connections);
    }
    let grpc = map.edges.iter().find(|e| e.port == 50051).unwrap();
    assert_eq!(grpc.orientation.basis, zerogate_flow::orient::Basis::PortStats, "50051 is in the ephemeral range");
    assert!(map.edges.iter().all(|e| !(e.client == "internet" && e.port != 443)), "no edge from scans");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn layouts_threads_and_plain_text_give_the_same_map() {
    let mut reference: Option<String> = None;
    for (i, (layout, gzip)) in [
        (Layout::Default, true),
        (Layout::Hive, true),
        (Layout::Hourly, false),
        (Layout::HiveHourly, true),
        (Layout::Flat, false),
    ]
    .into_iter()
    .enumerate()
    {
        let spec = Spec { records: 5_000, layout, gzip, files: 6, seed: 5, ..Spec::default() };
        let (dir, _) = estate(&format!("layout{i}"), &spec);
        let one = map(&dir, 1);
        let many = map(&dir, 3);
        let edges_one = serde_json::to_string(&one.edges).unwrap();
        assert_eq!(edges_one, serde_json::to_string(&many.edges).unwrap());
        assert_eq!(serde_json::to_string(&one.noise).unwrap(), serde_json::to_string(&many.noise).unwrap());
        match &reference {
            None => reference = Some(edges_one),
            Some(r) => assert_eq!(r, &edges_one, "{layout:?}"),
        }
        if layout != Layout::Flat {
            assert!(one.inputs.iter().all(|i| i.s3.is_some()), "{layout:?}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
