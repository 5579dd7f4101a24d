//! `AuthScope`: one scope an authorization server grants.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ChildStatus, LocalServerRef, SCOPE_TOKEN_RE};

const NAME_RULES: &str = "!(NAME in ['openid', 'profile', 'email', 'address', 'phone', 'offline_access', 'device_sso', 'groups']) && NAME != '*' && NAME != 'okta' && !NAME.startsWith('okta.') && !NAME.startsWith('okta:')";

fn name_rule(name: &str) -> String {
    NAME_RULES.replace("NAME", name)
}

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "AuthScope",
    namespaced,
    status = "ChildStatus",
    shortname = "ascope",
    category = "tessera",
    printcolumn = r#"{"name":"Server","type":"string","jsonPath":".spec.serverRef.name"}"#,
    printcolumn = r#"{"name":"Scope","type":"string","jsonPath":".spec.name"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new(format!("has(self.spec.name) || ({})", name_rule("self.metadata.name"))).message("metadata.name is used as the scope name and is reserved: set spec.name to another scope (openid, profile, email, address, phone, offline_access are built in)")
)]
#[serde(rename_all = "camelCase")]
pub struct AuthScopeSpec {
    pub server_ref: LocalServerRef,
    /// The scope string (RFC 6749 scope-token); defaults to metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", SCOPE_TOKEN_RE.replace('\\', "\\\\"))).message("scope name must be printable ASCII without spaces, double quotes or backslashes (RFC 6749 scope-token)"))]
    #[x_kube(validation = Rule::new(name_rule("self")).message("scope name is reserved: openid, profile, email, address, phone, offline_access are built in, and '*', 'okta' and okta.* / okta:* are not allowed"))]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    #[serde(default)]
    pub consent: Consent,
    /// Granted when a request names no scope.
    #[serde(default)]
    pub default: bool,
    /// Listed in `scopes_supported` of the discovery document.
    #[serde(default = "yes")]
    pub discoverable: bool,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Consent {
    #[default]
    Implicit,
    Required,
}

impl AuthScope {
    /// The scope string: `spec.name`, or the object's name.
    pub fn scope_name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}
