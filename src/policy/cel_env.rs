//! The variables CEL expressions see: client, user, request, server, subject.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use std::collections::HashMap;

use cel::common::types::{CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;

use crate::api::GrantType;
use crate::config::{ClientConfig, ServerConfig, StandardClaims};
use crate::expression::{limits, variable_shape};

/// The standard CEL environment, built once per process (building it per request is costly).
fn stdlib() -> &'static Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib()))
}

/// The person a user grant is made for (null for machine grants).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserInfo {
    pub sub: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub attributes: Map<String, Value>,
    #[serde(default)]
    pub amr: Vec<String>,
    /// Released by scope to userinfo (and asked-for ID tokens); expressions do not see them.
    #[serde(default, skip_serializing_if = "StandardClaims::is_empty")]
    pub standard: StandardClaims,
}

/// The names CEL expressions can use, in the order of [`CelVariables`]'s slots.
const NAMES: [&str; 5] = ["client", "user", "request", "server", "subject"];

/// The CEL variables of one request, shared by every condition and claim it evaluates.
///
/// Each variable is converted to CEL's representation only when an expression first reads it
/// and then borrowed by every later one: a request evaluates several programs, and most read
/// only one or two of the five variables.
pub struct CelVariables {
    /// `client` and `server`, fixed by the config and the client (and so shareable).
    fixed: Arc<FixedVariables>,
    /// `user` and `subject`.
    user: Value,
    subject: Value,
    /// What `request` holds, made into JSON only if an expression reads it.
    grant_type: GrantType,
    scopes: Vec<String>,
    audience: Vec<String>,
    request: OnceLock<Value>,
    converted: [OnceLock<Box<dyn Val>>; 5],
}

/// The `client` and `server` variables of one client of one config, as JSON.
#[derive(Debug)]
pub struct FixedVariables {
    client: Value,
    server: Value,
    /// The first of the two beyond its [`limits`].
    oversized: Option<&'static str>,
}

impl FixedVariables {
    pub fn new(server: &ServerConfig, client: &ClientConfig) -> Self {
        // namespace, namespaceLabels and trusted are the platform's word; metadata is the tenant's.
        let client = json!({
            "id": client.client_id, "name": client.name, "namespace": client.namespace, "metadata": client.metadata,
            "namespaceLabels": client.namespace_labels, "trusted": client.trusted,
        });
        let server = json!({ "name": server.name, "issuer": server.issuer });
        let oversized = oversized(&[("client", &client), ("server", &server)]);
        Self { client, server, oversized }
    }

    /// Whether the variables are within their [`limits`] (expressions are estimated for those).
    pub fn fits(&self) -> bool {
        self.oversized.is_none()
    }
}

/// The first of `vars` whose value is beyond its [`variable_shape`].
fn oversized(vars: &[(&'static str, &Value)]) -> Option<&'static str> {
    vars.iter().find(|(name, v)| !variable_shape(name).is_some_and(|s| s.fits(v))).map(|(name, _)| *name)
}

impl std::fmt::Debug for CelVariables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CelVariables").finish_non_exhaustive()
    }
}

impl VariableResolver for CelVariables {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let i = NAMES.iter().position(|n| *n == variable)?;
        let val = self.converted[i].get_or_init(|| to_val(self.json(i)));
        Some(CowVal::Borrowed(val.as_ref()))
    }
}

/// A JSON value as CEL's runtime value.
fn to_val(v: &Value) -> Box<dyn Val> {
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Box::new(CelInt::from(i)),
            (None, Some(u), _) => Box::new(CelUInt::from(u)),
            (_, _, Some(f)) => Box::new(CelDouble::from(f)),
            _ => Box::new(CelNull),
        },
        Value::String(s) => Box::new(CelString::from(s.clone())),
        Value::Array(a) => Box::new(CelList::from(a.iter().map(to_val).collect::<Vec<_>>())),
        Value::Object(o) => {
            let map: HashMap<CelMapKey<'static>, Box<dyn Val>> =
                o.iter().map(|(k, v)| (CelMapKey::from(k.clone()), to_val(v))).collect();
            Box::new(CelMap::from(map))
        }
    }
}

/// `user` as expressions see it: without the standard claims, whose size the variable
/// limits do not cover.
fn user_variable(u: &UserInfo) -> Value {
    let mut v = serde_json::to_value(u).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("standard");
    }
    v
}

impl CelVariables {
    /// The variables of a request, `client` and `server` made here (tests and benchmarks; the
    /// engine keeps them per client, see [`Self::with_fixed`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        server: &ServerConfig,
        client: &ClientConfig,
        grant_type: GrantType,
        scopes: &[String],
        audience: &[String],
        user: Option<&UserInfo>,
        subject: Option<&Map<String, Value>>,
    ) -> Self {
        Self::with_fixed(Arc::new(FixedVariables::new(server, client)), grant_type, scopes, audience, user, subject)
    }

    /// The variables of a request whose `client` and `server` were made before.
    pub fn with_fixed(
        fixed: Arc<FixedVariables>,
        grant_type: GrantType,
        scopes: &[String],
        audience: &[String],
        user: Option<&UserInfo>,
        subject: Option<&Map<String, Value>>,
    ) -> Self {
        Self {
            fixed,
            user: user.map_or(Value::Null, user_variable),
            subject: subject.map_or(Value::Null, |s| Value::Object(s.clone())),
            grant_type,
            scopes: scopes.to_vec(),
            audience: audience.to_vec(),
            request: OnceLock::new(),
            converted: Default::default(),
        }
    }

    /// Variable `i` of [`NAMES`], as JSON.
    pub(crate) fn json(&self, i: usize) -> &Value {
        match i {
            0 => &self.fixed.client,
            3 => &self.fixed.server,
            1 => &self.user,
            2 => self.request.get_or_init(
                || json!({ "grantType": self.grant_type.as_str(), "scopes": self.scopes, "audience": self.audience }),
            ),
            _ => &self.subject,
        }
    }

    /// The first variable beyond its [`limits`]: the request must then be refused, since
    /// expressions were admitted for values within them.
    pub fn oversized(&self) -> Option<&'static str> {
        self.fixed.oversized.or_else(|| {
            let counts = [
                (self.scopes.len() as u64 > limits::SCOPES, "request"),
                (self.scopes.iter().any(|s| s.len() as u64 > limits::SCOPE_BYTES), "request"),
                (self.audience.len() as u64 > limits::AUDIENCES, "request"),
                (self.audience.iter().any(|s| s.len() as u64 > limits::AUDIENCE_BYTES), "request"),
            ];
            counts
                .iter()
                .find(|(over, _)| *over)
                .map(|(_, name)| *name)
                .or_else(|| oversized(&[("user", &self.user), ("subject", &self.subject)]))
        })
    }

    /// The id of the client the request is from.
    pub fn client_id(&self) -> &str {
        self.fixed.client.get("id").and_then(Value::as_str).unwrap_or_default()
    }

    /// Everything `client.id` and `request` hold, as one string: equal keys, equal variables
    /// (`client` and `server` are fixed by the client id within one config).
    pub fn request_key(&self) -> String {
        let mut key = String::with_capacity(128);
        key.push_str(self.client_id());
        key.push('\n');
        key.push_str(self.grant_type.as_str());
        for list in [&self.scopes, &self.audience] {
            key.push('\n');
            for item in list {
                key.push_str(item);
                key.push(' ');
            }
        }
        key
    }

    /// A CEL context over the shared standard environment that reads the variables from here.
    pub fn context(&self) -> cel::Context<'_, '_> {
        let mut ctx = cel::Context::with_env(stdlib().clone());
        ctx.set_variable_resolver(self);
        ctx
    }
}
