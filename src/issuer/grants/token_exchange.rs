//! RFC 8693 token exchange: a JWT from a trusted issuer (a Kubernetes ServiceAccount token,
//! a CI provider's OIDC token, ...) becomes an access token of this server.

use serde_json::Value;

use super::request::{ACCESS_TOKEN_TYPE, TokenExchange};
use super::{Minting, TokenResponse, mint};
use crate::api::GrantType;
use crate::config::ClientConfig;
use crate::config::subjects::{SERVICE_ACCOUNT_PREFIX, exchanged_subject};
use crate::issuer::error::OAuthError;
use crate::issuer::trust::{KeySource, TrustError};
use crate::issuer::{Issuer, Served};
use crate::keys::jwt::{self, Alg, JwtError};

/// Algorithms accepted for subject tokens of trusted issuers.
const SUBJECT_ALGS: [Alg; 4] = [Alg::RS256, Alg::PS256, Alg::ES256, Alg::EdDSA];

fn subject_error(e: JwtError) -> OAuthError {
    OAuthError::invalid_grant(format!("subject_token is not acceptable: {e}"))
}

pub async fn token_exchange(
    issuer: &Issuer,
    served: &Served,
    client: &ClientConfig,
    request: TokenExchange<'_>,
    now: jiff::Timestamp,
) -> Result<TokenResponse, OAuthError> {
    let token = request.subject_token;
    for aud in &request.targets {
        if !served.config.audiences.iter().any(|a| a == aud) {
            return Err(OAuthError {
                code: "invalid_target",
                ..OAuthError::invalid_request("audience is not served here")
            });
        }
    }
    let peeked = jwt::peek(token).map_err(subject_error)?;
    let iss = peeked.claims.get("iss").and_then(Value::as_str).unwrap_or_default();
    let k8s = issuer.options.kubernetes_issuer.as_deref();
    let trusted = served
        .config
        .trusted_issuers
        .iter()
        .find(|t| t.issuer.as_deref() == Some(iss) || (t.kubernetes && k8s == Some(iss)));
    let Some(trusted) = trusted else {
        return Err(OAuthError::invalid_grant("subject_token issuer is not trusted by this server"));
    };
    let source = if trusted.kubernetes {
        issuer.kubernetes_keys(iss)
    } else {
        KeySource::Issuer { issuer: iss, jwks_uri: trusted.jwks_uri.as_deref() }
    };
    let rules = jwt::Rules {
        algorithms: &SUBJECT_ALGS,
        typ: None,
        issuer: iss,
        audiences: Some(&trusted.audiences),
        clock: Some(jwt::Clock { now: now.as_second(), leeway_secs: 30 }),
    };
    let verified = issuer.trust.verify(token, source, &rules, crate::issuer::trust::TOKEN_PATH_WAIT).await.map_err(
        |e| match e {
            TrustError::Jwt(j) => subject_error(j),
            TrustError::Fetch(_) => OAuthError::temporarily_unavailable(
                "keys of the subject_token issuer are not available (yet); try again",
            ),
        },
    )?;
    let sub = verified
        .claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| OAuthError::invalid_grant("subject_token has no sub"))?;
    let sub = exchanged_sub(trusted.kubernetes, iss, sub)?;
    let scopes = request.scope;
    let mut resp = mint(
        served,
        Minting { client, grant: GrantType::TokenExchange, scopes, sub, subject: Some(verified.claims), now },
    )?;
    resp.issued_token_type = Some(ACCESS_TOKEN_TYPE);
    Ok(resp)
}

/// The `sub` of the exchanged token: a ServiceAccount keeps the API server's own form, any
/// other subject carries its issuer, so no trusted issuer can mint another's (or a client's)
/// subject (docs/security.md, "Client ids and subjects").
fn exchanged_sub(kubernetes: bool, iss: &str, sub: &str) -> Result<String, OAuthError> {
    if !kubernetes {
        return Ok(exchanged_subject(iss, sub));
    }
    if sub.strip_prefix(SERVICE_ACCOUNT_PREFIX).is_none_or(|rest| rest.split(':').count() != 2) {
        return Err(OAuthError::invalid_grant("subject_token of the Kubernetes issuer is not a ServiceAccount token"));
    }
    Ok(sub.to_owned())
}
