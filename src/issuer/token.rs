//! `/v1/token`: client authentication first, then the grant's handler.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::OAuthError;
use super::form::Form;
use super::grants::{self, GrantRequest, TokenResponse};
use super::{Incoming, Issuer, Served, client_auth};
use crate::api::GrantType;

pub async fn token(issuer: &Issuer, served: &Served, req: &Incoming) -> Response {
    match handle(issuer, served, req).await {
        Ok(t) => {
            // Sized for the tokens at once (axum's `Json` starts at 128 bytes and grows).
            let tokens = [Some(&t.access_token), t.id_token.as_ref(), t.refresh_token.as_ref()];
            let mut body = Vec::with_capacity(160 + tokens.iter().flatten().map(|s| s.len()).sum::<usize>());
            if serde_json::to_writer(&mut body, &t).is_err() {
                return OAuthError::server_error("could not write the token response").into_response();
            }
            (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    (header::PRAGMA, HeaderValue::from_static("no-cache")),
                ],
                body,
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn handle(issuer: &Issuer, served: &Served, req: &Incoming) -> Result<TokenResponse, OAuthError> {
    if served.config.suspended {
        return Err(OAuthError::temporarily_unavailable("this authorization server is suspended"));
    }
    let form = Form::parse(&req.headers, &req.body)?;
    let grant = form.require("grant_type")?;
    // Only a request that authenticated as the client spends the client's rate limit.
    let client = client_auth::authenticate(issuer, served, req, &form).await?;
    if let Some(limit) = &served.config.rate_limit {
        let key = format!("{}/{}/{}", served.config.namespace, served.config.name, client.client_id);
        issuer.limiter.check(&key, &limit.into(), req.at).map_err(OAuthError::slow_down)?;
    }
    let grant = GrantType::parse(grant)
        .ok_or_else(|| OAuthError::unsupported_grant_type(format!("grant type {grant} is not supported")))?;
    if !client.grant_types.contains(&grant) {
        return Err(OAuthError::unauthorized_client(format!("client may not use grant type {}", grant.as_str())));
    }
    let now = req.now;
    match GrantRequest::parse(grant, &form)? {
        GrantRequest::ClientCredentials(r) => grants::client_credentials(served, client, r, now),
        GrantRequest::TokenExchange(r) => grants::token_exchange(issuer, served, client, r, now).await,
        GrantRequest::RefreshToken(r) => grants::refresh_token(issuer, served, client, r, now).await,
        GrantRequest::AuthorizationCode(r) => grants::authorization_code(issuer, served, client, r, now).await,
        GrantRequest::DeviceCode(r) => grants::device_code(issuer, served, client, r, now).await,
    }
}
