//! `/v1/logout`: RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0). Without a valid
//! `id_token_hint` the person is asked first (§2), so a cross-site link cannot sign them out.

use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use super::{end_session, error_page, load_session, pages, redirect, same, session_cookie, sha256_b64, with_query};
use crate::api::Endpoint;
use crate::issuer::error::OAuthError;
use crate::issuer::form::Form;
use crate::issuer::{Incoming, Issuer, Served};
use crate::keys::jwt;

/// The client an ID token we signed was issued to, if its key is still published at `now`;
/// expired tokens are fine here.
fn hinted_client(served: &Served, hint: &str, now: jiff::Timestamp) -> Option<String> {
    let kid = jwt::peek(hint).ok()?.header.kid?;
    let key = served.keys.public_jwk(&kid, now)?;
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
    /// End the session (a valid hint, a confirmed form, or a confirmed request with no session).
    End,
    /// Ask the person first.
    Confirm,
}

/// Whether to end the session now: with a valid `id_token_hint`; without one a GET always asks
/// (§2: a link or an image must not sign anyone out), and a POST ends the session only when it
/// echoes the session's confirmation token (with no session there is nothing to protect).
pub fn logout_step(hinted: bool, session_id: Option<&str>, post: bool, echoed: Option<&str>) -> LogoutStep {
    match session_id {
        _ if hinted => LogoutStep::End,
        _ if !post => LogoutStep::Confirm,
        None => LogoutStep::End,
        Some(sid) if echoed.is_some_and(|t| same(t, &confirmation_token(sid))) => LogoutStep::End,
        Some(_) => LogoutStep::Confirm,
    }
}

/// Why a logout request is refused, naming the parameter at fault.
#[derive(Debug, PartialEq, Eq)]
pub enum LogoutRefusal {
    /// `id_token_hint` is present but not an ID token this server signed.
    InvalidHint,
    /// `client_id` and the `id_token_hint`'s audience differ.
    ClientMismatch,
    /// `post_logout_redirect_uri` came with neither `id_token_hint` nor `client_id`.
    MissingHint,
    /// `client_id` names no client of this server.
    UnknownClient,
    /// `post_logout_redirect_uri` is not one of the client's `postLogoutRedirectUris`.
    UnregisteredRedirect,
}

impl LogoutRefusal {
    pub fn message(&self) -> &'static str {
        match self {
            Self::InvalidHint => {
                "id_token_hint is not an ID token this server signed (or its key is no longer published)"
            }
            Self::ClientMismatch => "client_id does not match the application the id_token_hint was issued to",
            Self::MissingHint => {
                "id_token_hint is missing: post_logout_redirect_uri is followed only for the application that an \
                 id_token_hint (or a client_id) names"
            }
            Self::UnknownClient => "client_id names no application of this server",
            Self::UnregisteredRedirect => "post_logout_redirect_uri is not registered for this application",
        }
    }
}

/// The client a logout request speaks for and where to send the browser afterwards, from the
/// hint's audience (`Err(())` for a hint that did not verify), `client_id` and
/// `post_logout_redirect_uri`; `registered(client, uri)` is `None` for an unknown client.
pub fn check_request<'a>(
    hint: Option<Result<String, ()>>,
    client_id: Option<&str>,
    redirect: Option<&'a str>,
    registered: impl Fn(&str, &str) -> Option<bool>,
) -> Result<(Option<String>, Option<&'a str>), LogoutRefusal> {
    let hinted = match hint {
        Some(Ok(aud)) => Some(aud),
        Some(Err(())) => return Err(LogoutRefusal::InvalidHint),
        None => None,
    };
    let client = match (hinted, client_id) {
        (Some(h), Some(c)) if h != c => return Err(LogoutRefusal::ClientMismatch),
        (Some(h), _) => Some(h),
        (None, c) => c.map(str::to_owned),
    };
    let Some(uri) = redirect else { return Ok((client, None)) };
    let Some(c) = client.as_deref() else { return Err(LogoutRefusal::MissingHint) };
    match registered(c, uri) {
        None => Err(LogoutRefusal::UnknownClient),
        Some(false) => Err(LogoutRefusal::UnregisteredRedirect),
        Some(true) => Ok((client, Some(uri))),
    }
}

/// A refused or failed logout, on a page of its own (not a sign-in error).
fn refuse(e: &OAuthError) -> Response {
    match e.status {
        StatusCode::SERVICE_UNAVAILABLE => error_page(e),
        s if s.is_server_error() => {
            e.log();
            pages::logout_error(s, &e.description)
        }
        _ => {
            e.log();
            pages::logout_error(StatusCode::BAD_REQUEST, &e.description)
        }
    }
}

pub async fn logout(issuer: &Issuer, served: &Served, req: &Incoming, form: &Form, post: bool) -> Response {
    let hint = form.get("id_token_hint").map(|h| hinted_client(served, h, req.now).ok_or(()));
    let has_hint = matches!(hint, Some(Ok(_)));
    let registered = |client: &str, uri: &str| {
        served.config.client(client).map(|c| c.post_logout_redirect_uris.iter().any(|r| r == uri))
    };
    let target = match check_request(hint, form.get("client_id"), form.get("post_logout_redirect_uri"), registered) {
        Ok((_, target)) => target,
        Err(refusal) => return pages::logout_error(StatusCode::BAD_REQUEST, refusal.message()),
    };
    let session = match load_session(issuer, served, &req.headers, req.now.as_second()).await {
        Ok(s) => s.map(|s| s.id),
        Err(e) => return refuse(&e),
    };
    if logout_step(has_hint, session.as_deref(), post, form.get("confirm")) == LogoutStep::Confirm {
        let sid = session.as_deref().unwrap_or_default();
        let mut hidden = vec![("confirm", confirmation_token(sid))];
        for key in ["client_id", "post_logout_redirect_uri", "state"] {
            if let Some(v) = form.get(key) {
                hidden.push((key, v.to_owned()));
            }
        }
        return pages::logout_confirm(&served.endpoint(Endpoint::Logout), &hidden, session.is_some());
    }
    let clear = match end_session(issuer, served, session_cookie(&req.headers), req.now.as_second()).await {
        Ok(c) => c,
        Err(e) => return refuse(&e),
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
        assert_eq!(logout_step(false, None, false, None), LogoutStep::Confirm, "a bare GET asks, session or not");
        assert_eq!(logout_step(false, None, true, None), LogoutStep::End, "a POST with no session: nothing to end");
        assert_eq!(logout_step(false, Some("sid"), false, Some(&token)), LogoutStep::Confirm, "a GET never");
        assert_eq!(logout_step(false, Some("sid"), true, None), LogoutStep::Confirm);
        assert_eq!(logout_step(false, Some("sid"), true, Some("guess")), LogoutStep::Confirm);
        assert_eq!(logout_step(false, Some("other"), true, Some(&token)), LogoutStep::Confirm, "another session's");
        assert_eq!(logout_step(false, Some("sid"), true, Some(&token)), LogoutStep::End);
    }

    #[test]
    fn a_refused_logout_names_the_parameter_at_fault() {
        let known = |c: &str, uri: &str| (c == "web").then_some(uri == "https://web.example/bye");
        let bye = Some("https://web.example/bye");
        let check = |hint, client, redirect| check_request(hint, client, redirect, known);
        assert_eq!(check(Some(Err(())), None, None), Err(LogoutRefusal::InvalidHint));
        assert_eq!(check(Some(Ok("web".into())), Some("other"), None), Err(LogoutRefusal::ClientMismatch));
        assert_eq!(check(None, None, bye), Err(LogoutRefusal::MissingHint));
        assert!(LogoutRefusal::MissingHint.message().starts_with("id_token_hint is missing"));
        assert_eq!(check(None, Some("nobody"), bye), Err(LogoutRefusal::UnknownClient));
        assert!(LogoutRefusal::UnknownClient.message().starts_with("client_id"));
        let elsewhere = Some("https://evil.example/");
        assert_eq!(check(Some(Ok("web".into())), None, elsewhere), Err(LogoutRefusal::UnregisteredRedirect));
        assert!(LogoutRefusal::UnregisteredRedirect.message().starts_with("post_logout_redirect_uri"));
        assert_eq!(check(Some(Ok("web".into())), None, bye), Ok((Some("web".into()), bye)));
        assert_eq!(check(None, Some("web"), bye), Ok((Some("web".into()), bye)));
        assert_eq!(check(None, None, None), Ok((None, None)), "a bare request is not refused: it is confirmed");
    }
}
