//! `tessera serve`: resource files on disk → the same `ServerConfig` the operator would
//! compile → an issuer on a local port, with keys and generated client secrets in a state
//! directory.

pub mod manifests;
pub mod preview;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::StorageType;
use crate::api::{AuthClient, AuthorizationServer};
use crate::config::subjects::{client_id_refusal, namespace_admits, namespace_or_default};
use crate::config::{
    ClientInput, CompileInput, Compiled, IdentitySecrets, compile, hash_secret, identity_secret_names,
};
use crate::issuer::{Issuer, IssuerOptions, Served};
use crate::store::{MemoryStore, RedisStore, TokenStore};

pub use manifests::{Manifests, load};
pub use state::{ClientCredentials, StateDir};

#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error(transparent)]
    Manifest(#[from] manifests::ManifestError),
    #[error("no AuthorizationServer in the given files")]
    NoServer,
    #[error("{0}")]
    State(String),
    #[error("AuthorizationServer {server}: {message}")]
    Identity { server: String, message: String },
    #[error("{server}: {message}")]
    Serve { server: String, message: String },
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: SocketAddr, message: String },
}

pub struct ServeOptions {
    pub files: Vec<PathBuf>,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    /// Serve HTTPS with `tls.crt` and `tls.key` from this directory.
    pub tls_dir: Option<PathBuf>,
    /// Redis URL for servers whose storage.type is Redis.
    pub redis_url: Option<String>,
    pub issuer: IssuerOptions,
    /// Timeouts and the connection limit of the listener.
    pub connections: crate::listener::ConnectionLimits,
    /// Ceiling of the in-memory token store, in bytes.
    pub memory_store_limit: usize,
}

fn client_allowed(server: &AuthorizationServer, client: &AuthClient, m: &Manifests) -> bool {
    let client_ns = namespace_or_default(client.metadata.namespace.as_deref());
    namespace_admits(server, client_ns, m.namespaces.get(client_ns))
}

/// The compile input of `server` from the files, with client secrets from Secrets in the
/// files or generated once into the state directory.
pub fn compile_input(
    server: &AuthorizationServer,
    m: &Manifests,
    state: Option<&StateDir>,
) -> Result<CompileInput, StandaloneError> {
    let name = server.metadata.name.clone().unwrap_or_default();
    let ns = namespace_or_default(server.metadata.namespace.as_deref()).to_owned();
    let same = |meta: &kube::api::ObjectMeta, server_ref: &str| {
        meta.namespace.as_deref() == Some(ns.as_str()) && server_ref == name
    };
    let mut clients = Vec::new();
    for c in &m.clients {
        if c.spec.server_ref.name != name || c.server_namespace() != ns || !client_allowed(server, c, m) {
            continue;
        }
        let mut secret_hashes = Vec::new();
        let client_ns = namespace_or_default(c.metadata.namespace.as_deref());
        // A client id its namespace may not claim gets no secret; compile says why.
        let owned = client_id_refusal(&c.client_id(), client_ns, &ns).is_none();
        if owned && c.spec.authentication.method.uses_secret() {
            let key = (c.metadata.namespace.clone().unwrap_or_default(), c.secret_name());
            let secret = match (m.client_secrets.get(&key), state) {
                (Some(s), _) => Some(s.0.clone()),
                (None, Some(state)) => Some(
                    state
                        .client_secret(&ns, &name, &c.client_id(), &server.spec.issuer)
                        .map_err(StandaloneError::State)?,
                ),
                (None, None) => None,
            };
            secret_hashes.extend(secret.map(|s| hash_secret(&s)));
        }
        clients.push(ClientInput { client: c.clone(), secret_hashes });
    }
    let mut identity_secrets = IdentitySecrets::default();
    for secret in identity_secret_names(server) {
        if let Some(data) = m.secrets.get(&(ns.clone(), secret.clone())) {
            identity_secrets.insert(secret, data.0.clone());
        }
    }
    Ok(CompileInput {
        server: server.clone(),
        scopes: m.scopes.iter().filter(|s| same(&s.metadata, &s.spec.server_ref.name)).cloned().collect(),
        claims: m.claims.iter().filter(|s| same(&s.metadata, &s.spec.server_ref.name)).cloned().collect(),
        policies: m.policies.iter().filter(|s| same(&s.metadata, &s.spec.server_ref.name)).cloned().collect(),
        clients,
        identity_secrets,
        namespace_labels: namespace_labels(m),
    })
}

/// Labels of the Namespaces in the files, each with `kubernetes.io/metadata.name` as the API
/// server sets it.
fn namespace_labels(m: &Manifests) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    m.namespaces
        .iter()
        .map(|(name, labels)| {
            let mut labels = labels.clone();
            labels.insert("kubernetes.io/metadata.name".to_owned(), name.clone());
            (name.clone(), labels)
        })
        .collect()
}

/// Compiles every server in the files; a spec that cannot be served is in `server_error`.
pub fn compile_all(m: &Manifests, state: Option<&StateDir>) -> Result<Vec<Compiled>, StandaloneError> {
    if m.servers.is_empty() {
        return Err(StandaloneError::NoServer);
    }
    m.servers.iter().map(|s| Ok(compile(&compile_input(s, m, state)?))).collect()
}

/// Compiles every server for serving: a spec that breaks a CRD rule, or a Secret that sign-in
/// needs and the files lack, is an error, never worked around with a half-built server.
pub fn compile_for_serving(m: &Manifests, state: Option<&StateDir>) -> Result<Vec<Compiled>, StandaloneError> {
    let compiled = compile_all(m, state)?;
    if let Some(c) = compiled.iter().find(|c| c.server_error.is_some()) {
        return Err(StandaloneError::Identity {
            server: format!("{}/{}", c.config.namespace, c.config.name),
            message: c.server_error.as_ref().map(|e| e.message.clone()).unwrap_or_default(),
        });
    }
    Ok(compiled)
}

/// Runs `tessera serve` until the process is stopped.
pub async fn serve(options: ServeOptions) -> Result<(), StandaloneError> {
    let manifests = load(&options.files)?;
    let state = StateDir::new(options.state_dir.clone());
    let servers: Vec<(String, String)> = manifests
        .servers
        .iter()
        .map(|s| {
            let ns = namespace_or_default(s.metadata.namespace.as_deref()).to_owned();
            (ns, s.metadata.name.clone().unwrap_or_default())
        })
        .collect();
    for note in state.migrate_unnamespaced(&servers) {
        tracing::warn!(state = %options.state_dir.display(), "{note}");
    }
    let compiled = compile_for_serving(&manifests, Some(&state))?;
    let store = token_store(&compiled, options.redis_url.as_deref(), options.memory_store_limit)?;
    let issuer = Issuer::new(options.issuer.clone(), store);
    for c in compiled {
        for r in &c.rejected {
            tracing::warn!(kind = r.kind, namespace = %r.namespace, name = %r.name, reason = %r.reason, "{}", r.message);
        }
        let config = c.config;
        let server = config.name.clone();
        let now = jiff::Timestamp::now();
        let keys = state.rotate_keys(&config, now).map_err(StandaloneError::State)?;
        let served = Served::new(config.clone(), &keys.0)
            .map_err(|e| StandaloneError::Serve { server: server.clone(), message: e.to_string() })?;
        issuer.replace(served);
        tracing::info!(server = %server, issuer = %config.issuer, "serving");
        for client in config.clients.iter().filter(|c| c.auth_method.uses_secret()) {
            if let Some(path) = state.client_file(&config.namespace, &server, &client.client_id).filter(|p| p.exists())
            {
                tracing::info!(client = %client.client_id, credentials = %path.display(), "client credentials");
            }
        }
        tokio::spawn(rotate_forever(issuer.clone(), state.clone(), config, keys.1));
    }
    let bound = crate::listener::bind(options.listen, options.tls_dir.clone(), options.connections)
        .await
        .map_err(|e| StandaloneError::Listen { addr: e.addr, message: e.message })?;
    let scheme = if bound.is_tls() { "https" } else { "http" };
    tracing::info!(addr = %bound.local_addr().unwrap_or(options.listen), scheme, "listening");
    bound.serve(issuer.router()).await;
    Ok(())
}

/// Redis when a server asks for it (one store serves every server, each under its own keys).
fn token_store(
    compiled: &[Compiled],
    redis_url: Option<&str>,
    memory_limit: usize,
) -> Result<Arc<dyn TokenStore>, StandaloneError> {
    let wants_redis = compiled.iter().any(|c| c.config.storage.type_ == StorageType::Redis);
    match (wants_redis, redis_url) {
        (true, Some(url)) => {
            let store = RedisStore::new(url).map_err(|e| StandaloneError::State(e.to_string()))?;
            tracing::info!("token state in Redis");
            Ok(Arc::new(store))
        }
        (true, None) => Err(StandaloneError::State("storage.type Redis needs TESSERA_REDIS_URL or --redis-url".into())),
        (false, url) => {
            if url.is_some() {
                tracing::warn!(
                    "a Redis URL was given but no server has storage.type Redis: token state stays in memory"
                );
            }
            Ok(Arc::new(MemoryStore::with_limit(memory_limit)))
        }
    }
}

/// Rotates the keys of one server on the planner's schedule, swapping them in as they change.
async fn rotate_forever(
    issuer: Arc<Issuer>,
    state: StateDir,
    config: crate::config::ServerConfig,
    mut next_due: Option<jiff::Timestamp>,
) {
    loop {
        let now = jiff::Timestamp::now();
        // Wake at the next due time, at least hourly so a changed clock is noticed.
        let wait = next_due.map_or(3600.0, |d| (d.as_millisecond() - now.as_millisecond()).max(0) as f64 / 1000.0);
        tokio::time::sleep(std::time::Duration::from_secs_f64(wait.min(3600.0) + 0.01)).await;
        match state.rotate_keys(&config, jiff::Timestamp::now()) {
            Ok((keys, due)) => {
                next_due = due;
                match Served::new(config.clone(), &keys) {
                    Ok(served) => issuer.replace(served),
                    Err(e) => tracing::error!(server = %config.name, error = %e, "rotated keys cannot be served"),
                }
            }
            Err(e) => {
                tracing::error!(server = %config.name, error = %e, "key rotation failed; retrying in a minute");
                next_due = Some(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60));
            }
        }
    }
}

#[cfg(test)]
mod tests;
