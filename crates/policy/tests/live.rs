//! A running gateway's policy: an atomic swap on reload, and the last good set kept when the new
//! files do not validate.

use std::path::PathBuf;

use serde_json::json;
use zerogate_policy::*;

const ALLOW: &str = r#"@id("finance-billing") permit (principal in Zerogate::Group::"finance", action, resource in Zerogate::Application::"billing");"#;
const FORBID: &str =
    r#"@id("billing-closed") forbid (principal, action, resource in Zerogate::Application::"billing");"#;

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zerogate-live-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let entities = json!([
        { "uid": { "type": "Zerogate::Group", "id": "finance" }, "attrs": {}, "parents": [] },
        { "uid": { "type": "Zerogate::User", "id": "alice" }, "attrs": {}, "parents": [{ "type": "Zerogate::Group", "id": "finance" }] },
        { "uid": { "type": "Zerogate::Application", "id": "billing" }, "attrs": {}, "parents": [] },
    ]);
    std::fs::write(dir.join("entities.json"), entities.to_string()).unwrap();
    dir
}

fn alice_on_billing(engine: &PolicyEngine) -> Decision {
    engine.decide(&DecisionRequest {
        principal: r#"Zerogate::User::"alice""#.into(),
        action: r#"Zerogate::Action::"http""#.into(),
        resource: r#"Zerogate::Application::"billing""#.into(),
        context: json!({ "authn": "oidc", "credential_id": "jti:1", "source_ip": { "__extn": { "fn": "ip", "arg": "10.0.0.1" } }, "time": 0, "hour": 0 }),
    })
}

#[test]
fn a_valid_change_applies_atomically_and_an_invalid_one_keeps_the_last_good_set() {
    let dir = dir("reload");
    let policies = dir.join("policies");
    std::fs::write(policies.join("10-allow.cedar"), ALLOW).unwrap();
    let live = LivePolicy::start(PolicyFiles { policies: policies.clone(), entities: Some(dir.join("entities.json")) })
        .unwrap();
    assert_eq!(live.generation(), 1);
    let before = live.engine();
    assert!(alice_on_billing(&before).allow);

    // A typo: refused with Cedar's diagnostic naming the file, the old set keeps deciding.
    std::fs::write(policies.join("20-forbid.cedar"), FORBID.replace("forbid", "forbidd")).unwrap();
    match live.reload() {
        Reload::Kept { generation, error } => {
            assert_eq!(generation, 1);
            assert!(error.to_string().contains("20-forbid.cedar"), "{error}");
        }
        applied => panic!("an invalid set was applied: {applied:?}"),
    }
    assert!(alice_on_billing(&live.engine()).allow);

    // A policy that does not validate against the schema is refused the same way.
    std::fs::write(policies.join("20-forbid.cedar"), FORBID.replace("resource in", "context.nope == 1 && resource in"))
        .unwrap();
    assert!(matches!(live.reload(), Reload::Kept { generation: 1, .. }));

    // The fix applies; a decision already holding the old engine finishes with it.
    std::fs::write(policies.join("20-forbid.cedar"), FORBID).unwrap();
    assert_eq!(live.reload(), Reload::Applied { generation: 2, policies: 2 });
    let after = alice_on_billing(&live.engine());
    assert!(!after.allow);
    assert_eq!(after.policies, vec!["billing-closed".to_owned()]);
    assert!(alice_on_billing(&before).allow, "the engine taken before the reload is unchanged");

    // Files that disappear are an error, and the set stays.
    std::fs::remove_dir_all(&policies).unwrap();
    assert!(matches!(live.reload(), Reload::Kept { generation: 2, .. }));
    assert!(!alice_on_billing(&live.engine()).allow);
}

#[test]
fn a_gateway_does_not_start_on_an_invalid_set() {
    let dir = dir("start");
    std::fs::write(dir.join("policies/a.cedar"), "permit (principal, action, resource) when { context.missing };")
        .unwrap();
    let files = PolicyFiles { policies: dir.join("policies"), entities: None };
    let error = LivePolicy::start(files).unwrap_err();
    assert!(matches!(error, PolicyError::Invalid(_)), "{error}");
    let empty = PolicyFiles { policies: dir.join("nothing-here"), entities: None };
    assert!(matches!(LivePolicy::start(empty).unwrap_err(), PolicyError::Io(_)));
}
