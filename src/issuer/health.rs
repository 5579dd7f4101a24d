//! `/livez` and `/readyz` for the kubelet: ready once every served server can sign and the
//! token store answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::Issuer;

pub fn livez() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// The readiness the kubelet probes (`/readyz?store=optional`): a token store outage is
/// shared by every replica, so failing readiness for it would empty the Service and stop the
/// stateless grants too. The replica stays in the Service and says `degraded` instead.
pub const KUBELET_READINESS_PATH: &str = "/readyz?store=optional";

/// Ready when every server can sign and token state answers: while the store is down the
/// replica says so (503), though stateless grants still work on it. With `store_optional`
/// the store outage answers 200 `degraded: ...` (what the kubelet probes). `now` is when the
/// probe arrived.
pub async fn readyz(issuer: &Issuer, store_optional: bool, now: jiff::Timestamp) -> Response {
    let servers = issuer.servers.load();
    if servers.is_empty() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no config loaded yet\n").into_response();
    }
    match servers.iter().find(|s| s.keys.signing_kid(now).is_none()) {
        Some(s) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{}: no active signing key\n", s.config.name)).into_response()
        }
        None => match issuer.store.ping().await {
            Ok(()) => (StatusCode::OK, "ok\n").into_response(),
            Err(e) if store_optional => (StatusCode::OK, format!("degraded: {e}\n")).into_response(),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
        },
    }
}
