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
    /// Other identifiers of the same credential, any of which `zerogate revoke` takes: an OIDC
    /// token's `sid:…` and `sub:…@issuer` beside its `jti:…`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_known_as: Vec<String>,
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
    /// A decision on a long-lived connection admitted earlier (a WebSocket, a streamed body, a
    /// TCP tunnel), taken again because access may have ended: not a new request. Its `deny`
    /// is a cut, its `shadow-deny` the cut that enforcing would have made.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reauthorization: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The prefix of an HTTP application's Cedar entity, the resource of each of its decisions.
pub const APPLICATION_ENTITY: &str = "Zerogate::Application::\"";
/// The prefix of a TCP service's Cedar entity, the resource of each of its decisions.
pub const TCP_TARGET_ENTITY: &str = "Zerogate::TcpTarget::\"";
/// The gateway's resource for a request it could not parse.
pub const NO_RESOURCE: &str = "(none)";
/// The gateway's resource for a request to a host no application has (`host:NAME`).
pub const UNROUTED_HOST: &str = "host:";

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

/// A field as written: cut to [`MAX_FIELD`] bytes (borrowed, so a field within the bound costs
/// no copy).
struct Field<'a>(&'a str);

impl Serialize for Field<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&bounded(self.0))
    }
}

/// At most 64 fields of a list, each bounded.
struct Fields<'a>(&'a [String]);

impl Fields<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Fields<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().take(64).map(|text| Field(text)))
    }
}

/// The record as it is written: the same fields, in the same order, as [`DecisionRecord`].
#[derive(Serialize)]
struct Written<'a> {
    at_ms: i64,
    gateway: Field<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal: Option<Field<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<WrittenCredential<'a>>,
    resource: Field<'a>,
    action: Field<'a>,
    request: WrittenRequest<'a>,
    decision: Decision,
    policies: Fields<'a>,
    errors: Fields<'a>,
    #[serde(skip_serializing_if = "is_false")]
    reauthorization: bool,
}

#[derive(Serialize)]
struct WrittenCredential<'a> {
    kind: Field<'a>,
    id: Field<'a>,
    #[serde(skip_serializing_if = "Fields::is_empty")]
    also_known_as: Fields<'a>,
}

#[derive(Serialize)]
struct WrittenRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<Field<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<Field<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<Field<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<Field<'a>>,
}

impl DecisionRecord {
    /// The record as one line of JSON: every string escaped (no newline or control character
    /// survives, so one record is one line) and cut to [`MAX_FIELD`] bytes.
    pub fn to_json(&self) -> String {
        fn field(text: &Option<String>) -> Option<Field<'_>> {
            text.as_deref().map(Field)
        }
        let written = Written {
            at_ms: self.at_ms,
            gateway: Field(&self.gateway),
            principal: field(&self.principal),
            credential: self.credential.as_ref().map(|c| WrittenCredential {
                kind: Field(&c.kind),
                id: Field(&c.id),
                also_known_as: Fields(&c.also_known_as),
            }),
            resource: Field(&self.resource),
            action: Field(&self.action),
            request: WrittenRequest {
                method: field(&self.request.method),
                host: field(&self.request.host),
                path: field(&self.request.path),
                source: field(&self.request.source),
            },
            decision: self.decision,
            policies: Fields(&self.policies),
            errors: Fields(&self.errors),
            reauthorization: self.reauthorization,
        };
        // Sized for a typical record, so that it is written without growing.
        let mut out = Vec::with_capacity(512);
        if serde_json::to_writer(&mut out, &written).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
