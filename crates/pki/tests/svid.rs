//! The life of an X.509-SVID against real verifiers: issued by the CA, checked by rustls-webpki
//! (through `SvidVerifier`) and by `openssl verify`, revoked through the CRL; and each SVID rule
//! of the SPIFFE specification broken once, with the certificate refused.

use std::path::Path;
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use zerogate_pki::*;

const NOW: i64 = 1_800_000_000;

struct Fixture {
    ca: Authority,
    material: CaMaterial,
    domain: TrustDomain,
}

fn fixture(domain: &str) -> Fixture {
    let domain = TrustDomain::parse(domain).unwrap();
    let new = Authority::init(&domain, NOW - 3600).unwrap();
    let ca = Authority::load(domain.clone(), &new.material, Lifetimes::default()).unwrap();
    Fixture { ca, material: new.material, domain }
}

fn csr(key: &KeyPair, sans: Vec<SanType>) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.serialize_request(key).unwrap().pem().unwrap().into_bytes()
}

fn id(text: &str) -> SpiffeId {
    SpiffeId::parse(text).unwrap()
}

fn chain(issued: &Issued) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes()).collect::<Result<_, _>>().unwrap()
}

fn verifier(f: &Fixture) -> SvidVerifier {
    SvidVerifier::default().with_domain(f.domain.clone(), &[f.ca.root_der().clone()]).unwrap()
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("zerogate-pki-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn issued_svid_verifies_with_webpki_and_openssl() {
    let f = fixture("example.org");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let verified = VerifiedCsr::from_pem(&csr(&key, vec![])).unwrap();
    assert_eq!(verified.key_type, KeyType::EcdsaP256);
    let device = id("spiffe://example.org/device/laptop-42");
    let issued = f.ca.issue_for_csr(&device, &verified, None, NOW).unwrap();
    assert_eq!(issued.not_after - NOW, 24 * 3600, "devices get 24 hours by default");
    let workload = f.ca.issue_for_csr(&id("spiffe://example.org/workload/api"), &verified, None, NOW).unwrap();
    assert_eq!(workload.not_after - NOW, 3600, "workloads get one hour by default");
    assert_ne!(issued.serial, workload.serial);

    let ok = verifier(&f).verify(&chain(&issued), NOW, &RevocationList::default()).unwrap();
    assert_eq!(ok.id, device);
    assert_eq!(ok.serial, issued.serial);

    // Expired, and not yet valid.
    let err = verifier(&f).verify(&chain(&issued), issued.not_after + 1, &RevocationList::default()).unwrap_err();
    assert!(matches!(err, SvidError::Chain(_)), "{err:?}");
    let err = verifier(&f).verify(&chain(&issued), NOW - 120, &RevocationList::default()).unwrap_err();
    assert!(matches!(err, SvidError::Chain(_)), "{err:?}");

    // Revoked by serial and by identity.
    let mut revoked = RevocationList::default();
    revoked.serials.insert(issued.serial.clone());
    assert_eq!(verifier(&f).verify(&chain(&issued), NOW, &revoked), Err(SvidError::Revoked));
    let mut revoked = RevocationList::default();
    revoked.identities.insert(device.to_string());
    assert_eq!(verifier(&f).verify(&chain(&issued), NOW, &revoked), Err(SvidError::Revoked));

    // openssl agrees, as a TLS client certificate, with the attributes the SPIFFE spec asks for.
    let dir = tempdir("openssl");
    std::fs::write(dir.join("root.pem"), &f.material.root_cert_pem).unwrap();
    std::fs::write(dir.join("intermediate.pem"), &f.material.intermediate_cert_pem).unwrap();
    std::fs::write(dir.join("leaf.pem"), pem(&issued.der)).unwrap();
    let (ok, out) = openssl(
        &dir,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediate.pem",
            "-purpose",
            "sslclient",
            "-attime",
            &NOW.to_string(),
            "leaf.pem",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = openssl(
        &dir,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediate.pem",
            "-purpose",
            "sslserver",
            "-attime",
            &NOW.to_string(),
            "leaf.pem",
        ],
    );
    assert!(ok, "{out}");
    let (_, text) = openssl(&dir, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(text.contains("URI:spiffe://example.org/device/laptop-42"), "{text}");
    assert_eq!(text.matches("URI:").count(), 1, "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("X509v3 Key Usage: critical") && text.contains("Digital Signature"), "{text}");
    assert!(!text.contains("Certificate Sign"), "{text}");
    assert!(text.contains("TLS Web Server Authentication, TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("Name Constraints"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn crl_is_signed_and_revokes_with_openssl() {
    let f = fixture("example.org");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let verified = VerifiedCsr::from_pem(&csr(&key, vec![])).unwrap();
    let revoked = f.ca.issue_for_csr(&id("spiffe://example.org/workload/old"), &verified, None, NOW).unwrap();
    let kept = f.ca.issue_for_csr(&id("spiffe://example.org/workload/new"), &verified, None, NOW).unwrap();
    let crl = f.ca.crl(&[(revoked.serial.clone(), NOW)], 1, NOW, NOW + 3600).unwrap();
    let dir = tempdir("crl");
    std::fs::write(dir.join("crl.der"), &crl).unwrap();
    let (ok, out) = openssl(&dir, &["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"]);
    assert!(ok, "{out}");
    let (_, text) = openssl(&dir, &["crl", "-in", "crl.pem", "-noout", "-text"]);
    assert!(text.to_uppercase().contains(&revoked.serial.as_str().to_uppercase()), "{text}");
    std::fs::write(dir.join("root.pem"), &f.material.root_cert_pem).unwrap();
    std::fs::write(dir.join("intermediate.pem"), &f.material.intermediate_cert_pem).unwrap();
    let (ok, out) = openssl(&dir, &["crl", "-in", "crl.pem", "-noout", "-CAfile", "intermediate.pem"]);
    assert!(ok && out.contains("verify OK"), "{out}");
    // A chain file with both CAs, and the CRL checked for the leaf.
    std::fs::write(dir.join("cas.pem"), format!("{}{}", f.material.root_cert_pem, f.material.intermediate_cert_pem))
        .unwrap();
    for (issued, expect_ok) in [(&revoked, false), (&kept, true)] {
        std::fs::write(dir.join("leaf.pem"), pem(&issued.der)).unwrap();
        let (ok, out) = openssl(
            &dir,
            &[
                "verify",
                "-CAfile",
                "cas.pem",
                "-CRLfile",
                "crl.pem",
                "-crl_check",
                "-attime",
                &(NOW + 60).to_string(),
                "leaf.pem",
            ],
        );
        assert_eq!(ok, expect_ok, "{out}");
        if !expect_ok {
            assert!(out.contains("certificate revoked"), "{out}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn pem(der: &[u8]) -> String {
    zerogate_pki::ca::pem_block("CERTIFICATE", der)
}

/// Signs a hand-made leaf with the fixture's intermediate, to break one rule at a time.
fn craft(f: &Fixture, edit: impl FnOnce(&mut CertificateParams)) -> Vec<CertificateDer<'static>> {
    let int_key = KeyPair::from_pem(&f.material.intermediate_key_pem).unwrap();
    let int_der = CertificateDer::from_pem_slice(f.material.intermediate_cert_pem.as_bytes()).unwrap();
    let issuer = Issuer::from_ca_cert_der(&int_der, int_key).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "test");
    params.not_before = time::OffsetDateTime::from_unix_timestamp(NOW - 60).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(NOW + 3600).unwrap();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.subject_alt_names = vec![SanType::URI("spiffe://example.org/workload/w".try_into().unwrap())];
    edit(&mut params);
    let leaf = params.signed_by(&key, &issuer).unwrap();
    vec![leaf.der().clone(), int_der]
}

/// A named case: how to break the baseline, and which refusal to expect.
type Case = (&'static str, Box<dyn FnOnce(&mut CertificateParams)>, fn(&SvidError) -> bool);

fn uri(text: &str) -> SanType {
    SanType::URI(text.try_into().unwrap())
}

#[test]
fn each_svid_rule_broken_is_refused() {
    let f = fixture("example.org");
    let v = verifier(&f);
    let none = RevocationList::default();
    // The control: the crafted baseline passes.
    assert!(v.verify(&craft(&f, |_| {}), NOW, &none).is_ok());
    let cases: Vec<Case> = vec![
        ("wrong-leaf-ca-true", Box::new(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)), |e| {
            *e == SvidError::LeafIsCa
        }),
        ("wrong-leaf-no-digital-signature", Box::new(|p| p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]), |e| {
            *e == SvidError::KeyUsage
        }),
        (
            "wrong-leaf-cert-sign",
            Box::new(|p| p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign]),
            |e| *e == SvidError::LeafCanSign,
        ),
        ("no-key-usage", Box::new(|p| p.key_usages = vec![]), |e| *e == SvidError::KeyUsage),
        ("wrong-leaf-id-only-root", Box::new(|p| p.subject_alt_names = vec![uri("spiffe://example.org")]), |e| {
            matches!(e, SvidError::BadSpiffeId(SpiffeIdError::NoPath))
        }),
        (
            "wrong-leaf-ext-key-usage-incomplete (serverAuth only)",
            Box::new(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]),
            |e| *e == SvidError::ExtendedKeyUsage,
        ),
        (
            "emailProtection only (Envoy CVE-2022-21657)",
            Box::new(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection]),
            |e| *e == SvidError::ExtendedKeyUsage,
        ),
        ("certificate-without-id", Box::new(|p| p.subject_alt_names = vec![]), |e| *e == SvidError::NoSpiffeId),
        (
            "DNS name equal to the ID, no URI (Envoy CVE-2022-21656)",
            Box::new(|p| p.subject_alt_names = vec![SanType::DnsName("example.org".try_into().unwrap())]),
            |e| *e == SvidError::NoSpiffeId,
        ),
        (
            "second URI SAN of another scheme",
            Box::new(|p| p.subject_alt_names.push(uri("https://example.org/x"))),
            |e| *e == SvidError::SeveralUris,
        ),
        ("two SPIFFE IDs", Box::new(|p| p.subject_alt_names.push(uri("spiffe://example.org/workload/other"))), |e| {
            *e == SvidError::SeveralUris
        }),
        (
            "certificate-with-wrong-id (percent-encoded NUL, Envoy CVE-2025-66220)",
            Box::new(|p| p.subject_alt_names = vec![uri("spiffe://example.org/victim%00evil")]),
            |e| matches!(e, SvidError::BadSpiffeId(_)),
        ),
        (
            "raw NUL in the URI",
            Box::new(|p| p.subject_alt_names = vec![uri("spiffe://example.org/victim\0evil")]),
            |e| matches!(e, SvidError::BadSpiffeId(_) | SvidError::Malformed),
        ),
        (
            "another trust domain's ID under this CA",
            Box::new(|p| p.subject_alt_names = vec![uri("spiffe://other.org/workload/w")]),
            |e| matches!(e, SvidError::UnknownTrustDomain(_)),
        ),
        ("expired", Box::new(|p| p.not_after = time::OffsetDateTime::from_unix_timestamp(NOW - 1).unwrap()), |e| {
            matches!(e, SvidError::Chain(_))
        }),
    ];
    for (name, edit, expected) in cases {
        let err = v.verify(&craft(&f, edit), NOW, &none).expect_err(name);
        assert!(expected(&err), "{name}: {err:?}");
    }
}

#[test]
fn trust_domains_do_not_cross() {
    let a = fixture("a.example");
    let b = fixture("b.example");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let verified = VerifiedCsr::from_pem(&csr(&key, vec![])).unwrap();
    // A chains to A's roots but names B: a verifier trusting both refuses it, because B's roots
    // are the only ones consulted for a B identity.
    let forged = craft(&a, |p| p.subject_alt_names = vec![uri("spiffe://b.example/workload/w")]);
    let both = SvidVerifier::default()
        .with_domain(a.domain.clone(), &[a.ca.root_der().clone()])
        .unwrap()
        .with_domain(b.domain.clone(), &[b.ca.root_der().clone()])
        .unwrap();
    let err = both.verify(&forged, NOW, &RevocationList::default()).unwrap_err();
    assert!(matches!(err, SvidError::Chain(_)), "{err:?}");
    // Still refused once A's intermediate is known from a genuine A chain.
    let genuine = a.ca.issue_for_csr(&id("spiffe://a.example/workload/w"), &verified, None, NOW).unwrap();
    assert!(both.verify(&chain(&genuine), NOW, &RevocationList::default()).is_ok());
    let err = both.verify(&forged, NOW, &RevocationList::default()).unwrap_err();
    assert!(matches!(err, SvidError::Chain(_)), "{err:?}");
    // An impostor intermediate (same name, another key) is not taken for the known one.
    let impostor = fixture("a.example");
    let fake = craft(&impostor, |p| p.subject_alt_names = vec![uri("spiffe://a.example/workload/w")]);
    assert!(matches!(both.verify(&fake, NOW, &RevocationList::default()), Err(SvidError::Chain(_))));
    let good = b.ca.issue_for_csr(&id("spiffe://b.example/workload/w"), &verified, None, NOW).unwrap();
    assert!(both.verify(&chain(&good), NOW, &RevocationList::default()).is_ok());
    // The CA refuses to issue outside its domain only through the caller's parse; make sure a
    // verifier trusting only A refuses B's genuine SVID.
    let only_a = verifier(&a);
    assert!(matches!(
        only_a.verify(&chain(&good), NOW, &RevocationList::default()),
        Err(SvidError::UnknownTrustDomain(_))
    ));
}

#[test]
fn lifetimes_are_bounded() {
    let f = fixture("example.org");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let verified = VerifiedCsr::from_pem(&csr(&key, vec![])).unwrap();
    let w = id("spiffe://example.org/workload/api");
    assert!(f.ca.issue_for_csr(&w, &verified, Some(24 * 3600), NOW).is_ok());
    assert!(matches!(f.ca.issue_for_csr(&w, &verified, Some(24 * 3600 + 1), NOW), Err(CaError::Lifetime { .. })));
    assert!(matches!(f.ca.issue_for_csr(&w, &verified, Some(0), NOW), Err(CaError::Lifetime { .. })));
    // Past the intermediate's end.
    assert!(matches!(
        f.ca.issue_for_csr(&w, &verified, Some(3600), NOW + 2 * 365 * 86_400),
        Err(CaError::IntermediateExpiresSooner)
    ));
}

#[test]
fn csrs_are_checked() {
    let f = fixture("example.org");
    let w = id("spiffe://example.org/workload/api");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    // Asking for exactly the identity is fine; anything else is a mismatch.
    let same = VerifiedCsr::from_pem(&csr(&key, vec![uri("spiffe://example.org/workload/api")])).unwrap();
    assert!(f.ca.issue_for_csr(&w, &same, None, NOW).is_ok());
    let other = VerifiedCsr::from_pem(&csr(&key, vec![uri("spiffe://example.org/workload/admin")])).unwrap();
    assert!(matches!(f.ca.issue_for_csr(&w, &other, None, NOW), Err(CaError::Csr(CsrError::Mismatch { .. }))));
    let dns = VerifiedCsr::from_pem(&csr(&key, vec![SanType::DnsName("evil.example".try_into().unwrap())])).unwrap();
    assert!(matches!(f.ca.issue_for_csr(&w, &dns, None, NOW), Err(CaError::Csr(CsrError::Mismatch { .. }))));

    // P-384 and Ed25519 keys are accepted.
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let key = KeyPair::generate_for(alg).unwrap();
        let verified = VerifiedCsr::from_pem(&csr(&key, vec![])).unwrap();
        let issued = f.ca.issue_for_csr(&w, &verified, None, NOW).unwrap();
        assert!(verifier(&f).verify(&chain(&issued), NOW, &RevocationList::default()).is_ok());
    }

    // A tampered signature, garbage, trailing bytes.
    let good = CertificateDer::from_pem_slice(&csr(&key, vec![])).ok();
    let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(&csr(&key, vec![])).unwrap();
    let mut tampered = der.as_ref().to_vec();
    let last = tampered.len() - 3;
    tampered[last] ^= 0x01;
    assert!(matches!(VerifiedCsr::from_der(&tampered), Err(CsrError::BadSignature | CsrError::Malformed(_))));
    assert_eq!(VerifiedCsr::from_pem(b"hello"), Err(CsrError::NotPem));
    assert!(matches!(VerifiedCsr::from_der(b"\x30\x03\x02\x01\x00"), Err(CsrError::Malformed(_))));
    let mut trailing = der.as_ref().to_vec();
    trailing.push(0);
    assert!(matches!(VerifiedCsr::from_der(&trailing), Err(CsrError::Malformed(_))));
    assert!(good.is_none(), "a CSR is not a certificate");
}

#[test]
fn csrs_from_openssl() {
    let dir = tempdir("csr");
    let req = |args: &[&str]| {
        let (ok, out) = openssl(&dir, args);
        assert!(ok, "{out}");
        std::fs::read(dir.join("req.pem")).unwrap()
    };
    // openssl's P-256 CSR with the SPIFFE ID: accepted.
    let p256 = req(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "key.pem",
        "-subj",
        "/O=device",
        "-addext",
        "subjectAltName=URI:spiffe://example.org/device/d1",
        "-out",
        "req.pem",
    ]);
    let verified = VerifiedCsr::from_pem(&p256).unwrap();
    assert_eq!(verified.requested_names, vec!["uri:spiffe://example.org/device/d1".to_owned()]);
    // RSA: refused by key type.
    let rsa = req(&[
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-subj", "/O=x", "-out", "req.pem",
    ]);
    assert_eq!(VerifiedCsr::from_pem(&rsa), Err(CsrError::WrongKeyType("RSA".into())));
    // P-521: refused by curve.
    let p521 = req(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-521",
        "-nodes",
        "-keyout",
        "key.pem",
        "-subj",
        "/O=x",
        "-out",
        "req.pem",
    ]);
    assert!(matches!(VerifiedCsr::from_pem(&p521), Err(CsrError::WrongKeyType(_))));
    // P-256 signed with SHA-384: algorithm does not match the key type's profile.
    let mismatched = req(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-sha384",
        "-nodes",
        "-keyout",
        "key.pem",
        "-subj",
        "/O=x",
        "-out",
        "req.pem",
    ]);
    assert!(matches!(VerifiedCsr::from_pem(&mismatched), Err(CsrError::AlgorithmMismatch(..))));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn spiffe_bundle_carries_the_root() {
    let f = fixture("example.org");
    let bundle = zerogate_pki::bundle::spiffe_bundle(&[f.ca.root_der().as_ref()], 1, 300).unwrap();
    let key = &bundle["keys"][0];
    assert_eq!(key["use"], "x509-svid");
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    use base64::Engine;
    let x5c = base64::engine::general_purpose::STANDARD.decode(key["x5c"][0].as_str().unwrap()).unwrap();
    assert_eq!(x5c, f.ca.root_der().as_ref());
    assert_eq!(bundle["spiffe_refresh_hint"], 300);
}

#[test]
fn ca_material_must_match() {
    let a = fixture("example.org");
    let b = fixture("example.org");
    let mixed = CaMaterial { intermediate_key_pem: b.material.intermediate_key_pem.clone(), ..a.material.clone() };
    assert!(matches!(Authority::load(a.domain.clone(), &mixed, Lifetimes::default()), Err(CaError::Material(_))));
    let garbage = CaMaterial { intermediate_cert_pem: "nope".into(), ..a.material.clone() };
    assert!(matches!(Authority::load(a.domain.clone(), &garbage, Lifetimes::default()), Err(CaError::Material(_))));
    assert!(!format!("{:?}", a.material).contains("PRIVATE"));
}
