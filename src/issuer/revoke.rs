//! `/v1/revoke` (RFC 7009): a client revokes its own tokens, access and refresh. A token of
//! another client is left alone and the answer is the same 200 (RFC 7009 §2.1, §2.2): the
//! caller learns nothing about it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::access_token::verify_own;
use super::error::OAuthError;
use super::form::Form;
use super::grants::FamilyGrant;
use super::{Incoming, Issuer, Served, client_auth};

pub async fn revoke(issuer: &Issuer, served: &Served, req: &Incoming) -> Response {
    match handle(issuer, served, req).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn handle(issuer: &Issuer, served: &Served, req: &Incoming) -> Result<(), OAuthError> {
    let form = Form::parse(&req.headers, &req.body)?;
    let client = client_auth::authenticate(issuer, served, req, &form).await?;
    let token = form.require("token")?;
    if let Some(hint) = form.get("token_type_hint")
        && !matches!(hint, "access_token" | "refresh_token")
    {
        return Err(OAuthError::unsupported_token_type("token_type_hint is not supported"));
    }
    let now = req.now.as_second();
    if let Some((family, _, _)) = super::grants::parse_refresh_token(token) {
        // A refresh token: its whole family goes, if it was issued to the caller.
        let Some(grant) = issuer.store.family_grant(served.scope(), family, now).await? else { return Ok(()) };
        let owner = serde_json::from_slice::<FamilyGrant>(&grant).map(|g| g.client_id).unwrap_or_default();
        if owner != client.client_id {
            tracing::info!(target: "tessera::audit", server = %served.config.name, client = %client.client_id, "revocation of another client's refresh token ignored");
            return Ok(());
        }
        super::grants::revoke_family(issuer, served, family, now).await?;
        tracing::info!(target: "tessera::audit", server = %served.config.name, client = %client.client_id, "refresh token revoked");
        return Ok(());
    }
    // Unknown, expired or foreign tokens: nothing to do, and the answer is still 200 (RFC 7009 §2.2).
    let Some(claims) = verify_own(served, token, now) else { return Ok(()) };
    if claims.get("cid").and_then(Value::as_str) != Some(client.client_id.as_str()) {
        tracing::info!(target: "tessera::audit", server = %served.config.name, client = %client.client_id, "revocation of another client's access token ignored");
        return Ok(());
    }
    let jti = claims.get("jti").and_then(Value::as_str).unwrap_or_default();
    let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(now);
    issuer.store.revoke(served.scope(), jti, exp, now).await?;
    tracing::info!(target: "tessera::audit", server = %served.config.name, client = %client.client_id, jti, "token revoked");
    Ok(())
}
