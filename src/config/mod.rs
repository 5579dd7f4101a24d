//! `ServerConfig`: the compiled, flattened configuration of one authorization server.
//!
//! It is the contract between the operator (which writes it to Secret `<server>-config`,
//! data key `config.json`) and the issuer (which serves it). `serve` builds the same value
//! from files through the same [`compile`].

mod compile;
pub mod selector;
pub mod standard_claims;
pub mod subjects;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::api::{
    AuthMethod, Consent, GrantType, JwkSet, RateLimit, RotationMode, SigningAlgorithm, Storage, TokenKind, UserMatch,
};

pub use compile::{
    CLOCK_SKEW_SECS, ClientInput, CompileInput, Compiled, IDENTITY_SECRET_NOT_FOUND, INVALID_SPEC,
    INVALID_STATIC_USERS, IdentitySecrets, NamespaceLabels, Rejection, ServerError, compile, identity_secret_names,
    jwks_max_age_secs,
};
pub use selector::matches as selector_matches;

/// Name of the Secret holding the compiled config of server `server`.
pub fn config_secret_name(server: &str) -> String {
    format!("{server}-config")
}

/// Data key of the compiled config in its Secret.
pub const CONFIG_SECRET_KEY: &str = "config.json";

/// Everything an issuer needs to serve one authorization server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfig {
    pub name: String,
    pub namespace: String,
    /// Issuer URI, without a trailing slash.
    pub issuer: String,
    pub audiences: Vec<String>,
    #[serde(default)]
    pub suspended: bool,
    pub signing: SigningConfig,
    /// `Cache-Control: max-age` of the JWKS, in seconds (never more than half of prePublish).
    pub jwks_max_age_secs: u64,
    #[serde(default)]
    pub trusted_origins: Vec<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub trusted_issuers: Vec<TrustedIssuerConfig>,
    /// Where fetches for tenants may go (`spec.outbound`).
    #[serde(default)]
    pub outbound: crate::outbound::OutboundConfig,
    pub scopes: Vec<ScopeConfig>,
    pub claims: Vec<ClaimConfig>,
    /// Sorted by priority, then name: the order of evaluation.
    pub policies: Vec<PolicyConfig>,
    pub clients: Vec<ClientConfig>,
    /// Who may sign in (browser and device flows); none: machine tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityConfig>,
}

/// Sign-in settings with the referenced Secrets already read.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IdentityConfig {
    pub session_lifetime_secs: u64,
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default)]
    pub users: Vec<StaticUser>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamConfig {
    pub name: String,
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    /// Read from `clientSecretRef`; this config lives in a Secret.
    pub client_secret: String,
    pub scopes: Vec<String>,
    pub claim_mapping: crate::api::ClaimMapping,
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

pub use standard_claims::StandardClaims;

/// One entry of the static users Secret.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StaticUser {
    pub username: String,
    /// bcrypt (`$2b$...`) or argon2 PHC string (`$argon2id$...`).
    pub password_hash: String,
    /// Default: the username. Tokens carry it as `static|<sub>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// givenName, familyName, ..., address, emailVerified, phoneNumber, ... (OpenID Connect
    /// Core §5.1, camelCase).
    #[serde(flatten)]
    pub standard: StandardClaims,
    /// Fields of none of the above: refused by [`Self::parse_list`] (flattened fields rule out
    /// `deny_unknown_fields`).
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl fmt::Debug for StaticUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticUser")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl StaticUser {
    /// Parses the YAML list a static users Secret holds; the error never quotes the input.
    pub fn parse_list(yaml: &str) -> Result<Vec<Self>, String> {
        let users: Vec<Self> = serde_norway::from_str(yaml).map_err(|e| {
            let at = e.location().map(|l| format!(" at line {}", l.line())).unwrap_or_default();
            format!("static users are not a YAML list of {{username, passwordHash, sub, name, email, groups, and the standard claims}}{at}")
        })?;
        let mut seen = std::collections::HashSet::new();
        for u in &users {
            if u.username.is_empty() || !seen.insert(u.username.as_str()) {
                return Err(format!("static user {:?} is empty or listed twice", u.username));
            }
            if !(u.password_hash.starts_with("$2") || u.password_hash.starts_with("$argon2")) {
                return Err(format!("static user {:?}: passwordHash must be a bcrypt or argon2 hash", u.username));
            }
            if let Some(field) = u.unknown.keys().next() {
                return Err(format!("static user {:?}: unknown field {field:?}", u.username));
            }
            let long = |v: &Option<String>| v.as_ref().is_some_and(|v| v.len() > standard_claims::MAX_TEXT_BYTES);
            let bounds = [("name", long(&u.name)), ("email", long(&u.email))]
                .into_iter()
                .find(|(_, over)| *over)
                .map(|(k, _)| format!("{k} is longer than {} bytes", standard_claims::MAX_TEXT_BYTES))
                .or_else(|| u.standard.out_of_bounds());
            if let Some(why) = bounds {
                return Err(format!("static user {:?}: {why}", u.username));
            }
        }
        Ok(users)
    }

    /// The user's `sub`: `static|<sub>`, `sub` defaulting to the username (see [`subjects`]).
    pub fn subject(&self) -> String {
        subjects::static_user_subject(self.sub.as_deref().unwrap_or(&self.username))
    }
}

/// Signing settings with the safe minimums already applied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SigningConfig {
    pub algorithm: SigningAlgorithm,
    pub mode: RotationMode,
    /// How long a key signs.
    pub period_secs: u64,
    /// How long a Next key is published before it signs.
    pub pre_publish_secs: u64,
    /// How long a Retired key stays published.
    pub retain_retired_secs: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TrustedIssuerConfig {
    /// This cluster's ServiceAccount issuer; the issuer process knows its URL.
    #[serde(default)]
    pub kubernetes: bool,
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` values; never empty after compile (default: this server's issuer).
    pub audiences: Vec<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScopeConfig {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub consent: Consent,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub discoverable: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimConfig {
    pub name: String,
    pub token: TokenKind,
    /// CEL expression, known to compile.
    pub value: String,
    #[serde(default = "yes")]
    pub always_include: bool,
    /// Include only when one of these is granted; empty: always.
    #[serde(default)]
    pub scopes: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyConfig {
    /// `metadata.name` of the AccessPolicy.
    pub name: String,
    pub priority: u32,
    #[serde(default)]
    pub description: Option<String>,
    pub clients: PolicyClients,
    pub rules: Vec<RuleConfig>,
}

/// Which clients a policy applies to, selectors already resolved to client ids.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum PolicyClients {
    All,
    Ids(Vec<String>),
}

impl PolicyClients {
    pub fn matches(&self, client_id: &str) -> bool {
        match self {
            Self::All => true,
            Self::Ids(ids) => ids.iter().any(|i| i == client_id),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuleConfig {
    pub name: String,
    pub grant_types: Vec<GrantType>,
    /// Allowed scopes; `*` = any scope of the server.
    pub scopes: Vec<String>,
    #[serde(default)]
    pub users: Option<UserMatch>,
    /// CEL expression returning bool, known to compile.
    #[serde(default)]
    pub condition: Option<String>,
    pub access_token_lifetime_secs: u64,
    /// 0 = unlimited.
    pub refresh_token_lifetime_secs: u64,
    pub refresh_token_idle_timeout_secs: u64,
    pub id_token_lifetime_secs: u64,
}

#[derive(Serialize, Deserialize, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    pub client_id: String,
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub grant_types: Vec<GrantType>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    pub auth_method: AuthMethod,
    /// Hex SHA-256 of every currently valid client secret.
    #[serde(default)]
    pub secret_hashes: Vec<String>,
    #[serde(default)]
    pub jwks: Option<JwkSet>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub service_account: Option<ServiceAccountRef>,
    /// Written by the client's owner (`spec.metadata`): never proof of who the client is.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The AuthClient's labels, written by the client's owner.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Labels of the client's namespace, written by the platform (empty if not read).
    #[serde(default)]
    pub namespace_labels: BTreeMap<String, String>,
    /// First-party: in the server's namespace, or listed in its `spec.trustedClients`. People
    /// signing in to other clients are asked for consent (see `docs/security.md`).
    #[serde(default)]
    pub trusted: bool,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("client_id", &self.client_id)
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("grant_types", &self.grant_types)
            .field("auth_method", &self.auth_method)
            .field("trusted", &self.trusted)
            .field("secret_hashes", &format_args!("[{} redacted]", self.secret_hashes.len()))
            .field("service_account", &self.service_account)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccountRef {
    /// The `sub` of this ServiceAccount's tokens.
    pub fn subject(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

impl ServerConfig {
    pub fn client(&self, client_id: &str) -> Option<&ClientConfig> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    pub fn scope(&self, name: &str) -> Option<&ScopeConfig> {
        self.scopes.iter().find(|s| s.name == name)
    }

    /// The path part of the issuer URI (`/oauth2/payments`), empty for a bare origin.
    pub fn issuer_path(&self) -> &str {
        issuer_path(&self.issuer)
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

/// The path of an issuer URI: what follows `scheme://authority`, without a trailing slash.
pub fn issuer_path(issuer: &str) -> &str {
    let rest = issuer.split_once("://").map_or(issuer, |(_, r)| r);
    match rest.find('/') {
        Some(i) => rest[i..].trim_end_matches('/'),
        None => "",
    }
}

/// Hex SHA-256 of a client secret, as `ServerConfig` stores it.
pub fn hash_secret(secret: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    hex(digest.as_ref())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_path_is_what_follows_the_authority() {
        assert_eq!(issuer_path("http://127.0.0.1:8080/oauth2/payments"), "/oauth2/payments");
        assert_eq!(issuer_path("https://auth.example.com"), "");
        assert_eq!(issuer_path("https://auth.example.com/"), "");
    }

    const HASH: &str = "$2b$04$abcdefghijklmnopqrstuu";

    #[test]
    fn static_users_carry_the_standard_claims() {
        let yaml = format!(
            "- username: ada\n  passwordHash: '{HASH}'\n  givenName: Ada\n  familyName: Lovelace\n  birthdate: '1815-12-10'\n  updatedAt: 1700000000\n  emailVerified: true\n  phoneNumber: '+44 20 0000 0000'\n  address: {{ streetAddress: 12 St James's Square, locality: London, postalCode: SW1Y, country: GB }}\n"
        );
        let users = StaticUser::parse_list(&yaml).unwrap();
        let s = &users[0].standard;
        assert_eq!(s.given_name.as_deref(), Some("Ada"));
        assert_eq!(s.claim("updated_at"), Some(serde_json::json!(1_700_000_000)));
        assert_eq!(s.claim("email_verified"), Some(serde_json::json!(true)));
        assert_eq!(
            s.claim("address"),
            Some(
                serde_json::json!({"street_address": "12 St James's Square", "locality": "London", "postal_code": "SW1Y", "country": "GB"})
            )
        );
        // The compiled config carries them to the issuer.
        let json = serde_json::to_string(&users).unwrap();
        assert_eq!(serde_json::from_str::<Vec<StaticUser>>(&json).unwrap(), users);
    }

    #[test]
    fn static_users_with_unknown_or_oversized_fields_are_refused_without_quoting_them() {
        let long = "x".repeat(standard_claims::MAX_TEXT_BYTES + 1);
        for (extra, why) in [
            ("givenNme: Ada".to_owned(), "unknown field \"givenNme\""),
            (format!("nickname: {long}"), "nickname is longer than 512 bytes"),
            (format!("name: {long}"), "name is longer than 512 bytes"),
            (format!("address: {{ region: {long} }}"), "address.region is longer than 512 bytes"),
            (format!("picture: https://x/{}", "p".repeat(2048)), "picture is longer than 2048 bytes"),
        ] {
            let yaml = format!("- username: ada\n  passwordHash: '{HASH}'\n  {extra}\n");
            let e = StaticUser::parse_list(&yaml).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
            assert!(!e.contains(&long), "quotes the value");
        }
        let bad_type = format!("- username: ada\n  passwordHash: '{HASH}'\n  emailVerified: maybe\n");
        assert!(StaticUser::parse_list(&bad_type).is_err());
    }

    #[test]
    fn secret_hash_is_hex_sha256() {
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
