//! `zerogate map` as a user runs it: the real binary on real files, standard input, bad input of
//! every kind, `--strict`, and every output format.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zerogate"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zerogate-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run zerogate")
}

fn run_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child =
        bin().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

const HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status";

fn v2_line(src: &str, dst: &str, sport: u16, dport: u16) -> String {
    format!("2 123456789012 eni-0a {src} {dst} {sport} {dport} 6 10 1000 1600000000 1600000060 ACCEPT OK")
}

#[test]
fn readme_first_command_maps_the_example_estate() {
    let dir = scratch("readme");
    let out_file = dir.join("map.json");
    let estate = repo().join("examples/estate");
    let out = run(&[
        "map",
        estate.to_str().unwrap(),
        "-i",
        estate.join("inventory.csv").to_str().unwrap(),
        "-i",
        estate.join("ip-ranges.json").to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let summary = String::from_utf8(out.stdout).unwrap();
    assert!(summary.contains("edges: "), "{summary}");
    assert!(summary.contains("internet") && summary.contains("lb-1"), "{summary}");
    let map: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert_eq!(map["schema"], "zerogate.traffic-map/v1");
    let truth: serde_json::Value = serde_json::from_slice(&std::fs::read(estate.join("truth.json")).unwrap()).unwrap();
    assert_eq!(map["noise"]["records"], truth["noise_records"]);
    // Two runs, same bytes.
    let again = dir.join("again.json");
    let out = run(&[
        "map",
        estate.to_str().unwrap(),
        "-i",
        estate.join("inventory.csv").to_str().unwrap(),
        "-i",
        estate.join("ip-ranges.json").to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.status.success());
    assert_eq!(std::fs::read(&out_file).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn standard_input_gzip_and_headerless_lines() {
    let text = format!(
        "{HEADER}\n{}\n{}\n",
        v2_line("10.0.0.1", "10.0.0.2", 40000, 5432),
        v2_line("10.0.0.3", "10.0.0.2", 40001, 5432)
    );
    let map = json(&run_stdin(&["map", "-", "--json"], &gzip(text.as_bytes())));
    assert_eq!(map["inputs"][0]["path"], "-");
    assert_eq!(map["inputs"][0]["compression"], "gzip");
    assert_eq!(map["coverage"]["records"], 2);
    // CloudWatch Logs export: no header, a timestamp before each record, default v2 format.
    let cw = format!("2020-09-13T12:26:40.000Z {}\n", v2_line("10.0.0.1", "10.0.0.2", 40000, 5432));
    let map = json(&run_stdin(&["map", "-", "--json"], cw.as_bytes()));
    assert_eq!(map["coverage"]["records"], 1);
    assert_eq!(map["coverage"]["cloudwatch_prefixed_lines"], 1);
    assert_eq!(map["edges"][0]["port"], 5432);
}

#[test]
fn log_format_states_the_columns_of_headerless_input() {
    let lines = "10.0.0.1 10.0.0.2 40000 443 6 2\n10.0.0.2 10.0.0.1 443 40000 6 18\n";
    let out = run_stdin(
        &["map", "-", "--json", "--log-format", "${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${tcp-flags}"],
        lines.as_bytes(),
    );
    let map = json(&out);
    assert_eq!(map["edges"].as_array().unwrap().len(), 1);
    assert_eq!(map["edges"][0]["client"], "ip:10.0.0.1");
    assert_eq!(map["edges"][0]["orientation"]["basis"], "tcp-flags");
    let bad = run(&["map", "-", "--log-format", "${srcaddr} dstaddr"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("bad --log-format"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn transit_gateway_flow_logs_are_recognised() {
    let header = "version resource-type account-id tgw-id tgw-attachment-id tgw-src-vpc-account-id tgw-dst-vpc-account-id tgw-src-vpc-id tgw-dst-vpc-id tgw-src-subnet-id tgw-dst-subnet-id tgw-src-eni tgw-dst-eni tgw-src-az-id tgw-dst-az-id tgw-pair-attachment-id srcaddr dstaddr srcport dstport protocol packets bytes start end log-status type packets-lost-no-route packets-lost-blackhole packets-lost-mtu-exceeded packets-lost-ttl-expired tcp-flags region flow-direction pkt-src-aws-service pkt-dst-aws-service";
    let row = |attachment: &str, dir: &str, src: &str, dst: &str, sp: u16, dp: u16, flags: u8| {
        format!(
            "6 TransitGatewayAttachment 123456789012 tgw-0abc {attachment} 123456789012 123456789012 vpc-1 vpc-2 subnet-1 subnet-2 eni-1 eni-2 use1-az1 use1-az2 tgw-attach-pair {src} {dst} {sp} {dp} 6 10 1000 1700000000 1700000060 OK IPv4 0 0 0 0 {flags} us-east-1 {dir} - -"
        )
    };
    let text = [
        header.to_owned(),
        row("tgw-attach-a", "ingress", "10.0.0.1", "10.1.0.1", 40000, 443, 2),
        row("tgw-attach-b", "egress", "10.0.0.1", "10.1.0.1", 40000, 443, 2),
        row("tgw-attach-b", "ingress", "10.1.0.1", "10.0.0.1", 443, 40000, 18),
        row("tgw-attach-a", "egress", "10.1.0.1", "10.0.0.1", 443, 40000, 18),
    ]
    .join("\n");
    let map = json(&run_stdin(&["map", "-", "--json"], text.as_bytes()));
    assert_eq!(map["inputs"][0]["kinds"][0], "transit-gateway");
    let edges = map["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{edges:#?}");
    assert_eq!(edges[0]["client"], "ip:10.0.0.1");
    assert_eq!(edges[0]["port"], 443);
    assert_eq!(edges[0]["vantage"], "transit-gateway");
    assert_eq!(edges[0]["records"], 4);
    assert_eq!(edges[0]["bytes"], 2000, "ingress records only: each direction once");
    assert_eq!(edges[0]["connections"], 1);
}

#[test]
fn bad_input_is_counted_with_file_line_and_reason() {
    let dir = scratch("bad");
    let good = format!("{HEADER}\n{}\n", v2_line("10.0.0.1", "10.0.0.2", 40000, 5432));
    std::fs::write(dir.join("good.log"), &good).unwrap();
    let malformed = format!(
        "{HEADER}\n{}\n2 123 eni-1 10.0.0.9 10.0.0.2 1 2 6 notanumber 1 1 1 ACCEPT OK\nshort line\n{}\n",
        v2_line("10.0.0.5", "10.0.0.2", 40000, 5432),
        v2_line("10.0.0.6", "10.0.0.2", 40000, 5432)
    );
    std::fs::write(dir.join("malformed.log"), &malformed).unwrap();
    let many = (0..200).map(|i| v2_line("10.0.0.7", "10.0.0.2", 40000 + i, 5432)).collect::<Vec<_>>().join("\n");
    let mut truncated = gzip(format!("{HEADER}\n{many}\n").as_bytes());
    truncated.truncate(truncated.len() / 2);
    std::fs::write(dir.join("truncated.log.gz"), &truncated).unwrap();
    std::fs::write(dir.join("badheader.log"), format!("version srcaddr srcaddr\n{}\n", "2 10.0.0.1 10.0.0.2")).unwrap();
    std::fs::write(dir.join("binary.log"), [0u8, 159, 146, 150, 10, 255, 0, 1]).unwrap();
    let missing = dir.join("missing.log");

    let out = run(&["map", dir.to_str().unwrap(), missing.to_str().unwrap(), "--json"]);
    let map = json(&out);
    let examples = map["dropped"]["examples"].as_array().unwrap();
    let find =
        |file: &str| examples.iter().filter(|e| e["input"].as_str().unwrap().ends_with(file)).collect::<Vec<_>>();
    let m = find("malformed.log");
    assert_eq!(m.len(), 2, "{m:#?}");
    assert_eq!(m[0]["line"], 3);
    assert!(m[0]["reason"].as_str().unwrap().contains("`packets`"), "{}", m[0]["reason"]);
    assert_eq!(m[1]["line"], 4);
    assert!(m[1]["reason"].as_str().unwrap().contains("expected 14 fields, found 2"));
    let t = find("truncated.log.gz");
    assert_eq!(t.len(), 1);
    assert!(t[0]["reason"].as_str().unwrap().contains("input ends early"), "{}", t[0]["reason"]);
    let h = find("badheader.log");
    assert!(h[0]["reason"].as_str().unwrap().contains("bad header: field `srcaddr` appears twice"));
    assert!(!find("binary.log").is_empty());
    let gone = find("missing.log");
    assert_eq!(gone[0]["line"], 0);
    assert!(gone[0]["reason"].as_str().unwrap().starts_with("cannot read"));
    // The rest still counts: the good file, the good lines around the bad ones, and the
    // records of the truncated gzip before the cut.
    let clients: Vec<&str> = map["edges"].as_array().unwrap().iter().map(|e| e["client"].as_str().unwrap()).collect();
    for c in ["ip:10.0.0.1", "ip:10.0.0.5", "ip:10.0.0.6", "ip:10.0.0.7"] {
        assert!(clients.contains(&c), "{c} in {clients:?}");
    }
    let truncated_input = map["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"].as_str().unwrap().ends_with("truncated.log.gz"))
        .unwrap();
    assert_eq!(truncated_input["truncated"], true);
    assert!(truncated_input["records"].as_u64().unwrap() > 0);

    // --strict stops at the first problem, names it, and exits non-zero.
    let out = run(&["map", dir.join("malformed.log").to_str().unwrap(), "--strict", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("malformed.log:3: malformed record: field `packets`"), "{err}");
    assert!(out.stdout.is_empty(), "no map on a strict failure");
}

#[test]
fn all_inputs_unreadable_is_a_failure() {
    let out = run(&["map", "/nonexistent/zerogate/input.log", "--json"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn pictures_and_unknown_fields() {
    let text = "version srcaddr dstaddr srcport dstport protocol tcp-flags field-from-the-future\n2 10.0.0.1 10.0.0.2 40000 443 6 2 x\n";
    let out = run_stdin(&["map", "-", "--format", "dot"], text.as_bytes());
    assert!(out.status.success());
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(dot.starts_with("digraph zerogate {") && dot.contains("->") && dot.contains("tcp/443"), "{dot}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("field-from-the-future"), "one warning names the field");
    let out = run_stdin(&["map", "-", "--format", "mermaid"], text.as_bytes());
    let mermaid = String::from_utf8(out.stdout).unwrap();
    assert!(mermaid.starts_with("flowchart LR") && mermaid.contains("-->"), "{mermaid}");
}

#[test]
fn inventory_json_names_instances_and_interfaces() {
    let dir = scratch("inv");
    let instances = r#"{"Reservations":[{"Instances":[{"InstanceId":"i-0web","PrivateIpAddress":"10.0.0.1","VpcId":"vpc-1","SubnetId":"subnet-1",
        "Tags":[{"Key":"Name","Value":"web"},{"Key":"zerogate:listen","Value":"8080/tcp"}],
        "NetworkInterfaces":[{"NetworkInterfaceId":"eni-0web","PrivateIpAddresses":[{"PrivateIpAddress":"10.0.0.1"},{"PrivateIpAddress":"10.0.0.11"}]}]}]}]}"#;
    let interfaces = r#"{"NetworkInterfaces":[{"NetworkInterfaceId":"eni-0db","InterfaceType":"interface","PrivateIpAddress":"10.0.0.2",
        "PrivateIpAddresses":[{"PrivateIpAddress":"10.0.0.2"}],"Attachment":{"InstanceId":"i-0db"},"TagSet":[{"Key":"Name","Value":"db"}]},
        {"NetworkInterfaceId":"eni-0nat","InterfaceType":"nat_gateway","PrivateIpAddress":"10.0.0.100","Description":"Interface for NAT Gateway nat-1"}]}"#;
    std::fs::write(dir.join("instances.json"), instances).unwrap();
    std::fs::write(dir.join("enis.json"), interfaces).unwrap();
    // No flags, both ports ephemeral-looking: only the inventory's listen tag orients it.
    let text = format!("{HEADER}\n{}\n", v2_line("10.0.0.2", "10.0.0.11", 50000, 8080));
    let out = run_stdin(
        &[
            "map",
            "-",
            "--json",
            "-i",
            dir.join("instances.json").to_str().unwrap(),
            "-i",
            dir.join("enis.json").to_str().unwrap(),
        ],
        text.as_bytes(),
    );
    let map = json(&out);
    let e = &map["edges"][0];
    assert_eq!(
        (e["client"].as_str(), e["server"].as_str(), e["port"].as_u64()),
        (Some("i-0db"), Some("i-0web"), Some(8080))
    );
    assert_eq!(e["orientation"]["basis"], "inventory");
    let nat = map["assets"].as_array().unwrap().iter().find(|a| a["id"] == "eni-0nat").unwrap();
    assert_eq!(nat["interface_type"], "nat_gateway");
    assert_eq!(nat["kind"], "network-interface");
    let bad = run(&["map", "-", "-i", Path::new("/nonexistent.csv").to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot read inventory `/nonexistent.csv`"));
}
