//! `/v1/consent`: the page (GET) where the person allows or denies what the application
//! asked for, and the answer (POST).

use axum::http::HeaderMap;
use axum::response::Response;

use super::{Step, error_page, finish_denied, load_session, proceed, sign_in_of};
use crate::issuer::error::OAuthError;
use crate::issuer::form::Form;
use crate::issuer::{Issuer, Served};

pub async fn page(issuer: &Issuer, served: &Served, headers: &HeaderMap, form: &Form) -> Response {
    let (id, pending) = match sign_in_of(issuer, served, headers, form, false).await {
        Ok(p) => p,
        Err(e) => return error_page(&e),
    };
    match load_session(issuer, served, headers).await {
        Ok(Some((sid, session))) => proceed(issuer, served, id, &pending, &sid, &session, Step::ShowConsent).await,
        Ok(None) => error_page(&OAuthError::invalid_request("you are no longer signed in; start again")),
        Err(e) => error_page(&e),
    }
}

pub async fn submit(issuer: &Issuer, served: &Served, headers: &HeaderMap, form: &Form) -> Response {
    let (id, pending) = match sign_in_of(issuer, served, headers, form, true).await {
        Ok(p) => p,
        Err(e) => return error_page(&e),
    };
    let (sid, session) = match load_session(issuer, served, headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return error_page(&OAuthError::invalid_request("you are no longer signed in; start again")),
        Err(e) => return error_page(&e),
    };
    match form.get("decision") {
        Some("allow") => proceed(issuer, served, id, &pending, &sid, &session, Step::Consented).await,
        Some("deny") => {
            let e = OAuthError::access_denied("the user did not allow this application");
            finish_denied(issuer, served, id, &pending, &e).await
        }
        _ => error_page(&OAuthError::invalid_request("decision must be allow or deny")),
    }
}
