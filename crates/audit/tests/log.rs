//! The audit log as a gateway and an auditor use it: concurrent appends that are durable when
//! acknowledged, reopening, and `verify` finding every kind of tampering and saying where.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zerogate_audit::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zerogate-audit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn record(i: u64) -> DecisionRecord {
    DecisionRecord {
        at_ms: 1_800_000_000_000 + i as i64,
        gateway: "gw-1".into(),
        principal: Some(format!("spiffe://example.org/workload/w{i}")),
        credential: Some(Credential { kind: "mtls".into(), id: format!("serial-{i}"), also_known_as: Vec::new() }),
        resource: "app:billing".into(),
        action: "GET".into(),
        request: RequestSummary {
            method: Some("GET".into()),
            host: Some("billing".into()),
            path: Some("/".into()),
            source: None,
        },
        decision: if i.is_multiple_of(3) { Decision::Deny } else { Decision::Allow },
        policies: vec!["policy0".into()],
        errors: vec![],
        reauthorization: false,
    }
}

fn check(path: &Path, key: &str) -> Report {
    verify(BufReader::new(std::fs::File::open(path).unwrap()), key).unwrap()
}

fn write_log(name: &str, n: u64, every: u64) -> (PathBuf, String) {
    let dir = scratch(name);
    let path = dir.join("audit.log");
    let key = CheckpointKey::generate().unwrap();
    let public = key.public_key_b64();
    let log = AuditLog::open(&path, key, Options { checkpoint_every: every, ..Options::default() }).unwrap();
    for i in 0..n {
        log.append(&record(i)).unwrap();
    }
    log.close();
    (path, public)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn rewrite(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

#[test]
fn concurrent_appends_form_one_chain() {
    let dir = scratch("concurrent");
    let path = dir.join("audit.log");
    let key = CheckpointKey::generate().unwrap();
    let public = key.public_key_b64();
    let log = Arc::new(AuditLog::open(&path, key, Options { checkpoint_every: 100, ..Options::default() }).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..250).map(|i| log.append(&record(t * 1000 + i)).unwrap().seq).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 2000, "every append got its own place");
    log.close();
    let report = check(&path, &public);
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 2000);
    assert!(report.checkpoints >= 20);
    assert_eq!(report.unsigned_tail, 0, "closing signs the head");
    // After close, appends are refused: the caller is told.
    assert_eq!(log.append(&record(0)), Err(AuditError::Closed));
}

#[test]
fn two_writers_on_one_file_keep_one_chain() {
    // The server and a CLI command append to the same log, each with its own writer.
    let dir = scratch("two-writers");
    let path = dir.join("audit.log");
    let key = CheckpointKey::generate().unwrap();
    let public = key.public_key_b64();
    let pkcs8 = key.pkcs8().to_vec();
    let a = Arc::new(AuditLog::open(&path, key, Options { checkpoint_every: 50, ..Options::default() }).unwrap());
    let b = Arc::new(
        AuditLog::open(
            &path,
            CheckpointKey::from_pkcs8(&pkcs8).unwrap(),
            Options { checkpoint_every: 50, ..Options::default() },
        )
        .unwrap(),
    );
    let handles: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(w, log)| {
            std::thread::spawn(move || (0..300).for_each(|i| drop(log.append(&record(w as u64 * 1000 + i)).unwrap())))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    a.close();
    b.close();
    let report = check(&path, &public);
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 600);
}

#[test]
fn reopening_continues_the_chain_and_cuts_an_unacknowledged_tail() {
    let (path, public) = write_log("reopen", 10, 1000);
    // A crash in the middle of a write: half a line at the end.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"seq\":12,\"prev\":\"ab");
    std::fs::write(&path, &bytes).unwrap();
    let key = CheckpointKey::generate().unwrap();
    let other_public = key.public_key_b64();
    let log = AuditLog::open(&path, key, Options::default()).unwrap();
    let receipt = log.append(&record(99)).unwrap();
    assert_eq!(receipt.seq, 12, "10 records and a checkpoint before it");
    log.close();
    // Signed by two keys now: the old checkpoint fails under the new key, and the other way.
    let report = check(&path, &public);
    assert_eq!(report.records, 11);
    assert_eq!(report.problem_count, 1, "{:?}", report.problems);
    assert_eq!(check(&path, &other_public).problem_count, 1);
}

#[test]
fn every_kind_of_tampering_is_found_where_it_happened() {
    let (path, public) = write_log("tamper", 30, 10);
    let original = lines(&path);
    assert!(check(&path, &public).is_intact());

    // Modified: line 5 says allow instead of deny.
    let mut l = original.clone();
    assert!(l[4].contains("\"decision\":\"allow\"") || l[4].contains("\"decision\":\"deny\""));
    l[4] = l[4].replace("\"decision\":\"deny\"", "\"decision\":\"allow\"").replace("w4\"", "w4x\"");
    rewrite(&path, &l);
    let r = check(&path, &public);
    assert_eq!(r.problems[0].line, 6, "{:?}", r.problems);
    assert!(r.problems[0].what.contains("does not follow line 5: that line was modified"), "{:?}", r.problems);

    // Removed: line 8 gone.
    let mut l = original.clone();
    l.remove(7);
    rewrite(&path, &l);
    let r = check(&path, &public);
    assert_eq!(r.problems[0].line, 8);
    assert!(r.problems[0].what.contains("removed"), "{:?}", r.problems);

    // Reordered: lines 12 and 13 swapped.
    let mut l = original.clone();
    l.swap(11, 12);
    rewrite(&path, &l);
    let r = check(&path, &public);
    assert_eq!(r.problems[0].line, 12);
    assert!(r.problems.iter().any(|p| p.what.contains("reordered")), "{:?}", r.problems);

    // Inserted: a well-formed forged line after line 3.
    let mut l = original.clone();
    let forged = l[2].replace("\"seq\":3,", "\"seq\":4,");
    l.insert(3, forged);
    rewrite(&path, &l);
    let r = check(&path, &public);
    assert_eq!(r.problems[0].line, 4, "{:?}", r.problems);

    // A checkpoint re-signed with another key, or its signature altered.
    let mut l = original.clone();
    let at = l.iter().position(|x| x.contains("\"kind\":\"checkpoint\"")).unwrap();
    l[at] = l[at].replace("\"signature\":\"", "\"signature\":\"AAAA");
    rewrite(&path, &l);
    let r = check(&path, &public);
    assert!(r.problems.iter().any(|p| p.line == at as u64 + 1 && p.what.contains("signature")), "{:?}", r.problems);

    // Cut in the middle of the last line.
    let mut bytes = original.iter().map(|x| format!("{x}\n")).collect::<String>().into_bytes();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&path, bytes).unwrap();
    let r = check(&path, &public);
    assert!(r.problems.iter().any(|p| p.what.contains("incomplete")), "{:?}", r.problems);

    // Records after the last checkpoint are reported as not yet signed.
    rewrite(&path, &original[..original.len() - 1]);
    assert!(check(&path, &public).unsigned_tail > 0);
}

#[test]
fn attacker_controlled_fields_stay_inside_one_record() {
    let dir = scratch("inject");
    let path = dir.join("audit.log");
    let key = CheckpointKey::generate().unwrap();
    let public = key.public_key_b64();
    let log = AuditLog::open(&path, key, Options::default()).unwrap();
    let mut hostile = record(1);
    let forged_line = format!("\n{{\"seq\":2,\"prev\":\"{}\",\"kind\":\"decision\"}}\n", GENESIS);
    hostile.request.path = Some(format!("/a\r\nb\0c\u{1b}[31m{forged_line}"));
    hostile.request.host = Some("h".repeat(1 << 20));
    hostile.principal = Some("\u{2028}\u{feff}\"},{\"x\":\"".into());
    log.append(&hostile).unwrap();
    log.append(&record(2)).unwrap();
    log.close();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3, "two records and the closing checkpoint");
    assert!(text.len() < 64 * 1024, "a 1 MiB field is cut");
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let back: DecisionRecord = serde_json::from_value(first["record"].clone()).unwrap();
    assert!(back.request.path.unwrap().contains("\r\nb\0c"), "values come back exactly");
    assert!(back.request.host.unwrap().contains("bytes cut"));
    assert!(check(&path, &public).is_intact());
}

#[test]
fn a_record_is_written_as_its_own_json_with_only_oversized_fields_cut() {
    // Within the bounds the line holds exactly the record's serde form: readers (verify,
    // jq, DuckDB) see the same fields, in the same order.
    let mut within = record(4);
    within.request.source = Some("10.0.0.7".into());
    within.errors = vec!["authentication: no_credential".into()];
    assert_eq!(within.to_json(), serde_json::to_string(&within).unwrap());
    let bare = DecisionRecord { principal: None, credential: None, request: RequestSummary::default(), ..record(5) };
    assert_eq!(bare.to_json(), serde_json::to_string(&bare).unwrap());
    // Past them: a long field is cut and marked, a long list keeps its first 64 entries.
    let mut over = record(6);
    over.resource = "r".repeat(10_000);
    over.policies = (0..100).map(|i| format!("policy{i}")).collect();
    let back: DecisionRecord = serde_json::from_str(&over.to_json()).unwrap();
    assert!(back.resource.starts_with("rrrr") && back.resource.ends_with("[5904 bytes cut]"), "{}", back.resource);
    assert_eq!(back.policies.len(), 64);
    assert_eq!(back.policies[63], "policy63");
}

#[test]
fn a_log_that_cannot_be_written_refuses_appends() {
    let dir = scratch("full");
    let path = dir.join("audit.log");
    let log = AuditLog::open(&path, CheckpointKey::generate().unwrap(), Options::default()).unwrap();
    log.append(&record(1)).unwrap();
    drop(log);
    // /dev/full accepts the open and fails every write with ENOSPC, like a full disk.
    if Path::new("/dev/full").exists() {
        let log =
            AuditLog::open(Path::new("/dev/full"), CheckpointKey::generate().unwrap(), Options::default()).unwrap();
        let err = log.append(&record(2)).unwrap_err();
        assert!(matches!(err, AuditError::Io { .. }), "{err:?}");
        // And again: every append is told, none is acknowledged.
        assert!(log.append(&record(3)).is_err());
    }
    // A log whose last line is not a record is not continued.
    std::fs::write(&path, b"garbage\n").unwrap();
    assert!(matches!(
        AuditLog::open(&path, CheckpointKey::generate().unwrap(), Options::default()),
        Err(AuditError::Corrupt { .. })
    ));
}

/// Options that roll the log over every `bytes`.
fn rolling(bytes: u64) -> Options {
    Options { checkpoint_every: 1000, segment_bytes: Some(bytes), ..Options::default() }
}

fn first_line(path: &Path) -> serde_json::Value {
    serde_json::from_str(&lines(path)[0]).unwrap()
}

fn last_line(path: &Path) -> serde_json::Value {
    serde_json::from_str(lines(path).last().unwrap()).unwrap()
}

#[test]
fn a_log_rolls_over_into_segments_that_verify_as_one_chain() {
    let dir = scratch("segments");
    let path = dir.join("audit.log");
    let key = CheckpointKey::generate().unwrap();
    let (public, pkcs8) = (key.public_key_b64(), key.pkcs8().to_vec());
    let log = AuditLog::open(&path, key, rolling(4096)).unwrap();
    let seqs: Vec<u64> = (0..200).map(|i| log.append(&record(i)).unwrap().seq).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "each append after the one before");
    let files = segments(&path).unwrap();
    assert!(files.len() > 5, "{files:?}");
    assert_eq!(files.last(), Some(&path), "the live file last");
    for (closed, next) in files.iter().zip(files.iter().skip(1)) {
        let (end, start) = (last_line(closed), first_line(next));
        assert_eq!(end["kind"], "checkpoint", "{closed:?} ends signed");
        assert_eq!(start["kind"], "checkpoint", "{next:?} opens signed");
        assert_eq!(start["seq"].as_u64(), end["seq"].as_u64().map(|seq| seq + 1), "the chain goes on");
        let name = closed.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name, format!("audit.log.{:020}", first_line(closed)["seq"].as_u64().unwrap()));
        assert!(std::fs::metadata(closed).unwrap().len() < 4096 + 2048, "rolled over near its size");
    }
    // Reopened, the log goes on in its live file; read whole, it is one chain.
    log.close();
    let log = AuditLog::open(&path, CheckpointKey::from_pkcs8(&pkcs8).unwrap(), rolling(4096)).unwrap();
    let next = log.append(&record(200)).unwrap().seq;
    assert!(next > *seqs.last().unwrap());
    log.close();
    let report = verify_log(&path, &public).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!((report.records, report.first_seq, report.files.len()), (201, 1, segments(&path).unwrap().len()));
    assert_eq!(report.unsigned_tail, 0);
    // The live file alone verifies from the signed checkpoint it opens with, and says so.
    let alone = check(&path, &public);
    assert!(alone.is_intact() && alone.first_seq > 1, "{alone:?}");
}

#[test]
fn tampering_in_a_segment_is_named_with_its_file_and_removed_segments_are_found() {
    let dir = scratch("segments-tampered");
    let path = dir.join("audit.log");
    let key = CheckpointKey::generate().unwrap();
    let public = key.public_key_b64();
    let log = AuditLog::open(&path, key, rolling(4096)).unwrap();
    (0..200).for_each(|i| drop(log.append(&record(i)).unwrap()));
    log.close();
    let files = segments(&path).unwrap();
    let second = &files[1];
    let name = second.file_name().unwrap().to_string_lossy().into_owned();
    let original = lines(second);
    let mut changed = original.clone();
    changed[3] = changed[3].replace("\"decision\":\"allow\"", "\"decision\":\"deny\"").replace("w", "W");
    rewrite(second, &changed);
    let report = verify_log(&path, &public).unwrap();
    assert!(!report.is_intact());
    let problem = &report.problems[0];
    assert_eq!((problem.file.as_str(), problem.line), (name.as_str(), 5), "the line after the modified one");
    rewrite(second, &original);
    assert!(verify_log(&path, &public).unwrap().is_intact(), "put back, intact again");

    // A segment taken out of the middle: the next one does not follow.
    let kept = std::fs::read(&files[2]).unwrap();
    std::fs::remove_file(&files[2]).unwrap();
    let report = verify_log(&path, &public).unwrap();
    assert!(report.problems.iter().any(|p| p.what.contains("removed")), "{:?}", report.problems);
    std::fs::write(&files[2], kept).unwrap();

    // The oldest segments shipped elsewhere and deleted: the rest verifies from where it starts.
    std::fs::remove_file(&files[0]).unwrap();
    std::fs::remove_file(&files[1]).unwrap();
    let report = verify_log(&path, &public).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.first_seq, first_line(&files[2])["seq"].as_u64().unwrap());
    // But not from a line that is no signed checkpoint: the start of a segment cut away.
    let mut cut = lines(&files[2]);
    cut.remove(0);
    rewrite(&files[2], &cut);
    assert!(!verify_log(&path, &public).unwrap().is_intact());
}

#[test]
fn two_writers_roll_one_log_over_together() {
    let dir = scratch("segments-two-writers");
    let path = dir.join("audit.log");
    let key = CheckpointKey::generate().unwrap();
    let (public, pkcs8) = (key.public_key_b64(), key.pkcs8().to_vec());
    let a = Arc::new(AuditLog::open(&path, key, rolling(8192)).unwrap());
    let b = Arc::new(AuditLog::open(&path, CheckpointKey::from_pkcs8(&pkcs8).unwrap(), rolling(8192)).unwrap());
    let handles: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(w, log)| {
            std::thread::spawn(move || {
                (0..300).map(|i| log.append(&record(w as u64 * 1000 + i)).unwrap().seq).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    a.close();
    b.close();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 600, "every append its own line, across rollovers by either writer");
    let report = verify_log(&path, &public).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 600);
    assert!(report.files.len() > 5, "{:?}", report.files);
}

#[test]
fn a_rollover_cut_short_is_finished_by_the_next() {
    // A crash after the live file got its segment name, before the new live file was put in
    // place: both names are one file.
    let dir = scratch("segments-cut-short");
    let path = dir.join("audit.log");
    let key = CheckpointKey::generate().unwrap();
    let (public, pkcs8) = (key.public_key_b64(), key.pkcs8().to_vec());
    let log = AuditLog::open(&path, key, Options { segment_bytes: None, ..Options::default() }).unwrap();
    (0..20).for_each(|i| drop(log.append(&record(i)).unwrap()));
    log.close();
    std::fs::hard_link(&path, dir.join(format!("audit.log.{:020}", 1))).unwrap();
    std::fs::write(dir.join("audit.log.next"), "half a file").unwrap();
    assert_eq!(segments(&path).unwrap(), vec![path.clone()], "one file, read once");
    let log = AuditLog::open(&path, CheckpointKey::from_pkcs8(&pkcs8).unwrap(), rolling(4096)).unwrap();
    // (The first append finds the file past its size: it rolls over once.)
    (20..25).for_each(|i| drop(log.append(&record(i)).unwrap()));
    log.close();
    let files = segments(&path).unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(!dir.join("audit.log.next").exists());
    let report = verify_log(&path, &public).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 25);
}

#[test]
fn a_rollover_that_cannot_happen_is_not_retried_on_every_batch() {
    // Another file already has the name the first segment would take: the rollover fails, the
    // appends do not, and the live file gets a closing checkpoint per attempt, not per batch.
    let dir = scratch("segments-blocked");
    let path = dir.join("audit.log");
    let blocker = dir.join(format!("audit.log.{:020}", 1));
    std::fs::write(&blocker, "not ours\n").unwrap();
    let key = CheckpointKey::generate().unwrap();
    let public = key.public_key_b64();
    let log = AuditLog::open(&path, key, Options { segment_bytes: Some(16_384), ..Options::default() }).unwrap();
    (0..200).for_each(|i| drop(log.append(&record(i)).unwrap()));
    log.close();
    let checkpoints = lines(&path).iter().filter(|l| l.contains("\"kind\":\"checkpoint\"")).count();
    assert!(checkpoints < 60, "{checkpoints} checkpoints for about 170 batches past the size");
    assert!(checkpoints > 3, "it was tried again as the file grew: {checkpoints}");
    assert_eq!(std::fs::read_to_string(&blocker).unwrap(), "not ours\n", "never written over");
    let report = check(&path, &public);
    assert!(report.is_intact() && report.records == 200, "{report:?}");
}

/// A log of 10 records and its closing checkpoint, with the key it is signed with.
fn closed_log(name: &str) -> (PathBuf, Vec<u8>) {
    let path = scratch(name).join("audit.log");
    let pkcs8 = CheckpointKey::generate().unwrap().pkcs8().to_vec();
    let log = AuditLog::open(&path, CheckpointKey::from_pkcs8(&pkcs8).unwrap(), Options::default()).unwrap();
    for i in 0..10 {
        log.append(&record(i)).unwrap();
    }
    log.close();
    (path, pkcs8)
}

/// Another writer (another process) in the middle of its batch: it holds the log's lock and
/// has written the first half of a record that continues the chain. Returns its file (locked)
/// and the half still to write.
fn half_written(path: &Path) -> (std::fs::File, String) {
    use std::io::Write as _;
    let previous = lines(path).pop().unwrap();
    let value: serde_json::Value = serde_json::from_str(&previous).unwrap();
    let prev: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, previous.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let seq = value["seq"].as_u64().unwrap() + 1;
    let line =
        format!("{{\"seq\":{seq},\"prev\":\"{prev}\",\"kind\":\"decision\",\"record\":{}}}\n", record(42).to_json());
    let (first, rest) = line.split_at(line.len() / 2);
    let mut other = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    other.lock().unwrap();
    other.write_all(first.as_bytes()).unwrap();
    (other, rest.to_owned())
}

/// The other writer finishes its line and lets go of the lock.
fn finish(mut other: std::fs::File, rest: &str) {
    use std::io::Write as _;
    other.write_all(rest.as_bytes()).unwrap();
    other.sync_data().unwrap();
    other.unlock().unwrap();
}

#[test]
fn opening_a_log_waits_for_a_writer_in_the_middle_of_its_write() {
    let (path, pkcs8) = closed_log("open-while-writing");
    let key = || CheckpointKey::from_pkcs8(&pkcs8).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    let (other, rest) = half_written(&path);
    let opening = {
        let (path, key) = (path.clone(), key());
        std::thread::spawn(move || {
            let log = AuditLog::open(&path, key, Options::default()).unwrap();
            let receipt = log.append(&record(43)).unwrap();
            log.close();
            receipt.seq
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!opening.is_finished(), "opening waits for the other writer's lock");
    let now = std::fs::metadata(&path).unwrap().len();
    assert!(now > before, "the line being written is not cut off as if a crash had left it");
    finish(other, &rest);
    assert_eq!(opening.join().unwrap(), 13, "appended after the other writer's record");
    let report = check(&path, &key().public_key_b64());
    assert_eq!((report.records, report.problem_count), (12, 0), "{:?}", report.problems);
}

#[test]
fn a_reader_waits_for_a_batch_in_the_middle_of_its_write_instead_of_calling_it_cut_off() {
    let (path, pkcs8) = closed_log("verify-while-writing");
    let public = CheckpointKey::from_pkcs8(&pkcs8).unwrap().public_key_b64();
    let (other, rest) = half_written(&path);
    let verifying = {
        let path = path.clone();
        std::thread::spawn(move || verify_log(&path, &public).unwrap())
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!verifying.is_finished(), "the reader takes the log's length between two batches");
    finish(other, &rest);
    let report = verifying.join().unwrap();
    assert_eq!((report.records, report.problem_count), (11, 0), "{:?}", report.problems);
}

#[test]
fn a_reader_sees_one_consistent_chain_while_the_log_rolls_over() {
    let dir = scratch("snapshot");
    let path = dir.join("audit.log");
    let key = CheckpointKey::generate().unwrap();
    let log = AuditLog::open(&path, key, rolling(4096)).unwrap();
    for i in 0..60 {
        log.append(&record(i)).unwrap();
    }
    let snapshot = open_segments(&path).unwrap();
    let live_first = first_line(&path)["seq"].as_u64().unwrap();
    // The log rolls over more than once before the snapshot is read.
    for i in 60..200 {
        log.append(&record(i)).unwrap();
    }
    assert!(first_line(&path)["seq"].as_u64().unwrap() > live_first, "it rolled over");
    let mut seqs = Vec::new();
    for segment in snapshot {
        let text = std::io::read_to_string(segment.open().unwrap()).unwrap();
        seqs.extend(
            text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap()),
        );
    }
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "every line once, in order, none missing");
    assert!(seqs.len() >= 60, "at least what was written before the snapshot");
    log.close();
    let _ = std::fs::remove_dir_all(&dir);
}
