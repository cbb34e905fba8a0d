//! The upstream's view: the identity assertion verifies with the published JWKS, in zerogate's
//! verifier and in PyJWT (what an upstream written in another language would use), and only for
//! its audience and lifetime.

use std::process::Command;
use std::time::{Duration, SystemTime};

use zerogate_authn::identity::Authenticated;
use zerogate_authn::jwt::{Algorithm, KeySet, TokenKind, UnverifiedToken, Validation};
use zerogate_gateway::assertion::{ASSERTION_TTL_SECONDS, AssertionSigner};

const ISSUER: &str = "https://gateway.zerogate.test";

fn alice() -> Authenticated {
    let mut who = Authenticated::from_access_key("AKZG1", "ignored");
    who.kind = zerogate_authn::identity::PrincipalKind::User;
    who.id = "alice".into();
    who.groups = vec!["finance".into()];
    who.method = zerogate_authn::identity::Method::Oidc;
    who.credential_id = "jti:abc".into();
    who
}

#[test]
fn the_assertion_verifies_for_its_audience_and_lifetime_only() {
    let (signer, der) = AssertionSigner::generate(ISSUER).unwrap();
    let again = AssertionSigner::from_pkcs8(ISSUER, &der).unwrap();
    assert_eq!(again.key_id(), signer.key_id(), "the key id follows the key");
    let now = SystemTime::now();
    let token = signer.sign(&alice(), "billing", now).unwrap();

    let jwks = serde_json::to_vec(&signer.jwks()).unwrap();
    let (keys, _) = KeySet::from_jwks(&jwks, &[Algorithm::ES256]).unwrap();
    let validation =
        |aud: &str| Validation::new(ISSUER, vec![aud.to_owned()], vec![Algorithm::ES256], TokenKind::Id).unwrap();
    let verified = UnverifiedToken::parse(&token).unwrap().verify(&keys, &validation("billing"), now).unwrap();
    assert_eq!((verified.subject.as_str(), verified.groups.clone()), ("alice", vec!["finance".to_owned()]));
    let wrong = UnverifiedToken::parse(&token).unwrap().verify(&keys, &validation("wiki"), now).unwrap_err();
    assert_eq!(wrong.kind(), "wrong_audience");
    let later = now + Duration::from_secs(ASSERTION_TTL_SECONDS + 31);
    assert_eq!(
        UnverifiedToken::parse(&token).unwrap().verify(&keys, &validation("billing"), later).unwrap_err().kind(),
        "expired"
    );

    // A busy client reuses one assertion for half its lifetime, per audience and credential.
    let first = signer.header_for(&alice(), "billing", now).unwrap();
    assert_eq!(signer.header_for(&alice(), "billing", now + Duration::from_secs(29)).unwrap(), first);
    assert_ne!(signer.header_for(&alice(), "wiki", now).unwrap(), first);
    let mut other_token = alice();
    other_token.credential_id = "jti:def".into();
    assert_ne!(signer.header_for(&other_token, "billing", now).unwrap(), first);
    // The same credential asserting other groups, or naming another principal, is another
    // assertion: a remembered one is only reused for exactly what it says.
    let mut other_groups = alice();
    other_groups.groups.push("admins".into());
    assert_ne!(signer.header_for(&other_groups, "billing", now).unwrap(), first);
    let mut other_principal = alice();
    other_principal.id = "mallory".into();
    assert_ne!(signer.header_for(&other_principal, "billing", now).unwrap(), first);
    assert_eq!(signer.header_for(&alice(), "billing", now + Duration::from_secs(1)).unwrap(), first);
    let later = signer.header_for(&alice(), "billing", now + Duration::from_secs(31)).unwrap();
    assert_ne!(later, first, "a new assertion after half the lifetime");

    // PyJWT, as an upstream would verify it.
    let script = r#"
import json, sys, jwt
jwks, token = json.loads(sys.argv[1]), sys.argv[2]
key = jwt.PyJWK(jwks["keys"][0])
claims = jwt.decode(token, key, algorithms=["ES256"], audience="billing", issuer=sys.argv[3])
print(claims["sub"], claims["principal"], claims["authn"], claims["credential_id"])
try:
    jwt.decode(token, key, algorithms=["ES256"], audience="wiki", issuer=sys.argv[3])
    print("WRONG AUDIENCE ACCEPTED")
except jwt.InvalidAudienceError:
    pass
"#;
    let out = Command::new("python3")
        .args(["-c", script, &signer.jwks().to_string(), &token, ISSUER])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "PyJWT refused the assertion: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), r#"alice Zerogate::User::"alice" oidc jti:abc"#);
}
