//! Keys of issuers we trust (the cluster's ServiceAccount issuer, `trustedIssuers`, client
//! `jwksUri`s): fetched by OIDC discovery, cached, refreshed in the background.
//!
//! The token path waits on the network only when no keys were ever fetched for a source
//! (config loads warm the cache first) or when a token names an unknown `kid` (at most once
//! per [`REFETCH_AFTER`] per source). Expired keys are served while a refresh runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::keys::jwt::{self, Jwt, JwtError};

/// How long fetched keys are used before a background refresh.
const TTL: Duration = Duration::from_secs(300);
/// An unknown kid triggers a refetch, at most this often per URL.
const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// Largest discovery or JWKS document we read.
const MAX_DOCUMENT: usize = 256 * 1024;
const KUBERNETES_JWKS_PATH: &str = "/openid/v1/jwks";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("could not fetch {url}: {message}")]
    Fetch { url: String, message: String },
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

type Keys = Arc<Vec<Map<String, Value>>>;

/// Where the keys of a token's issuer come from.
#[derive(Clone, Copy, Debug)]
pub enum KeySource<'a> {
    /// The JWKS named by the issuer's discovery document, or `jwks_uri` when given.
    Issuer { issuer: &'a str, jwks_uri: Option<&'a str> },
    /// A registered JWKS URL (a client's `jwksUri`).
    Url(&'a str),
    /// The cluster's ServiceAccount keys, read through the API server with the pod's credentials.
    KubernetesApi,
}

struct Cached {
    keys: Keys,
    fetched: Instant,
    refreshing: bool,
}

struct Inner {
    http: reqwest::Client,
    kube: Option<kube::Client>,
    jwks: Mutex<HashMap<String, Cached>>,
    discovered: Mutex<HashMap<String, String>>,
}

/// Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct JwksFetcher(Arc<Inner>);

impl JwksFetcher {
    pub fn new(kube: Option<kube::Client>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self(Arc::new(Inner { http, kube, jwks: Mutex::default(), discovered: Mutex::default() }))
    }

    async fn get_json(&self, url: &str) -> Result<Value, TrustError> {
        let fail = |m: String| TrustError::Fetch { url: url.to_owned(), message: m };
        if url == KUBERNETES_JWKS_PATH {
            let client = self.0.kube.as_ref().ok_or_else(|| fail("no Kubernetes client".into()))?;
            let req =
                axum::http::Request::get(KUBERNETES_JWKS_PATH).body(Vec::new()).map_err(|e| fail(e.to_string()))?;
            let text = client.request_text(req).await.map_err(|e| fail(e.to_string()))?;
            return serde_json::from_str(&text).map_err(|e| fail(e.to_string()));
        }
        let resp = self.0.http.get(url).send().await.map_err(|e| fail(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("status {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| fail(e.without_url().to_string()))?;
        if body.len() > MAX_DOCUMENT {
            return Err(fail("document too large".into()));
        }
        serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))
    }

    /// The JWKS URL of `source`, from the issuer's discovery document when needed.
    async fn jwks_url(&self, source: KeySource<'_>) -> Result<String, TrustError> {
        let (issuer, jwks_uri) = match source {
            KeySource::Url(u) => return Ok(u.to_owned()),
            KeySource::KubernetesApi => return Ok(KUBERNETES_JWKS_PATH.to_owned()),
            KeySource::Issuer { issuer, jwks_uri } => (issuer, jwks_uri),
        };
        if let Some(u) = jwks_uri {
            return Ok(u.to_owned());
        }
        if let Some(u) = self.0.discovered.lock().ok().and_then(|d| d.get(issuer).cloned()) {
            return Ok(u);
        }
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let doc = self.get_json(&url).await?;
        if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err(TrustError::Fetch { url, message: "discovery issuer does not match".into() });
        }
        let jwks = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| TrustError::Fetch { url: url.clone(), message: "no jwks_uri".into() })?
            .to_owned();
        if let Ok(mut d) = self.0.discovered.lock() {
            d.insert(issuer.to_owned(), jwks.clone());
        }
        Ok(jwks)
    }

    async fn fetch(&self, url: &str) -> Result<Keys, TrustError> {
        let result = self.get_json(url).await;
        let mut cache = self.0.jwks.lock().ok();
        match result {
            Ok(doc) => {
                let keys: Vec<Map<String, Value>> = doc
                    .get("keys")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|k| k.as_object().cloned()).collect())
                    .unwrap_or_default();
                let keys = Arc::new(keys);
                if let Some(c) = cache.as_mut() {
                    c.insert(url.to_owned(), Cached { keys: keys.clone(), fetched: Instant::now(), refreshing: false });
                }
                Ok(keys)
            }
            Err(e) => {
                if let Some(entry) = cache.as_mut().and_then(|c| c.get_mut(url)) {
                    entry.refreshing = false;
                }
                Err(e)
            }
        }
    }

    /// Keys at `url`: cached, refreshed in the background once stale; fetched now when absent,
    /// or when `unknown_kid` and the cached copy is older than [`REFETCH_AFTER`].
    async fn keys(&self, url: &str, unknown_kid: bool) -> Result<Keys, TrustError> {
        let cached = self.0.jwks.lock().ok().and_then(|mut j| {
            let c = j.get_mut(url)?;
            let age = c.fetched.elapsed();
            if unknown_kid && age >= REFETCH_AFTER {
                return None;
            }
            let refresh = age >= TTL && !c.refreshing;
            c.refreshing |= refresh;
            Some((c.keys.clone(), refresh))
        });
        match cached {
            Some((keys, refresh)) => {
                if refresh {
                    let (this, url) = (self.clone(), url.to_owned());
                    tokio::spawn(async move {
                        if let Err(e) = this.fetch(&url).await {
                            tracing::warn!(error = %e, "refreshing trusted keys failed; using the cached ones");
                        }
                    });
                }
                Ok(keys)
            }
            None => self.fetch(url).await,
        }
    }

    /// Fetches the keys of `source` in the background, so the first token does not wait.
    pub fn warm(&self, source: KeySource<'_>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let this = self.clone();
        let owned = match source {
            KeySource::Issuer { issuer, jwks_uri } => (Some(issuer.to_owned()), jwks_uri.map(str::to_owned), false),
            KeySource::Url(u) => (None, Some(u.to_owned()), false),
            KeySource::KubernetesApi => (None, None, true),
        };
        handle.spawn(async move {
            let source = match &owned {
                (Some(issuer), jwks_uri, _) => KeySource::Issuer { issuer, jwks_uri: jwks_uri.as_deref() },
                (None, Some(u), _) => KeySource::Url(u),
                _ => KeySource::KubernetesApi,
            };
            let result = match this.jwks_url(source).await {
                Ok(url) => this.keys(&url, false).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not fetch trusted keys ahead of use");
            }
        });
    }

    /// Verifies the signature of `token` with the keys of `source`.
    pub async fn verify(&self, token: &str, source: KeySource<'_>) -> Result<Jwt, TrustError> {
        let url = self.jwks_url(source).await?;
        let keys = self.keys(&url, false).await?;
        match jwt::verify(token, &keys) {
            Err(JwtError::UnknownKey) => {
                let keys = self.keys(&url, true).await?;
                Ok(jwt::verify(token, &keys)?)
            }
            other => Ok(other?),
        }
    }
}
