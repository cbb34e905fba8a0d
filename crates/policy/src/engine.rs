//! Loading policy sets (strictly validated) and deciding.

use std::collections::HashMap;
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, Policy, PolicyId, PolicySet, Request,
    ResourceConstraint, Schema, ValidationMode, Validator,
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
        Ok(Self { schema, entities, everywhere, slices, unsliced, authorizer: Authorizer::new(), count })
    }

    /// How many policies are loaded.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no policy is loaded (every request is denied).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Decides `request`. Deny by default; any error (an unknown entity, a context that does not
    /// fit the schema, a policy that fails to evaluate) is a deny that lists it.
    pub fn decide(&self, request: &DecisionRequest) -> Decision {
        let parse = |what: &str, text: &str| EntityUid::from_str(text).map_err(|e| format!("{what} `{text}`: {e}"));
        let (principal, action, resource) = match (
            parse("principal", &request.principal),
            parse("action", &request.action),
            parse("resource", &request.resource),
        ) {
            (Ok(p), Ok(a), Ok(r)) => (p, a, r),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Decision::deny(e),
        };
        let context = match Context::from_json_value(request.context.clone(), Some((&self.schema, &action))) {
            Ok(c) => c,
            Err(e) => return Decision::deny(format!("context: {e}")),
        };
        let cedar_request = match Request::new(principal, action, resource.clone(), context, Some(&self.schema)) {
            Ok(r) => r,
            Err(e) => return Decision::deny(format!("request: {e}")),
        };
        let policies =
            application_of(&resource, &self.entities).and_then(|app| self.slices.get(&app)).unwrap_or(&self.unsliced);
        let response = self.authorizer.is_authorized(&cedar_request, policies, &self.entities);
        let errors: Vec<String> = response.diagnostics().errors().map(|e| e.to_string()).collect();
        let mut deciding: Vec<String> = response.diagnostics().reason().map(|id| id.to_string()).collect();
        deciding.sort();
        Decision { allow: response.decision() == CedarDecision::Allow && errors.is_empty(), policies: deciding, errors }
    }

    /// The policies that apply everywhere (no resource scope).
    pub fn unscoped(&self) -> impl Iterator<Item = String> + '_ {
        self.everywhere.iter().map(|p| p.id().to_string())
    }
}

/// Cedar's parse errors as text (each with its message and help).
fn miette_text(errors: &cedar_policy::ParseErrors) -> String {
    errors.to_string()
}
