//! People signing in: the authorization endpoint, login (static users and upstream
//! providers), consent, device approval and logout. Every step's state lives in the token
//! store (so any replica can take the next step) under random ids; the browser holds two
//! cookies: a browser id that binds a sign-in in progress to the browser that started it,
//! and the session id once signed in.

pub mod authorize;
pub mod consent;
pub mod device;
pub mod login;
pub mod logout;
pub mod pages;
pub mod upstream;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::error::OAuthError;
use super::{Issuer, Served, unix_now};
use crate::api::{Consent, GrantType};
use crate::issuer::acr;
use crate::issuer::claims_request::ClaimsRequest;
use crate::policy::{Denial, TokenRequest, UserInfo};
use crate::store::CodeKind;

/// How long a sign-in may take from the authorization request to its end.
pub const REQUEST_TTL_SECS: i64 = 15 * 60;
/// Authorization codes are redeemed within a minute.
pub const CODE_TTL_SECS: i64 = 60;
/// How long a person's consent to a third-party client is remembered.
pub const CONSENT_TTL_SECS: i64 = 180 * 24 * 3600;
/// Asked for by a third-party client, this scope shows the consent page every time.
const OFFLINE_ACCESS: &str = "offline_access";

const BROWSER_COOKIE: &str = "tessera_browser";
const SESSION_COOKIE: &str = "tessera_session";

/// `n` random bytes, base64url.
pub fn random(n: usize) -> Result<String, OAuthError> {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| OAuthError::server_error("no randomness"))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// SHA-256 of `s`, base64url (what we keep of cookies and PKCE verifiers).
pub fn sha256_b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes()))
}

/// Constant-time equality of two short strings.
pub fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// A cookie of the request.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for a cookie scoped to this server's paths.
fn set_cookie(served: &Served, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
    let path = match served.config.issuer_path() {
        "" => "/".to_owned(),
        p => format!("{p}/"),
    };
    let secure = if served.config.issuer.starts_with("https://") { "; Secure" } else { "" };
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    HeaderValue::from_str(&format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax{secure}{age}"))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A 303 to `location`.
pub fn redirect(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The error page for a request that cannot be answered by redirect.
pub fn error_page(e: &OAuthError) -> Response {
    let mut r = match e.status {
        StatusCode::SERVICE_UNAVAILABLE => pages::unavailable(&e.description),
        s if s.is_server_error() => pages::error(s, &e.description),
        _ => pages::error(StatusCode::BAD_REQUEST, &e.description),
    };
    if let Some(secs) = e.retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// What a sign-in in progress ends in.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Flow {
    /// Back to the client with a code.
    Authorize {
        redirect_uri: String,
        /// Whether the request named the redirect URI (then the token request must repeat it).
        redirect_uri_given: bool,
        state: Option<String>,
        nonce: Option<String>,
        code_challenge: Option<String>,
    },
    /// Approves a device code.
    Device { device_code: String },
}

/// A sign-in in progress, kept in the store under a random id.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    pub client_id: String,
    pub scopes: Option<Vec<String>>,
    pub flow: Flow,
    pub prompt_login: bool,
    pub prompt_consent: bool,
    pub prompt_none: bool,
    pub max_age: Option<i64>,
    /// `acr_values`, in the client's order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_values: Vec<String>,
    /// The `claims` parameter (OpenID Connect Core §5.5).
    #[serde(default, skip_serializing_if = "ClaimsRequest::is_empty")]
    pub claims: ClaimsRequest,
    /// Echoed by every form of this sign-in.
    pub csrf: String,
    /// Hash of the browser cookie of the browser that started it.
    pub browser: String,
}

/// A person signed in at this server.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub user: UserInfo,
    pub auth_time: i64,
    /// `static` or the upstream's name.
    pub idp: String,
    pub until: i64,
    /// Scopes each first-party client was allowed, so consent is asked once per session
    /// (third-party clients: per person, in the store; see `consent_needed`).
    #[serde(default)]
    pub consents: std::collections::BTreeMap<String, Vec<String>>,
}

/// The browser id cookie of the request, or a new one to set.
pub fn browser_id(headers: &HeaderMap) -> Result<(String, bool), OAuthError> {
    match cookie(headers, BROWSER_COOKIE) {
        Some(v) if v.len() >= 22 && v.len() <= 64 => Ok((v.to_owned(), false)),
        _ => Ok((random(24)?, true)),
    }
}

pub fn set_browser_cookie(served: &Served, r: &mut Response, id: &str) {
    r.headers_mut().append(header::SET_COOKIE, set_cookie(served, BROWSER_COOKIE, id, None));
}

pub async fn load_pending(
    issuer: &Issuer,
    served: &Served,
    headers: &HeaderMap,
    id: &str,
) -> Result<Pending, OAuthError> {
    let raw = issuer.store.get_code(served.scope(), CodeKind::Request, id, unix_now()).await?;
    let pending: Pending = raw.and_then(|r| serde_json::from_slice(&r).ok()).ok_or_else(|| {
        OAuthError::invalid_request("this sign-in has expired or is unknown; start again from the application")
    })?;
    let browser = cookie(headers, BROWSER_COOKIE).map(sha256_b64).unwrap_or_default();
    if !same(&browser, &pending.browser) {
        return Err(OAuthError::invalid_request(
            "this sign-in was started in another browser; start again from the application",
        ));
    }
    Ok(pending)
}

/// The sign-in a page or form continues (its `request` parameter), bound to this browser;
/// a form (`with_csrf`) must also echo the sign-in's CSRF token.
pub async fn sign_in_of<'f>(
    issuer: &Issuer,
    served: &Served,
    headers: &HeaderMap,
    form: &'f crate::issuer::form::Form,
    with_csrf: bool,
) -> Result<(&'f str, Pending), OAuthError> {
    let id = form
        .get("request")
        .ok_or_else(|| OAuthError::invalid_request("request is required; start again from the application"))?;
    let pending = load_pending(issuer, served, headers, id).await?;
    if with_csrf && !same(form.get("csrf").unwrap_or_default(), &pending.csrf) {
        return Err(OAuthError::invalid_request("the form has expired; start again from the application"));
    }
    Ok((id, pending))
}

/// The session of the request, if it is signed in and not expired.
pub async fn load_session(
    issuer: &Issuer,
    served: &Served,
    headers: &HeaderMap,
) -> Result<Option<(String, Session)>, OAuthError> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else { return Ok(None) };
    let now = unix_now();
    let raw = issuer.store.get_code(served.scope(), CodeKind::Session, &sha256_b64(id), now).await?;
    Ok(raw
        .and_then(|r| serde_json::from_slice::<Session>(&r).ok())
        .filter(|s| s.until > now)
        .map(|s| (id.to_owned(), s)))
}

/// Starts a session; returns the cookie to set.
pub async fn start_session(
    issuer: &Issuer,
    served: &Served,
    user: UserInfo,
    idp: &str,
) -> Result<(String, Session, HeaderValue), OAuthError> {
    let identity =
        served.config.identity.as_ref().ok_or_else(|| OAuthError::access_denied("sign-in is not enabled"))?;
    let now = unix_now();
    let lifetime = i64::try_from(identity.session_lifetime_secs).unwrap_or(8 * 3600);
    let session =
        Session { user, auth_time: now, idp: idp.to_owned(), until: now + lifetime, consents: Default::default() };
    let id = random(32)?;
    let value = serde_json::to_vec(&session).map_err(|_| OAuthError::server_error("session"))?;
    issuer.store.put_code(served.scope(), CodeKind::Session, &sha256_b64(&id), &value, session.until).await?;
    let cookie = set_cookie(served, SESSION_COOKIE, &id, Some(lifetime));
    Ok((id, session, cookie))
}

pub async fn save_session(issuer: &Issuer, served: &Served, id: &str, s: &Session) -> Result<(), OAuthError> {
    let value = serde_json::to_vec(s).map_err(|_| OAuthError::server_error("session"))?;
    issuer.store.update_code(served.scope(), CodeKind::Session, &sha256_b64(id), &value, unix_now()).await?;
    Ok(())
}

/// Ends the session of `id` and returns the cookie that clears it.
pub async fn end_session(issuer: &Issuer, served: &Served, id: Option<&str>) -> Result<HeaderValue, OAuthError> {
    if let Some(id) = id {
        issuer.store.take_code(served.scope(), CodeKind::Session, &sha256_b64(id), unix_now()).await?;
    }
    Ok(set_cookie(served, SESSION_COOKIE, "", Some(0)))
}

pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

/// Where the browser goes with an authorization error: the client's redirect URI, with
/// `error`, `error_description`, `state` and `iss` (RFC 9207).
pub fn error_redirect(served: &Served, flow: &Flow, e: &OAuthError) -> Response {
    match flow {
        Flow::Authorize { redirect_uri, state, .. } => {
            let mut params = vec![("error", e.code.to_owned()), ("error_description", e.description.to_string())];
            if let Some(s) = state {
                params.push(("state", s.clone()));
            }
            params.push(("iss", served.config.issuer.clone()));
            redirect(&with_query(redirect_uri, &params))
        }
        Flow::Device { .. } => error_page(e),
    }
}

/// `uri` with `params` appended to its query.
pub fn with_query(uri: &str, params: &[(&str, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", q.finish())
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
    session_id: &str,
    session: &Session,
    step: Step,
) -> Response {
    let consented = step == Step::Consented;
    let Some(client) = served.config.client(&pending.client_id) else {
        return error_page(&OAuthError::invalid_request("the application is no longer registered"));
    };
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
    let grant = match decision.outcome {
        Ok(g) => g,
        Err(d) => {
            let description = decision.denial_description();
            let e = match d {
                Denial::InvalidScope => OAuthError::invalid_scope(description),
                Denial::AccessDenied => OAuthError::access_denied(description),
                Denial::TooLarge(_) => OAuthError::invalid_request(description),
            };
            return finish_denied(issuer, served, request_id, pending, &e).await;
        }
    };
    // First-party clients (the server's namespace, or `spec.trustedClients`): consent for
    // Required scopes, once per session. Third-party ones: for every scope, once per person.
    let remembered = if client.trusted {
        session.consents.get(&client.client_id).cloned().unwrap_or_default()
    } else {
        match remembered_consent(issuer, served, &session.user.sub, &client.client_id).await {
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
            return finish_denied(issuer, served, request_id, pending, &e).await;
        }
        if step == Step::Continue {
            return redirect(&with_query(&served.endpoint("/v1/consent"), &[("request", request_id.to_owned())]));
        }
        let scopes = grant
            .scopes
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
        return pages::consent(&pages::Consent {
            client: client.display_name.as_deref().unwrap_or(&client.client_id),
            user: session.user.name.as_deref().or(session.user.email.as_deref()).unwrap_or(&session.user.sub),
            action: served.endpoint("/v1/consent"),
            request: request_id,
            csrf: &pending.csrf,
            scopes,
            device,
            third_party: (!client.trusted).then_some(client.client_id.as_str()),
        });
    }
    if consented && !client.trusted {
        let mut allowed = remembered;
        for s in &grant.scopes {
            if !allowed.contains(s) {
                allowed.push(s.clone());
            }
        }
        if let Err(e) = remember_consent(issuer, served, &session.user.sub, &client.client_id, &allowed).await {
            return error_page(&e);
        }
    } else if consented {
        let mut updated = session.clone();
        let granted = updated.consents.entry(client.client_id.clone()).or_default();
        for s in &grant.scopes {
            if !granted.contains(s) {
                granted.push(s.clone());
            }
        }
        if let Err(e) = save_session(issuer, served, session_id, &updated).await {
            return error_page(&e);
        }
    }
    match finish(issuer, served, request_id, pending, session, &grant.scopes).await {
        Ok(r) => r,
        Err(e) => match e.status {
            s if s.is_server_error() => error_page(&e),
            _ => error_redirect(served, &pending.flow, &e),
        },
    }
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

/// The scopes person `sub` allowed third-party client `client_id`, from any replica.
async fn remembered_consent(
    issuer: &Issuer,
    served: &Served,
    sub: &str,
    client_id: &str,
) -> Result<Vec<String>, OAuthError> {
    let key = consent_key(sub, client_id);
    let raw = issuer.store.get_code(served.scope(), CodeKind::Consent, &key, unix_now()).await?;
    Ok(raw.and_then(|r| serde_json::from_slice(&r).ok()).unwrap_or_default())
}

async fn remember_consent(
    issuer: &Issuer,
    served: &Served,
    sub: &str,
    client_id: &str,
    scopes: &[String],
) -> Result<(), OAuthError> {
    let (key, now) = (consent_key(sub, client_id), unix_now());
    let value = serde_json::to_vec(scopes).map_err(|_| OAuthError::server_error("consent"))?;
    // Replaced whole, with a fresh expiry: the latest answer is the one that counts.
    issuer.store.take_code(served.scope(), CodeKind::Consent, &key, now).await?;
    issuer.store.put_code(served.scope(), CodeKind::Consent, &key, &value, now + CONSENT_TTL_SECS).await?;
    Ok(())
}

/// What an authorization code or an approved device code carries to the token endpoint.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub user: UserInfo,
    pub auth_time: i64,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub code_challenge: Option<String>,
    /// The `acr` of the ID token (from the sign-in and the request's `acr_values`).
    #[serde(default)]
    pub acr: Option<String>,
    /// The `claims` parameter of the request.
    #[serde(default, skip_serializing_if = "ClaimsRequest::is_empty")]
    pub claims: ClaimsRequest,
    pub until: i64,
}

/// The `acr` of a sign-in for `pending`: `claims.id_token.acr` values, or else `acr_values`,
/// in the client's order; an essential `acr` the sign-in does not meet fails it (OpenID Connect
/// Core §5.5.1.1), as does an ID-token `sub` asked for with another person's value (§5.5.1).
fn sign_in_acr(user: &UserInfo, pending: &Pending) -> Result<String, OAuthError> {
    if let Some(sub) = pending.claims.id_token.get("sub").map(|a| a.strings())
        && !sub.is_empty()
        && !sub.contains(&user.sub)
    {
        return Err(OAuthError::access_denied("the signed-in person is not the one the claims parameter asks for"));
    }
    let asked = pending.claims.id_token.get("acr");
    let wanted = asked.map(|a| a.strings()).filter(|v| !v.is_empty()).unwrap_or_else(|| pending.acr_values.clone());
    if asked.is_some_and(|a| a.essential) && !wanted.is_empty() && !acr::meets(&user.amr, &wanted) {
        return Err(OAuthError::access_denied("the sign-in does not meet the essential acr the application asked for"));
    }
    Ok(acr::acr_for(&user.amr, &wanted))
}

async fn finish(
    issuer: &Issuer,
    served: &Served,
    request_id: &str,
    pending: &Pending,
    session: &Session,
    scopes: &[String],
) -> Result<Response, OAuthError> {
    let now = unix_now();
    // The request is single-use: whoever takes it finishes it.
    if issuer.store.take_code(served.scope(), CodeKind::Request, request_id, now).await?.is_none() {
        return Err(OAuthError::invalid_request("this sign-in has already finished"));
    }
    match &pending.flow {
        Flow::Authorize { redirect_uri, redirect_uri_given, state, nonce, code_challenge } => {
            let approval = Approval {
                client_id: pending.client_id.clone(),
                scopes: scopes.to_vec(),
                user: session.user.clone(),
                auth_time: session.auth_time,
                nonce: nonce.clone(),
                redirect_uri: redirect_uri_given.then(|| redirect_uri.clone()),
                code_challenge: code_challenge.clone(),
                acr: Some(sign_in_acr(&session.user, pending)?),
                claims: pending.claims.clone(),
                until: now + CODE_TTL_SECS,
            };
            let code = random(32)?;
            let value = serde_json::to_vec(&approval).map_err(|_| OAuthError::server_error("code"))?;
            issuer.store.put_code(served.scope(), CodeKind::Authorization, &code, &value, approval.until).await?;
            let mut params = vec![("code", code)];
            if let Some(s) = state {
                params.push(("state", s.clone()));
            }
            params.push(("iss", served.config.issuer.clone()));
            Ok(redirect(&with_query(redirect_uri, &params)))
        }
        Flow::Device { device_code } => {
            device::approve(issuer, served, device_code, session, scopes).await?;
            Ok(pages::message("Device connected", "You may close this window and return to your device."))
        }
    }
}

/// Ends a sign-in with an error: back to the client, or the device told no.
async fn finish_denied(
    issuer: &Issuer,
    served: &Served,
    request_id: &str,
    pending: &Pending,
    e: &OAuthError,
) -> Response {
    let _ = issuer.store.take_code(served.scope(), CodeKind::Request, request_id, unix_now()).await;
    if let Flow::Device { device_code } = &pending.flow {
        let _ = device::deny(issuer, served, device_code).await;
        return pages::message("Device not connected", &e.description);
    }
    error_redirect(served, &pending.flow, e)
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
