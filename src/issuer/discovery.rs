//! `/.well-known/openid-configuration` and `/.well-known/oauth-authorization-server`,
//! derived from the same config that drives behaviour.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Served;
use super::client_auth::ASSERTION_ALGS;
use crate::api::{AuthMethod, Endpoint, GrantType, RESERVED_SCOPES};
use crate::config::standard_claims::{claims_available, scope_of};

/// Grants this issuer can serve today.
const IMPLEMENTED_GRANTS: [GrantType; 5] = GrantType::ALL;

/// The response types of a server: `code` with sign-in; without it, `none` (OAuth 2.0 Multiple
/// Response Type Encoding Practices §4): no authorization endpoint ever returns a credential.
/// RFC 8414 requires the member, and an empty list says nothing.
fn response_types(s: &Served) -> &'static [&'static str] {
    if s.config.identity.is_some() { &["code"] } else { &["none"] }
}

/// The ID-token algorithms: every algorithm a published key uses (during an algorithm change
/// the old one signs until the new key activates, and its tokens verify while it is published),
/// and the configured one when no key is published yet.
fn id_token_algorithms(s: &Served, now: jiff::Timestamp) -> Vec<&'static str> {
    let mut algorithms = s.keys.published_algorithms(now);
    if algorithms.is_empty() {
        algorithms.push(s.config.signing.algorithm);
    }
    algorithms.into_iter().map(|a| a.as_str()).collect()
}

pub(crate) fn metadata(s: &Served, now: jiff::Timestamp) -> Value {
    let c = &s.config;
    // Only scopes whose claims can exist: openid and the claim scopes need people to sign in.
    let people_claims = c.identity.as_ref().map(claims_available).unwrap_or_default();
    let mut scopes: Vec<&str> = RESERVED_SCOPES
        .iter()
        .copied()
        .filter(|s| match *s {
            "openid" | "offline_access" => c.identity.is_some(),
            scope => people_claims.iter().any(|claim| scope_of(claim) == Some(scope)),
        })
        .collect();
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
    let mut claims = vec!["ver", "jti", "iss", "aud", "iat", "exp", "cid", "uid", "scp", "scope", "sub", "client_id"];
    let mut doc = json!({
        "issuer": c.issuer,
        "jwks_uri": s.endpoint(Endpoint::Keys),
        "token_endpoint": s.endpoint(Endpoint::Token),
        "introspection_endpoint": s.endpoint(Endpoint::Introspect),
        "revocation_endpoint": s.endpoint(Endpoint::Revoke),
        "scopes_supported": scopes,
        "grant_types_supported": grants,
        "response_types_supported": response_types(s),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": id_token_algorithms(s, now),
        "token_endpoint_auth_methods_supported": methods,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "introspection_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
    });
    if c.identity.is_some() {
        claims.extend(["auth_time", "nonce", "acr", "amr", "at_hash", "azp"]);
        claims.extend(&people_claims);
        let extra = json!({
            "authorization_endpoint": s.endpoint(Endpoint::Authorize),
            "userinfo_endpoint": s.endpoint(Endpoint::UserInfo),
            "end_session_endpoint": s.endpoint(Endpoint::Logout),
            "device_authorization_endpoint": s.endpoint(Endpoint::DeviceAuthorize),
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            "prompt_values_supported": ["none", "login", "consent"],
            "authorization_response_iss_parameter_supported": true,
            "claims_parameter_supported": true,
            "request_parameter_supported": true,
            "request_object_signing_alg_values_supported": ASSERTION_ALGS,
            "request_uri_parameter_supported": false,
        });
        if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        if let Some(identity) = &c.identity {
            doc["acr_values_supported"] = json!(crate::issuer::acr::supported(identity));
        }
    }
    for custom in c.claims.iter().map(|cl| cl.name.as_str()) {
        if !claims.contains(&custom) {
            claims.push(custom);
        }
    }
    doc["claims_supported"] = json!(claims);
    doc
}

fn respond(body: Value) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    r
}

pub fn openid_configuration(s: &Served, now: jiff::Timestamp) -> Response {
    respond(metadata(s, now))
}

pub fn authorization_server_metadata(s: &Served, now: jiff::Timestamp) -> Response {
    respond(metadata(s, now))
}
