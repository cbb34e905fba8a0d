//! A TCP service behind the gateway, as an operator and a workload use it: the machine's
//! PostgreSQL (127.0.0.1:5432) served as `tcp://` under the name `db.internal`, reached with
//! `psql` through `zerogate connect` and with `openssl s_client`. Allowed for one workload,
//! refused (and recorded) for a device the policy does not name, for a client without a
//! certificate and for HTTP requests to the service's name; an open session is cut once its
//! certificate is revoked. Real binary, real TLS, real PostgreSQL.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Running, ok, public_ca, public_leaf, serial, zerogate};

/// Starts `zerogate connect` to `service` for `identity` and returns it with the local port it listens on.
fn connect(gateway: u16, service: &str, identity: &Path, gateway_ca: Option<&Path>) -> (Running, u16) {
    let mut command = zerogate();
    command
        .args(["connect", "--gateway", &format!("127.0.0.1:{gateway}"), "--service", service, "--identity"])
        .arg(identity);
    if let Some(roots) = gateway_ca {
        command.arg("--gateway-ca").arg(roots);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let line = BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let port = line
        .strip_prefix("listening on 127.0.0.1:")
        .and_then(|rest| rest.split(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("where does it listen? {line}"));
    (Running(child), port)
}

fn psql(port: u16, sql: &str) -> Output {
    psql_command(port, sql).output().unwrap()
}

/// `psql` through the tunnel on `port`, running `sql`.
fn psql_command(port: u16, sql: &str) -> Command {
    let mut command = Command::new("psql");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "test", "-Atc", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        // One connection per psql: no fallback that would open a second tunnel.
        .env("PGSSLMODE", "disable")
        .env("PGGSSENCMODE", "disable");
    command
}

fn issue(data: &Path, spiffe_id: &str, out: &Path) {
    ok(zerogate()
        .args(["ca", "issue", "--data-dir"])
        .arg(data)
        .args(["--spiffe-id", spiffe_id, "--out"])
        .arg(out)
        .output()
        .unwrap());
}

fn records(data: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data.join("audit/audit.log"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|line| line["kind"] == "decision" && line["record"]["action"] == "Zerogate::Action::\"connect\"")
        .map(|line| line["record"].clone())
        .collect()
}

#[test]
fn a_tcp_service_is_reached_with_a_certificate_refused_without_and_cut_when_it_is_revoked() {
    let dir = std::env::temp_dir().join(format!("zerogate-cli-{}-tcp", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policy")).unwrap();
    let data = dir.join("data");
    let d = |p: &PathBuf| p.display().to_string();
    ok(zerogate().args(["ca", "init", "--data-dir", &d(&data), "--trust-domain", "tcp.test"]).output().unwrap());
    // The policy `zerogate recommend` writes for a segment, by hand: one workload may connect.
    std::fs::write(
        dir.join("policy/db.cedar"),
        "@id(\"api-to-db\")\npermit (principal == Zerogate::Workload::\"spiffe://tcp.test/workload/api\", \
         action == Zerogate::Action::\"connect\", resource == Zerogate::TcpTarget::\"db:tcp/5432\");\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("policy/entities.json"),
        r#"[{ "uid": { "type": "Zerogate::TcpTarget", "id": "db:tcp/5432" }, "attrs": {}, "parents": [] }]"#,
    )
    .unwrap();
    let port = common::free_port();
    let admin = common::free_port();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nid = \"tcp-test\"\n\
             reauthorize_seconds = 1\n[policy]\n\
             policies = \"policy\"\nentities = \"policy/entities.json\"\n[[app]]\nhost = \"db.internal\"\n\
             upstream = \"tcp://127.0.0.1:5432\"\nresource = 'Zerogate::TcpTarget::\"db:tcp/5432\"'\nauthn = [\"mtls\"]\n\
             [[app]]\nhost = \"db-shadow.internal\"\nupstream = \"tcp://127.0.0.1:5432\"\n\
             resource = 'Zerogate::TcpTarget::\"db:tcp/5432\"'\nauthn = [\"mtls\"]\nmode = \"shadow\"\n\
             [[app]]\nhost = \"db.example.org\"\nupstream = \"tcp://127.0.0.1:5432\"\n\
             resource = 'Zerogate::TcpTarget::\"db:tcp/5432\"'\nauthn = [\"mtls\"]\n\
             certificate = \"tls/db.pem\"\nprivate_key = \"tls/db.key\"\n"
        ),
    )
    .unwrap();
    // One service serves a certificate of another CA (a public one, say), by its name.
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    public_ca(&tls, "Public Test CA");
    public_leaf(&tls, "db", "db.example.org");
    let api = dir.join("api");
    let laptop = dir.join("laptop");
    issue(&data, "spiffe://tcp.test/workload/api", &api);
    issue(&data, "spiffe://tcp.test/device/laptop-1", &laptop);

    let gateway = common::start_gateway(&data, &config, &dir.join("gateway.err"));

    // The allowed workload: psql through `zerogate connect` reaches PostgreSQL.
    let (_api_tunnel, api_port) = connect(port, "db.internal", &api, None);
    let out = psql(api_port, "select 'through the gateway', 6 * 7");
    assert_eq!(ok(out).trim(), "through the gateway|42");

    // A gateway certificate from another CA: trusted with --gateway-ca, refused without.
    let (_public_tunnel, public_port) = connect(port, "db.example.org", &api, None);
    assert!(!psql(public_port, "select 1").status.success(), "zerogate's bundle does not vouch for it");
    let (_public_tunnel, public_port) = connect(port, "db.example.org", &api, Some(&tls.join("ca.pem")));
    assert_eq!(ok(psql(public_port, "select 'public'")).trim(), "public");

    // A device the policy does not name: refused before a byte reaches PostgreSQL.
    let (_laptop_tunnel, laptop_port) = connect(port, "db.internal", &laptop, None);
    let out = psql(laptop_port, "select 1");
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // The same device on the service in shadow mode: let through, recorded as a would-be deny.
    let (_shadow_tunnel, shadow_port) = connect(port, "db-shadow.internal", &laptop, None);
    assert_eq!(ok(psql(shadow_port, "select 'shadowed'")).trim(), "shadowed");

    // No certificate: the TLS connection is closed after the handshake, with nothing relayed,
    // on the service in shadow mode too (shadow mode never opens an anonymous relay).
    for service in ["db.internal", "db-shadow.internal"] {
        let mut s_client = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{port}"), "-servername", service])
            .arg("-CAfile")
            .arg(api.join("bundle.pem"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A PostgreSQL SSLRequest: PostgreSQL would answer `N` or `S` at once; through a
        // refused tunnel nothing comes back, and the gateway closes the connection.
        s_client.stdin.as_mut().unwrap().write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).unwrap();
        let mut s_client = Running(s_client);
        let deadline = Instant::now() + Duration::from_secs(10);
        while s_client.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{service}: the gateway kept a connection without a certificate open");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut answer = Vec::new();
        std::io::Read::read_to_end(s_client.0.stdout.as_mut().unwrap(), &mut answer).unwrap();
        assert!(answer.is_empty(), "{service}: relayed without a certificate: {answer:?}");
    }

    // HTTP naming the service's host is no application (404, recorded), even with a good
    // certificate: sent to the address (so no SNI opens a tunnel), with `Host: db.internal`.
    let s = |name: &str| api.join(name).display().to_string();
    let status = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--http1.1", "-H", "Host: db.internal"])
        .args(["--cert", &s("svid.pem"), "--key", &s("svid.key.pem")])
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "404", "HTTP to a TCP service");

    // An open session is cut once its certificate is revoked: psql waiting on a long query
    // loses its connection within a few reauthorization intervals.
    let long = Running(
        psql_command(api_port, "select pg_sleep(60)").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap(),
    );
    let metric = |name: &str| {
        let out = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{admin}/metrics")]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).map(str::to_owned).unwrap_or_default()
    };
    // Both of the tunnel's connections, the gateway's sockets, probe their peer (a client gone
    // without a word frees it). (Columns: Recv-Q, Send-Q, local address, peer address, process,
    // timer.)
    let gateway_pid = format!("pid={},", gateway.0.id());
    let probing = |sockets: &str, end: usize, address: &str| {
        sockets.lines().any(|l| {
            let columns: Vec<&str> = l.split_whitespace().collect();
            columns.get(end) == Some(&address) && l.contains(&gateway_pid) && l.contains("timer:(keepalive")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sockets = Command::new("ss").args(["-tnop", "state", "established"]).output().unwrap();
        let sockets = String::from_utf8_lossy(&sockets.stdout).into_owned();
        let client_side = probing(&sockets, 2, &format!("127.0.0.1:{port}"));
        let service_side = probing(&sockets, 3, "127.0.0.1:5432");
        if client_side && service_side && metric("zerogate_tunnels_open") == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "keepalive on {client_side}/{service_side}, metrics, sockets: {sockets}");
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(zerogate().args(["ca", "revoke", "--data-dir", &d(&data), "--serial", &serial(&api)]).output().unwrap());
    let revoked_at = Instant::now();
    let mut long = long;
    let status = loop {
        if let Some(status) = long.0.try_wait().unwrap() {
            break status;
        }
        assert!(revoked_at.elapsed() < Duration::from_secs(20), "the session outlived its certificate");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "the query cannot have finished: it sleeps 60 s");
    // (The gateway's task ends a moment after the client sees the close.)
    let deadline = Instant::now() + Duration::from_secs(3);
    while metric("zerogate_tunnels_open") != "0" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!((metric("zerogate_tunnels_open"), metric("zerogate_tunnels_cut_total")), ("0".into(), "1".into()));
    // And a new connection with the revoked certificate is refused.
    assert!(!psql(api_port, "select 1").status.success());
    // A new certificate in the same files (as the agent renews it) is used by the running
    // `zerogate connect` from its next connection on.
    let revoked_serial = serial(&api);
    issue(&data, "spiffe://tcp.test/workload/api", &api);
    assert_ne!(serial(&api), revoked_serial);
    assert_eq!(ok(psql(api_port, "select 'renewed'")).trim(), "renewed");

    // In shadow mode a session the policy would refuse goes on, and the first reauthorization
    // that would have cut it is on record, once; its certificate revoked, it is cut all the same.
    let would_be_cut = || {
        records(&data)
            .iter()
            .filter(|r| r["reauthorization"] == true && r["errors"].to_string().contains("would be cut (shadow mode)"))
            .count()
    };
    // (The short shadow session before may have lived past an interval and written its own.)
    let before = would_be_cut();
    let shadowed = Running(
        psql_command(shadow_port, "select pg_sleep(60)").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while would_be_cut() == before {
        assert!(Instant::now() < deadline, "no record of the would-be cut: {:#?}", records(&data));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(would_be_cut(), before + 1, "recorded once, not on every interval");
    ok(zerogate().args(["ca", "revoke", "--data-dir", &d(&data), "--serial", &serial(&laptop)]).output().unwrap());
    let mut shadowed = shadowed;
    let revoked_at = Instant::now();
    while shadowed.0.try_wait().unwrap().is_none() {
        assert!(revoked_at.elapsed() < Duration::from_secs(20), "a shadow-mode tunnel outlived its certificate");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(gateway);
    // The operator's log says how each tunnel ended, whose it was, and how long it lasted.
    let log = std::fs::read_to_string(dir.join("gateway.err")).unwrap();
    assert!(!log.contains('\u{1b}'), "no terminal colours in a log file: {log}");
    let ended: Vec<&str> = log.lines().filter(|l| l.contains("tunnel ended")).collect();
    assert!(ended.len() >= 4, "{log}");
    assert!(
        ended.iter().any(|l| l.contains("ended=closed") && l.contains("from_client=") && l.contains("to_client=")),
        "a session that closed says what it carried: {log}"
    );
    assert!(
        ended.iter().any(|l| l.contains("cut: access ended") && l.contains("workload/api") && l.contains("seconds=")),
        "{log}"
    );

    let records = records(&data);
    let by = |principal: &str, decision: &str| {
        records
            .iter()
            .filter(|r| r["principal"].as_str().is_some_and(|p| p.contains(principal)) && r["decision"] == decision)
            .collect::<Vec<_>>()
    };
    // The first query, the one through the other CA's certificate, the long one, and the one
    // with the new certificate: one connection each (the refused handshake is no decision).
    let allowed = by("workload/api", "allow");
    assert_eq!(allowed.len(), 4, "{records:#?}");
    assert_eq!(allowed[1]["request"]["host"], "db.example.org");
    assert_ne!(allowed[3]["credential"]["id"], allowed[0]["credential"]["id"], "the new certificate's serial");
    assert_eq!(allowed[0]["request"]["host"], "db.internal");
    assert_eq!(allowed[0]["resource"], "Zerogate::TcpTarget::\"db:tcp/5432\"");
    assert_eq!(allowed[0]["policies"][0], "api-to-db");
    assert!(!by("device/laptop-1", "deny").is_empty(), "{records:#?}");
    assert!(
        by("device/laptop-1", "deny")
            .iter()
            .any(|r| r["request"]["host"] == "db-shadow.internal" && r["errors"].to_string().contains("cut")),
        "the shadow-mode tunnel's cut: {records:#?}"
    );
    let shadowed = by("device/laptop-1", "shadow-deny");
    assert!(
        !shadowed.is_empty() && shadowed.iter().all(|r| r["request"]["host"] == "db-shadow.internal"),
        "{records:#?}"
    );
    let cut = by("workload/api", "deny");
    assert!(
        cut.iter().any(|r| r["errors"].to_string().contains("revoked") && r["errors"].to_string().contains("cut")),
        "{cut:#?}"
    );
    let anonymous: Vec<_> =
        records.iter().filter(|r| r["errors"].to_string().contains("client_certificate_required")).collect();
    assert_eq!(anonymous.len(), 2, "the client without a certificate, on each service: {records:#?}");
    assert!(anonymous.iter().all(|r| r["decision"] == "deny" && r["principal"].is_null()), "{anonymous:#?}");
    let after = records.iter().rfind(|r| r["principal"].is_null()).unwrap();
    assert_eq!(after["decision"], "deny", "the new connection after the revocation");
    assert!(after["errors"].to_string().contains("revoked"), "{after:#}");
    let log = std::fs::read_to_string(data.join("audit/audit.log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("\"host\":\"db.internal\"") && l.contains("no application")),
        "the HTTP request is on record"
    );
    // What enforcing the shadow-mode service would refuse: the laptop's tunnels, one group,
    // each tunnel counted once (its would-be cut apart from the connection it opened with).
    let (reauthorizations, connections): (Vec<&serde_json::Value>, Vec<_>) =
        shadowed.iter().copied().partition(|r| r["reauthorization"] == true);
    assert!(!reauthorizations.is_empty() && !connections.is_empty(), "{shadowed:#?}");
    let cuts = |host: &str| {
        records
            .iter()
            .filter(|r| r["request"]["host"] == host && r["decision"] == "deny" && r["reauthorization"] == true)
            .count()
    };
    let report = ok(zerogate().args(["audit", "shadow", "--json", "--data-dir", &d(&data)]).output().unwrap());
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let hosts: Vec<&str> = report["apps"].as_array().unwrap().iter().map(|a| a["host"].as_str().unwrap()).collect();
    assert_eq!(
        hosts,
        ["db-shadow.internal", "db.example.org", "db.internal"],
        "only the configured services: {report:#}"
    );
    assert!(report["unrouted"].as_u64() >= Some(1), "the HTTP request to a TCP service: {report:#}");
    let app = |host: &str| report["apps"].as_array().unwrap().iter().find(|a| a["host"] == host).unwrap().clone();
    let shadow = app("db-shadow.internal");
    assert_eq!(shadow["would_be_refused"], connections.len(), "{report:#}");
    assert_eq!(shadow["would_be_cut"], reauthorizations.len(), "{report:#}");
    assert_eq!(shadow["cut"], cuts("db-shadow.internal"), "{report:#}");
    let group = &shadow["groups"][0];
    assert_eq!(group["principal"], "Zerogate::Device::\"spiffe://tcp.test/device/laptop-1\"", "{report:#}");
    assert_eq!(
        (group["action"].as_str(), group["count"].as_u64()),
        (Some("Zerogate::Action::\"connect\""), Some(connections.len() as u64))
    );
    let enforced = app("db.internal");
    assert_eq!(enforced["would_be_refused"], 0, "an enforcing service lets nothing through by shadow mode");
    assert_eq!(enforced["would_be_cut"], 0, "{enforced:#}");
    assert!(enforced["cut"].as_u64() >= Some(1), "the revoked workload's tunnel: {enforced:#}");
    assert_eq!(enforced["cut"], cuts("db.internal"), "{enforced:#}");
    assert!(enforced["allowed"].as_u64() >= Some(3) && enforced["denied"].as_u64() >= Some(1), "{enforced:#}");
    let text = ok(zerogate().args(["audit", "shadow", "--data-dir", &d(&data)]).output().unwrap());
    let counts = format!(
        "db-shadow.internal: {} allowed, {} refused, {} would be refused",
        shadow["allowed"], shadow["denied"], shadow["would_be_refused"]
    );
    assert!(text.contains(&counts), "{counts}: {text}");
    assert!(text.contains("device/laptop-1"), "{text}");
    // One record, by its line and by the reference a PROXY header would carry.
    let line = group["last_seq"].as_u64().unwrap();
    for reference in [line.to_string(), format!("tcp-test:{line}")] {
        let shown = ok(zerogate().args(["audit", "show", &reference, "--data-dir", &d(&data)]).output().unwrap());
        let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!((shown["seq"].as_u64(), shown["record"]["decision"].as_str()), (Some(line), Some("shadow-deny")));
    }
    for (reference, reason) in [
        (format!("gw-2:{line}"), "written by `tcp-test`, not `gw-2`"),
        ("999999".into(), "no line 999999"),
        ("x".into(), "not a record reference"),
    ] {
        let out = zerogate().args(["audit", "show", &reference, "--data-dir", &d(&data)]).output().unwrap();
        let error = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && error.contains(reason), "{reference}: {error}");
    }
    let verified = ok(zerogate().args(["audit", "verify", "--data-dir", &d(&data)]).output().unwrap());
    assert!(verified.contains("intact") || verified.contains("ok"), "{verified}");
    let _ = std::fs::remove_dir_all(&dir);
}
