//! The JSON bodies of the control plane's identity endpoints, shared by server and client.

use serde::{Deserialize, Serialize};

/// Path of enrollment: `POST` an [`EnrollRequest`].
pub const ENROLL: &str = "/v1/identity/enroll";
/// Path of renewal: `POST` a [`RenewRequest`] over mutual TLS with the current certificate.
pub const RENEW: &str = "/v1/identity/renew";
/// The trust bundle as PEM.
pub const BUNDLE: &str = "/v1/identity/bundle.pem";
/// The trust bundle in the SPIFFE bundle format (JWKS).
pub const SPIFFE_BUNDLE: &str = "/v1/identity/bundle.spiffe";
/// The signed CRL (DER).
pub const CRL: &str = "/v1/identity/crl";
/// Revoked serials and identities (JSON), for gateways.
pub const REVOCATIONS: &str = "/v1/identity/revocations";
/// Liveness.
pub const HEALTH: &str = "/healthz";

/// Largest request body accepted; a CSR is well under 2 KiB.
pub const MAX_BODY: usize = 64 * 1024;

/// Enrollment: the token and a CSR for the key the device made.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time token.
    pub token: String,
    /// PEM CSR.
    pub csr: String,
    /// The identity the client expects; refused if the token enrolls another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret until used: never in a log line.
        f.debug_struct("EnrollRequest").field("spiffe_id", &self.spiffe_id).finish_non_exhaustive()
    }
}

/// Renewal: a CSR (usually for the same key).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// PEM CSR.
    pub csr: String,
}

/// A certificate issued.
#[derive(Debug, Serialize, Deserialize)]
pub struct IssuedResponse {
    /// The identity.
    pub spiffe_id: String,
    /// Serial (hex).
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Leaf and intermediate, PEM.
    pub chain: String,
    /// The root, PEM.
    pub bundle: String,
}

/// An error body. Generic enough to show a client.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: String,
}
