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
use serde::{Deserialize, Serialize};

use super::error::OAuthError;
pub use super::protocol::Approval;
use super::protocol::{random, same, sha256_b64};
use super::{Incoming, Issuer, Served};
use crate::issuer::acr;
use crate::issuer::claims_request::ClaimsRequest;
use crate::policy::UserInfo;
use crate::store::CodeKind;
pub use consent::{Step, proceed};

/// How long a sign-in may take from the authorization request to its end.
pub const REQUEST_TTL_SECS: i64 = 15 * 60;
/// Authorization codes are redeemed within a minute.
pub const CODE_TTL_SECS: i64 = 60;

const BROWSER_COOKIE: &str = "tessera_browser";
const SESSION_COOKIE: &str = "tessera_session";

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
    e.log();
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

/// The session of a request: its id (the session cookie) and what is stored under it.
#[derive(Clone, Debug)]
pub struct SignedIn {
    pub id: String,
    pub session: Session,
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

/// The sign-in `id`, if it has not expired at `now` and this browser started it.
pub async fn load_pending(
    issuer: &Issuer,
    served: &Served,
    headers: &HeaderMap,
    id: &str,
    now: i64,
) -> Result<Pending, OAuthError> {
    let raw = issuer.store.get_code(served.scope(), CodeKind::Request, id, now).await?;
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

/// The sign-in a page or form continues (its `request` parameter), bound to the browser of
/// `req`; a form (`with_csrf`) must also echo the sign-in's CSRF token.
pub async fn sign_in_of<'f>(
    issuer: &Issuer,
    served: &Served,
    req: &Incoming,
    form: &'f crate::issuer::form::Form,
    with_csrf: bool,
) -> Result<(&'f str, Pending), OAuthError> {
    let id = form
        .get("request")
        .ok_or_else(|| OAuthError::invalid_request("request is required; start again from the application"))?;
    let pending = load_pending(issuer, served, &req.headers, id, req.now.as_second()).await?;
    if with_csrf && !same(form.get("csrf").unwrap_or_default(), &pending.csrf) {
        return Err(OAuthError::invalid_request("the form has expired; start again from the application"));
    }
    Ok((id, pending))
}

/// The session of the request, if it is signed in and not expired at `now`.
pub async fn load_session(
    issuer: &Issuer,
    served: &Served,
    headers: &HeaderMap,
    now: i64,
) -> Result<Option<SignedIn>, OAuthError> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else { return Ok(None) };
    let raw = issuer.store.get_code(served.scope(), CodeKind::Session, &sha256_b64(id), now).await?;
    Ok(raw
        .and_then(|r| serde_json::from_slice::<Session>(&r).ok())
        .filter(|s| s.until > now)
        .map(|session| SignedIn { id: id.to_owned(), session }))
}

/// Starts a session signed in at `now`; returns the cookie to set.
pub async fn start_session(
    issuer: &Issuer,
    served: &Served,
    user: UserInfo,
    idp: &str,
    now: i64,
) -> Result<(SignedIn, HeaderValue), OAuthError> {
    let identity =
        served.config.identity.as_ref().ok_or_else(|| OAuthError::access_denied("sign-in is not enabled"))?;
    let lifetime = i64::try_from(identity.session_lifetime_secs).unwrap_or(8 * 3600);
    let session =
        Session { user, auth_time: now, idp: idp.to_owned(), until: now + lifetime, consents: Default::default() };
    let id = random(32)?;
    let value = serde_json::to_vec(&session).map_err(|_| OAuthError::server_error("session"))?;
    issuer.store.put_code(served.scope(), CodeKind::Session, &sha256_b64(&id), &value, session.until, now).await?;
    let cookie = set_cookie(served, SESSION_COOKIE, &id, Some(lifetime));
    Ok((SignedIn { id, session }, cookie))
}

pub async fn save_session(issuer: &Issuer, served: &Served, id: &str, s: &Session, now: i64) -> Result<(), OAuthError> {
    let value = serde_json::to_vec(s).map_err(|_| OAuthError::server_error("session"))?;
    issuer.store.update_code(served.scope(), CodeKind::Session, &sha256_b64(id), &value, now).await?;
    Ok(())
}

/// Ends the session of `id` and returns the cookie that clears it.
pub async fn end_session(
    issuer: &Issuer,
    served: &Served,
    id: Option<&str>,
    now: i64,
) -> Result<HeaderValue, OAuthError> {
    if let Some(id) = id {
        issuer.store.take_code(served.scope(), CodeKind::Session, &sha256_b64(id), now).await?;
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
            e.log();
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

/// Ends a sign-in at `now` with what the person was granted: a code for the client, or the
/// device approved.
async fn finish(
    issuer: &Issuer,
    served: &Served,
    request_id: &str,
    pending: &Pending,
    session: &Session,
    scopes: &[String],
    now: i64,
) -> Result<Response, OAuthError> {
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
            issuer.store.put_code(served.scope(), CodeKind::Authorization, &code, &value, approval.until, now).await?;
            let mut params = vec![("code", code)];
            if let Some(s) = state {
                params.push(("state", s.clone()));
            }
            params.push(("iss", served.config.issuer.clone()));
            Ok(redirect(&with_query(redirect_uri, &params)))
        }
        Flow::Device { device_code } => {
            device::approve(issuer, served, device_code, session, scopes, now).await?;
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
    now: i64,
) -> Response {
    let _ = issuer.store.take_code(served.scope(), CodeKind::Request, request_id, now).await;
    if let Flow::Device { device_code } = &pending.flow {
        let _ = device::deny(issuer, served, device_code, now).await;
        e.log();
        return pages::message("Device not connected", &e.description);
    }
    error_redirect(served, &pending.flow, e)
}
