//! The shapes of the variables CEL expressions see: the largest value each may hold, which
//! the cost estimate of an expression is computed against and a request's variables are
//! checked against.

use std::sync::Arc;

use serde_json::Value;

/// Largest values the variables may hold: an expression's cost is estimated against these
/// ([`variable_shape`]) and a request whose variables exceed them is refused
/// (the policy engine's `CelVariables::oversized`). Client values are also refused when the config compiles.
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
    pub fn fits(&self, v: &Value) -> bool {
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
