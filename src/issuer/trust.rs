//! Keys of issuers we trust (the cluster's ServiceAccount issuer, `trustedIssuers`, client
//! `jwksUri`s): fetched by OIDC discovery, cached, refreshed in the background.
//!
//! Fetches run off the request path ([`crate::outbound::DocumentCache`]): config loads warm
//! the cache, stale keys are served while a refresh runs, an unknown `kid` refetches at most
//! once per [`REFETCH_AFTER`] per URL, and a request waits for a fetch at most the `wait` it
//! passes ([`TOKEN_PATH_WAIT`] on the token endpoint). With no keys by then it fails (the
//! caller answers `invalid_client` or `temporarily_unavailable`); the fetch goes on and its
//! result, or its failure with a growing backoff, is remembered for the next request.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::keys::jwt::{self, Jwt, JwtError, Rules};
use crate::outbound::{DocumentCache, Fetch, FetchError, Fetcher, Need, Reach};

/// How long fetched keys are used before a background refresh.
const TTL: Duration = Duration::from_secs(300);
/// An unknown kid triggers a refetch, at most this often per URL.
const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// Longest a token request waits for keys being fetched (a healthy server answers well within).
pub const TOKEN_PATH_WAIT: Duration = Duration::from_secs(1);
/// Most keys a JWKS may hold (each one may be tried against a token without `kid`).
pub const MAX_KEYS: usize = 32;
const KUBERNETES_JWKS_PATH: &str = "/openid/v1/jwks";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

type Keys = Arc<Vec<Map<String, Value>>>;

/// Where the keys of a token's issuer come from.
#[derive(Clone, Copy, Debug)]
pub enum KeySource<'a> {
    /// The JWKS named by the issuer's discovery document, or `jwks_uri` when given (the
    /// server's owner wrote both).
    Issuer { issuer: &'a str, jwks_uri: Option<&'a str> },
    /// A JWKS URL the operator of this issuer gave (`--kubernetes-jwks-uri`).
    Url(&'a str),
    /// A JWKS URL a tenant registered (a client's `jwksUri`), reached as the server allows.
    Client { url: &'a str, reach: Reach },
    /// The cluster's ServiceAccount keys, read through the API server with the pod's credentials.
    KubernetesApi,
}

impl KeySource<'_> {
    fn owned(self) -> OwnedSource {
        match self {
            Self::Issuer { issuer, jwks_uri } => {
                OwnedSource::Issuer { issuer: issuer.to_owned(), jwks_uri: jwks_uri.map(str::to_owned) }
            }
            Self::Url(u) => OwnedSource::Client { url: u.to_owned(), reach: Reach::Any },
            Self::Client { url, reach } => OwnedSource::Client { url: url.to_owned(), reach },
            Self::KubernetesApi => OwnedSource::KubernetesApi,
        }
    }
}

enum OwnedSource {
    Issuer { issuer: String, jwks_uri: Option<String> },
    Client { url: String, reach: Reach },
    KubernetesApi,
}

impl OwnedSource {
    fn borrowed(&self) -> KeySource<'_> {
        match self {
            Self::Issuer { issuer, jwks_uri } => KeySource::Issuer { issuer, jwks_uri: jwks_uri.as_deref() },
            Self::Client { url, reach } => KeySource::Client { url, reach: *reach },
            Self::KubernetesApi => KeySource::KubernetesApi,
        }
    }
}

/// The keys of a JWKS document; too many keys is an error, not a truncation.
fn parse_jwks(url: &str, doc: &Value) -> Result<Keys, FetchError> {
    let keys = doc.get("keys").and_then(Value::as_array).ok_or_else(|| FetchError::new(url, "no keys"))?;
    if keys.len() > MAX_KEYS {
        return Err(FetchError::new(url, format!("more than {MAX_KEYS} keys")));
    }
    Ok(Arc::new(keys.iter().filter_map(|k| k.as_object().cloned()).collect()))
}

/// Cheap to clone; clones share the caches.
#[derive(Clone)]
pub struct JwksFetcher {
    http: Fetcher,
    kube: Option<kube::Client>,
    jwks: DocumentCache<Keys>,
    /// JWKS URL by discovery URL.
    discovered: DocumentCache<String>,
}

impl JwksFetcher {
    pub fn new(http: Fetcher, kube: Option<kube::Client>) -> Self {
        Self { http, kube, jwks: DocumentCache::new(TTL), discovered: DocumentCache::new(TTL) }
    }

    /// The JWKS URL of `source` and how far its fetch may reach.
    async fn jwks_url(&self, source: KeySource<'_>, wait: Duration) -> Result<(String, Reach), TrustError> {
        let (issuer, jwks_uri) = match source {
            KeySource::Client { url, reach } => return Ok((url.to_owned(), reach)),
            KeySource::Url(u) => return Ok((u.to_owned(), Reach::Any)),
            KeySource::KubernetesApi => return Ok((KUBERNETES_JWKS_PATH.to_owned(), Reach::Any)),
            KeySource::Issuer { issuer, jwks_uri } => (issuer, jwks_uri),
        };
        if let Some(u) = jwks_uri {
            return Ok((u.to_owned(), Reach::Any));
        }
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let (http, expected) = (self.http.clone(), issuer.to_owned());
        let fetch_url = url.clone();
        let fetch = move || -> Fetch<String> {
            Box::pin(async move {
                let doc = http.get_json(&fetch_url, Reach::Any).await?;
                if doc.get("issuer").and_then(Value::as_str) != Some(expected.as_str()) {
                    return Err(FetchError::new(&fetch_url, "discovery issuer does not match"));
                }
                let jwks = doc.get("jwks_uri").and_then(Value::as_str);
                jwks.map(str::to_owned).ok_or_else(|| FetchError::new(&fetch_url, "no jwks_uri"))
            })
        };
        let jwks = self.discovered.get(&url, Reach::Any, Need::Cached, wait, fetch).await?;
        Ok((jwks, Reach::Any))
    }

    fn fetch_keys(&self, url: &str, reach: Reach) -> impl FnOnce() -> Fetch<Keys> + use<> {
        let (http, kube, url) = (self.http.clone(), self.kube.clone(), url.to_owned());
        move || -> Fetch<Keys> {
            Box::pin(async move {
                if url == KUBERNETES_JWKS_PATH {
                    // The API server is trusted; kube's client reads its answer whole.
                    let fail = |m: String| FetchError::new(&url, m);
                    let client = kube.ok_or_else(|| fail("no Kubernetes client".into()))?;
                    let req = axum::http::Request::get(KUBERNETES_JWKS_PATH)
                        .body(Vec::new())
                        .map_err(|e| fail(e.to_string()))?;
                    let text = client.request_text(req).await.map_err(|e| fail(e.to_string()))?;
                    let doc: Value = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
                    return parse_jwks(&url, &doc);
                }
                let doc = http.get_json(&url, reach).await?;
                parse_jwks(&url, &doc)
            })
        }
    }

    async fn keys(&self, url: &str, reach: Reach, need: Need, wait: Duration) -> Result<Keys, TrustError> {
        Ok(self.jwks.get(url, reach, need, wait, self.fetch_keys(url, reach)).await?)
    }

    /// Fetches the keys of `source` in the background, so the first token does not wait.
    pub fn warm(&self, source: KeySource<'_>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let (this, owned) = (self.clone(), source.owned());
        handle.spawn(async move {
            // The fetch itself logs a failure; this task only starts it.
            if let Ok((url, reach)) = this.jwks_url(owned.borrowed(), crate::outbound::fetch::REQUEST_TIMEOUT).await {
                let _ = this.keys(&url, reach, Need::Cached, Duration::ZERO).await;
            }
        });
    }

    /// Verifies `token` under `rules` with the keys of `source`, waiting at most `wait` for a
    /// fetch.
    pub async fn verify(
        &self,
        token: &str,
        source: KeySource<'_>,
        rules: &Rules<'_>,
        wait: Duration,
    ) -> Result<Jwt, TrustError> {
        // Refuse by the header alone before anything is fetched.
        match jwt::verify(token, &[], rules) {
            Err(JwtError::UnknownKey) => {}
            Err(e) => return Err(e.into()),
            Ok(_) => return Err(JwtError::UnknownKey.into()),
        }
        let (url, reach) = self.jwks_url(source, wait).await?;
        let keys = self.keys(&url, reach, Need::Cached, wait).await?;
        match jwt::verify(token, &keys, rules) {
            Err(JwtError::UnknownKey) => {
                let keys = self.keys(&url, reach, Need::NewerThan(REFETCH_AFTER), wait).await?;
                Ok(jwt::verify(token, &keys, rules)?)
            }
            other => Ok(other?),
        }
    }
}
