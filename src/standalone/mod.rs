//! `tessera serve`: resource files on disk → the same `ServerConfig` the operator would
//! compile → an issuer on a local port, with keys and generated client secrets in a state
//! directory.

pub mod manifests;
pub mod preview;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::AuthorizationServer;
use crate::api::StorageType;
use crate::config::subjects::{client_refusal, namespace_or_default};
use crate::config::{
    ClientInput, CompileInput, Compiled, IdentitySecrets, compile, hash_secret, identity_secret_names,
};
use crate::issuer::{Issuer, IssuerOptions, Served};
use crate::store::{MemoryStore, RedisStore, TokenStore};

pub use manifests::{Manifests, load};
pub use state::{ClientCredentials, Rotated, StateDir};

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
    /// How often the resource files and key state are checked for changes.
    pub reload_interval: std::time::Duration,
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
    let namespace_labels = namespace_labels(m);
    let mut clients = Vec::new();
    for c in &m.clients {
        if c.spec.server_ref.name != name || c.server_namespace() != ns {
            continue;
        }
        let mut secret_hashes = Vec::new();
        // A client its server does not admit gets no secret; compile says why.
        let admitted = client_refusal(server, c, &namespace_labels).is_none();
        if admitted && c.spec.authentication.method.uses_secret() {
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
        namespace_labels,
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

/// Logs every resource the compile left out, with its reason (at start and on each reload).
fn log_rejected(compiled: &[Compiled]) {
    for r in compiled.iter().flat_map(|c| &c.rejected) {
        tracing::warn!(kind = r.kind, namespace = %r.namespace, name = %r.name, reason = %r.reason, "{}", r.message);
    }
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
    log_rejected(&compiled);
    let configs = compiled.into_iter().map(|c| c.config).collect::<Vec<_>>();
    let (served, next_due) = build(&state, &configs, jiff::Timestamp::now())?;
    for s in served {
        let config = &s.config;
        tracing::info!(server = %config.name, issuer = %config.issuer, "serving");
        for client in config.clients.iter().filter(|c| c.auth_method.uses_secret()) {
            if let Some(path) =
                state.client_file(&config.namespace, &config.name, &client.client_id).filter(|p| p.exists())
            {
                tracing::info!(client = %client.client_id, credentials = %path.display(), "client credentials");
            }
        }
        issuer.replace(s);
    }
    // No fingerprint yet: the first look reads everything again, so a file written while this
    // start read the files and keys is not missed.
    let running = Running { fingerprint: 0, configs, next_due };
    tokio::spawn(reload_forever(issuer.clone(), state, options.files.clone(), options.reload_interval, running));
    let bound = crate::listener::bind(options.listen, options.tls_dir.clone(), options.connections)
        .await
        .map_err(|e| StandaloneError::Listen { addr: e.addr, message: e.message })?;
    let scheme = if bound.is_tls() { "https" } else { "http" };
    tracing::info!(addr = %bound.local_addr().unwrap_or(options.listen), scheme, "listening");
    bound.serve(issuer.router()).await;
    Ok(())
}

/// The configs `serve` serves, what its files and key state looked like just before they were
/// read for them (0 before the first look), and when the keys change next.
struct Running {
    fingerprint: u64,
    configs: Vec<crate::config::ServerConfig>,
    next_due: Option<jiff::Timestamp>,
}

/// Every server of `configs` with its keys rotated for `now`; the earliest next key change.
fn build(
    state: &StateDir,
    configs: &[crate::config::ServerConfig],
    now: jiff::Timestamp,
) -> Result<(Vec<Served>, Option<jiff::Timestamp>), StandaloneError> {
    let mut served = Vec::new();
    let mut next_due: Option<jiff::Timestamp> = None;
    for config in configs {
        let server = format!("{}/{}", config.namespace, config.name);
        let (keys, due) = state
            .rotate_keys(config, now)
            .map_err(|m| StandaloneError::Serve { server: server.clone(), message: m })?;
        next_due = match (next_due, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        served.push(
            Served::new(config.clone(), &keys)
                .map_err(|e| StandaloneError::Serve { server, message: e.to_string() })?,
        );
    }
    Ok((served, next_due))
}

/// A hash of the resource files and of the key files of `configs`: what a reload depends on.
fn fingerprint(files: &[PathBuf], state: &StateDir, configs: &[crate::config::ServerConfig]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut paths = manifests::files(files).unwrap_or_default();
    paths.extend(configs.iter().map(|c| state.keys_file(&c.namespace, &c.name)));
    for path in paths {
        path.hash(&mut h);
        std::fs::read(&path).ok().hash(&mut h);
    }
    h.finish()
}

/// Re-reads the files when they change (a bad edit keeps the last good config and logs why)
/// and the key state when it changes or a key is due, swapping the servers in without a restart.
async fn reload_forever(
    issuer: Arc<Issuer>,
    state: StateDir,
    files: Vec<PathBuf>,
    interval: std::time::Duration,
    mut running: Running,
) {
    let mut failed_at: Option<u64> = None;
    loop {
        // Wake at the next key change if it comes before the next look at the files, so a
        // promoted key's successor is published at once.
        let until_due = running.next_due.map(|d| {
            let ms = (d.as_millisecond() - jiff::Timestamp::now().as_millisecond()).max(0) as u64;
            std::time::Duration::from_millis(ms + 10)
        });
        tokio::time::sleep(until_due.map_or(interval, |d| d.min(interval))).await;
        let now = jiff::Timestamp::now();
        let seen = fingerprint(&files, &state, &running.configs);
        let due = running.next_due.is_some_and(|d| d <= now);
        if seen == running.fingerprint && !due {
            continue;
        }
        let configs = if seen == running.fingerprint || failed_at == Some(seen) {
            running.configs.clone()
        } else {
            match load(&files).map_err(StandaloneError::from).and_then(|m| compile_for_serving(&m, Some(&state))) {
                Ok(compiled) => {
                    let redis = |c: &crate::config::ServerConfig| c.storage.type_ == StorageType::Redis;
                    if compiled.iter().any(|c| redis(&c.config)) != running.configs.iter().any(redis) {
                        tracing::warn!("storage.type changed: token state stays where it is until serve restarts");
                    }
                    log_rejected(&compiled);
                    compiled.into_iter().map(|c| c.config).collect()
                }
                Err(e) => {
                    tracing::error!(error = %e, "the changed resource files cannot be served; the last good config stays");
                    failed_at = Some(seen);
                    running.configs.clone()
                }
            }
        };
        match build(&state, &configs, now) {
            Ok((served, next_due)) => {
                let kept: Vec<(String, String)> =
                    configs.iter().map(|c| (c.namespace.clone(), c.name.clone())).collect();
                for gone in running.configs.iter().filter(|c| !kept.contains(&(c.namespace.clone(), c.name.clone()))) {
                    tracing::info!(namespace = %gone.namespace, server = %gone.name, "no longer in the files: not served");
                    issuer.remove(&gone.namespace, &gone.name);
                }
                for s in served {
                    issuer.replace(s);
                }
                if failed_at != Some(seen) {
                    failed_at = None;
                }
                // What was seen before reading, not a fresh look: a file written while this
                // reload read (`tessera rotate`, an editor) differs from it and is read next time.
                // Serve's own key writes differ too, and cost one more reload.
                running = Running { fingerprint: seen, configs, next_due };
                tracing::info!("config and keys reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "the changed config or key state cannot be served; the last good one stays");
                // Look again in a minute, and whenever the files change again.
                running.fingerprint = seen;
                running.next_due = Some(now + jiff::SignedDuration::from_secs(60));
            }
        }
    }
}

/// What `tessera rotate` is asked to do.
pub struct RotateOptions {
    pub files: Vec<PathBuf>,
    pub state_dir: PathBuf,
    /// `name` or `namespace/name`; every server of the files when `None`.
    pub server: Option<String>,
    /// Drop the signing key from the JWKS at once (a compromised key).
    pub revoke: bool,
}

/// `tessera rotate`: the Next key of each chosen server signs from `now` and a new Next key is
/// published (with `revoke`, the old signing key also leaves the JWKS). A running `serve` picks
/// the new key state up by itself. Returns one line per server.
pub fn rotate(options: &RotateOptions, now: jiff::Timestamp) -> Result<Vec<String>, StandaloneError> {
    let m = load(&options.files)?;
    let state = StateDir::new(options.state_dir.clone());
    let compiled = compile_for_serving(&m, Some(&state))?;
    let chosen: Vec<_> = compiled
        .iter()
        .map(|c| &c.config)
        .filter(|c| options.server.as_deref().is_none_or(|s| s == c.name || s == format!("{}/{}", c.namespace, c.name)))
        .collect();
    if chosen.is_empty() {
        return Err(StandaloneError::State(format!(
            "no AuthorizationServer {} in the given files",
            options.server.as_deref().unwrap_or_default()
        )));
    }
    let request =
        if options.revoke { crate::keys::RotationRequest::Revoke } else { crate::keys::RotationRequest::Rotate };
    let mut report = Vec::new();
    for config in chosen {
        let server = format!("{}/{}", config.namespace, config.name);
        let r = state
            .rotate_keys_with(config, now, request)
            .map_err(|message| StandaloneError::Serve { server: server.clone(), message })?;
        if r.plan.request_pending {
            let since = r.keys.keys.iter().find(|k| k.activates_at > now).map(|k| k.created_at);
            return Err(StandaloneError::Serve {
                server,
                message: format!(
                    "the Next key was published at {} and may sign only after prePublish ({}s), so that every verifier has it; \
                     run again then, or use --revoke if the signing key is compromised",
                    since.map(|t| t.to_string()).unwrap_or_default(),
                    config.signing.pre_publish_secs
                ),
            });
        }
        let active = r.keys.signing_key(now).map(|k| k.kid.clone()).unwrap_or_default();
        let revoked = if r.plan.revoked.is_empty() {
            String::new()
        } else {
            format!("; revoked {} (no longer in the JWKS)", r.plan.revoked.join(", "))
        };
        report.push(format!("{server}: {active} signs{revoked}; {} key(s) published", r.keys.published(now).count()));
    }
    Ok(report)
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

#[cfg(test)]
mod tests;
