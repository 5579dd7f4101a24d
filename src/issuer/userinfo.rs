//! `/v1/userinfo` (OpenID Connect Core §5.3): the claims of the person of a Bearer token.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::access_token::verify_own;
use super::form::Form;
use super::{Incoming, Issuer, Served};
use crate::store::CodeKind;

/// RFC 6750 §3: the error in `WWW-Authenticate`, and in the body for clients that read it.
fn bearer_error(status: StatusCode, code: &'static str, description: &'static str) -> Response {
    let mut r = (status, Json(serde_json::json!({ "error": code, "error_description": description }))).into_response();
    let h = format!("Bearer realm=\"tessera\", error=\"{code}\", error_description=\"{description}\"");
    if let Ok(v) = HeaderValue::from_str(&h) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn bearer(req: &Incoming, post: bool) -> Option<String> {
    if let Some(v) = req.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return v.get(..7).filter(|p| p.eq_ignore_ascii_case("bearer ")).map(|_| v[7..].trim().to_owned());
    }
    if post {
        return Form::parse(&req.headers, &req.body).ok()?.get("access_token").map(str::to_owned);
    }
    None
}

pub async fn userinfo(issuer: &Issuer, served: &Served, req: &Incoming, post: bool) -> Response {
    let Some(token) = bearer(req, post) else {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"tessera\""));
        return r;
    };
    let now = req.now.as_second();
    let invalid =
        || bearer_error(StatusCode::UNAUTHORIZED, "invalid_token", "the access token is invalid, expired or revoked");
    let Some(claims) = verify_own(served, &token, now) else { return invalid() };
    let jti = claims.get("jti").and_then(Value::as_str).unwrap_or_default();
    match issuer.store.is_revoked(served.scope(), jti, now).await {
        Ok(false) => {}
        Ok(true) => return invalid(),
        Err(e) => return crate::issuer::error::OAuthError::from(e).into_response(),
    }
    let openid = claims.get("scp").and_then(Value::as_array).is_some_and(|s| s.iter().any(|v| v == "openid"));
    if !openid || claims.get("uid").is_none() {
        return bearer_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "the access token was not granted openid for a user",
        );
    }
    match issuer.store.get_code(served.scope(), CodeKind::UserInfo, jti, now).await {
        Ok(Some(raw)) => match serde_json::from_slice::<Value>(&raw) {
            Ok(v) => {
                let mut r = Json(v).into_response();
                r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            Err(_) => invalid(),
        },
        Ok(None) => invalid(),
        Err(e) => crate::issuer::error::OAuthError::from(e).into_response(),
    }
}
