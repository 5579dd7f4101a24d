//! `tessera issuer` in a cluster: watch the server's two Secrets (config and signing keys,
//! by name only) and swap both into the running issuer together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::{Issuer, IssuerOptions, Served};
use crate::api::StorageType;
use crate::config::{CONFIG_SECRET_KEY, ServerConfig, config_secret_name};
use crate::keys::{KEYS_SECRET_KEY, KeySet, keys_secret_name};
use crate::store::{MemoryStore, RedisStore, TokenStore};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("kubernetes client: {0}")]
    KubeClient(#[from] kube::Error),
    #[error("token store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("watching secrets: watch stream ended")]
    WatchEnded,
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: SocketAddr, message: String },
}

enum Change {
    Config(Option<Vec<u8>>),
    Keys(Option<Vec<u8>>),
}

fn data(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret.data.as_ref()?.get(key).map(|b| b.0.clone())
}

/// What `tessera issuer` serves and how.
pub struct IssuerRun {
    pub namespace: String,
    pub server: String,
    pub listen: SocketAddr,
    pub tls_dir: Option<PathBuf>,
    /// Redis URL (with its password): never logged.
    pub redis_url: Option<String>,
    pub connections: crate::listener::ConnectionLimits,
    /// Ceiling of the in-memory token store, in bytes.
    pub memory_store_limit: usize,
}

/// Serves `namespace/server` from its Secrets until the process is asked to shut down.
pub async fn run(run: IssuerRun, mut options: IssuerOptions) -> Result<(), WatchError> {
    let IssuerRun { namespace, server, listen, tls_dir, redis_url, connections, memory_store_limit } = run;
    let (namespace, server) = (namespace.as_str(), server.as_str());
    // The operator sets TESSERA_REDIS_URL (from spec.storage.redis.urlSecretRef) only for Redis.
    let has_redis = redis_url.is_some();
    let store: Arc<dyn TokenStore> = match redis_url {
        Some(url) => Arc::new(RedisStore::new(&url)?),
        None => Arc::new(MemoryStore::with_limit(memory_store_limit)),
    };
    let client = kube::Client::try_default().await?;
    if options.kubernetes_issuer.is_none() {
        options.kubernetes_issuer = service_account_issuer(&client).await;
    }
    options.kube_client = Some(client.clone());
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let issuer = Issuer::new(options, store);

    let bound = crate::listener::bind(listen, tls_dir, connections)
        .await
        .map_err(|e| WatchError::Listen { addr: e.addr, message: e.message })?;
    let http = tokio::spawn(bound.serve(issuer.router()));
    tracing::info!(%listen, namespace, server, "issuer listening; waiting for config and keys");

    let by_name = |name: String| watcher::Config::default().fields(&format!("metadata.name={name}"));
    let config_stream = watcher(secrets.clone(), by_name(config_secret_name(server)))
        .applied_objects()
        .map_ok(|s| Change::Config(data(&s, CONFIG_SECRET_KEY)));
    let keys_stream = watcher(secrets, by_name(keys_secret_name(server)))
        .applied_objects()
        .map_ok(|s| Change::Keys(data(&s, KEYS_SECRET_KEY)));
    let mut changes = futures::stream::select(config_stream.boxed(), keys_stream.boxed());

    let swap_changes = async {
        let (mut config, mut keys): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
        while let Some(change) = changes.next().await {
            match change {
                Ok(Change::Config(c)) if c != config => config = c,
                Ok(Change::Keys(k)) if k != keys => keys = k,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "watch interrupted; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            }
            let (Some(c), Some(k)) = (&config, &keys) else { continue };
            match load(c, k, has_redis) {
                Ok(served) => {
                    tracing::info!(server, issuer = %served.config.issuer, "config and keys swapped in");
                    issuer.replace(served);
                }
                // Keep serving the last good pair.
                Err(e) => {
                    tracing::error!(server, error = %e, "new config or keys rejected; still serving the previous ones")
                }
            }
        }
    };
    tokio::select! {
        () = swap_changes => {}
        // The listener drains on the same request; once it has, the issuer is done.
        () = crate::shutdown::requested() => {
            let _ = http.await;
            return Ok(());
        }
    }
    http.abort();
    Err(WatchError::WatchEnded)
}

/// The cluster's ServiceAccount issuer, from the API server's discovery document.
async fn service_account_issuer(client: &kube::Client) -> Option<String> {
    let req = axum::http::Request::get("/.well-known/openid-configuration").body(Vec::new()).ok()?;
    match client.request_text(req).await {
        Ok(text) => {
            let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
            let issuer = doc.get("issuer")?.as_str()?.to_owned();
            tracing::info!(%issuer, "cluster ServiceAccount issuer discovered");
            Some(issuer)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cluster ServiceAccount issuer unknown: ServiceAccount clients cannot authenticate");
            None
        }
    }
}

/// Why a new config/keys pair is not served (the previous pair keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{key}: {0}", key = CONFIG_SECRET_KEY)]
    ConfigInvalid(serde_json::Error),
    #[error("storage.type is Redis but TESSERA_REDIS_URL is not set")]
    RedisNotConfigured,
    #[error("{key}: {0}", key = KEYS_SECRET_KEY)]
    KeysInvalid(crate::keys::KeyError),
    #[error("{0}")]
    NotServable(#[from] super::ServeError),
}

fn load(config: &[u8], keys: &[u8], has_redis: bool) -> Result<Served, LoadError> {
    let config = ServerConfig::from_json(config).map_err(LoadError::ConfigInvalid)?;
    match (config.storage.type_, has_redis) {
        // Several replicas each with their own memory would accept a code or jti once per replica.
        (StorageType::Redis, false) => return Err(LoadError::RedisNotConfigured),
        (StorageType::Memory, true) => {
            tracing::warn!(
                "storage.type is Memory but TESSERA_REDIS_URL is set: token state stays in Redis until restart"
            )
        }
        _ => {}
    }
    let keys = KeySet::from_json(keys).map_err(LoadError::KeysInvalid)?;
    Ok(Served::new(config, &keys)?)
}
