//! A Cedar decision against 1,000 policies (100 applications with 10 policies each, routes
//! under them, groups), as the gateway makes it. Run: `cargo bench -p zerogate-policy`.

use criterion::{Criterion, criterion_main};
use serde_json::json;
use zerogate_policy::{DecisionRequest, PolicyEngine, Principal, RequestContext};

fn bench(c: &mut Criterion) {
    let mut entities = vec![json!({ "uid": { "type": "Zerogate::Group", "id": "staff" }, "attrs": {}, "parents": [] })];
    for g in 0..20 {
        entities.push(json!({ "uid": { "type": "Zerogate::Group", "id": format!("team{g}") }, "attrs": {},
            "parents": [{ "type": "Zerogate::Group", "id": "staff" }] }));
    }
    entities
        .push(json!({ "uid": { "type": "Zerogate::User", "id": "alice" }, "attrs": { "email": "alice@example.org" },
        "parents": [{ "type": "Zerogate::Group", "id": "team7" }] }));
    let mut text = String::new();
    for app in 0..100 {
        entities.push(json!({ "uid": { "type": "Zerogate::Application", "id": format!("app{app}") }, "attrs": {}, "parents": [] }));
        for route in 0..3 {
            entities
                .push(json!({ "uid": { "type": "Zerogate::Route", "id": format!("app{app}-r{route}") }, "attrs": {},
                "parents": [{ "type": "Zerogate::Application", "id": format!("app{app}") }] }));
        }
        for p in 0..10 {
            let team = (app + p) % 20;
            text.push_str(&match p % 3 {
                0 => format!(
                    "permit (principal in Zerogate::Group::\"team{team}\", action == Zerogate::Action::\"http\", resource in Zerogate::Application::\"app{app}\") when {{ context.authn == \"oidc\" && context.hour >= 6 }};\n"
                ),
                1 => format!(
                    "permit (principal in Zerogate::Group::\"team{team}\", action, resource == Zerogate::Route::\"app{app}-r{}\") when {{ context.source_ip.isInRange(ip(\"10.0.0.0/8\")) }};\n",
                    p % 3
                ),
                _ => format!(
                    "forbid (principal, action, resource in Zerogate::Application::\"app{app}\") when {{ context has posture && !context.posture.managed && context.hour == {} }};\n",
                    p % 24
                ),
            });
        }
    }
    let engine = PolicyEngine::load(&[("bench.cedar".into(), text)], json!(entities)).unwrap();
    assert_eq!(engine.len(), 1000);
    let request = DecisionRequest {
        principal: "Zerogate::User::\"alice\"".into(),
        action: "Zerogate::Action::\"http\"".into(),
        resource: "Zerogate::Route::\"app7-r0\"".into(),
        context: json!({
            "authn": "oidc", "credential_id": "jti-1", "source_ip": { "__extn": { "fn": "ip", "arg": "10.1.2.3" } },
            "time": 1_800_000_000, "hour": 10, "method": "GET", "host": "app7.example.org", "path": "/",
        }),
    };
    assert!(engine.decide(&request).allow);
    c.bench_function("cedar decision, 1000 policies, JSON context (policy check)", |b| {
        b.iter(|| engine.decide(&request))
    });
    let context = RequestContext {
        authn: "oidc".into(),
        credential_id: "jti-1".into(),
        source_ip: "10.1.2.3".parse().unwrap(),
        time: 1_800_000_000,
        hour: 10,
        device: None,
        posture: None,
        method: Some("GET".into()),
        host: Some("app7.example.org".into()),
        path: Some("/".into()),
        acr: None,
        amr: None,
    };
    let decide = || engine.decide_with(&request.principal, &request.action, &request.resource, &context);
    assert!(decide().allow);
    c.bench_function("cedar decision, 1000 policies (gateway path, asked before)", |b| b.iter(decide));
    // The same request for a path not asked before: the decision cache misses and Cedar runs.
    let mut n = 0u64;
    c.bench_function("cedar decision, 1000 policies (gateway path, first time)", |b| {
        b.iter(|| {
            n += 1;
            let fresh = RequestContext { path: Some(format!("/{n}")), ..context.clone() };
            engine.decide_with(&request.principal, &request.action, &request.resource, &fresh)
        })
    });
    // An OIDC user known only by the token, whose groups claim places them.
    let groups = vec!["team7".to_owned(), "oncall".to_owned()];
    let carol = Principal { uid: "Zerogate::User::\"carol\"", groups: &groups };
    let decide_as = || engine.decide_as(carol, &request.action, &request.resource, &context);
    assert!(decide_as().allow);
    c.bench_function("cedar decision, 1000 policies (gateway path, groups from the token)", |b| b.iter(decide_as));
}

mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
