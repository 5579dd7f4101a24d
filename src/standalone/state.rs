//! The state directory of `serve` (default `.tessera/`): keys and generated client secrets,
//! files readable by the owner only.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ServerConfig;
use crate::keys::{KeySet, generate_client_secret, plan};

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// What a generated client credentials file holds (as the operator's client Secret would).
#[derive(Serialize, Deserialize, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: String,
    pub issuer: String,
    pub token_endpoint: String,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("token_endpoint", &self.token_endpoint)
            .finish()
    }
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), String> {
    let dir = path.parent().ok_or_else(|| format!("{}: no parent directory", path.display()))?;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Write next to the target and rename, so a crash never leaves half a key file.
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(contents).and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

impl StateDir {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn client_file(&self, server: &str, client_id: &str) -> Option<PathBuf> {
        if client_id.contains('/') || client_id.starts_with('.') {
            return None;
        }
        Some(self.root.join(server).join("clients").join(format!("{client_id}.json")))
    }

    fn keys_file(&self, server: &str) -> PathBuf {
        self.root.join(server).join("keys.json")
    }

    /// The client's secret: read from its credentials file, or generated (256 bits) and stored once.
    pub fn client_secret(&self, server: &str, client_id: &str, issuer: &str) -> Result<String, String> {
        let path =
            self.client_file(server, client_id).ok_or_else(|| format!("client id {client_id:?} cannot name a file"))?;
        if path.exists() {
            let text = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let creds: ClientCredentials =
                serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            return Ok(creds.client_secret);
        }
        let issuer = issuer.trim_end_matches('/');
        let creds = ClientCredentials {
            client_id: client_id.to_owned(),
            client_secret: generate_client_secret().map_err(|e| e.to_string())?,
            issuer: issuer.to_owned(),
            token_endpoint: format!("{issuer}/v1/token"),
        };
        let json = serde_json::to_vec_pretty(&creds).map_err(|e| e.to_string())?;
        write_private(&path, &json)?;
        Ok(creds.client_secret)
    }

    /// Loads the server's keys, applies the rotation plan for `now` and stores the result.
    /// Returns the keys and when to rotate again.
    pub fn rotate_keys(
        &self,
        config: &ServerConfig,
        now: jiff::Timestamp,
    ) -> Result<(KeySet, Option<jiff::Timestamp>), String> {
        let path = self.keys_file(&config.name);
        let keys = if path.exists() {
            let text = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            KeySet::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            KeySet::default()
        };
        let p = plan(&config.signing, &keys, now);
        if p.is_empty() {
            return Ok((keys, p.next_due));
        }
        let keys = p.apply(&keys, &config.signing, now).map_err(|e| e.to_string())?;
        write_private(&path, keys.to_json().map_err(|e| e.to_string())?.as_bytes())?;
        if let Some(reason) = p.reason {
            tracing::info!(server = %config.name, reason, "signing key generated");
        }
        Ok((keys.clone(), plan(&config.signing, &keys, now).next_due))
    }
}
