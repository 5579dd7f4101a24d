//! RFC 8628 device authorization: `/v1/device/authorize` for the device, the `/v1/device`
//! page where a person enters the user code, signs in and approves.
//!
//! The device code's record (client, scopes, polling pace) and the person's decision are
//! two store entries, so a poll and an approval never overwrite each other; the decision is
//! taken once, atomically, by the poll that redeems it.

use std::time::{Duration, Instant};

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{Approval, Flow, Pending, Session, error_page, pages, random, sha256_b64};
use crate::api::{Endpoint, GrantType};
use crate::issuer::error::OAuthError;
use crate::issuer::form::Form;
use crate::issuer::protocol::{Decision, DeviceState, decision_key, parse_scope};
use crate::issuer::rate_limit::{Limit, RateLimiter, source_key};
use crate::issuer::{Incoming, Issuer, Served, client_auth};
use crate::store::CodeKind;

pub const DEVICE_CODE_TTL_SECS: i64 = 600;
pub const POLL_INTERVAL_SECS: i64 = 5;
/// Letters without vowels or look-alikes (RFC 8628 §6.1): 20^8 ≈ 2^34.6 codes.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Wrong user codes typed from one source address (IPv4, IPv6 /64), per replica.
pub const WRONG_CODES_PER_SOURCE: Limit = Limit::one_every(10, Duration::from_secs(6));
/// Wrong user codes typed on one server from anywhere, per replica: with N codes waiting,
/// a guess hits with probability N / 20^8, so at most 600 guesses in a code's 10 minutes
/// make a hit 1 in 43 million per waiting code.
pub const WRONG_CODES_PER_SERVER: Limit = Limit::one_every(60, Duration::from_secs(1));

/// Guessing limits of the code entry page. A wrong code names no device code, so there is
/// nothing to lock but the guessers: each source, and the server as a whole.
#[derive(Default)]
pub struct UserCodeLimits {
    by_source: RateLimiter,
    by_server: RateLimiter,
}

impl UserCodeLimits {
    /// `Err(seconds)` when a source, or everyone, has typed too many wrong codes lately.
    fn allows(&self, server: &str, source: &str, now: Instant) -> Result<(), u64> {
        self.by_source.allows(source, &WRONG_CODES_PER_SOURCE, now)?;
        self.by_server.allows(server, &WRONG_CODES_PER_SERVER, now)
    }

    fn wrong_code(&self, server: &str, source: &str, now: Instant) {
        self.by_source.charge(source, &WRONG_CODES_PER_SOURCE, now);
        self.by_server.charge(server, &WRONG_CODES_PER_SERVER, now);
    }
}

/// Eight letters, each uniform over the alphabet (bytes ≥ 240 are drawn again, so no letter
/// is likelier than another).
fn user_code() -> Result<String, OAuthError> {
    let n = USER_CODE_ALPHABET.len();
    let fair = 256 - 256 % n;
    let mut c = Vec::with_capacity(8);
    while c.len() < 8 {
        let mut b = [0u8; 16];
        aws_lc_rs::rand::fill(&mut b).map_err(|_| OAuthError::server_error("no randomness"))?;
        c.extend(
            b.iter().map(|x| usize::from(*x)).filter(|x| *x < fair).map(|x| char::from(USER_CODE_ALPHABET[x % n])),
        );
    }
    Ok(format!("{}-{}", c[..4].iter().collect::<String>(), c[4..8].iter().collect::<String>()))
}

/// `XXXX-XXXX` from what a person typed: case, spaces and dashes do not matter; a letter
/// outside the alphabet cannot be a code.
fn normalize(typed: &str) -> Option<String> {
    let c: String = typed.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect();
    let valid = c.len() == 8 && c.bytes().all(|b| USER_CODE_ALPHABET.contains(&b));
    valid.then(|| format!("{}-{}", &c[..4], &c[4..]))
}

#[derive(Serialize)]
struct DeviceResponse {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: String,
    expires_in: i64,
    interval: i64,
}

/// `POST /v1/device/authorize`.
pub async fn authorize(issuer: &Issuer, served: &Served, req: &Incoming) -> Response {
    match authorize_inner(issuer, served, req).await {
        Ok(r) => {
            let mut r = Json(r).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => e.into_response(),
    }
}

async fn authorize_inner(issuer: &Issuer, served: &Served, req: &Incoming) -> Result<DeviceResponse, OAuthError> {
    if served.config.suspended {
        return Err(OAuthError::temporarily_unavailable("this authorization server is suspended"));
    }
    let form = Form::parse(&req.headers, &req.body)?;
    let client = client_auth::authenticate(issuer, served, req, &form).await?;
    if !client.grant_types.contains(&GrantType::DeviceCode) {
        return Err(OAuthError::unauthorized_client("this client may not use the device authorization grant"));
    }
    if served.config.identity.is_none() {
        return Err(OAuthError::access_denied("this authorization server has no identity sources; nobody can sign in"));
    }
    let scopes = parse_scope(form.get("scope"))?;
    let now = req.now.as_second();
    let until = now + DEVICE_CODE_TTL_SECS;
    let device_code = random(32)?;
    let state =
        DeviceState { client_id: client.client_id.clone(), scopes, interval: POLL_INTERVAL_SECS, last_poll: 0, until };
    let value = serde_json::to_vec(&state).map_err(|_| OAuthError::server_error("device"))?;
    issuer.store.put_code(served.scope(), CodeKind::Device, &device_code, &value, until, now).await?;
    let mut code = user_code()?;
    let mut stored = false;
    for _ in 0..5 {
        if issuer.store.put_code(served.scope(), CodeKind::UserCode, &code, device_code.as_bytes(), until, now).await? {
            stored = true;
            break;
        }
        code = user_code()?;
    }
    if !stored {
        return Err(OAuthError::temporarily_unavailable("could not allocate a user code; retry"));
    }
    let verification_uri = served.endpoint(Endpoint::Device);
    Ok(DeviceResponse {
        verification_uri_complete: super::with_query(&verification_uri, &[("user_code", code.clone())]),
        device_code,
        user_code: code,
        verification_uri,
        expires_in: DEVICE_CODE_TTL_SECS,
        interval: POLL_INTERVAL_SECS,
    })
}

/// `GET /v1/device`: the code entry page.
pub fn page(served: &Served, form: &Form) -> Response {
    pages::device_entry(&served.endpoint(Endpoint::Device), form.get("user_code").unwrap_or_default(), None)
}

/// `POST /v1/device`: a user code typed; sign in (or use the session) and approve.
pub async fn submit(issuer: &Issuer, served: &Served, req: &Incoming, form: &Form) -> Response {
    let action = served.endpoint(Endpoint::Device);
    let typed = form.get("user_code").unwrap_or_default();
    let Some(code) = normalize(typed) else {
        return pages::device_entry(&action, typed, Some("That code is not valid. Check it and try again."));
    };
    let limits = &issuer.user_code_limits;
    let server = format!("{}/{}", served.config.namespace, served.config.name);
    let source = format!("{server}/{}", source_key(req.source));
    if let Err(wait) = limits.allows(&server, &source, req.at) {
        let mut r = pages::error(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "Too many wrong codes were typed. Wait a little and try again.",
        );
        r.headers_mut().insert(header::RETRY_AFTER, wait.into());
        return r;
    }
    let now = req.now.as_second();
    // The code is spent once typed, taken atomically: of browsers typing it at the same time
    // on any replicas, one goes on; nobody else can approve or deny it.
    let device_code = match issuer.store.take_code(served.scope(), CodeKind::UserCode, &code, now).await {
        Ok(Some(v)) => String::from_utf8(v).unwrap_or_default(),
        Ok(None) => {
            limits.wrong_code(&server, &source, req.at);
            return pages::device_entry(
                &action,
                typed,
                Some("That code is unknown or has expired. Check it and try again."),
            );
        }
        Err(e) => return error_page(&e.into()),
    };
    let state = match issuer.store.get_code(served.scope(), CodeKind::Device, &device_code, now).await {
        Ok(Some(v)) => serde_json::from_slice::<DeviceState>(&v).ok(),
        Ok(None) => None,
        Err(e) => return error_page(&e.into()),
    };
    let Some(state) = state else {
        return pages::device_entry(&action, typed, Some("That code has expired. Start again on your device."));
    };
    let result = async {
        let (browser, new_browser) = super::browser_id(&req.headers)?;
        let pending = Pending {
            client_id: state.client_id.clone(),
            scopes: state.scopes.clone(),
            flow: Flow::Device { device_code },
            prompt_login: false,
            prompt_consent: true,
            prompt_none: false,
            max_age: None,
            acr_values: Vec::new(),
            claims: Default::default(),
            csrf: random(24)?,
            browser: sha256_b64(&browser),
        };
        let mut r = super::authorize::begin(issuer, served, req, pending, None).await?;
        if new_browser {
            super::set_browser_cookie(served, &mut r, &browser);
        }
        Ok::<_, OAuthError>(r)
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

async fn decide(
    issuer: &Issuer,
    served: &Served,
    device_code: &str,
    d: &Decision,
    until: i64,
    now: i64,
) -> Result<(), OAuthError> {
    let value = serde_json::to_vec(d).map_err(|_| OAuthError::server_error("device"))?;
    let stored = issuer
        .store
        .put_code(served.scope(), CodeKind::DeviceDecision, &decision_key(device_code), &value, until, now)
        .await?;
    if stored { Ok(()) } else { Err(OAuthError::invalid_request("this device code was already answered")) }
}

/// Approves `device_code` at `now` for the person of `session`, with `scopes`.
pub async fn approve(
    issuer: &Issuer,
    served: &Served,
    device_code: &str,
    session: &Session,
    scopes: &[String],
    now: i64,
) -> Result<(), OAuthError> {
    let state = issuer
        .store
        .get_code(served.scope(), CodeKind::Device, device_code, now)
        .await?
        .and_then(|v| serde_json::from_slice::<DeviceState>(&v).ok())
        .ok_or_else(|| {
            OAuthError::new_code("expired_token", "the device code has expired; start again on the device")
        })?;
    let approval = Approval {
        client_id: state.client_id,
        scopes: scopes.to_vec(),
        user: session.user.clone(),
        auth_time: session.auth_time,
        nonce: None,
        redirect_uri: None,
        code_challenge: None,
        acr: None,
        claims: Default::default(),
        until: state.until,
    };
    tracing::info!(target: "tessera::audit", server = %served.config.name, sub = %session.user.sub, client = %approval.client_id, "device approved");
    decide(issuer, served, device_code, &Decision::Approved(Box::new(approval)), state.until, now).await
}

/// Denies `device_code` at `now`: its next poll answers `access_denied`.
pub async fn deny(issuer: &Issuer, served: &Served, device_code: &str, now: i64) -> Result<(), OAuthError> {
    decide(issuer, served, device_code, &Decision::Denied, now + DEVICE_CODE_TTL_SECS, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_two_groups_of_four_unambiguous_letters() {
        for _ in 0..100 {
            let c = user_code().unwrap();
            assert_eq!(c.len(), 9);
            assert!(c.chars().filter(|c| *c != '-').all(|c| USER_CODE_ALPHABET.contains(&(c as u8))));
            assert_eq!(normalize(&c.to_lowercase().replace('-', " ")), Some(c));
        }
        assert_eq!(normalize("BCDF-GHJ"), None);
        assert_eq!(normalize("BCDF-GHJA"), None, "a vowel is never in a code");
    }
}
