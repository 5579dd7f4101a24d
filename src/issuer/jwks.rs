//! `/v1/keys`: every Next, Active and Retired key, public members only.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::Served;

pub fn keys(s: &Served, now: jiff::Timestamp) -> Response {
    let mut r = Json(s.keys.jwks(now)).into_response();
    let cc = format!("max-age={}, must-revalidate", s.config.jwks_max_age_secs);
    if let Ok(v) = HeaderValue::from_str(&cc) {
        r.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    r
}
