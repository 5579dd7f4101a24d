//! RFC 9068 access tokens with Okta's claims, and checking our own tokens.

use serde::Serialize;
use serde_json::{Map, Value};

use super::Served;
use crate::config::{ClientConfig, ServerConfig};
use crate::keys::jwt;
use crate::policy::Grant;

#[derive(Serialize, Debug)]
pub struct AccessTokenClaims {
    pub ver: u8,
    pub jti: String,
    pub iss: String,
    pub aud: Value,
    pub iat: i64,
    pub exp: i64,
    pub cid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub scp: Vec<String>,
    pub sub: String,
    pub client_id: String,
    #[serde(flatten)]
    pub custom: Map<String, Value>,
}

impl AccessTokenClaims {
    /// The claims of an access token for `grant` to `client`, issued at `now` (Unix seconds).
    pub fn new(
        config: &ServerConfig,
        client: &ClientConfig,
        grant: &Grant,
        sub: String,
        custom: Map<String, Value>,
        now: i64,
        jti: String,
    ) -> Self {
        Self {
            ver: 1,
            jti,
            iss: config.issuer.clone(),
            aud: audience_value(&config.audiences),
            iat: now,
            exp: now.saturating_add(i64::try_from(grant.access_token_lifetime_secs).unwrap_or(i64::MAX)),
            cid: client.client_id.clone(),
            uid: None,
            scp: grant.scopes.clone(),
            sub,
            client_id: client.client_id.clone(),
            custom,
        }
    }
}

/// `AT.` and 128 random bits, like Okta's token ids.
pub fn new_jti() -> Option<String> {
    super::browser::random(16).ok().map(|r| format!("AT.{r}"))
}

/// One audience as a string, several as an array.
fn audience_value(aud: &[String]) -> Value {
    match aud {
        [one] => Value::String(one.clone()),
        many => Value::Array(many.iter().cloned().map(Value::String).collect()),
    }
}

/// The claims of `token` if it is an unexpired access token this server signed.
pub fn verify_own(served: &Served, token: &str, now: i64) -> Option<Map<String, Value>> {
    let jwt = jwt::peek(token).ok()?;
    if jwt.header.get("typ").and_then(Value::as_str) != Some("at+jwt") {
        return None;
    }
    let kid = jwt.header.get("kid").and_then(Value::as_str)?;
    let ts = jiff::Timestamp::from_second(now).ok()?;
    let key = served.keys.public_jwk(kid, ts)?;
    let verified = jwt::verify(token, std::slice::from_ref(key)).ok()?;
    let aud = served.config.audiences.clone();
    let expect = jwt::Expectations { issuer: &served.config.issuer, audiences: &aud, now, leeway_secs: 0 };
    jwt::check_claims(&verified.claims, &expect).ok()?;
    Some(verified.claims)
}
