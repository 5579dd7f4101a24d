//! `AuthorizationServer`: one issuer, its keys, and the workload that serves it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Duration, LabelSelector, cel_https_or_loopback, conditions};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "AuthorizationServer",
    namespaced,
    status = "AuthorizationServerStatus",
    shortname = "authz",
    shortname = "authserver",
    category = "tessera",
    printcolumn = r#"{"name":"Issuer","type":"string","jsonPath":".spec.issuer"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Active Key","type":"string","jsonPath":".status.signing.activeKeyId"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.readyReplicas","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(
    "!has(self.storage) || self.storage.type != 'Memory' || !has(self.workload) || !has(self.workload.replicas) || self.workload.replicas == 1"
).message("storage.type Memory keeps token state in one pod: set workload.replicas to 1, or use storage.type Redis for several replicas").field_path(".workload.replicas"))]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationServerSpec {
    /// Issuer URI: becomes `iss` and the base of every endpoint. https, or http on localhost only.
    #[x_kube(validation = Rule::new(cel_https_or_loopback("self")).message("issuer must be an absolute https URL (http is allowed only for localhost, 127.0.0.1 or [::1])"))]
    #[x_kube(validation = Rule::new("!self.contains('?') && !self.contains('#') && !self.endsWith('/')").message("issuer must have no query, no fragment and no trailing slash"))]
    #[schemars(length(min = 1, max = 512))]
    pub issuer: String,

    /// Default `aud` of access tokens.
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 512)))]
    #[x_kube(validation = Rule::new("self.all(a, size(a) > 0 && size(a) <= 512)").message("each audience must be 1 to 512 characters"))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b == a))").message("audiences must not repeat"))]
    pub audiences: Vec<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// When true, token and authorize requests answer 503; keys keep rotating.
    #[serde(default)]
    pub suspended: bool,

    #[serde(default)]
    pub signing: SigningSpec,

    #[serde(default)]
    pub client_namespaces: ClientNamespaces,

    /// Origins allowed for CORS and browser redirects: `scheme://host[:port]`, no path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 256)))]
    #[x_kube(validation = Rule::new(r"self.all(o, size(o) <= 256 && (o.matches('^https://[^/?#\\s]+$') || o.matches('^http://(localhost|127\\.0\\.0\\.1|\\[::1\\])(:[0-9]+)?$')))").message("each trusted origin must be scheme://host[:port] with no path: https, or http on localhost"))]
    pub trusted_origins: Vec<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,

    #[serde(default)]
    pub storage: Storage,

    #[serde(default)]
    pub workload: Workload,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// JWT issuers whose tokens are accepted as client assertions and token-exchange subjects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub trusted_issuers: Vec<TrustedIssuer>,

    /// Client ids of clients outside this server's namespace that are first-party: people
    /// signing in to them are not asked for consent for Implicit scopes (clients in the server's
    /// namespace always are first-party). Set here, by the server's owner, because a tenant
    /// must not be able to mark its own client trusted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    pub trusted_clients: Vec<String>,

    /// Where this server's issuer may connect for its tenants (an AuthClient's `jwksUri`).
    /// Default: nowhere; clients register their keys inline (`authentication.jwks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundSpec>,

    /// Who may sign in: upstream OpenID Connect providers and static users (browser and
    /// device flows). Without it the server issues machine tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentitySpec>,
}

/// The outbound allow-list for URLs that tenants write. URLs the server's owner writes here
/// (`trustedIssuers`, `identity.upstreams`) are not subject to it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutboundSpec {
    /// URL prefixes an AuthClient's `authentication.jwksUri` must start with, such as
    /// `https://keys.example.com/` or `https://keys.example.com/team-a/`. Compared on the parsed
    /// URL: same scheme, host and port, and the path continues the prefix's path at a `/`. A
    /// jwksUri under none of them is refused (the AuthClient's Accepted condition says
    /// `JwksUriNotAllowed`). Empty (the default): no jwksUri is allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 512)))]
    #[x_kube(validation = Rule::new(format!("self.all(p, !p.contains('?') && !p.contains('#') && ({}))", cel_https_or_loopback("p"))).message("each allowed URL prefix must be an absolute https URL (http only on localhost) without query or fragment"))]
    pub allowed_url_prefixes: Vec<String>,
    /// Let those URLs reach loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), shared
    /// (100.64/10), link-local (169.254/16 with cloud metadata at 169.254.169.254, fe80::/10)
    /// and other non-public addresses. Default false: such an address is refused when the URL
    /// names it and when its host resolves to it.
    #[serde(default)]
    pub allow_internal_addresses: bool,
}

/// People sign in through upstream providers (federation) or as static users.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.upstreams) && size(self.upstreams) > 0) || has(self.staticUsers)").message("identity needs at least one of upstreams or staticUsers"))]
pub struct IdentitySpec {
    /// How long a sign-in at this server lasts (its session cookie).
    #[serde(default = "default_session")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m') && duration(self) <= duration('720h')").message("sessionLifetime must be between 1m and 720h"))]
    pub session_lifetime: Duration,
    /// Upstream OpenID Connect providers, offered on the login page in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(u, self.exists_one(o, o.name == u.name))").message("upstream names must be unique"))]
    pub upstreams: Vec<UpstreamProvider>,
    /// Users and password hashes kept in a Secret of the server's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_users: Option<StaticUsers>,
}

fn default_session() -> Duration {
    Duration::from_secs(8 * 3600)
}

/// An upstream OpenID Connect provider Tessera federates to (authorization code + PKCE).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamProvider {
    /// Identifies the upstream in URLs, in `idp` and in the `sub` of its people
    /// (`<name>|<the upstream's sub>`); lowercase letters, digits and '-'; `static` is taken by
    /// static users.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("upstream name must be lowercase letters, digits and '-'"))]
    #[x_kube(validation = Rule::new("self != 'static'").message("upstream name static is reserved: static users' subjects are static|<username>"))]
    pub name: String,
    /// Shown on the login page ("Sign in with ...").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub display_name: Option<String>,
    /// The provider's issuer; its discovery document gives the endpoints.
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(cel_https_or_loopback("self")).message("upstream issuer must be an https URL (http only on localhost)"))]
    pub issuer: String,
    #[schemars(length(min = 1, max = 256))]
    pub client_id: String,
    /// Secret (server's namespace) holding the client secret registered at the upstream.
    pub client_secret_ref: SecretKeyRefSecret,
    /// Scopes asked of the upstream; default `openid email profile`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 128)))]
    pub scopes: Vec<String>,
    /// Which upstream ID token (or userinfo) claims become the user's attributes.
    #[serde(default)]
    pub claim_mapping: ClaimMapping,
}

/// A Secret key holding a client secret; key defaults to `client_secret`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRefSecret {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default = "default_client_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_client_secret_key() -> String {
    "client_secret".into()
}

/// Upstream claim names for each user attribute. The person's `sub` is `<upstream name>|<the
/// claim named by sub>`; when that claim is the email address, sign-in needs
/// `email_verified: true` from the upstream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimMapping {
    #[serde(default = "claim_sub")]
    #[schemars(length(min = 1, max = 128))]
    pub sub: String,
    #[serde(default = "claim_email")]
    #[schemars(length(min = 1, max = 128))]
    pub email: String,
    #[serde(default = "claim_name")]
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    #[serde(default = "claim_groups")]
    #[schemars(length(min = 1, max = 128))]
    pub groups: String,
    #[serde(default = "claim_amr")]
    #[schemars(length(min = 1, max = 128))]
    pub amr: String,
}

fn claim_sub() -> String {
    "sub".into()
}
fn claim_email() -> String {
    "email".into()
}
fn claim_name() -> String {
    "name".into()
}
fn claim_groups() -> String {
    "groups".into()
}
fn claim_amr() -> String {
    "amr".into()
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self { sub: claim_sub(), email: claim_email(), name: claim_name(), groups: claim_groups(), amr: claim_amr() }
    }
}

/// Static users: a Secret key holding a YAML list of
/// `{username, passwordHash (bcrypt or argon2id PHC), sub?, name?, email?, groups?}`; their
/// tokens carry `sub` `static|<sub, default the username>`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticUsers {
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    #[serde(default = "default_users_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_users_key() -> String {
    "users.yaml".into()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum SigningAlgorithm {
    #[default]
    RS256,
    ES256,
    EdDSA,
}

impl SigningAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SigningSpec {
    #[serde(default)]
    pub algorithm: SigningAlgorithm,
    #[serde(default)]
    pub rotation: RotationSpec,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RotationMode {
    #[default]
    Automatic,
    Manual,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RotationSpec {
    #[serde(default)]
    pub mode: RotationMode,
    /// How long a key signs before the next one takes over.
    #[serde(default = "default_period")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('5s') && duration(self) <= duration('8760h')").message("rotation.period must be between 5s and 8760h (one year)"))]
    pub period: Duration,
    /// How long a Next key is published before it signs (raised to the JWKS cache lifetime if lower).
    #[serde(default = "default_week")]
    #[x_kube(validation = Rule::new("duration(self) <= duration('2160h')").message("rotation.prePublish must be at most 2160h (90 days)"))]
    pub pre_publish: Duration,
    /// How long a Retired key stays published (raised to cover the longest token lifetime if lower).
    #[serde(default = "default_week")]
    #[x_kube(validation = Rule::new("duration(self) <= duration('2160h')").message("rotation.retainRetired must be at most 2160h (90 days)"))]
    pub retain_retired: Duration,
}

fn default_period() -> Duration {
    Duration::from_secs(2160 * 3600)
}

fn default_week() -> Duration {
    Duration::from_secs(168 * 3600)
}

impl Default for RotationSpec {
    fn default() -> Self {
        Self {
            mode: RotationMode::Automatic,
            period: default_period(),
            pre_publish: default_week(),
            retain_retired: default_week(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NamespaceFrom {
    #[default]
    Same,
    All,
    Selector,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.from != 'Selector' || has(self.selector)").message("clientNamespaces.from Selector needs clientNamespaces.selector").field_path(".selector"))]
pub struct ClientNamespaces {
    #[serde(default)]
    pub from: NamespaceFrom,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.burst >= self.perClient").message("rateLimit.burst must be at least rateLimit.perClient").field_path(".burst"))]
pub struct RateLimit {
    /// Token endpoint requests per second per client.
    #[schemars(range(min = 1, max = 100000))]
    pub per_client: u32,
    #[schemars(range(min = 1, max = 1000000))]
    pub burst: u32,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StorageType {
    #[default]
    Memory,
    Redis,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'Redis' || has(self.redis)").message("storage.type Redis needs storage.redis.urlSecretRef").field_path(".redis"))]
pub struct Storage {
    #[serde(default, rename = "type")]
    pub type_: StorageType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStorage>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisStorage {
    /// Secret in the server's namespace holding the Redis URL (`redis://` or `rediss://`).
    pub url_secret_ref: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default = "default_url_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_url_key() -> String {
    "url".into()
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 20))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
}

fn one() -> i32 {
    1
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            replicas: 1,
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            priority_class_name: None,
            pod_labels: BTreeMap::new(),
            pod_annotations: BTreeMap::new(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A `kubernetes.io/tls` Secret in the server's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.kubernetes) && self.kubernetes) != has(self.issuer)").message("a trusted issuer sets either kubernetes: true or issuer, not both and not neither"))]
#[x_kube(validation = Rule::new("!has(self.jwksUri) || self.jwksUri == '' || has(self.issuer)").message("jwksUri needs issuer").field_path(".jwksUri"))]
pub struct TrustedIssuer {
    /// This cluster's ServiceAccount issuer (discovery and JWKS of the API server); exchanged
    /// subjects keep its `system:serviceaccount:<namespace>:<name>` form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<bool>,
    /// Token-exchanged subjects of this issuer get `sub` `<issuer>#<their sub>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new(cel_https_or_loopback("self")).message("trusted issuer must be an https URL (http only on localhost)"))]
    #[x_kube(validation = Rule::new("!self.contains('#')").message("trusted issuer must have no fragment: exchanged subjects are <issuer>#<sub>"))]
    pub issuer: Option<String>,
    /// Audiences accepted from this issuer; default: this server's issuer URI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 512)))]
    #[x_kube(validation = Rule::new("self.all(a, size(a) > 0 && size(a) <= 512)").message("each audience must be 1 to 512 characters"))]
    pub audiences: Vec<String>,
    /// Default: from the issuer's discovery document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new(format!("self == '' || ({})", cel_https_or_loopback("self"))).message("jwksUri must be an https URL (http only on localhost)"))]
    pub jwks_uri: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationServerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions::schema")]
    pub conditions: Vec<conditions::Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    pub discovery: String,
    pub jwks: String,
    pub token: String,
    pub authorize: String,
    pub introspect: String,
    pub revoke: String,
    pub userinfo: String,
}

/// Annotation: any new value makes the Next key Active now (`kubectl tessera rotate`).
pub const ROTATE_ANNOTATION: &str = "tessera.dev/rotate";
/// Annotation: any new value also drops the signing key from the JWKS at once.
pub const ROTATE_REVOKE_ANNOTATION: &str = "tessera.dev/rotate-revoke";

impl Endpoints {
    /// Okta-compatible endpoint URLs under `issuer`.
    pub fn for_issuer(issuer: &str) -> Self {
        let at = |e: super::Endpoint| e.url(issuer);
        Self {
            discovery: at(super::Endpoint::OpenIdConfiguration),
            jwks: at(super::Endpoint::Keys),
            token: at(super::Endpoint::Token),
            authorize: at(super::Endpoint::Authorize),
            introspect: at(super::Endpoint::Introspect),
            revoke: at(super::Endpoint::Revoke),
            userinfo: at(super::Endpoint::UserInfo),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyStatus>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum KeyState {
    Next,
    Active,
    Retired,
    /// Removed from the JWKS by an emergency rotation; listed in status as a record only.
    Revoked,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    pub state: KeyState,
    pub created_at: String,
    pub activates_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_at: Option<String>,
}
