//! Form bodies of the token, introspection and revocation endpoints.

use std::collections::HashMap;

use axum::http::{HeaderMap, header};

use super::error::OAuthError;

/// Parameters of an `application/x-www-form-urlencoded` body; each may appear once (RFC 6749 §3.2).
#[derive(Default)]
pub struct Form(HashMap<String, String>);

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets or tokens: show names only.
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Form {
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, OAuthError> {
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request("content type must be application/x-www-form-urlencoded"));
        }
        Self::from_query_bytes(body)
    }

    /// Parameters of a query string (the authorization endpoint's GET).
    pub fn from_query(query: &str) -> Result<Self, OAuthError> {
        Self::from_query_bytes(query.as_bytes())
    }

    fn from_query_bytes(encoded: &[u8]) -> Result<Self, OAuthError> {
        let mut out = HashMap::new();
        for (k, v) in form_urlencoded::parse(encoded) {
            if out.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(OAuthError::invalid_request(format!("parameter {k} is repeated")));
            }
        }
        Ok(Self(out))
    }

    /// Parameters given as name–value pairs (those of a request object).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(pairs.into_iter().collect())
    }

    /// Every parameter, in no particular order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A parameter, treating an empty value as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|s| !s.is_empty())
    }

    pub fn require(&self, name: &'static str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::invalid_request(format!("parameter {name} is required")))
    }
}
