//! Resource YAML on disk: multi-document files, directories read in name order; kinds
//! that are not ours (except Namespaces and Secrets, which `serve` reads) are ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{AccessPolicy, AuthClaim, AuthClient, AuthScope, AuthorizationServer, GROUP};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: document {index}: {message}")]
    Parse { path: PathBuf, index: usize, message: String },
}

/// Everything read from the files.
#[derive(Default, Debug)]
pub struct Manifests {
    pub servers: Vec<AuthorizationServer>,
    pub scopes: Vec<AuthScope>,
    pub claims: Vec<AuthClaim>,
    pub policies: Vec<AccessPolicy>,
    pub clients: Vec<AuthClient>,
    /// Namespace labels, by namespace.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// `client_secret` of Secrets, by (namespace, name).
    pub client_secrets: BTreeMap<(String, String), ClientSecret>,
    /// Every key of every Secret (`data` decoded, `stringData` over it), by (namespace, name).
    pub secrets: BTreeMap<(String, String), SecretData>,
}

/// The keys and values of a Secret manifest.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretData(pub BTreeMap<String, Vec<u8>>);

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SecretData").field(&self.0.keys().collect::<Vec<_>>()).finish()
    }
}

/// A client secret found in a Secret manifest.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(pub String);

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// Files of `paths`: each file as is, each directory's `.yaml`, `.yml` and `.json` files by name.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ManifestError> {
    let mut out = Vec::new();
    for p in paths {
        let err = |e: std::io::Error| ManifestError::Read { path: p.clone(), message: e.to_string() };
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(err)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
                .collect();
            entries.sort();
            out.extend(entries);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

pub fn load(paths: &[PathBuf]) -> Result<Manifests, ManifestError> {
    let mut m = Manifests::default();
    for file in files(paths)? {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| ManifestError::Read { path: file.clone(), message: e.to_string() })?;
        add_documents(&mut m, &file, &text)?;
    }
    Ok(m)
}

fn parse<T: serde::de::DeserializeOwned>(doc: Value, path: &Path, index: usize) -> Result<T, ManifestError> {
    serde_json::from_value(doc).map_err(|e| ManifestError::Parse {
        path: path.to_owned(),
        index,
        message: e.to_string(),
    })
}

pub fn add_documents(m: &mut Manifests, path: &Path, text: &str) -> Result<(), ManifestError> {
    for (index, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let doc = Value::deserialize(de).map_err(|e| ManifestError::Parse {
            path: path.to_owned(),
            index,
            message: e.to_string(),
        })?;
        if doc.is_null() {
            continue;
        }
        let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_owned();
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        let meta = doc.get("metadata").cloned().unwrap_or(Value::Null);
        let name = meta.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or("default").to_owned();
        match (group, kind.as_str()) {
            (GROUP, "AuthorizationServer") => m.servers.push(with_namespace(parse(doc, path, index)?, &namespace)),
            (GROUP, "AuthScope") => m.scopes.push(with_namespace(parse(doc, path, index)?, &namespace)),
            (GROUP, "AuthClaim") => m.claims.push(with_namespace(parse(doc, path, index)?, &namespace)),
            (GROUP, "AccessPolicy") => m.policies.push(with_namespace(parse(doc, path, index)?, &namespace)),
            (GROUP, "AuthClient") => m.clients.push(with_namespace(parse(doc, path, index)?, &namespace)),
            ("", "Namespace") if api_version == "v1" => {
                let labels: BTreeMap<String, String> =
                    meta.get("labels").cloned().and_then(|l| serde_json::from_value(l).ok()).unwrap_or_default();
                m.namespaces.insert(name, labels);
            }
            ("", "Secret") if api_version == "v1" => {
                let data = secret_data(&doc).map_err(|message| ManifestError::Parse {
                    path: path.to_owned(),
                    index,
                    message: format!("Secret {namespace}/{name}: {message}"),
                })?;
                m.secrets.insert((namespace.clone(), name.clone()), data);
                let from_string = doc.pointer("/stringData/client_secret").and_then(Value::as_str).map(str::to_owned);
                let from_data = doc
                    .pointer("/data/client_secret")
                    .and_then(Value::as_str)
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .and_then(|b| String::from_utf8(b).ok());
                if let Some(secret) = from_string.or(from_data) {
                    m.client_secrets.insert((namespace, name), ClientSecret(secret.trim().to_owned()));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `data` (base64) with `stringData` over it, as the API server would store them.
fn secret_data(doc: &Value) -> Result<SecretData, String> {
    let mut out = BTreeMap::new();
    if let Some(data) = doc.get("data").and_then(Value::as_object) {
        for (key, value) in data {
            let decoded = value
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .ok_or_else(|| format!("data.{key} is not base64"))?;
            out.insert(key.clone(), decoded);
        }
    }
    if let Some(data) = doc.get("stringData").and_then(Value::as_object) {
        for (key, value) in data {
            let text = value.as_str().ok_or_else(|| format!("stringData.{key} is not a string"))?;
            out.insert(key.clone(), text.as_bytes().to_vec());
        }
    }
    Ok(SecretData(out))
}

trait Namespaced {
    fn meta_mut(&mut self) -> &mut kube::api::ObjectMeta;
}

macro_rules! namespaced {
    ($($t:ty),*) => { $(impl Namespaced for $t { fn meta_mut(&mut self) -> &mut kube::api::ObjectMeta { &mut self.metadata } })* };
}
namespaced!(AuthorizationServer, AuthScope, AuthClaim, AccessPolicy, AuthClient);

/// Objects without a namespace land in `default`, as kubectl would put them.
fn with_namespace<T: Namespaced>(mut obj: T, namespace: &str) -> T {
    obj.meta_mut().namespace = Some(namespace.to_owned());
    obj
}
