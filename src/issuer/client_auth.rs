//! Client authentication, the step before any grant logic: client_secret_basic,
//! client_secret_post, private_key_jwt, a Kubernetes ServiceAccount token as RFC 7523
//! client assertion, or none for public clients.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::error::OAuthError;
use super::form::Form;
use super::rate_limit::{Limit, RateLimiter, source_key};
use super::{Incoming, Issuer, Served};
use crate::api::{AuthMethod, Endpoint};
use crate::config::ClientConfig;
use crate::keys::jwt::{self, Alg, JwtError};

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Algorithms accepted for private_key_jwt client assertions (never `none`, never HMAC).
pub const ASSERTION_ALGS: [Alg; 4] = [Alg::RS256, Alg::PS256, Alg::ES256, Alg::EdDSA];
/// Algorithms the Kubernetes API server signs ServiceAccount tokens with.
const SERVICE_ACCOUNT_ALGS: [Alg; 2] = [Alg::RS256, Alg::ES256];
/// Longest lifetime of a private_key_jwt assertion we accept (bounds the replay cache).
const MAX_ASSERTION_LIFETIME: i64 = 3600;
const LEEWAY: i64 = 30;

/// Credentials as presented, before they are checked.
pub enum Presented {
    /// `also` is the secret as sent in the Basic header before form-decoding, when that differs:
    /// many clients (curl -u) do not form-encode it as RFC 6749 §2.3.1 asks.
    Secret {
        secret: String,
        also: Option<String>,
        basic: bool,
    },
    Assertion(String),
    None,
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Secret { basic: true, .. } => "client_secret_basic",
            Self::Secret { basic: false, .. } => "client_secret_post",
            Self::Assertion(_) => "client_assertion",
            Self::None => "none",
        })
    }
}

/// Failed client authentications from one source address (IPv4, IPv6 /64), any client:
/// once spent, the source is refused before its credentials are looked at.
pub const FAILURES_PER_SOURCE: Limit = Limit::one_every(20, Duration::from_secs(1));
/// Failed authentications of one registered client, from any source: once spent, the client
/// is only heard from sources without failures of their own in the last minutes.
pub const FAILURES_PER_CLIENT: Limit = Limit::one_every(100, Duration::from_millis(100));

/// Failed client authentications, counted apart from the clients' own rate limits, so that
/// nobody can spend another client's budget by naming it.
#[derive(Default)]
pub struct AuthFailures {
    by_source: RateLimiter,
    /// Keyed by registered clients only (an unknown id has nothing to protect), so bounded
    /// by the configs served.
    by_client: RateLimiter,
}

fn too_many(wait: u64) -> OAuthError {
    OAuthError::too_many_failures(wait, "too many failed client authentications; retry later")
}

/// Client authentication with its failure limits: the step before any grant or endpoint
/// logic. The client's own rate limit (`spec.rateLimit`) is for its caller to take after this.
pub async fn authenticate<'a>(
    issuer: &Issuer,
    served: &'a Served,
    req: &Incoming,
    form: &Form,
) -> Result<&'a ClientConfig, OAuthError> {
    let failures = &issuer.auth_failures;
    let now = req.at;
    let server = format!("{}/{}", served.config.namespace, served.config.name);
    let source = format!("{server}/{}", source_key(req.source));
    // Checked first and cheaply: a source that keeps failing costs no verification at all.
    failures.by_source.allows(&source, &FAILURES_PER_SOURCE, now).map_err(too_many)?;
    let (client, presented) = match identify(served, &req.headers, form) {
        Ok(found) => found,
        Err(e) => {
            failures.by_source.charge(&source, &FAILURES_PER_SOURCE, now);
            return Err(e);
        }
    };
    let client_key = format!("{server}/{}", client.client_id);
    if let Err(wait) = failures.by_client.allows(&client_key, &FAILURES_PER_CLIENT, now)
        && !failures.by_source.is_full(&source, now)
    {
        // Guessed at from many sources: those that failed lately wait; the client's own
        // requests, from sources that do not fail, are still verified.
        return Err(too_many(wait));
    }
    match verify(issuer, served, client, &presented, req.now.as_second()).await {
        Ok(()) => Ok(client),
        Err(e) => {
            if matches!(e.code, "invalid_client" | "invalid_request") {
                failures.by_source.charge(&source, &FAILURES_PER_SOURCE, now);
                failures.by_client.charge(&client_key, &FAILURES_PER_CLIENT, now);
            }
            Err(e)
        }
    }
}

fn failed() -> OAuthError {
    OAuthError::invalid_client("client authentication failed")
}

/// Form-decodes one value (`+` is a space, `%XX` a byte); `&` and `=` are kept as they are.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains(['%', '+']) {
        return Some(s.to_owned());
    }
    let escaped = s.replace('&', "%26").replace('=', "%3D");
    form_urlencoded::parse(format!("x={escaped}").as_bytes()).next().map(|(_, v)| v.into_owned())
}

/// The client id, the form-decoded secret and, when decoding changed it, the secret as sent, of
/// an `Authorization: Basic` header (RFC 6749 §2.3.1). Any other scheme fails.
pub(crate) fn parse_basic(value: &str) -> Result<(String, String, Option<String>), OAuthError> {
    let encoded =
        value.get(..6).filter(|p| p.eq_ignore_ascii_case("basic ")).map(|_| &value[6..]).ok_or_else(failed)?;
    let raw = STANDARD.decode(encoded.trim()).map_err(|_| failed())?;
    let raw = String::from_utf8(raw).map_err(|_| failed())?;
    let (id, secret) = raw.split_once(':').ok_or_else(failed)?;
    let decoded = percent_decode(secret).ok_or_else(failed)?;
    let also = (decoded != secret).then(|| secret.to_owned());
    Ok((percent_decode(id).ok_or_else(failed)?, decoded, also))
}

/// Finds which client the request claims to be and how it authenticates.
fn identify<'a>(
    served: &'a Served,
    headers: &HeaderMap,
    form: &Form,
) -> Result<(&'a ClientConfig, Presented), OAuthError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(v) => Some(parse_basic(v.to_str().map_err(|_| failed())?)?),
        None => None,
    };
    let assertion = match (form.get("client_assertion_type"), form.get("client_assertion")) {
        (Some(ASSERTION_TYPE), Some(a)) => Some(a),
        (None, None) => None,
        _ => return Err(OAuthError::invalid_client("unsupported client_assertion_type")),
    };
    let post_secret = form.get("client_secret");
    let presented = [basic.is_some(), assertion.is_some(), post_secret.is_some()].iter().filter(|b| **b).count();
    if presented > 1 {
        return Err(OAuthError::invalid_request("use exactly one client authentication method"));
    }
    let form_id = form.get("client_id");
    let (client_id, credential) = if let Some((id, secret, also)) = basic {
        if form_id.is_some_and(|f| f != id) {
            return Err(OAuthError::invalid_request("client_id does not match the Authorization header"));
        }
        (id, Presented::Secret { secret, also, basic: true })
    } else if let Some(assertion) = assertion {
        let peeked = jwt::peek(assertion).map_err(|_| failed())?;
        let sub = peeked.claims.get("sub").and_then(Value::as_str).unwrap_or_default();
        let id = match form_id {
            Some(id) => id.to_owned(),
            None => match served
                .config
                .clients
                .iter()
                .find(|c| c.service_account.as_ref().is_some_and(|sa| sa.subject() == sub))
            {
                Some(c) => c.client_id.clone(),
                None => sub.to_owned(),
            },
        };
        (id, Presented::Assertion(assertion.to_owned()))
    } else if let Some(secret) = post_secret {
        let id = form_id.ok_or_else(|| OAuthError::invalid_request("client_id is required with client_secret"))?;
        (id.to_owned(), Presented::Secret { secret: secret.to_owned(), also: None, basic: false })
    } else {
        let id = form_id.ok_or_else(failed)?;
        (id.to_owned(), Presented::None)
    };
    let client = served.config.client(&client_id).ok_or_else(failed)?;
    Ok((client, credential))
}

/// Checks the presented credentials against the client's registered method.
async fn verify(
    issuer: &Issuer,
    served: &Served,
    client: &ClientConfig,
    presented: &Presented,
    now: i64,
) -> Result<(), OAuthError> {
    match (client.auth_method, presented) {
        (AuthMethod::ClientSecretBasic, Presented::Secret { secret, also, basic: true })
        | (AuthMethod::ClientSecretPost, Presented::Secret { secret, also, basic: false }) => {
            verify_secret(served, client, secret)
                .or_else(|e| also.as_deref().map_or(Err(e), |raw| verify_secret(served, client, raw)))
        }
        (AuthMethod::PrivateKeyJwt, Presented::Assertion(a)) => {
            verify_private_key_jwt(issuer, served, client, a, now).await
        }
        (AuthMethod::ServiceAccount, Presented::Assertion(a)) => {
            verify_service_account(issuer, served, client, a, now).await
        }
        (AuthMethod::None, Presented::None) => Ok(()),
        _ => Err(OAuthError::invalid_client("client is registered for another authentication method")),
    }
}

fn verify_secret(served: &Served, client: &ClientConfig, secret: &str) -> Result<(), OAuthError> {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    let hashes = served.secret_hashes.get(&client.client_id).map(Vec::as_slice).unwrap_or_default();
    // Compare with every valid hash, in constant time, without stopping at the first match.
    let mut ok = false;
    for h in hashes {
        ok |= aws_lc_rs::constant_time::verify_slices_are_equal(h, digest.as_ref()).is_ok();
    }
    if ok { Ok(()) } else { Err(failed()) }
}

fn assertion_error(e: JwtError) -> OAuthError {
    match e {
        JwtError::Algorithm(a) => OAuthError::invalid_client(format!("assertion algorithm {a} is not accepted")),
        JwtError::Expired => OAuthError::invalid_client("assertion expired"),
        JwtError::Audience => OAuthError::invalid_client("assertion audience is not this server"),
        JwtError::Issuer => OAuthError::invalid_client("assertion issuer is not accepted"),
        _ => failed(),
    }
}

/// Audiences a client assertion may name: the token endpoint or the issuer.
fn assertion_audiences(served: &Served) -> Vec<String> {
    let endpoints = Endpoint::ALL.into_iter().filter(|e| e.is_assertion_audience()).map(|e| served.endpoint(e));
    std::iter::once(served.config.issuer.clone()).chain(endpoints).collect()
}

async fn verify_private_key_jwt(
    issuer: &Issuer,
    served: &Served,
    client: &ClientConfig,
    assertion: &str,
    now: i64,
) -> Result<(), OAuthError> {
    let audiences = assertion_audiences(served);
    let rules = jwt::Rules {
        algorithms: &ASSERTION_ALGS,
        typ: None,
        issuer: &client.client_id,
        audiences: Some(&audiences),
        clock: Some(jwt::Clock { now, leeway_secs: LEEWAY }),
    };
    let verified = if let Some(jwks) = &client.jwks {
        let keys: Vec<_> = jwks.keys.iter().map(|k| k.0.clone()).collect();
        jwt::verify(assertion, &keys, &rules).map_err(assertion_error)?
    } else if let Some(uri) = &client.jwks_uri {
        // The client's own keys: iss of the lookup is irrelevant, the URI is registered.
        let source = super::trust::KeySource::Client { url: uri, reach: served.config.outbound.client_reach() };
        issuer.trust.verify(assertion, source, &rules, super::trust::TOKEN_PATH_WAIT).await.map_err(|e| match e {
            super::trust::TrustError::Jwt(j) => assertion_error(j),
            super::trust::TrustError::Fetch(_) => {
                OAuthError::invalid_client("client keys are not available (yet); try again later")
            }
        })?
    } else {
        return Err(failed());
    };
    let c = &verified.claims;
    if c.get("sub").and_then(Value::as_str) != Some(client.client_id.as_str()) {
        return Err(OAuthError::invalid_client("assertion sub must be the client_id"));
    }
    let exp = c.get("exp").and_then(Value::as_i64).unwrap_or(0);
    if exp - now > MAX_ASSERTION_LIFETIME {
        return Err(OAuthError::invalid_client("assertion lifetime is too long"));
    }
    let jti = c.get("jti").and_then(Value::as_str).ok_or_else(|| OAuthError::invalid_client("assertion has no jti"))?;
    let key = format!("assertion:{}:{jti}", client.client_id);
    match issuer.store.first_use(served.scope(), &key, exp + LEEWAY, now).await? {
        true => Ok(()),
        false => Err(OAuthError::invalid_client("assertion jti was already used")),
    }
}

async fn verify_service_account(
    issuer: &Issuer,
    served: &Served,
    client: &ClientConfig,
    assertion: &str,
    now: i64,
) -> Result<(), OAuthError> {
    let Some(sa) = &client.service_account else { return Err(failed()) };
    let Some(k8s_issuer) = issuer.options.kubernetes_issuer.as_deref() else {
        return Err(OAuthError::invalid_client("this issuer does not know the cluster's ServiceAccount issuer"));
    };
    let peeked = jwt::peek(assertion).map_err(|_| failed())?;
    if peeked.claims.get("iss").and_then(Value::as_str) != Some(k8s_issuer) {
        return Err(OAuthError::invalid_client("assertion issuer is not the cluster's ServiceAccount issuer"));
    }
    let audiences = assertion_audiences(served);
    let rules = jwt::Rules {
        algorithms: &SERVICE_ACCOUNT_ALGS,
        typ: None,
        issuer: k8s_issuer,
        audiences: Some(&audiences),
        clock: Some(jwt::Clock { now, leeway_secs: LEEWAY }),
    };
    let verified = issuer
        .trust
        .verify(assertion, issuer.kubernetes_keys(k8s_issuer), &rules, super::trust::TOKEN_PATH_WAIT)
        .await
        .map_err(|e| match e {
            super::trust::TrustError::Jwt(j) => assertion_error(j),
            super::trust::TrustError::Fetch(_) => {
                OAuthError::temporarily_unavailable("ServiceAccount issuer keys could not be fetched")
            }
        })?;
    if verified.claims.get("sub").and_then(Value::as_str) != Some(sa.subject().as_str()) {
        return Err(OAuthError::invalid_client("ServiceAccount is not the one bound to this client"));
    }
    Ok(())
}
