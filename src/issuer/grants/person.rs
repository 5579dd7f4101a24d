//! Tokens for a person: the access token, the ID token, the userinfo claims and the refresh
//! token of a family (rotated on every use; replaying an old one revokes the family).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::TokenResponse;
use super::{Minted, Minting, mint_access_token};
use crate::api::{GrantType, SigningAlgorithm, TokenKind};
use crate::config::ClientConfig;
use crate::config::standard_claims::{SCOPE_CLAIMS, scope_of};
use crate::issuer::acr;
use crate::issuer::claims_request::{ClaimAsk, ClaimsRequest};
use crate::issuer::error::OAuthError;
use crate::issuer::protocol::random;
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
    /// The `acr` of the family's first ID token, kept for the next ones.
    #[serde(default)]
    pub acr: Option<String>,
    /// The `claims` parameter of the sign-in: its ID-token claims come with every refresh.
    #[serde(default, skip_serializing_if = "ClaimsRequest::is_empty")]
    pub claims: ClaimsRequest,
}

/// The revocation-list entry that marks a whole family revoked.
pub fn family_marker(family: &str) -> String {
    format!("family:{family}")
}

/// Revokes a family for good: its store entry goes, and a revocation mark (checked before
/// every rotation) covers a family created after this call by a racing redemption.
pub async fn revoke_family(issuer: &Issuer, served: &Served, family: &str, now: i64) -> Result<(), OAuthError> {
    issuer.store.revoke(served.scope(), &family_marker(family), now + UNLIMITED_FAMILY_SECS, now).await?;
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
    /// `None`: the level the sign-in reached (see [`crate::issuer::acr`]).
    pub acr: Option<&'a str>,
    /// The `claims` parameter of the authorization request.
    pub claims: &'a ClaimsRequest,
    pub jti: Option<String>,
    pub refresh: Refresh<'a>,
    /// The request's clock.
    pub now: jiff::Timestamp,
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

/// Standard claim `name` of `user` (OpenID Connect Core §5.1), if the person has it.
pub fn person_claim(user: &UserInfo, name: &str) -> Option<Value> {
    match name {
        "sub" => Some(user.sub.clone().into()),
        "name" => user.name.clone().map(Value::from),
        "email" => user.email.clone().map(Value::from),
        "preferred_username" => Some(
            user.attributes
                .get("username")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| user.email.clone())
                .unwrap_or_else(|| user.sub.clone())
                .into(),
        ),
        _ => user.standard.claim(name),
    }
}

/// Standard claims the granted scopes release about a person (OpenID Connect Core §5.4).
fn scope_claims(user: &UserInfo, scopes: &[String], out: &mut Map<String, Value>) {
    for (scope, names) in SCOPE_CLAIMS {
        if !scopes.iter().any(|s| s == scope) {
            continue;
        }
        for name in names {
            if let Some(v) = person_claim(user, name) {
                out.insert((*name).into(), v);
            }
        }
    }
}

/// Claims asked for by name (the `claims` parameter, OpenID Connect Core §5.5) that `user`
/// has: a standard claim when the client is first-party or the scope that covers it was
/// granted (a third-party client's person was asked about scopes, not claims); an AuthClaim
/// of kind IdToken (in `custom`, its own `scopes` condition already applied). An essential
/// claim that is not released is left out, never an error (§5.5.1).
fn asked_claims(
    user: &UserInfo,
    asks: &BTreeMap<String, ClaimAsk>,
    scopes: &[String],
    trusted: bool,
    custom: &Map<String, Value>,
    out: &mut Map<String, Value>,
) {
    for name in asks.keys() {
        let standard = match scope_of(name) {
            Some(scope) if trusted || scopes.iter().any(|s| s == scope) => person_claim(user, name),
            _ => None,
        };
        if let Some(v) = standard.or_else(|| custom.get(name).cloned()) {
            out.entry(name.clone()).or_insert(v);
        }
    }
}

/// The ID token of a grant with `openid`, and what userinfo will answer for its access token.
async fn id_token(
    issuer: &Issuer,
    served: &Served,
    p: &Person<'_>,
    minted: &Minted,
    acr: &str,
    ts: jiff::Timestamp,
) -> Result<String, OAuthError> {
    let c = &served.config;
    let scopes = &minted.grant.scopes;
    let now = ts.as_second();
    // What userinfo will answer for this access token.
    let mut info = Map::new();
    info.insert("sub".into(), p.user.sub.clone().into());
    scope_claims(p.user, scopes, &mut info);
    let (custom, _) = served.engine.claims(TokenKind::IdToken, &minted.access_token_vars, scopes, true);
    info.extend(custom.clone());
    let trusted = p.client.trusted;
    asked_claims(p.user, &p.claims.userinfo, scopes, trusted, &custom, &mut info);
    let value = serde_json::to_vec(&info).map_err(|_| OAuthError::server_error("userinfo"))?;
    issuer.store.put_code(served.scope(), CodeKind::UserInfo, &minted.jti, &value, minted.exp, now).await?;

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
    claims.insert("acr".into(), acr.into());
    if let Some(n) = p.nonce {
        claims.insert("nonce".into(), n.into());
    }
    let alg = served.keys.signing_algorithm(ts).unwrap_or_default();
    claims.insert("at_hash".into(), at_hash(alg, &minted.response.access_token).into());
    // An access token is always issued with this ID token (code and device flows), so the
    // claims of profile, email, address and phone go to userinfo only (§5.4); AuthClaims
    // with alwaysInclude are the exception their admin asked for.
    let (always, errors) = served.engine.claims(TokenKind::IdToken, &minted.access_token_vars, scopes, false);
    for (claim, error) in errors {
        tracing::warn!(server = %c.name, client = %p.client.client_id, claim, error, "claim expression failed; claim omitted");
    }
    for (k, v) in always {
        claims.entry(k).or_insert(v);
    }
    asked_claims(p.user, &p.claims.id_token, scopes, trusted, &custom, &mut claims);
    let (id_token, _) = served.keys.sign_id_token(ts, &claims).map_err(|e| {
        tracing::error!(server = %c.name, error = %e, "cannot sign");
        OAuthError::temporarily_unavailable("no signing key is active")
    })?;
    Ok(id_token)
}

pub async fn mint_for_person(issuer: &Issuer, served: &Served, mut p: Person<'_>) -> Result<TokenResponse, OAuthError> {
    let m = Minting {
        client: p.client,
        grant: p.grant,
        scopes: p.scopes.take(),
        sub: p.user.sub.clone(),
        subject: None,
        now: p.now,
    };
    let mut minted = mint_access_token(served, m, Some(p.user), p.jti.take())?;
    let scopes = minted.grant.scopes.clone();
    let acr = p.acr.map_or_else(|| acr::acr_for(&p.user.amr, &[]), str::to_owned);
    let ts = p.now;
    let now = ts.as_second();

    if scopes.iter().any(|s| s == "openid") {
        minted.response.id_token = Some(id_token(issuer, served, &p, &minted, &acr, ts).await?);
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
                acr: Some(acr),
                claims: p.claims.clone(),
            };
            let lifetime = match minted.grant.refresh_token_lifetime_secs {
                0 => UNLIMITED_FAMILY_SECS,
                l => i64::try_from(l).unwrap_or(UNLIMITED_FAMILY_SECS),
            };
            let secret = new_refresh_secret(now)?;
            let bytes = serde_json::to_vec(&grant).map_err(|_| OAuthError::server_error("refresh"))?;
            let f = NewFamily { family, token: &secret, grant: &bytes, until: now + lifetime };
            issuer.store.create_family(served.scope(), f, now).await?;
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
    fn claims_asked_by_name_need_a_first_party_client_or_their_scope() {
        let user = UserInfo { sub: "static|a".into(), email: Some("a@example.com".into()), ..Default::default() };
        let asks: BTreeMap<String, ClaimAsk> =
            [("email".to_owned(), ClaimAsk::default()), ("team".to_owned(), ClaimAsk::default())].into();
        let custom: Map<String, Value> = [("team".to_owned(), Value::from("blue"))].into_iter().collect();
        let run = |scopes: &[&str], trusted: bool| {
            let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
            let mut out = Map::new();
            asked_claims(&user, &asks, &scopes, trusted, &custom, &mut out);
            out
        };
        assert_eq!(run(&["openid"], true).get("email"), Some(&Value::from("a@example.com")));
        let third_party = run(&["openid"], false);
        assert!(third_party.get("email").is_none(), "its person was never asked about email");
        assert_eq!(third_party["team"], "blue", "AuthClaims keep their own scopes condition");
        assert!(run(&["openid", "email"], false).contains_key("email"));
    }

    #[test]
    fn at_hash_is_the_left_half_of_the_digest() {
        // OpenID Connect Core example shape: 16 bytes of SHA-256 → 22 base64url characters.
        assert_eq!(at_hash(SigningAlgorithm::RS256, "x").len(), 22);
        assert_eq!(at_hash(SigningAlgorithm::EdDSA, "x").len(), 43);
    }
}
