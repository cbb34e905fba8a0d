//! Every RFC 8725 item and the classic JWT attacks, with tokens made by PyJWT.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use zerogate_authn::identity::{Authenticated, Revocations};
use zerogate_authn::jwt::{Algorithm, KeySet, TokenKind, UnverifiedToken, Validation, ValidationError};

const ISSUER: &str = "https://idp.example.test/realms/zerogate";

#[test]
fn every_case_is_accepted_or_refused_for_the_right_reason() {
    let dir = common::temp_dir("jwt-cases");
    let cases = common::make(ISSUER, "https://idp.example.test/second", &dir);
    let (keys, skipped) = KeySet::from_jwks(&cases.file("jwks.json"), &common::allowed()).unwrap();
    assert_eq!(keys.len(), 6, "six signing keys are usable: {keys:?}");
    assert_eq!(skipped.len(), 3, "the 1024-bit, the HMAC and the encryption key are skipped: {skipped:?}");
    let access = common::validation(ISSUER, TokenKind::Access);
    let id = common::validation(ISSUER, TokenKind::Id);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for case in cases.cases.iter().filter(|case| case.issuers == 1) {
        let validation = if case.kind == TokenKind::Id { &id } else { &access };
        let outcome = UnverifiedToken::parse(&case.token).and_then(|token| token.verify(&keys, validation, cases.now));
        let got = match &outcome {
            Ok(verified) => {
                assert_eq!(verified.subject, "alice", "{}", case.name);
                "ok"
            }
            Err(error) => error.kind(),
        };
        if got != case.expect {
            wrong.push(format!("{}: expected {}, got {got} ({outcome:?})", case.name, case.expect));
        }
        checked += 1;
    }
    assert!(checked >= 75, "only {checked} cases");
    assert!(wrong.is_empty(), "{} of {checked} cases wrong:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn a_verified_token_carries_what_audit_and_policy_need() {
    let dir = common::temp_dir("jwt-claims");
    let cases = common::make(ISSUER, "https://idp.example.test/second", &dir);
    let (keys, _) = KeySet::from_jwks(&cases.file("jwks.json"), &common::allowed()).unwrap();
    let token = UnverifiedToken::parse(&cases.get("es256").token).unwrap();
    assert_eq!(token.issuer(), Some(ISSUER));
    assert_eq!(token.key_id(), Some("ec-1"));
    let verified = token.verify(&keys, &common::validation(ISSUER, TokenKind::Access), cases.now).unwrap();
    assert_eq!(verified.algorithm, Algorithm::ES256);
    assert_eq!(verified.audience, common::AUDIENCE);
    assert_eq!(verified.groups, vec!["engineering".to_owned()]);
    assert_eq!(verified.client_id.as_deref(), Some("cli"));
    assert!(verified.credential_id().starts_with("jti:token-"), "revocation is keyed on jti");
    let user = Authenticated::from_token(&verified, false).unwrap();
    assert_eq!(user.cedar_uid(), r#"Zerogate::User::"alice""#);
    assert_eq!((user.method.as_str(), user.groups.clone()), ("oidc", vec!["engineering".to_owned()]));
    assert_eq!(user.credential_id, verified.credential_id());
    assert_eq!(Authenticated::from_token(&verified, true), None, "no email claim: no email-keyed user");
    let mut revocations = Revocations::default();
    revocations.credentials.insert(verified.credential_id());
    assert!(revocations.is_revoked(&user));
    // The subject at its issuer names the token too, whatever its jti.
    assert_eq!(user.also_known_as, vec![format!("sub:alice@{ISSUER}")]);
    let revocations = Revocations { credentials: [format!("sub:alice@{ISSUER}")].into(), ..Revocations::default() };
    assert!(revocations.is_revoked(&user));
    let elsewhere = Revocations {
        credentials: ["sub:alice@https://idp.example.test/second".to_owned()].into(),
        ..Revocations::default()
    };
    assert!(!elsewhere.is_revoked(&user), "the same subject at another issuer is someone else");
    // A jti is unique only within its issuer: revoked with the issuer named, it reaches this
    // issuer's token and no other issuer's token with the same jti.
    let jti = verified.credential_id();
    let scoped =
        |issuer: &str| Revocations { credentials: [format!("{jti}@{issuer}")].into(), ..Revocations::default() };
    assert!(scoped(ISSUER).is_revoked(&user), "{jti}@{ISSUER}");
    assert!(!scoped("https://idp.example.test/second").is_revoked(&user), "another issuer's token with this jti");
    assert!(!scoped(&ISSUER[..ISSUER.len() - 1]).is_revoked(&user), "an issuer is compared whole");
    // The same for a session id.
    let in_session = Authenticated {
        credential_id: "jti:t-9".into(),
        also_known_as: vec!["sid:s-1".into(), format!("sub:alice@{ISSUER}")],
        ..user.clone()
    };
    let session = |id: &str| Revocations { credentials: [id.to_owned()].into(), ..Revocations::default() };
    assert!(session(&format!("sid:s-1@{ISSUER}")).is_revoked(&in_session));
    assert!(!session("sid:s-1@https://idp.example.test/second").is_revoked(&in_session));
    assert!(session("sid:s-1").is_revoked(&in_session), "unscoped: from any issuer, as before");
    assert!(!session(&format!("sub:alice@{ISSUER}@{ISSUER}")).is_revoked(&in_session), "only jti and sid are scoped");
    // A verified token is still subject to the clock: at its expiry plus the leeway it is refused.
    let expiry = cases.now + Duration::from_secs(300 + 30);
    assert_eq!(verified.check_time(expiry, Duration::from_secs(30)).unwrap_err().kind(), "expired");
    assert!(verified.check_time(expiry - Duration::from_secs(1), Duration::from_secs(30)).is_ok());
}

#[test]
fn an_algorithm_outside_the_allow_list_is_refused_even_with_a_good_key() {
    let dir = common::temp_dir("jwt-allow");
    let cases = common::make(ISSUER, "https://idp.example.test/second", &dir);
    let only_rsa = vec![Algorithm::RS256];
    let (keys, _) = KeySet::from_jwks(&cases.file("jwks.json"), &only_rsa).unwrap();
    let validation = Validation::new(ISSUER, vec![common::AUDIENCE.into()], only_rsa, TokenKind::Access).unwrap();
    for name in ["es256", "eddsa", "ps256"] {
        let error =
            UnverifiedToken::parse(&cases.get(name).token).unwrap().verify(&keys, &validation, cases.now).unwrap_err();
        assert_eq!(error.kind(), "alg_not_allowed", "{name}");
    }
    let rs = UnverifiedToken::parse(&cases.get("rs256").token).unwrap();
    assert!(rs.verify(&keys, &validation, cases.now).is_ok());
}

#[test]
fn a_maximum_age_requires_a_recent_iat() {
    let dir = common::temp_dir("jwt-age");
    let cases = common::make(ISSUER, "https://idp.example.test/second", &dir);
    let (keys, _) = KeySet::from_jwks(&cases.file("jwks.json"), &common::allowed()).unwrap();
    let strict = common::validation(ISSUER, TokenKind::Access).with_max_age(Duration::from_secs(5));
    let old = UnverifiedToken::parse(&cases.get("rs256").token).unwrap();
    // Issued 10 s ago; 5 s plus 30 s leeway still admits it, 40 s later it is too old.
    assert!(old.verify(&keys, &strict, cases.now).is_ok());
    assert_eq!(old.verify(&keys, &strict, cases.now + Duration::from_secs(40)).unwrap_err().kind(), "too_old");
    let no_iat = UnverifiedToken::parse(&cases.get("no-nbf-no-iat").token).unwrap();
    assert_eq!(no_iat.verify(&keys, &strict, cases.now).unwrap_err().kind(), "bad_claim");
}

#[test]
fn settings_that_would_weaken_verification_are_refused() {
    let base = || common::validation(ISSUER, TokenKind::Access);
    assert_eq!(
        base().with_leeway(Duration::from_secs(31)).unwrap_err(),
        ValidationError::LeewayTooLarge(Duration::from_secs(31))
    );
    assert!(base().with_leeway(Duration::from_secs(30)).is_ok());
    assert_eq!(
        Validation::new("", vec!["a".into()], common::allowed(), TokenKind::Access).unwrap_err(),
        ValidationError::EmptyIssuer
    );
    assert_eq!(
        Validation::new(ISSUER, vec![], common::allowed(), TokenKind::Access).unwrap_err(),
        ValidationError::NoAudience
    );
    assert_eq!(
        Validation::new(ISSUER, vec![String::new()], common::allowed(), TokenKind::Access).unwrap_err(),
        ValidationError::NoAudience
    );
    assert_eq!(
        Validation::new(ISSUER, vec!["a".into()], vec![], TokenKind::Access).unwrap_err(),
        ValidationError::NoAlgorithm
    );
    assert_eq!(Algorithm::from_name("none"), None);
    assert_eq!(Algorithm::from_name("HS256"), None);
    assert_eq!(Algorithm::from_name("rs256"), None, "JOSE names are case-sensitive");
}

#[test]
fn a_jwks_without_usable_keys_is_an_error() {
    let allowed = common::allowed();
    assert!(KeySet::from_jwks(b"not json", &allowed).is_err());
    assert!(KeySet::from_jwks(br#"{"keys": 5}"#, &allowed).is_err());
    let only_oct = br#"{"keys": [{"kty": "oct", "k": "AAAA", "kid": "h"}]}"#;
    assert_eq!(
        KeySet::from_jwks(only_oct, &allowed).unwrap_err().to_string(),
        "JWKS document has no usable signing key (1 skipped)"
    );
    // An EC point that is not on the curve is skipped, never used.
    let off_curve = br#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "e", "x": "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "y": "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#;
    assert!(KeySet::from_jwks(off_curve, &allowed).is_err());
}
