//! Loading policy sets (strictly validated) and deciding.

use std::collections::HashMap;
use std::str::FromStr;

use std::sync::{Arc, Mutex};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy,
    PolicyId, PolicySet, PrincipalConstraint, Request, ResourceConstraint, RestrictedExpression, Schema,
    ValidationMode, Validator,
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
    /// A file cannot be read.
    #[error("{0}")]
    Io(String),
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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    /// Equal in every field but `time`.
    fn eq_but_time(&self, other: &Self) -> bool {
        // Every field, by name: a field added to the context must be added here.
        let Self { authn, credential_id, source_ip, time: _, hour, device, posture, method, host, path, acr, amr } =
            self;
        *authn == other.authn
            && *credential_id == other.credential_id
            && *source_ip == other.source_ip
            && *hour == other.hour
            && *device == other.device
            && *posture == other.posture
            && *method == other.method
            && *host == other.host
            && *path == other.path
            && *acr == other.acr
            && *amr == other.amr
    }

    /// The Cedar context; `source_ip` is the address as a Cedar `ip(…)` expression (memoized by
    /// the engine: building one parses the extension's name with Cedar's grammar each time).
    fn to_cedar(&self, source_ip: RestrictedExpression, memo: &Memo) -> Result<Context, String> {
        let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
        let mut pairs = vec![
            ("authn".to_owned(), s(&self.authn)),
            ("credential_id".to_owned(), s(&self.credential_id)),
            ("source_ip".to_owned(), source_ip),
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
            let uid = memo.uid("device", device)?;
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
    slices: HashMap<EntityUid, Arc<PolicySet>>,
    /// For resources outside every slice.
    unsliced: Arc<PolicySet>,
    authorizer: Authorizer,
    count: usize,
    /// Per (principal, resource): only the policies whose scope can match them. A gateway sees
    /// the same pairs again and again; bounded, and cleared when full.
    by_pair: Mutex<HashMap<PairKey, Arc<PolicySet>>>,
    /// Per principal and asserted groups: the entities with the principal in those groups.
    with_groups: Mutex<HashMap<GroupsKey, Arc<Entities>>>,
    group_type: EntityTypeName,
    memo: Memo,
    /// Decisions already made, by everything Cedar decides on: principal, asserted groups,
    /// action, resource and the whole context (its `time` only when a policy reads it). Cedar
    /// is a pure function of these and of this engine's policies and entities, which never
    /// change (a policy change builds a new engine), so a remembered decision is the decision.
    /// Bounded in entries and in bytes (a caller controls the path's length), and cleared when
    /// full.
    decisions: Mutex<DecisionCache>,
    /// Whether any policy's conditions mention `time` (then it is part of the decision key).
    reads_time: bool,
}

/// Everything a Cedar decision depends on besides the engine itself.
#[derive(Debug, Clone)]
struct DecisionKey {
    principal: String,
    groups: Vec<String>,
    action: String,
    resource: String,
    context: RequestContext,
}

/// Decisions remembered at most.
const DECISION_CACHE: usize = 16_384;
/// Bytes of text the remembered decisions may hold at most (keys and answers).
const DECISION_CACHE_BYTES: usize = 8 << 20;

/// Remembered decisions and the bytes of text they hold. Entries are found by a keyed hash of
/// the borrowed request and then compared field by field with the key they were made for, so a
/// lookup copies nothing; two requests with one hash share a slot (the later one replaces the
/// earlier), which costs a decision, never a wrong one.
#[derive(Default)]
struct DecisionCache {
    hasher: std::hash::RandomState,
    entries: HashMap<u64, (DecisionKey, Decision)>,
    bytes: usize,
}

/// What one remembered decision holds, roughly: its text and its fixed size.
fn entry_size(key: &DecisionKey, decision: &Decision) -> usize {
    key.text_bytes()
        + decision.policies.iter().chain(&decision.errors).map(String::len).sum::<usize>()
        + std::mem::size_of::<(u64, DecisionKey, Decision)>()
}

/// A request to decide, borrowed: what [`DecisionKey`] holds.
#[derive(Clone, Copy)]
struct DecisionView<'a> {
    principal: &'a str,
    /// Sorted and deduplicated.
    groups: &'a [String],
    action: &'a str,
    resource: &'a str,
    context: &'a RequestContext,
    /// Whether `context.time` is part of the decision.
    with_time: bool,
}

impl DecisionView<'_> {
    fn hash(&self, hasher: &std::hash::RandomState) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = hasher.build_hasher();
        (self.principal, self.groups, self.action, self.resource).hash(&mut h);
        // Every field, by name: a field added to the context must be added here.
        let RequestContext {
            authn,
            credential_id,
            source_ip,
            time,
            hour,
            device,
            posture,
            method,
            host,
            path,
            acr,
            amr,
        } = self.context;
        (authn, credential_id, source_ip, hour, device, posture, method, host, path, acr, amr).hash(&mut h);
        if self.with_time {
            time.hash(&mut h);
        }
        h.finish()
    }

    /// Whether `key` was made for this request.
    fn is(&self, key: &DecisionKey) -> bool {
        let (mine, theirs) = (self.context, &key.context);
        key.principal == self.principal
            && key.groups == self.groups
            && key.action == self.action
            && key.resource == self.resource
            && (!self.with_time || mine.time == theirs.time)
            && mine.eq_but_time(theirs)
    }

    fn to_key(self) -> DecisionKey {
        let mut context = self.context.clone();
        if !self.with_time {
            context.time = 0;
        }
        DecisionKey {
            principal: self.principal.to_owned(),
            groups: self.groups.to_vec(),
            action: self.action.to_owned(),
            resource: self.resource.to_owned(),
            context,
        }
    }
}

impl DecisionKey {
    /// The bytes of text it holds, roughly (what a caller can make large).
    fn text_bytes(&self) -> usize {
        let context = &self.context;
        let optional = [&context.method, &context.host, &context.path, &context.acr, &context.device]
            .iter()
            .map(|v| v.as_ref().map_or(0, String::len))
            .sum::<usize>();
        let posture = context
            .posture
            .as_ref()
            .map_or(0, |p| p.os.as_ref().map_or(0, String::len) + p.os_version.as_ref().map_or(0, String::len));
        self.principal.len()
            + self.groups.iter().map(String::len).sum::<usize>()
            + self.action.len()
            + self.resource.len()
            + context.authn.len()
            + context.credential_id.len()
            + context.amr.as_ref().map_or(0, |amr| amr.iter().map(String::len).sum())
            + optional
            + posture
    }
}

/// Whether any condition of `policies` can read the context's `time`. Cedar names attributes
/// only literally (there is no computed attribute access), so a policy whose JSON form, less its
/// annotations, holds no string `time` cannot depend on it. A policy that cannot be rendered
/// counts as reading it.
fn policies_read_time<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> bool {
    policies.into_iter().any(|policy| match policy.to_json() {
        Ok(mut json) => {
            if let Some(fields) = json.as_object_mut() {
                fields.remove("annotations");
            }
            json.to_string().contains("\"time\"")
        }
        Err(_) => true,
    })
}

/// A principal and the groups its credential asserted (sorted).
type GroupsKey = (EntityUid, Vec<String>);

/// Principal, resource, and the groups the credential asserted (sorted; empty for none).
type PairKey = (EntityUid, EntityUid, Vec<String>);

/// Principals with asserted groups remembered at most (each holds a copy of the entity map).
const GROUP_CACHE: usize = 256;
/// The most groups one credential may assert; more is an error (a deny).
pub const MAX_ASSERTED_GROUPS: usize = 256;

/// The principal of a request: its entity uid, and the groups its credential asserts (an OIDC
/// token's groups claim), which the principal joins in addition to those the entities give it.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// `Zerogate::User::"alice"`, …
    pub uid: &'a str,
    /// Group ids (`Zerogate::Group::"<id>"`), as asserted by the credential.
    pub groups: &'a [String],
}

/// Pairs remembered at most.
const PAIR_CACHE: usize = 16_384;
/// Parsed entity uids and address expressions remembered at most.
const MEMO_CAPACITY: usize = 16_384;

/// Values that Cedar builds from text at a cost (its grammar runs for every entity uid and for
/// the name of the `ip` extension function), remembered: a gateway sees the same principals,
/// resources and client addresses again and again. Bounded, and cleared when full.
#[derive(Default)]
struct Memo {
    uids: Mutex<HashMap<String, EntityUid>>,
    addresses: Mutex<HashMap<std::net::IpAddr, RestrictedExpression>>,
}

impl Memo {
    fn uid(&self, what: &str, text: &str) -> Result<EntityUid, String> {
        if let Some(uid) = self.uids.lock().ok().and_then(|m| m.get(text).cloned()) {
            return Ok(uid);
        }
        let uid = EntityUid::from_str(text).map_err(|e| format!("{what} `{text}`: {e}"))?;
        if let Ok(mut uids) = self.uids.lock() {
            if uids.len() >= MEMO_CAPACITY {
                uids.clear();
            }
            uids.insert(text.to_owned(), uid.clone());
        }
        Ok(uid)
    }

    fn address(&self, ip: std::net::IpAddr) -> RestrictedExpression {
        if let Some(expr) = self.addresses.lock().ok().and_then(|m| m.get(&ip).cloned()) {
            return expr;
        }
        let expr = RestrictedExpression::new_ip(ip.to_string());
        if let Ok(mut addresses) = self.addresses.lock() {
            if addresses.len() >= MEMO_CAPACITY {
                addresses.clear();
            }
            addresses.insert(ip, expr.clone());
        }
        expr
    }
}

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
            slices.insert(app, Arc::new(set(&policies)?));
        }
        let unsliced = Arc::new(set(&everywhere)?);
        let count = all.policies().count();
        let reads_time = policies_read_time(all.policies());
        Ok(Self {
            schema,
            entities,
            everywhere,
            slices,
            unsliced,
            authorizer: Authorizer::new(),
            count,
            by_pair: Mutex::new(HashMap::new()),
            with_groups: Mutex::new(HashMap::new()),
            group_type: EntityTypeName::from_str("Zerogate::Group").map_err(|e| PolicyError::Schema(e.to_string()))?,
            memo: Memo::default(),
            decisions: Mutex::new(DecisionCache::default()),
            reads_time,
        })
    }

    /// The ids of every loaded policy, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .everywhere
            .iter()
            .chain(self.slices.values().flat_map(|slice| slice.policies()))
            .map(|p| p.id().to_string())
            .collect();
        ids.sort();
        ids.dedup();
        ids
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
        self.decide_as(Principal { uid: principal, groups: &[] }, action, resource, context)
    }

    /// Decides for a principal whose credential asserts groups (the gateway's path for OIDC).
    pub fn decide_as(
        &self,
        principal: Principal<'_>,
        action: &str,
        resource: &str,
        context: &RequestContext,
    ) -> Decision {
        // The groups sorted and deduplicated, copied only when they are not already.
        let sorted;
        let groups: &[String] = if principal.groups.is_sorted_by(|a, b| a < b) {
            principal.groups
        } else {
            let mut copy = principal.groups.to_vec();
            copy.sort();
            copy.dedup();
            sorted = copy;
            &sorted
        };
        let view =
            DecisionView { principal: principal.uid, groups, action, resource, context, with_time: self.reads_time };
        let hash = self.decisions.lock().ok().map(|cache| {
            let hash = view.hash(&cache.hasher);
            (hash, cache.entries.get(&hash).filter(|(key, _)| view.is(key)).map(|(_, decision)| decision.clone()))
        });
        let hash = match hash {
            Some((_, Some(hit))) => return hit,
            Some((hash, None)) => Some(hash),
            None => None,
        };
        let decision = self.decide_uncached(principal.uid, groups, action, resource, context);
        let (Some(hash), Ok(mut cache)) = (hash, self.decisions.lock()) else { return decision };
        let key = view.to_key();
        let size = entry_size(&key, &decision);
        if cache.entries.len() >= DECISION_CACHE || cache.bytes + size > DECISION_CACHE_BYTES {
            cache.entries.clear();
            cache.bytes = 0;
        }
        if size <= DECISION_CACHE_BYTES / 64 {
            if let Some((key, decision)) = cache.entries.insert(hash, (key, decision.clone())) {
                cache.bytes = cache.bytes.saturating_sub(entry_size(&key, &decision));
            }
            cache.bytes += size;
        }
        decision
    }

    /// [`Self::decide_as`] without the decision cache; `groups` sorted and deduplicated.
    fn decide_uncached(
        &self,
        principal: &str,
        groups: &[String],
        action: &str,
        resource: &str,
        context: &RequestContext,
    ) -> Decision {
        let uids = (|| {
            Ok::<_, String>((
                self.memo.uid("principal", principal)?,
                self.memo.uid("action", action)?,
                self.memo.uid("resource", resource)?,
            ))
        })();
        let (principal_uid, action, resource) = match uids {
            Ok(uids) => uids,
            Err(e) => return Decision::deny(e),
        };
        let dynamic;
        let entities = if groups.is_empty() {
            &self.entities
        } else {
            match self.entities_with_groups(&principal_uid, groups) {
                Ok(entities) => {
                    dynamic = entities;
                    &*dynamic
                }
                Err(e) => return Decision::deny(e),
            }
        };
        let context = match context.to_cedar(self.memo.address(context.source_ip), &self.memo) {
            Ok(c) => c,
            Err(e) => return Decision::deny(e),
        };
        // The context fits the schema by construction; principal and resource types that the
        // action does not apply to match no validated policy, so they are denied by default.
        match Request::new(principal_uid.clone(), action, resource.clone(), context, None) {
            Ok(r) => self.authorize_in(&r, (principal_uid, resource, groups.to_vec()), entities),
            Err(e) => Decision::deny(format!("request: {e}")),
        }
    }

    /// The entities with `principal` also in `groups` (sorted, deduplicated), remembered.
    fn entities_with_groups(&self, principal: &EntityUid, groups: &[String]) -> Result<Arc<Entities>, String> {
        if groups.len() > MAX_ASSERTED_GROUPS {
            return Err(format!("the credential asserts {} groups, more than {MAX_ASSERTED_GROUPS}", groups.len()));
        }
        let key = (principal.clone(), groups.to_vec());
        if let Some(hit) = self.with_groups.lock().ok().and_then(|cache| cache.get(&key).cloned()) {
            return Ok(hit);
        }
        let asserted =
            groups.iter().map(|group| EntityUid::from_type_name_and_id(self.group_type.clone(), EntityId::new(group)));
        let entity = match self.entities.get(principal) {
            Some(known) => {
                let (uid, attrs, mut parents) = known.clone().into_inner();
                parents.extend(asserted);
                Entity::new(uid, attrs, parents).map_err(|e| format!("principal: {e}"))?
            }
            None => Entity::new_no_attrs(principal.clone(), asserted.collect()),
        };
        let entities = Arc::new(
            self.entities.clone().upsert_entities([entity], None).map_err(|e| format!("principal groups: {e}"))?,
        );
        if let Ok(mut cache) = self.with_groups.lock() {
            if cache.len() >= GROUP_CACHE {
                cache.clear();
            }
            cache.insert(key, Arc::clone(&entities));
        }
        Ok(entities)
    }

    /// The policies that can apply to `principal` on `resource`: the application's slice, less
    /// those whose principal or resource scope cannot hold. Scopes are decided by the heads alone
    /// and the entities are fixed, so nothing that could apply is left out.
    fn policies_for(&self, key: PairKey, entities: &Entities) -> Arc<PolicySet> {
        if let Some(hit) = self.by_pair.lock().ok().and_then(|cache| cache.get(&key).cloned()) {
            return hit;
        }
        let (principal, resource) = (&key.0, &key.1);
        let slice =
            application_of(resource, &self.entities).and_then(|app| self.slices.get(&app)).unwrap_or(&self.unsliced);
        let applicable = slice.policies().filter(|p| {
            let principal_ok = match p.principal_constraint() {
                PrincipalConstraint::Any => true,
                PrincipalConstraint::Eq(u) => scope_holds(Some(&u), None, None, principal, entities),
                PrincipalConstraint::In(g) => scope_holds(None, Some(&g), None, principal, entities),
                PrincipalConstraint::Is(t) => scope_holds(None, None, Some(&t), principal, entities),
                PrincipalConstraint::IsIn(t, g) => scope_holds(None, Some(&g), Some(&t), principal, entities),
            };
            let resource_ok = match p.resource_constraint() {
                ResourceConstraint::Any => true,
                ResourceConstraint::Eq(u) => scope_holds(Some(&u), None, None, resource, entities),
                ResourceConstraint::In(g) => scope_holds(None, Some(&g), None, resource, entities),
                ResourceConstraint::Is(t) => scope_holds(None, None, Some(&t), resource, entities),
                ResourceConstraint::IsIn(t, g) => scope_holds(None, Some(&g), Some(&t), resource, entities),
            };
            principal_ok && resource_ok
        });
        // If building the narrower set fails (it cannot: the ids are unique), use the slice.
        let set = PolicySet::from_policies(applicable.cloned()).map_or_else(|_| Arc::clone(slice), Arc::new);
        if let Ok(mut cache) = self.by_pair.lock() {
            if cache.len() >= PAIR_CACHE {
                cache.clear();
            }
            cache.insert(key, Arc::clone(&set));
        }
        set
    }

    fn authorize(&self, request: &Request, principal: &EntityUid, resource: &EntityUid) -> Decision {
        self.authorize_in(request, (principal.clone(), resource.clone(), Vec::new()), &self.entities)
    }

    fn authorize_in(&self, request: &Request, key: PairKey, entities: &Entities) -> Decision {
        let policies = self.policies_for(key, entities);
        let response = self.authorizer.is_authorized(request, &policies, entities);
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
        let cedar = context.to_cedar(self.memo.address(context.source_ip), &self.memo)?;
        Request::new(principal, action, resource, cedar, Some(&self.schema)).map(|_| ()).map_err(|e| e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller chooses the path: remembered decisions must not let it grow the gateway's memory
    /// without bound, however long and however many its paths.
    #[test]
    fn remembered_decisions_stay_within_their_byte_bound() {
        let policy =
            r#"permit (principal, action == Zerogate::Action::"http", resource == Zerogate::Application::"wiki");"#;
        let entities = serde_json::json!([
            { "uid": { "type": "Zerogate::Application", "id": "wiki" }, "attrs": {}, "parents": [] }
        ]);
        let engine = PolicyEngine::load(&[("p.cedar".into(), policy.into())], entities).unwrap();
        let mut context = RequestContext {
            authn: "oidc".into(),
            credential_id: "jti:1".into(),
            source_ip: "10.0.0.1".parse().unwrap(),
            time: 0,
            hour: 0,
            device: None,
            posture: None,
            method: Some("GET".into()),
            host: Some("wiki.example.org".into()),
            path: None,
            acr: None,
            amr: None,
        };
        let (user, http, wiki) =
            ("Zerogate::User::\"u\"", "Zerogate::Action::\"http\"", "Zerogate::Application::\"wiki\"");
        let long = "a".repeat(60 * 1024);
        for n in 0..400 {
            context.path = Some(format!("/{n}/{long}"));
            assert!(engine.decide_with(user, http, wiki, &context).allow);
            let cache = engine.decisions.lock().unwrap();
            assert!(cache.bytes <= DECISION_CACHE_BYTES, "{} bytes remembered", cache.bytes);
        }
        // Short paths are remembered (the bound is not simply "never").
        context.path = Some("/short".into());
        engine.decide_with(user, http, wiki, &context);
        assert!(
            engine.decisions.lock().unwrap().entries.values().any(|(k, _)| k.context.path.as_deref() == Some("/short"))
        );
        for n in 0..(DECISION_CACHE + 10) {
            context.path = Some(format!("/{n}"));
            engine.decide_with(user, http, wiki, &context);
            assert!(engine.decisions.lock().unwrap().entries.len() <= DECISION_CACHE);
        }
    }
}
