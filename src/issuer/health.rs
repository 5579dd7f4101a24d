//! `/livez` and `/readyz` for the kubelet: ready once every served server can sign.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::Issuer;

pub fn livez() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

pub fn readyz(issuer: &Issuer) -> Response {
    let servers = issuer.servers.load();
    let now = jiff::Timestamp::now();
    if servers.is_empty() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no config loaded yet\n").into_response();
    }
    match servers.iter().find(|s| s.keys.signing_kid(now).is_none()) {
        Some(s) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{}: no active signing key\n", s.config.name)).into_response()
        }
        None => (StatusCode::OK, "ok\n").into_response(),
    }
}
