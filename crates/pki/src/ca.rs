//! The certificate authority: a root that signs one intermediate, and the intermediate that
//! signs X.509-SVIDs. The issuance policy (lifetimes, key usages, names) is written here once.

use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;

use crate::csr::{CsrError, VerifiedCsr};
use crate::spiffe::{SpiffeId, TrustDomain};

/// How long certificates live. Defaults: workloads 1 hour, devices 24 hours, at most 24 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// For identities whose path does not start with `/device/`.
    pub workload: u64,
    /// For `spiffe://…/device/…` identities.
    pub device: u64,
    /// No certificate lives longer, whatever is asked.
    pub max: u64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self { workload: 3600, device: 24 * 3600, max: 24 * 3600 }
    }
}

impl Lifetimes {
    /// The lifetime for `id` when none is asked for.
    pub fn default_for(&self, id: &SpiffeId) -> u64 {
        if id.kind() == "device" { self.device } else { self.workload }
    }
}

/// Root certificates live ten years; the intermediate two (rotation of the intermediate is a
/// later command).
const ROOT_LIFETIME: i64 = 10 * 365 * 86_400;
const INTERMEDIATE_LIFETIME: i64 = 2 * 365 * 86_400;
/// Leaf certificates start a little in the past, so a verifier whose clock is slightly behind
/// accepts them at once.
const BACKDATE: i64 = 30;

/// Why the authority refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CSR is not acceptable.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The requested lifetime is zero or above the configured maximum.
    #[error("lifetime of {asked} s is not allowed (1 s to {max} s)")]
    Lifetime {
        /// Asked for.
        asked: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The intermediate expires before the certificate would.
    #[error("the intermediate CA expires before the requested lifetime ends; rotate the intermediate")]
    IntermediateExpiresSooner,
    /// The stored CA material does not load.
    #[error("CA material is invalid: {0}")]
    Material(String),
    /// Certificate generation failed (a bug or an exhausted random source).
    #[error("certificate generation failed: {0}")]
    Generation(String),
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        Self::Generation(e.to_string())
    }
}

/// A certificate serial number: 16 random bytes, positive, written as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Serial(String);

impl Serial {
    /// A fresh random serial.
    pub fn random() -> Result<Self, CaError> {
        let mut bytes = [0u8; 16];
        SystemRandom::new().fill(&mut bytes).map_err(|_| CaError::Generation("no randomness".into()))?;
        // Positive and of fixed length: top bit clear, top byte non-zero.
        bytes[0] = (bytes[0] & 0x7f) | 0x10;
        Ok(Self(crate::hex(&bytes)))
    }

    /// Parses a serial as written by `zerogate ca list` (hex, `:` separators allowed).
    pub fn parse(text: &str) -> Option<Self> {
        let hex: String = text.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
        let hex = hex.trim_start_matches('0');
        (!hex.is_empty() && hex.len() <= 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(if !hex.len().is_multiple_of(2) { format!("0{hex}") } else { hex.to_owned() }))
    }

    /// From the raw bytes of a certificate's serial field.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        Self(crate::hex(bytes.get(start..).unwrap_or_default()))
    }

    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::unhex(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The PEM files of a CA, as stored in the data directory (keys as PKCS#8).
#[derive(Clone)]
pub struct CaMaterial {
    /// The root certificate.
    pub root_cert_pem: String,
    /// The intermediate certificate.
    pub intermediate_cert_pem: String,
    /// The intermediate's key.
    pub intermediate_key_pem: String,
}

impl fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaMaterial").field("intermediate_key_pem", &"<secret>").finish_non_exhaustive()
    }
}

/// A freshly initialised CA: its material and the root key, which the caller stores or exports.
pub struct NewCa {
    /// What the authority loads from.
    pub material: CaMaterial,
    /// The root key (PKCS#8 PEM). Needed only to sign a new intermediate.
    pub root_key_pem: String,
}

/// A certificate just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Its serial.
    pub serial: Serial,
    /// The identity it carries.
    pub spiffe_id: SpiffeId,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The leaf, DER.
    pub der: Vec<u8>,
    /// The leaf then the intermediate, PEM: what the holder presents.
    pub chain_pem: String,
}

/// The issuing authority of one trust domain.
pub struct Authority {
    trust_domain: TrustDomain,
    root_der: CertificateDer<'static>,
    intermediate_der: CertificateDer<'static>,
    intermediate_not_after: i64,
    issuer: Issuer<'static, KeyPair>,
    lifetimes: Lifetimes,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority").field("trust_domain", &self.trust_domain).finish_non_exhaustive()
    }
}

fn at(unix: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| CaError::Generation(e.to_string()))
}

fn ca_params(
    name: String,
    domain: &TrustDomain,
    path_len: u8,
    from: i64,
    to: i64,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "zerogate");
    dn.push(DnType::OrganizationalUnitName, domain.as_str());
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(SerialNumber::from_slice(&Serial::random()?.to_bytes()));
    params.not_before = at(from)?;
    params.not_after = at(to)?;
    params.use_authority_key_identifier_extension = path_len == 0;
    // No URI name constraints: common verifiers (rustls-webpki among them) reject them.
    Ok(params)
}

impl Authority {
    /// Creates a root and an intermediate for `domain` (ECDSA P-256).
    pub fn init(domain: &TrustDomain, now: i64) -> Result<NewCa, CaError> {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let root_params =
            ca_params(format!("zerogate root CA {domain}"), domain, 1, now - BACKDATE, now + ROOT_LIFETIME)?;
        let root_cert = root_params.self_signed(&root_key)?;
        let root_issuer = Issuer::new(root_params, &root_key);
        let intermediate_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let intermediate_params = ca_params(
            format!("zerogate intermediate CA {domain}"),
            domain,
            0,
            now - BACKDATE,
            now + INTERMEDIATE_LIFETIME,
        )?;
        let intermediate_cert = intermediate_params.signed_by(&intermediate_key, &root_issuer)?;
        Ok(NewCa {
            material: CaMaterial {
                root_cert_pem: root_cert.pem(),
                intermediate_cert_pem: intermediate_cert.pem(),
                intermediate_key_pem: intermediate_key.serialize_pem(),
            },
            root_key_pem: root_key.serialize_pem(),
        })
    }

    /// Loads an authority from its stored material.
    pub fn load(domain: TrustDomain, material: &CaMaterial, lifetimes: Lifetimes) -> Result<Self, CaError> {
        let bad = |what: &str| CaError::Material(what.to_owned());
        let root_der = CertificateDer::from_pem_slice(material.root_cert_pem.as_bytes())
            .map_err(|_| bad("the root certificate is not PEM"))?;
        let intermediate_der = CertificateDer::from_pem_slice(material.intermediate_cert_pem.as_bytes())
            .map_err(|_| bad("the intermediate certificate is not PEM"))?;
        let key =
            KeyPair::from_pem(&material.intermediate_key_pem).map_err(|_| bad("the intermediate key is not PEM"))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&intermediate_der)
            .map_err(|_| bad("the intermediate certificate does not parse"))?;
        if parsed.public_key().raw != key.subject_public_key_info() {
            return Err(bad("the intermediate key does not match the intermediate certificate"));
        }
        let intermediate_not_after = parsed.validity().not_after.timestamp();
        let issuer = Issuer::from_ca_cert_der(&intermediate_der, key)
            .map_err(|e| CaError::Material(format!("the intermediate certificate: {e}")))?;
        Ok(Self { trust_domain: domain, root_der, intermediate_der, intermediate_not_after, issuer, lifetimes })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The lifetimes in force.
    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> &CertificateDer<'static> {
        &self.root_der
    }

    /// The intermediate certificate, DER.
    pub fn intermediate_der(&self) -> &CertificateDer<'static> {
        &self.intermediate_der
    }

    /// SHA-256 of the root certificate: what an enrolling client pins.
    pub fn root_fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.root_der)
    }

    /// Issues an X.509-SVID for `id` to the key of a verified CSR.
    pub fn issue_for_csr(
        &self,
        id: &SpiffeId,
        csr: &VerifiedCsr,
        ttl: Option<u64>,
        now: i64,
    ) -> Result<Issued, CaError> {
        csr.check_names(id)?;
        self.issue(id, &csr.public_key, &[], ttl, now)
    }

    /// Issues an X.509-SVID for `id` to `public_key` (SubjectPublicKeyInfo DER), with DNS or IP
    /// names added for a server (`extra_names`; workloads and devices get none).
    pub fn issue(
        &self,
        id: &SpiffeId,
        public_key: &[u8],
        extra_names: &[String],
        ttl: Option<u64>,
        now: i64,
    ) -> Result<Issued, CaError> {
        let ttl = ttl.unwrap_or_else(|| self.lifetimes.default_for(id));
        if ttl == 0 || ttl > self.lifetimes.max {
            return Err(CaError::Lifetime { asked: ttl, max: self.lifetimes.max });
        }
        let not_before = now - BACKDATE;
        let not_after = now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
        if not_after > self.intermediate_not_after {
            return Err(CaError::IntermediateExpiresSooner);
        }
        let key = SubjectPublicKeyInfo::from_der(public_key).map_err(|e| CaError::Generation(e.to_string()))?;
        let serial = Serial::random()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "zerogate");
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from_slice(&serial.to_bytes()));
        params.not_before = at(not_before)?;
        params.not_after = at(not_after)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let uri = id.as_str().try_into().map_err(|e: rcgen::Error| CaError::Generation(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        for name in extra_names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.as_str().try_into()?),
            });
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        let intermediate_pem = pem_block("CERTIFICATE", &self.intermediate_der);
        Ok(Issued {
            serial,
            spiffe_id: id.clone(),
            not_before,
            not_after,
            chain_pem: format!("{}{intermediate_pem}", cert.pem()),
            der: cert.der().to_vec(),
        })
    }

    /// Signs a CRL listing `revoked` (serial, revocation time), valid from `now` to `next_update`.
    pub fn crl(&self, revoked: &[(Serial, i64)], number: u64, now: i64, next_update: i64) -> Result<Vec<u8>, CaError> {
        let revoked_certs = revoked
            .iter()
            .map(|(serial, when)| {
                Ok(rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial.to_bytes()),
                    revocation_time: at(*when)?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, CaError>>()?;
        let params = rcgen::CertificateRevocationListParams {
            this_update: at(now)?,
            next_update: at(next_update)?,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }
}

/// SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, der).as_ref());
    out
}

/// A PEM block with 64-column base64 lines.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The validity period of a DER certificate, (not before, not after) in Unix seconds.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp()))
}
