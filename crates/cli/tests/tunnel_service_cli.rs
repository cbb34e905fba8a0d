//! What a TCP service can ask of its tunnels. The PROXY protocol (`proxy_protocol = "v1"` or `"v2"`): the
//! service sees the client's address and the gateway address the client reached, not the
//! gateway's own outgoing address; with version 2 it also sees the service's name and the
//! tunnel's audit record (`<gateway id>:<line>`). The service is HAProxy with `accept-proxy`,
//! answering each request with what it read from the header: an independent reader of it.
//! An idle timeout (`idle_timeout_seconds`): a tunnel nothing crosses for that long is closed,
//! a busy one is not. Real binary, real TLS (openssl s_client), real HAProxy.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Running, ok, serial, zerogate};

/// HAProxy on `port`, taking a PROXY header (either version) on every connection and answering
/// each HTTP request with the addresses and names the header carried.
fn haproxy(dir: &Path, port: u16) -> Running {
    let config = dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn 64\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  \
             timeout server 30s\nfrontend service\n  bind 127.0.0.1:{port} accept-proxy\n  \
             http-request return status 200 content-type text/plain lf-string \
             \"src=%[src] sport=%[src_port] dst=%[dst] dport=%[dst_port] authority=%[fc_pp_authority] \
             unique=%[fc_pp_unique_id]\\n\"\n"
        ),
    )
    .unwrap();
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("haproxy.err")).unwrap())
        .spawn()
        .expect("haproxy is installed (.ci/run installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "haproxy did not start: {:?}",
            std::fs::read_to_string(dir.join("haproxy.err"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Running(child)
}

/// What the service read from the header of one tunnel, and the client's own address.
struct Seen {
    fields: Vec<(String, String)>,
    client_port: u16,
}

impl Seen {
    fn get(&self, name: &str) -> &str {
        self.fields.iter().find(|(key, _)| key == name).map_or_else(|| panic!("no {name}"), |(_, value)| value)
    }
}

/// A tunnel held open by openssl s_client with an identity's certificate.
struct Tunnel {
    client: Running,
    answers: std::io::Lines<BufReader<std::process::ChildStdout>>,
    gateway: u16,
}

impl Tunnel {
    /// Opens a tunnel to `service` through the gateway on `gateway`.
    fn open(gateway: u16, service: &str, identity: &Path) -> Self {
        let s = |name: &str| identity.join(name).display().to_string();
        // openssl sends only the first certificate of `-cert`: the intermediate goes on its own.
        let svid = std::fs::read_to_string(identity.join("svid.pem")).unwrap();
        let end = "-----END CERTIFICATE-----";
        let intermediate = svid.split_once(end).map(|(_, rest)| rest.trim_start()).unwrap();
        std::fs::write(identity.join("intermediate.pem"), intermediate).unwrap();
        let mut client = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{gateway}"), "-servername", service])
            .args(["-cert", &s("svid.pem"), "-cert_chain", &s("intermediate.pem"), "-key", &s("svid.key.pem")])
            .args(["-CAfile", &s("bundle.pem")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let answers = BufReader::new(client.stdout.take().unwrap()).lines();
        Self { client: Running(client), answers, gateway }
    }

    /// Sends one HTTP request through the tunnel and reads what the service says it read from
    /// the header, with the client's local port (from `ss`) while the tunnel is open (HTTP
    /// keep-alive).
    fn ask(&mut self) -> Seen {
        self.client.0.stdin.as_mut().unwrap().write_all(b"GET / HTTP/1.1\r\nHost: service\r\n\r\n").unwrap();
        let mut answer = String::new();
        for line in self.answers.by_ref() {
            let line = line.unwrap();
            answer.push_str(&line);
            answer.push('\n');
            if !line.starts_with("src=") {
                continue;
            }
            let fields = line
                .split(' ')
                .filter_map(|pair| pair.split_once('='))
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect();
            let pid = format!("pid={},", self.client.0.id());
            let gateway = format!("127.0.0.1:{}", self.gateway);
            let sockets = Command::new("ss").args(["-tnp", "state", "established"]).output().unwrap();
            let sockets = String::from_utf8_lossy(&sockets.stdout).into_owned();
            let client_port = sockets
                .lines()
                .filter(|l| l.contains(&pid))
                .find_map(|l| {
                    let columns: Vec<&str> = l.split_whitespace().collect();
                    let local = columns.get(2)?.rsplit_once(':')?.1.parse().ok();
                    if columns.get(3) == Some(&gateway.as_str()) { local } else { None }
                })
                .unwrap_or_else(|| panic!("s_client's socket to the gateway: {sockets}"));
            return Seen { fields, client_port };
        }
        panic!("no answer through the tunnel: {answer:?}");
    }

    /// Whether the gateway has closed the tunnel (s_client exits when it has).
    fn closed(&mut self) -> bool {
        self.client.0.try_wait().unwrap().is_some()
    }
}

/// One request through a new tunnel to `service`.
fn through(gateway: u16, service: &str, identity: &Path) -> Seen {
    Tunnel::open(gateway, service, identity).ask()
}

/// A gateway in `dir` with the CA, a policy that lets one workload (`api`, its identity in
/// `dir/api`) connect to the service, and the HAProxy service behind `apps` (TOML `[[app]]`
/// tables, `{service}` standing for the service's address), with `gateway` settings added to
/// its `[gateway]` table. Returns the gateway, its listener and admin ports, and HAProxy.
fn set_up(dir: &Path, gateway: &str, apps: &str) -> (Running, u16, u16, Running) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("policy")).unwrap();
    let data = dir.join("data");
    let d = |p: &PathBuf| p.display().to_string();
    ok(zerogate().args(["ca", "init", "--data-dir", &d(&data), "--trust-domain", "pp.test"]).output().unwrap());
    std::fs::write(
        dir.join("policy/service.cedar"),
        "@id(\"api-to-service\")\npermit (principal == Zerogate::Workload::\"spiffe://pp.test/workload/api\", \
         action == Zerogate::Action::\"connect\", resource == Zerogate::TcpTarget::\"service:tcp/80\");\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("policy/entities.json"),
        r#"[{ "uid": { "type": "Zerogate::TcpTarget", "id": "service:tcp/80" }, "attrs": {}, "parents": [] }]"#,
    )
    .unwrap();
    let service_port = common::free_port();
    let service = haproxy(dir, service_port);
    let (port, admin) = (common::free_port(), common::free_port());
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nid = \"pp-gw\"\n{gateway}\n\
             [policy]\npolicies = \"policy\"\nentities = \"policy/entities.json\"\n{}",
            apps.replace("{service}", &format!("127.0.0.1:{service_port}"))
        ),
    )
    .unwrap();
    ok(zerogate()
        .args(["ca", "issue", "--data-dir", &d(&data), "--spiffe-id", "spiffe://pp.test/workload/api", "--out"])
        .arg(dir.join("api"))
        .output()
        .unwrap());
    let gateway = common::start_gateway(&data, &config, &dir.join("gateway.err"));
    (gateway, port, admin, service)
}

/// A `[[app]]` for the HAProxy service named `host`, with `extra` settings.
fn app(host: &str, extra: &str) -> String {
    format!(
        "[[app]]\nhost = \"{host}\"\nupstream = \"tcp://{{service}}\"\n\
         resource = 'Zerogate::TcpTarget::\"service:tcp/80\"'\nauthn = [\"mtls\"]\n{extra}\n"
    )
}

#[test]
fn a_proxy_protocol_service_sees_the_client_its_name_and_the_tunnels_audit_record() {
    let dir = std::env::temp_dir().join(format!("zerogate-cli-{}-proxy-protocol", std::process::id()));
    let apps = app("v2.internal", "proxy_protocol = \"v2\"") + &app("v1.internal", "proxy_protocol = \"v1\"");
    let (_gateway, port, _, _service) = set_up(&dir, "", &apps);
    let (api, data) = (dir.join("api"), dir.join("data"));

    // Version 2: the client as the gateway saw it, not the gateway's outgoing connection.
    let seen = through(port, "v2.internal", &api);
    assert_eq!((seen.get("src"), seen.get("dst")), ("127.0.0.1", "127.0.0.1"));
    assert_eq!(seen.get("sport"), seen.client_port.to_string(), "the client's own port");
    assert_eq!(seen.get("dport"), port.to_string(), "the gateway's listener, not the service's port");
    assert_eq!(seen.get("authority"), "v2.internal", "the service's name, as the client asked for it");
    // The unique id names this gateway and the audit record that let the tunnel open.
    let unique = seen.get("unique");
    let line: u64 = unique.strip_prefix("pp-gw:").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{unique}"));
    let log = std::fs::read_to_string(data.join("audit/audit.log")).unwrap();
    let record = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["seq"] == line)
        .unwrap_or_else(|| panic!("no line {line} in {log}"));
    assert_eq!(record["kind"], "decision");
    let record = &record["record"];
    assert_eq!((record["decision"].as_str(), record["request"]["host"].as_str()), (Some("allow"), Some("v2.internal")));
    assert_eq!(record["principal"], "Zerogate::Workload::\"spiffe://pp.test/workload/api\"", "{record:#}");
    assert_eq!(record["action"], "Zerogate::Action::\"connect\"");

    // A second tunnel: its own client port and its own record.
    let again = through(port, "v2.internal", &api);
    assert_ne!(again.get("unique"), unique);
    assert_eq!(again.get("sport"), again.client_port.to_string());

    // Version 1: the same addresses, and no names (the text line has no room for them).
    let seen = through(port, "v1.internal", &api);
    assert_eq!((seen.get("src"), seen.get("sport")), ("127.0.0.1", seen.client_port.to_string().as_str()));
    assert_eq!(seen.get("dport"), port.to_string());
    assert_eq!((seen.get("authority"), seen.get("unique")), ("", ""));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tunnel_nothing_crosses_for_the_idle_timeout_is_closed_and_a_busy_one_is_not() {
    let dir = std::env::temp_dir().join(format!("zerogate-cli-{}-idle", std::process::id()));
    let apps = app("idle.internal", "proxy_protocol = \"v2\"\nidle_timeout_seconds = 2")
        + &app("patient.internal", "proxy_protocol = \"v2\"");
    let (gateway, port, admin, _service) = set_up(&dir, "", &apps);
    let api = dir.join("api");
    let metric = |name: &str| {
        let out = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{admin}/metrics")]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).map(str::to_owned).unwrap_or_default()
    };

    // Quiet after one request: closed once 2 s pass without a byte either way, not before.
    let mut quiet = Tunnel::open(port, "idle.internal", &api);
    quiet.ask();
    let answered = Instant::now();
    // A busy tunnel to the same service, a request every 400 ms for twice the timeout.
    let mut busy = Tunnel::open(port, "idle.internal", &api);
    let mut without_timeout = Tunnel::open(port, "patient.internal", &api);
    without_timeout.ask();
    while answered.elapsed() < Duration::from_secs(4) {
        busy.ask();
        if quiet.closed() {
            let after = answered.elapsed();
            assert!(after >= Duration::from_millis(1900), "closed after {after:?}, before its 2 s");
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(quiet.closed(), "the quiet tunnel outlived its idle timeout by 2 s");
    assert!(!busy.closed(), "a busy tunnel is not idle");
    busy.ask();
    assert!(!without_timeout.closed(), "a service without an idle timeout keeps a quiet tunnel");
    without_timeout.ask();
    assert_eq!(metric("zerogate_tunnels_idle_closed_total"), "1");
    assert_eq!(metric("zerogate_tunnels_cut_total"), "0", "closing an idle tunnel is no access decision");
    drop((busy, without_timeout, gateway));
    let log = std::fs::read_to_string(dir.join("gateway.err")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("tunnel ended") && l.contains("closed: idle for 2 s") && l.contains("idle.internal")),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A service whose connect takes about 3 s: a Python listener with room for one connection in
/// its accept queue, taken by a connection of its own, so that the gateway's SYN is dropped
/// until, 1.5 s after it is told, the listener takes that one; the gateway's SYN sent again
/// (3 s after its first) then gets in. It prints its port, then how many bytes the gateway's
/// connection carried before it closed.
const SLOW_SERVICE: &str = r#"
import socket, sys, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(0)
port = listener.getsockname()[1]
filler = socket.create_connection(("127.0.0.1", port))
print(port, flush=True)
sys.stdin.readline()
time.sleep(1.5)
listener.accept()[0].close()
gateway, _ = listener.accept()
gateway.settimeout(5)
received = 0
try:
    while True:
        chunk = gateway.recv(4096)
        if not chunk:
            break
        received += len(chunk)
except socket.timeout:
    pass
print(received, flush=True)
"#;

#[test]
fn a_tunnel_whose_connect_outlasts_the_reauthorization_interval_is_authorized_again_before_a_byte_crosses() {
    let dir = std::env::temp_dir().join(format!("zerogate-cli-{}-slow-connect", std::process::id()));
    let mut service = Command::new("python3")
        .args(["-c", SLOW_SERVICE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = BufReader::new(service.stdout.take().unwrap()).lines();
    let service_port: u16 = said.next().unwrap().unwrap().trim().parse().unwrap();
    let mut service = Running(service);
    let apps = app("slow.internal", "").replace("{service}", &format!("127.0.0.1:{service_port}"));
    let (_gateway, port, _, _haproxy) = set_up(&dir, "reauthorize_seconds = 1", &apps);
    let (api, data) = (dir.join("api"), dir.join("data"));
    let log = || std::fs::read_to_string(data.join("audit/audit.log")).unwrap_or_default();

    // The tunnel is decided and allowed, the client's first bytes wait in the gateway, and the
    // certificate is revoked while the connect to the service is still under way.
    let mut tunnel = Tunnel::open(port, "slow.internal", &api);
    tunnel.client.0.stdin.as_mut().unwrap().write_all(b"first bytes\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log().contains("\"decision\":\"allow\"") {
        assert!(Instant::now() < deadline, "no decision: {}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(zerogate().args(["ca", "revoke", "--data-dir"]).arg(&data).args(["--serial", &serial(&api)]).output().unwrap());
    service.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let received: usize = said.next().expect("the service says what it received").unwrap().trim().parse().unwrap();
    assert_eq!(received, 0, "bytes crossed on a decision older than the interval, for a revoked certificate");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !tunnel.closed() {
        assert!(Instant::now() < deadline, "the tunnel was not cut");
        std::thread::sleep(Duration::from_millis(50));
    }
    let cut = log()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["record"]["reauthorization"] == true)
        .unwrap_or_else(|| panic!("no record of the cut: {}", log()));
    let record = &cut["record"];
    assert_eq!(
        (record["decision"].as_str(), record["request"]["host"].as_str()),
        (Some("deny"), Some("slow.internal"))
    );
    assert!(record["errors"].to_string().contains("revoked"), "{record:#}");
    let _ = std::fs::remove_dir_all(&dir);
}
