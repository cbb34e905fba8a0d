//! Verifying a peer's certificate chain as an X.509-SVID: the chain checked by rustls-webpki
//! against the roots of the trust domain that the leaf names, the SVID rules of the SPIFFE
//! specification checked on every certificate, and revocation consulted. This is the one function
//! a gateway calls to turn a TLS peer into a SPIFFE ID.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::ca::Serial;
use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

/// Why a peer certificate is not accepted as an X.509-SVID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    /// No certificate was presented.
    #[error("no certificate was presented")]
    NoCertificate,
    /// The DER does not parse.
    #[error("the certificate does not parse")]
    Malformed,
    /// No URI SAN at all (a DNS or IP name never stands in for the SPIFFE ID).
    #[error("the certificate has no URI SAN (no SPIFFE ID)")]
    NoSpiffeId,
    /// More than one URI SAN, of any scheme.
    #[error("the certificate has more than one URI SAN")]
    SeveralUris,
    /// The URI SAN is not a valid SPIFFE ID with a path.
    #[error("the URI SAN is not a valid SPIFFE ID: {0}")]
    BadSpiffeId(SpiffeIdError),
    /// A leaf must not be a CA.
    #[error("the leaf certificate is a CA")]
    LeafIsCa,
    /// A leaf must not have keyCertSign or cRLSign.
    #[error("the leaf certificate may sign certificates or CRLs")]
    LeafCanSign,
    /// Key usage absent, not critical, or without digitalSignature.
    #[error("the leaf certificate lacks a critical key usage with digitalSignature")]
    KeyUsage,
    /// An extended key usage present without both serverAuth and clientAuth.
    #[error("the extended key usage does not include both serverAuth and clientAuth")]
    ExtendedKeyUsage,
    /// A signing certificate in the chain carries a SPIFFE ID with a path.
    #[error("an intermediate certificate carries a SPIFFE ID with a path")]
    IntermediateWithPath,
    /// The leaf names a trust domain for which no bundle is configured.
    #[error("no trust bundle for trust domain `{0}`")]
    UnknownTrustDomain(String),
    /// The chain does not verify to the trust domain's roots (expired, wrong issuer, bad signature…).
    #[error("the certificate chain does not verify: {0}")]
    Chain(String),
    /// The certificate's serial or its identity is revoked.
    #[error("the certificate is revoked")]
    Revoked,
}

/// What verification establishes about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSvid {
    /// The peer's identity.
    pub id: SpiffeId,
    /// The leaf's serial: the stable key for revocation and audit.
    pub serial: Serial,
    /// When the leaf expires (Unix seconds).
    pub not_after: i64,
}

/// Revoked serials and identities, as the control plane publishes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RevocationList {
    /// Revoked certificate serials.
    pub serials: BTreeSet<Serial>,
    /// Revoked SPIFFE IDs: every certificate naming one is refused.
    pub identities: BTreeSet<String>,
}

impl RevocationList {
    /// Whether a certificate with this serial and identity is revoked.
    pub fn is_revoked(&self, serial: &Serial, id: &SpiffeId) -> bool {
        self.serials.contains(serial) || self.identities.contains(id.as_str())
    }
}

/// The signature algorithms accepted in chains.
static ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] =
    &[webpki::aws_lc_rs::ECDSA_P256_SHA256, webpki::aws_lc_rs::ECDSA_P384_SHA384, webpki::aws_lc_rs::ED25519];

/// Verifies SVID chains against the roots of each trust domain it knows.
///
/// An intermediate that once verified to a domain's root is remembered (by its SHA-256, with
/// its validity), so later chains through it cost one signature check instead of two.
#[derive(Debug, Default)]
pub struct SvidVerifier {
    bundles: BTreeMap<TrustDomain, Vec<TrustAnchor<'static>>>,
    verified_intermediates: RwLock<HashMap<[u8; 32], KnownIntermediate>>,
}

/// An intermediate that verified to the roots of `domain`.
#[derive(Debug, Clone)]
struct KnownIntermediate {
    domain: TrustDomain,
    anchor: TrustAnchor<'static>,
    not_before: i64,
    not_after: i64,
}

/// Remembered intermediates at most; a deployment has a handful.
const KNOWN_INTERMEDIATES: usize = 64;

impl SvidVerifier {
    /// A verifier that trusts `roots` for `domain` (call again to add domains).
    pub fn with_domain(mut self, domain: TrustDomain, roots: &[CertificateDer<'_>]) -> Result<Self, SvidError> {
        let anchors = roots
            .iter()
            .map(|root| webpki::anchor_from_trusted_cert(root).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SvidError::Chain(format!("root certificate: {e}")))?;
        self.bundles.entry(domain).or_default().extend(anchors);
        Ok(self)
    }

    /// Verifies a peer's chain (leaf first) at `now` (Unix seconds) for client authentication,
    /// and consults `revoked`.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now: i64,
        revoked: &RevocationList,
    ) -> Result<VerifiedSvid, SvidError> {
        let (leaf, intermediates) = chain.split_first().ok_or(SvidError::NoCertificate)?;
        let (id, serial, not_after) = check_leaf(leaf)?;
        for intermediate in intermediates {
            check_signing_cert(intermediate)?;
        }
        let end_entity = webpki::EndEntityCert::try_from(leaf).map_err(|e| SvidError::Chain(e.to_string()))?;
        let time = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now).unwrap_or(0)));
        let verify = |anchors: &[TrustAnchor<'_>], intermediates: &[CertificateDer<'_>]| {
            end_entity
                .verify_for_usage(ALGORITHMS, anchors, intermediates, time, webpki::KeyUsage::client_auth(), None, None)
                .map(|_| ())
                .map_err(|e| SvidError::Chain(format!("{e:?}")))
        };
        let domain = id.trust_domain();
        let known = match intermediates {
            [one] => {
                let digest = crate::ca::fingerprint(one);
                let cached = self.verified_intermediates.read().ok().and_then(|m| m.get(&digest).cloned());
                Some((digest, cached))
            }
            _ => None,
        };
        match known {
            Some((_, Some(k))) if k.domain == domain && (k.not_before..=k.not_after).contains(&now) => {
                verify(std::slice::from_ref(&k.anchor), &[])?;
            }
            _ => {
                let anchors = self
                    .bundles
                    .get(&domain)
                    .ok_or_else(|| SvidError::UnknownTrustDomain(id.trust_domain_str().to_owned()))?;
                verify(anchors, intermediates)?;
                if let (Some((digest, None)), [one]) = (known, intermediates) {
                    self.remember(digest, domain, one);
                }
            }
        }
        if revoked.is_revoked(&serial, &id) {
            return Err(SvidError::Revoked);
        }
        Ok(VerifiedSvid { id, serial, not_after })
    }
}

impl SvidVerifier {
    fn remember(&self, digest: [u8; 32], domain: TrustDomain, intermediate: &CertificateDer<'_>) {
        let Some((not_before, not_after)) = crate::ca::validity(intermediate) else { return };
        let Ok(anchor) = webpki::anchor_from_trusted_cert(intermediate) else { return };
        if let Ok(mut known) = self.verified_intermediates.write() {
            if known.len() >= KNOWN_INTERMEDIATES {
                known.clear();
            }
            known.insert(digest, KnownIntermediate { domain, anchor: anchor.to_owned(), not_before, not_after });
        }
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, SvidError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        _ => Err(SvidError::Malformed),
    }
}

fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, SvidError> {
    let san = cert.subject_alternative_name().map_err(|_| SvidError::Malformed)?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Checks the X.509-SVID rules for a leaf (SPIFFE X509-SVID §4 and §5) and returns its SPIFFE
/// ID, serial and expiry. The chain is *not* verified here: use [`SvidVerifier::verify`].
pub fn check_leaf(der: &[u8]) -> Result<(SpiffeId, Serial, i64), SvidError> {
    let cert = parse(der)?;
    let id = match uri_sans(&cert)?.as_slice() {
        [] => return Err(SvidError::NoSpiffeId),
        [uri] => SpiffeId::parse(uri).map_err(SvidError::BadSpiffeId)?,
        _ => return Err(SvidError::SeveralUris),
    };
    if cert.is_ca() {
        return Err(SvidError::LeafIsCa);
    }
    match cert.key_usage().map_err(|_| SvidError::Malformed)? {
        Some(ku) if ku.critical && ku.value.digital_signature() => {
            if ku.value.key_cert_sign() || ku.value.crl_sign() {
                return Err(SvidError::LeafCanSign);
            }
        }
        _ => return Err(SvidError::KeyUsage),
    }
    if let Some(eku) = cert.extended_key_usage().map_err(|_| SvidError::Malformed)?
        && !(eku.value.server_auth && eku.value.client_auth)
    {
        return Err(SvidError::ExtendedKeyUsage);
    }
    let serial = Serial::from_bytes(cert.raw_serial());
    Ok((id, serial, cert.validity().not_after.timestamp()))
}

/// A signing certificate may carry a SPIFFE ID, but only a trust domain's (no path).
fn check_signing_cert(der: &[u8]) -> Result<(), SvidError> {
    let cert = parse(der)?;
    for uri in uri_sans(&cert)? {
        if let Some(rest) = uri.strip_prefix("spiffe://")
            && rest.contains('/')
        {
            return Err(SvidError::IntermediateWithPath);
        }
    }
    Ok(())
}
