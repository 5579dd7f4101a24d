//! `refresh_token`: no grant served today issues refresh tokens, so every one presented is unknown.

use crate::config::ClientConfig;
use crate::issuer::error::OAuthError;
use crate::issuer::form::Form;
use crate::issuer::token::TokenResponse;
use crate::issuer::{Issuer, Served};

pub async fn refresh_token(
    _issuer: &Issuer,
    _served: &Served,
    _client: &ClientConfig,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    form.require("refresh_token")?;
    Err(OAuthError::invalid_grant("refresh token is unknown, expired or revoked"))
}
