//! `zerogate up`, as a new user runs it: first start creates everything, the printed next steps
//! work (token, enroll, curl through the gateway to the demo application, `zerogate connect` to
//! the demo TCP service), refusals are answered
//! and recorded, a policy edit applies without a restart (and a broken one is refused), a
//! revocation applies to the next request, and a restart keeps everything. Real binary, real
//! TLS, curl, on loopback.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin(data_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zerogate"));
    c.env("ZEROGATE_DATA_DIR", data_dir).env_remove("ZEROGATE_TOKEN");
    c
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running `zerogate up`, stopped with SIGTERM on drop.
struct Up {
    child: Child,
    gateway: String,
    control: String,
    admin: String,
}

impl Up {
    fn start(data: &Path) -> Self {
        let mut child = bin(data)
            .args(["up", "--listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut found = |label: &str| loop {
            let line = lines.next().expect("up prints its addresses").unwrap();
            if line.trim_start().starts_with(label) {
                return line.split_whitespace().nth(1).unwrap().to_owned();
            }
        };
        let gateway = found("gateway");
        let control = found("control");
        let admin = found("admin");
        std::thread::spawn(move || for _ in lines {});
        Up { child, gateway, control, admin }
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(up: &Up, path: &str, identity: Option<&Path>) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-sS", "--path-as-is", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"]);
    if let Some(dir) = identity {
        command.arg("--cacert").arg(dir.join("bundle.pem"));
        command.arg("--cert").arg(dir.join("svid.pem")).arg("--key").arg(dir.join("svid.key.pem"));
    } else {
        command.arg("-k");
    }
    let out = command.arg(format!("{}{path}", up.gateway)).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// Retries `check` for up to 5 s (the policy watcher and revocation refresh run every second).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} did not happen within 5 s");
}

fn enroll(data: &Path, up: &Up, name: &str, into: &Path) -> PathBuf {
    let id = format!("spiffe://zerogate.local/device/{name}");
    let token = ok(bin(data).args(["ca", "token", "create", "--spiffe-id", &id]).output().unwrap()).trim().to_owned();
    let dir = into.join(name);
    ok(bin(data).args(["enroll", "--server", &up.control, "--token", &token, "--dir"]).arg(&dir).output().unwrap());
    dir
}

#[test]
fn up_serves_the_demo_application_behind_the_full_pipeline() {
    let scratch = std::env::temp_dir().join(format!("zerogate-up-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let data = scratch.join("data");
    let up = Up::start(&data);
    assert!(data.join("policy/demo.cedar").exists(), "the demo policy is written on first start");
    assert!(data.join("ca").is_dir(), "the CA is created on first start");

    let laptop = enroll(&data, &up, "laptop-1", &scratch);
    let (status, body) = curl(&up, "/hello", Some(&laptop));
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("hello spiffe://zerogate.local/device/laptop-1"), "{body}");
    assert_eq!(curl(&up, "/hello", None).0, 401, "no client certificate");
    assert_eq!(curl(&up, "/admin", Some(&laptop)).0, 403, "devices are not allowed on /admin");
    assert_eq!(curl(&up, "/a/../admin", Some(&laptop)).0, 400);

    // A policy edit applies without a restart; a broken edit is refused and the last good set stays.
    let policy = data.join("policy/demo.cedar");
    let original = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, format!("{original}\n@id(\"closed\") forbid (principal, action, resource);\n")).unwrap();
    eventually("the forbid-all edit", || curl(&up, "/hello", Some(&laptop)).0 == 403);
    std::fs::write(&policy, "permit (principal, action, resource) when { context.nonexistent };").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(curl(&up, "/hello", Some(&laptop)).0, 403, "the broken set was not applied");
    std::fs::write(&policy, &original).unwrap();
    eventually("the restored policy", || curl(&up, "/hello", Some(&laptop)).0 == 200);

    // Metrics on the admin listener, never on the public one.
    let metrics = Command::new("curl").args(["-sS", &format!("{}/metrics", up.admin)]).output().unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    assert!(metrics.contains("zerogate_requests_total{outcome=\"allow\"}"), "{metrics}");
    assert!(!curl(&up, "/metrics", Some(&laptop)).1.contains("zerogate_requests_total"), "metrics are not public");
    let admin = |path: &str| {
        let out = Command::new("curl").args(["-sS", "-w", "\n%{http_code}", &format!("{}{path}", up.admin)]).output();
        String::from_utf8_lossy(&out.unwrap().stdout).into_owned()
    };
    assert_eq!(admin("/healthz"), "ok\n\n200");
    let jwks = admin("/jwks.json");
    let keys: serde_json::Value = serde_json::from_str(jwks.rsplit_once('\n').unwrap().0).unwrap();
    assert_eq!(keys["keys"][0]["alg"], "ES256", "the keys that verify the identity assertion: {jwks}");
    for path in ["/healthz", "/jwks.json"] {
        let (_, body) = curl(&up, path, Some(&laptop));
        assert!(!body.contains("\"keys\"") && body != "ok\n", "{path} is not served on the public listener: {body}");
    }

    // The demo TCP service, through `zerogate connect` with the same certificate: what is sent
    // comes back, and the tunnel is on record.
    let port = up.gateway.rsplit(':').next().unwrap().trim_end_matches('/').to_owned();
    let mut tunnel = bin(&data)
        .args(["connect", "--gateway", &format!("127.0.0.1:{port}"), "--service", "echo.localhost", "--identity"])
        .arg(&laptop)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = BufReader::new(tunnel.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    // "listening on 127.0.0.1:PORT: connections go to …"
    let local = line.strip_prefix("listening on ").and_then(|rest| rest.split_once(": ")).map(|(at, _)| at.to_owned());
    let local = local.unwrap_or_else(|| panic!("where does it listen? {line}"));
    let echoed = (|| -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&local)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"ping through the tunnel")?;
        let mut back = vec![0u8; 23];
        stream.read_exact(&mut back)?;
        Ok(back)
    })();
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    assert_eq!(echoed.unwrap(), b"ping through the tunnel", "{line}");
    let log = std::fs::read_to_string(data.join("audit/audit.log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("Zerogate::Action::\\\"connect\\\"")
            && l.contains("laptop-1")
            && l.contains("\"decision\":\"allow\"")),
        "the tunnel is on record"
    );

    // openssl, an independent TLS client, with the certificate `zerogate enroll` wrote.
    let port = up.gateway.rsplit(':').next().unwrap().trim_end_matches('/').to_owned();
    // openssl sends the -cert file's first certificate alone: the intermediate goes as -cert_chain.
    let svid = std::fs::read_to_string(laptop.join("svid.pem")).unwrap();
    let intermediate = &svid[svid[1..].find("-----BEGIN CERTIFICATE-----").unwrap() + 1..];
    std::fs::write(scratch.join("intermediate.pem"), intermediate).unwrap();
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
        .arg("-cert")
        .arg(laptop.join("svid.pem"))
        .arg("-cert_chain")
        .arg(scratch.join("intermediate.pem"))
        .arg("-key")
        .arg(laptop.join("svid.key.pem"))
        .arg("-CAfile")
        .arg(laptop.join("bundle.pem"))
        .args(["-ign_eof", "-verify_return_error", "-verify_hostname", "localhost"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    s_client
        .stdin
        .take()
        .unwrap()
        .write_all(format!("GET /hello HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let out = s_client.wait_with_output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer} {}", String::from_utf8_lossy(&out.stderr));
    assert!(answer.contains("hello spiffe://zerogate.local/device/laptop-1"), "{answer}");

    // An API client with an access key, signing with botocore (the AWS SDK for Python's signer).
    let created = ok(bin(&data).args(["ca", "access-key", "create", "--client", "ci-bot", "--json"]).output().unwrap());
    let key: serde_json::Value = serde_json::from_str(&created).unwrap();
    let (id, secret) = (key["access_key_id"].as_str().unwrap(), key["secret_access_key"].as_str().unwrap());
    let presign = |path: &str| {
        let script = "import sys\nfrom botocore.auth import SigV4QueryAuth\nfrom botocore.awsrequest import AWSRequest\nfrom botocore.credentials import Credentials\nr = AWSRequest(method='GET', url=sys.argv[1])\nSigV4QueryAuth(Credentials(sys.argv[2], sys.argv[3]), 'execute-api', 'us-east-1', expires=60).add_auth(r)\nprint(r.url)";
        let out = Command::new("python3")
            .args(["-c", script, &format!("{}{path}", up.gateway), id, secret])
            .output()
            .unwrap();
        assert!(out.status.success(), "botocore: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let call_presigned = |url: &str| {
        let out = Command::new("curl").args(["-sS", "-k", "-o", "-", "-w", "\n%{http_code}", url]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut answer = String::new();
    eventually("the new access key to reach the gateway", || {
        answer = call_presigned(&presign("/api"));
        answer.ends_with("200")
    });
    assert!(answer.starts_with("hello ci-bot"), "{answer}");
    // The same presigned URL twice within its window: the second is a replay.
    let url = presign("/api/once");
    assert!(call_presigned(&url).ends_with("200"));
    assert!(call_presigned(&url).ends_with("401"), "a replayed presigned URL is refused");
    ok(bin(&data).args(["ca", "access-key", "revoke", "--id", id]).output().unwrap());
    eventually("the access key revocation", || call_presigned(&presign("/api")).ends_with("401"));
    assert!(ok(bin(&data).args(["ca", "access-key", "list"]).output().unwrap()).contains("revoked"));

    // A restart keeps the CA, the policy and the identities.
    up.stop();
    let up = Up::start(&data);
    assert_eq!(curl(&up, "/hello", Some(&laptop)).0, 200);

    // Revocation applies to the next request.
    let serial = String::from_utf8(
        Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(laptop.join("svid.pem"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .trim_start_matches("serial=")
    .to_ascii_lowercase();
    ok(bin(&data).args(["ca", "revoke", "--serial", &serial]).output().unwrap());
    eventually("the revocation", || curl(&up, "/hello", Some(&laptop)).0 == 401);
    // An identity revoked as a whole: every certificate it holds, and it cannot renew.
    let tablet = enroll(&data, &up, "tablet-1", &scratch);
    assert_eq!(curl(&up, "/hello", Some(&tablet)).0, 200);
    ok(bin(&data).args(["ca", "revoke", "--spiffe-id", "spiffe://zerogate.local/device/tablet-1"]).output().unwrap());
    eventually("the identity's revocation", || curl(&up, "/hello", Some(&tablet)).0 == 401);
    up.stop();

    // Every decision was recorded and the log verifies, signed to the end after a clean stop.
    let verify = ok(bin(&data).args(["audit", "verify", "--json"]).output().unwrap());
    let report: serde_json::Value = serde_json::from_str(&verify).unwrap();
    assert_eq!(report["problem_count"], 0, "{verify}");
    assert_eq!(report["unsigned_tail"], 0, "{verify}");
    let tail = ok(bin(&data).args(["audit", "tail", "-n", "1000", "--json"]).output().unwrap());
    assert!(tail.contains("demo-admin-workloads-only"), "the forbid on /admin is named");
    assert!(tail.contains("authentication: no_credential"));
}
