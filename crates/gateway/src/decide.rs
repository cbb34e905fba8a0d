//! The decision step of the request path, as plain code over its inputs and `now`: a canonical
//! request and the outcome of authentication go in; whether to forward, the status of a refusal,
//! and the audit record come out. The server around it only moves bytes.
//!
//! Order and rules: a failed or missing authentication is a 401; a credential of a method the
//! application does not accept is a 401; a revoked credential or principal is a 401; then Cedar
//! decides on the application (or its most specific route) with the request's context, and a
//! deny or any policy error is a 403. In shadow mode every such refusal is recorded as a
//! would-be deny (`shadow-deny`) and the request is forwarded, so zerogate can run beside the
//! access it will replace before it enforces. A refused canonical request is never shadowed:
//! it is an ambiguity, not a policy question. A TCP service's tunnel is decided the same way,
//! as Cedar's `connect` action, and recorded without a method or path; a tunnel whose
//! authentication fails is refused in shadow mode too.

use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use zerogate_audit::{Credential, Decision, DecisionRecord, RequestSummary};
use zerogate_authn::identity::{Authenticated, Method, Revocations};
use zerogate_policy::{PolicyEngine, Principal, RequestContext};

use crate::canonical::CanonicalRequest;

/// Whether refusals are enforced or only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refusals are answered.
    Enforce,
    /// Refusals are recorded as `shadow-deny` and the request goes through.
    Shadow,
}

/// What a client asks of a protected application: HTTP requests, or one TCP connection
/// through to a service (a database, an SSH server), as Cedar's `http` and `connect` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Requests to a web application or API.
    Http,
    /// A TCP connection to a service, tunnelled through the gateway's TLS.
    Connect,
}

impl Action {
    /// The Cedar action entity.
    pub fn cedar_uid(self) -> &'static str {
        match self {
            Self::Http => r#"Zerogate::Action::"http""#,
            Self::Connect => r#"Zerogate::Action::"connect""#,
        }
    }
}

/// A protected application, as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// Its host name.
    pub host: String,
    /// Its Cedar entity, `Zerogate::Application::"billing"`.
    pub resource: String,
    /// Routes by path prefix, each a Cedar entity (`Zerogate::Route::"billing-admin"`); the
    /// longest matching prefix is the resource of a request.
    pub routes: Vec<(String, String)>,
    /// The authentication methods it accepts.
    pub methods: Vec<Method>,
    /// Enforce or shadow.
    pub mode: Mode,
    /// HTTP requests, or TCP connections.
    pub action: Action,
}

impl App {
    /// The Cedar resource of a request for `path`: the longest route prefix that covers it
    /// (see [`route_covers`]), else the application.
    pub fn resource_for(&self, path: &str) -> &str {
        self.routes
            .iter()
            .filter(|(prefix, _)| route_covers(prefix, path))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(self.resource.as_str(), |(_, route)| route.as_str())
    }
}

/// Whether a route's path prefix covers `path`: at a segment boundary, with ASCII letters
/// compared without case (an upstream that routes without regard to case, as Express and
/// ASP.NET do by default, serves `/ADMIN/users` as `/admin/users`: the route must decide it
/// too), and a prefix written with a trailing `/` covering the path without it (`/admin/`
/// covers `/admin`, which most routers serve alike).
pub fn route_covers(prefix: &str, path: &str) -> bool {
    let base = prefix.strip_suffix('/').unwrap_or(prefix);
    match (path.get(..base.len()), path.get(base.len()..)) {
        (Some(head), Some(rest)) => head.eq_ignore_ascii_case(base) && (rest.is_empty() || rest.starts_with('/')),
        _ => false,
    }
}

/// Why authentication produced no identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthnFailure {
    /// The method that was tried, if any credential was presented.
    pub method: Option<Method>,
    /// The refusal's stable reason (`expired`, `bad_signature`, `no_credential`, …).
    pub reason: String,
}

/// One request to decide.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    /// The application it is for.
    pub app: &'a App,
    /// The canonical request.
    pub request: &'a CanonicalRequest,
    /// The HTTP method.
    pub method: &'a str,
    /// The client's address.
    pub source: IpAddr,
    /// What authentication established.
    pub authn: Result<Authenticated, AuthnFailure>,
}

/// What to do with the request, and what to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Forward to the upstream (after the record is durable).
    pub forward: bool,
    /// The status to answer when not forwarding (401 or 403).
    pub status: u16,
    /// The record to append before anything else happens.
    pub record: DecisionRecord,
}

impl Outcome {
    /// Turns a decision to forward into a refusal with `status` for a reason found after Cedar
    /// decided (the principal's share spent, no identity assertion): a deny, its reason on
    /// record, in shadow mode too.
    pub fn refuse(&mut self, status: u16, error: String) {
        self.forward = false;
        self.status = status;
        self.record.decision = Decision::Deny;
        self.record.errors.push(error);
    }
}

/// Decides `attempt` at `now` with `policy` and `revocations`, for the gateway `gateway`.
pub fn decide(
    attempt: &Attempt<'_>,
    policy: &PolicyEngine,
    revocations: &Revocations,
    gateway: &str,
    now: SystemTime,
) -> Outcome {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let resource = attempt.app.resource_for(&attempt.request.path);
    let http = attempt.app.action == Action::Http;
    let mut record = DecisionRecord {
        at_ms: i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        gateway: gateway.to_owned(),
        principal: None,
        credential: None,
        resource: resource.to_owned(),
        action: attempt.app.action.cedar_uid().to_owned(),
        // A connection has a host (the TLS server name), but no method or path.
        request: RequestSummary {
            method: http.then(|| attempt.method.to_owned()),
            host: Some(attempt.request.host.clone()),
            path: http.then(|| attempt.request.recorded_target()),
            source: Some(attempt.source.to_string()),
        },
        decision: Decision::Deny,
        policies: Vec::new(),
        errors: Vec::new(),
        reauthorization: false,
    };
    // A refusal: `error` says what failed (a clean policy deny has none: its deciding policies
    // say why).
    let refuse = |mut record: DecisionRecord, status: u16, error: Option<String>| {
        record.errors.extend(error);
        match attempt.app.mode {
            Mode::Enforce => Outcome { forward: false, status, record },
            Mode::Shadow => {
                record.decision = Decision::ShadowDeny;
                Outcome { forward: true, status: 200, record }
            }
        }
    };
    let who = match &attempt.authn {
        Ok(who) => who,
        Err(failure) => {
            if let Some(method) = failure.method {
                record.credential =
                    Some(Credential { kind: method.as_str().to_owned(), id: String::new(), also_known_as: Vec::new() });
            }
            let error = format!("authentication: {}", failure.reason);
            if attempt.app.action == Action::Connect {
                // A tunnel without an identity would have no one to verify again or to cut:
                // refused in shadow mode too (shadow mode never relays for someone unnamed).
                record.errors.push(error);
                return Outcome { forward: false, status: 401, record };
            }
            return refuse(record, 401, Some(error));
        }
    };
    let principal = who.cedar_uid();
    record.principal = Some(principal);
    record.credential = Some(Credential {
        kind: who.method.as_str().to_owned(),
        id: who.credential_id.clone(),
        also_known_as: who.also_known_as.clone(),
    });
    if !attempt.app.methods.contains(&who.method) {
        return refuse(
            record,
            401,
            Some(format!("authentication: {} is not accepted by this application", who.method)),
        );
    }
    if !revocations.is_current(Instant::now()) {
        let error =
            "revocations: not brought up to date within their grace period; no credential is trusted until they are";
        return refuse(record, 503, Some(error.to_owned()));
    }
    if revocations.is_revoked(who) {
        return refuse(record, 401, Some("authentication: the credential or principal is revoked".to_owned()));
    }
    let seconds = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let context = RequestContext {
        authn: who.method.as_str().to_owned(),
        credential_id: record.credential.as_mut().map(|c| std::mem::take(&mut c.id)).unwrap_or_default(),
        source_ip: attempt.source,
        time: seconds,
        hour: seconds.rem_euclid(86_400) / 3600,
        device: None,
        posture: None,
        // Moved from the record and back after the decision: one copy of each, not two.
        method: record.request.method.take(),
        host: record.request.host.take(),
        path: http.then(|| attempt.request.path.clone()),
        acr: who.acr.clone(),
        amr: (!who.amr.is_empty()).then(|| who.amr.clone()),
    };
    let uid = record.principal.as_deref().unwrap_or_default();
    let decision = policy.decide_as(Principal { uid, groups: &who.groups }, &record.action, resource, &context);
    record.request.method = context.method;
    record.request.host = context.host;
    if let Some(credential) = record.credential.as_mut() {
        credential.id = context.credential_id;
    }
    record.policies = decision.policies;
    record.errors = decision.errors;
    if decision.allow {
        record.decision = Decision::Allow;
        return Outcome { forward: true, status: 200, record };
    }
    refuse(record, 403, None)
}
