//! Security groups as Terraform JSON and CloudFormation JSON, checked by structural validators
//! written from the AWS provider's and CloudFormation's documented schemas (attribute names,
//! required members, one destination per rule, port ranges per protocol, every reference
//! resolving, no dependency cycle, the rules-per-group limit).

use std::collections::{BTreeMap, BTreeSet};

mod common;

use serde_json::{Value, json};
use zerogate_segment::aws::{DEFAULT_RULES_PER_GROUP, SgError, cloudformation_json, security_groups, terraform_json};
use zerogate_segment::recommend::{MapInput, Options, parse_map, recommend};

fn label_ok(label: &str) -> bool {
    label.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn description_ok(text: &str) -> bool {
    text.len() <= 255 && text.chars().all(|c| c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c))
}

fn ports_ok(protocol: &str, from: Option<i64>, to: Option<i64>) -> Result<(), String> {
    match (protocol, from, to) {
        ("tcp" | "udp", Some(f), Some(t)) if (0..=65535).contains(&f) && (0..=65535).contains(&t) && f <= t => Ok(()),
        ("icmp" | "icmpv6", Some(f), Some(t)) if (-1..=255).contains(&f) && (-1..=255).contains(&t) => Ok(()),
        ("-1", None, None) => Ok(()),
        (p, None, None) if p.parse::<u8>().is_ok() => Ok(()),
        other => Err(format!("bad protocol/ports {other:?}")),
    }
}

/// `terraform validate`-equivalent checks for what zerogate writes, from the AWS provider's docs.
fn check_terraform(tf: &Value, limit: usize) -> Result<(), String> {
    let top: BTreeSet<&str> = tf.as_object().ok_or("not an object")?.keys().map(String::as_str).collect();
    if !top.is_subset(&BTreeSet::from(["variable", "data", "resource"])) {
        return Err(format!("unknown top-level blocks {top:?}"));
    }
    let variables: BTreeSet<String> =
        tf["variable"].as_object().map(|v| v.keys().cloned().collect()).unwrap_or_default();
    let prefix_lists: BTreeSet<String> =
        tf["data"]["aws_ec2_managed_prefix_list"].as_object().map(|v| v.keys().cloned().collect()).unwrap_or_default();
    let resources = tf["resource"].as_object().ok_or("no resource block")?;
    let groups = resources.get("aws_security_group").and_then(Value::as_object).ok_or("no aws_security_group")?;
    let mut counts: BTreeMap<(String, &str), usize> = BTreeMap::new();
    let reference_ok = |text: &str| -> bool {
        let Some(inner) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) else { return true };
        let parts: Vec<&str> = inner.split('.').collect();
        match parts.as_slice() {
            ["aws_security_group", name, "id"] => groups.contains_key(*name),
            ["var", name] => variables.contains(*name),
            ["data", "aws_ec2_managed_prefix_list", name, "id"] => prefix_lists.contains(*name),
            _ => false,
        }
    };
    for (kind, items) in resources {
        let items = items.as_object().ok_or("resource type is not an object")?;
        for (label, body) in items {
            if !label_ok(label) {
                return Err(format!("bad label {label}"));
            }
            let body = body.as_object().ok_or("resource is not an object")?;
            for value in body.values() {
                if let Some(text) = value.as_str()
                    && !reference_ok(text)
                {
                    return Err(format!("{kind}.{label}: unresolved reference {text}"));
                }
            }
            match kind.as_str() {
                "aws_security_group" => {
                    let allowed = BTreeSet::from(["name", "description", "vpc_id", "tags"]);
                    if !body.keys().all(|k| allowed.contains(k.as_str())) {
                        return Err(format!("{label}: unknown attribute"));
                    }
                    let name = body["name"].as_str().ok_or("name")?;
                    if name.len() > 255 || name.starts_with("sg-") {
                        return Err(format!("{label}: bad name"));
                    }
                    if !description_ok(body["description"].as_str().ok_or("description")?) {
                        return Err(format!("{label}: bad description"));
                    }
                }
                "aws_vpc_security_group_ingress_rule" | "aws_vpc_security_group_egress_rule" => {
                    let allowed = BTreeSet::from([
                        "security_group_id",
                        "ip_protocol",
                        "from_port",
                        "to_port",
                        "cidr_ipv4",
                        "cidr_ipv6",
                        "prefix_list_id",
                        "referenced_security_group_id",
                        "description",
                    ]);
                    if !body.keys().all(|k| allowed.contains(k.as_str())) {
                        return Err(format!("{label}: unknown attribute"));
                    }
                    let group = body.get("security_group_id").and_then(Value::as_str).ok_or("security_group_id")?;
                    let protocol = body.get("ip_protocol").and_then(Value::as_str).ok_or("ip_protocol")?;
                    let peers = ["cidr_ipv4", "cidr_ipv6", "prefix_list_id", "referenced_security_group_id"]
                        .iter()
                        .filter(|k| body.contains_key(**k))
                        .count();
                    if peers != 1 {
                        return Err(format!("{label}: {peers} destinations"));
                    }
                    ports_ok(
                        protocol,
                        body.get("from_port").and_then(Value::as_i64),
                        body.get("to_port").and_then(Value::as_i64),
                    )
                    .map_err(|e| format!("{label}: {e}"))?;
                    if body.get("cidr_ipv4").is_some_and(|c| c == "0.0.0.0/0") && protocol == "-1" {
                        return Err(format!("{label}: allow-all"));
                    }
                    if !description_ok(body["description"].as_str().unwrap_or("")) {
                        return Err(format!("{label}: bad description"));
                    }
                    let direction = if kind.ends_with("ingress_rule") { "in" } else { "out" };
                    *counts.entry((group.to_owned(), direction)).or_default() += 1;
                }
                other => return Err(format!("unexpected resource type {other}")),
            }
        }
    }
    if let Some(((group, direction), count)) = counts.iter().find(|(_, c)| **c > limit) {
        return Err(format!("{group} has {count} {direction} rules, over {limit}"));
    }
    Ok(())
}

/// Checks a CloudFormation template against the documented resource properties; returns the
/// number of resources.
fn check_cloudformation(cfn: &Value) -> Result<usize, String> {
    if cfn["AWSTemplateFormatVersion"] != "2010-09-09" {
        return Err("AWSTemplateFormatVersion".into());
    }
    let parameters = cfn["Parameters"].as_object().ok_or("Parameters")?;
    let resources = cfn["Resources"].as_object().ok_or("Resources")?;
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (id, resource) in resources {
        if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("logical id {id}"));
        }
        let kind = resource["Type"].as_str().ok_or("Type")?;
        let props = resource["Properties"].as_object().ok_or("Properties")?;
        // Every Ref and GetAtt resolves; remember resource dependencies.
        let mut stack: Vec<&Value> = props.values().collect();
        while let Some(value) = stack.pop() {
            match value {
                Value::Object(map) => {
                    if let Some(target) = map.get("Ref").and_then(Value::as_str) {
                        if resources.contains_key(target) {
                            edges.entry(id).or_default().insert(target.to_owned());
                        } else if !parameters.contains_key(target) {
                            return Err(format!("{id}: Ref {target} resolves to nothing"));
                        }
                    }
                    if let Some(att) = map.get("Fn::GetAtt") {
                        let target = att[0].as_str().ok_or("GetAtt")?;
                        let target_kind = resources.get(target).map(|r| &r["Type"]);
                        if target_kind != Some(&json!("AWS::EC2::SecurityGroup")) || att[1] != "GroupId" {
                            return Err(format!("{id}: GetAtt {att}"));
                        }
                        edges.entry(id).or_default().insert(target.to_owned());
                    }
                    stack.extend(map.values());
                }
                Value::Array(items) => stack.extend(items),
                _ => {}
            }
        }
        match kind {
            "AWS::EC2::SecurityGroup" => {
                let description = props.get("GroupDescription").and_then(Value::as_str).ok_or("GroupDescription")?;
                if !description_ok(description) || !props.contains_key("VpcId") {
                    return Err(format!("{id}: group properties"));
                }
                let egress = props["SecurityGroupEgress"].as_array().ok_or("SecurityGroupEgress")?;
                if egress.iter().any(|r| r["CidrIp"] == "0.0.0.0/0" && r["IpProtocol"] == "-1") {
                    return Err(format!("{id}: allow-all egress"));
                }
            }
            "AWS::EC2::SecurityGroupIngress" | "AWS::EC2::SecurityGroupEgress" => {
                let ingress = kind.ends_with("Ingress");
                let peers: &[&str] = if ingress {
                    &["CidrIp", "CidrIpv6", "SourceSecurityGroupId", "SourcePrefixListId"]
                } else {
                    &["CidrIp", "CidrIpv6", "DestinationSecurityGroupId", "DestinationPrefixListId"]
                };
                let count = peers.iter().filter(|k| props.contains_key(**k)).count();
                if count != 1 || !props.contains_key("GroupId") {
                    return Err(format!("{id}: {count} peers"));
                }
                let protocol = props.get("IpProtocol").and_then(Value::as_str).ok_or("IpProtocol")?;
                ports_ok(
                    protocol,
                    props.get("FromPort").and_then(Value::as_i64),
                    props.get("ToPort").and_then(Value::as_i64),
                )
                .map_err(|e| format!("{id}: {e}"))?;
            }
            other => return Err(format!("unexpected type {other}")),
        }
    }
    // No dependency cycle (CloudFormation refuses to create one).
    let mut state: BTreeMap<String, u8> = BTreeMap::new();
    fn visit(node: &str, edges: &BTreeMap<&str, BTreeSet<String>>, state: &mut BTreeMap<String, u8>) -> bool {
        match state.get(node) {
            Some(1) => return false,
            Some(2) => return true,
            _ => {}
        }
        state.insert(node.to_owned(), 1);
        for next in edges.get(node).into_iter().flatten() {
            if !visit(next, edges, state) {
                return false;
            }
        }
        state.insert(node.to_owned(), 2);
        true
    }
    for id in resources.keys() {
        if !visit(id, &edges, &mut state) {
            return Err(format!("dependency cycle through {id}"));
        }
    }
    Ok(resources.len())
}

fn map_of(assets: Value, edges: Vec<Value>) -> MapInput {
    let map = json!({
        "schema": "zerogate.traffic-map/v1",
        "window": { "first_seen": "2025-12-01T00:00:00Z", "last_seen": "2025-12-03T00:00:00Z" },
        "assets": assets,
        "edges": edges,
    });
    parse_map("m.json", map.to_string().as_bytes()).unwrap()
}

fn edge(client: &str, server: &str, protocol: u8, port: u16) -> Value {
    json!({
        "client": client, "server": server, "protocol": protocol,
        "protocol_name": match protocol { 6 => "tcp", 17 => "udp", 1 => "icmp", _ => "50" }, "port": port,
        "connections": 4, "bytes": 1000, "accepted": 8, "rejected": 0,
        "first_seen": "2025-12-01T00:00:00Z", "last_seen": "2025-12-02T00:00:00Z",
        "orientation": { "confidence": "high", "basis": "tcp-flags" }
    })
}

#[test]
fn every_kind_of_peer_gives_valid_terraform_and_cloudformation() {
    // A small estate with every kind of peer: internet, AWS services with and without a managed
    // prefix list, groups that reference each other, an office range, another VPC's asset.
    let map = map_of(
        json!([
            { "id": "internet", "kind": "internet" },
            { "id": "aws:S3", "kind": "aws-service" },
            { "id": "aws:EC2", "kind": "aws-service" },
            { "id": "lb-1", "kind": "named", "addresses": ["10.0.1.10"], "tags": { "tier": "lb" } },
            { "id": "web-1", "kind": "named", "addresses": ["10.0.2.10"], "tags": { "tier": "web" } },
            { "id": "web-2", "kind": "named", "addresses": ["10.0.2.11"], "tags": { "tier": "web" } },
            { "id": "api-1", "kind": "instance", "addresses": ["10.0.3.10"], "tags": { "tier": "api" } },
            { "id": "office", "kind": "named", "addresses": ["198.51.100.0/24"], "tags": { "tier": "office" } },
            { "id": "monitoring", "kind": "named", "addresses": ["10.1.0.50"], "tags": { "tier": "shared", "vpc": "shared-services" } },
            { "id": "vpn", "kind": "named", "addresses": ["10.0.9.10"], "tags": { "tier": "vpn" } }
        ]),
        vec![
            edge("internet", "lb-1", 6, 443),
            edge("lb-1", "web-1", 6, 8080),
            edge("lb-1", "web-2", 6, 8080),
            edge("web-1", "api-1", 6, 50051),
            edge("api-1", "web-2", 6, 9000),
            edge("api-1", "aws:S3", 6, 443),
            edge("api-1", "aws:EC2", 6, 443),
            edge("office", "vpn", 17, 1194),
            edge("monitoring", "web-1", 6, 9100),
            edge("web-1", "api-1", 1, 0),
            edge("vpn", "api-1", 50, 0),
        ],
    );
    let rec = recommend(&map, &Options::default());
    let sgs = security_groups(&rec, &map, DEFAULT_RULES_PER_GROUP).unwrap();
    let tf = terraform_json(&sgs);
    check_terraform(&tf, DEFAULT_RULES_PER_GROUP).unwrap_or_else(|e| panic!("{e}\n{tf:#}"));
    let cfn = cloudformation_json(&sgs);
    check_cloudformation(&cfn).unwrap_or_else(|e| panic!("{e}\n{cfn:#}"));

    // What each rule became.
    let ingress = tf["resource"]["aws_vpc_security_group_ingress_rule"].as_object().unwrap();
    let egress = tf["resource"]["aws_vpc_security_group_egress_rule"].as_object().unwrap();
    let find = |rules: &serde_json::Map<String, Value>, group: &str, key: &str, value: &str, port: i64| {
        rules.values().any(|r| {
            r["security_group_id"] == format!("${{aws_security_group.{group}.id}}")
                && r[key] == value
                && r["from_port"] == port
        })
    };
    assert!(find(ingress, "zg_web", "referenced_security_group_id", "${aws_security_group.zg_lb.id}", 8080));
    assert!(find(egress, "zg_lb", "referenced_security_group_id", "${aws_security_group.zg_web.id}", 8080));
    assert!(find(ingress, "zg_lb", "cidr_ipv4", "0.0.0.0/0", 443) && find(ingress, "zg_lb", "cidr_ipv6", "::/0", 443));
    assert!(find(egress, "zg_api", "prefix_list_id", "${data.aws_ec2_managed_prefix_list.s3.id}", 443));
    assert!(find(ingress, "zg_vpn", "cidr_ipv4", "198.51.100.0/24", 1194), "office by CIDR");
    assert!(find(ingress, "zg_web", "cidr_ipv4", "10.1.0.50/32", 9100), "another VPC's asset by CIDR");
    assert!(tf["resource"]["aws_security_group"].get("zg_shared").is_none());
    assert!(sgs.notes.iter().any(|n| n.contains("aws:EC2")), "{:?}", sgs.notes);
    // web and api reference each other: CloudFormation has separate rule resources, no cycle.
    assert!(check_cloudformation(&cfn).unwrap() > sgs.groups.len());
}

#[test]
fn the_rules_per_group_limit_is_respected_by_compaction_or_refused() {
    let assets = json!([
        { "id": "app", "kind": "named", "addresses": ["10.0.1.1"], "tags": { "tier": "app" } },
        { "id": "db", "kind": "named", "addresses": ["10.0.2.1"], "tags": { "tier": "db" } }
    ]);
    let edges: Vec<Value> = (0..80).map(|i| edge("app", "db", 6, 7000 + i)).collect();
    let map = map_of(assets, edges);
    let rec = recommend(&map, &Options::default());
    assert_eq!(rec.rules.len(), 80);
    let sgs = security_groups(&rec, &map, 60).unwrap();
    let db = sgs.groups.iter().find(|g| g.segment == "db").unwrap();
    assert_eq!(db.ingress.len(), 1, "80 ports of one peer merged into one range");
    assert_eq!(db.ingress[0].ports, Some((7000, 7079)));
    assert!(sgs.notes.iter().any(|n| n.contains("over the limit")), "{:?}", sgs.notes);
    check_terraform(&terraform_json(&sgs), 60).unwrap();
    // Under the limit, nothing is merged.
    let roomy = security_groups(&rec, &map, 100).unwrap();
    assert_eq!(roomy.groups.iter().find(|g| g.segment == "db").unwrap().ingress.len(), 80);

    // 70 client segments, one port each: merging ports cannot help; refused, not truncated.
    let mut assets = vec![json!({ "id": "db", "kind": "named", "addresses": ["10.0.2.1"], "tags": { "tier": "db" } })];
    let mut edges = Vec::new();
    for i in 0..70 {
        assets.push(json!({ "id": format!("c{i}"), "kind": "named", "addresses": [format!("10.0.3.{i}")], "tags": { "tier": format!("c{i}") } }));
        edges.push(edge(&format!("c{i}"), "db", 6, 5432));
    }
    let map = map_of(Value::Array(assets), edges);
    let rec = recommend(&map, &Options::default());
    let error = security_groups(&rec, &map, 60).unwrap_err();
    assert!(matches!(error, SgError::TooManyRules { count: 70, limit: 60, .. }), "{error}");
    assert!(error.to_string().contains("segment `db`"), "{error}");
}

#[test]
fn a_generated_estate_gives_valid_groups_for_every_rule() {
    let spec = zerogate_flowgen::Spec { seed: 9, records: 20_000, days: 3, files: 2, ..Default::default() };
    let (dir, _truth, map) = common::estate("sg", &spec);
    let rec = recommend(&map, &Options::default());
    let sgs = security_groups(&rec, &map, DEFAULT_RULES_PER_GROUP).unwrap();
    check_terraform(&terraform_json(&sgs), DEFAULT_RULES_PER_GROUP).unwrap();
    check_cloudformation(&cloudformation_json(&sgs)).unwrap();
    // Every rule between two groups appears on both: ingress on the server, egress on the client.
    for rule in &rec.rules {
        let server = sgs.groups.iter().find(|g| g.segment == rule.server);
        let client = sgs.groups.iter().find(|g| g.segment == rule.client);
        if let (Some(server), Some(client)) = (server, client) {
            let port = i32::from(rule.port);
            assert!(server.ingress.iter().any(|r| r.ports.is_some_and(|(a, b)| a <= port && port <= b)), "{rule:?}");
            assert!(client.egress.iter().any(|r| r.ports.is_some_and(|(a, b)| a <= port && port <= b)), "{rule:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
