//! The resource API (`tessera.dev/v1alpha1`): one file per kind, plus the pieces they share.
//!
//! Everything CEL can check is a rule in the generated CRD schema, so a bad resource is
//! refused at admission with a message that says what to change. What CEL cannot check
//! (references, CEL expressions that do not compile) is reported on status.

mod access_policy;
mod auth_claim;
mod auth_client;
mod auth_scope;
mod authorization_server;
pub mod conditions;
mod duration;

pub use access_policy::*;
pub use auth_claim::*;
pub use auth_client::*;
pub use auth_scope::*;
pub use authorization_server::*;
pub use duration::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "tessera.dev";
pub const VERSION: &str = "v1alpha1";

/// Scopes every server has built in; an AuthScope may not redefine them.
pub const RESERVED_SCOPES: &[&str] = &["openid", "profile", "email", "address", "phone", "offline_access"];

/// Claims the issuer sets itself; an AuthClaim may not set them.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "cid",
    "uid",
    "scp",
    "ver",
    "client_id",
    "auth_time",
    "nonce",
    "at_hash",
    "c_hash",
    "amr",
    "azp",
    "typ",
];

/// Every CRD this crate defines, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![AuthorizationServer::crd(), AuthScope::crd(), AuthClaim::crd(), AccessPolicy::crd(), AuthClient::crd()]
}

/// All CRDs as one multi-document YAML stream, as `tessera crds` prints and `crds/` holds.
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd)?);
    }
    Ok(out)
}

/// A reference from a scope, claim or policy to its server, in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalServerRef {
    /// Name of the AuthorizationServer in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The status every kind shares: kstatus conditions and the generation they describe.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions::schema")]
    pub conditions: Vec<conditions::Condition>,
}

/// Label selector, as Kubernetes defines it.
pub type LabelSelector = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Rule fragment: a scope-token (RFC 6749 §3.3): printable ASCII without space, `"` or `\`.
pub(crate) const SCOPE_TOKEN_RE: &str = r"^[\x21\x23-\x5B\x5D-\x7E]+$";

/// CEL: `s` is an absolute https URL, or http on a loopback host.
pub(crate) fn cel_https_or_loopback(s: &str) -> String {
    format!(
        "isURL({s}) && (url({s}).getScheme() == 'https' || (url({s}).getScheme() == 'http' && url({s}).getHostname() in ['localhost', '127.0.0.1', '::1'])) && url({s}).getHostname() != ''"
    )
}
