//! Recommendations as Cedar over zerogate's schema, ready for `zerogate policy validate` and the
//! gateway: each client segment is a `Zerogate::Group` whose members are its assets as
//! `Zerogate::Workload`s (every segment's assets are, so that a replay can place any flow); each
//! server segment a `Zerogate::Application`; each (protocol, port) it
//! serves a `Zerogate::TcpTarget` in it; each rule one `permit` on the `connect` action.
//!
//! Rules whose clients are the internet are written as comments: an anonymous internet client
//! has no identity for Cedar to name; such entry points are for the security groups (and the
//! gateway's authentication) to guard.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::recommend::{Recommendation, Rule};

/// Policies and the entities they refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct CedarOutput {
    /// Cedar policy text.
    pub policies: String,
    /// Cedar entities JSON.
    pub entities: Value,
}

/// A Cedar string literal's contents: quotes and backslashes escaped, everything outside
/// printable ASCII as `\u{…}`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            other => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(other));
            }
        }
    }
    out
}

/// The group a client segment becomes.
pub fn group_id(segment: &str) -> String {
    format!("segment:{segment}")
}

/// The target a rule allows.
pub fn target_id(rule: &Rule) -> String {
    format!("{}:{}/{}", rule.server, rule.protocol_name, rule.port)
}

fn comment(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Writes `recommendation` as Cedar.
pub fn to_cedar(recommendation: &Recommendation) -> CedarOutput {
    let mut policies = String::from(
        "// Least-privilege rules recommended by `zerogate recommend` from observed flows.\n\
         // Review them, then run the applications in shadow mode before enforcing.\n",
    );
    let _ = writeln!(
        policies,
        "// Window: {} to {}.\n",
        recommendation.window.0.as_deref().unwrap_or("?"),
        recommendation.window.1.as_deref().unwrap_or("?")
    );
    let mut used_ids = BTreeSet::new();
    let mut servers = BTreeSet::new();
    let mut targets = BTreeMap::new();
    for rule in &recommendation.rules {
        let e = &rule.evidence;
        let summary = format!(
            "{} -> {} {}/{}: {} connection(s), {} byte(s), {} to {} (seen on {} day(s)), orientation {}, {:?}",
            rule.client,
            rule.server,
            rule.protocol_name,
            rule.port,
            e.connections,
            e.bytes,
            e.first_seen.as_deref().unwrap_or("?"),
            e.last_seen.as_deref().unwrap_or("?"),
            e.days_seen.map_or("?".into(), |d| d.to_string()),
            e.orientation,
            rule.stability
        );
        if rule.client == "internet" {
            let _ = writeln!(policies, "// Internet entry point, for the security group: {}\n", comment(&summary));
            continue;
        }
        let mut id = rule.id.clone();
        let mut n = 2;
        while !used_ids.insert(id.clone()) {
            id = format!("{}-{n}", rule.id);
            n += 1;
        }
        servers.insert(rule.server.clone());
        targets.insert(target_id(rule), rule.server.clone());
        let _ = writeln!(policies, "// {}", comment(&summary));
        let _ = writeln!(policies, "@id(\"{}\")", escape(&id));
        let _ = writeln!(policies, "@stability(\"{}\")", escape(&format!("{:?}", rule.stability).to_lowercase()));
        let _ = writeln!(
            policies,
            "permit (\n  principal in Zerogate::Group::\"{}\",\n  action == Zerogate::Action::\"connect\",\n  resource == Zerogate::TcpTarget::\"{}\"\n);\n",
            escape(&group_id(&rule.client)),
            escape(&target_id(rule))
        );
    }

    let mut entities = Vec::new();
    for segment in &recommendation.segments {
        // Every asset is a workload in its segment's group (the internet excepted: it has no
        // identity), so a replay can find any flow's segments from the entities alone.
        if segment.source != "internet" {
            let group = json!({ "type": "Zerogate::Group", "id": group_id(&segment.name) });
            entities.push(json!({ "uid": group, "attrs": {}, "parents": [] }));
            for member in &segment.members {
                entities.push(json!({
                    "uid": { "type": "Zerogate::Workload", "id": member },
                    "attrs": {},
                    "parents": [group],
                }));
            }
        }
        if servers.contains(&segment.name) {
            let mut attrs = serde_json::Map::new();
            if let Some(sensitivity) = &segment.sensitivity {
                attrs.insert("sensitivity".into(), json!(sensitivity));
            }
            entities.push(json!({
                "uid": { "type": "Zerogate::Application", "id": group_id(&segment.name) },
                "attrs": attrs,
                "parents": [],
            }));
        }
    }
    for (target, server) in targets {
        entities.push(json!({
            "uid": { "type": "Zerogate::TcpTarget", "id": target },
            "attrs": {},
            "parents": [{ "type": "Zerogate::Application", "id": group_id(&server) }],
        }));
    }
    CedarOutput { policies, entities: Value::Array(entities) }
}
