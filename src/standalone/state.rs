//! The state directory of `serve` (default `.tessera/`): keys and generated client secrets of
//! each server under `<namespace>/<server>/`, files readable by the owner only.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ServerConfig;
use crate::keys::{KeySet, RotationPlan, RotationRequest, generate_client_secret, plan_with};

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

    /// Where the state of server `<namespace>/<server>` lives: `<root>/<namespace>/<server>/`,
    /// so servers of one name in two namespaces never share keys or client secrets.
    fn server_dir(&self, namespace: &str, server: &str) -> PathBuf {
        self.root.join(namespace).join(server)
    }

    pub fn client_file(&self, namespace: &str, server: &str, client_id: &str) -> Option<PathBuf> {
        if client_id.contains('/') || client_id.starts_with('.') {
            return None;
        }
        Some(self.server_dir(namespace, server).join("clients").join(format!("{client_id}.json")))
    }

    pub fn keys_file(&self, namespace: &str, server: &str) -> PathBuf {
        self.server_dir(namespace, server).join("keys.json")
    }

    /// Moves the state of earlier versions, `<root>/<server>/`, to `<root>/<namespace>/<server>/`
    /// when exactly one of `servers` (namespace, name) has that name and its new directory does
    /// not exist yet; otherwise it stays where it is. Returns what was moved, and what was not.
    pub fn migrate_unnamespaced(&self, servers: &[(String, String)]) -> Vec<String> {
        let mut moves = Vec::new();
        let mut notes = Vec::new();
        for (namespace, name) in servers {
            let old = self.root.join(name);
            if !old.join("keys.json").is_file() || self.keys_file(namespace, name).exists() {
                continue;
            }
            if servers.iter().filter(|(_, n)| n == name).count() > 1 {
                notes.push(format!(
                    "{} holds the state of a server named {name}, and several namespaces have one: left in place",
                    old.display()
                ));
                continue;
            }
            moves.push((old, namespace.clone(), name.clone()));
        }
        // Every old directory leaves first, so a namespace named like an old server cannot swallow it.
        let mut parked = Vec::new();
        for (old, namespace, name) in moves {
            let park = self.root.join(format!(".migrating-{name}"));
            match fs::rename(&old, &park) {
                Ok(()) => parked.push((old, park, namespace, name)),
                Err(e) => notes.push(format!("{}: {e}: left in place", old.display())),
            }
        }
        for (old, park, namespace, name) in parked {
            let new = self.server_dir(&namespace, &name);
            let moved = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(self.root.join(&namespace))
                .and_then(|()| fs::rename(&park, &new));
            notes.push(match moved {
                Ok(()) => format!("moved {} to {}", old.display(), new.display()),
                Err(e) => {
                    format!("{} could not move to {}: {e}; it is at {}", old.display(), new.display(), park.display())
                }
            });
        }
        notes
    }

    /// The client's secret: read from its credentials file, or generated (256 bits) and stored once.
    pub fn client_secret(
        &self,
        namespace: &str,
        server: &str,
        client_id: &str,
        issuer: &str,
    ) -> Result<String, String> {
        let path = self
            .client_file(namespace, server, client_id)
            .ok_or_else(|| format!("client id {client_id:?} cannot name a file"))?;
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
        self.rotate_keys_with(config, now, RotationRequest::None).map(|r| (r.keys, r.next_due))
    }

    /// As [`Self::rotate_keys`], honouring a rotation a person asked for (`tessera rotate`).
    pub fn rotate_keys_with(
        &self,
        config: &ServerConfig,
        now: jiff::Timestamp,
        request: RotationRequest,
    ) -> Result<Rotated, String> {
        let path = self.keys_file(&config.namespace, &config.name);
        let keys = if path.exists() {
            let text = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            KeySet::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            KeySet::default()
        };
        let p = plan_with(&config.signing, &keys, now, request);
        if p.is_empty() {
            return Ok(Rotated { keys, next_due: p.next_due, plan: p });
        }
        let keys = p.apply(&keys, &config.signing, now).map_err(|e| e.to_string())?;
        write_private(&path, keys.to_json().map_err(|e| e.to_string())?.as_bytes())?;
        if let Some(reason) = p.reason {
            tracing::info!(namespace = %config.namespace, server = %config.name, reason, "signing keys changed");
        }
        let next_due = plan_with(&config.signing, &keys, now, RotationRequest::None).next_due;
        Ok(Rotated { keys, next_due, plan: p })
    }
}

/// The key set after a planner step, when to plan again, and the plan that made it.
#[derive(Debug)]
pub struct Rotated {
    pub keys: KeySet,
    pub next_due: Option<jiff::Timestamp>,
    pub plan: RotationPlan,
}
