//! What every authentication method produces: an [`Authenticated`] identity (who, how, with which
//! credential), the same shape whether it came from an OIDC token, a client certificate or a
//! SigV4 signature, so that policy, revocation and audit treat them alike. Revocation is keyed
//! on stable identifiers only: the credential id (`jti`, session id, certificate serial, access
//! key id) or the principal, never a token's bytes.

use std::collections::HashSet;
use std::fmt;
use std::time::Instant;

use zerogate_pki::{RevocationList, SvidError, SvidVerifier};

use crate::jwt::VerifiedToken;

/// The Cedar entity type of a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// A person, from an OIDC token.
    User,
    /// A device, from a client certificate naming `spiffe://…/device/…`.
    Device,
    /// A workload, from a client certificate naming any other SPIFFE path.
    Workload,
    /// An API client, from a SigV4 access key.
    ApiClient,
}

impl PrincipalKind {
    /// The Cedar entity type name in zerogate's schema.
    pub fn cedar_type(self) -> &'static str {
        match self {
            Self::User => "Zerogate::User",
            Self::Device => "Zerogate::Device",
            Self::Workload => "Zerogate::Workload",
            Self::ApiClient => "Zerogate::ApiClient",
        }
    }
}

/// How the principal authenticated (the `authn` of the policy context).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// An OIDC bearer JWT.
    Oidc,
    /// A client certificate (X.509-SVID) from zerogate's CA.
    Mtls,
    /// An AWS Signature Version 4 request signature.
    SigV4,
}

impl Method {
    /// The name used in policy context and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oidc => "oidc",
            Self::Mtls => "mtls",
            Self::SigV4 => "sigv4",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticated {
    /// The principal's entity type.
    pub kind: PrincipalKind,
    /// The principal's entity id (user id, SPIFFE ID, access key owner).
    pub id: String,
    /// Groups the credential asserts (OIDC groups claim), as Cedar group ids.
    pub groups: Vec<String>,
    /// How it authenticated.
    pub method: Method,
    /// The credential's stable id, prefixed by its kind: `jti:…`, `sid:…`, `sub:…`, `serial:…`,
    /// `akid:…`. The one the audit record names.
    pub credential_id: String,
    /// Other ids that name the same credential and are revoked with it: for an OIDC token, its
    /// `sid:…` (when it has a `jti` as well) and `sub:…@issuer` (when it has a `jti` or a `sid`).
    pub also_known_as: Vec<String>,
    /// When the credential stops being valid (Unix seconds), when it has an end.
    pub expires_at: Option<i64>,
    /// OIDC `acr`.
    pub acr: Option<String>,
    /// OIDC `amr`.
    pub amr: Vec<String>,
}

impl Authenticated {
    /// The principal as a Cedar entity uid, `Zerogate::User::"alice"`, with the id escaped.
    pub fn cedar_uid(&self) -> String {
        format!("{}::{}", self.kind.cedar_type(), cedar_string(&self.id))
    }

    /// From a verified OIDC token; the user id is `sub`, or the `email` claim when
    /// `user_id_from_email` is set (and then required).
    pub fn from_token(token: &VerifiedToken, user_id_from_email: bool) -> Option<Self> {
        let id = if user_id_from_email { token.email.clone()? } else { token.subject.clone() };
        let mut also_known_as = token.credential_ids();
        let credential_id = also_known_as.remove(0);
        Some(Self {
            kind: PrincipalKind::User,
            id,
            groups: token.groups.clone(),
            method: Method::Oidc,
            credential_id,
            also_known_as,
            expires_at: Some(token.expires_at as i64),
            acr: token.acr.clone(),
            amr: token.amr.clone(),
        })
    }

    /// From a client certificate chain: verified by `verifier` at `now` (revoked serials and
    /// identities refused), the SPIFFE ID becomes a device or workload principal.
    pub fn from_certificate(
        verifier: &SvidVerifier,
        chain: &[rustls_pki_types::CertificateDer<'_>],
        now: i64,
        revoked: &RevocationList,
    ) -> Result<Self, SvidError> {
        let svid = verifier.verify(chain, now, revoked)?;
        let kind = if svid.id.kind() == "device" { PrincipalKind::Device } else { PrincipalKind::Workload };
        Ok(Self {
            kind,
            id: svid.id.to_string(),
            groups: Vec::new(),
            method: Method::Mtls,
            credential_id: format!("serial:{}", svid.serial),
            also_known_as: Vec::new(),
            expires_at: Some(svid.not_after),
            acr: None,
            amr: Vec::new(),
        })
    }

    /// From a SigV4 signature by `access_key_id`, whose owner is `client`.
    pub fn from_access_key(access_key_id: &str, client: &str) -> Self {
        Self {
            kind: PrincipalKind::ApiClient,
            id: client.to_owned(),
            groups: Vec::new(),
            method: Method::SigV4,
            credential_id: format!("akid:{access_key_id}"),
            also_known_as: Vec::new(),
            expires_at: None,
            acr: None,
            amr: Vec::new(),
        }
    }
}

/// A Cedar string literal: quoted, with `"` and `\` escaped, and control characters as `\u{…}`.
pub fn cedar_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Revoked credentials and principals, checked after authentication on every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// Credential ids as in [`Authenticated::credential_id`] and [`Authenticated::also_known_as`]
    /// (`jti:…`, `sid:…`, `sub:…@issuer`, `serial:…`, `akid:…`).
    pub credentials: HashSet<String>,
    /// Principals as Cedar uids (`Zerogate::User::"alice"`): every credential of theirs.
    pub principals: HashSet<String>,
    /// Until when these lists may be trusted. Whoever keeps them current moves it on after each
    /// read; when the reads stop (a store that fails or hangs, a refresh task that died) it
    /// passes, and from then on no credential is known not to be revoked: [`Self::is_current`]
    /// is false and every request is refused. `None` for a fixed set that never goes stale.
    pub trusted_until: Option<Instant>,
}

impl Revocations {
    /// Whether `who` may no longer be served.
    pub fn is_revoked(&self, who: &Authenticated) -> bool {
        (!self.credentials.is_empty() && self.revokes_credential(who))
            || (!self.principals.is_empty() && self.principals.contains(&who.cedar_uid()))
    }

    /// A credential id on the list: as it is named (`jti:…` from any issuer), or, for a token's
    /// `jti:…` and `sid:…`, scoped to the issuer that made it (`jti:…@https://issuer`), since
    /// those ids are unique only within one issuer.
    fn revokes_credential(&self, who: &Authenticated) -> bool {
        let ids = || std::iter::once(&who.credential_id).chain(&who.also_known_as);
        if ids().any(|id| self.credentials.contains(id)) {
            return true;
        }
        // The issuer, from the `sub:…@issuer` id every token carries.
        let issuer = ids()
            .find_map(|id| id.strip_prefix("sub:"))
            .and_then(|sub| sub.rfind("@https://").and_then(|at| sub.get(at..)));
        let Some(issuer) = issuer else { return false };
        // One buffer for both ids: this runs on every request while any credential is revoked.
        let mut scoped = String::new();
        ids().filter(|id| id.starts_with("jti:") || id.starts_with("sid:")).any(|id| {
            scoped.clear();
            scoped.push_str(id);
            scoped.push_str(issuer);
            self.credentials.contains(&scoped)
        })
    }

    /// Whether the lists may still be trusted at `now`.
    pub fn is_current(&self, now: Instant) -> bool {
        self.trusted_until.is_none_or(|until| now < until)
    }
}
