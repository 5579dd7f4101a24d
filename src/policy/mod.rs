//! The decision engine: which policy and rule grant a token request, which scopes, for how
//! long, and the custom claims of the token. Pure: CEL programs are compiled once per config.

mod cel_env;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::{GrantType, RESERVED_CLAIMS, RESERVED_SCOPES, TokenKind};
use crate::config::{ClientConfig, RuleConfig, ServerConfig};

use cel_env::FixedVariables;
pub use cel_env::{CelVariables, UserInfo};

use crate::expression::{self, limits};

#[derive(Debug, thiserror::Error)]
#[error("{what}: CEL does not compile: {message}")]
pub struct PolicyError {
    pub what: String,
    pub message: String,
}

/// A token request as the policies see it.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    pub client: &'a ClientConfig,
    pub grant_type: GrantType,
    /// Scopes the request names; `None` when it names none (the server's defaults apply).
    pub scopes: Option<Vec<String>>,
    pub user: Option<&'a UserInfo>,
    /// Claims of the token-exchange subject or ServiceAccount assertion.
    pub subject: Option<&'a Map<String, Value>>,
    pub audience: Vec<String>,
}

/// What the rule that matched grants.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub policy: String,
    pub rule: String,
    pub scopes: Vec<String>,
    pub access_token_lifetime_secs: u64,
    pub refresh_token_lifetime_secs: u64,
    pub refresh_token_idle_timeout_secs: u64,
    pub id_token_lifetime_secs: u64,
}

/// Why no rule granted the request, as OAuth reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Denial {
    /// Some rule would have matched but for the scopes.
    InvalidScope,
    AccessDenied,
    /// A variable (`request`, `user`, `subject`, `client`) is beyond its [`limits`]: the
    /// expressions were admitted for values within them.
    TooLarge(&'static str),
}

/// Why one rule did or did not match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleTrace {
    pub rule: String,
    pub matched: bool,
    /// Every reason it did not match (empty when it matched).
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyTrace {
    pub policy: String,
    pub priority: u32,
    /// Set when the policy does not apply to the client; its rules were not evaluated.
    pub skipped: Option<String>,
    pub rules: Vec<RuleTrace>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyDecision {
    pub outcome: Result<Grant, Denial>,
    /// Each policy evaluated, in order, up to and including the one that matched.
    pub trace: Vec<PolicyTrace>,
    /// Scopes the decision was made for (the defaults when the request named none).
    pub requested_scopes: Vec<String>,
}

impl PolicyDecision {
    /// One line a client may read: why the request was refused.
    pub fn denial_description(&self) -> String {
        match self.outcome {
            Ok(_) => String::new(),
            Err(Denial::InvalidScope) => {
                "one or more requested scopes are not allowed for this client by any policy".to_owned()
            }
            Err(Denial::AccessDenied) => "no access policy allows this client and grant".to_owned(),
            Err(Denial::TooLarge(variable)) => format!(
                "the request's {variable} is larger than this server's policies admit (at most {} scopes, {} groups)",
                limits::SCOPES,
                limits::GROUPS
            ),
        }
    }
}

struct CompiledClaim {
    name: String,
    token: TokenKind,
    always_include: bool,
    scopes: Vec<String>,
    program: Compiled<Result<Value, String>>,
}

/// A CEL program, and what it gave before when its outcome is known without running it.
///
/// CEL has no clock, no randomness and (here) no functions of our own, so a program's outcome
/// depends only on the variables it reads. One that reads only `client` and `server` (fixed by
/// the config) is worked out once per client, on the client's first request (not when the
/// config loads: a config with many clients starts serving at once); one
/// that also reads `request` (grant type, scopes, audience) is remembered per client and
/// request, up to [`MEMO_ENTRIES`] of them. Most claims and conditions are of these two kinds,
/// and CEL's interpreter is a good part of a token's cost.
struct Compiled<T> {
    program: cel::Program,
    per_client: Option<HashMap<String, OnceLock<T>>>,
    per_request: Option<RwLock<HashMap<String, T>>>,
}

/// Outcomes remembered per program before the memory starts over (bounds what clients can make
/// us keep by varying their scopes).
const MEMO_ENTRIES: usize = 1024;

impl<T: Clone> Compiled<T> {
    fn new(fixed: &HashMap<String, Arc<FixedVariables>>, program: cel::Program) -> Self {
        let reads = |allowed: &[&str]| program.references().variables().iter().all(|v| allowed.contains(v));
        let only_fixed = reads(&["client", "server"]);
        let request_shaped = !only_fixed && reads(&["client", "server", "request"]);
        let per_client = only_fixed.then(|| fixed.keys().map(|id| (id.clone(), OnceLock::new())).collect());
        let per_request = request_shaped.then(RwLock::default);
        Self { program, per_client, per_request }
    }

    /// The outcome for the request `vars` describes.
    fn outcome(&self, vars: &CelVariables, outcome: impl Fn(&cel::Program, &CelVariables) -> T) -> T {
        if let Some(once) = self.per_client.as_ref().and_then(|m| m.get(vars.client_id())) {
            // Reads only `client` and `server`: the same for every request of this client.
            return once.get_or_init(|| outcome(&self.program, vars)).clone();
        }
        let Some(memo) = &self.per_request else { return outcome(&self.program, vars) };
        let key = vars.request_key();
        if let Some(known) = memo.read().ok().and_then(|m| m.get(&key).cloned()) {
            return known;
        }
        let fresh = outcome(&self.program, vars);
        if let Ok(mut m) = memo.write() {
            if m.len() >= MEMO_ENTRIES {
                m.clear();
            }
            m.insert(key, fresh.clone());
        }
        fresh
    }
}

/// A claim's value: JSON, `Null` when the expression gives null (the claim is left out).
fn claim_value(program: &cel::Program, vars: &CelVariables) -> Result<Value, String> {
    let ctx = vars.context();
    match program.execute(&ctx) {
        Ok(cel::Value::Null) => Ok(Value::Null),
        Ok(v) => v.json().map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Why a rule's condition does not hold (`None`: it holds).
fn condition_failure(program: &cel::Program, vars: &CelVariables) -> Option<String> {
    match program.execute(&vars.context()) {
        Ok(cel::Value::Bool(true)) => None,
        Ok(cel::Value::Bool(false)) => Some("condition is false".to_owned()),
        Ok(v) => Some(format!("condition returned {:?}, not a bool", v.type_of())),
        Err(e) => Some(format!("condition failed: {e}")),
    }
}

/// Policies and claims of one `ServerConfig`, their CEL compiled.
pub struct PolicyEngine {
    conditions: Vec<Vec<Option<Compiled<Option<String>>>>>,
    claims: Vec<CompiledClaim>,
    /// The `client` and `server` variables of each client, made once.
    fixed: HashMap<String, Arc<FixedVariables>>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("claims", &self.claims.len()).finish_non_exhaustive()
    }
}

fn compile_cel(what: impl FnOnce() -> String, source: &str) -> Result<cel::Program, PolicyError> {
    expression::compile(source).map_err(|e| PolicyError { what: what(), message: e.to_string() })
}

impl PolicyEngine {
    pub fn new(config: &ServerConfig) -> Result<Self, PolicyError> {
        let fixed: HashMap<String, Arc<FixedVariables>> =
            config.clients.iter().map(|c| (c.client_id.clone(), Arc::new(FixedVariables::new(config, c)))).collect();
        let mut conditions = Vec::with_capacity(config.policies.len());
        for p in &config.policies {
            let mut rules = Vec::with_capacity(p.rules.len());
            for r in &p.rules {
                rules.push(match &r.condition {
                    Some(c) => {
                        Some(Compiled::new(&fixed, compile_cel(|| format!("policy {} rule {}", p.name, r.name), c)?))
                    }
                    None => None,
                });
            }
            conditions.push(rules);
        }
        let mut claims = Vec::with_capacity(config.claims.len());
        for c in &config.claims {
            claims.push(CompiledClaim {
                name: c.name.clone(),
                token: c.token,
                always_include: c.always_include,
                scopes: c.scopes.clone(),
                program: Compiled::new(&fixed, compile_cel(|| format!("claim {}", c.name), &c.value)?),
            });
        }
        Ok(Self { conditions, claims, fixed })
    }

    /// Evaluates the policies in order; the first matching rule decides.
    pub fn decide(&self, config: &ServerConfig, req: &TokenRequest<'_>) -> PolicyDecision {
        self.decide_with_variables(config, req).0
    }

    /// [`Self::decide`], also returning the CEL variables it evaluated with: the same ones the
    /// granted token's claims need (a grant's scopes are the requested ones), built once.
    pub fn decide_with_variables(
        &self,
        config: &ServerConfig,
        req: &TokenRequest<'_>,
    ) -> (PolicyDecision, CelVariables) {
        let requested: Vec<String> = match &req.scopes {
            Some(s) => s.clone(),
            None => config.scopes.iter().filter(|s| s.default).map(|s| s.name.clone()).collect(),
        };
        let fixed = match self.fixed.get(&req.client.client_id) {
            Some(f) => f.clone(),
            None => Arc::new(FixedVariables::new(config, req.client)),
        };
        let vars = CelVariables::with_fixed(fixed, req.grant_type, &requested, &req.audience, req.user, req.subject);
        if let Some(variable) = vars.oversized() {
            let decision = PolicyDecision {
                outcome: Err(Denial::TooLarge(variable)),
                trace: Vec::new(),
                requested_scopes: requested,
            };
            return (decision, vars);
        }
        let decision = self.decide_in(config, req, requested, &vars);
        (decision, vars)
    }

    fn decide_in(
        &self,
        config: &ServerConfig,
        req: &TokenRequest<'_>,
        requested: Vec<String>,
        vars: &CelVariables,
    ) -> PolicyDecision {
        let mut trace = Vec::new();
        let mut scopes_only = false;
        for (p, conditions) in config.policies.iter().zip(&self.conditions) {
            if !p.clients.matches(&req.client.client_id) {
                trace.push(PolicyTrace {
                    policy: p.name.clone(),
                    priority: p.priority,
                    skipped: Some(format!("client {} is not among the policy's clients", req.client.client_id)),
                    rules: Vec::new(),
                });
                continue;
            }
            let mut rules = Vec::new();
            for (r, condition) in p.rules.iter().zip(conditions) {
                let (other, scope) = rule_mismatch(config, r, condition.as_ref(), req, &requested, vars);
                let matched = other.is_empty() && scope.is_empty();
                scopes_only |= other.is_empty() && !scope.is_empty();
                rules.push(RuleTrace {
                    rule: r.name.clone(),
                    matched,
                    reasons: other.into_iter().chain(scope).collect(),
                });
                if matched {
                    trace.push(PolicyTrace { policy: p.name.clone(), priority: p.priority, skipped: None, rules });
                    let grant = Grant {
                        policy: p.name.clone(),
                        rule: r.name.clone(),
                        scopes: requested.clone(),
                        access_token_lifetime_secs: r.access_token_lifetime_secs,
                        refresh_token_lifetime_secs: r.refresh_token_lifetime_secs,
                        refresh_token_idle_timeout_secs: r.refresh_token_idle_timeout_secs,
                        id_token_lifetime_secs: r.id_token_lifetime_secs,
                    };
                    return PolicyDecision { outcome: Ok(grant), trace, requested_scopes: requested };
                }
            }
            trace.push(PolicyTrace { policy: p.name.clone(), priority: p.priority, skipped: None, rules });
        }
        let denial = if scopes_only || requested.is_empty() { Denial::InvalidScope } else { Denial::AccessDenied };
        PolicyDecision { outcome: Err(denial), trace, requested_scopes: requested }
    }

    /// Custom claims of a token of kind `token` for granted `scopes`: each CEL value, nulls
    /// omitted, reserved names never set. Evaluation errors are returned beside the claims.
    /// `all` false leaves out ID token claims that are not `alwaysInclude` (served by userinfo).
    pub fn claims(
        &self,
        token: TokenKind,
        vars: &CelVariables,
        scopes: &[String],
        all: bool,
    ) -> (Map<String, Value>, Vec<(String, String)>) {
        let mut out = Map::new();
        let mut errors = Vec::new();
        for c in self.claims.iter().filter(|c| c.token == token && (all || c.always_include)) {
            if RESERVED_CLAIMS.contains(&c.name.as_str()) {
                continue;
            }
            if !c.scopes.is_empty() && !c.scopes.iter().any(|s| scopes.contains(s)) {
                continue;
            }
            match c.program.outcome(vars, claim_value) {
                Ok(Value::Null) => {}
                Ok(json) => {
                    out.insert(c.name.clone(), json);
                }
                Err(e) => errors.push((c.name.clone(), e)),
            }
        }
        (out, errors)
    }
}

/// Reasons `rule` does not match: (everything but scopes, scopes).
fn rule_mismatch(
    config: &ServerConfig,
    rule: &RuleConfig,
    condition: Option<&Compiled<Option<String>>>,
    req: &TokenRequest<'_>,
    requested: &[String],
    vars: &CelVariables,
) -> (Vec<String>, Vec<String>) {
    let mut other = Vec::new();
    if !rule.grant_types.contains(&req.grant_type) {
        other.push(format!("grant type {} is not among the rule's grantTypes", req.grant_type.as_str()));
    }
    if req.grant_type.is_user_grant()
        && let Some(users) = &rule.users
        && !users.everyone.unwrap_or(false)
    {
        let ok = req.user.is_some_and(|u| {
            users.subjects.iter().flatten().any(|s| *s == u.sub)
                || users.groups.iter().flatten().any(|g| u.groups.contains(g))
        });
        if !ok {
            other.push("user is not among the rule's users".to_owned());
        }
    }
    if let Some(failure) = condition.and_then(|c| c.outcome(vars, condition_failure)) {
        other.push(failure);
    }
    let mut scope = Vec::new();
    if requested.is_empty() {
        scope.push("no scope requested and the server has no default scopes".to_owned());
    }
    let any = rule.scopes.iter().any(|s| s == "*");
    for s in requested {
        let defined = config.scope(s).is_some() || RESERVED_SCOPES.contains(&s.as_str());
        if !defined {
            scope.push(format!("scope {s} is not defined on this server"));
        } else if !any && !rule.scopes.contains(s) {
            scope.push(format!("scope {s} is not allowed by the rule"));
        } else if RESERVED_SCOPES.contains(&s.as_str()) && !req.grant_type.is_user_grant() {
            scope.push(format!("scope {s} needs a user; grant {} has none", req.grant_type.as_str()));
        }
    }
    (other, scope)
}

#[cfg(test)]
mod tests;
