//! What one decision record holds.

use serde::{Deserialize, Serialize};

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Allowed by policy.
    Allow,
    /// Denied (by policy, by an error, or for lack of a credential).
    Deny,
    /// Denied by policy but let through: the application is in shadow mode.
    ShadowDeny,
}

/// The credential that authenticated the principal: a stable identifier, never a secret
/// (a token's `jti` or session id, a certificate serial, an access key id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// `oidc`, `mtls`, `sigv4`, …
    pub kind: String,
    /// The identifier.
    pub id: String,
}

/// The request as it was authorized.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSummary {
    /// HTTP method, when HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Host (or TLS server name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// The gateway (or component) that decided.
    pub gateway: String,
    /// The principal (a SPIFFE ID, a user), if one was authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The credential that authenticated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Credential>,
    /// The resource.
    pub resource: String,
    /// The action.
    pub action: String,
    /// The request.
    #[serde(default)]
    pub request: RequestSummary,
    /// The decision.
    pub decision: Decision,
    /// The policies that decided.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Errors met on the way (each is a reason to deny).
    #[serde(default)]
    pub errors: Vec<String>,
}

/// Longest text kept in one field; longer values are cut and marked.
pub const MAX_FIELD: usize = 4096;

/// Cuts `text` to [`MAX_FIELD`] bytes at a character boundary, marking the cut.
pub(crate) fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_FIELD {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = MAX_FIELD;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…[{} bytes cut]", text.get(..end).unwrap_or_default(), text.len() - end))
}

impl DecisionRecord {
    /// The record as one line of JSON: every string escaped (no newline or control character
    /// survives, so one record is one line) and cut to [`MAX_FIELD`] bytes.
    pub fn to_json(&self) -> String {
        let cut = |s: &String| bounded(s).into_owned();
        let bounded_record = DecisionRecord {
            at_ms: self.at_ms,
            gateway: cut(&self.gateway),
            principal: self.principal.as_ref().map(cut),
            credential: self.credential.as_ref().map(|c| Credential { kind: cut(&c.kind), id: cut(&c.id) }),
            resource: cut(&self.resource),
            action: cut(&self.action),
            request: RequestSummary {
                method: self.request.method.as_ref().map(cut),
                host: self.request.host.as_ref().map(cut),
                path: self.request.path.as_ref().map(cut),
                source: self.request.source.as_ref().map(cut),
            },
            decision: self.decision,
            policies: self.policies.iter().take(64).map(cut).collect(),
            errors: self.errors.iter().take(64).map(cut).collect(),
        };
        serde_json::to_string(&bounded_record).unwrap_or_default()
    }
}
