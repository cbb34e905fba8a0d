//! Loading policy sets (strictly validated) and deciding.

use std::collections::HashMap;
use std::str::FromStr;

use std::sync::{Arc, Mutex};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet,
    PrincipalConstraint, Request, ResourceConstraint, RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::SCHEMA;

/// Why a policy set (or a request) was not accepted. Each message names the file, the policy
/// and Cedar's diagnostic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The shipped schema does not parse (a bug).
    #[error("schema: {0}")]
    Schema(String),
    /// A file does not parse as Cedar.
    #[error("{file}: {message}")]
    Parse {
        /// The file (or source name).
        file: String,
        /// Cedar's diagnostics.
        message: String,
    },
    /// Two policies share an id.
    #[error("policy id `{0}` is used twice")]
    DuplicateId(String),
    /// The set does not validate against the schema; every diagnostic is listed.
    #[error("the policies do not validate against the zerogate schema:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// The entities do not fit the schema.
    #[error("entities: {0}")]
    Entities(String),
}

/// A request to decide, in Cedar's terms.
#[derive(Debug, Clone)]
pub struct DecisionRequest {
    /// `Zerogate::User::"alice"`, …
    pub principal: String,
    /// `Zerogate::Action::"http"` or `…"connect"`.
    pub action: String,
    /// `Zerogate::Application::"billing"`, …
    pub resource: String,
    /// The context, as JSON (validated against the schema).
    pub context: serde_json::Value,
}

/// What the gateway knows about a device's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posture {
    /// Enrolled and managed.
    pub managed: bool,
    /// Full-disk encryption on, when known.
    pub disk_encrypted: Option<bool>,
    /// Operating system, when known.
    pub os: Option<String>,
    /// Its version, when known.
    pub os_version: Option<String>,
}

/// The request context, typed: it matches `RequestContext` in [`crate::SCHEMA`] by construction,
/// so building it costs no JSON parsing and no schema check on the decision path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// `oidc`, `mtls` or `sigv4`.
    pub authn: String,
    /// The credential's stable id (token `jti` or session id, certificate serial, access key id).
    pub credential_id: String,
    /// The client's address.
    pub source_ip: std::net::IpAddr,
    /// Unix seconds.
    pub time: i64,
    /// Hour of the day, UTC.
    pub hour: i64,
    /// The device, as a Cedar entity id (`Zerogate::Device::"…"`), when known.
    pub device: Option<String>,
    /// The device's posture, when known.
    pub posture: Option<Posture>,
    /// HTTP method.
    pub method: Option<String>,
    /// Host.
    pub host: Option<String>,
    /// Path.
    pub path: Option<String>,
    /// OIDC `acr`.
    pub acr: Option<String>,
    /// OIDC `amr`.
    pub amr: Option<Vec<String>>,
}

impl RequestContext {
    fn to_cedar(&self) -> Result<Context, String> {
        let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
        let mut pairs = vec![
            ("authn".to_owned(), s(&self.authn)),
            ("credential_id".to_owned(), s(&self.credential_id)),
            ("source_ip".to_owned(), RestrictedExpression::new_ip(self.source_ip.to_string())),
            ("time".to_owned(), RestrictedExpression::new_long(self.time)),
            ("hour".to_owned(), RestrictedExpression::new_long(self.hour)),
        ];
        let optional = [("method", &self.method), ("host", &self.host), ("path", &self.path), ("acr", &self.acr)];
        for (name, value) in optional {
            if let Some(value) = value {
                pairs.push((name.to_owned(), s(value)));
            }
        }
        if let Some(amr) = &self.amr {
            pairs.push(("amr".to_owned(), RestrictedExpression::new_set(amr.iter().map(|v| s(v)))));
        }
        if let Some(device) = &self.device {
            let uid = EntityUid::from_str(device).map_err(|e| format!("device `{device}`: {e}"))?;
            pairs.push(("device".to_owned(), RestrictedExpression::new_entity_uid(uid)));
        }
        if let Some(p) = &self.posture {
            let mut fields = vec![("managed".to_owned(), RestrictedExpression::new_bool(p.managed))];
            if let Some(v) = p.disk_encrypted {
                fields.push(("disk_encrypted".to_owned(), RestrictedExpression::new_bool(v)));
            }
            if let Some(v) = &p.os {
                fields.push(("os".to_owned(), s(v)));
            }
            if let Some(v) = &p.os_version {
                fields.push(("os_version".to_owned(), s(v)));
            }
            pairs.push(("posture".to_owned(), RestrictedExpression::new_record(fields).map_err(|e| e.to_string())?));
        }
        Context::from_pairs(pairs).map_err(|e| format!("context: {e}"))
    }
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// Whether the request is allowed.
    pub allow: bool,
    /// The policies that decided (the permits that allowed, or the forbids that denied).
    pub policies: Vec<String>,
    /// Errors: each one alone makes the decision a deny.
    pub errors: Vec<String>,
}

impl Decision {
    fn deny(error: String) -> Self {
        Self { allow: false, policies: Vec::new(), errors: vec![error] }
    }
}

/// A validated policy set, ready to decide.
pub struct PolicyEngine {
    schema: Schema,
    entities: Entities,
    /// Policies that can apply to any resource.
    everywhere: Vec<Policy>,
    /// Per application: the policies that can apply to it or its routes and targets, with
    /// `everywhere` included.
    slices: HashMap<EntityUid, PolicySet>,
    /// For resources outside every slice.
    unsliced: PolicySet,
    authorizer: Authorizer,
    count: usize,
    /// Per (principal, resource): only the policies whose scope can match them. A gateway sees
    /// the same pairs again and again; bounded, and cleared when full.
    by_pair: Mutex<HashMap<(EntityUid, EntityUid), Arc<PolicySet>>>,
}

/// Pairs remembered at most.
const PAIR_CACHE: usize = 16_384;

/// Whether a scope (`==`, `in`, `is`, `is … in`, or none) can hold for `uid`, given the entities.
fn scope_holds(
    eq: Option<&EntityUid>,
    within: Option<&EntityUid>,
    is: Option<&EntityTypeName>,
    uid: &EntityUid,
    entities: &Entities,
) -> bool {
    eq.is_none_or(|e| e == uid)
        && within.is_none_or(|g| g == uid || entities.is_ancestor_of(g, uid))
        && is.is_none_or(|t| uid.type_name() == t)
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("policies", &self.count).finish_non_exhaustive()
    }
}

fn schema() -> Result<Schema, PolicyError> {
    Schema::from_cedarschema_str(SCHEMA).map(|(s, _)| s).map_err(|e| PolicyError::Schema(e.to_string()))
}

/// The application a resource belongs to: itself, or its `Application` ancestor.
fn application_of(uid: &EntityUid, entities: &Entities) -> Option<EntityUid> {
    if uid.type_name().to_string() == "Zerogate::Application" {
        return Some(uid.clone());
    }
    entities.ancestors(uid)?.find(|a| a.type_name().to_string() == "Zerogate::Application").cloned()
}

impl PolicyEngine {
    /// Parses `sources` (name, Cedar text), validates them strictly against [`SCHEMA`] together
    /// with `entities` (Cedar entity JSON: users, groups, applications, routes…), and builds the
    /// engine. A policy's id is its `@id("…")` annotation, else `<name>#<n>`.
    pub fn load(sources: &[(String, String)], entities: serde_json::Value) -> Result<Self, PolicyError> {
        let schema = schema()?;
        let mut all = PolicySet::new();
        for (name, text) in sources {
            let parsed = PolicySet::from_str(text)
                .map_err(|e| PolicyError::Parse { file: name.clone(), message: miette_text(&e) })?;
            if parsed.templates().next().is_some() {
                return Err(PolicyError::Parse { file: name.clone(), message: "templates are not supported".into() });
            }
            let mut in_order: Vec<&Policy> = parsed.policies().collect();
            in_order.sort_by_key(|p| p.id().to_string().trim_start_matches("policy").parse::<usize>().unwrap_or(0));
            for (index, policy) in in_order.into_iter().enumerate() {
                let id = policy.annotation("id").map_or_else(|| format!("{name}#{index}"), str::to_owned);
                all.add(policy.new_id(PolicyId::new(&id))).map_err(|_| PolicyError::DuplicateId(id))?;
            }
        }
        let result = Validator::new(schema.clone()).validate(&all, ValidationMode::Strict);
        if !result.validation_passed() {
            return Err(PolicyError::Invalid(result.validation_errors().map(|e| format!("  {e}")).collect()));
        }
        let entities =
            Entities::from_json_value(entities, Some(&schema)).map_err(|e| PolicyError::Entities(e.to_string()))?;
        let mut everywhere = Vec::new();
        let mut by_app: HashMap<EntityUid, Vec<Policy>> = HashMap::new();
        for policy in all.policies() {
            let scope = match policy.resource_constraint() {
                ResourceConstraint::Eq(uid) | ResourceConstraint::In(uid) | ResourceConstraint::IsIn(_, uid) => {
                    application_of(&uid, &entities)
                }
                ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
            };
            match scope {
                Some(app) => by_app.entry(app).or_default().push(policy.clone()),
                None => everywhere.push(policy.clone()),
            }
        }
        let set = |policies: &[Policy]| -> Result<PolicySet, PolicyError> {
            PolicySet::from_policies(policies.iter().cloned()).map_err(|e| PolicyError::DuplicateId(e.to_string()))
        };
        let mut slices = HashMap::new();
        for (app, mut policies) in by_app {
            policies.extend(everywhere.iter().cloned());
            slices.insert(app, set(&policies)?);
        }
        let unsliced = set(&everywhere)?;
        let count = all.policies().count();
        Ok(Self {
            schema,
            entities,
            everywhere,
            slices,
            unsliced,
            authorizer: Authorizer::new(),
            count,
            by_pair: Mutex::new(HashMap::new()),
        })
    }

    /// How many policies are loaded.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no policy is loaded (every request is denied).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Decides `request` (context as JSON, checked against the schema: for tools and people).
    /// Deny by default; any error (an unknown entity, a context that does not fit the schema, a
    /// policy that fails to evaluate) is a deny that lists it.
    pub fn decide(&self, request: &DecisionRequest) -> Decision {
        let (principal, action, resource) = match parse_uids(&request.principal, &request.action, &request.resource) {
            Ok(uids) => uids,
            Err(e) => return Decision::deny(e),
        };
        let context = match Context::from_json_value(request.context.clone(), Some((&self.schema, &action))) {
            Ok(c) => c,
            Err(e) => return Decision::deny(format!("context: {e}")),
        };
        match Request::new(principal.clone(), action, resource.clone(), context, Some(&self.schema)) {
            Ok(r) => self.authorize(&r, &principal, &resource),
            Err(e) => Decision::deny(format!("request: {e}")),
        }
    }

    /// Decides with a typed context: the gateway's path. The same rules as [`Self::decide`].
    pub fn decide_with(&self, principal: &str, action: &str, resource: &str, context: &RequestContext) -> Decision {
        let (principal, action, resource) = match parse_uids(principal, action, resource) {
            Ok(uids) => uids,
            Err(e) => return Decision::deny(e),
        };
        let context = match context.to_cedar() {
            Ok(c) => c,
            Err(e) => return Decision::deny(e),
        };
        // The context fits the schema by construction; principal and resource types that the
        // action does not apply to match no validated policy, so they are denied by default.
        match Request::new(principal.clone(), action, resource.clone(), context, None) {
            Ok(r) => self.authorize(&r, &principal, &resource),
            Err(e) => Decision::deny(format!("request: {e}")),
        }
    }

    /// The policies that can apply to `principal` on `resource`: the application's slice, less
    /// those whose principal or resource scope cannot hold. Scopes are decided by the heads alone
    /// and the entities are fixed, so nothing that could apply is left out.
    fn policies_for(&self, principal: &EntityUid, resource: &EntityUid) -> Arc<PolicySet> {
        let key = (principal.clone(), resource.clone());
        if let Some(hit) = self.by_pair.lock().ok().and_then(|cache| cache.get(&key).cloned()) {
            return hit;
        }
        let slice =
            application_of(resource, &self.entities).and_then(|app| self.slices.get(&app)).unwrap_or(&self.unsliced);
        let applicable = slice.policies().filter(|p| {
            let principal_ok = match p.principal_constraint() {
                PrincipalConstraint::Any => true,
                PrincipalConstraint::Eq(u) => scope_holds(Some(&u), None, None, principal, &self.entities),
                PrincipalConstraint::In(g) => scope_holds(None, Some(&g), None, principal, &self.entities),
                PrincipalConstraint::Is(t) => scope_holds(None, None, Some(&t), principal, &self.entities),
                PrincipalConstraint::IsIn(t, g) => scope_holds(None, Some(&g), Some(&t), principal, &self.entities),
            };
            let resource_ok = match p.resource_constraint() {
                ResourceConstraint::Any => true,
                ResourceConstraint::Eq(u) => scope_holds(Some(&u), None, None, resource, &self.entities),
                ResourceConstraint::In(g) => scope_holds(None, Some(&g), None, resource, &self.entities),
                ResourceConstraint::Is(t) => scope_holds(None, None, Some(&t), resource, &self.entities),
                ResourceConstraint::IsIn(t, g) => scope_holds(None, Some(&g), Some(&t), resource, &self.entities),
            };
            principal_ok && resource_ok
        });
        // If building the narrower set fails (it cannot: the ids are unique), use the slice.
        let set = Arc::new(PolicySet::from_policies(applicable.cloned()).unwrap_or_else(|_| slice.clone()));
        if let Ok(mut cache) = self.by_pair.lock() {
            if cache.len() >= PAIR_CACHE {
                cache.clear();
            }
            cache.insert(key, Arc::clone(&set));
        }
        set
    }

    fn authorize(&self, request: &Request, principal: &EntityUid, resource: &EntityUid) -> Decision {
        let policies = self.policies_for(principal, resource);
        let response = self.authorizer.is_authorized(request, &policies, &self.entities);
        let errors: Vec<String> = response.diagnostics().errors().map(|e| e.to_string()).collect();
        let mut deciding: Vec<String> = response.diagnostics().reason().map(|id| id.to_string()).collect();
        deciding.sort();
        Decision { allow: response.decision() == CedarDecision::Allow && errors.is_empty(), policies: deciding, errors }
    }

    /// Checks a typed context against the schema (for tests and start-up checks).
    pub fn check_context(&self, action: &str, context: &RequestContext) -> Result<(), String> {
        let action = EntityUid::from_str(action).map_err(|e| e.to_string())?;
        let principal = EntityUid::from_str("Zerogate::User::\"check\"").map_err(|e| e.to_string())?;
        let resource = EntityUid::from_str("Zerogate::Application::\"check\"").map_err(|e| e.to_string())?;
        Request::new(principal, action, resource, context.to_cedar()?, Some(&self.schema))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The policies that apply everywhere (no resource scope).
    pub fn unscoped(&self) -> impl Iterator<Item = String> + '_ {
        self.everywhere.iter().map(|p| p.id().to_string())
    }
}

fn parse_uids(principal: &str, action: &str, resource: &str) -> Result<(EntityUid, EntityUid, EntityUid), String> {
    let parse = |what: &str, text: &str| EntityUid::from_str(text).map_err(|e| format!("{what} `{text}`: {e}"));
    Ok((parse("principal", principal)?, parse("action", action)?, parse("resource", resource)?))
}

/// Cedar's parse errors as text (each with its message and help).
fn miette_text(errors: &cedar_policy::ParseErrors) -> String {
    errors.to_string()
}
