//! `zerogate gateway --config FILE`, the deployment command, as an operator runs it: it serves
//! the configured application through the full pipeline, refuses to start a second time on an
//! address in use, and stops on SIGTERM with every allowed request on record. Real binary, real
//! TLS, curl.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn zerogate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zerogate"));
    c.env_remove("ZEROGATE_DATA_DIR").env_remove("ZEROGATE_TOKEN");
    c
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A plain HTTP/1.1 upstream answering `hello` to every request, keep-alive.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn curl(port: u16, device: &Path) -> (u16, String) {
    let s = |name: &str| device.join(name).display().to_string();
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}", "--cacert", &s("bundle.pem")])
        .args(["--cert", &s("svid.pem"), "--key", &s("svid.key.pem")])
        .arg(format!("https://localhost:{port}/hello"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn the_gateway_serves_refuses_a_taken_address_and_stops_cleanly() {
    let dir = std::env::temp_dir().join(format!("zerogate-cli-{}-gateway", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policy")).unwrap();
    let data = dir.join("data");
    let d = |p: &PathBuf| p.display().to_string();
    ok(zerogate().args(["ca", "init", "--data-dir", &d(&data), "--trust-domain", "gw.test"]).output().unwrap());
    let device = dir.join("device");
    ok(zerogate()
        .args(["ca", "issue", "--data-dir", &d(&data), "--spiffe-id", "spiffe://gw.test/device/laptop-1"])
        .args(["--out", &d(&device)])
        .output()
        .unwrap());
    std::fs::write(
        dir.join("policy/devices.cedar"),
        "@id(\"devices\")\npermit (principal is Zerogate::Device, action == Zerogate::Action::\"http\", \
         resource in Zerogate::Application::\"hello\") when { context.authn == \"mtls\" };\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("policy/entities.json"),
        r#"[{ "uid": { "type": "Zerogate::Application", "id": "hello" }, "attrs": {}, "parents": [] }]"#,
    )
    .unwrap();
    let port = free_port();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:{port}\"\nid = \"test\"\n[policy]\npolicies = \"policy\"\n\
             entities = \"policy/entities.json\"\n[[app]]\nhost = \"localhost\"\n\
             upstream = \"http://127.0.0.1:{}\"\nresource = 'Zerogate::Application::\"hello\"'\nauthn = [\"mtls\"]\n",
            upstream()
        ),
    )
    .unwrap();

    let mut gateway = zerogate()
        .args(["gateway", "--data-dir", &d(&data), "--config", &d(&config)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let started = loop {
        let line = lines.next().expect("the gateway says where it listens").unwrap();
        if line.starts_with("zerogate gateway") {
            break line;
        }
    };
    assert!(started.contains(&format!("127.0.0.1:{port}")), "{started}");
    std::thread::spawn(move || for _ in lines {});

    // Each new connection gets the whole pipeline.
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl(port, &device).0 != 200 {
        assert!(Instant::now() < deadline, "the gateway never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..12 {
        assert_eq!(curl(port, &device), (200, "hello".to_owned()));
    }
    let refused = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", &d(&device.join("bundle.pem"))])
        .arg(format!("https://localhost:{port}/hello"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "401", "no certificate, no access");

    // A second gateway on the same address fails to start instead of sharing the port.
    let second = zerogate().args(["gateway", "--data-dir", &d(&data), "--config", &d(&config)]).output().unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("in use"), "{stderr}");
    assert_eq!(curl(port, &device).0, 200, "the first gateway still serves");

    // SIGTERM: a clean stop; the log verifies and holds every allowed request.
    Command::new("kill").arg("-TERM").arg(gateway.id().to_string()).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = gateway.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gateway did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let verified = ok(zerogate().args(["audit", "verify", "--data-dir", &d(&data)]).output().unwrap());
    assert!(verified.contains("intact") || verified.contains("ok"), "{verified}");
    let log = std::fs::read_to_string(data.join("audit/audit.log")).unwrap();
    let allowed = log.lines().filter(|l| l.contains("\"decision\":\"allow\"")).count();
    assert!(allowed >= 14, "{allowed} allowed records");
    let _ = std::fs::remove_dir_all(&dir);
}
