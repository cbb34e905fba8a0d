//! `zerogate policy` as a policy author runs it, on the example in `examples/policy`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zerogate")).current_dir(repo()).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_example_validates_and_explains_its_decisions() {
    let out = run(&["policy", "validate", "examples/policy", "--entities", "examples/policy/entities.json"]);
    assert!(out.status.success(), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("3 policies valid"));

    let check = |principal: &str, resource: &str, json: bool| {
        let mut args = vec![
            "policy",
            "check",
            "--policies",
            "examples/policy",
            "--entities",
            "examples/policy/entities.json",
            "--principal",
            principal,
            "--action",
            "Zerogate::Action::\"http\"",
            "--resource",
            resource,
            "--context",
            "examples/policy/context-alice-get.json",
        ];
        if json {
            args.push("--json");
        }
        let out = run(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        stdout(&out)
    };
    let allowed = check("Zerogate::User::\"alice\"", "Zerogate::Application::\"billing\"", false);
    assert!(allowed.contains("ALLOW: permitted by finance-reads-billing"), "{allowed}");
    // The admin route needs a managed device; the context has no posture.
    let denied = check("Zerogate::User::\"alice\"", "Zerogate::Route::\"billing-admin\"", false);
    assert!(denied.contains("DENY: forbidden by admin-only-from-managed-devices"), "{denied}");
    let json: serde_json::Value =
        serde_json::from_str(&check("Zerogate::User::\"bob\"", "Zerogate::Application::\"billing\"", true)).unwrap();
    assert_eq!(json["allow"], false);
    assert_eq!(json["errors"], serde_json::json!([]));
}

#[test]
fn invalid_policy_is_refused_with_cedar_diagnostics() {
    let dir = std::env::temp_dir().join(format!("zerogate-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.cedar"),
        "@id(\"typo\")\npermit (principal, action, resource) when { context.methd == \"GET\" };\n",
    )
    .unwrap();
    let out = run(&["policy", "validate", dir.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["valid"], false);
    assert!(report["diagnostics"][0].as_str().unwrap().contains("typo"), "{report}");
    let schema = stdout(&run(&["policy", "schema"]));
    assert!(schema.contains("namespace Zerogate"));
    std::fs::remove_dir_all(&dir).ok();
}
