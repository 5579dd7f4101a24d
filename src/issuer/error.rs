//! The one protocol error: OAuth `error` code, HTTP status, a description safe to show the
//! client (`error_description`) and a detail for operators (node-oidc-provider's
//! `error_detail`), which goes to the log only and never into a response.
//!
//! Neither the description nor the detail may carry a secret, a token or a key: the detail
//! says what went wrong (an upstream's error, a store failure), not what was presented.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: &'static str,
    pub status: StatusCode,
    pub description: Cow<'static, str>,
    /// For the operator's log only: what went wrong behind the description.
    pub detail: Option<Cow<'static, str>>,
    /// Extra headers: `WWW-Authenticate` for client or Bearer authentication, `Retry-After`
    /// for 429 and 503.
    pub challenge: Challenge,
    pub retry_after: Option<u64>,
}

/// The `WWW-Authenticate` challenge an error answers with, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    None,
    /// Client authentication at the token-side endpoints (RFC 6749 §5.2).
    Basic,
    /// A Bearer token at a resource (RFC 6750 §3): the code and description are in the header too.
    Bearer,
}

impl OAuthError {
    fn new(code: &'static str, status: StatusCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            status,
            description: description.into(),
            detail: None,
            challenge: Challenge::None,
            retry_after: None,
        }
    }

    /// The same error with what went wrong for the operator's log (never in the response).
    pub fn with_detail(self, detail: impl Into<Cow<'static, str>>) -> Self {
        Self { detail: Some(detail.into()), ..self }
    }

    /// Logs the error with its detail: a warning for the server's own failures, debug otherwise.
    pub fn log(&self) {
        let detail = self.detail.as_deref().unwrap_or("");
        if self.status.is_server_error() {
            tracing::warn!(error = self.code, status = self.status.as_u16(), detail, "{}", self.description);
        } else {
            tracing::debug!(error = self.code, status = self.status.as_u16(), detail, "{}", self.description);
        }
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
        Self { challenge: Challenge::Basic, ..Self::new("invalid_client", StatusCode::UNAUTHORIZED, d) }
    }

    /// A Bearer token that is invalid, expired or revoked (RFC 6750 §3.1): 401.
    pub fn invalid_token(d: impl Into<Cow<'static, str>>) -> Self {
        Self { challenge: Challenge::Bearer, ..Self::new("invalid_token", StatusCode::UNAUTHORIZED, d) }
    }

    /// A Bearer token without the scope the resource needs (RFC 6750 §3.1): 403.
    pub fn insufficient_scope(d: impl Into<Cow<'static, str>>) -> Self {
        Self { challenge: Challenge::Bearer, ..Self::new("insufficient_scope", StatusCode::FORBIDDEN, d) }
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
        Self {
            retry_after: Some(crate::store::RETRY_AFTER_SECS),
            ..Self::temporarily_unavailable("token state is temporarily unavailable; retry shortly")
        }
        .with_detail(format!("token state unavailable: {e}"))
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        self.log();
        let body = serde_json::json!({ "error": self.code, "error_description": self.description });
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self.challenge {
            Challenge::None => {}
            Challenge::Basic => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"tessera\", charset=\"UTF-8\""),
                );
            }
            Challenge::Bearer => {
                h.insert(header::WWW_AUTHENTICATE, bearer_challenge(self.code, &self.description));
            }
        }
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// `WWW-Authenticate: Bearer` with the error (RFC 6750 §3): the description as a quoted string,
/// left out if it cannot be one (a control character).
fn bearer_challenge(code: &str, description: &str) -> HeaderValue {
    let quoted = description.replace('\\', "\\\\").replace('"', "\\\"");
    let full = format!("Bearer realm=\"tessera\", error=\"{code}\", error_description=\"{quoted}\"");
    HeaderValue::from_str(&full)
        .or_else(|_| HeaderValue::from_str(&format!("Bearer realm=\"tessera\", error=\"{code}\"")))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"tessera\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: OAuthError) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let resp = e.into_response();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.expect("a body");
        (parts.status, parts.headers, serde_json::from_slice(&bytes).expect("JSON"))
    }

    #[tokio::test]
    async fn the_detail_reaches_the_log_only_never_the_client() {
        let e = OAuthError::temporarily_unavailable("no signing key is active")
            .with_detail("server team-a/orders cannot sign: operator-only detail");
        let (status, headers, body) = answer(e).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            serde_json::json!({"error": "temporarily_unavailable", "error_description": "no signing key is active"})
        );
        for (_, v) in &headers {
            assert!(!v.to_str().unwrap_or("").contains("operator-only"), "{v:?}");
        }
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    }

    #[tokio::test]
    async fn a_store_failure_asks_the_client_to_retry_and_keeps_its_cause_for_the_operator() {
        let e = OAuthError::from(crate::store::StoreError("redis: connection refused".into()));
        assert!(e.detail.as_deref().is_some_and(|d| d.contains("connection refused")));
        let (status, headers, body) = answer(e).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], crate::store::RETRY_AFTER_SECS.to_string().as_str());
        assert!(!body.to_string().contains("redis"), "{body}");
    }

    #[tokio::test]
    async fn challenges_follow_the_kind_of_authentication() {
        let (status, headers, _) = answer(OAuthError::invalid_client("client authentication failed")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Basic realm=\"tessera\", charset=\"UTF-8\"");
        let (status, headers, _) = answer(OAuthError::insufficient_scope("needs \"openid\"")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            r#"Bearer realm="tessera", error="insufficient_scope", error_description="needs \"openid\"""#
        );
        let (_, headers, _) = answer(OAuthError::invalid_token("bad\ntoken")).await;
        assert_eq!(headers[header::WWW_AUTHENTICATE], r#"Bearer realm="tessera", error="invalid_token""#);
        let (_, headers, _) = answer(OAuthError::invalid_grant("no challenge")).await;
        assert!(!headers.contains_key(header::WWW_AUTHENTICATE));
    }
}
