//! `/v1/introspect` (RFC 7662), for authenticated clients of this server. A caller sees the
//! tokens issued to it (`cid`), the tokens meant for it as a resource server (its client id
//! is one of the token's `aud`), and, if it is registered in the server's own namespace (the
//! platform's, whose writers may change the server itself), every token of the server. Any
//! other token answers `{"active": false}`, as if unknown (RFC 7662 §4 leaves it to us).

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::access_token::verify_own;
use super::error::OAuthError;
use super::form::Form;
use super::{Incoming, Issuer, Served, client_auth};

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
    let client = client_auth::authenticate(issuer, served, req, &form).await?;
    // Anyone can claim a public client's id: it must not learn about other clients' tokens.
    if client.auth_method == crate::api::AuthMethod::None {
        return Err(OAuthError::invalid_client("public clients may not introspect tokens"));
    }
    let token = form.require("token")?;
    let now = req.now.as_second();
    let Some(mut claims) = verify_own(served, token, now) else { return Ok(json!({ "active": false })) };
    let platform = client.namespace == served.config.namespace;
    if !platform && !may_see(&client.client_id, &claims) {
        return Ok(json!({ "active": false }));
    }
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

/// Whether a tenant's `client_id` may learn about a token with these claims: its own, or
/// meant for it.
fn may_see(client_id: &str, claims: &serde_json::Map<String, Value>) -> bool {
    let own = claims.get("cid").and_then(Value::as_str) == Some(client_id);
    let audience = match claims.get("aud") {
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(a)) => a.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    };
    own || audience
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_visible_to_its_client_and_its_audience_only() {
        let claims = |v: Value| v.as_object().cloned().unwrap();
        let t = claims(json!({ "cid": "team.a", "aud": "api://payments" }));
        assert!(may_see("team.a", &t));
        assert!(may_see("api://payments", &t));
        assert!(!may_see("team.b", &t));
        let t = claims(json!({ "cid": "team.a", "aud": ["api://orders", "api://payments"] }));
        assert!(may_see("api://payments", &t));
        assert!(!may_see("api://other", &t));
    }
}
