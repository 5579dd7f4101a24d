//! The step of a sign-in once the person is known ([`proceed`]): the policy decision, then
//! consent if needed, then the end. `/v1/consent` is the page (GET) where the person allows
//! or denies what the application asked for, and the answer (POST).

use axum::response::Response;

use super::{
    Flow, Pending, Session, SignedIn, error_page, error_redirect, finish, finish_denied, load_session, pages, redirect,
    save_session, sign_in_of, with_query,
};
use crate::api::{Consent, Endpoint, GrantType};
use crate::config::ClientConfig;
use crate::issuer::error::OAuthError;
use crate::issuer::form::Form;
use crate::issuer::protocol::sha256_b64;
use crate::issuer::{Incoming, Issuer, Served};
use crate::policy::{Denial, Grant, TokenRequest};
use crate::store::CodeKind;

/// How long a person's consent to a third-party client is remembered.
pub const CONSENT_TTL_SECS: i64 = 180 * 24 * 3600;
/// Asked for by a third-party client, this scope shows the consent page every time.
const OFFLINE_ACCESS: &str = "offline_access";

pub async fn page(issuer: &Issuer, served: &Served, req: &Incoming, form: &Form) -> Response {
    let (id, pending) = match sign_in_of(issuer, served, req, form, false).await {
        Ok(p) => p,
        Err(e) => return error_page(&e),
    };
    let now = req.now.as_second();
    match load_session(issuer, served, &req.headers, now).await {
        Ok(Some(signed)) => proceed(issuer, served, id, &pending, &signed, Step::ShowConsent, now).await,
        Ok(None) => error_page(&OAuthError::invalid_request("you are no longer signed in; start again")),
        Err(e) => error_page(&e),
    }
}

pub async fn submit(issuer: &Issuer, served: &Served, req: &Incoming, form: &Form) -> Response {
    let (id, pending) = match sign_in_of(issuer, served, req, form, true).await {
        Ok(p) => p,
        Err(e) => return error_page(&e),
    };
    let now = req.now.as_second();
    let signed = match load_session(issuer, served, &req.headers, now).await {
        Ok(Some(s)) => s,
        Ok(None) => return error_page(&OAuthError::invalid_request("you are no longer signed in; start again")),
        Err(e) => return error_page(&e),
    };
    match form.get("decision") {
        Some("allow") => proceed(issuer, served, id, &pending, &signed, Step::Consented, now).await,
        Some("deny") => {
            let e = OAuthError::access_denied("the user did not allow this application");
            finish_denied(issuer, served, id, &pending, &e, now).await
        }
        _ => error_page(&OAuthError::invalid_request("decision must be allow or deny")),
    }
}

/// Where a sign-in stands when [`proceed`] is called.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Step {
    /// Just signed in (or already was): consent, if needed, is asked on its own page
    /// (`GET /v1/consent`), so a reload never replays a form or an upstream callback.
    Continue,
    /// On the consent page: show it if consent is needed.
    ShowConsent,
    /// The person allowed it.
    Consented,
}

/// The next step of a sign-in once the person is known: consent if needed, then the end.
pub async fn proceed(
    issuer: &Issuer,
    served: &Served,
    request_id: &str,
    pending: &Pending,
    signed: &SignedIn,
    step: Step,
    now: i64,
) -> Response {
    let session = &signed.session;
    let consented = step == Step::Consented;
    let Some(client) = served.config.client(&pending.client_id) else {
        return error_page(&OAuthError::invalid_request("the application is no longer registered"));
    };
    let grant = match policy_grant(served, client, pending, session) {
        Ok(g) => g,
        Err(e) => return finish_denied(issuer, served, request_id, pending, &e, now).await,
    };
    // First-party clients (the server's namespace, or `spec.trustedClients`): consent for
    // Required scopes, once per session. Third-party ones: for every scope, once per person.
    let remembered = if client.trusted {
        session.consents.get(&client.client_id).cloned().unwrap_or_default()
    } else {
        match remembered_consent(issuer, served, &session.user.sub, &client.client_id, now).await {
            Ok(r) => r,
            Err(e) => return error_page(&e),
        }
    };
    let device = matches!(pending.flow, Flow::Device { .. });
    if !consented
        && consent_needed(&served.config, client.trusted, &grant.scopes, &remembered, pending.prompt_consent || device)
    {
        if pending.prompt_none {
            let e = OAuthError::new_code("consent_required", "the user has not allowed this application yet");
            return finish_denied(issuer, served, request_id, pending, &e, now).await;
        }
        if step == Step::Continue {
            return redirect(&with_query(&served.endpoint(Endpoint::Consent), &[("request", request_id.to_owned())]));
        }
        return consent_page(served, client, session, pending, request_id, &grant.scopes);
    }
    if consented && let Err(e) = record_consent(issuer, served, client, signed, remembered, &grant, now).await {
        return error_page(&e);
    }
    match finish(issuer, served, request_id, pending, session, &grant.scopes, now).await {
        Ok(r) => r,
        Err(e) => match e.status {
            s if s.is_server_error() => error_page(&e),
            _ => error_redirect(served, &pending.flow, &e),
        },
    }
}

/// What the policies grant `client` for the person of `session`, or the error to end the
/// sign-in with.
fn policy_grant(
    served: &Served,
    client: &ClientConfig,
    pending: &Pending,
    session: &Session,
) -> Result<Grant, OAuthError> {
    let grant_type = match pending.flow {
        Flow::Authorize { .. } => GrantType::AuthorizationCode,
        Flow::Device { .. } => GrantType::DeviceCode,
    };
    let decision = served.engine.decide(
        &served.config,
        &TokenRequest {
            client,
            grant_type,
            scopes: pending.scopes.clone(),
            user: Some(&session.user),
            subject: None,
            audience: served.config.audiences.clone(),
        },
    );
    match decision.outcome {
        Ok(g) => Ok(g),
        Err(d) => {
            let description = decision.denial_description();
            Err(match d {
                Denial::InvalidScope => OAuthError::invalid_scope(description),
                Denial::AccessDenied => OAuthError::access_denied(description),
                Denial::TooLarge(_) => OAuthError::invalid_request(description),
            })
        }
    }
}

/// The consent page for the scopes `client` is granted.
fn consent_page(
    served: &Served,
    client: &ClientConfig,
    session: &Session,
    pending: &Pending,
    request_id: &str,
    granted: &[String],
) -> Response {
    let scopes = granted
        .iter()
        .map(|s| {
            let desc = served
                .config
                .scope(s)
                .and_then(|c| c.description.clone().or_else(|| c.display_name.clone()))
                .unwrap_or_default();
            (s.clone(), desc)
        })
        .collect();
    pages::consent(&pages::Consent {
        client: client.display_name.as_deref().unwrap_or(&client.client_id),
        user: session.user.name.as_deref().or(session.user.email.as_deref()).unwrap_or(&session.user.sub),
        action: served.endpoint(Endpoint::Consent),
        request: request_id,
        csrf: &pending.csrf,
        scopes,
        device: matches!(pending.flow, Flow::Device { .. }),
        third_party: (!client.trusted).then_some(client.client_id.as_str()),
    })
}

/// Remembers that the person allowed `grant`'s scopes: for a third-party client in the store
/// (for the person), for a first-party one in the session.
async fn record_consent(
    issuer: &Issuer,
    served: &Served,
    client: &ClientConfig,
    signed: &SignedIn,
    remembered: Vec<String>,
    grant: &Grant,
    now: i64,
) -> Result<(), OAuthError> {
    let session = &signed.session;
    if !client.trusted {
        let mut allowed = remembered;
        for s in &grant.scopes {
            if !allowed.contains(s) {
                allowed.push(s.clone());
            }
        }
        return remember_consent(issuer, served, &session.user.sub, &client.client_id, &allowed, now).await;
    }
    let mut updated = session.clone();
    let granted = updated.consents.entry(client.client_id.clone()).or_default();
    for s in &grant.scopes {
        if !granted.contains(s) {
            granted.push(s.clone());
        }
    }
    save_session(issuer, served, &signed.id, &updated, now).await
}

/// Whether the person must be asked before `scopes` are granted: a first-party client only
/// for Required scopes not yet allowed; a third-party client for any scope not yet allowed,
/// and for `offline_access` every time; `ask` (prompt=consent, a device) always.
pub fn consent_needed(
    config: &crate::config::ServerConfig,
    trusted: bool,
    scopes: &[String],
    remembered: &[String],
    ask: bool,
) -> bool {
    let required = |s: &String| config.scope(s).is_some_and(|c| c.consent == Consent::Required);
    ask || scopes.iter().any(|s| {
        let needs = !trusted || required(s);
        (needs && !remembered.contains(s)) || (!trusted && s == OFFLINE_ACCESS)
    })
}

/// The store key of what person `sub` allowed client `client_id` (neither appears in it).
fn consent_key(sub: &str, client_id: &str) -> String {
    sha256_b64(&format!("{sub}\n{client_id}"))
}

/// The scopes person `sub` allowed third-party client `client_id` (and not expired at
/// `now`), from any replica.
async fn remembered_consent(
    issuer: &Issuer,
    served: &Served,
    sub: &str,
    client_id: &str,
    now: i64,
) -> Result<Vec<String>, OAuthError> {
    let key = consent_key(sub, client_id);
    let raw = issuer.store.get_code(served.scope(), CodeKind::Consent, &key, now).await?;
    Ok(raw.and_then(|r| serde_json::from_slice(&r).ok()).unwrap_or_default())
}

async fn remember_consent(
    issuer: &Issuer,
    served: &Served,
    sub: &str,
    client_id: &str,
    scopes: &[String],
    now: i64,
) -> Result<(), OAuthError> {
    let key = consent_key(sub, client_id);
    let value = serde_json::to_vec(scopes).map_err(|_| OAuthError::server_error("consent"))?;
    // Replaced whole, with a fresh expiry: the latest answer is the one that counts.
    issuer.store.take_code(served.scope(), CodeKind::Consent, &key, now).await?;
    issuer.store.put_code(served.scope(), CodeKind::Consent, &key, &value, now + CONSENT_TTL_SECS, now).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> crate::config::ServerConfig {
        serde_json::from_value(serde_json::json!({
            "name": "p", "namespace": "identity", "issuer": "http://127.0.0.1:9/p", "audiences": ["api://p"],
            "signing": { "algorithm": "ES256", "mode": "Automatic", "periodSecs": 1000, "prePublishSecs": 100, "retainRetiredSecs": 300 },
            "jwksMaxAgeSecs": 50,
            "scopes": [ { "name": "read" }, { "name": "admin", "consent": "Required" } ],
            "claims": [], "policies": [], "clients": []
        }))
        .unwrap()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn third_party_clients_need_consent_once_per_scope_set_and_offline_access_each_time() {
        let c = config();
        // First-party: Implicit scopes never prompt, Required ones once.
        assert!(!consent_needed(&c, true, &s(&["openid", "read", "offline_access"]), &[], false));
        assert!(consent_needed(&c, true, &s(&["admin"]), &[], false));
        assert!(!consent_needed(&c, true, &s(&["admin"]), &s(&["admin"]), false));
        // Third-party: every scope, until allowed; a new scope asks again.
        assert!(consent_needed(&c, false, &s(&["openid"]), &[], false));
        assert!(!consent_needed(&c, false, &s(&["openid", "read"]), &s(&["openid", "read"]), false));
        assert!(consent_needed(&c, false, &s(&["openid", "read", "admin"]), &s(&["openid", "read"]), false));
        // offline_access, even when allowed before.
        let offline = s(&["openid", "offline_access"]);
        assert!(consent_needed(&c, false, &offline, &offline, false));
        assert!(consent_needed(&c, true, &s(&["read"]), &s(&["read"]), true), "prompt=consent asks anyway");
    }
}
