//! The decision step: who may pass, what is answered otherwise, what is recorded, and shadow mode.

use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;
use zerogate_audit::Decision;
use zerogate_authn::identity::{Authenticated, Method, PrincipalKind, Revocations};
use zerogate_gateway::canonical::CanonicalRequest;
use zerogate_gateway::decide::{Action, App, Attempt, AuthnFailure, Mode, Outcome, decide, route_covers};
use zerogate_policy::PolicyEngine;

const POLICIES: &str = r#"
@id("finance-billing")
permit (principal in Zerogate::Group::"finance", action == Zerogate::Action::"http", resource in Zerogate::Application::"billing")
when { context.authn == "oidc" };

@id("admin-from-office-only")
forbid (principal, action, resource == Zerogate::Route::"billing-admin")
unless { context.source_ip.isInRange(ip("10.0.0.0/8")) };

@id("devices-report")
permit (principal is Zerogate::Device, action, resource == Zerogate::Route::"billing-reports");

@id("broken-forbid")
forbid (principal, action, resource == Zerogate::Route::"billing-fragile")
when { context.time + 9223372036854775807 > 0 };
"#;

fn engine() -> PolicyEngine {
    let entities = json!([
        { "uid": { "type": "Zerogate::Application", "id": "billing" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "Zerogate::Route", "id": "billing-admin" }, "attrs": {}, "parents": [{ "type": "Zerogate::Application", "id": "billing" }] },
        { "uid": { "type": "Zerogate::Route", "id": "billing-reports" }, "attrs": {}, "parents": [{ "type": "Zerogate::Application", "id": "billing" }] },
        { "uid": { "type": "Zerogate::Route", "id": "billing-fragile" }, "attrs": {}, "parents": [{ "type": "Zerogate::Application", "id": "billing" }] },
    ]);
    PolicyEngine::load(&[("test.cedar".into(), POLICIES.into())], entities).unwrap()
}

fn app(mode: Mode) -> App {
    App {
        host: "billing.example.org".into(),
        resource: r#"Zerogate::Application::"billing""#.into(),
        routes: vec![
            ("/admin".into(), r#"Zerogate::Route::"billing-admin""#.into()),
            ("/reports/".into(), r#"Zerogate::Route::"billing-reports""#.into()),
            ("/fragile".into(), r#"Zerogate::Route::"billing-fragile""#.into()),
        ],
        methods: vec![Method::Oidc, Method::Mtls],
        mode,
        action: Action::Http,
    }
}

fn alice() -> Authenticated {
    Authenticated {
        kind: PrincipalKind::User,
        id: "alice".into(),
        groups: vec!["finance".into()],
        method: Method::Oidc,
        credential_id: "jti:t-1".into(),
        also_known_as: vec!["sid:s-1".into(), "sub:alice@https://idp.example".into()],
        expires_at: None,
        acr: None,
        amr: vec![],
    }
}

fn request(path: &str) -> CanonicalRequest {
    CanonicalRequest { host: "billing.example.org".into(), path: path.into(), query: None }
}

const NOW: u64 = 1_800_000_000;

fn run(
    app: &App,
    path: &str,
    source: &str,
    authn: Result<Authenticated, AuthnFailure>,
    revoked: &Revocations,
) -> Outcome {
    let request = request(path);
    let source: IpAddr = source.parse().unwrap();
    let attempt = Attempt { app, request: &request, method: "GET", source, authn };
    decide(&attempt, &engine(), revoked, "gw-test", UNIX_EPOCH + Duration::from_secs(NOW))
}

#[test]
fn an_allowed_request_is_forwarded_and_recorded_with_who_what_and_why() {
    let out = run(&app(Mode::Enforce), "/invoices", "192.0.2.7", Ok(alice()), &Revocations::default());
    assert!(out.forward);
    let r = &out.record;
    assert_eq!(r.decision, Decision::Allow);
    assert_eq!(r.principal.as_deref(), Some(r#"Zerogate::User::"alice""#));
    assert_eq!(r.credential.as_ref().map(|c| (c.kind.as_str(), c.id.as_str())), Some(("oidc", "jti:t-1")));
    assert_eq!(r.resource, r#"Zerogate::Application::"billing""#);
    assert_eq!(r.policies, vec!["finance-billing"]);
    assert_eq!(r.request.source.as_deref(), Some("192.0.2.7"));
    assert_eq!((r.gateway.as_str(), r.at_ms), ("gw-test", NOW as i64 * 1000));
}

#[test]
fn refusals_have_the_right_status_and_reason() {
    let enforce = app(Mode::Enforce);
    let none = Err(AuthnFailure { method: None, reason: "no_credential".into() });
    let out = run(&enforce, "/invoices", "10.0.0.1", none, &Revocations::default());
    assert_eq!((out.forward, out.status, out.record.decision), (false, 401, Decision::Deny));
    assert_eq!(out.record.errors, vec!["authentication: no_credential"]);

    let expired = Err(AuthnFailure { method: Some(Method::Oidc), reason: "expired".into() });
    let out = run(&enforce, "/invoices", "10.0.0.1", expired, &Revocations::default());
    assert_eq!((out.status, out.record.credential.unwrap().kind.as_str()), (401, "oidc"));

    let sigv4 = Authenticated::from_access_key("AKZG1", "ci");
    let out = run(&enforce, "/invoices", "10.0.0.1", Ok(sigv4), &Revocations::default());
    assert_eq!(out.status, 401, "SigV4 is not accepted by this application");

    let mut revoked = Revocations::default();
    revoked.credentials.insert("jti:t-1".into());
    assert_eq!(run(&enforce, "/invoices", "10.0.0.1", Ok(alice()), &revoked).status, 401);
    // Any id the credential goes by: its session, its subject at its issuer.
    for alias in ["sid:s-1", "sub:alice@https://idp.example"] {
        let revoked = Revocations { credentials: [alias.to_owned()].into(), ..Revocations::default() };
        assert_eq!(run(&enforce, "/invoices", "10.0.0.1", Ok(alice()), &revoked).status, 401, "{alias}");
    }
    let mut revoked = Revocations::default();
    revoked.principals.insert(r#"Zerogate::User::"alice""#.into());
    assert_eq!(run(&enforce, "/invoices", "10.0.0.1", Ok(alice()), &revoked).status, 401);
    // Revocation lists that could not be brought up to date: nothing is trusted (503), and the
    // record says why.
    let out_of_date = Revocations { trusted_until: Some(std::time::Instant::now()), ..Revocations::default() };
    let out = run(&enforce, "/invoices", "10.0.0.1", Ok(alice()), &out_of_date);
    assert_eq!((out.forward, out.status), (false, 503));
    assert!(out.record.errors.iter().any(|e| e.contains("grace period")), "{:?}", out.record.errors);

    // The route is the resource: the forbid on /admin applies from outside the office.
    let out = run(&enforce, "/admin/users", "192.0.2.7", Ok(alice()), &Revocations::default());
    assert_eq!((out.forward, out.status), (false, 403));
    assert_eq!(out.record.resource, r#"Zerogate::Route::"billing-admin""#);
    assert_eq!(out.record.policies, vec!["admin-from-office-only"]);
    assert!(run(&enforce, "/admin", "10.1.2.3", Ok(alice()), &Revocations::default()).forward);
    // A prefix matches at a segment boundary only.
    let out = run(&enforce, "/administrator", "192.0.2.7", Ok(alice()), &Revocations::default());
    assert_eq!(out.record.resource, r#"Zerogate::Application::"billing""#);
    assert!(out.forward);

    // Not in the group: denied by default, no policy named.
    let mut bob = alice();
    bob.id = "bob".into();
    bob.groups.clear();
    let out = run(&enforce, "/invoices", "10.0.0.1", Ok(bob), &Revocations::default());
    assert_eq!((out.status, out.record.policies.len()), (403, 0));

    // A forbid that fails to evaluate denies, whatever the permits say.
    let out = run(&enforce, "/fragile", "10.0.0.1", Ok(alice()), &Revocations::default());
    assert_eq!(out.status, 403);
    assert!(out.record.errors.iter().any(|e| e.contains("broken-forbid")), "{:?}", out.record.errors);
}

#[test]
fn routes_cover_their_paths_whatever_the_case_and_trailing_slash() {
    let enforce = app(Mode::Enforce);
    // The office-only forbid on /admin holds for every spelling an upstream may route alike.
    for path in ["/admin", "/admin/users", "/ADMIN/users", "/Admin", "/aDmIn/x/y"] {
        let out = run(&enforce, path, "192.0.2.7", Ok(alice()), &Revocations::default());
        assert_eq!(
            (out.status, out.record.policies.as_slice()),
            (403, ["admin-from-office-only".to_owned()].as_slice()),
            "{path}"
        );
    }
    // Not at a segment boundary: the application decides.
    assert!(run(&enforce, "/administrators", "192.0.2.7", Ok(alice()), &Revocations::default()).forward);
    assert_eq!(enforce.resource_for("/adminx"), r#"Zerogate::Application::"billing""#);
    // `/reports/` covers `/reports` and `/REPORTS/q3`.
    for path in ["/reports", "/reports/", "/REPORTS/q3"] {
        assert_eq!(enforce.resource_for(path), r#"Zerogate::Route::"billing-reports""#, "{path}");
    }
    assert!(route_covers("/", "/anything") && !route_covers("/a/b", "/a"));
}

#[test]
fn a_device_certificate_reaches_its_route_only() {
    let device = Authenticated {
        kind: PrincipalKind::Device,
        id: "spiffe://corp.example/device/laptop-42".into(),
        groups: vec![],
        method: Method::Mtls,
        credential_id: "serial:0a".into(),
        also_known_as: vec![],
        expires_at: None,
        acr: None,
        amr: vec![],
    };
    let enforce = app(Mode::Enforce);
    assert!(run(&enforce, "/reports/q3", "10.0.0.1", Ok(device.clone()), &Revocations::default()).forward);
    assert!(!run(&enforce, "/invoices", "10.0.0.1", Ok(device), &Revocations::default()).forward);
}

#[test]
fn shadow_mode_records_would_be_denials_and_lets_them_through() {
    let shadow = app(Mode::Shadow);
    let out = run(&shadow, "/admin", "192.0.2.7", Ok(alice()), &Revocations::default());
    assert!(out.forward);
    assert_eq!(out.record.decision, Decision::ShadowDeny);
    assert_eq!(out.record.policies, vec!["admin-from-office-only"]);
    let none = Err(AuthnFailure { method: None, reason: "no_credential".into() });
    let out = run(&shadow, "/invoices", "192.0.2.7", none, &Revocations::default());
    assert_eq!((out.forward, out.record.decision), (true, Decision::ShadowDeny));
    // A revoked credential and out-of-date lists are would-be denials too, with the reason.
    let session = Revocations { credentials: ["sid:s-1".to_owned()].into(), ..Revocations::default() };
    let out = run(&shadow, "/invoices", "10.0.0.1", Ok(alice()), &session);
    assert_eq!((out.forward, out.record.decision), (true, Decision::ShadowDeny));
    assert!(out.record.errors.iter().any(|e| e.contains("revoked")), "{:?}", out.record.errors);
    let stale = Revocations { trusted_until: Some(std::time::Instant::now()), ..Revocations::default() };
    let out = run(&shadow, "/invoices", "10.0.0.1", Ok(alice()), &stale);
    assert_eq!((out.forward, out.record.decision), (true, Decision::ShadowDeny));
    assert!(out.record.errors.iter().any(|e| e.contains("grace period")), "{:?}", out.record.errors);
    // Allowed requests are plain allows in shadow mode too.
    assert_eq!(
        run(&shadow, "/invoices", "10.0.0.1", Ok(alice()), &Revocations::default()).record.decision,
        Decision::Allow
    );
}

#[test]
fn a_tcp_connection_is_decided_as_connect_and_recorded_without_method_or_path() {
    // The same identity and resource as an allowed HTTP request: `http` does not grant `connect`.
    let service = App { action: Action::Connect, routes: Vec::new(), ..app(Mode::Enforce) };
    let out = run(&service, "", "192.0.2.7", Ok(alice()), &Revocations::default());
    assert_eq!((out.forward, out.status, out.record.decision), (false, 403, Decision::Deny));
    let r = &out.record;
    assert_eq!(r.action, r#"Zerogate::Action::"connect""#);
    assert_eq!((r.request.method.as_deref(), r.request.path.as_deref()), (None, None));
    assert_eq!(r.request.host.as_deref(), Some("billing.example.org"));
    assert!(r.policies.is_empty(), "{:?}", r.policies);
    let http = run(&app(Mode::Enforce), "/invoices", "192.0.2.7", Ok(alice()), &Revocations::default());
    assert!(http.forward, "the HTTP request it is compared with is allowed");

    // In shadow mode a policy denial of a tunnel goes through, marked; a failed authentication
    // never does (an HTTP request's does, marked).
    let shadow = App { action: Action::Connect, routes: Vec::new(), ..app(Mode::Shadow) };
    let out = run(&shadow, "", "192.0.2.7", Ok(alice()), &Revocations::default());
    assert_eq!((out.forward, out.record.decision), (true, Decision::ShadowDeny));
    let failed = || Err(AuthnFailure { method: Some(Method::Mtls), reason: "certificate: revoked".into() });
    let out = run(&shadow, "", "192.0.2.7", failed(), &Revocations::default());
    assert_eq!((out.forward, out.status, out.record.decision), (false, 401, Decision::Deny));
    assert_eq!(out.record.errors, vec!["authentication: certificate: revoked"]);
    let out = run(&app(Mode::Shadow), "/invoices", "192.0.2.7", failed(), &Revocations::default());
    assert_eq!((out.forward, out.record.decision), (true, Decision::ShadowDeny));
}
