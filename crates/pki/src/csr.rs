//! Certificate signing requests from devices and workloads: parsed strictly, their signature
//! checked (proof that the requester holds the key), and their key type held to the allowed set.

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ECDSA_WITH_SHA256,
    OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;

use crate::spiffe::SpiffeId;

/// The key types zerogate certifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default).
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    /// The name used in listings and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ECDSA P-256",
            Self::EcdsaP384 => "ECDSA P-384",
            Self::Ed25519 => "Ed25519",
        }
    }
}

/// Why a CSR is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Not PEM with a `CERTIFICATE REQUEST` block.
    #[error("the CSR is not PEM with a CERTIFICATE REQUEST block")]
    NotPem,
    /// The DER does not parse, or has bytes after it.
    #[error("the CSR is malformed: {0}")]
    Malformed(String),
    /// A key type outside the allowed set (RSA, other curves).
    #[error("key type {0} is not accepted; use ECDSA P-256 (the default), ECDSA P-384 or Ed25519")]
    WrongKeyType(String),
    /// The signature algorithm does not match the key (say, ECDSA-SHA384 with a P-256 key).
    #[error("signature algorithm {0} does not match the {1} key")]
    AlgorithmMismatch(String, &'static str),
    /// The signature does not verify with the CSR's own key.
    #[error("the CSR signature does not verify with its public key")]
    BadSignature,
    /// The CSR asks for names other than the identity being issued.
    #[error("the CSR asks for `{asked}`, but the identity being issued is `{identity}`")]
    Mismatch {
        /// What the CSR asked for.
        asked: String,
        /// The identity the credential allows.
        identity: String,
    },
}

/// A CSR whose signature verified: the public key to certify and what it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCsr {
    /// The SubjectPublicKeyInfo, DER.
    pub public_key: Vec<u8>,
    /// The key type.
    pub key_type: KeyType,
    /// Names in the CSR's subjectAltName request, rendered (`uri:…`, `dns:…`, …).
    pub requested_names: Vec<String>,
}

impl VerifiedCsr {
    /// Parses a PEM CSR and verifies it.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CsrError> {
        let der = CertificateSigningRequestDer::from_pem_slice(pem).map_err(|_| CsrError::NotPem)?;
        Self::from_der(der.as_ref())
    }

    /// Parses a DER CSR and verifies it.
    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::Malformed(format!("{} bytes after the request", rest.len())));
        }
        let info = &csr.certification_request_info;
        let spki = &info.subject_pki;
        let key_type = key_type(spki)?;
        let sig_oid = &csr.signature_algorithm.algorithm;
        let algorithm: &'static dyn signature::VerificationAlgorithm = match key_type {
            KeyType::EcdsaP256 if *sig_oid == OID_SIG_ECDSA_WITH_SHA256 => &signature::ECDSA_P256_SHA256_ASN1,
            KeyType::EcdsaP384 if *sig_oid == OID_SIG_ECDSA_WITH_SHA384 => &signature::ECDSA_P384_SHA384_ASN1,
            KeyType::Ed25519 if *sig_oid == OID_SIG_ED25519 => &signature::ED25519,
            _ => return Err(CsrError::AlgorithmMismatch(sig_oid.to_id_string(), key_type.name())),
        };
        check_shell(der, info.raw)?;
        UnparsedPublicKey::new(algorithm, spki.subject_public_key.data.as_ref())
            .verify(info.raw, csr.signature_value.data.as_ref())
            .map_err(|_| CsrError::BadSignature)?;
        let mut requested_names = Vec::new();
        if let Some(extensions) = csr.requested_extensions() {
            for extension in extensions {
                if let ParsedExtension::SubjectAlternativeName(san) = extension {
                    requested_names.extend(san.general_names.iter().map(render_name));
                }
            }
        }
        Ok(Self { public_key: spki.raw.to_vec(), key_type, requested_names })
    }

    /// Checks that the CSR asks for no names, or for exactly `identity`.
    pub fn check_names(&self, identity: &SpiffeId) -> Result<(), CsrError> {
        let wanted = format!("uri:{identity}");
        match self.requested_names.as_slice() {
            [] => Ok(()),
            [only] if *only == wanted => Ok(()),
            names => Err(CsrError::Mismatch { asked: names.join(", "), identity: identity.to_string() }),
        }
    }
}

/// One DER TLV read off the front of some input.
struct Tlv<'a> {
    tag: u8,
    whole: &'a [u8],
    content: &'a [u8],
    rest: &'a [u8],
}

/// Reads one DER TLV. Long lengths must be minimal, as DER says.
fn tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, header, rest) = if first < 0x80 {
        (usize::from(first), 2, rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        if bytes.first() == Some(&0) {
            return None; // leading zero: not minimal
        }
        let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        if len < 0x80 {
            return None; // should have used the short form
        }
        (len, 2 + n, rest)
    };
    let (content, rest) = rest.split_at_checked(len)?;
    let whole = input.get(..header + len)?;
    Some(Tlv { tag, whole, content, rest })
}

/// The parts of a CSR that its signature does not cover must be exact DER: `SEQUENCE { info,
/// SEQUENCE { OID }, BIT STRING (no unused bits) }`, so one request has one encoding.
fn check_shell(der: &[u8], info_raw: &[u8]) -> Result<(), CsrError> {
    let bad = || CsrError::Malformed("not DER (the request's envelope)".into());
    let outer = tlv(der).ok_or_else(bad)?;
    let info = tlv(outer.content).ok_or_else(bad)?;
    let algorithm = tlv(info.rest).ok_or_else(bad)?;
    let oid = tlv(algorithm.content).ok_or_else(bad)?;
    let signature = tlv(algorithm.rest).ok_or_else(bad)?;
    let exact = outer.tag == 0x30
        && outer.rest.is_empty()
        && info.tag == 0x30
        && info.whole == info_raw
        && algorithm.tag == 0x30
        && oid.tag == 0x06
        && oid.rest.is_empty()
        && signature.tag == 0x03
        && signature.content.first() == Some(&0)
        && signature.rest.is_empty();
    if exact { Ok(()) } else { Err(bad()) }
}

fn key_type(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<KeyType, CsrError> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(KeyType::EcdsaP256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(KeyType::EcdsaP384),
            Some(c) => Err(CsrError::WrongKeyType(format!("EC curve {}", c.to_id_string()))),
            None => Err(CsrError::WrongKeyType("EC without a named curve".into())),
        };
    }
    if *oid == OID_SIG_ED25519 {
        return Ok(KeyType::Ed25519);
    }
    if *oid == OID_PKCS1_RSAENCRYPTION {
        return Err(CsrError::WrongKeyType("RSA".into()));
    }
    Err(CsrError::WrongKeyType(oid.to_id_string()))
}

fn render_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::URI(uri) => format!("uri:{uri}"),
        GeneralName::DNSName(dns) => format!("dns:{dns}"),
        GeneralName::RFC822Name(mail) => format!("email:{mail}"),
        GeneralName::IPAddress(ip) => format!("ip:{}", crate::hex(ip)),
        other => format!("other:{other:?}"),
    }
}
