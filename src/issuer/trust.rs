//! Keys of issuers we trust (the cluster's ServiceAccount issuer, `trustedIssuers`, client
//! `jwksUri`s): fetched by OIDC discovery, cached, refetched on an unknown `kid`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::keys::jwt::{self, Jwt, JwtError};

/// How long fetched keys are used without asking again.
const TTL: Duration = Duration::from_secs(300);
/// An unknown kid triggers a refetch, at most this often per URL.
const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// Largest discovery or JWKS document we read.
const MAX_DOCUMENT: usize = 256 * 1024;

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

const KUBERNETES_JWKS_PATH: &str = "/openid/v1/jwks";

struct Cached {
    keys: Keys,
    fetched: Instant,
}

pub struct JwksFetcher {
    http: reqwest::Client,
    kube: Option<kube::Client>,
    jwks: Mutex<HashMap<String, Cached>>,
    discovered: Mutex<HashMap<String, String>>,
}

impl JwksFetcher {
    pub fn new(kube: Option<kube::Client>) -> Self {
        Self { kube, ..Self::default() }
    }
}

impl Default for JwksFetcher {
    fn default() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { http, kube: None, jwks: Mutex::default(), discovered: Mutex::default() }
    }
}

impl JwksFetcher {
    async fn get_json(&self, url: &str) -> Result<Value, TrustError> {
        let fail = |m: String| TrustError::Fetch { url: url.to_owned(), message: m };
        if url == KUBERNETES_JWKS_PATH {
            let client = self.kube.as_ref().ok_or_else(|| fail("no Kubernetes client".into()))?;
            let req =
                axum::http::Request::get(KUBERNETES_JWKS_PATH).body(Vec::new()).map_err(|e| fail(e.to_string()))?;
            let text = client.request_text(req).await.map_err(|e| fail(e.to_string()))?;
            return serde_json::from_str(&text).map_err(|e| fail(e.to_string()));
        }
        let resp = self.http.get(url).send().await.map_err(|e| fail(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("status {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| fail(e.without_url().to_string()))?;
        if body.len() > MAX_DOCUMENT {
            return Err(fail("document too large".into()));
        }
        serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))
    }

    /// The JWKS URL of `issuer`: `jwks_uri` if given, else from its discovery document.
    async fn jwks_url(&self, issuer: &str, jwks_uri: Option<&str>) -> Result<String, TrustError> {
        if let Some(u) = jwks_uri {
            return Ok(u.to_owned());
        }
        if let Some(u) = self.discovered.lock().ok().and_then(|d| d.get(issuer).cloned()) {
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
        if let Ok(mut d) = self.discovered.lock() {
            d.insert(issuer.to_owned(), jwks.clone());
        }
        Ok(jwks)
    }

    async fn keys(&self, url: &str, refresh: bool) -> Result<Keys, TrustError> {
        if let Some(c) = self.jwks.lock().ok().and_then(|j| {
            j.get(url)
                .filter(|c| {
                    let age = c.fetched.elapsed();
                    age < TTL && !(refresh && age >= REFETCH_AFTER)
                })
                .map(|c| c.keys.clone())
        }) {
            return Ok(c);
        }
        let doc = self.get_json(url).await?;
        let keys: Vec<Map<String, Value>> = doc
            .get("keys")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|k| k.as_object().cloned()).collect())
            .unwrap_or_default();
        let keys = Arc::new(keys);
        if let Ok(mut j) = self.jwks.lock() {
            j.insert(url.to_owned(), Cached { keys: keys.clone(), fetched: Instant::now() });
        }
        Ok(keys)
    }

    /// Verifies the signature of `token` with the keys of `source`.
    pub async fn verify(&self, token: &str, source: KeySource<'_>) -> Result<Jwt, TrustError> {
        let url = match source {
            KeySource::Issuer { issuer, jwks_uri } => self.jwks_url(issuer, jwks_uri).await?,
            KeySource::Url(u) => u.to_owned(),
            KeySource::KubernetesApi => KUBERNETES_JWKS_PATH.to_owned(),
        };
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
