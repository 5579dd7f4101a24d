//! `AccessPolicy`: which clients get which scopes, through which grants, for how long.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ChildStatus, Duration, LabelSelector, LocalServerRef};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    namespaced,
    status = "ChildStatus",
    shortname = "apol",
    category = "tessera",
    printcolumn = r#"{"name":"Server","type":"string","jsonPath":".spec.serverRef.name"}"#,
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    pub server_ref: LocalServerRef,
    /// Lower first; ties are broken by name.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 10000))]
    pub priority: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    pub clients: ClientMatch,
    /// In order; the first match wins.
    #[schemars(length(min = 1, max = 50))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(o, o.name == r.name))").message("rule names must be unique within a policy"))]
    pub rules: Vec<PolicyRule>,
}

fn one() -> u32 {
    1
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.all) && self.all, has(self.ids), has(self.selector)].filter(x, x).size() == 1").message("clients must set exactly one of all: true, ids or selector"))]
#[x_kube(validation = Rule::new("!(has(self.namespaces) && has(self.namespaceSelector))").message("clients may set namespaces or namespaceSelector, not both"))]
pub struct ClientMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    /// Client IDs (AuthClient `clientId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), inner(length(min = 1, max = 256)))]
    #[x_kube(validation = Rule::new("self.all(i, size(i) > 0 && size(i) <= 256)").message("each client id must be 1 to 256 characters"))]
    pub ids: Option<Vec<String>>,
    /// Over the labels of AuthClients, which the client's owner writes: without `namespaces`
    /// or `namespaceSelector` it matches only clients in the server's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Only clients in these namespaces (with `all`, `ids` or `selector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 63)))]
    #[x_kube(validation = Rule::new("self.all(n, n.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))").message("each namespace must be a namespace name: lowercase letters, digits and '-'"))]
    pub namespaces: Option<Vec<String>>,
    /// Only clients in namespaces whose labels (written by the platform, not the tenant)
    /// match (with `all`, `ids` or `selector`); a namespace the issuer has not read matches none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// Grant types a rule or a client can name. Implicit and password are deliberately absent (RFC 9700).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum GrantType {
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    #[serde(rename = "authorization_code")]
    AuthorizationCode,
    #[serde(rename = "refresh_token")]
    RefreshToken,
    #[serde(rename = "urn:ietf:params:oauth:grant-type:token-exchange")]
    TokenExchange,
    #[serde(rename = "urn:ietf:params:oauth:grant-type:device_code")]
    DeviceCode,
}

impl GrantType {
    pub const ALL: [GrantType; 5] =
        [Self::ClientCredentials, Self::AuthorizationCode, Self::RefreshToken, Self::TokenExchange, Self::DeviceCode];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
            Self::DeviceCode => "urn:ietf:params:oauth:grant-type:device_code",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// Grants made on behalf of a person (policies' `users` apply to these).
    pub fn is_user_grant(self) -> bool {
        matches!(self, Self::AuthorizationCode | Self::DeviceCode | Self::RefreshToken)
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.refreshTokenLifetime) || duration(self.refreshTokenLifetime) == duration('0s') || !has(self.accessTokenLifetime) || duration(self.refreshTokenLifetime) >= duration(self.accessTokenLifetime)").message("refreshTokenLifetime must be 0 (unlimited) or at least accessTokenLifetime").field_path(".refreshTokenLifetime"))]
pub struct PolicyRule {
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("rule name must be a DNS label: lowercase letters, digits and '-'"))]
    pub name: String,
    #[schemars(length(min = 1, max = 5))]
    pub grant_types: Vec<GrantType>,
    /// Allowed scopes; `*` allows any scope of the server.
    #[schemars(length(min = 1, max = 128), inner(length(min = 1, max = 256)))]
    #[x_kube(validation = Rule::new("self.all(s, size(s) > 0 && size(s) <= 256)").message("each scope must be 1 to 256 characters"))]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<UserMatch>,
    /// Optional CEL over client, user, request, server and subject; must return a bool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub condition: Option<String>,
    /// 5m to 24h; default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('5m') && duration(self) <= duration('24h')").message("accessTokenLifetime must be between 5m and 24h"))]
    pub access_token_lifetime: Option<Duration>,
    /// 0 means unlimited; otherwise at least the access token lifetime, at most 5 years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) <= duration('43800h')").message("refreshTokenLifetime must be at most 43800h (5 years), or 0 for unlimited"))]
    pub refresh_token_lifetime: Option<Duration>,
    /// 10m to 5 years; default 168h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10m') && duration(self) <= duration('43800h')").message("refreshTokenIdleTimeout must be between 10m and 43800h (5 years)"))]
    pub refresh_token_idle_timeout: Option<Duration>,
    /// 5m to 24h; default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('5m') && duration(self) <= duration('24h')").message("idTokenLifetime must be between 5m and 24h"))]
    pub id_token_lifetime: Option<Duration>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.everyone) && self.everyone) != (has(self.groups) || has(self.subjects))").message("users must set either everyone: true, or groups and/or subjects"))]
pub struct UserMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub everyone: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 256)))]
    #[x_kube(validation = Rule::new("self.all(g, size(g) > 0 && size(g) <= 256)").message("each group must be 1 to 256 characters"))]
    pub groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 256)))]
    #[x_kube(validation = Rule::new("self.all(s, size(s) > 0 && size(s) <= 256)").message("each subject must be 1 to 256 characters"))]
    pub subjects: Option<Vec<String>>,
}
