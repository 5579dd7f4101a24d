//! `/.well-known/openid-configuration` and `/.well-known/oauth-authorization-server`,
//! derived from the same config that drives behaviour.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Served;
use super::client_auth::ASSERTION_ALGS;
use crate::api::{AuthMethod, GrantType, RESERVED_SCOPES};

/// Grants this issuer can serve today.
const IMPLEMENTED_GRANTS: [GrantType; 3] =
    [GrantType::ClientCredentials, GrantType::TokenExchange, GrantType::RefreshToken];

fn metadata(s: &Served) -> Value {
    let c = &s.config;
    let mut scopes: Vec<&str> = RESERVED_SCOPES.to_vec();
    scopes.extend(c.scopes.iter().filter(|s| s.discoverable).map(|s| s.name.as_str()));
    let grants: Vec<&str> = IMPLEMENTED_GRANTS
        .iter()
        .filter(|g| c.policies.iter().flat_map(|p| &p.rules).any(|r| r.grant_types.contains(g)))
        .map(|g| g.as_str())
        .collect();
    let mut methods = vec!["client_secret_basic", "client_secret_post", "private_key_jwt"];
    if c.clients.iter().any(|cl| cl.auth_method == AuthMethod::None) {
        methods.push("none");
    }
    let alg = c.signing.algorithm.as_str();
    json!({
        "issuer": c.issuer,
        "jwks_uri": s.endpoint("/v1/keys"),
        "token_endpoint": s.endpoint("/v1/token"),
        "introspection_endpoint": s.endpoint("/v1/introspect"),
        "revocation_endpoint": s.endpoint("/v1/revoke"),
        "scopes_supported": scopes,
        "grant_types_supported": grants,
        // No authorization endpoint yet: browser flows come in a later issue.
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [alg],
        "token_endpoint_auth_methods_supported": methods,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "introspection_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
        "claims_supported": ["ver", "jti", "iss", "aud", "iat", "exp", "cid", "uid", "scp", "sub", "client_id"],
    })
}

fn respond(body: Value) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    r
}

pub fn openid_configuration(s: &Served) -> Response {
    respond(metadata(s))
}

pub fn authorization_server_metadata(s: &Served) -> Response {
    respond(metadata(s))
}
