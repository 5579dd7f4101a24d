//! The one compiler from resources to `ServerConfig`, used by the operator and by `serve`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::api::{
    AccessPolicy, AuthClaim, AuthClient, AuthMethod, AuthScope, AuthorizationServer, RESERVED_CLAIMS, RESERVED_SCOPES,
};

mod rules;

pub use rules::INVALID_SPEC;

pub use super::subjects::NamespaceLabels;
use super::subjects::{client_refusal, namespace_or_default};
use super::{
    ClaimConfig, ClientConfig, IdentityConfig, PolicyClients, PolicyConfig, RuleConfig, ScopeConfig, ServerConfig,
    ServiceAccountRef, SigningConfig, StaticUser, TrustedIssuerConfig, UpstreamConfig, selector,
};

const HOUR: u64 = 3600;
/// Allowance for clocks of verifiers that run a little behind.
/// Clock difference allowed between the operator, issuer replicas and verifiers (NTP-synced).
pub const CLOCK_SKEW_SECS: u64 = 5;

/// What the compiler reads: one server and the objects that point at it (already filtered by namespace).
#[derive(Clone, Debug)]
pub struct CompileInput {
    pub server: AuthorizationServer,
    pub scopes: Vec<AuthScope>,
    pub claims: Vec<AuthClaim>,
    pub policies: Vec<AccessPolicy>,
    pub clients: Vec<ClientInput>,
    /// The Secrets `spec.identity` references, as read from the server's namespace.
    pub identity_secrets: IdentitySecrets,
    /// Labels of the clients' namespaces, by namespace, as the platform set them; a namespace
    /// not here has no labels to select on.
    pub namespace_labels: NamespaceLabels,
}

/// Contents of the Secrets that `spec.identity` references (see [`identity_secret_names`]),
/// by Secret name; a Secret that does not exist is absent.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IdentitySecrets {
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl IdentitySecrets {
    pub fn insert(&mut self, secret: impl Into<String>, data: BTreeMap<String, Vec<u8>>) {
        self.secrets.insert(secret.into(), data);
    }
}

impl std::fmt::Debug for IdentitySecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and keys only: the values are client secrets and password hashes.
        let keys: BTreeMap<&String, Vec<&String>> = self.secrets.iter().map(|(n, d)| (n, d.keys().collect())).collect();
        f.debug_struct("IdentitySecrets").field("keys", &keys).finish()
    }
}

/// Names of the Secrets (in the server's namespace) that `spec.identity` reads.
pub fn identity_secret_names(server: &AuthorizationServer) -> BTreeSet<String> {
    let Some(identity) = &server.spec.identity else { return BTreeSet::new() };
    identity
        .upstreams
        .iter()
        .map(|u| u.client_secret_ref.name.clone())
        .chain(identity.static_users.iter().map(|s| s.secret_name.clone()))
        .collect()
}

/// Why the server's spec could not be compiled (a CRD rule it breaks, or `spec.identity`'s
/// Secrets); the message starts with the field and names Secrets and keys, never values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    /// [`INVALID_SPEC`], [`IDENTITY_SECRET_NOT_FOUND`] or [`INVALID_STATIC_USERS`].
    pub reason: &'static str,
    pub message: String,
}

/// A referenced Secret, or its key, is missing, empty or not UTF-8.
pub const IDENTITY_SECRET_NOT_FOUND: &str = "IdentitySecretNotFound";
/// The static users key does not hold a valid list of users.
pub const INVALID_STATIC_USERS: &str = "InvalidStaticUsers";

impl ServerError {
    /// Whether only a change by someone (the spec, a Secret's content) can clear it: the
    /// server is stalled. A referenced Secret that does not exist yet is not: the operator
    /// waits for it (GitOps tools often create it in the same apply) and reconciles when it
    /// appears.
    pub fn is_permanent(&self) -> bool {
        self.reason != IDENTITY_SECRET_NOT_FOUND
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Clone)]
pub struct ClientInput {
    pub client: AuthClient,
    /// Hex SHA-256 of each currently valid secret.
    pub secret_hashes: Vec<String>,
}

impl std::fmt::Debug for ClientInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientInput")
            .field("client", &self.client.metadata.name)
            .field("secret_hashes", &format_args!("[{} redacted]", self.secret_hashes.len()))
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct Compiled {
    pub config: ServerConfig,
    /// Objects left out of `config`, each with the reason to put on its status.
    pub rejected: Vec<Rejection>,
    /// The server's spec breaks a CRD rule, or `spec.identity` could not be compiled
    /// (`config.identity` is then `None`): `config` must not be served.
    pub server_error: Option<ServerError>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// `AuthScope`, `AuthClaim`, `AccessPolicy` or `AuthClient`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// `Conflict`, `InvalidExpression`, `Reserved`, `InvalidSpec`, `InvalidClientId`, `ClientIdNotOwned`,
    /// `JwksUriNotAllowed`.
    pub reason: String,
    pub message: String,
}

/// `Cache-Control: max-age` of the JWKS: an hour at most, and at most half of prePublish so a
/// Next key is in every verifier's cache before it signs.
pub fn jwks_max_age_secs(pre_publish_secs: u64) -> u64 {
    HOUR.min(pre_publish_secs / 2)
}

/// Compiles `input` into a `ServerConfig`; objects that cannot be used are listed in `rejected`.
pub fn compile(input: &CompileInput) -> Compiled {
    let mut rejected = Vec::new();
    let server = &input.server;
    let spec = &server.spec;
    let issuer = spec.issuer.trim_end_matches('/').to_owned();

    let server_ns = namespace_or_default(server.metadata.namespace.as_deref());

    let scopes = compile_scopes(&input.scopes, &mut rejected);
    let claims = compile_claims(&input.claims, &mut rejected);
    let outbound = spec
        .outbound
        .as_ref()
        .map(|o| crate::outbound::OutboundConfig {
            allowed_url_prefixes: o.allowed_url_prefixes.clone(),
            allow_internal_addresses: o.allow_internal_addresses,
        })
        .unwrap_or_default();
    let platform =
        Platform { server, server_ns, namespace_labels: &input.namespace_labels, trusted: &spec.trusted_clients };
    let clients = compile_clients(&input.clients, &platform, &outbound, &mut rejected);
    let policies = compile_policies(&input.policies, &clients, server_ns, &mut rejected);

    let rotation = &spec.signing.rotation;
    let jwks_max_age = jwks_max_age_secs(rotation.pre_publish.as_secs());
    // A Next key must be in every verifier's cache (max-age, plus skew) before it signs.
    let pre_publish_secs = rotation.pre_publish.as_secs().max(jwks_max_age + CLOCK_SKEW_SECS);
    let longest_token = policies
        .iter()
        .flat_map(|p| &p.rules)
        .map(|r| r.access_token_lifetime_secs.max(r.id_token_lifetime_secs))
        .max()
        .unwrap_or(HOUR);
    let signing = SigningConfig {
        algorithm: spec.signing.algorithm,
        mode: rotation.mode,
        period_secs: rotation.period.as_secs().max(1),
        pre_publish_secs,
        // A retired key must outlive every token it signed in every verifier's cache.
        retain_retired_secs: rotation.retain_retired.as_secs().max(longest_token + jwks_max_age + CLOCK_SKEW_SECS),
    };

    let trusted_issuers = spec
        .trusted_issuers
        .iter()
        .map(|t| TrustedIssuerConfig {
            kubernetes: t.kubernetes.unwrap_or(false),
            issuer: t.issuer.clone().filter(|s| !s.is_empty()),
            audiences: if t.audiences.is_empty() { vec![issuer.clone()] } else { t.audiences.clone() },
            jwks_uri: t.jwks_uri.clone().filter(|s| !s.is_empty()),
        })
        .collect();

    let (identity, identity_error) = match compile_identity(server, &input.identity_secrets) {
        Ok(identity) => (identity, None),
        Err(e) => (None, Some(e)),
    };
    let violations = rules::server(spec);
    let server_error = if violations.is_empty() {
        identity_error
    } else {
        Some(ServerError { reason: INVALID_SPEC, message: violations.join("; ") })
    };

    let config = ServerConfig {
        name: server.metadata.name.clone().unwrap_or_default(),
        namespace: server.metadata.namespace.clone().unwrap_or_default(),
        issuer,
        audiences: spec.audiences.clone(),
        suspended: spec.suspended,
        signing,
        jwks_max_age_secs: jwks_max_age,
        trusted_origins: spec.trusted_origins.clone(),
        rate_limit: spec.rate_limit.clone(),
        storage: spec.storage.clone(),
        trusted_issuers,
        outbound,
        scopes,
        claims,
        policies,
        clients,
        identity,
    };
    Compiled { config, rejected, server_error }
}

const DEFAULT_UPSTREAM_SCOPES: [&str; 3] = ["openid", "email", "profile"];

/// `spec.identity` with its Secrets read; all or nothing.
fn compile_identity(
    server: &AuthorizationServer,
    secrets: &IdentitySecrets,
) -> Result<Option<IdentityConfig>, ServerError> {
    let Some(spec) = &server.spec.identity else { return Ok(None) };
    let ns = namespace_or_default(server.metadata.namespace.as_deref());
    let not_found = |message: String| ServerError {
        reason: IDENTITY_SECRET_NOT_FOUND,
        message: format!("spec.identity: {message}"),
    };
    // The value of `key` in Secret `name`, or why there is none; `what` says who refers to it.
    let value = |name: &str, key: &str, what: &str| -> Result<String, ServerError> {
        let data =
            secrets.secrets.get(name).ok_or_else(|| not_found(format!("Secret {ns}/{name} ({what}) was not found")))?;
        let bytes = data.get(key).ok_or_else(|| not_found(format!("Secret {ns}/{name} ({what}) has no key {key}")))?;
        String::from_utf8(bytes.clone())
            .map_err(|_| not_found(format!("key {key} of Secret {ns}/{name} ({what}) is not UTF-8 text")))
    };

    let mut upstreams = Vec::with_capacity(spec.upstreams.len());
    for u in &spec.upstreams {
        let r = &u.client_secret_ref;
        let what = format!("client secret of upstream {}", u.name);
        let client_secret = value(&r.name, &r.key, &what)?.trim().to_owned();
        if client_secret.is_empty() {
            return Err(not_found(format!("key {} of Secret {ns}/{} ({what}) is empty", r.key, r.name)));
        }
        upstreams.push(UpstreamConfig {
            name: u.name.clone(),
            display_name: u.display_name.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| u.name.clone()),
            issuer: u.issuer.trim_end_matches('/').to_owned(),
            client_id: u.client_id.clone(),
            client_secret,
            scopes: if u.scopes.is_empty() {
                DEFAULT_UPSTREAM_SCOPES.iter().map(|s| (*s).to_owned()).collect()
            } else {
                u.scopes.clone()
            },
            claim_mapping: u.claim_mapping.clone(),
        });
    }

    let users = match &spec.static_users {
        None => Vec::new(),
        Some(s) => {
            let yaml = value(&s.secret_name, &s.key, "static users")?;
            StaticUser::parse_list(&yaml).map_err(|e| ServerError {
                reason: INVALID_STATIC_USERS,
                message: format!("spec.identity: key {} of Secret {ns}/{}: {e}", s.key, s.secret_name),
            })?
        }
    };

    Ok(Some(IdentityConfig { session_lifetime_secs: spec.session_lifetime.as_secs(), upstreams, users }))
}

/// Order in which duplicates are resolved: older first, then by namespace and name.
fn age_key(meta: &kube::api::ObjectMeta) -> (Option<jiff::Timestamp>, String, String) {
    // Objects without a timestamp (files on disk) sort after those with one.
    let ts = meta.creation_timestamp.as_ref().map(|t| t.0);
    (
        ts.or(Some(jiff::Timestamp::MAX)),
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn reject(kind: &'static str, meta: &kube::api::ObjectMeta, reason: &str, message: String) -> Rejection {
    Rejection {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        reason: reason.to_owned(),
        message,
    }
}

/// The rejection of an object that breaks CRD rules, if it breaks any.
fn invalid(kind: &'static str, meta: &kube::api::ObjectMeta, violations: Vec<String>) -> Option<Rejection> {
    (!violations.is_empty()).then(|| reject(kind, meta, INVALID_SPEC, violations.join("; ")))
}

/// Why `source` is not admitted as an expression (the same bounds as the policy engine's).
fn cel_error(source: &str) -> Option<String> {
    crate::expression::compile(source).err().map(|e| e.to_string())
}

/// Why a client's `metadata` is beyond what CEL expressions are admitted for, if it is.
fn metadata_error(metadata: &BTreeMap<String, String>) -> Option<String> {
    use crate::expression::limits::{METADATA_ENTRIES, METADATA_KEY_BYTES, METADATA_VALUE_BYTES};
    if metadata.len() as u64 > METADATA_ENTRIES {
        return Some(format!("metadata has {} entries; at most {METADATA_ENTRIES}", metadata.len()));
    }
    metadata.iter().find_map(|(k, v)| {
        if k.len() as u64 > METADATA_KEY_BYTES {
            Some(format!("metadata key {:?}… is {} bytes long; at most {METADATA_KEY_BYTES}", trunc(k), k.len()))
        } else if v.len() as u64 > METADATA_VALUE_BYTES {
            Some(format!("metadata value of {:?} is {} bytes long; at most {METADATA_VALUE_BYTES}", trunc(k), v.len()))
        } else {
            None
        }
    })
}

fn trunc(s: &str) -> &str {
    s.char_indices().nth(32).map_or(s, |(i, _)| &s[..i])
}

fn compile_scopes(scopes: &[AuthScope], rejected: &mut Vec<Rejection>) -> Vec<ScopeConfig> {
    let mut sorted: Vec<&AuthScope> = scopes.iter().collect();
    sorted.sort_by_key(|s| age_key(&s.metadata));
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for s in sorted {
        if let Some(r) = invalid("AuthScope", &s.metadata, rules::scope(s)) {
            rejected.push(r);
            continue;
        }
        let name = s.scope_name();
        if RESERVED_SCOPES.contains(&name.as_str()) || name == "*" {
            rejected.push(reject("AuthScope", &s.metadata, "Reserved", format!("scope {name:?} is built in")));
            continue;
        }
        if let Some(owner) = seen.get(&name) {
            rejected.push(reject(
                "AuthScope",
                &s.metadata,
                "Conflict",
                format!("scope {name:?} is already defined by AuthScope {owner}"),
            ));
            continue;
        }
        seen.insert(name.clone(), s.metadata.name.clone().unwrap_or_default());
        out.push(ScopeConfig {
            name,
            display_name: s.spec.display_name.clone(),
            description: s.spec.description.clone(),
            consent: s.spec.consent,
            default: s.spec.default,
            discoverable: s.spec.discoverable,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn compile_claims(claims: &[AuthClaim], rejected: &mut Vec<Rejection>) -> Vec<ClaimConfig> {
    let mut sorted: Vec<&AuthClaim> = claims.iter().collect();
    sorted.sort_by_key(|c| age_key(&c.metadata));
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for c in sorted {
        if let Some(r) = invalid("AuthClaim", &c.metadata, rules::claim(&c.spec)) {
            rejected.push(r);
            continue;
        }
        let name = &c.spec.name;
        if RESERVED_CLAIMS.contains(&name.as_str()) {
            rejected.push(reject("AuthClaim", &c.metadata, "Reserved", format!("claim {name:?} is set by the issuer")));
            continue;
        }
        if let Some(err) = cel_error(&c.spec.value) {
            rejected.push(reject("AuthClaim", &c.metadata, "InvalidExpression", format!("value {err}")));
            continue;
        }
        if !seen.insert((name.clone(), c.spec.token as u8)) {
            rejected.push(reject(
                "AuthClaim",
                &c.metadata,
                "Conflict",
                format!("claim {name:?} is already defined for {:?} by an older AuthClaim", c.spec.token),
            ));
            continue;
        }
        out.push(ClaimConfig {
            name: name.clone(),
            token: c.spec.token,
            value: c.spec.value.clone(),
            always_include: c.spec.always_include.unwrap_or(true),
            scopes: c.spec.scopes.clone(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A client's `jwksUri` is outside the server's `spec.outbound` (or not a URL at all).
pub const JWKS_URI_NOT_ALLOWED: &str = "JwksUriNotAllowed";
/// The labels of a client's namespace are beyond what CEL expressions are admitted for.
pub const INVALID_NAMESPACE_LABELS: &str = "InvalidNamespaceLabels";

/// What the platform and the server's owner assert about clients (never the client's owner).
struct Platform<'a> {
    /// Its `spec.clientNamespaces` admits the clients' namespaces.
    server: &'a AuthorizationServer,
    server_ns: &'a str,
    namespace_labels: &'a NamespaceLabels,
    trusted: &'a [String],
}

/// Why the labels of a client's namespace are beyond [`crate::expression::limits`], if they are.
fn namespace_labels_error(namespace: &str, labels: &BTreeMap<String, String>) -> Option<String> {
    use crate::expression::limits::{NAMESPACE_LABEL_KEY_BYTES, NAMESPACE_LABEL_VALUE_BYTES, NAMESPACE_LABELS};
    if labels.len() as u64 > NAMESPACE_LABELS {
        return Some(format!(
            "namespace {namespace} has {} labels; CEL's client.namespaceLabels admits at most {NAMESPACE_LABELS}",
            labels.len()
        ));
    }
    labels
        .iter()
        .find(|(k, v)| k.len() as u64 > NAMESPACE_LABEL_KEY_BYTES || v.len() as u64 > NAMESPACE_LABEL_VALUE_BYTES)
        .map(|(k, _)| {
            format!(
                "label {:?} of namespace {namespace} is longer than Kubernetes allows (key {NAMESPACE_LABEL_KEY_BYTES}, value {NAMESPACE_LABEL_VALUE_BYTES} bytes)",
                trunc(k)
            )
        })
}

fn compile_clients(
    clients: &[ClientInput],
    platform: &Platform<'_>,
    outbound: &crate::outbound::OutboundConfig,
    rejected: &mut Vec<Rejection>,
) -> Vec<ClientConfig> {
    let mut sorted: Vec<&ClientInput> = clients.iter().collect();
    sorted.sort_by_key(|c| age_key(&c.client.metadata));
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for input in sorted {
        let c = &input.client;
        if let Some(r) = invalid("AuthClient", &c.metadata, rules::client(&c.spec)) {
            rejected.push(r);
            continue;
        }
        let client_id = c.client_id();
        let namespace = namespace_or_default(c.metadata.namespace.as_deref()).to_owned();
        let name = c.metadata.name.clone().unwrap_or_default();
        // Admission (namespace, then client id) before the age check: a squatter must never
        // win by being older.
        if let Some((reason, message)) = client_refusal(platform.server, c, platform.namespace_labels) {
            rejected.push(reject("AuthClient", &c.metadata, reason, message));
            continue;
        }
        if let Some(owner) = seen.get(&client_id) {
            rejected.push(reject(
                "AuthClient",
                &c.metadata,
                "Conflict",
                format!("clientId {client_id:?} is already used by AuthClient {owner}"),
            ));
            continue;
        }
        if let Some(err) = metadata_error(&c.spec.metadata) {
            rejected.push(reject("AuthClient", &c.metadata, "InvalidMetadata", err));
            continue;
        }
        let namespace_labels = platform.namespace_labels.get(&namespace).cloned().unwrap_or_default();
        if let Some(err) = namespace_labels_error(&namespace, &namespace_labels) {
            rejected.push(reject("AuthClient", &c.metadata, INVALID_NAMESPACE_LABELS, err));
            continue;
        }
        let trusted = namespace == platform.server_ns || platform.trusted.contains(&client_id);
        seen.insert(client_id.clone(), format!("{namespace}/{name}"));
        let auth = &c.spec.authentication;
        // `serve` has no admission: the outbound allow-list holds here.
        let jwks_uri = match auth.jwks_uri.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(raw) => match crate::outbound::policy::check_tenant_url(raw, outbound) {
                Ok(url) => Some(url),
                Err(why) => {
                    let message = format!("authentication.jwksUri is not allowed: {why}");
                    rejected.push(reject("AuthClient", &c.metadata, JWKS_URI_NOT_ALLOWED, message));
                    continue;
                }
            },
        };
        let service_account = match (auth.method, &auth.service_account_name) {
            (AuthMethod::ServiceAccount, Some(sa)) => {
                Some(ServiceAccountRef { namespace: namespace.clone(), name: sa.clone() })
            }
            _ => None,
        };
        out.push(ClientConfig {
            client_id,
            namespace,
            name,
            display_name: c.spec.display_name.clone(),
            grant_types: c.spec.grant_types.clone(),
            redirect_uris: c.spec.redirect_uris.clone(),
            post_logout_redirect_uris: c.spec.post_logout_redirect_uris.clone(),
            auth_method: auth.method,
            secret_hashes: if auth.method.uses_secret() { input.secret_hashes.clone() } else { Vec::new() },
            jwks: auth.jwks.clone(),
            jwks_uri,
            service_account,
            metadata: c.spec.metadata.clone(),
            labels: c.metadata.labels.clone().unwrap_or_default(),
            namespace_labels,
            trusted,
        });
    }
    out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    out
}

/// Whether a policy's `clients` takes in `c`: its form (all, ids, AuthClient labels) and the
/// namespace condition, which a label selector without one makes the server's own namespace.
fn policy_takes(m: &crate::api::ClientMatch, c: &ClientConfig, server_ns: &str) -> bool {
    let form = if m.all.unwrap_or(false) {
        true
    } else if let Some(ids) = &m.ids {
        ids.contains(&c.client_id)
    } else if let Some(sel) = &m.selector {
        selector::matches(sel, &c.labels)
    } else {
        false
    };
    let namespace = if let Some(namespaces) = &m.namespaces {
        namespaces.contains(&c.namespace)
    } else if let Some(sel) = &m.namespace_selector {
        // Labels not read (no Namespace object) match no selector, not even an empty one.
        !c.namespace_labels.is_empty() && selector::matches(sel, &c.namespace_labels)
    } else {
        // The client's owner writes its labels: alone they only select the platform's own clients.
        m.selector.is_none() || c.namespace == server_ns
    };
    form && namespace
}

fn compile_policies(
    policies: &[AccessPolicy],
    clients: &[ClientConfig],
    server_ns: &str,
    rejected: &mut Vec<Rejection>,
) -> Vec<PolicyConfig> {
    let mut out = Vec::new();
    'policies: for p in policies {
        if let Some(r) = invalid("AccessPolicy", &p.metadata, rules::policy(&p.spec)) {
            rejected.push(r);
            continue;
        }
        let spec = &p.spec;
        let mut rules = Vec::with_capacity(spec.rules.len());
        for r in &spec.rules {
            if let Some(condition) = &r.condition
                && let Some(err) = cel_error(condition)
            {
                rejected.push(reject(
                    "AccessPolicy",
                    &p.metadata,
                    "InvalidExpression",
                    format!("rule {:?}: condition {err}", r.name),
                ));
                continue 'policies;
            }
            let secs = |d: &Option<crate::api::Duration>, default: u64| d.as_ref().map_or(default, |d| d.as_secs());
            rules.push(RuleConfig {
                name: r.name.clone(),
                grant_types: r.grant_types.clone(),
                scopes: r.scopes.clone(),
                users: r.users.clone(),
                condition: r.condition.clone(),
                access_token_lifetime_secs: secs(&r.access_token_lifetime, HOUR),
                refresh_token_lifetime_secs: secs(&r.refresh_token_lifetime, 0),
                refresh_token_idle_timeout_secs: secs(&r.refresh_token_idle_timeout, 168 * HOUR),
                id_token_lifetime_secs: secs(&r.id_token_lifetime, HOUR),
            });
        }
        let m = &spec.clients;
        let unconditional = m.namespaces.is_none() && m.namespace_selector.is_none();
        let policy_clients = if m.all.unwrap_or(false) && unconditional {
            PolicyClients::All
        } else if let (Some(ids), true) = (&m.ids, unconditional) {
            // Ids belong to namespaces already (see `client_id_refusal`); kept as written.
            PolicyClients::Ids(ids.clone())
        } else {
            PolicyClients::Ids(
                clients.iter().filter(|c| policy_takes(m, c, server_ns)).map(|c| c.client_id.clone()).collect(),
            )
        };
        out.push(PolicyConfig {
            name: p.metadata.name.clone().unwrap_or_default(),
            priority: spec.priority,
            description: spec.description.clone(),
            clients: policy_clients,
            rules,
        });
    }
    out.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    out
}

#[cfg(test)]
mod tests;
