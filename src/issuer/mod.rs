//! The issuer: an HTTP server for one or more authorization servers, routed by the path of
//! each issuer URI. Config and keys of a server are swapped together, atomically.

mod access_token;
pub(crate) mod acr;
pub(crate) mod browser;
pub(crate) mod claims_request;
pub(crate) mod client_auth;
mod cors;
mod discovery;
pub mod error;
pub(crate) mod form;
mod grants;
mod health;
mod introspect;
mod jwks;
pub(crate) mod protocol;
pub(crate) mod rate_limit;
mod revoke;
mod token;
pub mod trust;
mod userinfo;
pub mod watch;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};

use crate::api::Endpoint;
use crate::config::ServerConfig;
use crate::keys::{ActiveKeys, KeyError, KeySet};
use crate::policy::{PolicyEngine, PolicyError};
use crate::store::TokenStore;

pub use access_token::AccessTokenClaims;
use error::OAuthError;

/// Largest request body any endpoint reads.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Process-wide settings of the issuer.
#[derive(Clone, Default)]
pub struct IssuerOptions {
    /// The cluster's ServiceAccount issuer URI (`iss` of projected tokens).
    pub kubernetes_issuer: Option<String>,
    /// Its JWKS URL; default: through `kube_client` if set, else from its discovery document.
    pub kubernetes_jwks_uri: Option<String>,
    /// In a cluster: reads the ServiceAccount keys from the API server (`/openid/v1/jwks`).
    pub kube_client: Option<kube::Client>,
}

impl std::fmt::Debug for IssuerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerOptions")
            .field("kubernetes_issuer", &self.kubernetes_issuer)
            .field("kubernetes_jwks_uri", &self.kubernetes_jwks_uri)
            .field("kube_client", &self.kube_client.is_some())
            .finish()
    }
}

/// One authorization server as served: its config, parsed keys and compiled policies.
pub struct Served {
    pub config: ServerConfig,
    pub keys: ActiveKeys,
    pub engine: PolicyEngine,
    /// Decoded client secret hashes by client id.
    secret_hashes: HashMap<String, Vec<[u8; 32]>>,
    /// What unknown usernames are checked against at sign-in.
    password_stand_ins: browser::login::PasswordStandIns,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").field("issuer", &self.config.issuer).field("keys", &self.keys).finish_non_exhaustive()
    }
}

fn decode_hash(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

impl Served {
    /// Parses keys and compiles policies once; the result is swapped in whole.
    pub fn new(config: ServerConfig, keys: &KeySet) -> Result<Self, ServeError> {
        let engine = PolicyEngine::new(&config)?;
        let keys = ActiveKeys::new(keys)?;
        let secret_hashes = config
            .clients
            .iter()
            .map(|c| (c.client_id.clone(), c.secret_hashes.iter().filter_map(|h| decode_hash(h)).collect()))
            .collect();
        let users = config.identity.as_ref().map(|i| i.users.as_slice()).unwrap_or_default();
        let password_stand_ins = browser::login::PasswordStandIns::new(users);
        Ok(Self { config, keys, engine, secret_hashes, password_stand_ins })
    }

    /// Where this server's token state lives in the store.
    pub fn scope(&self) -> crate::store::ServerScope<'_> {
        crate::store::ServerScope { namespace: &self.config.namespace, server: &self.config.name }
    }

    /// The URL of `endpoint` at this server.
    fn endpoint(&self, endpoint: Endpoint) -> String {
        endpoint.url(&self.config.issuer)
    }
}

/// The servers this process serves, and the state their requests share.
pub struct Issuer {
    servers: ArcSwap<Vec<Arc<Served>>>,
    store: Arc<dyn TokenStore>,
    /// The clients' own rate limits (`spec.rateLimit`), taken after authentication.
    limiter: rate_limit::RateLimiter,
    auth_failures: client_auth::AuthFailures,
    sign_in_limits: browser::login::SignInLimits,
    user_code_limits: browser::device::UserCodeLimits,
    /// Sign-ins started per source and server (each is stored until it ends or expires).
    sign_in_starts: rate_limit::RateLimiter,
    trust: trust::JwksFetcher,
    upstreams: browser::upstream::UpstreamClient,
    options: IssuerOptions,
}

impl Issuer {
    pub fn new(options: IssuerOptions, store: Arc<dyn TokenStore>) -> Arc<Self> {
        // One outbound client for every fetch (keys, discovery, upstream providers).
        let http = crate::outbound::Fetcher::default();
        Arc::new(Self {
            servers: ArcSwap::from_pointee(Vec::new()),
            store,
            limiter: rate_limit::RateLimiter::default(),
            auth_failures: client_auth::AuthFailures::default(),
            sign_in_limits: browser::login::SignInLimits::default(),
            user_code_limits: browser::device::UserCodeLimits::default(),
            sign_in_starts: rate_limit::RateLimiter::default(),
            trust: trust::JwksFetcher::new(http.clone(), options.kube_client.clone()),
            upstreams: browser::upstream::UpstreamClient::new(http),
            options,
        })
    }

    /// Where the keys of the cluster's ServiceAccount issuer `iss` come from.
    fn kubernetes_keys<'a>(&'a self, iss: &'a str) -> trust::KeySource<'a> {
        match (&self.options.kubernetes_jwks_uri, &self.options.kube_client) {
            (Some(uri), _) => trust::KeySource::Url(uri),
            (None, Some(_)) => trust::KeySource::KubernetesApi,
            (None, None) => trust::KeySource::Issuer { issuer: iss, jwks_uri: None },
        }
    }

    /// Serves `served` in place of the server with the same namespace and name (or adds it).
    pub fn replace(&self, served: Served) {
        self.warm_trusted_keys(&served.config);
        let served = Arc::new(served);
        self.servers.rcu(|current| {
            let mut next: Vec<Arc<Served>> = current
                .iter()
                .filter(|s| !(s.config.namespace == served.config.namespace && s.config.name == served.config.name))
                .cloned()
                .collect();
            next.push(served.clone());
            next
        });
    }

    /// Stops serving the server `namespace/name` (it left `serve`'s files).
    pub fn remove(&self, namespace: &str, name: &str) {
        self.servers.rcu(|current| {
            current
                .iter()
                .filter(|s| !(s.config.namespace == namespace && s.config.name == name))
                .cloned()
                .collect::<Vec<_>>()
        });
    }

    /// Starts fetching every key set this config may verify against, off the token path.
    fn warm_trusted_keys(&self, config: &ServerConfig) {
        let k8s = self.options.kubernetes_issuer.as_deref();
        let uses_k8s = config.trusted_issuers.iter().any(|t| t.kubernetes)
            || config.clients.iter().any(|c| c.service_account.is_some());
        if let (true, Some(iss)) = (uses_k8s, k8s) {
            self.trust.warm(self.kubernetes_keys(iss));
        }
        for t in config.trusted_issuers.iter().filter(|t| !t.kubernetes) {
            if let Some(issuer) = &t.issuer {
                self.trust.warm(trust::KeySource::Issuer { issuer, jwks_uri: t.jwks_uri.as_deref() });
            }
        }
        let reach = config.outbound.client_reach();
        for url in config.clients.iter().filter_map(|c| c.jwks_uri.as_deref()) {
            self.trust.warm(trust::KeySource::Client { url, reach });
        }
    }

    /// The server currently served under `namespace/name`.
    pub fn current(&self, namespace: &str, name: &str) -> Option<Arc<Served>> {
        self.servers.load().iter().find(|s| s.config.namespace == namespace && s.config.name == name).cloned()
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/livez", axum::routing::get(|| async { health::livez() }))
            .route(
                "/readyz",
                axum::routing::get(|State(issuer): State<Arc<Issuer>>, request: Request| async move {
                    health::readyz(&issuer, store_optional(request.uri().query()), jiff::Timestamp::now()).await
                }),
            )
            .fallback(dispatch)
            .with_state(self.clone())
    }

    /// Finds the server and endpoint of `path`; the longest issuer path wins.
    fn route(&self, path: &str) -> Option<(Arc<Served>, Endpoint)> {
        let servers = self.servers.load();
        let mut best: Option<(usize, Arc<Served>, Endpoint)> = None;
        for s in servers.iter() {
            let base = s.config.issuer_path();
            let endpoint = match path.strip_prefix(base) {
                Some(rest) => Endpoint::parse(rest),
                None => None,
            }
            .or_else(|| {
                // RFC 8414 §3.1: the well-known segment goes before the issuer's path.
                let rest = path.strip_suffix(base).filter(|_| !base.is_empty())?;
                Endpoint::parse(rest)
                    .filter(|e| matches!(e, Endpoint::AuthorizationServerMetadata | Endpoint::OpenIdConfiguration))
            });
            if let Some(e) = endpoint
                && best.as_ref().is_none_or(|(len, _, _)| base.len() > *len)
            {
                best = Some((base.len(), s.clone(), e));
            }
        }
        best.map(|(_, s, e)| (s, e))
    }
}

pub use crate::listener::Peer;

/// What an endpoint handler reads of a request.
pub(crate) struct Incoming {
    /// The peer's address, as the listener saw it (`ConnectInfo`); `None` if it did not say.
    pub source: Option<IpAddr>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub method: Method,
    pub query: String,
    /// The clock, read once when the request arrived: every time its handling needs.
    pub now: jiff::Timestamp,
    /// The monotonic clock, read with `now`: what the rate limits count with.
    pub at: Instant,
}

impl Incoming {
    /// The request whose body is in, with the clocks read now: once, for all its handling.
    fn arrived(source: Option<IpAddr>, parts: axum::http::request::Parts, body: Bytes) -> Self {
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let (headers, method) = (parts.headers, parts.method);
        Self { source, headers, body, method, query, now: jiff::Timestamp::now(), at: Instant::now() }
    }

    /// The parameters of a browser request: the query of a GET, the form body of a POST.
    fn params(&self) -> Result<form::Form, OAuthError> {
        if self.method == Method::POST {
            form::Form::parse(&self.headers, &self.body)
        } else {
            form::Form::from_query(&self.query)
        }
    }
}

async fn dispatch(State(issuer): State<Arc<Issuer>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let source = parts.extensions.get::<ConnectInfo<Peer>>().map(|c| c.0.0.ip());
    match parts.uri.path() {
        "/livez" => return health::livez(),
        "/readyz" => return health::readyz(&issuer, store_optional(parts.uri.query()), jiff::Timestamp::now()).await,
        _ => {}
    }
    let Some((served, endpoint)) = issuer.route(parts.uri.path()) else {
        return OAuthError::not_found().into_response();
    };
    if endpoint.is_browser() {
        if !endpoint.methods().contains(&parts.method.as_str()) {
            return browser::pages::error(axum::http::StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        let body = match axum::body::to_bytes(Body::new(body), MAX_BODY).await {
            Ok(b) => b,
            Err(_) => return browser::pages::error(axum::http::StatusCode::PAYLOAD_TOO_LARGE, "request too large"),
        };
        return browse(&issuer, &served, endpoint, &Incoming::arrived(source, parts, body)).await;
    }
    let origin = cors::allowed_origin(&served.config, &parts.headers);
    if parts.method == Method::OPTIONS {
        return cors::preflight(origin, endpoint.methods());
    }
    if !endpoint.methods().contains(&parts.method.as_str()) {
        return cors::decorate(OAuthError::method_not_allowed().into_response(), origin);
    }
    let body = match axum::body::to_bytes(Body::new(body), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return cors::decorate(OAuthError::too_large().into_response(), origin),
    };
    let incoming = Incoming::arrived(source, parts, body);
    let response = match endpoint {
        Endpoint::OpenIdConfiguration => discovery::openid_configuration(&served, incoming.now),
        Endpoint::AuthorizationServerMetadata => discovery::authorization_server_metadata(&served, incoming.now),
        Endpoint::Keys => jwks::keys(&served, incoming.now),
        Endpoint::Token => token::token(&issuer, &served, &incoming).await,
        Endpoint::Introspect => introspect::introspect(&issuer, &served, &incoming).await,
        Endpoint::Revoke => revoke::revoke(&issuer, &served, &incoming).await,
        Endpoint::UserInfo => userinfo::userinfo(&issuer, &served, &incoming, incoming.method == Method::POST).await,
        Endpoint::DeviceAuthorize => browser::device::authorize(&issuer, &served, &incoming).await,
        _ => OAuthError::not_found().into_response(),
    };
    cors::decorate(response, origin)
}

/// The endpoints people's browsers visit.
async fn browse(issuer: &Issuer, served: &Served, endpoint: Endpoint, req: &Incoming) -> Response {
    let form = match req.params() {
        Ok(f) => f,
        Err(e) => return browser::error_page(&e),
    };
    let post = req.method == Method::POST;
    match endpoint {
        Endpoint::Authorize => browser::authorize::authorize(issuer, served, req, &form).await,
        Endpoint::Login if post => browser::login::submit(issuer, served, req, &form).await,
        Endpoint::Login => browser::login::page(issuer, served, req, &form).await,
        Endpoint::LoginUpstream => browser::upstream::start(issuer, served, req, &form).await,
        Endpoint::LoginCallback => browser::upstream::callback(issuer, served, req, &form).await,
        Endpoint::Consent if post => browser::consent::submit(issuer, served, req, &form).await,
        Endpoint::Consent => browser::consent::page(issuer, served, req, &form).await,
        Endpoint::Logout => browser::logout::logout(issuer, served, req, &form, post).await,
        Endpoint::Device if post => browser::device::submit(issuer, served, req, &form).await,
        Endpoint::Device => browser::device::page(served, &form),
        _ => OAuthError::not_found().into_response(),
    }
}

fn store_optional(query: Option<&str>) -> bool {
    query.is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "store" && v == "optional"))
}

pub use health::KUBELET_READINESS_PATH;

#[cfg(test)]
mod tests;
