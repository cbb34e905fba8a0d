//! `zerogate audit shadow`'s human output: the report the audit crate builds
//! ([`zerogate_audit::shadow::shadow_report`]), per application, the most frequent groups first.

use zerogate_audit::shadow::ShadowReport;

/// The report as an operator reads it: each application's counts, then its groups (at most
/// `limit` each; the JSON has them all).
pub(crate) fn render(report: &ShadowReport, limit: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let total: u64 = report.apps.iter().map(|app| app.would_be_refused).sum();
    let _ = writeln!(
        out,
        "{} decision records; {} requests let through only by shadow mode (refused once enforced)",
        report.records, total
    );
    if report.unrouted > 0 {
        let _ = writeln!(out, "{} requests refused before any application (unknown host, not parsed)", report.unrouted);
    }
    for app in &report.apps {
        let _ = write!(
            out,
            "\n{}: {} allowed, {} refused, {} would be refused",
            app.host, app.allowed, app.denied, app.would_be_refused
        );
        if app.cut > 0 || app.would_be_cut > 0 {
            let _ = write!(out, "; long-lived connections: {} cut, {} would be cut", app.cut, app.would_be_cut);
        }
        out.push('\n');
        for group in app.groups.iter().take(limit) {
            let principal = group.principal.as_deref().unwrap_or("(no principal)");
            let _ = writeln!(out, "  {:>6}  {principal} {} on {}", group.count, group.action, group.resource);
            let paths = if group.paths > 1 { format!(" (one of {} paths)", group.paths) } else { String::new() };
            let _ = writeln!(
                out,
                "          latest {} line {}{}{paths}{}",
                crate::identity_cmd::when_ms(group.last_ms),
                group.last_seq,
                group.example.as_deref().map(|e| format!(": {e}")).unwrap_or_default(),
                if group.errors.is_empty() { String::new() } else { format!("; {}", group.errors.join("; ")) }
            );
        }
        if app.groups.len() > limit {
            let _ = writeln!(out, "  … {} more groups (--json lists them all)", app.groups.len() - limit);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, at_ms: i64, decision: &str, principal: &str, path: &str) -> String {
        serde_json::json!({ "seq": seq, "prev": "x", "kind": "decision", "record": {
            "at_ms": at_ms, "gateway": "gw", "principal": principal, "resource": "Zerogate::Application::\"wiki\"",
            "action": "Zerogate::Action::\"http\"", "decision": decision,
            "request": { "method": "GET", "host": "wiki", "path": path }, "policies": [], "errors": ["why"] } })
        .to_string()
    }

    #[test]
    fn each_application_then_its_most_frequent_groups_up_to_the_limit() {
        let lines = [
            line(1, 1000, "allow", "alice", "/"),
            line(2, 2000, "shadow-deny", "bob", "/admin"),
            line(3, 3000, "shadow-deny", "carol", "/a"),
            line(4, 4000, "shadow-deny", "carol", "/b"),
            line(5, 5000, "deny", "dave", "/"),
        ];
        let report =
            zerogate_audit::shadow::shadow_report([("audit.log".to_owned(), lines.iter().cloned().map(Ok))], None)
                .unwrap();
        let text = render(&report, 1);
        assert!(text.starts_with("5 decision records; 3 requests let through only by shadow mode"), "{text}");
        assert!(text.contains("\nwiki: 1 allowed, 1 refused, 3 would be refused\n"), "{text}");
        assert!(!text.contains("before any application"), "none was: {text}");
        assert!(text.contains("carol Zerogate::Action::\"http\" on Zerogate::Application::\"wiki\""), "{text}");
        assert!(text.contains("line 4: GET /b (one of 2 paths); why"), "{text}");
        assert!(text.contains("… 1 more groups"), "{text}");
        assert!(!text.contains("bob"), "past the limit: {text}");
    }
}
