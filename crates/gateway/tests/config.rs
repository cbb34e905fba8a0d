//! A configuration error names the key and the reason; nothing starts on a bad file.

use std::path::Path;

use zerogate_authn::identity::Method;
use zerogate_gateway::config::GatewayConfig;
use zerogate_gateway::decide::{Action, Mode};

const GOOD: &str = r#"
[gateway]
listen = "0.0.0.0:8443"
admin_listen = "127.0.0.1:9090"
id = "gw-eu-1"

[policy]
policies = "policy/"
entities = "policy/entities.json"

[[oidc]]
issuer = "https://login.example.com"
audiences = ["zerogate"]
algorithms = ["RS256", "ES256"]

[[app]]
host = "Billing.Example.ORG."
upstream = "https://10.0.3.7:8443"
resource = 'Zerogate::Application::"billing"'
authn = ["oidc", "mtls"]
mode = "shadow"
client_certificates = "required"
routes = { "/admin" = 'Zerogate::Route::"billing-admin"' }

[[app]]
host = "wiki.example.org"
upstream = "http://127.0.0.1:3000"
resource = 'Zerogate::Application::"wiki"'
authn = ["sigv4"]
"#;

fn parse(text: &str) -> Result<GatewayConfig, String> {
    GatewayConfig::parse(text, "gateway.toml", Path::new("/etc/zerogate")).map_err(|e| e.to_string())
}

#[test]
fn a_good_file_is_read_with_its_defaults() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.listen.to_string(), "0.0.0.0:8443");
    assert_eq!(config.id, "gw-eu-1");
    assert_eq!(config.policies, Path::new("/etc/zerogate/policy/"));
    let billing = &config.apps[0];
    assert_eq!(billing.app.host, "billing.example.org", "lowercase, no trailing dot");
    assert_eq!((billing.app.mode, billing.require_client_certificate), (Mode::Shadow, true));
    assert_eq!(billing.upstream_timeout, std::time::Duration::from_secs(60), "the default");
    assert_eq!(config.client_timeout, std::time::Duration::from_secs(60), "the default");
    assert_eq!(config.max_connections, 10_000, "the default");
    assert_eq!(config.max_requests_per_principal, 128, "the default");
    assert_eq!(config.audit_segment_bytes, 256 << 20, "the default");
    assert_eq!(config.certificate, None, "by default a certificate from zerogate's CA");
    assert_eq!(billing.app.methods, vec![Method::Oidc, Method::Mtls]);
    assert_eq!(billing.app.routes, vec![("/admin".to_owned(), r#"Zerogate::Route::"billing-admin""#.to_owned())]);
    let wiki = &config.apps[1];
    assert_eq!((wiki.app.mode, wiki.require_client_certificate), (Mode::Enforce, false), "enforce by default");
}

#[test]
fn a_brought_certificate_and_key_are_found_next_to_the_file() {
    let text = GOOD.replace(
        "id = \"gw-eu-1\"",
        "id = \"gw-eu-1\"\ncertificate = \"tls/fullchain.pem\"\nprivate_key = \"/secrets/key.pem\"",
    );
    let files = parse(&text).unwrap().certificate.expect("a brought certificate");
    assert_eq!(files.chain, Path::new("/etc/zerogate/tls/fullchain.pem"), "relative to the file's directory");
    assert_eq!(files.key, Path::new("/secrets/key.pem"), "absolute as it is");
    let text = GOOD
        .replace("authn = [\"sigv4\"]", "authn = [\"sigv4\"]\ncertificate = \"wiki.pem\"\nprivate_key = \"wiki.key\"");
    let config = parse(&text).unwrap();
    assert_eq!(config.certificate, None);
    let own = config.apps[1].certificate.as_ref().expect("the wiki's own certificate");
    assert_eq!((own.table.as_str(), own.chain.as_path()), ("app[1]", Path::new("/etc/zerogate/wiki.pem")));
}

/// GOOD with a TCP service added, its keys after `host`, `upstream` and `resource` as given.
fn with_service(extra: &str) -> String {
    format!(
        "{GOOD}\n[[app]]\nhost = \"db.internal\"\nupstream = \"tcp://10.0.3.9:5432\"\n\
         resource = 'Zerogate::TcpTarget::\"db:tcp/5432\"'\n{extra}\n"
    )
}

#[test]
fn a_tcp_service_takes_certificates_only_and_no_http_settings() {
    let config = parse(&with_service("authn = [\"mtls\"]")).unwrap();
    let db = &config.apps[2];
    assert_eq!((db.app.action, db.app.mode), (Action::Connect, Mode::Enforce));
    assert!(db.require_client_certificate, "always, without saying so");
    assert_eq!(config.apps[0].app.action, Action::Http);
    let cases = [
        ("authn = [\"oidc\"]", "app[2].authn", "[\"mtls\"] only"),
        ("authn = [\"mtls\", \"sigv4\"]", "app[2].authn", "[\"mtls\"] only"),
        ("authn = [\"mtls\"]\nclient_certificates = \"optional\"", "app[2].client_certificates", "always requires"),
        ("authn = [\"mtls\"]\nroutes = { \"/x\" = 'Zerogate::Route::\"x\"' }", "app[2].routes", "http://"),
        ("authn = [\"mtls\"]\nupstream_protocol = \"http2\"", "app[2].upstream_protocol", "http://"),
        ("authn = [\"mtls\"]\nsigv4_region = \"eu-west-1\"", "app[2].sigv4_region", "`sigv4` in authn"),
        ("authn = [\"mtls\"]\nsigv4_service = \"rds-db\"", "app[2].sigv4_service", "`sigv4` in authn"),
    ];
    for (extra, key, reason) in cases {
        let error = parse(&with_service(extra)).unwrap_err();
        assert!(error.contains(key) && error.contains(reason), "{extra}: {error}");
    }
    for (upstream, reason) in [("tcp://10.0.3.9", "tcp://host:port"), ("tcp://:5432", "tcp://host:port")] {
        let text = with_service("authn = [\"mtls\"]").replace("tcp://10.0.3.9:5432", upstream);
        let error = parse(&text).unwrap_err();
        assert!(error.contains("app[2].upstream") && error.contains(reason), "{upstream}: {error}");
    }
    for resource in ["Zerogate::User::", "Zerogate::Application::"] {
        let text = with_service("authn = [\"mtls\"]").replace("Zerogate::TcpTarget::", resource);
        let error = parse(&text).unwrap_err();
        assert!(error.contains("app[2].resource") && error.contains("TcpTarget"), "{error}");
    }
    let text = with_service("authn = [\"mtls\"]").replace("host = \"db.internal\"", "host = \"10.0.3.9\"");
    let error = parse(&text).unwrap_err();
    assert!(error.contains("app[2].host") && error.contains("SNI"), "{error}");
}

#[test]
fn a_proxy_protocol_header_is_asked_for_by_a_tcp_service_only() {
    use zerogate_gateway::proxy_protocol::ProxyProtocol;
    let config = parse(&with_service("authn = [\"mtls\"]")).unwrap();
    assert_eq!(config.apps[2].proxy_protocol, None, "none unless the service expects one");
    for (given, expected) in [("v1", ProxyProtocol::V1), ("v2", ProxyProtocol::V2)] {
        let config = parse(&with_service(&format!("authn = [\"mtls\"]\nproxy_protocol = \"{given}\""))).unwrap();
        assert_eq!(config.apps[2].proxy_protocol, Some(expected));
    }
    let error = parse(&with_service("authn = [\"mtls\"]\nproxy_protocol = \"2\"")).unwrap_err();
    assert!(error.contains("app[2].proxy_protocol") && error.contains("`2` is not `v1` or `v2`"), "{error}");
    // An HTTP upstream learns the client from the gateway's headers and identity assertion.
    let text = GOOD.replace("authn = [\"sigv4\"]", "authn = [\"sigv4\"]\nproxy_protocol = \"v2\"");
    let error = parse(&text).unwrap_err();
    assert!(error.contains("app[1].proxy_protocol") && error.contains("tcp:// upstreams only"), "{error}");
}

#[test]
fn an_idle_timeout_is_a_tcp_services_between_a_second_and_a_week() {
    assert_eq!(parse(&with_service("authn = [\"mtls\"]")).unwrap().apps[2].idle_timeout, None, "none by default");
    let config = parse(&with_service("authn = [\"mtls\"]\nidle_timeout_seconds = 3600")).unwrap();
    assert_eq!(config.apps[2].idle_timeout, Some(std::time::Duration::from_secs(3600)));
    for seconds in ["0", "604801"] {
        let error = parse(&with_service(&format!("authn = [\"mtls\"]\nidle_timeout_seconds = {seconds}"))).unwrap_err();
        assert!(error.contains("app[2].idle_timeout_seconds") && error.contains("between 1 and 604800"), "{error}");
    }
    let text = GOOD.replace("authn = [\"sigv4\"]", "authn = [\"sigv4\"]\nidle_timeout_seconds = 60");
    let error = parse(&text).unwrap_err();
    assert!(error.contains("app[1].idle_timeout_seconds") && error.contains("tcp:// upstreams only"), "{error}");
}

#[test]
fn a_gateway_id_is_one_short_printable_word() {
    assert_eq!(parse(&GOOD.replace("id = \"gw-eu-1\"\n", "")).unwrap().id, "gateway", "the default");
    let longest = "g".repeat(zerogate_gateway::config::MAX_GATEWAY_ID);
    assert_eq!(parse(&GOOD.replace("gw-eu-1", &longest)).unwrap().id, longest);
    for bad in ["", "gw eu 1", "gw\\t1", "gw-é", &format!("{longest}g")] {
        let error = parse(&GOOD.replace("gw-eu-1", bad)).unwrap_err();
        assert!(error.contains("gateway.id") && error.contains("printable ASCII"), "{bad:?}: {error}");
    }
}

#[test]
fn a_sigv4_scope_is_taken_only_where_sigv4_is() {
    let text = GOOD.replace("authn = [\"sigv4\"]", "authn = [\"sigv4\"]\nsigv4_region = \"eu-west-1\"");
    let wiki = &parse(&text).unwrap().apps[1];
    assert_eq!((wiki.sigv4_region.as_str(), wiki.sigv4_service.as_str()), ("eu-west-1", "execute-api"));
    assert_eq!(parse(GOOD).unwrap().apps[1].sigv4_region, "us-east-1", "the default");
    // On the billing app, which takes OIDC and certificates: a scope that would guard nothing.
    let text = GOOD.replace("mode = \"shadow\"", "mode = \"shadow\"\nsigv4_service = \"s3\"");
    let error = parse(&text).unwrap_err();
    assert!(error.contains("app[0].sigv4_service") && error.contains("`sigv4` in authn"), "{error}");
}

#[test]
fn each_error_names_its_key_and_reason() {
    let cases = [
        (GOOD.replace("id = \"gw-eu-1\"", "id = \"gw\"\nlisten_port = 1"), "line", "unknown field `listen_port`"),
        (GOOD.replace("0.0.0.0:8443", "localhost"), "gateway.listen", "not an address:port"),
        (GOOD.replace("127.0.0.1:9090", "0.0.0.0:8443"), "gateway.admin_listen", "must differ"),
        (GOOD.replace("https://login.example.com", "http://login.example.com"), "oidc[0].issuer", "https"),
        (GOOD.replace("\"RS256\", \"ES256\"", "\"HS256\""), "oidc[0].algorithms", "`HS256`"),
        (GOOD.replace("\"RS256\", \"ES256\"", "\"none\""), "oidc[0].algorithms", "`none`"),
        (GOOD.replace("mode = \"shadow\"", "mode = \"audit\""), "app[0].mode", "`audit`"),
        (
            GOOD.replace(
                "algorithms = [\"RS256\", \"ES256\"]",
                "algorithms = [\"RS256\"]\njwks_uri = \"https://x/jwks\"\njwks_file = \"k.json\"",
            ),
            "oidc[0].jwks_file",
            "not both",
        ),
        (GOOD.replace("[\"sigv4\"]", "[\"sig-v4\"]"), "app[1].authn", "`sig-v4`"),
        (GOOD.replace("wiki.example.org", "billing.example.org"), "app[1].host", "configured twice"),
        (GOOD.replace("http://127.0.0.1:3000", "http://127.0.0.1:3000/app"), "app[1].upstream", "without a path"),
        (GOOD.replace("http://127.0.0.1:3000", "ftp://127.0.0.1"), "app[1].upstream", "http://"),
        (
            GOOD.replace("http://127.0.0.1:3000", "http://svc:hunter2@127.0.0.1:3000"),
            "app[1].upstream",
            "must not carry credentials",
        ),
        (
            GOOD.replace("'Zerogate::Application::\"wiki\"'", "'Zerogate::User::\"wiki\"'"),
            "app[1].resource",
            "Application",
        ),
        (
            GOOD.replace("authn = [\"oidc\", \"mtls\"]", "authn = [\"oidc\"]"),
            "app[0].client_certificates",
            "needs `mtls`",
        ),
        (GOOD.replace("\"/admin\" =", "\"admin\" ="), "app[0].routes", "must start with `/`"),
        (
            GOOD.replace("client_certificates = \"required\"", "client_certificates = \"yes\""),
            "app[0].client_certificates",
            "`yes`",
        ),
        (
            GOOD.replace(
                "upstream = \"http://127.0.0.1:3000\"",
                "upstream = \"http://127.0.0.1:3000\"\nupstream_protocol = \"h3\"",
            ),
            "app[1].upstream_protocol",
            "`h3` is not `http1` or `http2`",
        ),
        (
            GOOD.replace("mode = \"shadow\"", "mode = \"shadow\"\nupstream_timeout_seconds = 0"),
            "app[0].upstream_timeout_seconds",
            "between 1 and 3600",
        ),
        (
            GOOD.replace("id = \"gw-eu-1\"", "id = \"gw-eu-1\"\nclient_timeout_seconds = 0"),
            "gateway.client_timeout_seconds",
            "between 1 and 3600",
        ),
        (
            GOOD.replace("id = \"gw-eu-1\"", "id = \"gw-eu-1\"\nmax_connections = 0"),
            "gateway.max_connections",
            "between 1 and 1000000",
        ),
        (
            GOOD.replace("id = \"gw-eu-1\"", "id = \"gw-eu-1\"\nmax_requests_per_principal = 0"),
            "gateway.max_requests_per_principal",
            "between 1 and 1000000",
        ),
        (
            GOOD.replace("id = \"gw-eu-1\"", "id = \"gw-eu-1\"\naudit_segment_mib = 0"),
            "gateway.audit_segment_mib",
            "between 1 and 1048576",
        ),
        (
            GOOD.replace("id = \"gw-eu-1\"", "id = \"gw-eu-1\"\naudit_segment_mib = 1048577"),
            "gateway.audit_segment_mib",
            "between 1 and 1048576",
        ),
        (
            GOOD.replace("id = \"gw-eu-1\"", "id = \"gw-eu-1\"\ncertificate = \"tls/chain.pem\""),
            "gateway.private_key",
            "needed with gateway.certificate",
        ),
        (
            GOOD.replace("id = \"gw-eu-1\"", "id = \"gw-eu-1\"\nprivate_key = \"tls/key.pem\""),
            "gateway.certificate",
            "needed with gateway.private_key",
        ),
        (
            GOOD.replace("authn = [\"sigv4\"]", "authn = [\"sigv4\"]\nprivate_key = \"tls/wiki.key\""),
            "app[1].certificate",
            "needed with app[1].private_key",
        ),
        (
            GOOD.replace("host = \"wiki.example.org\"", "host = \"10.0.0.7\"").replace(
                "authn = [\"sigv4\"]",
                "authn = [\"sigv4\"]\ncertificate = \"wiki.pem\"\nprivate_key = \"wiki.key\"",
            ),
            "app[1].certificate",
            "clients send no SNI",
        ),
    ];
    for (text, key, reason) in cases {
        let error = parse(&text).expect_err(key);
        assert!(error.starts_with("gateway.toml: "), "{error}");
        assert!(error.contains(key) && error.contains(reason), "expected {key} / {reason}, got: {error}");
    }
    let no_oidc = GOOD.split("[[oidc]]").next().unwrap().to_owned() + &GOOD[GOOD.find("[[app]]").unwrap()..];
    assert!(parse(&no_oidc).unwrap_err().contains("needs at least one [[oidc]]"));
    let no_apps = &GOOD[..GOOD.find("[[app]]").unwrap()];
    assert!(parse(no_apps).unwrap_err().contains("at least one [[app]]"));
    assert!(parse("not toml = = 1").unwrap_err().starts_with("gateway.toml: line 1"));
    let missing = GatewayConfig::load(Path::new("/nonexistent/gateway.toml")).unwrap_err();
    assert_eq!(missing.key, "(file)");
}
