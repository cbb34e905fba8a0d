//! Recommendations as AWS security groups, in Terraform JSON and CloudFormation JSON.
//!
//! One security group per segment that lives in the VPC (instances, interfaces, named private
//! addresses); every rule becomes an ingress rule on the server's group and an egress rule on the
//! client's, referencing the other side's group when it has one. Other peers are written as what
//! AWS can express: the internet as `0.0.0.0/0` and `::/0`, S3 and DynamoDB as their AWS-managed
//! prefix lists, other AWS services (which have none) as `0.0.0.0/0` on that port with a note,
//! everything else (an office range, another VPC's assets, tagged `vpc=…`) as its CIDRs. Egress is
//! explicit: the default allow-all egress rule is removed.
//!
//! AWS allows a limited number of rules per group and direction (60 by default). Rules are
//! compacted only when a direction would exceed it, by merging the ports one peer uses into one
//! range, and every compaction is reported; if that is not enough, the output is refused, never
//! silently truncated.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Map, Value, json};

use crate::recommend::{MapInput, Recommendation, slug};

/// AWS's default limit of inbound (and, separately, outbound) rules per security group.
pub const DEFAULT_RULES_PER_GROUP: usize = 60;

/// The other side of a security-group rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Peer {
    /// Another segment's group.
    Group(String),
    /// An IPv4 or IPv6 network.
    Cidr(String),
    /// An AWS-managed prefix list, by service (`s3`, `dynamodb`).
    PrefixList(String),
}

/// One rule of a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SgRule {
    /// The other side.
    pub peer: Peer,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or a protocol number.
    pub protocol: String,
    /// Port range (ICMP: -1, -1 for every type); `None` for protocols without ports.
    pub ports: Option<(i32, i32)>,
    /// Why the rule exists.
    pub description: String,
}

/// A segment's security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    /// The segment.
    pub segment: String,
    /// `zerogate-<segment>`.
    pub name: String,
    /// Inbound rules.
    pub ingress: Vec<SgRule>,
    /// Outbound rules.
    pub egress: Vec<SgRule>,
}

/// The groups, and what was done to fit them in AWS's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroups {
    /// Groups, by segment.
    pub groups: Vec<SecurityGroup>,
    /// Compactions and approximations, for the report.
    pub notes: Vec<String>,
}

/// Why no security groups could be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SgError {
    /// Even compacted, a group has more rules than the limit.
    #[error(
        "segment `{segment}` needs {count} {direction} rules even after merging ports, over the limit of {limit}: split the segment (--segments) or raise the limit (--rules-per-group, after raising the AWS quota)"
    )]
    TooManyRules {
        /// The segment.
        segment: String,
        /// `inbound` or `outbound`.
        direction: &'static str,
        /// Rules needed.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

enum Placement {
    InVpc,
    Outside(Vec<Peer>),
}

fn is_private(address: &str) -> bool {
    let ip = address.split('/').next().unwrap_or(address);
    match ip.parse::<IpAddr>() {
        // RFC 1918, and RFC 6598 shared space (100.64.0.0/10).
        Ok(IpAddr::V4(v4)) => v4.is_private() || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64),
        Ok(IpAddr::V6(v6)) => v6.segments().first().is_some_and(|s| (s & 0xfe00) == 0xfc00),
        Err(_) => false,
    }
}

fn as_cidr(address: &str) -> Option<String> {
    if address.contains('/') {
        return Some(address.to_owned());
    }
    match address.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(format!("{v4}/32")),
        IpAddr::V6(v6) => Some(format!("{v6}/128")),
    }
}

fn placements(rec: &Recommendation, map: &MapInput, notes: &mut Vec<String>) -> BTreeMap<String, Placement> {
    let assets: BTreeMap<&str, &crate::recommend::AssetInput> = map.assets.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut out = BTreeMap::new();
    for segment in &rec.segments {
        let members: Vec<&crate::recommend::AssetInput> =
            segment.members.iter().filter_map(|m| assets.get(m.as_str()).copied()).collect();
        let placement = if segment.source == "internet" {
            Placement::Outside(vec![Peer::Cidr("0.0.0.0/0".into()), Peer::Cidr("::/0".into())])
        } else if segment.source == "aws-service" {
            let service = segment.name.trim_start_matches("aws:").to_ascii_lowercase();
            if service == "s3" || service == "dynamodb" {
                Placement::Outside(vec![Peer::PrefixList(service)])
            } else {
                notes.push(format!(
                    "{}: AWS publishes no managed prefix list for it; its rules allow 0.0.0.0/0 on their ports (prefer a VPC endpoint)",
                    segment.name
                ));
                Placement::Outside(vec![Peer::Cidr("0.0.0.0/0".into())])
            }
        } else {
            let in_vpc = members.iter().all(|a| {
                matches!(a.kind.as_str(), "instance" | "network-interface")
                    || (!a.tags.contains_key("vpc")
                        && !a.addresses.is_empty()
                        && a.addresses.iter().all(|x| is_private(x)))
            });
            if in_vpc && !members.is_empty() {
                Placement::InVpc
            } else {
                let mut cidrs: Vec<Peer> = members
                    .iter()
                    .flat_map(|a| a.addresses.iter())
                    .filter_map(|x| as_cidr(x))
                    .map(Peer::Cidr)
                    .collect();
                cidrs.sort();
                cidrs.dedup();
                Placement::Outside(cidrs)
            }
        };
        out.insert(segment.name.clone(), placement);
    }
    out
}

/// A rule description AWS accepts: at most 255 of ASCII letters, digits, spaces and
/// `._-:/()#,@[]+=&;{}!$*`; anything else becomes `_`.
fn aws_description(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c) { c } else { '_' })
        .take(255)
        .collect()
}

fn protocol_and_ports(protocol: u8, name: &str, port: u16) -> (String, Option<(i32, i32)>) {
    match protocol {
        6 | 17 => (name.to_owned(), Some((i32::from(port), i32::from(port)))),
        1 => ("icmp".to_owned(), Some((-1, -1))),
        58 => ("icmpv6".to_owned(), Some((-1, -1))),
        other => (other.to_string(), None),
    }
}

/// Builds the security groups for `rec` (`map` says where each asset lives).
pub fn security_groups(rec: &Recommendation, map: &MapInput, limit: usize) -> Result<SecurityGroups, SgError> {
    let mut notes = Vec::new();
    let placement = placements(rec, map, &mut notes);
    let mut groups: BTreeMap<String, SecurityGroup> = placement
        .iter()
        .filter(|(_, p)| matches!(p, Placement::InVpc))
        .map(|(segment, _)| {
            let group = SecurityGroup {
                segment: segment.clone(),
                name: format!("zerogate-{}", slug(segment)),
                ingress: Vec::new(),
                egress: Vec::new(),
            };
            (segment.clone(), group)
        })
        .collect();
    let peers = |segment: &str| -> Vec<Peer> {
        match placement.get(segment) {
            Some(Placement::InVpc) => vec![Peer::Group(segment.to_owned())],
            Some(Placement::Outside(peers)) => peers.clone(),
            None => Vec::new(),
        }
    };
    for rule in &rec.rules {
        let (protocol, ports) = protocol_and_ports(rule.protocol, &rule.protocol_name, rule.port);
        let description = format!(
            "{} -> {} {}/{}: {} connections, seen {} to {}",
            rule.client,
            rule.server,
            rule.protocol_name,
            rule.port,
            rule.evidence.connections,
            rule.evidence.first_seen.as_deref().unwrap_or("?"),
            rule.evidence.last_seen.as_deref().unwrap_or("?")
        );
        let description = aws_description(&description);
        let make = |peer: Peer| SgRule { peer, protocol: protocol.clone(), ports, description: description.clone() };
        if let Some(server) = groups.get_mut(&rule.server) {
            server.ingress.extend(peers(&rule.client).into_iter().map(make));
        }
        if let Some(client) = groups.get_mut(&rule.client) {
            client.egress.extend(peers(&rule.server).into_iter().map(make));
        }
    }
    for group in groups.values_mut() {
        for (rules, direction) in [(&mut group.ingress, "inbound"), (&mut group.egress, "outbound")] {
            rules.sort();
            rules.dedup_by(|a, b| a.peer == b.peer && a.protocol == b.protocol && a.ports == b.ports);
            if rules.len() > limit {
                let before = rules.len();
                compact(rules);
                notes.push(format!(
                    "{}: {before} {direction} rules over the limit of {limit}; ports merged per peer into ranges: {} rules (broader than observed)",
                    group.name,
                    rules.len()
                ));
                if rules.len() > limit {
                    return Err(SgError::TooManyRules {
                        segment: group.segment.clone(),
                        direction,
                        count: rules.len(),
                        limit,
                    });
                }
            }
        }
    }
    Ok(SecurityGroups { groups: groups.into_values().collect(), notes })
}

/// Merges each (peer, protocol)'s port rules into one range from the lowest to the highest port.
fn compact(rules: &mut Vec<SgRule>) {
    let mut merged: BTreeMap<(Peer, String), SgRule> = BTreeMap::new();
    for rule in rules.drain(..) {
        match merged.get_mut(&(rule.peer.clone(), rule.protocol.clone())) {
            Some(existing) => {
                if let (Some((lo, hi)), Some((from, to))) = (existing.ports, rule.ports) {
                    existing.ports = Some((lo.min(from), hi.max(to)));
                    existing.description = aws_description(&format!("merged port range for {:?}", existing.peer));
                }
            }
            None => {
                merged.insert((rule.peer.clone(), rule.protocol.clone()), rule);
            }
        }
    }
    rules.extend(merged.into_values());
}

fn tf_label(segment: &str) -> String {
    format!("zg_{}", slug(segment).replace('-', "_"))
}

fn cfn_label(segment: &str) -> String {
    let mut out = String::from("Zg");
    for part in slug(segment).split('-') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    out.push_str("Sg");
    out
}

/// Terraform JSON (`*.tf.json`) for the AWS provider: `aws_security_group` plus one
/// `aws_vpc_security_group_ingress_rule` / `_egress_rule` per rule. Variables: `vpc_id`, and
/// `aws_region` when a managed prefix list is looked up.
pub fn terraform_json(sgs: &SecurityGroups) -> Value {
    let mut variables = Map::new();
    variables.insert("vpc_id".into(), json!({ "type": "string", "description": "The VPC the groups belong to" }));
    let mut prefix_lists = Map::new();
    let mut groups = Map::new();
    let mut ingress = Map::new();
    let mut egress = Map::new();
    for group in &sgs.groups {
        let label = tf_label(&group.segment);
        groups.insert(
            label.clone(),
            json!({
                "name": group.name,
                "description": format!("zerogate segment {}: least privilege from observed flows", slug(&group.segment)),
                "vpc_id": "${var.vpc_id}",
                "tags": { "zerogate:segment": group.segment },
            }),
        );
        for (rules, target, direction) in [(&group.ingress, &mut ingress, "in"), (&group.egress, &mut egress, "out")] {
            for (index, rule) in rules.iter().enumerate() {
                let mut body = Map::new();
                body.insert("security_group_id".into(), json!(format!("${{aws_security_group.{label}.id}}")));
                body.insert("ip_protocol".into(), json!(rule.protocol));
                if let Some((from, to)) = rule.ports {
                    body.insert("from_port".into(), json!(from));
                    body.insert("to_port".into(), json!(to));
                }
                match &rule.peer {
                    Peer::Group(segment) => {
                        body.insert(
                            "referenced_security_group_id".into(),
                            json!(format!("${{aws_security_group.{}.id}}", tf_label(segment))),
                        );
                    }
                    Peer::Cidr(cidr) if cidr.contains(':') => {
                        body.insert("cidr_ipv6".into(), json!(cidr));
                    }
                    Peer::Cidr(cidr) => {
                        body.insert("cidr_ipv4".into(), json!(cidr));
                    }
                    Peer::PrefixList(service) => {
                        variables.insert(
                            "aws_region".into(),
                            json!({ "type": "string", "description": "The region, for AWS-managed prefix lists" }),
                        );
                        prefix_lists.insert(
                            service.clone(),
                            json!({ "name": format!("com.amazonaws.${{var.aws_region}}.{service}") }),
                        );
                        body.insert(
                            "prefix_list_id".into(),
                            json!(format!("${{data.aws_ec2_managed_prefix_list.{service}.id}}")),
                        );
                    }
                }
                body.insert("description".into(), json!(rule.description));
                target.insert(format!("{label}_{direction}_{index}"), Value::Object(body));
            }
        }
    }
    let mut resources = Map::new();
    resources.insert("aws_security_group".into(), Value::Object(groups));
    if !ingress.is_empty() {
        resources.insert("aws_vpc_security_group_ingress_rule".into(), Value::Object(ingress));
    }
    if !egress.is_empty() {
        resources.insert("aws_vpc_security_group_egress_rule".into(), Value::Object(egress));
    }
    let mut out = Map::new();
    out.insert("variable".into(), Value::Object(variables));
    if !prefix_lists.is_empty() {
        out.insert("data".into(), json!({ "aws_ec2_managed_prefix_list": prefix_lists }));
    }
    out.insert("resource".into(), Value::Object(resources));
    Value::Object(out)
}

/// A CloudFormation template (JSON): one `AWS::EC2::SecurityGroup` per segment whose only inline
/// egress rule (to 127.0.0.1/32) replaces AWS's default allow-all, then every rule as its own
/// `AWS::EC2::SecurityGroupIngress` / `Egress` resource (so groups that reference each other
/// form no dependency cycle). Parameters: `VpcId`, and one prefix-list id per AWS service used.
pub fn cloudformation_json(sgs: &SecurityGroups) -> Value {
    let mut parameters = Map::new();
    parameters
        .insert("VpcId".into(), json!({ "Type": "AWS::EC2::VPC::Id", "Description": "The VPC the groups belong to" }));
    let mut resources = Map::new();
    for group in &sgs.groups {
        let label = cfn_label(&group.segment);
        resources.insert(
            label.clone(),
            json!({
                "Type": "AWS::EC2::SecurityGroup",
                "Properties": {
                    "GroupName": group.name,
                    "GroupDescription": format!("zerogate segment {}: least privilege from observed flows", slug(&group.segment)),
                    "VpcId": { "Ref": "VpcId" },
                    "SecurityGroupEgress": [{
                        "IpProtocol": "-1",
                        "CidrIp": "127.0.0.1/32",
                        "Description": "replaces the default allow-all egress; the real rules follow",
                    }],
                    "Tags": [{ "Key": "zerogate:segment", "Value": group.segment }],
                }
            }),
        );
        for (rules, kind, suffix) in [
            (&group.ingress, "AWS::EC2::SecurityGroupIngress", "In"),
            (&group.egress, "AWS::EC2::SecurityGroupEgress", "Out"),
        ] {
            for (index, rule) in rules.iter().enumerate() {
                let mut props = Map::new();
                props.insert("GroupId".into(), json!({ "Fn::GetAtt": [label, "GroupId"] }));
                props.insert("IpProtocol".into(), json!(rule.protocol));
                if let Some((from, to)) = rule.ports {
                    props.insert("FromPort".into(), json!(from));
                    props.insert("ToPort".into(), json!(to));
                }
                let ingress = suffix == "In";
                match &rule.peer {
                    Peer::Group(segment) => {
                        let key = if ingress { "SourceSecurityGroupId" } else { "DestinationSecurityGroupId" };
                        props.insert(key.into(), json!({ "Fn::GetAtt": [cfn_label(segment), "GroupId"] }));
                    }
                    Peer::Cidr(cidr) => {
                        let key = if cidr.contains(':') { "CidrIpv6" } else { "CidrIp" };
                        props.insert(key.into(), json!(cidr));
                    }
                    Peer::PrefixList(service) => {
                        let parameter = format!(
                            "{}PrefixListId",
                            cfn_label(service).trim_start_matches("Zg").trim_end_matches("Sg")
                        );
                        parameters.insert(
                            parameter.clone(),
                            json!({ "Type": "String", "Description": format!("The id of the AWS-managed prefix list com.amazonaws.<region>.{service}") }),
                        );
                        let key = if ingress { "SourcePrefixListId" } else { "DestinationPrefixListId" };
                        props.insert(key.into(), json!({ "Ref": parameter }));
                    }
                }
                props.insert("Description".into(), json!(rule.description));
                resources.insert(format!("{label}{suffix}{index}"), json!({ "Type": kind, "Properties": props }));
            }
        }
    }
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Security groups recommended by zerogate from observed flows",
        "Parameters": parameters,
        "Resources": resources,
    })
}
