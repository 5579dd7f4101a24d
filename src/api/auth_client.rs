//! `AuthClient`: an OAuth client of one authorization server, possibly in another namespace.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{GrantType, cel_https_or_loopback};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "AuthClient",
    namespaced,
    status = "AuthClientStatus",
    shortname = "aclient",
    category = "tessera",
    printcolumn = r#"{"name":"Server","type":"string","jsonPath":".spec.serverRef.name"}"#,
    printcolumn = r#"{"name":"Client ID","type":"string","jsonPath":".status.clientId"}"#,
    printcolumn = r#"{"name":"Method","type":"string","jsonPath":".spec.authentication.method"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!self.grantTypes.exists(g, g == 'authorization_code') || (has(self.redirectUris) && size(self.redirectUris) > 0)").message("grant type authorization_code needs at least one redirectUris entry").field_path(".redirectUris"))]
#[x_kube(validation = Rule::new("!has(self.authentication) || !has(self.authentication.method) || self.authentication.method != 'None' || !self.grantTypes.exists(g, g == 'client_credentials' || g == 'urn:ietf:params:oauth:grant-type:token-exchange')").message("a public client (authentication.method None) cannot use client_credentials or token-exchange: choose a method that authenticates").field_path(".authentication.method"))]
#[serde(rename_all = "camelCase")]
pub struct AuthClientSpec {
    pub server_ref: ServerRef,
    /// Unique per server; default `<namespace>.<name>`. Letters, digits, '.', '_', '~' and '-'
    /// (never ':', '|', '#' or '@', so no person, ServiceAccount or federated `sub` can equal
    /// it). An id with a '.' belongs to the namespace before its first '.': a client outside
    /// the server's namespace must use `<its namespace>.<anything>`; ids without a '.' belong
    /// to the server's namespace. Otherwise the client is not accepted (`ClientIdNotOwned`).
    /// client_credentials tokens carry the client id as `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9._~-]*$')").message("clientId must start with a letter or digit and contain only letters, digits, '.', '_', '~' or '-'"))]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,
    #[schemars(length(min = 1, max = 5))]
    #[x_kube(validation = Rule::new("self.all(g, self.exists_one(o, o == g))").message("grantTypes must not repeat"))]
    pub grant_types: Vec<GrantType>,
    /// Exact match; https, or http on a loopback host (any port).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 2048)))]
    #[x_kube(validation = Rule::new(format!("self.all(u, !u.contains('#') && ({}))", cel_https_or_loopback("u"))).message("each redirect URI must be an absolute https URL without a fragment (http only on localhost, 127.0.0.1 or [::1])"))]
    pub redirect_uris: Vec<String>,
    /// Where users may be sent after logout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 2048)))]
    #[x_kube(validation = Rule::new(format!("self.all(u, !u.contains('#') && ({}))", cel_https_or_loopback("u"))).message("each post-logout redirect URI must be an absolute https URL without a fragment (http only on localhost)"))]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    pub authentication: ClientAuthentication,
    /// Attributes visible to CEL as `client.metadata`: at most 64 entries, each key at most
    /// 256 bytes and each value at most 1024 (CEL expressions' cost is estimated for these;
    /// `tessera serve` refuses a client beyond them too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 256 && size(self[k]) <= 1024)").message("each metadata key must be at most 256 characters and each value at most 1024"))]
    pub metadata: BTreeMap<String, String>,
}

/// A server reference that may cross namespaces (allowed by the server's `clientNamespaces`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Default: the client's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    None,
    ServiceAccount,
}

impl AuthMethod {
    pub fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.method != 'PrivateKeyJwt' || has(self.jwks) || (has(self.jwksUri) && self.jwksUri != '')").message("authentication.method PrivateKeyJwt needs jwks or jwksUri"))]
#[x_kube(validation = Rule::new("self.method != 'ServiceAccount' || has(self.serviceAccountName)").message("authentication.method ServiceAccount needs serviceAccountName").field_path(".serviceAccountName"))]
#[x_kube(validation = Rule::new("self.method == 'PrivateKeyJwt' || (!has(self.jwks) && (!has(self.jwksUri) || self.jwksUri == ''))").message("jwks and jwksUri apply only to authentication.method PrivateKeyJwt"))]
pub struct ClientAuthentication {
    #[serde(default)]
    pub method: AuthMethod,
    /// Secret the operator writes in the client's namespace; default `<name>-oauth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("secretName must be a valid Secret name (lowercase letters, digits, '-' and '.')"))]
    pub secret_name: Option<String>,
    /// PrivateKeyJwt: the client's public keys, as a JWK Set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwkSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(format!("self == '' || ({})", cel_https_or_loopback("self"))).message("jwksUri must be an https URL (http only on localhost)"))]
    pub jwks_uri: Option<String>,
    /// ServiceAccount: the pod's projected token (aud = issuer) is the client assertion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct JwkSet {
    #[schemars(length(min = 1, max = 16))]
    pub keys: Vec<Jwk>,
}

/// A public JWK, kept as given.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Jwk(#[schemars(schema_with = "any_object")] pub serde_json::Map<String, serde_json::Value>);

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthClientStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::conditions::schema")]
    pub conditions: Vec<super::conditions::Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

impl AuthClient {
    /// `spec.clientId`, or `<namespace>.<name>`.
    pub fn client_id(&self) -> String {
        self.spec.client_id.clone().unwrap_or_else(|| {
            format!(
                "{}.{}",
                self.metadata.namespace.as_deref().unwrap_or("default"),
                self.metadata.name.as_deref().unwrap_or_default()
            )
        })
    }

    /// The namespace of the server this client belongs to.
    pub fn server_namespace(&self) -> String {
        self.spec
            .server_ref
            .namespace
            .clone()
            .unwrap_or_else(|| self.metadata.namespace.clone().unwrap_or_else(|| "default".into()))
    }

    /// Where the operator writes the client's credentials.
    pub fn secret_name(&self) -> String {
        self.spec
            .authentication
            .secret_name
            .clone()
            .unwrap_or_else(|| format!("{}-oauth", self.metadata.name.as_deref().unwrap_or_default()))
    }
}
