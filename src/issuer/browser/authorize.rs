//! `/v1/authorize`: authorization code flow only. Client and redirect URI problems are shown
//! on our page; everything after is redirected to the client with `iss` (RFC 9207).

use axum::response::Response;

use super::{Flow, Pending, Step, error_page, error_redirect, load_session, proceed, random, redirect, sha256_b64};
use crate::api::{AuthMethod, Endpoint, GrantType};
use crate::config::ClientConfig;
use crate::issuer::client_auth::ASSERTION_ALGS;
use crate::issuer::error::OAuthError;
use crate::issuer::form::Form;
use crate::issuer::protocol::{is_pkce_value, parse_scope, redirect_uri_matches};
use crate::issuer::rate_limit::{Limit, source_key};
use crate::issuer::trust::{KeySource, TOKEN_PATH_WAIT, TrustError};
use crate::issuer::{Incoming, Issuer, Served};
use crate::keys::jwt::{self, JwtError};
use crate::store::CodeKind;

/// The redirect URI to use, or the reason to show on our page.
fn redirect_uri(client: &ClientConfig, given: Option<&str>) -> Result<String, OAuthError> {
    match given {
        Some(u) if client.redirect_uris.iter().any(|r| redirect_uri_matches(r, u)) => Ok(u.to_owned()),
        Some(_) => Err(OAuthError::invalid_request(
            "redirect_uri is not registered for this application; it must match a registered redirect URI exactly",
        )),
        None => match client.redirect_uris.as_slice() {
            [only] => Ok(only.clone()),
            _ => Err(OAuthError::invalid_request("redirect_uri is required")),
        },
    }
}

/// Largest `state` kept for a sign-in (and echoed to the client).
pub const MAX_STATE: usize = 2048;
/// Largest `nonce` kept for a sign-in (and put in the ID token).
pub const MAX_NONCE: usize = 512;
/// Largest `redirect_uri` read (a registered one is at most this long).
pub const MAX_REDIRECT_URI: usize = 2048;
/// Sign-ins a source may start at one server: a burst, then one every 2 s. With the 15-minute
/// lifetime of a sign-in, one source holds at most 60 + 450 of them.
pub const SIGN_INS_PER_SOURCE: Limit = Limit::one_every(60, std::time::Duration::from_secs(2));

/// A parameter longer than `max` bytes, refused before anything is stored.
fn too_long(form: &Form, name: &str, max: usize) -> Option<OAuthError> {
    form.get(name)
        .filter(|v| v.len() > max)
        .map(|_| OAuthError::invalid_request(format!("{name} is longer than {max} bytes")))
}

/// Largest request object read, in bytes.
pub const MAX_REQUEST_OBJECT: usize = 16 * 1024;
/// Claims of a request object that are about the JWT, not parameters of the request.
const JWT_CLAIMS: [&str; 6] = ["iss", "aud", "exp", "iat", "nbf", "jti"];

/// The parameters of a signed request object (`request` by value: RFC 9101, OpenID Connect
/// Core §6.1) over those of the query: signed by the client with a key it registered
/// (`authentication.jwks` / `jwksUri`, as for private_key_jwt), `iss` the client id, `aud` this
/// issuer, not expired at `now`; `alg: none` is refused. A non-string claim (`claims`,
/// `max_age`) is read as its JSON text.
async fn request_object(
    issuer: &Issuer,
    served: &Served,
    client: &ClientConfig,
    object: &str,
    query: &Form,
    now: i64,
) -> Result<Form, OAuthError> {
    let invalid = |why: &str| OAuthError::new_code("invalid_request_object", why.to_owned());
    if object.len() > MAX_REQUEST_OBJECT {
        return Err(invalid("the request object is longer than 16384 bytes"));
    }
    let audiences = [served.config.issuer.clone()];
    let rules = jwt::Rules {
        algorithms: &ASSERTION_ALGS,
        typ: None,
        issuer: &client.client_id,
        audiences: Some(&audiences),
        clock: Some(jwt::Clock { now, leeway_secs: 30 }),
    };
    let why = |e: JwtError| match e {
        JwtError::Algorithm(_) => {
            invalid("the request object must be signed with RS256, PS256, ES256 or EdDSA (not none)")
        }
        JwtError::Expired => invalid("the request object has expired"),
        JwtError::Missing(_) => invalid("the request object needs exp"),
        JwtError::Audience => invalid("the request object's aud must be this issuer"),
        JwtError::Issuer => invalid("the request object's iss must be the client_id"),
        _ => invalid("the request object's signature does not verify with the application's registered keys"),
    };
    let verified = if let Some(jwks) = &client.jwks {
        let keys: Vec<_> = jwks.keys.iter().map(|k| k.0.clone()).collect();
        jwt::verify(object, &keys, &rules).map_err(why)?
    } else if let Some(uri) = &client.jwks_uri {
        let source = KeySource::Client { url: uri, reach: served.config.outbound.client_reach() };
        issuer.trust.verify(object, source, &rules, TOKEN_PATH_WAIT).await.map_err(|e| match e {
            TrustError::Jwt(j) => why(j),
            TrustError::Fetch(_) => invalid("the application's keys are not available (yet); try again later"),
        })?
    } else {
        return Err(invalid("the application has registered no keys to sign request objects with"));
    };
    let claims = verified.claims;
    if claims.get("client_id").is_some_and(|c| c.as_str() != Some(client.client_id.as_str())) {
        return Err(invalid("the request object's client_id is not the request's"));
    }
    // OpenID Connect Core §6.1: response_type in both places must agree.
    if let (Some(inside), Some(outside)) = (claims.get("response_type"), query.get("response_type"))
        && inside.as_str() != Some(outside)
    {
        return Err(invalid("the request object's response_type is not the request's"));
    }
    let mut params: std::collections::HashMap<String, String> =
        query.pairs().filter(|(k, _)| *k != "request").map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    for (k, v) in claims {
        if JWT_CLAIMS.contains(&k.as_str()) || k == "request" {
            continue;
        }
        let text = match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        params.insert(k, text);
    }
    Ok(Form::from_pairs(params))
}

pub async fn authorize(issuer: &Issuer, served: &Served, req: &Incoming, form: &Form) -> Response {
    // Errors our page shows: who is asking and where to send the answer. A state too long to
    // keep cannot be echoed either, so it is refused on our page too.
    if let Some(e) = too_long(form, "redirect_uri", MAX_REDIRECT_URI).or_else(|| too_long(form, "state", MAX_STATE)) {
        return error_page(&e);
    }
    let Some(client_id) = form.get("client_id") else {
        return error_page(&OAuthError::invalid_request("client_id is required"));
    };
    let Some(client) = served.config.client(client_id) else {
        return error_page(&OAuthError::invalid_request("client_id is not a registered application"));
    };
    // A request object's parameters take the place of the query's (OpenID Connect Core
    // §6.3.3). Until it is verified nothing of it is trusted: its errors go to the query's
    // redirect URI when that one is registered, else they are shown here.
    let merged;
    let form = match form.get("request") {
        Some(object) => match request_object(issuer, served, client, object, form, req.now.as_second()).await {
            Ok(f) => {
                merged = f;
                &merged
            }
            Err(e) => return request_object_refused(served, client, form, &e),
        },
        None => form,
    };
    if let Some(e) = too_long(form, "redirect_uri", MAX_REDIRECT_URI).or_else(|| too_long(form, "state", MAX_STATE)) {
        return error_page(&e);
    }
    let redirect_to = match redirect_uri(client, form.get("redirect_uri")) {
        Ok(u) => u,
        Err(e) => return error_page(&e),
    };
    let state = form.get("state").map(str::to_owned);
    let nonce = form.get("nonce").map(str::to_owned);
    let mut flow = Flow::Authorize {
        redirect_uri: redirect_to,
        redirect_uri_given: form.get("redirect_uri").is_some(),
        state,
        nonce,
        code_challenge: None,
    };
    let source = format!("{}|{}", served.scope().prefix(), source_key(req.source));
    match validate(served, client, form) {
        Ok(v) => {
            if let Flow::Authorize { code_challenge, .. } = &mut flow {
                *code_challenge = v.code_challenge.clone();
            }
            match start(issuer, served, req, client, flow.clone(), v, &source).await {
                Ok(r) => r,
                Err(e) if e.status == axum::http::StatusCode::TOO_MANY_REQUESTS => too_many_sign_ins(&e),
                Err(e) if e.status.is_server_error() => error_page(&e),
                Err(e) => error_redirect(served, &flow, &e),
            }
        }
        Err(e) => error_redirect(served, &flow, &e),
    }
}

/// Where the error of a request object that failed verification goes: the query's redirect
/// URI when that one is registered, else our page.
fn request_object_refused(served: &Served, client: &ClientConfig, form: &Form, e: &OAuthError) -> Response {
    match redirect_uri(client, form.get("redirect_uri")) {
        Ok(redirect_uri) => {
            let state = form.get("state").map(str::to_owned);
            let flow =
                Flow::Authorize { redirect_uri, redirect_uri_given: true, state, nonce: None, code_challenge: None };
            error_redirect(served, &flow, e)
        }
        Err(_) => error_page(e),
    }
}

pub struct Validated {
    pub scopes: Option<Vec<String>>,
    pub code_challenge: Option<String>,
    pub prompt_login: bool,
    pub prompt_consent: bool,
    pub prompt_none: bool,
    pub max_age: Option<i64>,
    pub acr_values: Vec<String>,
    pub claims: crate::issuer::claims_request::ClaimsRequest,
}

fn validate(served: &Served, client: &ClientConfig, form: &Form) -> Result<Validated, OAuthError> {
    if served.config.suspended {
        return Err(OAuthError::temporarily_unavailable("this authorization server is suspended"));
    }
    if let Some(e) = too_long(form, "nonce", MAX_NONCE) {
        return Err(e);
    }
    if form.get("request_uri").is_some() {
        return Err(OAuthError::new_code(
            "request_uri_not_supported",
            "request_uri is not supported; send request by value",
        ));
    }
    match form.get("response_type") {
        Some("code") => {}
        Some(_) => {
            return Err(OAuthError::new_code(
                "unsupported_response_type",
                "only response_type=code is supported (no implicit or hybrid flows)",
            ));
        }
        None => return Err(OAuthError::invalid_request("response_type is required")),
    }
    if let Some(mode) = form.get("response_mode")
        && mode != "query"
    {
        return Err(OAuthError::invalid_request("only response_mode=query is supported"));
    }
    if !client.grant_types.contains(&GrantType::AuthorizationCode) {
        return Err(OAuthError::unauthorized_client("this application may not use the authorization code flow"));
    }
    if served.config.identity.is_none() {
        return Err(OAuthError::access_denied("this authorization server has no identity sources; nobody can sign in"));
    }
    let code_challenge = code_challenge(client, form)?;
    let scopes = parse_scope(form.get("scope"))?;
    let mut v = Validated {
        scopes,
        code_challenge,
        prompt_login: false,
        prompt_consent: false,
        prompt_none: false,
        max_age: None,
        acr_values: crate::issuer::acr::parse_acr_values(form.get("acr_values"))
            .map_err(OAuthError::invalid_request)?,
        claims: crate::issuer::claims_request::parse(form.get("claims")).map_err(OAuthError::invalid_request)?,
    };
    if let Some(prompt) = form.get("prompt") {
        for p in prompt.split(' ').filter(|p| !p.is_empty()) {
            match p {
                "none" => v.prompt_none = true,
                "login" => v.prompt_login = true,
                "consent" => v.prompt_consent = true,
                "select_account" => {}
                _ => return Err(OAuthError::invalid_request(format!("prompt value {p} is not supported"))),
            }
        }
        if v.prompt_none && (v.prompt_login || v.prompt_consent) {
            return Err(OAuthError::invalid_request("prompt=none cannot be combined with other values"));
        }
    }
    if let Some(m) = form.get("max_age") {
        v.max_age = Some(
            m.parse::<i64>()
                .ok()
                .filter(|m| *m >= 0)
                .ok_or_else(|| OAuthError::invalid_request("max_age must be a non-negative integer"))?,
        );
    }
    Ok(v)
}

/// The request's PKCE challenge (S256 only; required of public clients).
fn code_challenge(client: &ClientConfig, form: &Form) -> Result<Option<String>, OAuthError> {
    match (form.get("code_challenge"), form.get("code_challenge_method")) {
        (Some(c), Some("S256")) if is_pkce_value(c) => Ok(Some(c.to_owned())),
        (Some(_), Some("S256")) => {
            Err(OAuthError::invalid_request("code_challenge must be 43 to 128 characters of [A-Za-z0-9-._~]"))
        }
        (Some(_), None) | (Some(_), Some(_)) => Err(OAuthError::invalid_request("code_challenge_method must be S256")),
        (None, Some(_)) => Err(OAuthError::invalid_request("code_challenge_method without code_challenge")),
        (None, None) if client.auth_method == AuthMethod::None => {
            Err(OAuthError::invalid_request("public clients must use PKCE (code_challenge with S256)"))
        }
        (None, None) => Ok(None),
    }
}

/// Our page for a source past `SIGN_INS_PER_SOURCE`, with the error's `Retry-After`.
fn too_many_sign_ins(e: &OAuthError) -> Response {
    let mut r = super::pages::error(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "too many sign-ins were started from this address; try again later",
    );
    if let Some(wait) = e.retry_after {
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, wait.into());
    }
    r
}

async fn start(
    issuer: &Issuer,
    served: &Served,
    req: &Incoming,
    client: &ClientConfig,
    flow: Flow,
    v: Validated,
    source: &str,
) -> Result<Response, OAuthError> {
    let (browser, new_browser) = super::browser_id(&req.headers)?;
    let pending = Pending {
        client_id: client.client_id.clone(),
        scopes: v.scopes,
        flow,
        prompt_login: v.prompt_login,
        prompt_consent: v.prompt_consent,
        prompt_none: v.prompt_none,
        max_age: v.max_age,
        acr_values: v.acr_values,
        claims: v.claims,
        csrf: random(24)?,
        browser: sha256_b64(&browser),
    };
    let mut response = begin(issuer, served, req, pending, Some(source)).await?;
    if new_browser {
        super::set_browser_cookie(served, &mut response, &browser);
    }
    Ok(response)
}

/// Stores a sign-in and takes its first step: straight on with a fresh enough session, else
/// the login page (or `login_required` for `prompt=none`).
///
/// `source` (the server and the peer's address) is charged `SIGN_INS_PER_SOURCE` only when the
/// sign-in waits for a login: that is the unauthenticated state the limit bounds. A signed-in
/// person's authorizations (an SPA's silent renewals, many people behind one NAT) are not
/// charged to their address.
pub async fn begin(
    issuer: &Issuer,
    served: &Served,
    req: &Incoming,
    pending: Pending,
    source: Option<&str>,
) -> Result<Response, OAuthError> {
    let now = req.now.as_second();
    let session = load_session(issuer, served, &req.headers, now).await?;
    let fresh =
        session.filter(|s| !pending.prompt_login && pending.max_age.is_none_or(|m| now - s.session.auth_time <= m));
    if let (None, false, Some(source)) = (&fresh, pending.prompt_none, source) {
        issuer
            .sign_in_starts
            .check(source, &SIGN_INS_PER_SOURCE, req.at)
            .map_err(|wait| OAuthError::too_many_failures(wait, "too many sign-ins were started from this address"))?;
    }
    let id = random(24)?;
    let value = serde_json::to_vec(&pending).map_err(|_| OAuthError::server_error("request"))?;
    issuer.store.put_code(served.scope(), CodeKind::Request, &id, &value, now + super::REQUEST_TTL_SECS, now).await?;
    match fresh {
        Some(signed) => Ok(proceed(issuer, served, &id, &pending, &signed, Step::Continue, now).await),
        None if pending.prompt_none => {
            let _ = issuer.store.take_code(served.scope(), CodeKind::Request, &id, now).await;
            Err(OAuthError::new_code("login_required", "the user is not signed in"))
        }
        None => Ok(redirect(&super::with_query(&served.endpoint(Endpoint::Login), &[("request", id)]))),
    }
}
