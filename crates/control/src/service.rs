//! The identity service: enrollment with a one-time token, renewal with the current certificate,
//! direct issuance, tokens and revocation, over a [`Store`]. Every attempt, granted or refused,
//! becomes an event in the store; a refusal carries a message that is safe to show the client.
//! No IO besides the store, and `now` is always given.

use rustls_pki_types::CertificateDer;
use zerogate_pki::{
    Authority, CaError, Issued, RevocationList, Serial, SpiffeId, SvidVerifier, TokenError, VerifiedCsr, VerifiedSvid,
};
use zerogate_store::{CertRecord, Event, IssuedVia, RevokedAccess, RevokedKind, Store, StoreError};

/// Why a request was refused. The message is the client's; details go to the event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request is malformed (CSR, JSON, identity syntax): 400.
    #[error("{0}")]
    BadRequest(String),
    /// The credential is missing or not valid (token, certificate): 401.
    #[error("{0}")]
    Unauthorized(String),
    /// The credential is valid but does not allow this: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The service failed: 500 (and nothing was issued).
    #[error("internal error")]
    Internal,
}

impl Refusal {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::Internal => 500,
        }
    }
}

impl From<CaError> for Refusal {
    fn from(e: CaError) -> Self {
        match e {
            CaError::Csr(e) => Self::BadRequest(e.to_string()),
            CaError::Lifetime { .. } => Self::BadRequest(e.to_string()),
            CaError::IntermediateExpiresSooner | CaError::Material(_) | CaError::Generation(_) => Self::Internal,
        }
    }
}

fn internal(e: StoreError) -> Refusal {
    tracing::error!(error = %e, "store failure");
    Refusal::Internal
}

/// The identity authority with its state.
pub struct IdentityService<S> {
    authority: Authority,
    store: S,
    verifier: SvidVerifier,
    audit: Option<zerogate_audit::AuditLog>,
    /// The last CRL served: re-signed only when the revocations change or it is half-way to
    /// its next update, so serving it costs no signature and no write.
    served_crl: std::sync::Mutex<Option<ServedCrl>>,
}

struct ServedCrl {
    der: Vec<u8>,
    revoked: Vec<(Serial, i64)>,
    refresh_at: i64,
}

impl<S> std::fmt::Debug for IdentityService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService").field("authority", &self.authority).finish_non_exhaustive()
    }
}

/// Who asked, for the event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// Peer address, for network requests.
    pub peer: Option<&'a str>,
}

impl<S: Store> IdentityService<S> {
    /// The service of `authority` over `store`.
    pub fn new(authority: Authority, store: S) -> Result<Self, CaError> {
        let verifier = SvidVerifier::default()
            .with_domain(authority.trust_domain().clone(), std::slice::from_ref(authority.root_der()))
            .map_err(|e| CaError::Material(e.to_string()))?;
        Ok(Self { authority, store, verifier, audit: None, served_crl: std::sync::Mutex::new(None) })
    }

    /// Also records every attempt in the tamper-evident audit log; a grant that cannot be
    /// recorded there becomes a refusal.
    pub fn with_audit(mut self, log: zerogate_audit::AuditLog) -> Self {
        self.audit = Some(log);
        self
    }

    /// The authority.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The audit log, when one is attached.
    pub fn audit(&self) -> Option<&zerogate_audit::AuditLog> {
        self.audit.as_ref()
    }

    fn event(
        &self,
        now: i64,
        action: &str,
        subject: &str,
        result: &Result<String, Refusal>,
        origin: Origin<'_>,
    ) -> Result<(), Refusal> {
        let (outcome, detail) = match result {
            Ok(detail) => ("granted", detail.clone()),
            Err(refusal) => ("refused", refusal.to_string()),
        };
        if let Some(audit) = &self.audit {
            let record = zerogate_audit::DecisionRecord {
                at_ms: now.saturating_mul(1000),
                gateway: format!("control:{}", self.authority.trust_domain()),
                principal: Some(subject.to_owned()),
                credential: None,
                resource: "zerogate:identity-authority".to_owned(),
                action: action.to_owned(),
                request: zerogate_audit::RequestSummary {
                    source: origin.peer.map(str::to_owned),
                    ..Default::default()
                },
                decision: if result.is_ok() { zerogate_audit::Decision::Allow } else { zerogate_audit::Decision::Deny },
                policies: vec!["identity-issuance-policy".to_owned()],
                errors: result.as_ref().err().map(|r| vec![r.to_string()]).unwrap_or_default(),
                reauthorization: false,
            };
            if let Err(e) = audit.append(&record) {
                tracing::error!(error = %e, "audit log append failed");
                return Err(Refusal::Internal);
            }
        }
        self.store
            .record_event(&Event {
                at: now,
                action: action.to_owned(),
                subject: subject.to_owned(),
                outcome: outcome.to_owned(),
                detail,
                peer: origin.peer.map(str::to_owned),
            })
            .map_err(internal)
    }

    /// Records the outcome of `attempt` as an event and returns it. A failure to record a grant
    /// turns it into a refusal.
    fn audited<T>(
        &self,
        now: i64,
        action: &str,
        subject: &str,
        origin: Origin<'_>,
        attempt: Result<T, Refusal>,
        describe: impl Fn(&T) -> String,
    ) -> Result<T, Refusal> {
        let summary = attempt.as_ref().map(&describe).map_err(Clone::clone);
        self.event(now, action, subject, &summary, origin)?;
        attempt
    }

    fn revocations(&self) -> Result<RevocationList, Refusal> {
        Ok(self.store.revocations().map_err(internal)?.list)
    }

    fn refuse_revoked_identity(&self, id: &SpiffeId) -> Result<(), Refusal> {
        if self.revocations()?.identities.contains(id.as_str()) {
            return Err(Refusal::Forbidden(format!("the identity `{id}` is revoked")));
        }
        Ok(())
    }

    fn parse_id(&self, text: &str) -> Result<SpiffeId, Refusal> {
        SpiffeId::parse_in(text, self.authority.trust_domain())
            .map_err(|e| Refusal::BadRequest(format!("spiffe id: {e}")))
    }

    /// Records a request refused before it reached the service (too large, not JSON).
    pub fn record_refusal(&self, action: &str, reason: &str, now: i64, origin: Origin<'_>) -> Result<(), Refusal> {
        self.event(now, action, "request (unreadable)", &Err(Refusal::BadRequest(reason.to_owned())), origin)
    }

    /// Creates a one-time enrollment token for `spiffe_id`, valid `ttl` seconds.
    pub fn create_token(&self, spiffe_id: &str, ttl: u64, now: i64, origin: Origin<'_>) -> Result<String, Refusal> {
        let attempt = (|| {
            let id = self.parse_id(spiffe_id)?;
            if ttl == 0 || ttl > 7 * 86_400 {
                return Err(Refusal::BadRequest("token lifetime must be between 1 s and 7 days".into()));
            }
            self.refuse_revoked_identity(&id)?;
            let (record, text) = zerogate_pki::token::create(&id, ttl, now, self.authority.root_fingerprint())
                .map_err(|_| Refusal::Internal)?;
            self.store.insert_token(&record).map_err(internal)?;
            Ok((record.id, text))
        })();
        self.audited(now, "token.create", spiffe_id, origin, attempt, |(id, _)| format!("token {id}"))
            .map(|(_, text)| text)
    }

    /// Creates an access key for the API client `client` (its Cedar `ApiClient` id); returns
    /// (id, secret). The secret is shown once, to the caller.
    pub fn create_access_key(&self, client: &str, now: i64, origin: Origin<'_>) -> Result<(String, String), Refusal> {
        let attempt = (|| {
            let valid = !client.is_empty()
                && client.len() <= 128
                && client.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
            if !valid {
                return Err(Refusal::BadRequest("client names are 1-128 of A-Z a-z 0-9 - _ . @".into()));
            }
            let (id, secret) = zerogate_pki::access_key::generate().ok_or(Refusal::Internal)?;
            let record = zerogate_store::AccessKeyRecord {
                id: id.clone(),
                secret: secret.clone(),
                client: client.to_owned(),
                created_at: now,
                revoked_at: None,
            };
            self.store.insert_access_key(&record).map_err(internal)?;
            Ok((id, secret))
        })();
        self.audited(now, "access-key.create", client, origin, attempt, |(id, _)| format!("access key {id}"))
    }

    /// Revokes an access key: requests it signs are refused from the next one on.
    pub fn revoke_access_key(&self, id: &str, now: i64, origin: Origin<'_>) -> Result<(), Refusal> {
        let attempt = match self.store.revoke_access_key(id, now) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Refusal::BadRequest(format!("no live access key `{id}`"))),
            Err(e) => Err(internal(e)),
        };
        self.audited(now, "access-key.revoke", id, origin, attempt, |()| "revoked".to_owned())
    }

    /// Revokes a credential (any credential id the audit log names: an OIDC token's `jti:…`, a
    /// session's `sid:…`, a certificate's `serial:…`, an access key's `akid:…`) or a principal
    /// (a Cedar uid, `Zerogate::User::"alice"`: every credential of theirs). Gateways refuse it
    /// from their next request on. `false` if it was already revoked.
    pub fn revoke_access(
        &self,
        kind: RevokedKind,
        id: &str,
        reason: &str,
        now: i64,
        origin: Origin<'_>,
    ) -> Result<bool, Refusal> {
        let attempt =
            compared_form(kind, id).and_then(|id| self.store.revoke_access(kind, &id, now, reason).map_err(internal));
        let action = format!("{}.revoke", kind.as_str());
        self.audited(now, &action, id, origin, attempt, |fresh| {
            if *fresh { format!("revoked; reason: {reason}") } else { "already revoked".to_owned() }
        })
    }

    /// Every revoked credential and principal.
    pub fn revoked_access(&self) -> Result<Vec<RevokedAccess>, Refusal> {
        self.store.revoked_access().map_err(internal)
    }

    /// Live access keys: id → (secret, client).
    pub fn access_keys(&self) -> Result<std::collections::HashMap<String, (String, String)>, Refusal> {
        let keys = self.store.access_keys().map_err(internal)?;
        Ok(keys.into_iter().filter(|k| k.revoked_at.is_none()).map(|k| (k.id, (k.secret, k.client))).collect())
    }

    /// Every access key, with its secret left out.
    pub fn list_access_keys(&self) -> Result<Vec<zerogate_store::AccessKeyRecord>, Refusal> {
        let keys = self.store.access_keys().map_err(internal)?;
        Ok(keys.into_iter().map(|k| zerogate_store::AccessKeyRecord { secret: String::new(), ..k }).collect())
    }

    /// Enrolls: a token and a CSR in, a certificate chain out. `spiffe_id`, when the client
    /// states it, must be the token's.
    pub fn enroll(
        &self,
        token: &str,
        csr_pem: &[u8],
        spiffe_id: Option<&str>,
        now: i64,
        origin: Origin<'_>,
    ) -> Result<Issued, Refusal> {
        let presented = zerogate_pki::token::parse(token);
        let subject = match &presented {
            Ok(p) => format!("token {}", p.id),
            Err(_) => "token (malformed)".to_owned(),
        };
        let attempt = (|| {
            let presented = presented.map_err(|e| Refusal::Unauthorized(e.to_string()))?;
            let record = self
                .store
                .token(&presented.id)
                .map_err(internal)?
                .ok_or_else(|| Refusal::Unauthorized(TokenError::Unknown.to_string()))?;
            let id = zerogate_pki::token::check(&record, &presented, now)
                .map_err(|e| Refusal::Unauthorized(e.to_string()))?;
            if let Some(asked) = spiffe_id
                && asked != id.as_str()
            {
                return Err(Refusal::Forbidden(format!("this token enrolls `{id}`, not `{asked}`")));
            }
            self.refuse_revoked_identity(&id)?;
            let csr = VerifiedCsr::from_pem(csr_pem).map_err(|e| Refusal::BadRequest(e.to_string()))?;
            let issued = self.authority.issue_for_csr(&id, &csr, None, now)?;
            let cert = record_of(&issued, IssuedVia::Enroll, None, csr.key_type.name());
            self.store.redeem_token(&record.id, now, &cert).map_err(|e| match e {
                StoreError::TokenAlreadyUsed => Refusal::Unauthorized(TokenError::AlreadyUsed.to_string()),
                StoreError::UnknownToken => Refusal::Unauthorized(TokenError::Unknown.to_string()),
                other => internal(other),
            })?;
            Ok(issued)
        })();
        self.audited(now, "enroll", &subject, origin, attempt, |i| format!("{} serial {}", i.spiffe_id, i.serial))
    }

    /// Verifies a peer's chain as an SVID of this trust domain, revocation included.
    pub fn verify_peer(&self, chain: &[CertificateDer<'_>], now: i64) -> Result<VerifiedSvid, Refusal> {
        let revoked = self.revocations()?;
        self.verifier.verify(chain, now, &revoked).map_err(|e| Refusal::Unauthorized(e.to_string()))
    }

    /// Renews: the current certificate (verified, not revoked) and a CSR in, a new certificate
    /// for the same identity out.
    pub fn renew(
        &self,
        chain: &[CertificateDer<'_>],
        csr_pem: &[u8],
        now: i64,
        origin: Origin<'_>,
    ) -> Result<Issued, Refusal> {
        let peer = self.verify_peer(chain, now);
        let subject = match &peer {
            Ok(p) => format!("{} serial {}", p.id, p.serial),
            Err(_) => "certificate (not verified)".to_owned(),
        };
        let attempt = (|| {
            let peer = peer?;
            let csr = VerifiedCsr::from_pem(csr_pem).map_err(|e| Refusal::BadRequest(e.to_string()))?;
            let issued = self.authority.issue_for_csr(&peer.id, &csr, None, now)?;
            let cert = record_of(&issued, IssuedVia::Renew, Some(peer.serial), csr.key_type.name());
            self.store.insert_certificate(&cert).map_err(internal)?;
            Ok(issued)
        })();
        self.audited(now, "renew", &subject, origin, attempt, |i| format!("serial {}", i.serial))
    }

    /// Issues directly, for an operator: to the key of a CSR.
    pub fn issue(
        &self,
        spiffe_id: &str,
        csr_pem: &[u8],
        ttl: Option<u64>,
        now: i64,
        origin: Origin<'_>,
    ) -> Result<Issued, Refusal> {
        let attempt = (|| {
            let id = self.parse_id(spiffe_id)?;
            self.refuse_revoked_identity(&id)?;
            let csr = VerifiedCsr::from_pem(csr_pem).map_err(|e| Refusal::BadRequest(e.to_string()))?;
            let issued = self.authority.issue_for_csr(&id, &csr, ttl, now)?;
            self.store
                .insert_certificate(&record_of(&issued, IssuedVia::Operator, None, csr.key_type.name()))
                .map_err(internal)?;
            Ok(issued)
        })();
        self.audited(now, "issue", spiffe_id, origin, attempt, |i| format!("serial {}", i.serial))
    }

    /// Issues a server certificate for the control plane itself (DNS/IP names added).
    pub fn issue_server(&self, public_key: &[u8], names: &[String], now: i64) -> Result<Issued, Refusal> {
        let id = self.parse_id(&format!("spiffe://{}/zerogate/control", self.authority.trust_domain()))?;
        let attempt = (|| {
            let issued = self.authority.issue(&id, public_key, names, None, now)?;
            self.store
                .insert_certificate(&record_of(&issued, IssuedVia::Operator, None, "ECDSA P-256"))
                .map_err(internal)?;
            Ok(issued)
        })();
        self.audited(now, "issue", id.as_str(), Origin::default(), attempt, |i| {
            format!("server certificate serial {}", i.serial)
        })
    }

    /// Revokes one certificate by serial.
    pub fn revoke_serial(&self, serial: &str, reason: &str, now: i64, origin: Origin<'_>) -> Result<(), Refusal> {
        let attempt = (|| {
            let parsed = Serial::parse(serial)
                .ok_or_else(|| Refusal::BadRequest(format!("`{serial}` is not a serial number")))?;
            if !self.store.revoke_serial(&parsed, now, reason).map_err(internal)? {
                return Err(Refusal::BadRequest(format!("no certificate has serial `{parsed}`")));
            }
            Ok(())
        })();
        self.audited(now, "revoke", serial, origin, attempt, |()| format!("reason: {reason}"))
    }

    /// Revokes an identity: its certificates now and its renewals later. Returns how many
    /// certificates were revoked.
    pub fn revoke_identity(
        &self,
        spiffe_id: &str,
        reason: &str,
        now: i64,
        origin: Origin<'_>,
    ) -> Result<usize, Refusal> {
        let attempt = (|| {
            let id = self.parse_id(spiffe_id)?;
            self.store.revoke_identity(id.as_str(), now, reason).map_err(internal)
        })();
        self.audited(now, "revoke", spiffe_id, origin, attempt, |n| format!("{n} certificates; reason: {reason}"))
    }

    /// The revocation list gateways consult.
    pub fn revocation_list(&self) -> Result<RevocationList, Refusal> {
        self.revocations()
    }

    /// The CRL to serve (DER), valid for `validity` seconds: the one served before while the
    /// revocations are the same and it is less than half-way to its next update, else a new one.
    pub fn current_crl(&self, now: i64, validity: i64) -> Result<Vec<u8>, Refusal> {
        let revoked = self.store.revocations().map_err(internal)?.revoked_serials;
        let mut served = self.served_crl.lock().map_err(|_| Refusal::Internal)?;
        if let Some(crl) = served.as_ref()
            && crl.revoked == revoked
            && now < crl.refresh_at
        {
            return Ok(crl.der.clone());
        }
        let der = self.crl(now, validity)?;
        *served = Some(ServedCrl { der: der.clone(), revoked, refresh_at: now + validity / 2 });
        Ok(der)
    }

    /// A freshly signed CRL (DER), valid for `validity` seconds, with the next CRL number.
    pub fn crl(&self, now: i64, validity: i64) -> Result<Vec<u8>, Refusal> {
        let revocations = self.store.revocations().map_err(internal)?;
        let number = self.store.next_crl_number().map_err(internal)?;
        Ok(self.authority.crl(&revocations.revoked_serials, number, now, now + validity)?)
    }
}

fn record_of(issued: &Issued, via: IssuedVia, renews: Option<Serial>, key_type: &str) -> CertRecord {
    CertRecord {
        serial: issued.serial.clone(),
        spiffe_id: issued.spiffe_id.to_string(),
        not_before: issued.not_before,
        not_after: issued.not_after,
        via,
        renews,
        key_type: key_type.to_owned(),
        revoked_at: None,
        revocation_reason: None,
    }
}

/// A credential id or principal uid in the form gateways compare it in (a serial as the
/// certificate's own lowercase hex, however it was written); what no gateway could ever match is
/// refused, so a typo cannot look like a revocation that happened.
fn compared_form(kind: RevokedKind, id: &str) -> Result<String, Refusal> {
    let bad = |why: &str| Err(Refusal::BadRequest(format!("`{id}`: {why}")));
    if id.chars().any(char::is_control) || id.trim() != id {
        return bad("control characters or surrounding spaces");
    }
    match kind {
        RevokedKind::Credential => match id.split_once(':') {
            Some(("serial", rest)) => match Serial::parse(rest) {
                Some(serial) => Ok(format!("serial:{serial}")),
                None => bad("not a serial number (hex)"),
            },
            // The subject at its issuer, which is an https:// URL (a subject may hold an `@`
            // itself: `sub:alice@example.com` without an issuer would match nothing).
            Some(("sub", rest))
                if rest.rfind("@https://").is_some_and(|at| at > 0 && rest.len() > at + "@https://".len()) =>
            {
                Ok(id.to_owned())
            }
            // A token id or session id alone (from any issuer), or scoped to the issuer that
            // made it (`jti:…@https://issuer`): an `@` must begin an issuer, as a gateway
            // compares it, or the revocation would match nothing.
            Some(("jti" | "sid", rest)) if rest.contains('@') => match rest.rfind("@https://") {
                Some(at) if at > 0 && rest.len() > at + "@https://".len() => Ok(id.to_owned()),
                _ => bad("an `@` in a token or session id must begin its issuer (jti:…@https://issuer)"),
            },
            Some(("jti" | "sid" | "akid", rest)) if !rest.is_empty() => Ok(id.to_owned()),
            _ => bad("not a credential id (jti:…, sid:…, sub:…@issuer, serial:…, akid:…, as the audit log names it)"),
        },
        RevokedKind::Principal => {
            let quoted = ["Zerogate::User::", "Zerogate::Device::", "Zerogate::Workload::", "Zerogate::ApiClient::"]
                .iter()
                .find_map(|kind| id.strip_prefix(kind));
            match quoted {
                Some(q) if q.len() >= 3 && q.starts_with('"') && q.ends_with('"') => Ok(id.to_owned()),
                _ => bad(r#"not a principal uid (Zerogate::User::"alice", …Device, …Workload, …ApiClient)"#),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerogate_pki::{Lifetimes, TrustDomain};
    use zerogate_store::SqliteStore;

    fn service() -> IdentityService<SqliteStore> {
        let domain = TrustDomain::parse("example.org").unwrap();
        let new = Authority::init(&domain, 1_000).unwrap();
        let authority = Authority::load(domain, &new.material, Lifetimes::default()).unwrap();
        IdentityService::new(authority, SqliteStore::in_memory().unwrap()).unwrap()
    }

    #[test]
    fn the_served_crl_is_signed_again_only_when_it_must_be() {
        let s = service();
        let first = s.current_crl(2_000, 3600).unwrap();
        assert_eq!(s.current_crl(2_100, 3600).unwrap(), first, "same revocations, fresh enough: same CRL");
        assert_eq!(s.store().next_crl_number().unwrap(), 2, "serving it again did not use a CRL number");
        // A revocation changes it at once.
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
        let issued =
            s.issue("spiffe://example.org/workload/a", csr.as_bytes(), None, 2_100, Origin::default()).unwrap();
        s.revoke_serial(issued.serial.as_str(), "test", 2_200, Origin::default()).unwrap();
        let after = s.current_crl(2_200, 3600).unwrap();
        assert_ne!(after, first);
        // Half-way to its next update, it is renewed.
        assert_eq!(s.current_crl(2_200 + 1799, 3600).unwrap(), after);
        assert_ne!(s.current_crl(2_200 + 1800, 3600).unwrap(), after);
    }

    #[test]
    fn access_is_revoked_only_by_ids_a_gateway_can_match_and_each_revocation_is_an_event() {
        let s = service();
        let revoke = |kind, id: &str| s.revoke_access(kind, id, "test", 3_000, Origin::default());
        assert!(revoke(RevokedKind::Credential, "jti:abc").unwrap());
        assert!(!revoke(RevokedKind::Credential, "jti:abc").unwrap(), "already revoked");
        assert!(revoke(RevokedKind::Principal, r#"Zerogate::User::"alice""#).unwrap());
        for (kind, id) in [
            (RevokedKind::Credential, "abc"),
            (RevokedKind::Credential, "jti:"),
            (RevokedKind::Credential, "token:abc"),
            (RevokedKind::Credential, "jti:a\nb"),
            (RevokedKind::Principal, "alice"),
            (RevokedKind::Principal, r#"Zerogate::Group::"admins""#),
            (RevokedKind::Principal, "Zerogate::User::alice"),
            (RevokedKind::Credential, "sub:alice"),
            (RevokedKind::Credential, "sub:alice@example.com"),
            (RevokedKind::Credential, "sub:@https://idp.example.com"),
            (RevokedKind::Credential, "sub:alice@https://"),
            (RevokedKind::Credential, " jti:abc"),
            (RevokedKind::Credential, "serial:0x12"),
            (RevokedKind::Credential, "jti:abc@idp.example.com"),
            (RevokedKind::Credential, "jti:@https://idp.example.com"),
            (RevokedKind::Credential, "sid:s-1@https://"),
        ] {
            assert!(matches!(revoke(kind, id), Err(Refusal::BadRequest(_))), "{id}");
        }
        // A serial as openssl prints it is kept as gateways name it.
        assert!(revoke(RevokedKind::Credential, "serial:0A:1B:2C").unwrap());
        // A session, and a subject (an email, with its own `@`) at its issuer.
        assert!(revoke(RevokedKind::Credential, "sid:s-1").unwrap());
        assert!(revoke(RevokedKind::Credential, "sub:alice@example.com@https://idp.example.com/realms/a").unwrap());
        // A token id scoped to its issuer.
        assert!(revoke(RevokedKind::Credential, "jti:abc@https://idp.example.com").unwrap());
        let kept: Vec<String> = s.revoked_access().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(
            kept,
            [
                "jti:abc",
                "jti:abc@https://idp.example.com",
                "serial:0a1b2c",
                "sid:s-1",
                "sub:alice@example.com@https://idp.example.com/realms/a",
                r#"Zerogate::User::"alice""#
            ]
        );
        let events = s.store().events(100).unwrap();
        assert!(events.iter().any(|e| e.action == "credential.revoke" && e.subject == "jti:abc"));
        assert!(events.iter().any(|e| e.action == "principal.revoke" && e.outcome == "refused"), "refusals too");
    }
}
