//! Every method ends in the same `Authenticated` shape, and revocation is keyed on stable ids.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rcgen::KeyPair;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use zerogate_authn::identity::{Authenticated, Method, PrincipalKind, Revocations, cedar_string};
use zerogate_pki::{Authority, Lifetimes, RevocationList, SpiffeId, SvidError, SvidVerifier, TrustDomain};

const NOW: i64 = 1_800_000_000;

fn authority(domain: &str) -> (Authority, TrustDomain) {
    let domain = TrustDomain::parse(domain).unwrap();
    let new = Authority::init(&domain, NOW - 3600).unwrap();
    (Authority::load(domain.clone(), &new.material, Lifetimes::default()).unwrap(), domain)
}

fn issue(ca: &Authority, id: &str) -> (Vec<CertificateDer<'static>>, String) {
    let key = KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap();
    let csr = zerogate_pki::VerifiedCsr::from_der(csr.der()).unwrap();
    let issued = ca.issue_for_csr(&SpiffeId::parse(id).unwrap(), &csr, None, NOW).unwrap();
    let chain = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
    (chain, issued.serial.to_string())
}

#[test]
fn a_certificate_becomes_a_device_or_workload_principal_keyed_by_serial() {
    let (ca, domain) = authority("corp.example");
    let verifier = SvidVerifier::default().with_domain(domain, &[ca.root_der().clone()]).unwrap();
    let (laptop, laptop_serial) = issue(&ca, "spiffe://corp.example/device/laptop-42");
    let (billing, _) = issue(&ca, "spiffe://corp.example/workload/billing");

    let device = Authenticated::from_certificate(&verifier, &laptop, NOW, &RevocationList::default()).unwrap();
    assert_eq!(device.kind, PrincipalKind::Device);
    assert_eq!(device.method, Method::Mtls);
    assert_eq!(device.cedar_uid(), r#"Zerogate::Device::"spiffe://corp.example/device/laptop-42""#);
    assert_eq!(device.credential_id, format!("serial:{laptop_serial}"));
    let workload = Authenticated::from_certificate(&verifier, &billing, NOW, &RevocationList::default()).unwrap();
    assert_eq!(workload.kind, PrincipalKind::Workload);

    // Revoked at the CA (serial or identity): refused by verification itself.
    let mut revoked = RevocationList::default();
    revoked.serials.insert(zerogate_pki::Serial::parse(&laptop_serial).unwrap());
    assert_eq!(Authenticated::from_certificate(&verifier, &laptop, NOW, &revoked).unwrap_err(), SvidError::Revoked);
    let mut by_identity = RevocationList::default();
    by_identity.identities.insert("spiffe://corp.example/workload/billing".into());
    assert_eq!(
        Authenticated::from_certificate(&verifier, &billing, NOW, &by_identity).unwrap_err(),
        SvidError::Revoked
    );

    // Revoked at the gateway by credential id or by principal.
    let mut gateway = Revocations::default();
    assert!(!gateway.is_revoked(&device));
    gateway.credentials.insert(device.credential_id.clone());
    assert!(gateway.is_revoked(&device));
    assert!(!gateway.is_revoked(&workload));
    gateway.principals.insert(workload.cedar_uid());
    assert!(gateway.is_revoked(&workload));

    // A certificate of another CA is not a principal here.
    let (other, _) = authority("corp.example");
    let (foreign, _) = issue(&other, "spiffe://corp.example/device/laptop-42");
    assert!(matches!(
        Authenticated::from_certificate(&verifier, &foreign, NOW, &RevocationList::default()),
        Err(SvidError::Chain(_))
    ));
}

#[test]
fn an_access_key_is_an_api_client_and_ids_are_escaped_for_cedar() {
    let client = Authenticated::from_access_key("AKZG0001", "ci-deployer");
    assert_eq!(client.cedar_uid(), r#"Zerogate::ApiClient::"ci-deployer""#);
    assert_eq!(client.credential_id, "akid:AKZG0001");
    // An id cannot close the quote and inject Cedar syntax.
    assert_eq!(cedar_string("a\"b\\c\nd"), r#""a\"b\\c\u{a}d""#);
}
