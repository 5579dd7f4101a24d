//! RFC 9068 access tokens with Okta's claims, and checking our own tokens.

use std::cell::RefCell;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
    /// RFC 9068 §2.2.3: the granted scopes, space-separated (`scp` is Okta's array).
    pub scope: String,
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
            scope: grant.scopes.join(" "),
            sub,
            client_id: client.client_id.clone(),
            custom,
        }
    }
}

/// Token ids drawn from aws-lc's generator at once, per thread: each draw has a fixed cost
/// (~0.4 µs, a good part of a token's own work besides signing), the bytes are the same.
const JTI_BATCH: usize = 64;

thread_local! {
    static JTI_POOL: RefCell<([u8; 16 * JTI_BATCH], usize)> = const { RefCell::new(([0; 16 * JTI_BATCH], 16 * JTI_BATCH)) };
}

/// `AT.` and 128 random bits, like Okta's token ids. Each id's bits are handed out once and
/// then zeroed.
pub fn new_jti() -> Option<String> {
    JTI_POOL.with_borrow_mut(|(pool, used)| {
        if *used == pool.len() {
            aws_lc_rs::rand::fill(pool).ok()?;
            *used = 0;
        }
        let bits = &mut pool[*used..*used + 16];
        let mut jti = String::with_capacity(3 + 22);
        jti.push_str("AT.");
        URL_SAFE_NO_PAD.encode_string(&*bits, &mut jti);
        bits.fill(0);
        *used += 16;
        Some(jti)
    })
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
    let kid = jwt::peek(token).ok()?.header.kid?;
    let ts = jiff::Timestamp::from_second(now).ok()?;
    let key = served.keys.public_jwk(&kid, ts)?;
    let rules = jwt::Rules {
        algorithms: jwt::OWN_ALGS,
        typ: Some("at+jwt"),
        issuer: &served.config.issuer,
        audiences: Some(&served.config.audiences),
        clock: Some(jwt::Clock { now, leeway_secs: 0 }),
    };
    jwt::verify(token, std::slice::from_ref(key), &rules).ok().map(|v| v.claims)
}
