//! What each grant reads from a token request. The parameters a grant accepts are the fields
//! of its request, parsed and checked for form before the grant touches any state; a
//! parameter no grant names is ignored (RFC 6749 §3.2). Client authentication reads its own
//! parameters (`client_auth`), and `grant_type` chose the grant.

use super::parse_scope;
use crate::api::GrantType;
use crate::issuer::error::OAuthError;
use crate::issuer::form::Form;

/// The token types a subject token may be: all are JWTs here.
const JWT_TYPES: [&str; 3] = [
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:access_token",
];

/// The one token type token exchange issues.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A token request, typed by its grant.
#[derive(Debug, PartialEq, Eq)]
pub enum GrantRequest<'f> {
    ClientCredentials(ClientCredentials),
    AuthorizationCode(AuthorizationCode<'f>),
    RefreshToken(RefreshToken<'f>),
    DeviceCode(DeviceCode<'f>),
    TokenExchange(TokenExchange<'f>),
}

/// `client_credentials` (RFC 6749 §4.4.2).
#[derive(Debug, PartialEq, Eq)]
pub struct ClientCredentials {
    pub scope: Option<Vec<String>>,
}

/// `authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.5). The verifier's form is checked with
/// the code, once the code is spent, so a wrong guess cannot be retried.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthorizationCode<'f> {
    pub code: &'f str,
    pub redirect_uri: Option<&'f str>,
    pub code_verifier: Option<&'f str>,
}

/// `refresh_token` (RFC 6749 §6): `scope` may only narrow the original grant.
#[derive(Debug, PartialEq, Eq)]
pub struct RefreshToken<'f> {
    pub refresh_token: &'f str,
    pub scope: Option<Vec<String>>,
}

/// `urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4).
#[derive(Debug, PartialEq, Eq)]
pub struct DeviceCode<'f> {
    pub device_code: &'f str,
}

/// `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693 §2.1), for a JWT subject
/// token, without an actor, issuing an access token.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenExchange<'f> {
    pub subject_token: &'f str,
    /// `audience` and `resource`, each at most once: the server must serve every one.
    pub targets: Vec<&'f str>,
    pub scope: Option<Vec<String>>,
}

impl<'f> GrantRequest<'f> {
    /// The request of `grant` in `form`, or the `invalid_request` (`invalid_scope`) that names
    /// what is missing or malformed.
    pub fn parse(grant: GrantType, form: &'f Form) -> Result<Self, OAuthError> {
        let scope = || parse_scope(form.get("scope"));
        Ok(match grant {
            GrantType::ClientCredentials => Self::ClientCredentials(ClientCredentials { scope: scope()? }),
            GrantType::AuthorizationCode => Self::AuthorizationCode(AuthorizationCode {
                code: form.require("code")?,
                redirect_uri: form.get("redirect_uri"),
                code_verifier: form.get("code_verifier"),
            }),
            GrantType::RefreshToken => {
                Self::RefreshToken(RefreshToken { refresh_token: form.require("refresh_token")?, scope: scope()? })
            }
            GrantType::DeviceCode => Self::DeviceCode(DeviceCode { device_code: form.require("device_code")? }),
            GrantType::TokenExchange => Self::TokenExchange(token_exchange(form)?),
        })
    }
}

fn token_exchange(form: &Form) -> Result<TokenExchange<'_>, OAuthError> {
    let subject_token = form.require("subject_token")?;
    if !JWT_TYPES.contains(&form.require("subject_token_type")?) {
        return Err(OAuthError::invalid_request("subject_token_type must be a JWT token type"));
    }
    if form.get("actor_token").is_some() {
        return Err(OAuthError::invalid_request("actor_token is not supported"));
    }
    if form.get("requested_token_type").is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
        return Err(OAuthError::invalid_request("only access tokens can be requested"));
    }
    let targets = ["audience", "resource"].into_iter().filter_map(|p| form.get(p)).collect();
    Ok(TokenExchange { subject_token, targets, scope: parse_scope(form.get("scope"))? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Form {
        Form::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn refused(grant: GrantType, pairs: &[(&str, &str)]) -> OAuthError {
        GrantRequest::parse(grant, &form(pairs)).expect_err("the request must be refused")
    }

    #[test]
    fn each_grant_reads_its_own_parameters_and_ignores_the_rest() {
        let f = form(&[
            ("code", "c"),
            ("redirect_uri", "https://app.example/cb"),
            ("code_verifier", "v"),
            ("refresh_token", "r"),
            ("scope", "openid openid profile"),
            ("unknown", "x"),
        ]);
        assert_eq!(
            GrantRequest::parse(GrantType::AuthorizationCode, &f).unwrap(),
            GrantRequest::AuthorizationCode(AuthorizationCode {
                code: "c",
                redirect_uri: Some("https://app.example/cb"),
                code_verifier: Some("v"),
            })
        );
        assert_eq!(
            GrantRequest::parse(GrantType::RefreshToken, &f).unwrap(),
            GrantRequest::RefreshToken(RefreshToken {
                refresh_token: "r",
                scope: Some(vec!["openid".into(), "profile".into()]),
            })
        );
        assert_eq!(
            GrantRequest::parse(GrantType::ClientCredentials, &f).unwrap(),
            GrantRequest::ClientCredentials(ClientCredentials { scope: Some(vec!["openid".into(), "profile".into()]) })
        );
    }

    #[test]
    fn a_missing_or_empty_required_parameter_is_named() {
        for (grant, name) in [
            (GrantType::AuthorizationCode, "code"),
            (GrantType::RefreshToken, "refresh_token"),
            (GrantType::DeviceCode, "device_code"),
            (GrantType::TokenExchange, "subject_token"),
        ] {
            for pairs in [&[][..], &[(name, "")][..]] {
                let e = refused(grant, pairs);
                assert_eq!(
                    (e.code, e.description.as_ref()),
                    ("invalid_request", &*format!("parameter {name} is required"))
                );
            }
        }
    }

    #[test]
    fn a_malformed_scope_is_refused_before_any_grant_runs() {
        for grant in [GrantType::ClientCredentials, GrantType::RefreshToken, GrantType::TokenExchange] {
            let pairs = [
                ("refresh_token", "r"),
                ("subject_token", "t"),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "a\"b"),
            ];
            assert_eq!(refused(grant, &pairs).code, "invalid_scope", "{grant:?}");
        }
    }

    #[test]
    fn token_exchange_takes_a_jwt_subject_without_an_actor_for_an_access_token() {
        let base = [("subject_token", "t"), ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt")];
        let with = |extra: &[(&'static str, &'static str)]| [&base[..], extra].concat();
        let refusal = |pairs: &[(&str, &str)]| refused(GrantType::TokenExchange, pairs).description.into_owned();
        assert_eq!(
            refusal(&[("subject_token", "t"), ("subject_token_type", "urn:ietf:params:oauth:token-type:saml2")]),
            "subject_token_type must be a JWT token type"
        );
        assert_eq!(refusal(&with(&[("actor_token", "a")])), "actor_token is not supported");
        assert_eq!(
            refusal(&with(&[("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token")])),
            "only access tokens can be requested"
        );
        let f = form(&with(&[
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("audience", "api://orders"),
            ("resource", "https://orders.example"),
        ]));
        assert_eq!(
            GrantRequest::parse(GrantType::TokenExchange, &f).unwrap(),
            GrantRequest::TokenExchange(TokenExchange {
                subject_token: "t",
                targets: vec!["api://orders", "https://orders.example"],
                scope: None,
            })
        );
    }
}
