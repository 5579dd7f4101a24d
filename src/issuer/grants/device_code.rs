//! `urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4): the device polls.

use super::TokenResponse;
use super::person::{Person, Refresh, mint_for_person};
use super::request::DeviceCode;
use crate::api::GrantType;
use crate::config::ClientConfig;
use crate::issuer::error::OAuthError;
use crate::issuer::protocol::{Decision, DeviceState, decision_key, random};
use crate::issuer::{Issuer, Served};
use crate::store::CodeKind;

pub async fn device_code(
    issuer: &Issuer,
    served: &Served,
    client: &ClientConfig,
    request: DeviceCode<'_>,
    now: jiff::Timestamp,
) -> Result<TokenResponse, OAuthError> {
    let code = request.device_code;
    let (ts, now) = (now, now.as_second());
    let s = served.scope();
    let expired = || OAuthError::new_code("expired_token", "the device code has expired; start again on the device");
    let state: DeviceState = issuer
        .store
        .get_code(s, CodeKind::Device, code, now)
        .await?
        .and_then(|v| serde_json::from_slice(&v).ok())
        .ok_or_else(expired)?;
    if state.client_id != client.client_id {
        return Err(OAuthError::invalid_grant("device code was issued to another client"));
    }
    let key = decision_key(code);
    if issuer.store.get_code(s, CodeKind::DeviceDecision, &key, now).await?.is_some() {
        // Exactly one poll takes the decision; the device code goes with it.
        let taken = issuer.store.take_code(s, CodeKind::DeviceDecision, &key, now).await?;
        issuer.store.take_code(s, CodeKind::Device, code, now).await?;
        let decision: Decision = taken
            .and_then(|v| serde_json::from_slice(&v).ok())
            .ok_or_else(|| OAuthError::invalid_grant("device code was already used"))?;
        return match decision {
            Decision::Denied => Err(OAuthError::access_denied("the user denied the device")),
            Decision::Approved(a) => {
                let family = random(16)?;
                mint_for_person(
                    issuer,
                    served,
                    Person {
                        client,
                        grant: GrantType::DeviceCode,
                        scopes: Some(a.scopes.clone()),
                        user: &a.user,
                        auth_time: a.auth_time,
                        nonce: None,
                        acr: None,
                        claims: &a.claims,
                        jti: None,
                        refresh: Refresh::New(&family),
                        now: ts,
                    },
                )
                .await
            }
        };
    }
    // Still waiting: pace the device (RFC 8628 §3.5).
    let mut next = state.clone();
    let too_soon = now - state.last_poll < state.interval;
    if too_soon {
        next.interval += 5;
    }
    next.last_poll = now;
    let value = serde_json::to_vec(&next).map_err(|_| OAuthError::server_error("device"))?;
    issuer.store.update_code(s, CodeKind::Device, code, &value, now).await?;
    if too_soon {
        return Err(OAuthError::new_code("slow_down", format!("poll at most every {} seconds", next.interval)));
    }
    Err(OAuthError::new_code("authorization_pending", "the user has not yet approved the device"))
}
