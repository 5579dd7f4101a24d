//! The variables CEL expressions see: client, user, request, server, subject.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::api::GrantType;
use crate::config::{ClientConfig, ServerConfig};

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
}

/// The CEL variables of one request, converted once and shared by conditions and claims.
pub struct CelVariables {
    values: Vec<(&'static str, cel::Value)>,
}

fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => cel::Value::Int(i),
            (None, Some(u), _) => cel::Value::UInt(u),
            (_, _, Some(f)) => cel::Value::Float(f),
            _ => cel::Value::Null,
        },
        Value::String(s) => cel::Value::String(s.clone().into()),
        Value::Array(a) => cel::Value::List(a.iter().map(to_cel).collect::<Vec<_>>().into()),
        Value::Object(o) => {
            let map: std::collections::HashMap<cel::objects::Key, cel::Value> =
                o.iter().map(|(k, v)| (cel::objects::Key::String(k.clone().into()), to_cel(v))).collect();
            cel::Value::Map(map.into())
        }
    }
}

impl CelVariables {
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
        let client = json!({
            "id": client.client_id, "name": client.name, "namespace": client.namespace, "metadata": client.metadata,
        });
        let user = user.map_or(Value::Null, |u| serde_json::to_value(u).unwrap_or(Value::Null));
        let request = json!({ "grantType": grant_type.as_str(), "scopes": scopes, "audience": audience });
        let server = json!({ "name": server.name, "issuer": server.issuer });
        let subject = subject.map_or(Value::Null, |s| Value::Object(s.clone()));
        Self {
            values: vec![
                ("client", to_cel(&client)),
                ("user", to_cel(&user)),
                ("request", to_cel(&request)),
                ("server", to_cel(&server)),
                ("subject", to_cel(&subject)),
            ],
        }
    }

    /// A CEL context with the variables bound, over the shared standard environment.
    pub fn context(&self) -> cel::Context<'_, '_> {
        let mut ctx = cel::Context::with_env(stdlib().clone());
        for (name, value) in &self.values {
            ctx.add_variable_from_value(*name, value.clone());
        }
        ctx
    }
}
