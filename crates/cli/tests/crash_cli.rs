//! Audit before allow, under a crash: clients hammer `zerogate gateway` in front of an upstream
//! that records every request reaching it, the gateway is killed with SIGKILL mid-load, and after
//! a restart the audit log verifies and holds an allow record for every request the upstream
//! received, answered or not (a request reaches the upstream only after its record is durable).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

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

/// Starts `zerogate gateway --config` on `data`; returns the child and the gateway's URL.
fn start_gateway(data: &Path, config: &Path) -> (Child, String) {
    let mut child = bin(data)
        .args(["gateway", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = loop {
        let line = lines.next().expect("the gateway says where it listens").unwrap();
        if line.starts_with("zerogate gateway") {
            break line;
        }
    };
    let address = started.split("https://").nth(1).unwrap().split(':').nth(1).unwrap().to_owned();
    std::thread::spawn(move || for _ in lines {});
    (child, format!("https://localhost:{address}"))
}

#[test]
fn no_request_that_reached_the_upstream_is_missing_from_the_log_after_a_crash() {
    let scratch = std::env::temp_dir().join(format!("zerogate-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(scratch.join("policy")).unwrap();
    let data = scratch.join("data");
    ok(bin(&data).args(["ca", "init", "--trust-domain", "crash.test"]));
    let identity: PathBuf = scratch.join("loadgen");
    ok(bin(&data).args(["ca", "issue", "--spiffe-id", "spiffe://crash.test/device/loadgen", "--out"]).arg(&identity));
    std::fs::write(
        scratch.join("policy/devices.cedar"),
        "@id(\"devices\")\npermit (principal is Zerogate::Device, action == Zerogate::Action::\"http\", \
         resource in Zerogate::Application::\"hello\") when { context.authn == \"mtls\" };\n",
    )
    .unwrap();
    std::fs::write(
        scratch.join("policy/entities.json"),
        r#"[{ "uid": { "type": "Zerogate::Application", "id": "hello" }, "attrs": {}, "parents": [] }]"#,
    )
    .unwrap();
    // The upstream lives outside the gateway's process: it keeps what reached it when the
    // gateway dies, including requests whose answers never got back.
    let reached = Arc::new(Mutex::new(BTreeSet::new()));
    let config = scratch.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:{}\"\nid = \"crash\"\n[policy]\npolicies = \"policy\"\n\
             entities = \"policy/entities.json\"\n[[app]]\nhost = \"localhost\"\n\
             upstream = \"http://127.0.0.1:{}\"\nresource = 'Zerogate::Application::\"hello\"'\nauthn = [\"mtls\"]\n",
            common::free_port(),
            common::upstream(Some(Arc::clone(&reached)))
        ),
    )
    .unwrap();
    let (mut child, gateway) = start_gateway(&data, &config);

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
    std::thread::sleep(Duration::from_millis(2000));
    child.kill().unwrap(); // SIGKILL: no shutdown, no final checkpoint
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    let reached = reached.lock().unwrap().clone();
    assert!(answered.len() >= 20, "only {} requests were answered before the crash", answered.len());
    assert!(answered.is_subset(&reached), "answered without reaching the upstream?");

    // Restart on the same data: the log is opened (a torn last line, never acknowledged, is cut),
    // it verifies, and every request that reached the upstream has its allow record.
    let (mut child, _) = start_gateway(&data, &config);
    child.kill().unwrap();
    child.wait().unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(bin(&data).args(["audit", "verify", "--json"]))).unwrap();
    assert_eq!(report["problem_count"], 0, "{report}");
    let allowed: BTreeSet<String> = std::fs::read_to_string(data.join("audit/audit.log"))
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["record"]["decision"] == "allow")
        .filter_map(|line| line["record"]["request"]["path"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = reached.difference(&allowed).collect();
    assert!(
        missing.is_empty(),
        "{} of {} requests that reached the upstream have no allow record: {missing:?}",
        missing.len(),
        reached.len()
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
