//! Audit before allow, under a crash: clients hammer the gateway of `zerogate up`, the process is
//! killed with SIGKILL mid-load, and after a restart the audit log verifies and holds a record of
//! every request that was answered 200 (a request reaches the upstream only after its record is
//! durable, so no allowed request can be missing).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn bin(data_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zerogate"));
    c.env("ZEROGATE_DATA_DIR", data_dir).env_remove("ZEROGATE_TOKEN");
    c
}

fn ok(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Starts `zerogate up`; returns the child and the gateway and control URLs.
fn up(data: &Path) -> (Child, String, String) {
    let mut child = bin(data)
        .args(["up", "--listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = |label: &str| loop {
        let line = lines.next().expect("up prints its addresses").unwrap();
        if line.trim_start().starts_with(label) {
            return line.split_whitespace().nth(1).unwrap().to_owned();
        }
    };
    let gateway = url("gateway");
    let control = url("control");
    std::thread::spawn(move || for _ in lines {});
    (child, gateway, control)
}

#[test]
fn no_allowed_request_is_missing_from_the_log_after_a_crash() {
    let scratch = std::env::temp_dir().join(format!("zerogate-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let data = scratch.join("data");
    let (mut child, gateway, control) = up(&data);
    let token = ok(bin(&data).args(["ca", "token", "create", "--spiffe-id", "spiffe://zerogate.local/device/loadgen"]));
    let identity: PathBuf = scratch.join("loadgen");
    ok(bin(&data).args(["enroll", "--server", &control, "--token", token.trim(), "--dir"]).arg(&identity));

    let answered = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (answered, stop, gateway, identity) =
                (Arc::clone(&answered), Arc::clone(&stop), gateway.clone(), identity.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let path = format!("/load-{worker}-{i}");
                    let out = Command::new("curl")
                        .args(["-s", "--max-time", "2", "-o", "/dev/null", "-w", "%{http_code}"])
                        .arg("--cacert")
                        .arg(identity.join("bundle.pem"))
                        .arg("--cert")
                        .arg(identity.join("svid.pem"))
                        .arg("--key")
                        .arg(identity.join("svid.key.pem"))
                        .arg(format!("{gateway}{path}"))
                        .output()
                        .unwrap();
                    if out.stdout == b"200" {
                        answered.lock().unwrap().insert(path);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap(); // SIGKILL: no shutdown, no final checkpoint
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 20, "only {} requests were answered before the crash", answered.len());

    // Restart on the same data: the log is opened (a torn last line, never acknowledged, is cut),
    // it verifies, and every answered request has its record.
    let (mut child, _, _) = up(&data);
    child.kill().unwrap();
    child.wait().unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(bin(&data).args(["audit", "verify", "--json"]))).unwrap();
    assert_eq!(report["problem_count"], 0, "{report}");
    let log = std::fs::read_to_string(data.join("audit/audit.log")).unwrap();
    let missing: Vec<&String> = answered.iter().filter(|path| !log.contains(&format!("\"path\":\"{path}\""))).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no record: {missing:?}",
        missing.len(),
        answered.len()
    );
}
