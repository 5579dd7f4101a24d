//! Tokens for a person: the access token, the ID token, the userinfo claims and the refresh
//! token of a family (rotated on every use; replaying an old one revokes the family).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Minting, mint_access_token};
use crate::api::{GrantType, SigningAlgorithm, TokenKind};
use crate::config::ClientConfig;
use crate::issuer::browser::random;
use crate::issuer::error::OAuthError;
use crate::issuer::token::TokenResponse;
use crate::issuer::{Issuer, Served};
use crate::policy::UserInfo;
use crate::store::{CodeKind, NewFamily};

/// A family with an unlimited lifetime (0) still ends: 5 years, bounded by its idle timeout in use.
const UNLIMITED_FAMILY_SECS: i64 = 5 * 365 * 24 * 3600;

/// What a refresh-token family carries from one token to the next.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct FamilyGrant {
    pub client_id: String,
    /// The grant that started the family; policies are evaluated as for it.
    pub grant_type: GrantType,
    pub scopes: Vec<String>,
    pub user: UserInfo,
    pub auth_time: i64,
    pub idle_timeout_secs: u64,
}

/// The revocation-list entry that marks a whole family revoked.
pub fn family_marker(family: &str) -> String {
    format!("family:{family}")
}

/// Revokes a family for good: its store entry goes, and a revocation mark (checked before
/// every rotation) covers a family created after this call by a racing redemption.
pub async fn revoke_family(issuer: &Issuer, served: &Served, family: &str, now: i64) -> Result<(), OAuthError> {
    issuer.store.revoke(served.scope(), &family_marker(family), now + UNLIMITED_FAMILY_SECS).await?;
    issuer.store.revoke_family(served.scope(), family).await?;
    Ok(())
}

/// `<family>.<secret>`, where the secret ends in its issue time: `<random>-<unix seconds>`.
pub fn refresh_token_string(family: &str, secret: &str) -> String {
    format!("{family}.{secret}")
}

pub fn new_refresh_secret(now: i64) -> Result<String, OAuthError> {
    Ok(format!("{}-{now}", random(32)?))
}

/// (family, secret, issued at) of a refresh token we issued; `None` for anything else.
pub fn parse_refresh_token(token: &str) -> Option<(&str, &str, i64)> {
    let (family, secret) = token.split_once('.')?;
    let (_, iat) = secret.rsplit_once('-')?;
    let ok = |s: &str| {
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !ok(family) || secret.len() > 80 || !ok(secret) {
        return None;
    }
    Some((family, secret, iat.parse().ok()?))
}

/// How the refresh token of a response comes about (issued only with `offline_access` to a
/// client that may use the refresh_token grant).
pub enum Refresh<'a> {
    /// A new family with this id.
    New(&'a str),
    /// The family rotated; this secret is its current token.
    Rotated { family: &'a str, secret: &'a str },
}

pub struct Person<'a> {
    pub client: &'a ClientConfig,
    pub grant: GrantType,
    pub scopes: Option<Vec<String>>,
    pub user: &'a UserInfo,
    pub auth_time: i64,
    pub nonce: Option<&'a str>,
    pub jti: Option<String>,
    pub refresh: Refresh<'a>,
}

/// `at_hash`: left half of the hash of the access token, with the ID token's algorithm's hash.
fn at_hash(alg: SigningAlgorithm, access_token: &str) -> String {
    let digest = match alg {
        SigningAlgorithm::EdDSA => aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, access_token.as_bytes()),
        _ => aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes()),
    };
    let d = digest.as_ref();
    URL_SAFE_NO_PAD.encode(&d[..d.len() / 2])
}

/// Standard claims a scope releases about a person (OpenID Connect Core §5.4).
fn standard_claims(user: &UserInfo, scopes: &[String], out: &mut Map<String, Value>) {
    if scopes.iter().any(|s| s == "profile") {
        if let Some(n) = &user.name {
            out.insert("name".into(), n.clone().into());
        }
        let preferred = user
            .attributes
            .get("username")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| user.email.clone())
            .unwrap_or_else(|| user.sub.clone());
        out.insert("preferred_username".into(), preferred.into());
    }
    if scopes.iter().any(|s| s == "email")
        && let Some(e) = &user.email
    {
        out.insert("email".into(), e.clone().into());
    }
}

pub async fn mint_for_person(issuer: &Issuer, served: &Served, p: Person<'_>) -> Result<TokenResponse, OAuthError> {
    let c = &served.config;
    let m = Minting { client: p.client, grant: p.grant, scopes: p.scopes, sub: p.user.sub.clone(), subject: None };
    let mut minted = mint_access_token(served, m, Some(p.user), p.jti)?;
    let scopes = minted.grant.scopes.clone();
    let ts = jiff::Timestamp::now();
    let now = ts.as_second();

    // What userinfo will answer for this access token.
    let openid = scopes.iter().any(|s| s == "openid");
    if openid {
        let mut info = Map::new();
        info.insert("sub".into(), p.user.sub.clone().into());
        standard_claims(p.user, &scopes, &mut info);
        let (custom, _) = served.engine.claims(TokenKind::IdToken, &minted.access_token_vars, &scopes, true);
        info.extend(custom);
        let value = serde_json::to_vec(&info).map_err(|_| OAuthError::server_error("userinfo"))?;
        issuer.store.put_code(served.scope(), CodeKind::UserInfo, &minted.jti, &value, minted.exp).await?;

        let lifetime = i64::try_from(minted.grant.id_token_lifetime_secs).unwrap_or(3600);
        let mut claims = Map::new();
        claims.insert("iss".into(), c.issuer.clone().into());
        claims.insert("sub".into(), p.user.sub.clone().into());
        claims.insert("aud".into(), p.client.client_id.clone().into());
        claims.insert("azp".into(), p.client.client_id.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + lifetime).into());
        claims.insert("auth_time".into(), p.auth_time.into());
        claims.insert("amr".into(), p.user.amr.clone().into());
        if let Some(n) = p.nonce {
            claims.insert("nonce".into(), n.into());
        }
        let alg = served.keys.signing_algorithm(ts).unwrap_or_default();
        claims.insert("at_hash".into(), at_hash(alg, &minted.response.access_token).into());
        claims.insert("ver".into(), 1.into());
        claims.insert("jti".into(), format!("ID.{}", random(16)?).into());
        standard_claims(p.user, &scopes, &mut claims);
        let (custom, errors) = served.engine.claims(TokenKind::IdToken, &minted.access_token_vars, &scopes, false);
        for (claim, error) in errors {
            tracing::warn!(server = %c.name, client = %p.client.client_id, claim, error, "claim expression failed; claim omitted");
        }
        for (k, v) in custom {
            claims.entry(k).or_insert(v);
        }
        let (id_token, _) = served.keys.sign_id_token(ts, &claims).map_err(|e| {
            tracing::error!(server = %c.name, error = %e, "cannot sign");
            OAuthError::temporarily_unavailable("no signing key is active")
        })?;
        minted.response.id_token = Some(id_token);
    }

    let wants_refresh =
        scopes.iter().any(|s| s == "offline_access") && p.client.grant_types.contains(&GrantType::RefreshToken);
    minted.response.refresh_token = match p.refresh {
        _ if !wants_refresh => None,
        Refresh::Rotated { family, secret } => Some(refresh_token_string(family, secret)),
        Refresh::New(family) => {
            let grant = FamilyGrant {
                client_id: p.client.client_id.clone(),
                grant_type: p.grant,
                scopes: scopes.clone(),
                user: p.user.clone(),
                auth_time: p.auth_time,
                idle_timeout_secs: minted.grant.refresh_token_idle_timeout_secs,
            };
            let lifetime = match minted.grant.refresh_token_lifetime_secs {
                0 => UNLIMITED_FAMILY_SECS,
                l => i64::try_from(l).unwrap_or(UNLIMITED_FAMILY_SECS),
            };
            let secret = new_refresh_secret(now)?;
            let bytes = serde_json::to_vec(&grant).map_err(|_| OAuthError::server_error("refresh"))?;
            let f = NewFamily { family, token: &secret, grant: &bytes, until: now + lifetime };
            issuer.store.create_family(served.scope(), f).await?;
            Some(refresh_token_string(family, &secret))
        }
    };
    Ok(minted.response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_parse_back() {
        let secret = new_refresh_secret(1_700_000_000).unwrap();
        let t = refresh_token_string("fam_1", &secret);
        assert_eq!(parse_refresh_token(&t), Some(("fam_1", secret.as_str(), 1_700_000_000)));
        for bad in ["", "abc", "a.b", "a.b-x", "a.b c-1", "eyJ.eyJ.sig"] {
            assert_eq!(parse_refresh_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn at_hash_is_the_left_half_of_the_digest() {
        // OpenID Connect Core example shape: 16 bytes of SHA-256 → 22 base64url characters.
        assert_eq!(at_hash(SigningAlgorithm::RS256, "x").len(), 22);
        assert_eq!(at_hash(SigningAlgorithm::EdDSA, "x").len(), 43);
    }
}
