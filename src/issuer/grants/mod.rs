//! One handler per grant type, sharing the policy decision and the minting of the token.

mod authorization_code;
mod client_credentials;
mod device_code;
mod person;
mod refresh_token;
mod request;
mod token_exchange;

pub use authorization_code::authorization_code;
pub use client_credentials::client_credentials;
pub use device_code::device_code;
pub use person::{FamilyGrant, parse_refresh_token, revoke_family};
pub use refresh_token::refresh_token;
pub use request::GrantRequest;
pub use token_exchange::token_exchange;

use serde::Serialize;
use serde_json::{Map, Value};

use super::Served;
use super::access_token::{AccessTokenClaims, new_jti};
use super::error::OAuthError;
pub use super::protocol::parse_scope;
use crate::api::{GrantType, TokenKind};
use crate::config::ClientConfig;
use crate::policy::{CelVariables, Denial, Grant, TokenRequest, UserInfo};

/// The token endpoint's answer to a granted request.
#[derive(Serialize, Debug)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// What a grant asks for once its own checks passed.
pub struct Minting<'a> {
    pub client: &'a ClientConfig,
    pub grant: GrantType,
    pub scopes: Option<Vec<String>>,
    pub sub: String,
    pub subject: Option<Map<String, Value>>,
    /// The request's clock.
    pub now: jiff::Timestamp,
}

/// An access token signed for a decided grant.
pub struct Minted {
    pub response: TokenResponse,
    pub grant: Grant,
    pub jti: String,
    pub exp: i64,
    pub access_token_vars: CelVariables,
}

/// Decides by policy, evaluates claims, signs, and writes the audit line.
pub fn mint(served: &Served, m: Minting<'_>) -> Result<TokenResponse, OAuthError> {
    mint_access_token(served, m, None, None).map(|x| x.response)
}

fn denial(decision: &crate::policy::PolicyDecision, d: Denial) -> OAuthError {
    match d {
        Denial::InvalidScope => OAuthError::invalid_scope(decision.denial_description()),
        Denial::AccessDenied => OAuthError::access_denied(decision.denial_description()),
        Denial::TooLarge(_) => OAuthError::invalid_request(decision.denial_description()),
    }
}

fn mint_access_token(
    served: &Served,
    m: Minting<'_>,
    user: Option<&UserInfo>,
    jti: Option<String>,
) -> Result<Minted, OAuthError> {
    let c = &served.config;
    let audience = c.audiences.clone();
    let request = TokenRequest {
        client: m.client,
        grant_type: m.grant,
        scopes: m.scopes,
        user,
        subject: m.subject.as_ref(),
        audience: audience.clone(),
    };
    let (decision, vars) = served.engine.decide_with_variables(c, &request);
    let grant = match decision.outcome {
        Ok(ref g) => g.clone(),
        Err(d) => return Err(denial(&decision, d)),
    };
    let (custom, errors) = served.engine.claims(TokenKind::AccessToken, &vars, &grant.scopes, true);
    for (claim, error) in errors {
        tracing::warn!(server = %c.name, client = %m.client.client_id, claim, error, "claim expression failed; claim omitted");
    }
    let ts = m.now;
    let now = ts.as_second();
    let lifetime = grant.access_token_lifetime_secs;
    let jti = match jti {
        Some(j) => j,
        None => new_jti().ok_or_else(|| OAuthError::server_error("could not generate a token id"))?,
    };
    let mut claims = AccessTokenClaims::new(c, m.client, &grant, m.sub, custom, now, jti);
    if let Some(u) = user {
        claims.uid = Some(u.sub.clone());
    }
    let (token, kid) = served.keys.sign_access_token(ts, &claims).map_err(|e| {
        OAuthError::temporarily_unavailable("no signing key is active")
            .with_detail(format!("server {}/{} cannot sign: {e}", c.namespace, c.name))
    })?;
    tracing::info!(
        target: "tessera::audit",
        server = %format_args!("{}/{}", c.namespace, c.name),
        client = %m.client.client_id,
        grant = m.grant.as_str(),
        scopes = %grant.scopes.join(" "),
        policy = %grant.policy,
        rule = %grant.rule,
        sub = %user.map(|u| u.sub.as_str()).unwrap_or(""),
        kid,
        jti = %claims.jti,
        "token issued"
    );
    Ok(Minted {
        response: TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: lifetime,
            scope: grant.scopes.join(" "),
            issued_token_type: None,
            id_token: None,
            refresh_token: None,
        },
        grant,
        jti: claims.jti,
        exp: claims.exp,
        access_token_vars: vars,
    })
}
