//! Policies as a policy author meets them: strict validation with Cedar's diagnostics, decisions
//! with the deciding policies, and fail-closed behaviour where Cedar alone would let a permit win.

use serde_json::json;
use zerogate_policy::*;

fn entities() -> serde_json::Value {
    json!([
        { "uid": { "type": "Zerogate::Group", "id": "finance" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "Zerogate::User", "id": "alice" }, "attrs": { "email": "alice@example.org" },
          "parents": [{ "type": "Zerogate::Group", "id": "finance" }] },
        { "uid": { "type": "Zerogate::User", "id": "bob" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "Zerogate::Application", "id": "billing" }, "attrs": { "sensitivity": "high" }, "parents": [] },
        { "uid": { "type": "Zerogate::Route", "id": "billing-admin" }, "attrs": { "path_prefix": "/admin" },
          "parents": [{ "type": "Zerogate::Application", "id": "billing" }] },
        { "uid": { "type": "Zerogate::Application", "id": "wiki" }, "attrs": {}, "parents": [] },
    ])
}

fn context(hour: i64) -> serde_json::Value {
    json!({
        "authn": "oidc", "credential_id": "jti-1", "source_ip": { "__extn": { "fn": "ip", "arg": "10.1.2.3" } },
        "time": 1_800_000_000, "hour": hour, "method": "GET", "host": "billing.example.org", "path": "/invoices",
    })
}

fn request(principal: &str, resource: &str, hour: i64) -> DecisionRequest {
    DecisionRequest {
        principal: format!("Zerogate::User::\"{principal}\""),
        action: "Zerogate::Action::\"http\"".into(),
        resource: resource.into(),
        context: context(hour),
    }
}

const POLICIES: &str = r#"
@id("finance-billing-office-hours")
permit (principal in Zerogate::Group::"finance", action == Zerogate::Action::"http", resource in Zerogate::Application::"billing")
when { context.hour >= 8 && context.hour < 18 && context.authn == "oidc" };

@id("no-admin-from-outside")
forbid (principal, action, resource == Zerogate::Route::"billing-admin")
unless { context.source_ip.isInRange(ip("10.0.0.0/8")) && context has method && context.method == "GET" };

@id("wiki-for-everyone")
permit (principal, action == Zerogate::Action::"http", resource == Zerogate::Application::"wiki");
"#;

fn engine(extra: &str) -> PolicyEngine {
    PolicyEngine::load(&[("main.cedar".into(), format!("{POLICIES}{extra}"))], entities()).unwrap()
}

#[test]
fn decisions_name_the_policies_that_decided() {
    let e = engine("");
    assert_eq!(e.len(), 3);
    let d = e.decide(&request("alice", "Zerogate::Application::\"billing\"", 10));
    assert!(d.allow, "{d:?}");
    assert_eq!(d.policies, vec!["finance-billing-office-hours"]);
    // Routes inherit from their application.
    assert!(e.decide(&request("alice", "Zerogate::Route::\"billing-admin\"", 10)).allow);
    // Outside office hours, not in the group: deny by default, no deciding policy.
    let d = e.decide(&request("alice", "Zerogate::Application::\"billing\"", 20));
    assert!(!d.allow && d.policies.is_empty() && d.errors.is_empty(), "{d:?}");
    assert!(!e.decide(&request("bob", "Zerogate::Application::\"billing\"", 10)).allow);
    assert!(e.decide(&request("bob", "Zerogate::Application::\"wiki\"", 3)).allow);
    // A forbid wins, and is named.
    let mut outside = request("alice", "Zerogate::Route::\"billing-admin\"", 10);
    outside.context["source_ip"] = json!({ "__extn": { "fn": "ip", "arg": "203.0.113.9" } });
    let d = e.decide(&outside);
    assert!(!d.allow);
    assert_eq!(d.policies, vec!["no-admin-from-outside"]);
}

#[test]
fn an_erroring_forbid_never_lets_a_permit_win() {
    // Cedar skips a policy whose evaluation errors: here the forbid overflows, and Cedar alone
    // would allow through the wiki permit. zerogate denies and says why.
    let e = engine(
        r#"
@id("overflowing-forbid")
forbid (principal, action, resource == Zerogate::Application::"wiki") when { context.time * 10000000000 > 0 };
"#,
    );
    let d = e.decide(&request("bob", "Zerogate::Application::\"wiki\"", 3));
    assert!(!d.allow, "{d:?}");
    assert!(d.errors.iter().any(|err| err.contains("overflowing-forbid")), "{d:?}");
}

#[test]
fn bad_requests_are_denied_with_the_reason() {
    let e = engine("");
    let mut r = request("alice", "Zerogate::Application::\"billing\"", 10);
    r.context = json!({ "authn": "oidc" });
    let d = e.decide(&r);
    assert!(!d.allow && d.errors[0].starts_with("context"), "{d:?}");
    let mut r = request("alice", "Zerogate::Application::\"billing\"", 10);
    r.principal = "not an entity".into();
    assert!(!e.decide(&r).allow);
    let mut r = request("alice", "Zerogate::Application::\"billing\"", 10);
    r.action = "Zerogate::Action::\"delete-everything\"".into();
    assert!(!e.decide(&r).allow);
}

#[test]
fn invalid_policies_are_refused_with_diagnostics() {
    let load = |text: &str| PolicyEngine::load(&[("bad.cedar".into(), text.into())], entities());
    // An attribute the schema does not have.
    let err = load(r#"@id("typo") permit (principal, action, resource) when { principal.emial == "x" };"#).unwrap_err();
    assert!(matches!(err, PolicyError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("typo"), "{err}");
    // An optional attribute used without `has` (strict mode).
    let err = load(r#"permit (principal, action, resource) when { context.posture.managed };"#).unwrap_err();
    assert!(matches!(err, PolicyError::Invalid(_)), "{err}");
    // A type error.
    assert!(matches!(
        load(r#"permit (principal, action, resource) when { context.hour == "nine" };"#),
        Err(PolicyError::Invalid(_))
    ));
    // An unknown entity type and action.
    assert!(load(r#"permit (principal == Zerogate::Robot::"r", action, resource);"#).is_err());
    assert!(load(r#"permit (principal, action == Zerogate::Action::"fly", resource);"#).is_err());
    // Syntax: the error names the file.
    let err = load("permit (principal, action, resource").unwrap_err();
    assert!(matches!(&err, PolicyError::Parse { file, .. } if file == "bad.cedar"), "{err}");
    // Duplicate ids.
    let err = load(r#"@id("x") permit (principal, action, resource); @id("x") forbid (principal, action, resource);"#)
        .unwrap_err();
    assert_eq!(err, PolicyError::DuplicateId("x".into()));
}

#[test]
fn slicing_by_application_decides_as_the_whole_set_would() {
    // Many applications, policies scoped to each, and an unscoped one: every decision must be
    // what the policies say, worked out by hand below.
    let mut ents = entities().as_array().unwrap().clone();
    let mut text = String::new();
    for app in 0..20 {
        ents.push(json!({ "uid": { "type": "Zerogate::Application", "id": format!("app{app}") }, "attrs": {}, "parents": [] }));
        ents.push(json!({ "uid": { "type": "Zerogate::Route", "id": format!("app{app}-r") }, "attrs": {},
            "parents": [{ "type": "Zerogate::Application", "id": format!("app{app}") }] }));
        text.push_str(&format!(
            "permit (principal in Zerogate::Group::\"finance\", action, resource in Zerogate::Application::\"app{app}\") when {{ context.hour > {} }};\n\
             forbid (principal == Zerogate::User::\"alice\", action, resource == Zerogate::Route::\"app{app}-r\") when {{ context.hour == {} }};\n",
            app % 12,
            app % 24
        ));
    }
    text.push_str("permit (principal == Zerogate::User::\"bob\", action, resource) when { context.hour == 7 };\n");
    let sliced = PolicyEngine::load(&[("many.cedar".into(), text.clone())], json!(ents)).unwrap();
    for app in 0..20 {
        for resource in [format!("Zerogate::Application::\"app{app}\""), format!("Zerogate::Route::\"app{app}-r\"")] {
            for who in ["alice", "bob"] {
                for hour in 0..24 {
                    let d = sliced.decide(&request(who, &resource, hour));
                    // The reference: what the policies say, by hand.
                    let permit_group = who == "alice" && hour > app % 12;
                    let permit_bob = who == "bob" && hour == 7;
                    let forbid = who == "alice" && resource.contains("Route") && hour == app % 24;
                    assert_eq!(d.allow, (permit_group || permit_bob) && !forbid, "{who} {resource} {hour}: {d:?}");
                }
            }
        }
    }
}

#[test]
fn the_typed_context_fits_the_schema_and_decides_like_json() {
    let e = engine("");
    let minimal = RequestContext {
        authn: "oidc".into(),
        credential_id: "jti-1".into(),
        source_ip: "10.1.2.3".parse().unwrap(),
        time: 1_800_000_000,
        hour: 10,
        device: None,
        posture: None,
        method: Some("GET".into()),
        host: Some("billing.example.org".into()),
        path: Some("/invoices".into()),
        acr: None,
        amr: None,
    };
    e.check_context("Zerogate::Action::\"http\"", &minimal).unwrap();
    let full = RequestContext {
        device: Some("Zerogate::Device::\"laptop-42\"".into()),
        posture: Some(Posture {
            managed: true,
            disk_encrypted: Some(true),
            os: Some("linux".into()),
            os_version: Some("6.1".into()),
        }),
        acr: Some("mfa".into()),
        amr: Some(vec!["pwd".into(), "otp".into()]),
        source_ip: "2001:db8::1".parse().unwrap(),
        ..minimal.clone()
    };
    e.check_context("Zerogate::Action::\"connect\"", &full).unwrap();
    for (who, resource, hour) in [
        ("alice", "Zerogate::Application::\"billing\"", 10),
        ("alice", "Zerogate::Application::\"billing\"", 20),
        ("bob", "Zerogate::Application::\"wiki\"", 3),
        ("alice", "Zerogate::Route::\"billing-admin\"", 10),
    ] {
        let json = e.decide(&request(who, resource, hour));
        let typed = e.decide_with(
            &format!("Zerogate::User::\"{who}\""),
            "Zerogate::Action::\"http\"",
            resource,
            &RequestContext { hour, ..minimal.clone() },
        );
        assert_eq!(json, typed, "{who} {resource} {hour}");
    }
    // Outside 10/8 the admin route is forbidden, whichever path decides.
    let outside = RequestContext { source_ip: "203.0.113.9".parse().unwrap(), ..minimal };
    let d = e.decide_with(
        "Zerogate::User::\"alice\"",
        "Zerogate::Action::\"http\"",
        "Zerogate::Route::\"billing-admin\"",
        &outside,
    );
    assert_eq!(d.policies, vec!["no-admin-from-outside"]);
}

fn office_hours_context() -> RequestContext {
    RequestContext {
        authn: "oidc".into(),
        credential_id: "jti:1".into(),
        source_ip: "10.1.2.3".parse().unwrap(),
        time: 1_800_000_000,
        hour: 10,
        device: None,
        posture: None,
        method: Some("GET".into()),
        host: Some("billing.example.org".into()),
        path: Some("/invoices".into()),
        acr: None,
        amr: None,
    }
}

#[test]
fn groups_asserted_by_the_credential_join_those_of_the_entities() {
    let nested = r#"
@id("staff-wiki-admin")
permit (principal in Zerogate::Group::"staff", action, resource == Zerogate::Route::"billing-admin");
"#;
    let mut ents = entities();
    // `finance` is nested under `staff` in the entities file.
    ents.as_array_mut()
        .unwrap()
        .push(json!({ "uid": { "type": "Zerogate::Group", "id": "staff" }, "attrs": {}, "parents": [] }));
    ents.as_array_mut().unwrap()[0]["parents"] = json!([{ "type": "Zerogate::Group", "id": "staff" }]);
    let e = PolicyEngine::load(&[("main.cedar".into(), format!("{POLICIES}{nested}"))], ents).unwrap();
    let ctx = office_hours_context();
    let http = "Zerogate::Action::\"http\"";
    let billing = "Zerogate::Application::\"billing\"";
    let finance = vec!["finance".to_owned()];

    // Carol is in no entities file: only her token's groups place her.
    let carol = "Zerogate::User::\"carol\"";
    assert!(!e.decide_with(carol, http, billing, &ctx).allow);
    let d = e.decide_as(Principal { uid: carol, groups: &finance }, http, billing, &ctx);
    assert!(d.allow, "{d:?}");
    assert_eq!(d.policies, vec!["finance-billing-office-hours"]);
    // Nesting from the entities file applies to asserted groups too.
    let admin = "Zerogate::Route::\"billing-admin\"";
    assert!(e.decide_as(Principal { uid: carol, groups: &finance }, http, admin, &ctx).allow);
    // Bob is in the entities file with no group; asserted groups add to that, for him only.
    let bob = "Zerogate::User::\"bob\"";
    assert!(e.decide_as(Principal { uid: bob, groups: &finance }, http, billing, &ctx).allow);
    assert!(!e.decide_with(bob, http, billing, &ctx).allow, "asserted groups are not remembered as facts");
    assert!(!e.decide_with(carol, http, billing, &ctx).allow);
    // Another group, a look-alike id, or too many groups: no access.
    for groups in [vec!["Finance".to_owned()], vec!["finance\" || true || \"".to_owned()]] {
        assert!(!e.decide_as(Principal { uid: carol, groups: &groups }, http, billing, &ctx).allow, "{groups:?}");
    }
    let many: Vec<String> = (0..=MAX_ASSERTED_GROUPS).map(|i| format!("g{i}")).chain(["finance".to_owned()]).collect();
    let d = e.decide_as(Principal { uid: carol, groups: &many }, http, billing, &ctx);
    assert!(!d.allow && d.errors.len() == 1, "{d:?}");
}

/// The gateway asks the same question thousands of times a second and the engine remembers its
/// answers: a remembered answer must never stand in for a request that differs in anything a
/// policy can read — the time included, once a policy reads it, even though it changes every
/// second.
#[test]
fn a_repeated_decision_changes_with_anything_a_policy_reads() {
    let rules = r#"
@id("until-deadline")
permit (principal == Zerogate::User::"bob", action, resource == Zerogate::Application::"wiki")
when { context.time < 1800000100 };
@id("bob-no-posts")
forbid (principal == Zerogate::User::"bob", action, resource)
when { context has method && context.method == "POST" };
@id("bob-not-from-outside")
forbid (principal == Zerogate::User::"bob", action, resource)
unless { context.source_ip.isInRange(ip("10.0.0.0/8")) };
"#;
    let e = PolicyEngine::load(&[("main.cedar".into(), rules.to_owned())], entities()).unwrap();
    let (bob, http, wiki) =
        ("Zerogate::User::\"bob\"", "Zerogate::Action::\"http\"", "Zerogate::Application::\"wiki\"");
    let billing = "Zerogate::Application::\"billing\"";
    let base = office_hours_context();
    // Asked twice: the same answer.
    for _ in 0..2 {
        let d = e.decide_with(bob, http, wiki, &base);
        assert!(d.allow && d.policies == vec!["until-deadline"], "{d:?}");
    }
    // Past the deadline (a later second, nothing else changed): refused.
    let late = RequestContext { time: 1_800_000_100, ..base.clone() };
    assert!(!e.decide_with(bob, http, wiki, &late).allow, "the time was read from a remembered answer");
    assert!(e.decide_with(bob, http, wiki, &base).allow);
    // Each other field a policy reads, changed alone: refused.
    let post = RequestContext { method: Some("POST".into()), ..base.clone() };
    assert!(!e.decide_with(bob, http, wiki, &post).allow, "method");
    let outside = RequestContext { source_ip: "192.0.2.1".parse().unwrap(), ..base.clone() };
    assert!(!e.decide_with(bob, http, wiki, &outside).allow, "source address");
    assert!(!e.decide_with(bob, http, billing, &base).allow, "resource");
    assert!(!e.decide_with("Zerogate::User::\"carol\"", http, wiki, &base).allow, "principal");
    // And the first answer again.
    assert!(e.decide_with(bob, http, wiki, &base).allow);

    // The office-hours policy reads the hour, not the time: both decide by the hour.
    let e = engine("");
    let alice = "Zerogate::User::\"alice\"";
    assert!(e.decide_with(alice, http, billing, &base).allow);
    let evening = RequestContext { hour: 19, time: base.time + 9 * 3600, ..base.clone() };
    assert!(!e.decide_with(alice, http, billing, &evening).allow, "hour");
    let next_morning = RequestContext { time: base.time + 86_400, ..base.clone() };
    assert!(e.decide_with(alice, http, billing, &next_morning).allow);
}
