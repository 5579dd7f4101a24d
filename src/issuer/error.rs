//! The one protocol error: OAuth `error` code, HTTP status and a description safe to show.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: &'static str,
    pub status: StatusCode,
    pub description: Cow<'static, str>,
    /// Extra headers: `WWW-Authenticate` for client authentication, `Retry-After` for 429.
    pub www_authenticate: bool,
    pub retry_after: Option<u64>,
}

impl OAuthError {
    fn new(code: &'static str, status: StatusCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self { code, status, description: description.into(), www_authenticate: false, retry_after: None }
    }

    /// Any other RFC-registered code (authorization and device flow errors), with 400.
    pub fn new_code(code: &'static str, d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(code, StatusCode::BAD_REQUEST, d)
    }

    pub fn invalid_request(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new("invalid_request", StatusCode::BAD_REQUEST, d)
    }

    /// Client authentication failed: 401 with `WWW-Authenticate`.
    pub fn invalid_client(d: impl Into<Cow<'static, str>>) -> Self {
        Self { www_authenticate: true, ..Self::new("invalid_client", StatusCode::UNAUTHORIZED, d) }
    }

    pub fn invalid_grant(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new("invalid_grant", StatusCode::BAD_REQUEST, d)
    }

    pub fn unauthorized_client(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new("unauthorized_client", StatusCode::BAD_REQUEST, d)
    }

    pub fn unsupported_grant_type(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new("unsupported_grant_type", StatusCode::BAD_REQUEST, d)
    }

    pub fn invalid_scope(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new("invalid_scope", StatusCode::BAD_REQUEST, d)
    }

    pub fn access_denied(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new("access_denied", StatusCode::BAD_REQUEST, d)
    }

    pub fn unsupported_token_type(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new("unsupported_token_type", StatusCode::BAD_REQUEST, d)
    }

    pub fn slow_down(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new("slow_down", StatusCode::TOO_MANY_REQUESTS, "too many requests for this client")
        }
    }

    /// 429 for too many failures (client authentication from one address, for one client).
    pub fn too_many_failures(retry_after: u64, d: impl Into<Cow<'static, str>>) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new("slow_down", StatusCode::TOO_MANY_REQUESTS, d) }
    }

    pub fn temporarily_unavailable(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new("temporarily_unavailable", StatusCode::SERVICE_UNAVAILABLE, d)
    }

    pub fn server_error(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new("server_error", StatusCode::INTERNAL_SERVER_ERROR, d)
    }

    pub fn not_found() -> Self {
        Self::new("not_found", StatusCode::NOT_FOUND, "no such endpoint")
    }

    pub fn method_not_allowed() -> Self {
        Self::new("invalid_request", StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    }

    pub fn too_large() -> Self {
        Self::new("invalid_request", StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
    }
}

/// Token state unreachable: the request may succeed shortly, on any replica.
impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::warn!(error = %e, "token state unavailable");
        Self {
            retry_after: Some(crate::store::RETRY_AFTER_SECS),
            ..Self::temporarily_unavailable("token state is temporarily unavailable; retry shortly")
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "error_description": self.description });
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.www_authenticate {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"tessera\", charset=\"UTF-8\""));
        }
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
