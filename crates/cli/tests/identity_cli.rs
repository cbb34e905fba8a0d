//! The whole life of an identity, as users run it: `zerogate ca init`, a token, `zerogate server`,
//! `zerogate enroll` on the device, the certificate used for mutual TLS by curl and openssl,
//! renewal (by command and by `zerogate agent`), revocation, and refusal afterwards; and every
//! kind of bad request refused with an event recorded. Real binaries, real TLS, on loopback.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin(data_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zerogate"));
    c.env("ZEROGATE_DATA_DIR", data_dir).env_remove("ZEROGATE_TOKEN");
    c
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zerogate-id-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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

fn fails(out: Output) -> String {
    assert!(!out.status.success(), "expected failure, got: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running `zerogate server`, killed on drop.
struct Server {
    child: Child,
    url: String,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server(data_dir: &Path) -> Server {
    let mut child = bin(data_dir)
        .args(["server", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("https://")).expect("server prints its URL").to_owned();
    let port = url.rsplit(':').next().unwrap().parse().unwrap();
    Server { child, url, port }
}

fn init(name: &str, extra: &[&str]) -> PathBuf {
    let dir = scratch(name);
    let data = dir.join("data");
    let mut args = vec!["ca", "init", "--trust-domain", "example.org"];
    args.extend_from_slice(extra);
    ok(bin(&data).args(&args).output().unwrap());
    data
}

fn token(data: &Path, id: &str, ttl: &str) -> String {
    ok(bin(data).args(["ca", "token", "create", "--spiffe-id", id, "--ttl", ttl]).output().unwrap()).trim().to_owned()
}

fn serial_of(cert: &Path) -> String {
    let out = Command::new("openssl").args(["x509", "-noout", "-serial", "-in"]).arg(cert).output().unwrap();
    ok(out).trim().trim_start_matches("serial=").to_ascii_lowercase()
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().unwrap()
}

fn events(data: &Path) -> String {
    ok(bin(data).args(["ca", "events", "--limit", "1000", "--json"]).output().unwrap())
}

#[test]
fn life_of_an_identity() {
    let data = init("life", &[]);
    let srv = server(&data);
    let device = data.parent().unwrap().join("device");
    let id = "spiffe://example.org/device/laptop-42";
    let tok = token(&data, id, "15m");

    // Enroll: the key is made on the device; files land with the right modes.
    let out =
        ok(bin(&data).args(["enroll", "--server", &srv.url, "--token", &tok, "--dir"]).arg(&device).output().unwrap());
    assert!(out.contains(id), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(device.join("svid.key.pem")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // The token works once.
    let err = fails(
        bin(&data)
            .args(["enroll", "--server", &srv.url, "--token", &tok, "--dir"])
            .arg(device.join("again"))
            .output()
            .unwrap(),
    );
    assert!(err.contains("already used"), "{err}");

    // openssl verifies the chain as a TLS client certificate.
    let root = data.join("ca/root.pem");
    let chain = device.join("svid.pem");
    let v = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(&chain)
        .arg(&chain)
        .output()
        .unwrap();
    assert!(ok(v).contains("OK"));

    // Mutual TLS with openssl s_client: the server accepts the certificate.
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", srv.port), "-CAfile"])
        .arg(&root)
        .arg("-cert")
        .arg(&chain)
        .arg("-cert_chain")
        .arg(&chain)
        .arg("-key")
        .arg(device.join("svid.key.pem"))
        .args(["-verify_return_error", "-servername", "localhost", "-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    s_client
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let s = s_client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&s.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("HTTP/1.1 200"), "{text}");

    // Mutual TLS with curl: renewal authenticated by the certificate alone.
    let csr_dir = data.parent().unwrap();
    let made = Command::new("openssl")
        .args(["req", "-new", "-key"])
        .arg(device.join("svid.key.pem"))
        .args(["-subj", "/O=device", "-out"])
        .arg(csr_dir.join("renew.csr"))
        .output()
        .unwrap();
    ok(made);
    let body = serde_json::json!({ "csr": std::fs::read_to_string(csr_dir.join("renew.csr")).unwrap() }).to_string();
    let r = curl(&[
        "--cacert",
        root.to_str().unwrap(),
        "--cert",
        chain.to_str().unwrap(),
        "--key",
        device.join("svid.key.pem").to_str().unwrap(),
        "-H",
        "content-type: application/json",
        "-d",
        &body,
        &format!("{}/v1/identity/renew", srv.url),
    ]);
    let reply: serde_json::Value = serde_json::from_str(&ok(r)).unwrap();
    assert_eq!(reply["spiffe_id"], id);
    // Without a client certificate, renewal is refused.
    let r = curl(&[
        "--cacert",
        root.to_str().unwrap(),
        "-d",
        &body,
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        &format!("{}/v1/identity/renew", srv.url),
    ]);
    assert_eq!(ok(r), "401");

    // Renewal by command replaces the certificate file atomically, same key.
    let before = serial_of(&chain);
    ok(bin(&data).args(["enroll", "--renew", "--server", &srv.url, "--dir"]).arg(&device).output().unwrap());
    let after = serial_of(&chain);
    assert_ne!(before, after);
    let list = ok(bin(&data).args(["ca", "list", "--json"]).output().unwrap());
    let renewed: serde_json::Value = list
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|c| c["serial"] == after.as_str())
        .unwrap();
    assert_eq!(renewed["via"], "renew");
    assert_eq!(renewed["renews"], before.as_str());

    // Revoke the current certificate: renewal with it is refused; the CRL lists it.
    ok(bin(&data).args(["ca", "revoke", "--serial", &after, "--reason", "stolen"]).output().unwrap());
    let err =
        fails(bin(&data).args(["enroll", "--renew", "--server", &srv.url, "--dir"]).arg(&device).output().unwrap());
    assert!(err.contains("revoked"), "{err}");
    let crl_path = csr_dir.join("crl.pem");
    ok(bin(&data).args(["ca", "crl", "-o"]).arg(&crl_path).output().unwrap());
    let cas = csr_dir.join("cas.pem");
    std::fs::write(
        &cas,
        [std::fs::read(&root).unwrap(), std::fs::read(data.join("ca/intermediate.pem")).unwrap()].concat(),
    )
    .unwrap();
    let v = Command::new("openssl")
        .args(["verify", "-crl_check", "-CAfile"])
        .arg(&cas)
        .arg("-CRLfile")
        .arg(&crl_path)
        .arg(&chain)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("revoked")
            || String::from_utf8_lossy(&v.stderr).contains("revoked")
    );
    assert!(!v.status.success());
    // The revocation list for gateways names the serial.
    let r = curl(&["--cacert", root.to_str().unwrap(), &format!("{}/v1/identity/revocations", srv.url)]);
    assert!(ok(r).contains(&after));

    // Revoking the identity stops new tokens for it too.
    ok(bin(&data).args(["ca", "revoke", "--spiffe-id", id]).output().unwrap());
    let err = fails(bin(&data).args(["ca", "token", "create", "--spiffe-id", id]).output().unwrap());
    assert!(err.contains("revoked"), "{err}");

    let log = events(&data);
    for needle in
        ["\"action\":\"enroll\",", "\"action\":\"renew\",", "\"outcome\":\"refused\"", "\"action\":\"revoke\","]
    {
        assert!(log.contains(needle), "{needle} missing from:\n{log}");
    }
    assert!(!log.contains(&tok), "a token never reaches the event log");

    // The same attempts are in the tamper-evident audit log, which verifies.
    drop(srv); // the server's final checkpoint signs the head
    let verify = ok(bin(&data).args(["audit", "verify"]).output().unwrap());
    assert!(verify.contains("intact"), "{verify}");
    let tail = ok(bin(&data).args(["audit", "tail", "-n", "100"]).output().unwrap());
    assert!(tail.contains("\"enroll\"") && tail.contains("deny") && tail.contains("allow"), "{tail}");
    let audit_log = data.join("audit/audit.log");
    assert!(!std::fs::read_to_string(&audit_log).unwrap().contains(&tok), "no token text in the audit log");
    // Turn one refusal into a grant: verify names the line after it and fails.
    let text = std::fs::read_to_string(&audit_log).unwrap();
    let at = text.lines().position(|l| l.contains("\"decision\":\"deny\"")).unwrap();
    let forged: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| if i == at { l.replace("\"decision\":\"deny\"", "\"decision\":\"allow\"") } else { l.to_owned() })
        .collect();
    std::fs::write(&audit_log, forged.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let out = bin(&data).args(["audit", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains(&format!("line {}: does not follow line {}", at + 2, at + 1)), "{report}");
}

#[test]
fn bad_requests_are_refused_and_recorded() {
    let data = init("bad", &[]);
    let srv = server(&data);
    let root = data.join("ca/root.pem");
    let dir = data.parent().unwrap().to_owned();
    let enroll = |token: &str, extra: &[&str]| {
        bin(&data)
            .args(["enroll", "--server", &srv.url, "--token", token, "--dir"])
            .arg(dir.join("dev"))
            .args(extra)
            .output()
            .unwrap()
    };

    // Expired.
    let short = token(&data, "spiffe://example.org/device/d1", "1s");
    std::thread::sleep(Duration::from_millis(2100));
    assert!(fails(enroll(&short, &[])).contains("expired"));
    // Forged: a valid shape, a secret nobody issued (another token's body under a real id).
    let real = token(&data, "spiffe://example.org/device/d2", "15m");
    let mut forged: Vec<char> = real.chars().collect();
    let i = 5 + 30; // inside the secret
    forged[i] = if forged[i] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let err = fails(enroll(&forged, &[]));
    assert!(err.contains("not valid") || err.contains("not known"), "{err}");
    // Malformed.
    assert!(fails(enroll("zgt1.garbage", &[])).contains("malformed"));
    // Only for its identity.
    let err = fails(enroll(&real, &["--spiffe-id", "spiffe://example.org/device/other"]));
    assert!(err.contains("not `spiffe://example.org/device/other`"), "{err}");
    // The refusal above did not burn the token.
    ok(enroll(&real, &[]));
    // Identities outside the trust domain or malformed are refused at token creation.
    for bad in
        ["spiffe://other.org/device/x", "spiffe://example.org/a/../b", "spiffe://example.org", "https://example.org/x"]
    {
        let err = fails(bin(&data).args(["ca", "token", "create", "--spiffe-id", bad]).output().unwrap());
        assert!(err.contains("spiffe id"), "{bad}: {err}");
    }

    // HTTP-level refusals, with curl.
    let url = |p: &str| format!("{}{p}", srv.url);
    let code = |args: &[&str]| {
        let mut all = vec!["--cacert", root.to_str().unwrap(), "-o", "/dev/null", "-w", "%{http_code}"];
        all.extend_from_slice(args);
        ok(curl(&all))
    };
    let big = dir.join("big.json");
    std::fs::write(&big, "x".repeat(70_000)).unwrap();
    assert_eq!(code(&["--data-binary", &format!("@{}", big.display()), &url("/v1/identity/enroll")]), "413");
    assert_eq!(code(&["-d", "{not json", &url("/v1/identity/enroll")]), "400");
    let t3 = token(&data, "spiffe://example.org/device/d3", "15m");
    let bad_csr = serde_json::json!({ "token": t3, "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n" }).to_string();
    assert_eq!(code(&["-d", &bad_csr, &url("/v1/identity/enroll")]), "400");
    assert_eq!(code(&[&url("/nope")]), "404");
    assert_eq!(code(&["-X", "DELETE", &url("/v1/identity/enroll")]), "405");
    // A bad CSR did not burn the token either; an RSA key is refused by type.
    let rsa_dir = dir.join("rsa");
    std::fs::create_dir_all(&rsa_dir).unwrap();
    ok(Command::new("openssl")
        .args(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/O=x", "-keyout"])
        .arg(rsa_dir.join("k.pem"))
        .arg("-out")
        .arg(rsa_dir.join("r.csr"))
        .output()
        .unwrap());
    let rsa =
        serde_json::json!({ "token": t3, "csr": std::fs::read_to_string(rsa_dir.join("r.csr")).unwrap() }).to_string();
    let r = curl(&["--cacert", root.to_str().unwrap(), "-d", &rsa, &url("/v1/identity/enroll")]);
    assert!(ok(r).contains("RSA"));
    // Plain HTTP on the TLS port gets nothing.
    let r = curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{}/healthz", srv.port)]);
    assert_ne!(String::from_utf8_lossy(&r.stdout), "200");
    // An enrolling client refuses a server whose root is not the one its token pins.
    let other = init("other", &[]);
    let other_token = token(&other, "spiffe://example.org/device/d4", "15m");
    let err = fails(enroll(&other_token, &[]));
    assert!(err.to_lowercase().contains("certificate") || err.contains("issuer"), "{err}");
    // A token sent where it does not belong (as a field name, which serde would quote) is
    // refused without being quoted anywhere.
    let mut misplaced = serde_json::Map::new();
    misplaced.insert(t3.clone(), serde_json::json!("x"));
    assert_eq!(code(&["-d", &serde_json::Value::Object(misplaced).to_string(), &url("/v1/identity/enroll")]), "400");

    let log = events(&data);
    assert!(log.contains("request body over 65536 bytes"), "the 413 is recorded:\n{log}");
    assert!(log.contains("invalid request"), "the bad JSON is recorded:\n{log}");
    let refused = log.lines().filter(|l| l.contains("\"outcome\":\"refused\"")).count();
    assert!(refused >= 6, "every refusal is recorded:\n{log}");
    assert!(!log.contains(&real) && !log.contains(&t3), "no token text in events");
}

#[test]
fn agent_renews_at_half_life() {
    let data = init("agent", &["--workload-ttl", "6s"]);
    let srv = server(&data);
    let dir = data.parent().unwrap().join("workload");
    let tok = token(&data, "spiffe://example.org/workload/api", "5m");
    ok(bin(&data).args(["enroll", "--server", &srv.url, "--token", &tok, "--dir"]).arg(&dir).output().unwrap());
    let first = serial_of(&dir.join("svid.pem"));
    let mut agent =
        bin(&data).args(["agent", "--server", &srv.url, "--dir"]).arg(&dir).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    let mut seen = vec![first];
    while start.elapsed() < Duration::from_secs(20) && seen.len() < 3 {
        std::thread::sleep(Duration::from_millis(200));
        // The file is always a whole chain: never half-written.
        let pem = std::fs::read_to_string(dir.join("svid.pem")).unwrap();
        assert_eq!(pem.matches("-----END CERTIFICATE-----").count(), 2, "{pem}");
        let serial = serial_of(&dir.join("svid.pem"));
        if seen.last() != Some(&serial) {
            seen.push(serial);
        }
    }
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(seen.len() >= 3, "the agent renewed twice within 20 s: {seen:?}");
}

#[test]
fn offline_root_and_data_dir_flag() {
    let dir = scratch("offline");
    let data = dir.join("data");
    let key = dir.join("root.key.pem");
    // --data-dir wins over the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_zerogate"))
        .env("ZEROGATE_DATA_DIR", dir.join("elsewhere"))
        .args(["ca", "init", "--trust-domain", "example.org", "--data-dir"])
        .arg(&data)
        .arg("--offline-root-key")
        .arg(&key)
        .output()
        .unwrap();
    ok(out);
    assert!(key.exists());
    assert!(!data.join("ca/root.key.pem").exists(), "the root key is not in the data directory");
    assert!(!dir.join("elsewhere").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("ca/intermediate.key.pem")), 0o600);
        assert_eq!(mode(&data.join("state.db")), 0o600);
        assert_eq!(mode(&key), 0o600);
    }
    // The CA still issues without its root key.
    let out = Command::new(env!("CARGO_BIN_EXE_zerogate"))
        .args(["ca", "issue", "--spiffe-id", "spiffe://example.org/workload/batch", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(dir.join("batch"))
        .output()
        .unwrap();
    ok(out);
    // A CA created with its root key online can move it out later.
    let online = init("export", &[]);
    let exported = online.parent().unwrap().join("root.key.pem");
    ok(bin(&online).args(["ca", "export-root-key", "--out"]).arg(&exported).output().unwrap());
    assert!(exported.exists() && !online.join("ca/root.key.pem").exists());
    let err = fails(bin(&online).args(["ca", "export-root-key", "--out"]).arg(dir.join("again.pem")).output().unwrap());
    assert!(err.contains("not here"), "{err}");
    // A second init refuses to overwrite.
    let err = fails(bin(&data).args(["ca", "init", "--trust-domain", "example.org"]).output().unwrap());
    assert!(err.contains("already exists"), "{err}");
    // Commands on an empty directory say what to do.
    let err = fails(bin(&dir.join("empty")).args(["ca", "list"]).output().unwrap());
    assert!(err.contains("ca init"), "{err}");
    // The SPIFFE bundle.
    let bundle: serde_json::Value =
        serde_json::from_str(&ok(bin(&data).args(["ca", "bundle", "--format", "spiffe"]).output().unwrap())).unwrap();
    assert_eq!(bundle["keys"][0]["use"], "x509-svid");
}
