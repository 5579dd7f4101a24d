//! `authorization_code`: a code redeemed at most once across all replicas. The first
//! redemption records what it will issue (an atomic first-writer-wins write); any later one
//! finds that record and revokes what the first issued (RFC 6749 §4.1.2, RFC 9700 §4.5).

use serde::{Deserialize, Serialize};

use super::TokenResponse;
use super::person::{Person, Refresh, mint_for_person, revoke_family};
use super::request::AuthorizationCode;
use crate::api::{AuthMethod, GrantType};
use crate::config::ClientConfig;
use crate::issuer::access_token::new_jti;
use crate::issuer::error::OAuthError;
use crate::issuer::protocol::{Approval, is_pkce_value, random, redirect_uri_matches, same, sha256_b64};
use crate::issuer::{Issuer, Served};
use crate::store::CodeKind;

/// Longest an access token of any rule lives: how long a replayed code's tokens stay revoked.
const MAX_ACCESS_TOKEN_SECS: i64 = 24 * 3600;

#[derive(Serialize, Deserialize)]
struct Redeemed {
    jti: String,
    family: String,
}

/// Revokes what the first redemption of a code issued (or will issue: the marks are checked
/// by introspection and refresh whatever the order).
async fn revoke_issued(issuer: &Issuer, served: &Served, code: &str, now: i64) -> Result<(), OAuthError> {
    let Some(raw) = issuer.store.get_code(served.scope(), CodeKind::Redeemed, code, now).await? else {
        return Ok(());
    };
    let Ok(r) = serde_json::from_slice::<Redeemed>(&raw) else { return Ok(()) };
    let until = now + MAX_ACCESS_TOKEN_SECS;
    issuer.store.revoke(served.scope(), &r.jti, until, now).await?;
    revoke_family(issuer, served, &r.family, now).await?;
    tracing::warn!(
        target: "tessera::audit",
        server = %served.config.name,
        jti = %r.jti,
        "authorization code presented again: the tokens it issued are revoked"
    );
    Ok(())
}

pub async fn authorization_code(
    issuer: &Issuer,
    served: &Served,
    client: &ClientConfig,
    request: AuthorizationCode<'_>,
    now: jiff::Timestamp,
) -> Result<TokenResponse, OAuthError> {
    let code = request.code;
    let (ts, now) = (now, now.as_second());
    let reused =
        || OAuthError::invalid_grant("authorization code was already used; the tokens issued with it are revoked");
    let Some(raw) = issuer.store.get_code(served.scope(), CodeKind::Authorization, code, now).await? else {
        if issuer.store.get_code(served.scope(), CodeKind::Redeemed, code, now).await?.is_some() {
            revoke_issued(issuer, served, code, now).await?;
            return Err(reused());
        }
        return Err(OAuthError::invalid_grant("authorization code is unknown or expired"));
    };
    let approval: Approval = serde_json::from_slice(&raw)
        .map_err(|_| OAuthError::invalid_grant("authorization code is unknown or expired"))?;
    let jti = new_jti().ok_or_else(|| OAuthError::server_error("could not generate a token id"))?;
    let family = random(16)?;
    let record = serde_json::to_vec(&Redeemed { jti: jti.clone(), family: family.clone() })
        .map_err(|_| OAuthError::server_error("code"))?;
    let until = approval.until.max(now) + 600;
    if !issuer.store.put_code(served.scope(), CodeKind::Redeemed, code, &record, until, now).await? {
        revoke_issued(issuer, served, code, now).await?;
        return Err(reused());
    }
    // From here the code is spent, whatever the outcome.
    issuer.store.take_code(served.scope(), CodeKind::Authorization, code, now).await?;

    check_redemption(&approval, client, &request)?;
    mint_for_person(
        issuer,
        served,
        Person {
            client,
            grant: GrantType::AuthorizationCode,
            scopes: Some(approval.scopes.clone()),
            user: &approval.user,
            auth_time: approval.auth_time,
            nonce: approval.nonce.as_deref(),
            acr: approval.acr.as_deref(),
            claims: &approval.claims,
            jti: Some(jti),
            refresh: Refresh::New(&family),
            now: ts,
        },
    )
    .await
}

/// Whether `client` may redeem the code of `approval` with this request: the same client, the
/// redirect URI of the authorization request, and the PKCE verifier of its challenge.
fn check_redemption(approval: &Approval, client: &ClientConfig, request: &AuthorizationCode) -> Result<(), OAuthError> {
    if approval.client_id != client.client_id {
        return Err(OAuthError::invalid_grant("authorization code was issued to another client"));
    }
    match (&approval.redirect_uri, request.redirect_uri) {
        (Some(expected), Some(given)) if expected == given => {}
        (Some(_), _) => {
            return Err(OAuthError::invalid_grant("redirect_uri must be the one of the authorization request"));
        }
        (None, Some(given)) if !client.redirect_uris.iter().any(|r| redirect_uri_matches(r, given)) => {
            return Err(OAuthError::invalid_grant("redirect_uri is not registered for this client"));
        }
        (None, _) => {}
    }
    match (&approval.code_challenge, request.code_verifier) {
        (Some(challenge), Some(verifier)) => {
            if !is_pkce_value(verifier) {
                return Err(OAuthError::invalid_grant("code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~]"));
            }
            if !same(&sha256_b64(verifier), challenge) {
                return Err(OAuthError::invalid_grant("code_verifier does not match the code_challenge"));
            }
        }
        (Some(_), None) => return Err(OAuthError::invalid_grant("code_verifier is required (PKCE)")),
        (None, Some(_)) => {
            return Err(OAuthError::invalid_grant(
                "code_verifier was sent but the authorization request had no code_challenge",
            ));
        }
        (None, None) if client.auth_method == AuthMethod::None => {
            return Err(OAuthError::invalid_grant("public clients must use PKCE"));
        }
        (None, None) => {}
    }
    Ok(())
}
