//! Ambiguous requests are refused, never guessed; the identity headers of every family are
//! stripped, and `Connection:` cannot remove what the gateway adds.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Uri, Version};
use zerogate_gateway::canonical::{CanonicalRequest, Refusal, canonicalize, clean_for_upstream, is_identity_header};

const SNI: &str = "billing.example.org";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value.as_bytes()).unwrap(),
        );
    }
    map
}

fn check(method: &str, target: &str, extra: &[(&str, &str)]) -> Result<CanonicalRequest, Refusal> {
    let mut pairs = vec![("host", SNI)];
    pairs.extend_from_slice(extra);
    let uri: Uri = target.parse().expect("hyper parses the target");
    canonicalize(
        Version::HTTP_11,
        &Method::from_bytes(method.as_bytes()).unwrap(),
        &uri,
        &headers(&pairs),
        Some(SNI),
        443,
    )
}

#[test]
fn the_audit_log_keeps_what_was_asked_but_not_the_secrets_in_a_query() {
    let presigned = "/report?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261207%2Fus-east-1%2Fs3%2Faws4_request\
                     &X-Amz-Date=20261207T000000Z&X-Amz-Expires=604800&X-Amz-SignedHeaders=host\
                     &X-Amz-Security-Token=FQoG&X-Amz-Signature=f00d";
    let canonical = check("GET", presigned, &[]).unwrap();
    assert_eq!(canonical.target(), presigned, "forwarded as sent");
    let recorded = canonical.recorded_target();
    assert!(!recorded.contains("f00d") && !recorded.contains("FQoG"), "{recorded}");
    assert!(recorded.ends_with("&X-Amz-Security-Token=REDACTED&X-Amz-Signature=REDACTED"), "{recorded}");
    assert!(recorded.contains("X-Amz-Credential=AKID%2F20261207"), "the key id says who: {recorded}");
    // A query built to be slow to search for JWTs is searched in one pass (with the search
    // quadratic this took seconds).
    let crafted = format!("/x?a={}", "eyJ".repeat(20_000));
    let recorded = check("GET", &crafted, &[]).unwrap().recorded_target();
    assert_eq!(recorded, crafted, "no JWT in it");
    let crafted = format!("/x?a={}", "%2525%253D".repeat(6_000));
    let recorded = check("GET", &crafted, &[]).unwrap().recorded_target();
    assert_eq!(recorded, crafted, "no name in it");
    for (target, kept) in [
        ("/cb?code=abc&state=xyz", "/cb?code=REDACTED&state=xyz"),
        ("/x?ACCESS_TOKEN=abc&q=1&token", "/x?ACCESS_TOKEN=REDACTED&q=1&token"),
        ("/x?%61pi_key=abc", "/x?%61pi_key=REDACTED"),
        ("/x?sig=abc&signed=1", "/x?sig=REDACTED&signed=1"),
        // A value that carries parameters of its own (a return URL, a filter), encoded once
        // or twice: a secret among them hides the value; ordinary ones keep it.
        ("/x?q=token%3Dabc", "/x?q=REDACTED"),
        ("/x?next=%2Fcb%3Faccess_token%3Dopaque&n=1", "/x?next=REDACTED&n=1"),
        ("/x?r=https%3A%2F%2Fapp%2Fcb%23state%3D1%26access_token%3Dopaque", "/x?r=REDACTED"),
        ("/x?next=%252Fcb%253Fpassword%253Dpw&n=1", "/x?next=REDACTED&n=1"),
        ("/x?next=/cb?a=1;sid=s1&n=1", "/x?next=/cb?a=1;sid=REDACTED&n=1"),
        ("/x?next=%2Fsearch%3Fq%3Dmonkey%26page%3D2&q=a%3Db", "/x?next=%2Fsearch%3Fq%3Dmonkey%26page%3D2&q=a%3Db"),
        // `;` starts a name too, and the separators are kept as sent; a secret's value runs to
        // the next `&`, since a `;` may be part of it.
        ("/x?a=1;password=hunter2&b=2", "/x?a=1;password=REDACTED&b=2"),
        ("/x?password=ab;cd&b=2", "/x?password=REDACTED&b=2"),
        // Nested names, as frameworks write them.
        ("/login?user[name]=al&user[password]=pw", "/login?user[name]=al&user[password]=REDACTED"),
        ("/x?auth.token=t&auth.kind=bearer", "/x?auth.token=REDACTED&auth.kind=bearer"),
        // Every spelling of a name.
        ("/x?API-Key=k&Api_Key=k&apikey=k&key=k", "/x?API-Key=REDACTED&Api_Key=REDACTED&apikey=REDACTED&key=REDACTED"),
        ("/o?X-Goog-Signature=ab&X-Goog-Credential=svc", "/o?X-Goog-Signature=REDACTED&X-Goog-Credential=svc"),
        (
            "/t?client_assertion=x&client_assertion_type=jwt-bearer",
            "/t?client_assertion=REDACTED&client_assertion_type=REDACTED",
        ),
        ("/x?jwt=a&keyword=k&monkey=m&zipcode=1", "/x?jwt=REDACTED&keyword=k&monkey=m&zipcode=1"),
        // Names that hold a secret's word.
        (
            "/x?new_password=a&private_token=glpat-1&oauth_signature=s&session_token=t&secret_key=k&jsessionid=j&PHPSESSID=p",
            "/x?new_password=REDACTED&private_token=REDACTED&oauth_signature=REDACTED&session_token=REDACTED\
             &secret_key=REDACTED&jsessionid=REDACTED&PHPSESSID=REDACTED",
        ),
        // A JWT anywhere in a value, under any name, percent-encoded or not, or with no name.
        ("/x?state=eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "/x?state=REDACTED"),
        ("/x?s=eyJhbGciOiJFUzI1NiJ9%2EeyJzdWIiOiJhIn0%2Ec2ln&n=eyJ", "/x?s=REDACTED&n=eyJ"),
        ("/x?next=%2Fcb%3Fid_token%3DeyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln&n=1", "/x?next=REDACTED&n=1"),
        ("/x?h=Bearer%20eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "/x?h=REDACTED"),
        ("/x?eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln&n=1", "/x?REDACTED&n=1"),
        ("/x?=eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln&n=1", "/x?=REDACTED&n=1"),
        ("/x?eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln=1&n=1", "/x?REDACTED&n=1"),
        ("/x?v=eyJ.notajwt&w=eyJhbGci.", "/x?v=eyJ.notajwt&w=eyJhbGci."),
        // A JWE with `alg: dir` has an empty second segment.
        ("/x?state=eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..aXY.Y3Q.dGFn", "/x?state=REDACTED"),
        // Any spelling, and names that hold a secret's word.
        (
            "/x?api+key=k&api%20key=k&session+id=s&auth_code=c&device_code=c&subscription-key=k\
             &authorization=Bearer%20opaque&pass=x&passcode=x&passenger=2&zip_code=1",
            "/x?api+key=REDACTED&api%20key=REDACTED&session+id=REDACTED&auth_code=REDACTED&device_code=REDACTED\
             &subscription-key=REDACTED&authorization=REDACTED&pass=REDACTED&passcode=REDACTED&passenger=2&zip_code=1",
        ),
        ("/x?", "/x?"),
        ("/x?&;=&a", "/x?&;=&a"),
        ("/plain", "/plain"),
    ] {
        assert_eq!(check("GET", target, &[]).unwrap().recorded_target(), kept, "{target}");
    }
}

#[test]
fn ordinary_requests_pass_unchanged() {
    for target in ["/", "/invoices", "/invoices/", "/a/b.c/d-e_f~g", "/search?q=a%20b&x=%2F", "/caf%C3%A9", "/%25"] {
        let canonical = check("GET", target, &[]).unwrap_or_else(|e| panic!("{target}: {e}"));
        assert_eq!(canonical.target(), target);
        assert_eq!(canonical.host, SNI);
    }
    let post = check("POST", "/upload", &[("content-length", "5")]).unwrap();
    assert_eq!(post.path, "/upload");
    assert!(check("POST", "/upload", &[("transfer-encoding", "chunked")]).is_ok());
    assert!(check("POST", "/upload", &[("content-length", "5"), ("content-length", "5")]).is_ok());
}

#[test]
fn every_ambiguous_target_is_refused() {
    let refused = [
        ("/a/../admin", "dot segment"),
        ("/a/./b", "dot segment"),
        ("/..", "dot segment"),
        ("/a/%2e%2e/admin", "encoded `.`"),
        ("/a/%2E/b", "encoded `.`"),
        ("/admin%2fsecret", "encoded `/`"),
        ("/admin%2Fsecret", "encoded `/`"),
        ("/admin%5csecret", "encoded `\\`"),
        ("/%61dmin", "encoded unreserved"),
        ("/a%00b", "encoded control"),
        ("/a%0d%0aX-Injected:1", "encoded control"),
        ("/a;jsessionid=1", "path parameters"),
        ("/admin;/x", "path parameters"),
        ("/admin%3bx=1", "encoded `;`"),
        ("/admin%3B/x", "encoded `;`"),
        ("/a/%252e%252e/admin", "double percent-encoding"),
        ("/admin%252Fsecret", "double percent-encoding"),
        ("//admin", "empty segment"),
        ("/a//b", "empty segment"),
        ("/a%zz", "malformed percent"),
        ("/a%2", "malformed percent"),
        ("/q?x=%00", "encoded control character in the query"),
        ("/q?x=%", "malformed percent-encoding in the query"),
    ];
    for (target, reason) in refused {
        let refusal = check("GET", target, &[]).expect_err(target);
        assert_eq!(refusal.status, 400, "{target}");
        assert!(refusal.reason.contains(reason), "{target}: {} (expected {reason})", refusal.reason);
    }
    // Absolute-form and authority-form targets on ordinary methods; `*`; CONNECT.
    for (method, target) in [
        ("GET", "https://billing.example.org/admin"),
        ("GET", "http://evil.example/"),
        ("GET", "billing.example.org:443"),
        ("GET", "*"),
        ("OPTIONS", "*"),
        ("CONNECT", "/"),
        // Methods are case-sensitive: a lower-case one is no DELETE to a policy, and refused.
        ("delete", "/admin/users/7"),
        ("Get", "/"),
        ("connect", "/"),
    ] {
        let uri: Uri = target.parse().unwrap();
        let refusal = canonicalize(
            Version::HTTP_11,
            &Method::from_bytes(method.as_bytes()).unwrap(),
            &uri,
            &headers(&[("host", SNI)]),
            Some(SNI),
            443,
        )
        .expect_err(target);
        assert_eq!(refusal.status, 400, "{method} {target}");
    }
}

#[test]
fn host_must_be_single_well_formed_and_the_tls_server_name() {
    let with_host = |host: &[(&str, &str)], sni: Option<&str>| {
        canonicalize(Version::HTTP_11, &Method::GET, &"/".parse().unwrap(), &headers(host), sni, 443)
    };
    assert_eq!(
        with_host(&[("host", "Billing.Example.ORG.")], Some(SNI)).unwrap().host,
        SNI,
        "case and trailing dot change nothing"
    );
    assert_eq!(with_host(&[("host", "billing.example.org:443")], Some("billing.example.org.")).unwrap().host, SNI);
    assert_eq!(with_host(&[], Some(SNI)).unwrap_err().reason, "no Host header");
    assert_eq!(with_host(&[("host", SNI), ("host", SNI)], Some(SNI)).unwrap_err().reason, "more than one Host header");
    assert_eq!(with_host(&[("host", "wiki.example.org")], Some(SNI)).unwrap_err().status, 421);
    assert_eq!(with_host(&[("host", "billing.example.org:8443")], Some(SNI)).unwrap_err().status, 421);
    for malformed in ["billing.example.org:", "billing example", "bill/ing", "a@b", "billing.example.org:x"] {
        assert_eq!(with_host(&[("host", malformed)], Some(SNI)).unwrap_err().status, 400, "{malformed}");
    }
    assert_eq!(with_host(&[("host", "[::1]:443")], None).unwrap().host, "[::1]");
}

#[test]
fn framing_conflicts_underscored_names_and_overrides_are_refused() {
    for (extra, reason) in [
        (&[("content-length", "5"), ("content-length", "6")][..], "conflicting Content-Length"),
        (
            &[("content-length", "5"), ("transfer-encoding", "chunked")][..],
            "Content-Length together with Transfer-Encoding",
        ),
        (&[("transfer-encoding", "gzip, chunked")][..], "transfer coding"),
        (&[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")][..], "transfer coding"),
        (&[("content-length", "+5")][..], "malformed Content-Length"),
        (&[("x_forwarded_user", "admin")][..], "`_`"),
        (&[("x-auth_request-user", "admin")][..], "`_`"),
        (&[("X-HTTP-Method-Override", "DELETE")][..], "override"),
        (&[("x-http-method", "MERGE")][..], "override"),
        (&[("X-Method-Override", "PUT")][..], "override"),
        (&[("X-Original-URL", "/admin")][..], "override"),
        (&[("x-original-uri", "/admin")][..], "override"),
        (&[("X-Rewrite-URL", "/admin")][..], "override"),
    ] {
        let refusal = check("POST", "/upload", extra).expect_err(reason);
        assert!(refusal.reason.contains(reason), "{extra:?}: {}", refusal.reason);
    }
}

#[test]
fn identity_headers_of_every_family_are_stripped_and_connection_cannot_remove_ours() {
    let spoofed = [
        "X-Zerogate-Identity",
        "x-zerogate-user",
        "X-Forwarded-User",
        "x-forwarded-email",
        "X-Forwarded-Groups",
        "x-forwarded-preferred-username",
        "x-forwarded-access-token",
        "X-Auth-Request-User",
        "x-auth-request-email",
        "x-auth-request-access-token",
        "X-Amzn-Oidc-Identity",
        "x-amzn-oidc-data",
        "x-amzn-oidc-accesstoken",
        "X-Goog-Authenticated-User-Email",
        "x-goog-iap-jwt-assertion",
        "X-MS-CLIENT-PRINCIPAL",
        "x-ms-client-principal-name",
        "x-ms-token-aad-id-token",
        "Cf-Access-Jwt-Assertion",
        "cf-access-authenticated-user-email",
        "X-Pomerium-Jwt-Assertion",
        "x-pomerium-claim-email",
        "X-SSL-Client-Cert",
        "ssl-client-verify",
        "x-client-cert",
        "X-Forwarded-Client-Cert",
        "x-remote-user",
        "Remote-User",
        "x-user",
        "x-email",
        "x-webauth-user",
        "x-jwt-assertion",
        "x-client-verify",
        "x-client-dn",
        "x-authenticated-user",
        "X-Amzn-Mtls-Clientcert",
        "x-amzn-mtls-clientcert-leaf",
        "X-ARR-ClientCert",
        "X-Forwarded-Tls-Client-Cert",
        "x-forwarded-tls-client-cert-info",
        "Remote-Groups",
        "remote-email",
        "Remote-Name",
        "X-Authentik-Username",
        "x-authentik-groups",
        "Tailscale-User-Login",
        "X-Vouch-User",
        "X-Remote-Extra-Scopes",
        "x-remote-group",
        "X-Auth-User",
        "x-auth-username",
        "X-Auth-Roles",
        "x-auth-subject",
        "X-Consumer-Id",
        "x-consumer-username",
        "X-Credential-Identifier",
        "X-Authenticated-Userid",
        "X-Userinfo",
        "x-id-token",
        "X-Access-Token",
        "Teleport-Jwt-Assertion",
        "Impersonate-User",
        "impersonate-group",
        "Impersonate-Extra-Scopes",
        "X-SSL-Cert",
        "x-ssl-subject",
    ];
    let mut pairs: Vec<(&str, &str)> = spoofed.iter().map(|name| (*name, "admin")).collect();
    pairs.extend([("accept", "text/html"), ("cookie", "a=b"), ("user-agent", "curl"), ("x-request-id", "r-1")]);
    // A credential the application checks itself (OpenStack's), not an identity asserted to it.
    pairs.push(("x-auth-token", "gAAAA-openstack"));
    // The client asks to drop the gateway's header and a normal one as hop-by-hop.
    pairs.extend([
        ("connection", "x-zerogate-identity, x-request-id, keep-alive"),
        ("keep-alive", "timeout=5"),
        ("upgrade", "h2c"),
        ("te", "trailers"),
    ]);
    pairs.push(("authorization", "Bearer token-for-the-gateway"));
    let mut map = headers(&pairs);
    let removed = clean_for_upstream(&mut map, Some(&hyper::header::AUTHORIZATION));
    assert!(removed >= spoofed.len() - 1, "removed {removed}");
    for name in spoofed {
        assert!(!map.contains_key(name.to_ascii_lowercase().as_str()), "{name} reached the upstream");
        assert!(is_identity_header(&name.to_ascii_lowercase()), "{name}");
    }
    for gone in ["connection", "keep-alive", "upgrade", "te", "authorization", "x-request-id"] {
        assert!(!map.contains_key(gone), "{gone} reached the upstream");
    }
    for kept in ["accept", "cookie", "user-agent", "x-auth-token"] {
        assert!(map.contains_key(kept), "{kept} was removed");
    }
    // An `Authorization` the gateway did not take as the credential (the application's own
    // Basic login behind a client-certificate application) reaches the application as sent.
    let mut own_login = headers(&[("authorization", "Basic YWxpY2U6cGFzcw=="), ("accept", "*/*")]);
    clean_for_upstream(&mut own_login, None);
    assert_eq!(own_login.get("authorization").and_then(|v| v.to_str().ok()), Some("Basic YWxpY2U6cGFzcw=="));
    // Address claims of every spelling, and the method and target overrides frameworks honour.
    let claimed = [
        "X-Forwarded-For",
        "x-forwarded-host",
        "X-Forwarded-Port",
        "x-forwarded-prefix",
        "X-Forwarded-Ssl",
        "Forwarded",
        "X-Real-IP",
        "True-Client-IP",
        "CF-Connecting-IP",
        "Fastly-Client-IP",
        "X-Client-IP",
        "X-Cluster-Client-IP",
        "X-Original-Forwarded-For",
        "Client-IP",
        "X-Originating-IP",
    ];
    let mut claims = headers(&claimed.iter().map(|name| (*name, "10.0.0.1")).collect::<Vec<_>>());
    assert_eq!(clean_for_upstream(&mut claims, None), claimed.len());
    assert!(claims.is_empty(), "{claims:?}");
    // The gateway adds its header after cleaning: nothing the client sent can remove it.
    map.insert("x-zerogate-identity", HeaderValue::from_static("signed"));
    assert_eq!(map.get("x-zerogate-identity").unwrap(), "signed");
}

/// HTTP/2 as hyper hands it over: `:scheme` and `:authority` in the URI, `Host` usually absent.
fn check_h2(target: &str, extra: &[(&str, &str)]) -> Result<CanonicalRequest, Refusal> {
    let uri: Uri = target.parse().expect("hyper parses the target");
    canonicalize(Version::HTTP_2, &Method::GET, &uri, &headers(extra), Some(SNI), 443)
}

#[test]
fn http2_authority_takes_the_place_of_host() {
    let canonical = check_h2("https://billing.example.org/reports?q=1", &[]).unwrap();
    assert_eq!((canonical.host.as_str(), canonical.target().as_str()), (SNI, "/reports?q=1"));
    // `Host` beside `:authority`: the same name passes, another is refused.
    assert!(check_h2("https://billing.example.org/", &[("host", "billing.example.org")]).is_ok());
    let refusal = check_h2("https://billing.example.org/", &[("host", "wiki.example.org")]).unwrap_err();
    assert!(refusal.reason.contains("differ"), "{refusal}");
    // Without `:authority`, `Host` names the host (RFC 9113 §8.3.1); without either, refused.
    assert_eq!(check_h2("/reports", &[("host", SNI)]).unwrap().host, SNI);
    assert!(check_h2("/reports", &[]).is_err());
    // The authority must be the TLS server name, like `Host`; `:scheme` must be https.
    assert_eq!(check_h2("https://wiki.example.org/", &[]).unwrap_err().status, 421);
    assert_eq!(check_h2("https://billing.example.org:8443/", &[]).unwrap_err().status, 421);
    assert!(check_h2("http://billing.example.org/", &[]).is_err());
    assert!(check_h2("https://user@billing.example.org/", &[]).is_err(), "userinfo");
    // The path gets every HTTP/1.1 check.
    for target in
        ["https://billing.example.org/a/../b", "https://billing.example.org/a%2fb", "https://billing.example.org/a;b"]
    {
        assert_eq!(check_h2(target, &[]).unwrap_err().status, 400, "{target}");
    }
    // And an HTTP/1.1 request in absolute form is still refused.
    let uri: Uri = "https://billing.example.org/".parse().unwrap();
    assert!(canonicalize(Version::HTTP_11, &Method::GET, &uri, &headers(&[("host", SNI)]), Some(SNI), 443).is_err());
}

#[test]
fn split_cookies_are_joined_for_http1() {
    let mut split = headers(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
    zerogate_gateway::canonical::join_cookies(&mut split);
    let cookies: Vec<&HeaderValue> = split.get_all("cookie").iter().collect();
    assert_eq!(cookies, vec![&HeaderValue::from_static("a=1; b=2; c=3")]);
    let mut one = headers(&[("cookie", "a=1")]);
    zerogate_gateway::canonical::join_cookies(&mut one);
    assert_eq!(one.get("cookie").unwrap(), "a=1");
}
