//! The one-time values of the flows and what they carry: random ids and codes, their hashes,
//! constant-time comparison, the approval an authorization or device code carries to the
//! token endpoint, and a device code's state and decision.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::issuer::claims_request::ClaimsRequest;
use crate::issuer::error::OAuthError;
use crate::policy::UserInfo;

/// `n` random bytes, base64url.
pub fn random(n: usize) -> Result<String, OAuthError> {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| OAuthError::server_error("no randomness"))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// SHA-256 of `s`, base64url (what we keep of cookies and PKCE verifiers).
pub fn sha256_b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes()))
}

/// Constant-time equality of two short strings.
pub fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// What an authorization code or an approved device code carries to the token endpoint.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub user: UserInfo,
    pub auth_time: i64,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub code_challenge: Option<String>,
    /// The `acr` of the ID token (from the sign-in and the request's `acr_values`).
    #[serde(default)]
    pub acr: Option<String>,
    /// The `claims` parameter of the request.
    #[serde(default, skip_serializing_if = "ClaimsRequest::is_empty")]
    pub claims: ClaimsRequest,
    pub until: i64,
}

/// A device code waiting for its person.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DeviceState {
    pub client_id: String,
    pub scopes: Option<Vec<String>>,
    pub interval: i64,
    pub last_poll: i64,
    pub until: i64,
}

/// The person's answer, taken once by the poll that redeems it.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase", tag = "decision")]
pub enum Decision {
    Approved(Box<Approval>),
    Denied,
}

/// Where a device code's decision is kept (`CodeKind::DeviceDecision`).
pub fn decision_key(device_code: &str) -> String {
    sha256_b64(device_code)
}
