//! `client_credentials`: the client acts for itself; `sub` is its client id.

use super::request::ClientCredentials;
use super::{Minting, TokenResponse, mint};
use crate::api::GrantType;
use crate::config::ClientConfig;
use crate::issuer::Served;
use crate::issuer::error::OAuthError;

pub fn client_credentials(
    served: &Served,
    client: &ClientConfig,
    request: ClientCredentials,
    now: jiff::Timestamp,
) -> Result<TokenResponse, OAuthError> {
    mint(
        served,
        Minting {
            client,
            grant: GrantType::ClientCredentials,
            scopes: request.scope,
            sub: client.client_id.clone(),
            subject: None,
            now,
        },
    )
}
