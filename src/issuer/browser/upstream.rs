//! Federation: sign-in at an upstream OpenID Connect provider (authorization code + PKCE +
//! nonce), its ID token verified with its published keys, its claims mapped to our user.

use std::time::Duration;

use axum::http::header;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Step, error_page, load_pending, proceed, random, redirect, sha256_b64, start_session, with_query};
use crate::api::Endpoint;
use crate::config::standard_claims::MAX_TEXT_BYTES;
use crate::config::subjects::federated_subject;
use crate::config::{StandardClaims, UpstreamConfig};
use crate::issuer::error::OAuthError;
use crate::issuer::form::Form;
use crate::issuer::trust::KeySource;
use crate::issuer::{Incoming, Issuer, Served};
use crate::keys::jwt;
use crate::outbound::fetch::REQUEST_TIMEOUT;
use crate::outbound::{DocumentCache, Fetch, FetchError, Fetcher, Need, Reach};
use crate::policy::UserInfo;
use crate::store::CodeKind;

/// Algorithms accepted for upstream ID tokens (OpenID Connect's default RS256 among them).
const ID_TOKEN_ALGS: [jwt::Alg; 4] = [jwt::Alg::RS256, jwt::Alg::PS256, jwt::Alg::ES256, jwt::Alg::EdDSA];
const DISCOVERY_TTL: Duration = Duration::from_secs(300);

#[derive(Deserialize, Clone, Debug)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
}

/// HTTP to upstream providers (through the issuer's one [`Fetcher`]), with their discovery
/// documents cached.
pub struct UpstreamClient {
    http: Fetcher,
    discovered: DocumentCache<Metadata>,
}

impl UpstreamClient {
    pub fn new(http: Fetcher) -> Self {
        Self { http, discovered: DocumentCache::new(DISCOVERY_TTL) }
    }
}

fn unavailable(what: &str, upstream: &str) -> OAuthError {
    OAuthError::temporarily_unavailable(format!(
        "the sign-in provider {upstream} did not answer as expected ({what}); try again"
    ))
}

impl UpstreamClient {
    async fn metadata(&self, u: &UpstreamConfig) -> Result<Metadata, OAuthError> {
        let url = format!("{}/.well-known/openid-configuration", u.issuer);
        let (http, issuer, fetch_url) = (self.http.clone(), u.issuer.clone(), url.clone());
        let fetch = move || -> Fetch<Metadata> {
            Box::pin(async move {
                let doc = http.get_json(&fetch_url, Reach::Any).await?;
                let m: Metadata =
                    serde_json::from_value(doc).map_err(|e| FetchError::new(&fetch_url, format!("discovery: {e}")))?;
                if m.issuer.trim_end_matches('/') != issuer {
                    return Err(FetchError::new(&fetch_url, "discovery names another issuer"));
                }
                Ok(m)
            })
        };
        self.discovered.get(&url, Reach::Any, Need::Cached, REQUEST_TIMEOUT, fetch).await.map_err(|e| {
            unavailable("discovery", &u.name).with_detail(format!("upstream {} discovery failed: {e}", u.name))
        })
    }
}

/// What we remember of a sign-in sent upstream, under the `state` we gave it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sent {
    request: String,
    upstream: String,
    nonce: String,
    verifier: String,
    browser: String,
}

fn callback_uri(served: &Served) -> String {
    served.endpoint(Endpoint::LoginCallback)
}

/// `/v1/login/upstream?request=..&upstream=..`: off to the upstream's authorization endpoint.
pub async fn start(issuer: &Issuer, served: &Served, req: &Incoming, form: &Form) -> Response {
    // Each start stores an upstream state: counted with the sign-ins of its source.
    let key = format!("{}|{}", served.scope().prefix(), crate::issuer::rate_limit::source_key(req.source));
    let limit = super::authorize::SIGN_INS_PER_SOURCE;
    if let Err(wait) = issuer.sign_in_starts.check(&key, &limit, req.at) {
        let mut r = super::pages::error(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too many sign-ins were started from this address; try again later",
        );
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, wait.into());
        return r;
    }
    match start_inner(issuer, served, req, form).await {
        Ok(r) => r,
        Err(e) => error_page(&e),
    }
}

async fn start_inner(issuer: &Issuer, served: &Served, req: &Incoming, form: &Form) -> Result<Response, OAuthError> {
    let now = req.now.as_second();
    let id = form.require("request")?;
    let pending = load_pending(issuer, served, &req.headers, id, now).await?;
    let name = form.require("upstream")?;
    let u = served
        .config
        .identity
        .iter()
        .flat_map(|i| &i.upstreams)
        .find(|u| u.name == name)
        .ok_or_else(|| OAuthError::invalid_request("no such sign-in provider"))?;
    let m = issuer.upstreams.metadata(u).await?;
    let state = random(24)?;
    let verifier = random(32)?;
    let sent = Sent {
        request: id.to_owned(),
        upstream: u.name.clone(),
        nonce: random(24)?,
        verifier: verifier.clone(),
        browser: pending.browser.clone(),
    };
    let value = serde_json::to_vec(&sent).map_err(|_| OAuthError::server_error("state"))?;
    let until = now + super::REQUEST_TTL_SECS;
    issuer.store.put_code(served.scope(), CodeKind::UpstreamState, &state, &value, until, now).await?;
    let location = with_query(
        &m.authorization_endpoint,
        &[
            ("response_type", "code".to_owned()),
            ("client_id", u.client_id.clone()),
            ("redirect_uri", callback_uri(served)),
            ("scope", u.scopes.join(" ")),
            ("state", state),
            ("nonce", sent.nonce.clone()),
            ("code_challenge", sha256_b64(&verifier)),
            ("code_challenge_method", "S256".to_owned()),
        ],
    );
    Ok(redirect(&location))
}

/// `/v1/login/callback`: the upstream's answer.
pub async fn callback(issuer: &Issuer, served: &Served, req: &Incoming, form: &Form) -> Response {
    let now = req.now.as_second();
    let state = match form.require("state") {
        Ok(s) => s,
        Err(e) => return error_page(&e),
    };
    let sent = match issuer.store.take_code(served.scope(), CodeKind::UpstreamState, state, now).await {
        Ok(Some(v)) => serde_json::from_slice::<Sent>(&v).ok(),
        Ok(None) => None,
        Err(e) => return error_page(&e.into()),
    };
    let Some(sent) = sent else {
        return error_page(&OAuthError::invalid_request("this sign-in has expired or was already used; start again"));
    };
    let pending = match load_pending(issuer, served, &req.headers, &sent.request, now).await {
        Ok(p) if super::same(&p.browser, &sent.browser) => p,
        Ok(_) => return error_page(&OAuthError::invalid_request("this sign-in was started in another browser")),
        Err(e) => return error_page(&e),
    };
    if let Some(err) = form.get("error") {
        let e = match err {
            "access_denied" => OAuthError::access_denied("the sign-in provider refused the sign-in"),
            _ => OAuthError::access_denied(format!("the sign-in provider answered {err}")),
        };
        let _ = issuer.store.take_code(served.scope(), CodeKind::Request, &sent.request, now).await;
        return super::error_redirect(served, &pending.flow, &e);
    }
    let user = match signed_in_user(issuer, served, &sent, form, now).await {
        Ok(u) => u,
        Err(e) => return error_page(&e),
    };
    let (signed, cookie) = match start_session(issuer, served, user, &sent.upstream, now).await {
        Ok(s) => s,
        Err(e) => return error_page(&e),
    };
    tracing::info!(target: "tessera::audit", server = %served.config.name, sub = %signed.session.user.sub, idp = %sent.upstream, "signed in");
    let mut r = proceed(issuer, served, &sent.request, &pending, &signed, Step::Continue, now).await;
    r.headers_mut().append(header::SET_COOKIE, cookie);
    r
}

/// The person the upstream signed in: its code redeemed, its ID token verified at `now`.
async fn signed_in_user(
    issuer: &Issuer,
    served: &Served,
    sent: &Sent,
    form: &Form,
    now: i64,
) -> Result<UserInfo, OAuthError> {
    let code = form.require("code")?;
    let u = served
        .config
        .identity
        .iter()
        .flat_map(|i| &i.upstreams)
        .find(|u| u.name == sent.upstream)
        .ok_or_else(|| OAuthError::invalid_request("the sign-in provider is no longer configured"))?;
    if let Some(iss) = form.get("iss")
        && iss != u.issuer
    {
        return Err(OAuthError::access_denied("the answer came from another issuer than the one asked (RFC 9207)"));
    }
    let m = issuer.upstreams.metadata(u).await?;
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let token_request = issuer
        .upstreams
        .http
        .request(reqwest::Method::POST, &m.token_endpoint, Reach::Any)
        .map_err(|_| unavailable("token endpoint", &u.name))?
        .basic_auth(enc(&u.client_id), Some(enc(&u.client_secret)))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &callback_uri(served)),
            ("code_verifier", &sent.verifier),
        ]);
    let (status, body) = issuer.upstreams.http.json(&m.token_endpoint, token_request).await.map_err(|e| {
        unavailable("token endpoint", &u.name).with_detail(format!("upstream {} token endpoint failed: {e}", u.name))
    })?;
    if !(200..300).contains(&status) {
        let err = body.get("error").and_then(Value::as_str).unwrap_or("an error");
        return Err(OAuthError::access_denied(format!("the sign-in provider {} refused the code ({err})", u.name))
            .with_detail(format!("upstream {} refused the code with HTTP {status}", u.name)));
    }
    let id_token = body
        .get("id_token")
        .and_then(Value::as_str)
        .ok_or_else(|| unavailable("no ID token in the token response", &u.name))?;
    let audiences = [u.client_id.clone()];
    let rules = jwt::Rules {
        algorithms: &ID_TOKEN_ALGS,
        typ: None,
        issuer: &u.issuer,
        audiences: Some(&audiences),
        clock: Some(jwt::Clock { now, leeway_secs: 60 }),
    };
    let source = KeySource::Issuer { issuer: &u.issuer, jwks_uri: m.jwks_uri.as_deref() };
    let verified = issuer.trust.verify(id_token, source, &rules, REQUEST_TIMEOUT).await.map_err(|e| {
        OAuthError::access_denied("the sign-in provider's ID token does not verify, is not for us or has expired")
            .with_detail(format!("upstream {} ID token does not verify: {e}", u.name))
    })?;
    if verified.claims.get("nonce").and_then(Value::as_str) != Some(sent.nonce.as_str()) {
        return Err(OAuthError::access_denied("the sign-in provider's ID token has the wrong nonce"));
    }
    let mut claims = verified.claims;
    // Claims the ID token lacks may be in userinfo (groups often are).
    let wanted = [&u.claim_mapping.email, &u.claim_mapping.name, &u.claim_mapping.groups];
    if wanted.iter().any(|c| !claims.contains_key(c.as_str()))
        && let (Some(endpoint), Some(at)) = (&m.userinfo_endpoint, body.get("access_token").and_then(Value::as_str))
        && let Ok(request) = issuer.upstreams.http.request(reqwest::Method::GET, endpoint, Reach::Any)
        && let Ok((200..=299, Value::Object(info))) =
            issuer.upstreams.http.json(endpoint, request.bearer_auth(at)).await
        && info.get("sub") == claims.get("sub")
    {
        for (k, v) in info {
            claims.entry(k).or_insert(v);
        }
    }
    map_claims(u, &claims)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(s)) => s.split([' ', ',']).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Whether `claims` say the email address was verified (`email_verified`: true, or "true" as
/// some providers send it).
fn email_verified(claims: &Map<String, Value>) -> bool {
    match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// Our user from the upstream's claims, as `claimMapping` says. `sub` is `<upstream>|<its
/// sub>`, so two upstreams never produce the same person; a `sub` taken from the email
/// address needs `email_verified: true`, or anyone who can type an address would be its owner.
fn map_claims(u: &UpstreamConfig, claims: &Map<String, Value>) -> Result<UserInfo, OAuthError> {
    let m = &u.claim_mapping;
    let upstream_sub = claims
        .get(&m.sub)
        .and_then(|v| v.as_str().map(str::to_owned).or_else(|| v.as_i64().map(|i| i.to_string())))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| OAuthError::access_denied(format!("the sign-in provider's token has no {} claim", m.sub)))?;
    if (m.sub == m.email || m.sub == "email") && !email_verified(claims) {
        return Err(OAuthError::access_denied(format!(
            "the sign-in provider has not verified the email address that identifies you ({}); verify it there and sign in again",
            m.sub
        )));
    }
    let sub = federated_subject(&u.name, &upstream_sub);
    let text =
        |name: &str| claims.get(name).and_then(Value::as_str).filter(|s| s.len() <= MAX_TEXT_BYTES).map(str::to_owned);
    let mut amr = strings(claims.get(&m.amr));
    if amr.is_empty() {
        amr.push("fed".into());
    }
    let mut attributes = Map::new();
    attributes.insert("idp".into(), u.name.clone().into());
    attributes.insert("upstreamSub".into(), claims.get("sub").cloned().unwrap_or(Value::Null));
    Ok(UserInfo {
        sub,
        name: text(&m.name),
        email: text(&m.email),
        groups: strings(claims.get(&m.groups)),
        attributes,
        amr,
        standard: StandardClaims::from_upstream(claims),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ClaimMapping;

    #[test]
    fn claims_map_to_the_user_as_configured() {
        let u = UpstreamConfig {
            name: "corp".into(),
            display_name: "Corp".into(),
            issuer: "https://idp.example".into(),
            client_id: "c".into(),
            client_secret: "s".into(),
            scopes: vec!["openid".into()],
            claim_mapping: ClaimMapping { sub: "email".into(), groups: "roles".into(), ..Default::default() },
        };
        let claims = serde_json::json!({"sub": "123", "email": "a@example.com", "email_verified": true, "roles": ["x", "y"], "name": "A"});
        let user = map_claims(&u, claims.as_object().unwrap()).unwrap();
        assert_eq!(user.sub, "corp|a@example.com");
        assert_eq!(user.groups, ["x", "y"]);
        assert_eq!(user.amr, ["fed"]);
        assert_eq!(user.attributes["idp"], "corp");
        let none = serde_json::json!({"sub": "123"});
        assert!(map_claims(&u, none.as_object().unwrap()).is_err());
        let full = serde_json::json!({"sub": "1", "email": "a@example.com", "email_verified": true, "given_name": "A",
            "locale": "nl", "phone_number": "+31", "name": "n".repeat(MAX_TEXT_BYTES + 1)});
        let user = map_claims(&u, full.as_object().unwrap()).unwrap();
        assert_eq!(user.standard.given_name.as_deref(), Some("A"));
        assert_eq!(user.standard.email_verified, Some(true));
        assert_eq!(user.standard.phone_number.as_deref(), Some("+31"));
        assert_eq!(user.name, None, "a name beyond its bound is dropped");
    }

    fn upstream(name: &str, sub_claim: &str) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            display_name: name.into(),
            issuer: format!("https://{name}.example"),
            client_id: "c".into(),
            client_secret: "s".into(),
            scopes: vec!["openid".into()],
            claim_mapping: ClaimMapping { sub: sub_claim.into(), ..Default::default() },
        }
    }

    #[test]
    fn two_upstreams_never_produce_the_same_subject() {
        let claims = serde_json::json!({"sub": "123"});
        let a = map_claims(&upstream("corp", "sub"), claims.as_object().unwrap()).unwrap();
        let b = map_claims(&upstream("partner", "sub"), claims.as_object().unwrap()).unwrap();
        assert_eq!((a.sub.as_str(), b.sub.as_str()), ("corp|123", "partner|123"));
        assert_eq!(a.attributes["upstreamSub"], "123");
    }

    #[test]
    fn a_subject_taken_from_the_email_needs_email_verified() {
        let u = upstream("corp", "email");
        for claims in [
            serde_json::json!({"sub": "1", "email": "boss@example.com"}),
            serde_json::json!({"sub": "1", "email": "boss@example.com", "email_verified": false}),
            serde_json::json!({"sub": "1", "email": "boss@example.com", "email_verified": "no"}),
        ] {
            let e = map_claims(&u, claims.as_object().unwrap()).unwrap_err();
            assert!(e.description.contains("not verified"), "{claims}: {}", e.description);
        }
        for verified in [serde_json::json!(true), serde_json::json!("true")] {
            let claims = serde_json::json!({"sub": "1", "email": "boss@example.com", "email_verified": verified});
            assert_eq!(map_claims(&u, claims.as_object().unwrap()).unwrap().sub, "corp|boss@example.com");
        }
        // A `sub` that is not the address needs no verification.
        let claims = serde_json::json!({"sub": "1", "email": "boss@example.com"});
        assert_eq!(map_claims(&upstream("corp", "sub"), claims.as_object().unwrap()).unwrap().sub, "corp|1");
    }
}
