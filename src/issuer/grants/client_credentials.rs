//! `client_credentials`: the client acts for itself; `sub` is its client id.

use super::TokenResponse;
use super::{Minting, mint, parse_scope};
use crate::api::GrantType;
use crate::config::ClientConfig;
use crate::issuer::error::OAuthError;
use crate::issuer::form::Form;
use crate::issuer::{Issuer, Served};

pub async fn client_credentials(
    _issuer: &Issuer,
    served: &Served,
    client: &ClientConfig,
    form: &Form,
    now: jiff::Timestamp,
) -> Result<TokenResponse, OAuthError> {
    let scopes = parse_scope(form.get("scope"))?;
    mint(
        served,
        Minting {
            client,
            grant: GrantType::ClientCredentials,
            scopes,
            sub: client.client_id.clone(),
            subject: None,
            now,
        },
    )
}
