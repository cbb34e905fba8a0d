//! `zerogate audit` on a log that has rolled over into segments: `verify` checks them as one
//! chain and names the file where one was changed, and `tail`, `show` and `shadow` read across
//! them. The log is written by zerogate's own writer (with small segments), read by the binary.

use std::path::{Path, PathBuf};

mod common;

use common::{ok, zerogate};
use zerogate_audit::{AuditLog, CheckpointKey, Decision, DecisionRecord, Options, RequestSummary};

fn record(i: u64) -> DecisionRecord {
    DecisionRecord {
        at_ms: 1_800_000_000_000 + i as i64,
        gateway: "gw-a".into(),
        principal: Some(format!("Zerogate::User::\"user-{}\"", i % 3)),
        credential: None,
        resource: "Zerogate::Application::\"wiki\"".into(),
        action: "Zerogate::Action::\"http\"".into(),
        request: RequestSummary {
            method: Some("GET".into()),
            host: Some("wiki.example.org".into()),
            path: Some(format!("/page/{i}")),
            source: None,
        },
        decision: if i.is_multiple_of(4) { Decision::ShadowDeny } else { Decision::Allow },
        policies: vec![],
        errors: vec![],
        reauthorization: false,
    }
}

/// A log of `n` records in segments of about 4 KiB, and its public key's file.
fn segmented_log(dir: &Path, n: u64) -> (PathBuf, PathBuf) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("audit.log");
    let key = CheckpointKey::generate().unwrap();
    let public = dir.join("checkpoint.pub");
    std::fs::write(&public, key.public_key_b64()).unwrap();
    let options = Options { segment_bytes: Some(4096), ..Options::default() };
    let log = AuditLog::open(&path, key, options).unwrap();
    for i in 1..=n {
        log.append(&record(i)).unwrap();
    }
    log.close();
    (path, public)
}

fn audit(log: &Path, args: &[&str]) -> std::process::Output {
    zerogate().arg("audit").args(args).arg("--log").arg(log).output().unwrap()
}

#[test]
fn the_audit_commands_read_a_log_in_segments_as_one() {
    let dir = std::env::temp_dir().join(format!("zerogate-cli-{}-audit-segments", std::process::id()));
    let (log, public) = segmented_log(&dir, 120);
    let files = zerogate_audit::segments(&log).unwrap();
    assert!(files.len() > 3, "{files:?}");
    let key = public.display().to_string();

    let text = ok(audit(&log, &["verify", "--public-key", &key]));
    assert!(text.contains("120 records") && text.trim_end().ends_with("intact"), "{text}");
    assert!(text.contains(&format!("in {} files", files.len())), "{text}");

    // The first record, in the oldest segment, by its line and by GATEWAY:SEQ.
    let first: serde_json::Value = serde_json::from_str(&ok(audit(&log, &["show", "gw-a:1"]))).unwrap();
    assert_eq!((first["seq"].as_u64(), first["record"]["request"]["path"].as_str()), (Some(1), Some("/page/1")));
    let tail = ok(audit(&log, &["tail", "-n", "200", "--json"]));
    assert_eq!(tail.lines().filter(|l| l.contains("\"kind\":\"decision\"")).count(), 120, "every segment's records");
    // The last few, in order, however many segments they span.
    let every: Vec<u64> =
        tail.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap()).collect();
    let live_lines = std::fs::read_to_string(&log).unwrap().lines().count();
    for n in [1, 3, live_lines + 2] {
        let last = ok(audit(&log, &["tail", "-n", &n.to_string(), "--json"]));
        let seqs: Vec<u64> = last
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, every[every.len() - n..], "tail -n {n}");
    }

    // Every fourth request let through by shadow mode, across all segments.
    let report: serde_json::Value = serde_json::from_str(&ok(audit(&log, &["shadow", "--json"]))).unwrap();
    let wiki = &report["apps"][0];
    assert_eq!((wiki["allowed"].as_u64(), wiki["would_be_refused"].as_u64()), (Some(90), Some(30)));
    assert_eq!(wiki["groups"].as_array().unwrap().len(), 3, "one group per user");

    // A record changed in a middle segment: TAMPERED, exit 1, that file named.
    let middle = &files[1];
    let original = std::fs::read_to_string(middle).unwrap();
    std::fs::write(middle, original.replacen("/page/", "/PAGE/", 1)).unwrap();
    let out = audit(&log, &["verify", "--public-key", &key]);
    let text = String::from_utf8_lossy(&out.stdout);
    let name = middle.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("{name} line")) && text.contains("TAMPERED"), "{text}");
    std::fs::write(middle, original).unwrap();

    // The oldest segment shipped away: intact from where it starts, and said so.
    std::fs::remove_file(&files[0]).unwrap();
    let text = ok(audit(&log, &["verify", "--public-key", &key]));
    assert!(text.contains("segments before it are not here") && text.trim_end().ends_with("intact"), "{text}");
    let out = audit(&log, &["show", "1"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no line 1"));
    let _ = std::fs::remove_dir_all(&dir);
}
