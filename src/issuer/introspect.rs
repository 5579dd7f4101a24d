//! `/v1/introspect` (RFC 7662), for authenticated clients of this server.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::access_token::verify_own;
use super::error::OAuthError;
use super::form::Form;
use super::{Incoming, Issuer, Served, client_auth, unix_now};

pub async fn introspect(issuer: &Issuer, served: &Served, req: &Incoming) -> Response {
    match handle(issuer, served, req).await {
        Ok(v) => {
            let mut r = Json(v).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => e.into_response(),
    }
}

async fn handle(issuer: &Issuer, served: &Served, req: &Incoming) -> Result<Value, OAuthError> {
    let form = Form::parse(&req.headers, &req.body)?;
    let (client, presented) = client_auth::identify(served, &req.headers, &form)?;
    client_auth::verify(issuer, served, client, &presented).await?;
    // Anyone can claim a public client's id: it must not learn about other clients' tokens.
    if client.auth_method == crate::api::AuthMethod::None {
        return Err(OAuthError::invalid_client("public clients may not introspect tokens"));
    }
    let token = form.require("token")?;
    let now = unix_now();
    let Some(mut claims) = verify_own(served, token, now) else { return Ok(json!({ "active": false })) };
    let jti = claims.get("jti").and_then(Value::as_str).unwrap_or_default().to_owned();
    if issuer.store.is_revoked(served.scope(), &jti, now).await? {
        return Ok(json!({ "active": false }));
    }
    let scope = claims
        .get("scp")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    claims.insert("active".into(), Value::Bool(true));
    claims.insert("scope".into(), Value::String(scope));
    claims.insert("token_type".into(), Value::String("Bearer".into()));
    Ok(Value::Object(claims))
}
