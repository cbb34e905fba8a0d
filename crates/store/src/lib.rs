//! zerogate's persistent state: enrollment tokens, issued certificates, revocations and the
//! record of every identity operation (granted or refused). It sits behind the [`Store`] trait so
//! that the embedded SQLite implementation here and a PostgreSQL one (for many gateways sharing
//! state) are interchangeable; no SQL leaves this crate. Keys never go here: the CA's keys are
//! files with owner-only permissions in the data directory.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

mod sqlite;

pub use sqlite::SqliteStore;
use zerogate_pki::{RevocationList, Serial, TokenRecord};

/// A failure of the store itself (not a refusal).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("store: {0}")]
    Database(String),
    /// The token was redeemed by another request first.
    #[error("the token was already used")]
    TokenAlreadyUsed,
    /// The token does not exist.
    #[error("the token is not known")]
    UnknownToken,
    /// A stored row does not hold what it should.
    #[error("store: corrupt row: {0}")]
    Corrupt(String),
}

/// How a certificate came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuedVia {
    /// `zerogate enroll` with a one-time token.
    Enroll,
    /// Renewal with the current certificate.
    Renew,
    /// `zerogate ca issue` by an operator.
    Operator,
}

impl IssuedVia {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enroll => "enroll",
            Self::Renew => "renew",
            Self::Operator => "operator",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "enroll" => Self::Enroll,
            "renew" => Self::Renew,
            "operator" => Self::Operator,
            _ => return None,
        })
    }
}

/// A certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    /// Serial.
    pub serial: Serial,
    /// The SPIFFE ID it carries.
    pub spiffe_id: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// How it was issued.
    pub via: IssuedVia,
    /// The serial of the certificate it renews, for renewals.
    pub renews: Option<Serial>,
    /// Key type name.
    pub key_type: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// Why, if given.
    pub revocation_reason: Option<String>,
}

/// One identity operation, granted or refused: the audit trail of the identity authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unix seconds.
    pub at: i64,
    /// `enroll`, `renew`, `issue`, `revoke`, `token.create`, …
    pub action: String,
    /// Whom it concerns: a SPIFFE ID, a serial or a token id (never a secret).
    pub subject: String,
    /// `granted` or `refused`.
    pub outcome: String,
    /// The reason or the result (serial issued, error).
    pub detail: String,
    /// Where the request came from, if over the network.
    pub peer: Option<String>,
}

/// An access key for AWS Signature Version 4 clients. The secret is what the client signs with;
/// the store file is owner-only, and the secret never leaves it except to the one who creates it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKeyRecord {
    /// The access key id (`AKZG…`): the stable credential id.
    pub id: String,
    /// The secret access key.
    pub secret: String,
    /// The API client it belongs to (the Cedar `ApiClient` id).
    pub client: String,
    /// Unix seconds.
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for AccessKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyRecord")
            .field("id", &self.id)
            .field("secret", &"<secret>")
            .field("client", &self.client)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

/// What a revocation of access names: one credential, or a principal with all its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedKind {
    /// A credential id as the audit log names it (`jti:…`, `sid:…`, `sub:…@…`, `serial:…`, `akid:…`).
    Credential,
    /// A principal as a Cedar uid (`Zerogate::User::"alice"`).
    Principal,
}

impl RevokedKind {
    /// The name kept in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Credential => "credential",
            Self::Principal => "principal",
        }
    }
}

/// A credential or principal whose access was revoked (beyond certificates and access keys:
/// OIDC tokens and users, say), refused by gateways from their next request on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedAccess {
    /// What `id` names.
    pub kind: RevokedKind,
    /// The credential id or principal uid.
    pub id: String,
    /// Unix seconds.
    pub revoked_at: i64,
    /// Why.
    pub reason: String,
}

/// Revocations as the CRL needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// For gateways: revoked serials and identities.
    pub list: RevocationList,
    /// For the CRL: each revoked serial and when.
    pub revoked_serials: Vec<(Serial, i64)>,
}

/// The state of the identity authority.
pub trait Store: Send + Sync {
    /// Saves a new token.
    fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// A token by id.
    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Marks the token used at `now` and records `cert`, in one transaction; fails with
    /// [`StoreError::TokenAlreadyUsed`] (and records nothing) if the token was used meanwhile.
    fn redeem_token(&self, id: &str, now: i64, cert: &CertRecord) -> Result<(), StoreError>;
    /// Records a certificate.
    fn insert_certificate(&self, cert: &CertRecord) -> Result<(), StoreError>;
    /// A certificate by serial.
    fn certificate(&self, serial: &Serial) -> Result<Option<CertRecord>, StoreError>;
    /// All certificates, newest first.
    fn certificates(&self) -> Result<Vec<CertRecord>, StoreError>;
    /// Revokes one certificate; `false` if no certificate has this serial.
    fn revoke_serial(&self, serial: &Serial, now: i64, reason: &str) -> Result<bool, StoreError>;
    /// Revokes an identity: all its certificates now, and any renewal later. Returns how many
    /// certificates were revoked.
    fn revoke_identity(&self, spiffe_id: &str, now: i64, reason: &str) -> Result<usize, StoreError>;
    /// Everything revoked.
    fn revocations(&self) -> Result<Revocations, StoreError>;
    /// The next CRL number (monotonic).
    fn next_crl_number(&self) -> Result<u64, StoreError>;
    /// Saves a new access key.
    fn insert_access_key(&self, key: &AccessKeyRecord) -> Result<(), StoreError>;
    /// Every access key, revoked ones included.
    fn access_keys(&self) -> Result<Vec<AccessKeyRecord>, StoreError>;
    /// Revokes an access key; `false` if no live key has this id.
    fn revoke_access_key(&self, id: &str, now: i64) -> Result<bool, StoreError>;
    /// Revokes a credential or principal; `false` if it was already revoked.
    fn revoke_access(&self, kind: RevokedKind, id: &str, now: i64, reason: &str) -> Result<bool, StoreError>;
    /// Every revoked credential and principal, oldest first.
    fn revoked_access(&self) -> Result<Vec<RevokedAccess>, StoreError>;
    /// Appends an identity event.
    fn record_event(&self, event: &Event) -> Result<(), StoreError>;
    /// The latest `limit` events, oldest first.
    fn events(&self, limit: usize) -> Result<Vec<Event>, StoreError>;
}
