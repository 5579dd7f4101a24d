//! `/v1/logout`: RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0). Without a valid
//! `id_token_hint` the person is asked first (§2), so a cross-site link cannot sign them out.

use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde_json::Value;

use super::{end_session, error_page, load_session, pages, redirect, same, session_cookie, sha256_b64, with_query};
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

/// The token the confirmation form echoes: derived from the session cookie (which a
/// cross-site page cannot read), so only a page this server showed that browser can post it.
fn confirmation_token(session_id: &str) -> String {
    sha256_b64(&format!("logout\n{session_id}"))
}

/// What the confirmation page and its answer decide, apart from I/O.
#[derive(Debug, PartialEq, Eq)]
pub enum LogoutStep {
    /// End the session (a valid hint, a confirmed form, or no session to end).
    End,
    /// Ask the person first.
    Confirm,
}

/// Whether to end the session now: with a valid `id_token_hint`; without one only when there
/// is no session, or a POST echoes the session's confirmation token.
pub fn logout_step(hinted: bool, session_id: Option<&str>, post: bool, echoed: Option<&str>) -> LogoutStep {
    match session_id {
        _ if hinted => LogoutStep::End,
        None => LogoutStep::End,
        Some(sid) if post && echoed.is_some_and(|t| same(t, &confirmation_token(sid))) => LogoutStep::End,
        Some(_) => LogoutStep::Confirm,
    }
}

pub async fn logout(issuer: &Issuer, served: &Served, headers: &HeaderMap, form: &Form, post: bool) -> Response {
    let hinted = match form.get("id_token_hint") {
        Some(h) => match hinted_client(served, h) {
            Some(c) => Some(c),
            None => return error_page(&OAuthError::invalid_request("id_token_hint is not an ID token of this server")),
        },
        None => None,
    };
    let has_hint = hinted.is_some();
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
    let session = match load_session(issuer, served, headers).await {
        Ok(s) => s.map(|(sid, _)| sid),
        Err(e) => return error_page(&e),
    };
    if logout_step(has_hint, session.as_deref(), post, form.get("confirm")) == LogoutStep::Confirm {
        let sid = session.as_deref().unwrap_or_default();
        let mut hidden = vec![("confirm", confirmation_token(sid))];
        for key in ["client_id", "post_logout_redirect_uri", "state"] {
            if let Some(v) = form.get(key) {
                hidden.push((key, v.to_owned()));
            }
        }
        return pages::logout_confirm(&served.endpoint("/v1/logout"), &hidden);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_hint_only_a_post_with_the_sessions_token_signs_out() {
        let token = confirmation_token("sid");
        assert_eq!(logout_step(true, Some("sid"), false, None), LogoutStep::End, "a valid hint is enough");
        assert_eq!(logout_step(false, None, false, None), LogoutStep::End, "no session: nothing to ask");
        assert_eq!(logout_step(false, Some("sid"), false, Some(&token)), LogoutStep::Confirm, "a GET never");
        assert_eq!(logout_step(false, Some("sid"), true, None), LogoutStep::Confirm);
        assert_eq!(logout_step(false, Some("sid"), true, Some("guess")), LogoutStep::Confirm);
        assert_eq!(logout_step(false, Some("other"), true, Some(&token)), LogoutStep::Confirm, "another session's");
        assert_eq!(logout_step(false, Some("sid"), true, Some(&token)), LogoutStep::End);
    }
}
