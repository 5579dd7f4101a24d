//! `/v1/logout`: RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).

use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde_json::Value;

use super::{end_session, error_page, pages, redirect, session_cookie, with_query};
use crate::issuer::error::OAuthError;
use crate::issuer::form::Form;
use crate::issuer::{Issuer, Served};
use crate::keys::jwt;

/// The client an ID token we signed was issued to; expired tokens are fine here.
fn hinted_client(served: &Served, hint: &str) -> Option<String> {
    let kid = jwt::peek(hint).ok()?.header.kid?;
    let key = served.keys.public_jwk(&kid, jiff::Timestamp::now())?;
    let rules = jwt::Rules {
        algorithms: jwt::OWN_ALGS,
        typ: None,
        issuer: &served.config.issuer,
        audiences: None,
        clock: None,
    };
    let verified = jwt::verify(hint, std::slice::from_ref(key), &rules).ok()?;
    match verified.claims.get("aud")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

pub async fn logout(issuer: &Issuer, served: &Served, headers: &HeaderMap, form: &Form) -> Response {
    let hinted = match form.get("id_token_hint") {
        Some(h) => match hinted_client(served, h) {
            Some(c) => Some(c),
            None => return error_page(&OAuthError::invalid_request("id_token_hint is not an ID token of this server")),
        },
        None => None,
    };
    let client_id = match (hinted, form.get("client_id")) {
        (Some(h), Some(c)) if h != c => {
            return error_page(&OAuthError::invalid_request("client_id does not match the id_token_hint"));
        }
        (Some(h), _) => Some(h),
        (None, c) => c.map(str::to_owned),
    };
    let target = match form.get("post_logout_redirect_uri") {
        Some(uri) => {
            let registered = client_id
                .as_deref()
                .and_then(|c| served.config.client(c))
                .is_some_and(|c| c.post_logout_redirect_uris.iter().any(|r| r == uri));
            if !registered {
                return error_page(&OAuthError::invalid_request(
                    "post_logout_redirect_uri is not registered for this application (send id_token_hint or client_id)",
                ));
            }
            Some(uri)
        }
        None => None,
    };
    let clear = match end_session(issuer, served, session_cookie(headers)).await {
        Ok(c) => c,
        Err(e) => return error_page(&e),
    };
    let mut r = match target {
        Some(uri) => {
            let params: Vec<(&str, String)> = form.get("state").map(|s| ("state", s.to_owned())).into_iter().collect();
            redirect(&if params.is_empty() { uri.to_owned() } else { with_query(uri, &params) })
        }
        None => pages::message("Signed out", "You are signed out."),
    };
    r.headers_mut().append(header::SET_COOKIE, clear);
    r
}
