//! The SQL of `zerogate map --emit-sql`, run on DuckDB over the same files, read back with
//! `--from-query-result`, gives the same map as the built-in aggregator: edges, noise, assets
//! and coverage. Needs `python3` with `duckdb` (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zerogate-sql-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn zerogate(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_zerogate")).args(args).output().unwrap();
    assert!(out.status.success(), "zerogate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Maps `inputs` both ways and compares.
fn same_map_both_ways(name: &str, inputs: &[&str], inventory: &[&str]) -> serde_json::Value {
    let dir = scratch(name);
    let mut common: Vec<&str> = inputs.to_vec();
    for inv in inventory {
        common.extend(["-i", inv]);
    }
    let mut direct_args = vec!["map", "--json", "-q"];
    direct_args.extend(&common);
    let direct: serde_json::Value = serde_json::from_slice(&zerogate(&direct_args)).unwrap();

    let mut sql_args = vec!["map", "--emit-sql", "duckdb"];
    sql_args.extend(&common);
    let sql = zerogate(&sql_args);
    let sql_file = dir.join("query.sql");
    std::fs::write(&sql_file, sql).unwrap();
    let csv = dir.join("result.csv");
    let run = Command::new("python3")
        .arg(repo().join("scripts/duckdb-run.py"))
        .arg(&sql_file)
        .arg(&csv)
        .output()
        .expect("python3 runs");
    assert!(
        run.status.success(),
        "DuckDB failed (is it installed? `python3 -m pip install duckdb`): {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut back_args = vec!["map", "--json", "--from-query-result", csv.to_str().unwrap()];
    for inv in inventory {
        back_args.extend(["-i", inv]);
    }
    let from_sql: serde_json::Value = serde_json::from_slice(&zerogate(&back_args)).unwrap();
    let (mut direct, mut from_sql) = (direct, from_sql);
    approximate_counts(&mut direct, &mut from_sql, name);
    let key = |e: &serde_json::Value| format!("{} -> {} {}/{}", e["client"], e["server"], e["protocol"], e["port"]);
    let index = |m: &serde_json::Value| {
        m["edges"].as_array().unwrap().iter().map(|e| (key(e), e.clone())).collect::<std::collections::BTreeMap<_, _>>()
    };
    let (a, b) = (index(&direct), index(&from_sql));
    let differing: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}:\n  built-in {}\n  from SQL {}",
                a.get(k).map_or("-".into(), |e| e.to_string()),
                b.get(k).map_or("-".into(), |e| e.to_string())
            )
        })
        .collect();
    assert!(differing.is_empty(), "{name}: edges differ:\n{}", differing.join("\n"));
    for part in ["noise", "assets"] {
        assert_eq!(direct[part], from_sql[part], "{name}: `{part}` differs");
    }
    for field in
        ["records", "traffic_records", "nodata_records", "skipdata_records", "noise_records", "nat_translated_records"]
    {
        assert_eq!(direct["coverage"][field], from_sql["coverage"][field], "{name}: coverage.{field}");
    }
    let strip = |v: &serde_json::Value| {
        let mut list = v["coverage"]["interfaces"].as_array().unwrap().clone();
        for i in &mut list {
            i.as_object_mut().unwrap().remove("skipdata_windows");
        }
        list
    };
    assert_eq!(strip(&direct), strip(&from_sql), "{name}: interfaces");
    let _ = std::fs::remove_dir_all(dir);
    direct
}

/// Above 128 the built-in aggregator estimates distinct counts (HyperLogLog) where SQL counts
/// exactly: check such counts agree within the estimate's error, then align them.
fn approximate_counts(direct: &mut serde_json::Value, from_sql: &mut serde_json::Value, name: &str) {
    let align = |a: &mut serde_json::Value, b: &mut serde_json::Value, field: &str| {
        let (x, y) = (a[field].as_u64().unwrap(), b[field].as_u64().unwrap());
        if x.max(y) > 128 {
            let error = (x as f64 - y as f64).abs() / y as f64;
            assert!(error < 0.1, "{name}: {field} {x} vs {y}");
            a[field] = b[field].clone();
        }
    };
    let edges_a = direct["edges"].as_array_mut().unwrap();
    let edges_b = from_sql["edges"].as_array_mut().unwrap();
    assert_eq!(edges_a.len(), edges_b.len(), "{name}: number of edges");
    for (a, b) in edges_a.iter_mut().zip(edges_b.iter_mut()) {
        align(a, b, "connections");
        align(a, b, "client_addresses");
        a["connections_exact"] = b["connections_exact"].clone();
    }
    let noise_a = direct["noise"]["targets"].as_array_mut().unwrap();
    let noise_b = from_sql["noise"]["targets"].as_array_mut().unwrap();
    assert_eq!(noise_a.len(), noise_b.len(), "{name}: noise targets");
    for (a, b) in noise_a.iter_mut().zip(noise_b.iter_mut()) {
        align(a, b, "sources");
        align(a, b, "ports");
    }
}

fn sample(name: &str) -> String {
    repo().join("examples/flowlogs").join(name).display().to_string()
}

#[test]
fn aws_samples_agree() {
    for file in [
        "awsdocs-vpc-user-guide/v2-default-examples.log",
        "awsdocs-vpc-user-guide/custom-nat-gateway.log",
        "awsdocs-vpc-user-guide/v3-transit-gateway-path.log",
        "awsdocs-vpc-user-guide/v5-service-path-direction.log",
        "loki_lambda-promtail_vpcflowlog.log.gz",
    ] {
        let map = same_map_both_ways(file.rsplit('/').next().unwrap(), &[&sample(file)], &[]);
        assert!(!map["edges"].as_array().unwrap().is_empty(), "{file}");
    }
}

fn generated(name: &str, format: zerogate_flowgen::Format, seed: u64) -> PathBuf {
    let dir = scratch(&format!("estate-{name}"));
    let spec = zerogate_flowgen::Spec {
        records: 8_000,
        scan_share: 0.3,
        format,
        seed,
        files: 3,
        days: 2,
        ..Default::default()
    };
    zerogate_flowgen::generate(&dir, &spec).unwrap();
    dir
}

#[test]
fn generated_estates_agree() {
    for (name, format) in [
        ("v2", zerogate_flowgen::Format::V2),
        ("v3", zerogate_flowgen::Format::V3),
        ("v8", zerogate_flowgen::Format::V8),
    ] {
        let dir = generated(name, format, 21);
        let inventory = dir.join("inventory.csv");
        let ranges = dir.join("ip-ranges.json");
        let map = same_map_both_ways(
            name,
            &[dir.to_str().unwrap()],
            &[inventory.to_str().unwrap(), ranges.to_str().unwrap()],
        );
        assert!(map["noise"]["records"].as_u64().unwrap() > 1000, "{name}: noise present");
        let _ = std::fs::remove_dir_all(Path::new(&dir));
    }
}

#[test]
fn athena_ddl_names_every_column_and_skips_the_header() {
    let out = zerogate(&[
        "map",
        "--emit-sql",
        "athena",
        "--log-format",
        "${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} ${action} ${log-status}",
        "--s3-location",
        "s3://logs/AWSLogs/123456789012/vpcflowlogs/us-east-1",
    ]);
    let sql = String::from_utf8(out).unwrap();
    assert!(sql.contains("CREATE EXTERNAL TABLE IF NOT EXISTS vpc_flow_logs ("), "{sql}");
    assert!(sql.contains("`log_status` string"));
    assert!(sql.contains("'skip.header.line.count' = '1'"));
    assert!(sql.contains("LOCATION 's3://logs/AWSLogs/123456789012/vpcflowlogs/us-east-1/'"));
    assert!(
        sql.contains("'storage.location.template' = 's3://logs/AWSLogs/123456789012/vpcflowlogs/us-east-1/${day}'")
    );
    assert!(sql.contains("FROM vpc_flow_logs"));
    assert!(!sql.contains("regexp_matches"), "Athena gets Trino functions only");
}
