//! The issuing path without network: a CSR parsed and its signature checked, then an
//! ECDSA P-256 X.509-SVID signed; and a peer chain verified as a gateway does it.
//! Run: `cargo bench -p zerogate-pki --bench issue`.

use criterion::{Criterion, criterion_main};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use zerogate_pki::{Authority, Lifetimes, RevocationList, SpiffeId, SvidVerifier, TrustDomain, VerifiedCsr};

const NOW: i64 = 1_800_000_000;

fn bench(c: &mut Criterion) {
    let domain = TrustDomain::parse("example.org").unwrap();
    let new = Authority::init(&domain, NOW - 60).unwrap();
    let ca = Authority::load(domain.clone(), &new.material, Lifetimes::default()).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
    let id = SpiffeId::parse("spiffe://example.org/workload/api").unwrap();

    c.bench_function("issue: verify CSR + sign P-256 SVID", |b| {
        b.iter(|| {
            let verified = VerifiedCsr::from_pem(csr.as_bytes()).unwrap();
            ca.issue_for_csr(&id, &verified, None, NOW).unwrap()
        })
    });

    let issued = ca.issue_for_csr(&id, &VerifiedCsr::from_pem(csr.as_bytes()).unwrap(), None, NOW).unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
    let verifier = SvidVerifier::default().with_domain(domain, &[ca.root_der().clone()]).unwrap();
    let revoked = RevocationList::default();
    c.bench_function("verify peer chain (leaf + intermediate) to SPIFFE ID", |b| {
        b.iter(|| verifier.verify(&chain, NOW, &revoked).unwrap())
    });
}

mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
