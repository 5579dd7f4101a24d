//! `refresh_token`: rotation on every use; a token already rotated away revokes its family.

use super::TokenResponse;
use super::person::{
    FamilyGrant, Person, Refresh, family_marker, mint_for_person, new_refresh_secret, parse_refresh_token,
    revoke_family,
};
use super::request::RefreshToken;
use crate::config::ClientConfig;
use crate::issuer::error::OAuthError;
use crate::issuer::{Issuer, Served};
use crate::store::Rotation;

pub async fn refresh_token(
    issuer: &Issuer,
    served: &Served,
    client: &ClientConfig,
    request: RefreshToken<'_>,
    now: jiff::Timestamp,
) -> Result<TokenResponse, OAuthError> {
    let presented = request.refresh_token;
    let unknown = || OAuthError::invalid_grant("refresh token is unknown, expired or revoked");
    let (family, secret, issued_at) = parse_refresh_token(presented).ok_or_else(unknown)?;
    let (ts, now) = (now, now.as_second());
    let s = served.scope();
    if issuer.store.is_revoked(s, &family_marker(family), now).await? {
        return Err(unknown());
    }
    let next = new_refresh_secret(now)?;
    let grant = match issuer.store.rotate_refresh(s, family, secret, &next, now).await? {
        Rotation::Rotated(g) => g,
        Rotation::ReuseDetected => {
            tracing::warn!(
                target: "tessera::audit",
                server = %served.config.name,
                client = %client.client_id,
                "refresh token presented again after rotation: its family is revoked"
            );
            return Err(OAuthError::invalid_grant(
                "refresh token was already used; every token of its family is revoked",
            ));
        }
        Rotation::Unknown => return Err(unknown()),
    };
    let grant: FamilyGrant = serde_json::from_slice(&grant).map_err(|_| unknown())?;
    if grant.client_id != client.client_id {
        revoke_family(issuer, served, family, now).await?;
        return Err(OAuthError::invalid_grant("refresh token was issued to another client; its family is revoked"));
    }
    let idle = i64::try_from(grant.idle_timeout_secs).unwrap_or(i64::MAX);
    if idle > 0 && now.saturating_sub(issued_at) > idle {
        revoke_family(issuer, served, family, now).await?;
        return Err(OAuthError::invalid_grant("refresh token expired through inactivity"));
    }
    let scopes = match request.scope {
        Some(asked) if asked.iter().all(|a| grant.scopes.contains(a)) => asked,
        Some(_) => return Err(OAuthError::invalid_scope("a refresh may only ask for scopes of the original grant")),
        None => grant.scopes.clone(),
    };
    mint_for_person(
        issuer,
        served,
        Person {
            client,
            grant: grant.grant_type,
            scopes: Some(scopes),
            user: &grant.user,
            auth_time: grant.auth_time,
            nonce: None,
            acr: grant.acr.as_deref(),
            claims: &grant.claims,
            jti: None,
            refresh: Refresh::Rotated { family, secret: &next },
            now: ts,
        },
    )
    .await
}
