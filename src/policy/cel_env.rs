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

/// Largest values the variables may hold: an expression's cost is estimated against these
/// ([`variable_shape`]) and a request whose variables exceed them is refused
/// ([`CelVariables::oversized`]). Client values are also refused when the config compiles.
pub mod limits {
    /// `request.scopes`: entries, and bytes of each (an AuthScope name is at most 256).
    pub const SCOPES: u64 = 64;
    pub const SCOPE_BYTES: u64 = 256;
    /// `request.audience`: as the AuthorizationServer CRD bounds `audiences`.
    pub const AUDIENCES: u64 = 16;
    pub const AUDIENCE_BYTES: u64 = 512;
    /// `user.groups` and `user.amr`: entries, and bytes of each.
    pub const GROUPS: u64 = 256;
    pub const GROUP_BYTES: u64 = 256;
    pub const AMR: u64 = 16;
    pub const AMR_BYTES: u64 = 64;
    /// `user.sub`, `user.name`, `user.email`.
    pub const USER_FIELD_BYTES: u64 = 512;
    /// `user.attributes` and `subject`, as JSON text.
    pub const ATTRIBUTES_BYTES: u64 = 8 * 1024;
    pub const SUBJECT_BYTES: u64 = 16 * 1024;
    /// `client.metadata`: entries, bytes of each key and of each value.
    pub const METADATA_ENTRIES: u64 = 64;
    pub const METADATA_KEY_BYTES: u64 = 256;
    pub const METADATA_VALUE_BYTES: u64 = 1024;
    /// `client.namespaceLabels`: entries, and Kubernetes' own bounds on a label's key
    /// (a 253-byte prefix, `/` and a 63-byte name) and value.
    pub const NAMESPACE_LABELS: u64 = 64;
    pub const NAMESPACE_LABEL_KEY_BYTES: u64 = 317;
    pub const NAMESPACE_LABEL_VALUE_BYTES: u64 = 63;
    /// `client.id`, `client.name`, `client.namespace`, `server.name`, `server.issuer`.
    pub const NAME_BYTES: u64 = 256;
    pub const ISSUER_BYTES: u64 = 2048;
    /// A field the shapes do not list (added to a variable later), as JSON text.
    pub const OTHER_FIELD_BYTES: u64 = 1024;
}

/// The list sizes above, as expressions' cost messages quote them.
pub const LIST_LIMITS: &str = "request.scopes 64, request.audience 16, user.groups 256, client.metadata 64 entries, client.namespaceLabels 64 entries, user.attributes and subject by their JSON size";

/// An upper bound on a CEL value, to estimate what evaluating an expression costs.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// null, a bool, a number, a duration or a timestamp.
    Scalar,
    /// A string or bytes of at most this many bytes.
    Text(u64),
    /// At most this many elements, each within the shape.
    List(u64, Arc<Shape>),
    /// At most this many entries, keys and values within the shapes.
    Map(u64, Arc<Shape>, Arc<Shape>),
    /// A map with these fields (or null).
    Object(Arc<[(&'static str, Shape)]>),
    /// Any JSON value of at most this many bytes of JSON text.
    Json(u64),
}

impl Shape {
    /// Steps to copy, compare or walk a value of this shape: one per value, one per 128 bytes
    /// (an interpreter step costs about what copying 128 bytes does).
    pub fn weight(&self) -> u64 {
        match self {
            Shape::Scalar => 1,
            Shape::Text(n) => 1 + n / 128,
            Shape::List(n, e) => n.saturating_mul(e.weight()).saturating_add(1),
            Shape::Map(n, k, v) => n.saturating_mul(k.weight().saturating_add(v.weight())).saturating_add(1),
            Shape::Object(fields) => fields.iter().fold(1, |w, (_, s)| w.saturating_add(s.weight())),
            Shape::Json(t) => 1 + t / 2,
        }
    }

    /// Most iterations of a comprehension over a value of this shape.
    pub fn len(&self) -> u64 {
        match self {
            Shape::List(n, _) | Shape::Map(n, _, _) => *n,
            Shape::Object(fields) => fields.len() as u64,
            Shape::Json(t) => t / 2,
            Shape::Scalar | Shape::Text(_) => 0,
        }
    }

    /// What a comprehension binds its variable to: elements of a list, keys of a map.
    pub fn elem(&self) -> Shape {
        match self {
            Shape::List(_, e) | Shape::Map(_, e, _) => (**e).clone(),
            Shape::Object(_) => Shape::Text(limits::NAME_BYTES),
            Shape::Json(t) => Shape::Json(*t),
            Shape::Scalar | Shape::Text(_) => Shape::Scalar,
        }
    }

    /// What indexing gives: an element of a list, a value of a map.
    pub fn index(&self) -> Shape {
        match self {
            Shape::List(_, e) | Shape::Map(_, _, e) => (**e).clone(),
            Shape::Object(fields) => fields.iter().fold(Shape::Json(limits::OTHER_FIELD_BYTES), |a, (_, s)| a.join(s)),
            Shape::Json(t) => Shape::Json(*t),
            Shape::Scalar | Shape::Text(_) => Shape::Scalar,
        }
    }

    /// What selecting `name` gives.
    pub fn field(&self, name: &str) -> Shape {
        match self {
            Shape::Object(fields) => fields
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(Shape::Json(limits::OTHER_FIELD_BYTES), |(_, s)| s.clone()),
            other => other.index(),
        }
    }

    /// Most bytes of the value as JSON text.
    pub fn bytes(&self) -> u64 {
        match self {
            Shape::Scalar => 24,
            Shape::Text(n) => n.saturating_add(2),
            Shape::List(n, e) => n.saturating_mul(e.bytes().saturating_add(1)).saturating_add(2),
            Shape::Map(n, k, v) => {
                n.saturating_mul(k.bytes().saturating_add(v.bytes()).saturating_add(2)).saturating_add(2)
            }
            Shape::Object(fields) => {
                fields.iter().fold(2, |b, (n, s)| b.saturating_add(n.len() as u64 + 4).saturating_add(s.bytes()))
            }
            Shape::Json(t) => *t,
        }
    }

    /// A shape that bounds both.
    pub fn join(&self, other: &Shape) -> Shape {
        match (self, other) {
            (a, b) if a == b => a.clone(),
            (Shape::Scalar, x) | (x, Shape::Scalar) => x.clone(),
            (Shape::Text(a), Shape::Text(b)) => Shape::Text(*a.max(b)),
            (Shape::List(a, e), Shape::List(b, f)) => Shape::List(*a.max(b), Arc::new(e.join(f))),
            (Shape::Map(a, k, v), Shape::Map(b, l, w)) => {
                Shape::Map(*a.max(b), Arc::new(k.join(l)), Arc::new(v.join(w)))
            }
            (a, b) => Shape::Json(a.bytes().max(b.bytes())),
        }
    }

    /// What `a + b` gives.
    pub fn concat(&self, other: &Shape) -> Shape {
        match (self, other) {
            (Shape::Scalar, Shape::Scalar) => Shape::Scalar,
            (Shape::Text(a), Shape::Text(b)) => Shape::Text(a.saturating_add(*b)),
            (Shape::List(a, e), Shape::List(b, f)) => Shape::List(a.saturating_add(*b), Arc::new(e.join(f))),
            (a, b) => Shape::Json(a.bytes().saturating_add(b.bytes())),
        }
    }

    /// Whether `v` is within this shape.
    fn fits(&self, v: &Value) -> bool {
        match (self, v) {
            (_, Value::Null | Value::Bool(_) | Value::Number(_)) => true,
            (Shape::Json(t), v) => json_len(v) <= *t,
            (Shape::Text(n), Value::String(s)) => s.len() as u64 <= *n,
            (Shape::List(n, e), Value::Array(a)) => a.len() as u64 <= *n && a.iter().all(|x| e.fits(x)),
            (Shape::Map(n, k, v), Value::Object(o)) => {
                o.len() as u64 <= *n && o.iter().all(|(key, x)| k.fits(&Value::String(key.clone())) && v.fits(x))
            }
            (Shape::Object(_), Value::Object(o)) => o.iter().all(|(key, x)| self.field(key).fits(x)),
            _ => false,
        }
    }
}

/// Bytes of `v` as JSON text, counted without building it.
fn json_len(v: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    match serde_json::to_writer(&mut c, v) {
        Ok(()) => c.0,
        Err(_) => u64::MAX,
    }
}

/// The largest value variable `name` may hold, `None` for a name that is not a variable.
pub fn variable_shape(name: &str) -> Option<Shape> {
    use limits::*;
    let text = Shape::Text;
    let list = |n, each| Shape::List(n, Arc::new(Shape::Text(each)));
    Some(match name {
        "client" => Shape::Object(Arc::new([
            ("id", text(NAME_BYTES)),
            ("name", text(NAME_BYTES)),
            ("namespace", text(NAME_BYTES)),
            (
                "metadata",
                Shape::Map(METADATA_ENTRIES, Arc::new(text(METADATA_KEY_BYTES)), Arc::new(text(METADATA_VALUE_BYTES))),
            ),
            (
                "namespaceLabels",
                Shape::Map(
                    NAMESPACE_LABELS,
                    Arc::new(text(NAMESPACE_LABEL_KEY_BYTES)),
                    Arc::new(text(NAMESPACE_LABEL_VALUE_BYTES)),
                ),
            ),
            ("trusted", Shape::Scalar),
        ])),
        "user" => Shape::Object(Arc::new([
            ("sub", text(USER_FIELD_BYTES)),
            ("name", text(USER_FIELD_BYTES)),
            ("email", text(USER_FIELD_BYTES)),
            ("groups", list(GROUPS, GROUP_BYTES)),
            ("attributes", Shape::Json(ATTRIBUTES_BYTES)),
            ("amr", list(AMR, AMR_BYTES)),
        ])),
        "request" => Shape::Object(Arc::new([
            ("grantType", text(NAME_BYTES)),
            ("scopes", list(SCOPES, SCOPE_BYTES)),
            ("audience", list(AUDIENCES, AUDIENCE_BYTES)),
        ])),
        "server" => Shape::Object(Arc::new([("name", text(NAME_BYTES)), ("issuer", text(ISSUER_BYTES))])),
        "subject" => Shape::Json(SUBJECT_BYTES),
        _ => return None,
    })
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
