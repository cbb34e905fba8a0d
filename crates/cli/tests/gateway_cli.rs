//! `zerogate gateway --config FILE`, the deployment command, as an operator runs it: it serves
//! the configured application through the full pipeline, refuses to start a second time on an
//! address in use, and stops on SIGTERM with every allowed request on record. Real binary, real
//! TLS, curl.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::{ok, openssl, public_leaf, zerogate};

/// curl trusting zerogate's CA and presenting `device`'s certificate.
fn mtls_curl(device: &Path) -> Command {
    let s = |name: &str| device.join(name).display().to_string();
    let mut curl = Command::new("curl");
    curl.args(["--cacert", &s("bundle.pem"), "--cert", &s("svid.pem"), "--key", &s("svid.key.pem")]);
    curl
}

fn curl(port: u16, device: &Path) -> (u16, String) {
    let out = mtls_curl(device)
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("https://localhost:{port}/hello"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A fresh scratch directory `zerogate-cli-PID-{name}`: a CA in `data/` (trust domain gw.test)
/// and `policy/` letting a `kind` (`Device` or `User`) that authenticated with `authn` reach the
/// application `hello`, with an entity for each of `apps`. Returns the directory and `data/`.
fn scratch(name: &str, kind: &str, authn: &str, apps: &[&str]) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("zerogate-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policy")).unwrap();
    let data = dir.join("data");
    ok(zerogate().args(["ca", "init", "--data-dir"]).arg(&data).args(["--trust-domain", "gw.test"]).output().unwrap());
    std::fs::write(
        dir.join("policy/access.cedar"),
        format!(
            "@id(\"access\")\npermit (principal is Zerogate::{kind}, action == Zerogate::Action::\"http\", \
             resource in Zerogate::Application::\"hello\") when {{ context.authn == \"{authn}\" }};\n"
        ),
    )
    .unwrap();
    let entities: Vec<serde_json::Value> = apps
        .iter()
        .map(|app| serde_json::json!({ "uid": { "type": "Zerogate::Application", "id": app }, "attrs": {}, "parents": [] }))
        .collect();
    std::fs::write(dir.join("policy/entities.json"), serde_json::to_string(&entities).unwrap()).unwrap();
    (dir, data)
}

/// A device certificate for laptop-1 from the CA in `data`, written to `dir/device`.
fn device(dir: &Path, data: &Path) -> PathBuf {
    let device = dir.join("device");
    ok(zerogate()
        .args(["ca", "issue", "--data-dir"])
        .arg(data)
        .args(["--spiffe-id", "spiffe://gw.test/device/laptop-1", "--out"])
        .arg(&device)
        .output()
        .unwrap());
    device
}

#[test]
fn the_gateway_serves_refuses_a_taken_address_and_stops_cleanly() {
    let (dir, data) = scratch("gateway", "Device", "mtls", &["hello"]);
    let d = |p: &PathBuf| p.display().to_string();
    let device = device(&dir, &data);
    let port = common::free_port();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:{port}\"\nid = \"test\"\naudit_segment_mib = 1\n[policy]\npolicies = \"policy\"\n\
             entities = \"policy/entities.json\"\n[[app]]\nhost = \"localhost\"\n\
             upstream = \"http://127.0.0.1:{}\"\nresource = 'Zerogate::Application::\"hello\"'\nauthn = [\"mtls\"]\n",
            common::upstream(None)
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

    // 3000 more requests on one keep-alive connection: more than the 1 MiB segment the
    // configuration asks for, so the log rolls over while the gateway serves.
    let many = mtls_curl(&device)
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}\n"])
        .arg(format!("https://localhost:{port}/hello?n=[1-3000]"))
        .output()
        .unwrap();
    let statuses = String::from_utf8_lossy(&many.stdout).into_owned();
    assert_eq!(statuses.lines().filter(|s| *s == "200").count(), 3000, "{statuses}");

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
    assert!(verified.trim_end().ends_with("intact"), "{verified}");
    let segments = zerogate_audit::segments(&data.join("audit/audit.log")).unwrap();
    assert!(segments.len() >= 2, "rolled over at 1 MiB: {segments:?}");
    assert!(verified.contains(&format!("in {} files", segments.len())), "{verified}");
    for segment in &segments[..segments.len() - 1] {
        let size = std::fs::metadata(segment).unwrap().len();
        assert!((1 << 20..(1 << 20) + 64 * 1024).contains(&size), "{}: {size} bytes", segment.display());
    }
    let allowed: usize = segments
        .iter()
        .map(|segment| {
            let text = std::fs::read_to_string(segment).unwrap();
            text.lines().filter(|l| l.contains("\"decision\":\"allow\"")).count()
        })
        .sum();
    assert!(allowed >= 3014, "{allowed} allowed records");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs openssl with `args` in `dir`; panics with its stderr when it fails.
/// The SHA-256 fingerprint of the certificate the gateway on `port` serves for `name` (SNI).
fn served_fingerprint(dir: &Path, port: u16, name: &str) -> String {
    let hello = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", name])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let pem = String::from_utf8_lossy(&hello.stdout);
    let (Some(start), Some(end)) = (pem.find("-----BEGIN CERTIFICATE-----"), pem.find("-----END CERTIFICATE-----"))
    else {
        return String::new();
    };
    std::fs::write(dir.join("served.pem"), &pem[start..end + "-----END CERTIFICATE-----".len()]).unwrap();
    openssl(dir, &["x509", "-in", "served.pem", "-noout", "-fingerprint", "-sha256"])
}

fn fingerprint(dir: &Path, pem: &str) -> String {
    openssl(dir, &["x509", "-in", pem, "-noout", "-fingerprint", "-sha256"])
}

/// curl to the gateway on `port` trusting only `ca`, with the device's certificate: the status
/// (0 when TLS to the gateway fails).
fn curl_trusting(port: u16, ca: &Path, device: &Path) -> u16 {
    let s = |name: &str| device.join(name).display().to_string();
    curl_status(port, ca, &["--cert", &s("svid.pem"), "--key", &s("svid.key.pem")])
}

/// curl to `https://localhost:{port}/hello` trusting `ca`, with `extra` arguments: the status (0
/// when TLS to the gateway fails).
fn curl_status(port: u16, ca: &Path, extra: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(format!("https://localhost:{port}/hello"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn a_brought_certificate_is_served_checked_and_replaced_when_its_files_change() {
    let (dir, data) = scratch("brought", "Device", "mtls", &["hello", "wiki"]);
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let d = |p: &PathBuf| p.display().to_string();
    let device = device(&dir, &data);
    // A CA of the operator's own (a public one, in production), two certificates for localhost,
    // one for another host and one for the wiki.
    openssl(
        &tls,
        &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30"]
            .into_iter()
            .chain(["-subj", "/CN=Operator Test CA", "-keyout", "ca.key", "-out", "ca.pem"])
            .collect::<Vec<_>>(),
    );
    public_leaf(&tls, "first", "localhost");
    public_leaf(&tls, "second", "localhost");
    public_leaf(&tls, "elsewhere", "other.example");
    public_leaf(&tls, "wiki", "wiki.test");
    let serve = |stem: &str| {
        std::fs::copy(tls.join(format!("{stem}.key")), tls.join("key.pem")).unwrap();
        std::fs::copy(tls.join(format!("{stem}.pem")), tls.join("chain.pem")).unwrap();
    };
    serve("first");
    let (port, admin) = (common::free_port(), common::free_port());
    let config = |port: u16, admin: u16| {
        format!(
            "[gateway]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nid = \"test\"\n\
             certificate = \"tls/chain.pem\"\nprivate_key = \"tls/key.pem\"\n[policy]\npolicies = \"policy\"\n\
             entities = \"policy/entities.json\"\n[[app]]\nhost = \"localhost\"\n\
             upstream = \"http://127.0.0.1:{}\"\nresource = 'Zerogate::Application::\"hello\"'\nauthn = [\"mtls\"]\n\
             [[app]]\nhost = \"wiki.test\"\nupstream = \"http://127.0.0.1:{}\"\n\
             resource = 'Zerogate::Application::\"wiki\"'\nauthn = [\"mtls\"]\n\
             certificate = \"tls/wiki.pem\"\nprivate_key = \"tls/wiki.key\"\n",
            common::upstream(None),
            common::upstream(None)
        )
    };
    std::fs::write(dir.join("gateway.toml"), config(port, admin)).unwrap();
    let mut gateway = zerogate()
        .args(["gateway", "--data-dir", &d(&data), "--config", &d(&dir.join("gateway.toml"))])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let public_ca = tls.join("ca.pem");
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl_trusting(port, &public_ca, &device) != 200 {
        assert!(Instant::now() < deadline, "the gateway never answered with the brought certificate");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The brought certificate is what clients see, not one from zerogate's CA; client
    // certificates are still verified against zerogate's CA.
    assert_eq!(served_fingerprint(&tls, port, "localhost"), fingerprint(&tls, "first.pem"));
    assert_eq!(curl_trusting(port, &device.join("bundle.pem"), &device), 0, "zerogate's CA did not sign it");
    // An application with a certificate of its own gets it, chosen by the name the client asks
    // for (the default names only localhost, which is all it must).
    assert_eq!(served_fingerprint(&tls, port, "wiki.test"), fingerprint(&tls, "wiki.pem"));
    assert_eq!(served_fingerprint(&tls, port, "WIKI.test"), fingerprint(&tls, "wiki.pem"), "names are case-blind");
    let metrics = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{admin}/metrics")]).output().unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let expiry: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("zerogate_server_certificate_expiry_timestamp_seconds "))
        .expect("the expiry is in the metrics")
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now + 29 * 86_400..now + 31 * 86_400).contains(&expiry), "30 days from now: {expiry}");

    // A new pair whose key is not its certificate's, or which does not name the host, is
    // refused: the one in service stays.
    std::fs::copy(tls.join("second.pem"), tls.join("chain.pem")).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        served_fingerprint(&tls, port, "localhost"),
        fingerprint(&tls, "first.pem"),
        "a mismatched pair is not served"
    );
    serve("elsewhere");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(served_fingerprint(&tls, port, "localhost"), fingerprint(&tls, "first.pem"), "nor one for another host");
    assert_eq!(curl_trusting(port, &public_ca, &device), 200);
    assert_eq!(served_fingerprint(&tls, port, "wiki.test"), fingerprint(&tls, "wiki.pem"), "the wiki keeps its own");
    // A good pair is served to new connections without a restart.
    serve("second");
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_fingerprint(&tls, port, "localhost") != fingerprint(&tls, "second.pem") {
        assert!(Instant::now() < deadline, "the renewed certificate was never served");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(curl_trusting(port, &public_ca, &device), 200);

    // At start, a bad pair is an error that names the key and the reason: nothing starts.
    std::fs::copy(tls.join("first.key"), tls.join("key.pem")).unwrap();
    std::fs::write(dir.join("bad.toml"), config(common::free_port(), common::free_port())).unwrap();
    let refused =
        zerogate().args(["gateway", "--data-dir", &d(&data), "--config", &d(&dir.join("bad.toml"))]).output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("gateway.private_key") && stderr.contains("not the certificate's key"), "{stderr}");
    Command::new("kill").arg("-TERM").arg(gateway.id().to_string()).status().unwrap();
    let _ = gateway.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An OIDC provider's keys (`jwks.json`) and access tokens made by PyJWT (an implementation
/// independent of zerogate's) in `dir`: `alice-1` to `alice-4` (one user: four tokens, each with
/// its own jti; sessions s-1, s-2, s-2 and none) and `bob` (session s-9).
fn oidc_tokens(dir: &Path, issuer: &str) {
    let script = r#"
import json, sys, time, jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
out, issuer = sys.argv[1], sys.argv[2]
key = ec.generate_private_key(ec.SECP256R1())
jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
jwk.update(kid="k1", alg="ES256", use="sig")
json.dump({"keys": [jwk]}, open(f"{out}/jwks.json", "w"))
now = int(time.time())
tokens = (("alice-1", "alice", "t-1", "s-1"), ("alice-2", "alice", "t-2", "s-2"), ("alice-3", "alice", "t-3", "s-2"),
          ("alice-4", "alice", "t-4", None), ("alice-5", "alice", "t-5", None), ("bob", "bob", "t-9", "s-9"))
for name, sub, jti, sid in tokens:
    claims = {"iss": issuer, "aud": "zerogate", "sub": sub, "iat": now, "exp": now + 600, "jti": jti}
    if sid:
        claims["sid"] = sid
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1", "typ": "at+jwt"})
    open(f"{out}/{name}.jwt", "w").write(token)
"#;
    let made = Command::new("python3").args(["-c", script]).arg(dir).arg(issuer).output().expect("python3 runs");
    assert!(made.status.success(), "PyJWT: {}", String::from_utf8_lossy(&made.stderr));
}

/// curl with a bearer token to the gateway on `port` (trusting `bundle`): the status.
fn curl_bearer(port: u16, bundle: &Path, token_file: &Path) -> u16 {
    let token = std::fs::read_to_string(token_file).unwrap();
    curl_status(port, bundle, &["-H", &format!("Authorization: Bearer {token}")])
}

#[test]
fn revoking_a_token_or_a_user_refuses_them_from_the_next_request_on() {
    let (dir, data) = scratch("revoke", "User", "oidc", &["hello"]);
    let d = |p: &PathBuf| p.display().to_string();
    oidc_tokens(&dir, "https://idp.gw.test");
    let port = common::free_port();
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            "[gateway]\nlisten = \"127.0.0.1:{port}\"\nid = \"test\"\n[policy]\npolicies = \"policy\"\n\
             entities = \"policy/entities.json\"\n[[oidc]]\nissuer = \"https://idp.gw.test\"\n\
             audiences = [\"zerogate\"]\nalgorithms = [\"ES256\"]\njwks_file = \"jwks.json\"\n\
             [[app]]\nhost = \"localhost\"\nupstream = \"http://127.0.0.1:{}\"\n\
             resource = 'Zerogate::Application::\"hello\"'\nauthn = [\"oidc\"]\n",
            common::upstream(None)
        ),
    )
    .unwrap();
    let mut gateway = zerogate()
        .args(["gateway", "--data-dir", &d(&data), "--config", &d(&dir.join("gateway.toml"))])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, ok(zerogate().args(["ca", "bundle", "--data-dir", &d(&data)]).output().unwrap())).unwrap();
    let status = |token: &str| curl_bearer(port, &bundle, &dir.join(format!("{token}.jwt")));
    let deadline = Instant::now() + Duration::from_secs(10);
    while status("alice-1") != 200 {
        assert!(Instant::now() < deadline, "the gateway never served alice");
        std::thread::sleep(Duration::from_millis(100));
    }
    // One token: refused from (at the latest) a second on; the same user's other token is not.
    let revoke =
        |args: &[&str]| ok(zerogate().arg("revoke").args(args).args(["--data-dir", &d(&data)]).output().unwrap());
    assert!(revoke(&["--credential", "jti:t-1", "--reason", "laptop stolen"]).contains("revoked credential jti:t-1"));
    let until_refused = |token: &str| {
        let deadline = Instant::now() + Duration::from_secs(3);
        while status(token) != 401 {
            assert!(Instant::now() < deadline, "{token} is still served after its revocation");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until_refused("alice-1");
    for _ in 0..3 {
        assert_eq!((status("alice-1"), status("alice-2"), status("bob")), (401, 200, 200));
    }
    // A session: every token issued in it, though each has its own jti (as Keycloak issues them).
    revoke(&["--credential", "sid:s-2"]);
    until_refused("alice-2");
    assert_eq!((status("alice-3"), status("alice-4"), status("bob")), (401, 200, 200));
    // A token id scoped to its issuer: another issuer's `t-5` is not this one.
    revoke(&["--credential", "jti:t-5@https://idp.other.test"]);
    std::thread::sleep(Duration::from_millis(2500)); // past two reads of the lists
    assert_eq!(status("alice-5"), 200, "revoked at another issuer only");
    revoke(&["--credential", "jti:t-5@https://idp.gw.test"]);
    until_refused("alice-5");
    assert_eq!((status("alice-4"), status("bob")), (200, 200));
    // The user: every token of theirs.
    revoke(&["--principal", r#"Zerogate::User::"alice""#]);
    until_refused("alice-4");
    assert_eq!(status("bob"), 200, "another user is still served");
    // A typo is refused instead of revoking nothing.
    let typo = zerogate().args(["revoke", "--principal", "alice", "--data-dir", &d(&data)]).output().unwrap();
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("not a principal uid"), "{typo:?}");
    let listed = revoke(&["--list"]);
    assert!(
        listed.contains("credential\tjti:t-1\tlaptop stolen") && listed.contains(r#"Zerogate::User::"alice""#),
        "{listed}"
    );

    // Both refusals are on record, with why.
    let log = std::fs::read_to_string(data.join("audit/audit.log")).unwrap();
    assert!(log.contains("the credential or principal is revoked"), "refused requests are recorded");
    // Each record names every id the token goes by, so the session to revoke can be read there.
    assert!(
        log.contains(r#""id":"jti:t-2","also_known_as":["sid:s-2","sub:alice@https://idp.gw.test"]"#),
        "the audit log names the token's session and subject"
    );
    assert!(log.contains("\"credential.revoke\"") && log.contains("\"principal.revoke\""), "so are the revocations");
    Command::new("kill").arg("-TERM").arg(gateway.id().to_string()).status().unwrap();
    let _ = gateway.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small OpenID provider over HTTPS, in Python's standard library (independent of zerogate):
/// discovery for `https://localhost:PORT` and the JWKS in `dir/jwks.json`, read at each request.
/// Returns the process and its issuer URL.
fn oidc_provider(dir: &Path, cert: &Path, key: &Path) -> (std::process::Child, String) {
    let script = r#"
import http.server, json, ssl, sys
directory, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
class Provider(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        issuer = f"https://localhost:{self.server.server_port}"
        if self.path == "/.well-known/openid-configuration":
            body = json.dumps({"issuer": issuer, "jwks_uri": issuer + "/jwks"}).encode()
        elif self.path == "/jwks":
            body = open(f"{directory}/jwks.json", "rb").read()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Provider)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_port, flush=True)
server.serve_forever()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .arg(cert)
        .arg(key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let mut port = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
    (child, format!("https://localhost:{}", port.trim()))
}

#[test]
fn bearer_tokens_are_verified_with_keys_found_by_discovery_and_refused_while_the_provider_is_down() {
    let (dir, data) = scratch("oidc", "User", "oidc", &["hello"]);
    let d = |p: &PathBuf| p.display().to_string();
    // The provider's HTTPS certificate, from a CA of its own that the gateway is told to trust.
    openssl(
        &dir,
        &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"]
            .into_iter()
            .chain(["-subj", "/CN=Provider Test CA", "-keyout", "ca.key", "-out", "ca.pem"])
            .collect::<Vec<_>>(),
    );
    public_leaf(&dir, "idp", "localhost");
    let (mut provider, issuer) = oidc_provider(&dir, &dir.join("idp.pem"), &dir.join("idp.key"));
    oidc_tokens(&dir, &issuer);
    let config = |port: u16, issuer: &str| {
        format!(
            "[gateway]\nlisten = \"127.0.0.1:{port}\"\nid = \"test\"\n[policy]\npolicies = \"policy\"\n\
             entities = \"policy/entities.json\"\n[[oidc]]\nissuer = \"{issuer}\"\n\
             audiences = [\"zerogate\"]\nalgorithms = [\"ES256\"]\nca_file = \"ca.pem\"\n\
             [[app]]\nhost = \"localhost\"\nupstream = \"http://127.0.0.1:{}\"\n\
             resource = 'Zerogate::Application::\"hello\"'\nauthn = [\"oidc\"]\n",
            common::upstream(None)
        )
    };
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, ok(zerogate().args(["ca", "bundle", "--data-dir", &d(&data)]).output().unwrap())).unwrap();
    let start = |name: &str, port: u16, issuer: &str| {
        std::fs::write(dir.join(name), config(port, issuer)).unwrap();
        let mut gateway = zerogate()
            .args(["gateway", "--data-dir", &d(&data), "--config", &d(&dir.join(name))])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(gateway.stdout.take().unwrap()).lines();
        let mut said = Vec::new();
        loop {
            let line = lines.next().expect("the gateway says where it listens").unwrap();
            let started = line.starts_with("zerogate gateway");
            said.push(line);
            if started {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        (gateway, said.join("\n"))
    };

    // The keys come by discovery over verified HTTPS; PyJWT's tokens pass.
    let port = common::free_port();
    let (mut gateway, said) = start("up.toml", port, &issuer);
    assert!(said.contains(&format!("oidc issuer {issuer}: 1 keys")), "{said}");
    let status = |port: u16, token: &str| curl_bearer(port, &bundle, &dir.join(format!("{token}.jwt")));
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(port, "alice-1") != 200 {
        assert!(Instant::now() < deadline, "the gateway never served alice");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status(port, "bob"), 200);
    // A token the provider's key did not sign (the same kid, another key) is refused.
    std::fs::copy(dir.join("bob.jwt"), dir.join("bob.keep")).unwrap();
    let keep_jwks = std::fs::read(dir.join("jwks.json")).unwrap();
    oidc_tokens(&dir, &issuer);
    std::fs::write(dir.join("jwks.json"), &keep_jwks).unwrap();
    assert_eq!(status(port, "alice-1"), 401, "signed by a key the provider does not publish");
    Command::new("kill").arg("-TERM").arg(gateway.id().to_string()).status().unwrap();
    let _ = gateway.wait();

    // A provider that cannot be reached: its tokens are refused, with a record saying why.
    provider.kill().unwrap();
    let _ = provider.wait();
    let port = common::free_port();
    let (mut gateway, said) = start("down.toml", port, &issuer);
    assert!(said.contains("not ready"), "{said}");
    // bob's token from the provider that was up: valid, but no key is known to check it by.
    std::fs::copy(dir.join("bob.keep"), dir.join("bob-old.jwt")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match status(port, "bob-old") {
            0 => assert!(Instant::now() < deadline, "the gateway never answered"),
            answered => break answered,
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(refused, 401, "no keys, no access");
    Command::new("kill").arg("-TERM").arg(gateway.id().to_string()).status().unwrap();
    let _ = gateway.wait();
    let log = std::fs::read_to_string(data.join("audit/audit.log")).unwrap();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("\"deny\"") && l.contains("authentication")).collect();
    assert!(refusals.len() >= 2, "each refusal is on record: {refusals:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An upstream that switches protocols on `/switch` whatever was asked, and answers `hello`
/// otherwise; it counts its connections and records each request's target.
fn switching_upstream(connections: Arc<AtomicUsize>, targets: Arc<Mutex<Vec<String>>>) -> u16 {
    common::answering_upstream(move |connection, head| {
        connections.fetch_max(connection + 1, Ordering::SeqCst);
        let target = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let answer: &[u8] = if target == "/switch" {
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        };
        targets.lock().unwrap().push(target);
        answer.to_vec()
    })
}

#[test]
fn a_switch_of_protocols_nobody_asked_for_and_a_websocket_handshake_with_a_body_are_refused() {
    let (dir, data) = scratch("switching", "Device", "mtls", &["hello"]);
    let device = device(&dir, &data);
    let (connections, targets) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
    let upstream = switching_upstream(Arc::clone(&connections), Arc::clone(&targets));
    let port = common::free_port();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:{port}\"\nid = \"test\"\n[policy]\npolicies = \"policy\"\n\
             entities = \"policy/entities.json\"\n[[app]]\nhost = \"localhost\"\n\
             upstream = \"http://127.0.0.1:{upstream}\"\nresource = 'Zerogate::Application::\"hello\"'\n\
             authn = [\"mtls\"]\n"
        ),
    )
    .unwrap();
    let _gateway = common::start_gateway(&data, &config, &dir.join("gateway.err"));
    let s = |name: &str| device.join(name).display().to_string();
    let curl = |args: &[&str], urls: &[&str]| {
        let out =
            Command::new("curl")
                .args(["-sS", "-w", "%{http_code}\n", "--cacert", &s("bundle.pem")])
                .args(["--cert", &s("svid.pem"), "--key", &s("svid.key.pem")])
                .args(args)
                .args(urls.iter().flat_map(|path| {
                    ["-o".to_owned(), "/dev/null".to_owned(), format!("https://localhost:{port}{path}")]
                }))
                .output()
                .unwrap();
        let statuses = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect::<Vec<_>>();
        (statuses, String::from_utf8_lossy(&out.stderr).into_owned())
    };

    // A 101 to a plain GET, from an HTTP/1.1 and an HTTP/2 client: a 502, and the switched
    // connection is not used for the next request (the bytes after the 101 are no answer to
    // anyone).
    for (version, opened) in [("--http1.1", 2), ("--http2", 4)] {
        let (answers, errors) = curl(&[version], &["/switch", "/hello"]);
        assert_eq!(answers, ["502", "200"], "{version}: {errors}");
        assert_eq!(connections.load(Ordering::SeqCst), opened, "{version}: the switched connection was pooled");
    }

    // A WebSocket handshake with a body: refused before anything reaches the upstream.
    let before = targets.lock().unwrap().len();
    let websocket = [
        "--http1.1",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "--data",
        "GET /smuggled HTTP/1.1",
    ];
    let (answers, errors) = curl(&websocket, &["/hello"]);
    assert_eq!(answers, ["400"], "{errors}");
    assert_eq!(targets.lock().unwrap().len(), before, "the upstream saw it: {:?}", targets.lock().unwrap());
    // And one whose key is not a 16-byte nonce in base64.
    let short_key =
        websocket.map(|arg| if arg.starts_with("Sec-WebSocket-Key") { "Sec-WebSocket-Key: c2hvcnQ=" } else { arg });
    let no_body: Vec<&str> = short_key.iter().copied().take(short_key.len() - 2).collect();
    let (answers, errors) = curl(&no_body, &["/hello"]);
    assert_eq!(answers, ["400"], "{errors}");
    assert_eq!(targets.lock().unwrap().len(), before, "the upstream saw it: {:?}", targets.lock().unwrap());
    let log = std::fs::read_to_string(data.join("audit/audit.log")).unwrap();
    assert!(log.contains("a WebSocket handshake with a body"), "on record: {log}");
    assert!(log.contains("without a 24-character Sec-WebSocket-Key"), "on record: {log}");
    let _ = std::fs::remove_dir_all(&dir);
}
