//! What enforcing would have refused. An application runs in shadow mode next to the access it
//! replaces until its operator trusts the policy; [`shadow_report`] reads a log and says, for
//! each application, how many requests (and tunnels) were allowed, refused, and let through only
//! because of shadow mode, and groups the last by who asked for what, so each group is either a
//! policy to widen or access that should end.
//!
//! It counts requests, not records: a long-lived connection's re-authorization (its cut, or the
//! cut shadow mode did not make) is counted apart from the request that opened it, and records
//! no application decided (an unknown host, a request that did not parse, the identity
//! authority's own) are not an application's.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::record::{APPLICATION_ENTITY, Decision, DecisionRecord, NO_RESOURCE, TCP_TARGET_ENTITY, UNROUTED_HOST};

/// The whole report.
#[derive(Debug, Default, Serialize)]
pub struct ShadowReport {
    /// Decision records read (checkpoints and older records outside `--since` are not).
    pub records: u64,
    /// Each application (host, or TLS server name), by name.
    pub apps: Vec<AppSummary>,
    /// Requests refused before an application decided: for a host no application has, or not
    /// parsed. Shadow mode never lets these through.
    pub unrouted: u64,
    /// Decision records of no application at all (the identity authority's).
    pub other: u64,
}

/// One application's decisions.
#[derive(Debug, Default, Serialize)]
pub struct AppSummary {
    /// The request's host, or the TCP service's name.
    pub host: String,
    /// Allowed by policy.
    pub allowed: u64,
    /// Refused (by policy, by an error, for lack of a credential).
    pub denied: u64,
    /// Let through by shadow mode: refused once the application enforces.
    pub would_be_refused: u64,
    /// Long-lived connections (WebSockets, streamed bodies, tunnels) cut when access ended.
    pub cut: u64,
    /// Long-lived connections that shadow mode kept open where enforcing would have cut them.
    pub would_be_cut: u64,
    /// The requests let through by shadow mode, by who asked for what, the most frequent first.
    pub groups: Vec<Group>,
}

/// Shadow-mode denials of one principal, action and resource.
#[derive(Debug, Serialize)]
pub struct Group {
    /// `None`: no principal (a request without a credential).
    pub principal: Option<String>,
    /// The Cedar action.
    pub action: String,
    /// The Cedar resource.
    pub resource: String,
    /// How many.
    pub count: u64,
    /// Distinct paths among them (HTTP).
    pub paths: u64,
    /// The first one, Unix milliseconds.
    pub first_ms: i64,
    /// The latest one, Unix milliseconds.
    pub last_ms: i64,
    /// The latest one's line in the log (`zerogate audit show SEQ`).
    pub last_seq: u64,
    /// The latest one's method and path, as an example.
    pub example: Option<String>,
    /// The latest one's errors (why the policy refused it).
    pub errors: Vec<String>,
}

/// Who asked (if anyone was authenticated), for which action, on which resource.
type GroupKey = (Option<String>, String, String);

#[derive(Default)]
struct Building {
    allowed: u64,
    denied: u64,
    would_be_refused: u64,
    cut: u64,
    would_be_cut: u64,
    /// Each group, with the distinct paths seen in it.
    groups: BTreeMap<GroupKey, (Group, std::collections::BTreeSet<String>)>,
}

/// One line of the log, as far as the report reads it.
#[derive(Deserialize)]
struct Line {
    seq: u64,
    kind: String,
    record: Option<DecisionRecord>,
}

/// Reads the JSON lines of an audit log, segment by segment: each segment's name (its file) with
/// its lines. Lines that are not decision records (checkpoints) are skipped; so are records
/// before `since_ms`. A line that cannot be read is an error naming its segment and its line
/// there.
pub fn shadow_report<S, L>(segments: S, since_ms: Option<i64>) -> Result<ShadowReport, String>
where
    S: IntoIterator<Item = (String, L)>,
    L: IntoIterator<Item = std::io::Result<String>>,
{
    let mut apps: BTreeMap<String, Building> = BTreeMap::new();
    let (mut records, mut unrouted, mut other) = (0, 0, 0);
    let numbered = segments.into_iter().flat_map(|(segment, lines)| {
        let segment: Rc<str> = segment.into();
        lines.into_iter().enumerate().map(move |(index, line)| (Rc::clone(&segment), index + 1, line))
    });
    for (segment, number, line) in numbered {
        let at = || format!("`{segment}` line {number}");
        let line = line.map_err(|e| format!("{}: {e}", at()))?;
        let line: Line = serde_json::from_str(&line).map_err(|e| format!("{}: not a record: {e}", at()))?;
        let record = match (line.kind.as_str(), line.record) {
            ("decision", Some(record)) => record,
            ("decision", None) => return Err(format!("{}: a decision without its record", at())),
            _ => continue,
        };
        if since_ms.is_some_and(|since| record.at_ms < since) {
            continue;
        }
        records += 1;
        // An application's decision is on its Cedar entity (or a route's, which is one too).
        if ![APPLICATION_ENTITY, TCP_TARGET_ENTITY].iter().any(|entity| record.resource.starts_with(entity)) {
            if record.resource == NO_RESOURCE || record.resource.starts_with(UNROUTED_HOST) {
                unrouted += 1;
            } else {
                other += 1;
            }
            continue;
        }
        let request = record.request;
        let app = apps.entry(request.host.unwrap_or_else(|| "(no host)".into())).or_default();
        match (record.reauthorization, record.decision) {
            // A session goes on without a record while it is allowed; should one be written,
            // it is no new request.
            (true, Decision::Allow) => {}
            (true, Decision::Deny) => app.cut += 1,
            (true, Decision::ShadowDeny) => app.would_be_cut += 1,
            (false, Decision::Allow) => app.allowed += 1,
            (false, Decision::Deny) => app.denied += 1,
            (false, Decision::ShadowDeny) => {
                app.would_be_refused += 1;
                let key = (record.principal, record.action, record.resource);
                let (group, paths) = app.groups.entry(key).or_insert_with_key(|(principal, action, resource)| {
                    let group = Group {
                        principal: principal.clone(),
                        action: action.clone(),
                        resource: resource.clone(),
                        count: 0,
                        paths: 0,
                        first_ms: record.at_ms,
                        last_ms: record.at_ms,
                        last_seq: line.seq,
                        example: None,
                        errors: Vec::new(),
                    };
                    (group, std::collections::BTreeSet::new())
                });
                group.count += 1;
                group.first_ms = group.first_ms.min(record.at_ms);
                if record.at_ms >= group.last_ms {
                    group.last_ms = record.at_ms;
                    group.last_seq = line.seq;
                    group.example = match (request.method, &request.path) {
                        (Some(method), Some(path)) => Some(format!("{method} {path}")),
                        (None, Some(path)) => Some(path.clone()),
                        (Some(method), None) => Some(method),
                        (None, None) => None,
                    };
                    group.errors = record.errors;
                }
                if let Some(path) = request.path {
                    paths.insert(path);
                }
            }
        }
    }
    let apps = apps
        .into_iter()
        .map(|(host, building)| {
            let mut groups: Vec<Group> = building
                .groups
                .into_values()
                .map(|(mut group, paths)| {
                    group.paths = paths.len() as u64;
                    group
                })
                .collect();
            groups.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_ms.cmp(&a.last_ms)));
            AppSummary {
                host,
                allowed: building.allowed,
                denied: building.denied,
                would_be_refused: building.would_be_refused,
                cut: building.cut,
                would_be_cut: building.would_be_cut,
                groups,
            }
        })
        .collect();
    Ok(ShadowReport { records, apps, unrouted, other })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, at_ms: i64, decision: &str, principal: Option<&str>, host: &str, path: &str) -> String {
        let mut record = serde_json::json!({
            "at_ms": at_ms, "gateway": "gw", "resource": "Zerogate::Application::\"app\"",
            "action": "Zerogate::Action::\"http\"", "decision": decision,
            "request": { "method": "GET", "host": host, "path": path }, "policies": [], "errors": ["no permit"],
        });
        if let Some(principal) = principal {
            record["principal"] = principal.into();
        }
        serde_json::json!({ "seq": seq, "prev": "x", "kind": "decision", "record": record }).to_string()
    }

    fn report(lines: &[String], since: Option<i64>) -> ShadowReport {
        shadow_report([("audit.log".to_owned(), lines.iter().cloned().map(Ok))], since).unwrap()
    }

    #[test]
    fn shadow_denials_are_grouped_by_who_asked_for_what_the_most_frequent_first() {
        let lines = [
            line(1, 1000, "allow", Some("alice"), "wiki", "/"),
            line(2, 2000, "shadow-deny", Some("bob"), "wiki", "/admin"),
            line(3, 3000, "shadow-deny", Some("carol"), "wiki", "/a"),
            line(4, 4000, "shadow-deny", Some("carol"), "wiki", "/b"),
            line(5, 5000, "deny", None, "wiki", "/"),
            r#"{"seq":6,"prev":"x","kind":"checkpoint","at_ms":6000,"signature":"s"}"#.to_owned(),
            line(7, 7000, "shadow-deny", None, "billing", "/pay"),
        ];
        let report = report(&lines, None);
        assert_eq!(report.records, 6, "the checkpoint is no decision");
        let hosts: Vec<&str> = report.apps.iter().map(|a| a.host.as_str()).collect();
        assert_eq!(hosts, ["billing", "wiki"]);
        let wiki = &report.apps[1];
        assert_eq!((wiki.allowed, wiki.denied, wiki.would_be_refused), (1, 1, 3));
        let carol = &wiki.groups[0];
        assert_eq!((carol.principal.as_deref(), carol.count, carol.paths), (Some("carol"), 2, 2));
        assert_eq!((carol.first_ms, carol.last_ms, carol.last_seq), (3000, 4000, 4));
        assert_eq!(carol.example.as_deref(), Some("GET /b"), "the latest");
        assert_eq!(wiki.groups[1].principal.as_deref(), Some("bob"));
        assert_eq!(report.apps[0].groups[0].principal, None, "no principal is a group of its own");
    }

    #[test]
    fn a_long_lived_connection_is_counted_once_and_records_of_no_application_are_set_apart() {
        let reauthorized = |seq: u64, decision: &str, principal: &str| {
            let mut value: serde_json::Value =
                serde_json::from_str(&line(seq, 1000, decision, Some(principal), "db", "")).unwrap();
            value["record"]["reauthorization"] = true.into();
            value.to_string()
        };
        let outside = |seq: u64, resource: &str, host: Option<&str>| {
            let mut value: serde_json::Value = serde_json::from_str(&line(seq, 1000, "deny", None, "x", "/")).unwrap();
            value["record"]["resource"] = resource.into();
            value["record"]["request"]["host"] = host.into();
            value.to_string()
        };
        let lines = [
            // A tunnel let through by shadow mode, then its first would-be cut: one request.
            line(1, 1000, "shadow-deny", Some("bob"), "db", ""),
            reauthorized(2, "shadow-deny", "bob"),
            // An allowed tunnel cut when access ended: one allowed request, one cut.
            line(3, 1000, "allow", Some("alice"), "db", ""),
            reauthorized(4, "deny", "alice"),
            outside(5, "host:unknown.example", Some("unknown.example")),
            outside(6, "(none)", None),
            outside(7, "zerogate:identity-authority", None),
        ];
        let report = report(&lines, None);
        assert_eq!((report.records, report.unrouted, report.other), (7, 2, 1));
        let hosts: Vec<&str> = report.apps.iter().map(|a| a.host.as_str()).collect();
        assert_eq!(hosts, ["db"], "an unknown host or no host is no application");
        let db = &report.apps[0];
        assert_eq!((db.allowed, db.denied, db.would_be_refused, db.cut, db.would_be_cut), (1, 0, 1, 1, 1));
        assert_eq!(db.groups.len(), 1);
        assert_eq!((db.groups[0].count, db.groups[0].last_seq), (1, 1), "the would-be cut is no second request");
    }

    #[test]
    fn since_leaves_older_records_out_and_a_damaged_line_is_named() {
        let lines = [line(1, 1000, "shadow-deny", Some("bob"), "wiki", "/"), line(2, 5000, "allow", None, "wiki", "/")];
        let report = report(&lines, Some(2000));
        assert_eq!((report.records, report.apps[0].would_be_refused, report.apps[0].allowed), (1, 0, 1));
        // Each segment's lines are counted from its own first: the damaged line is the first
        // of the second segment.
        let segments = [
            ("audit.log.1".to_owned(), vec![Ok(lines[0].clone())]),
            ("audit.log".to_owned(), vec![Ok("{not json".to_owned()), Ok(lines[1].clone())]),
        ];
        let error = shadow_report(segments, None).unwrap_err();
        assert!(error.starts_with("`audit.log` line 1: not a record"), "{error}");
    }
}
