//! HTTP tests of sign-in, in-process: a simulated browser (cookies, forms, redirects) through
//! authorize → login → consent → code → tokens, the device flow, logout, federation to a
//! fake upstream, and the negative tables of issue 6.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::api::SigningAlgorithm;
use crate::config::{IdentityConfig, StaticUser, UpstreamConfig};
use crate::issuer::*;
use crate::keys::{self, ActiveKeys, jwt};
use crate::standalone::{StateDir, compile_all, manifests};
use crate::store::MemoryStore;

const ISSUER: &str = "http://127.0.0.1:9/oauth2/people";
const BASE: &str = "/oauth2/people";
const SPA: &str = "team.spa";
const SPA_REDIRECT: &str = "http://127.0.0.1:8400/callback";
const WEB: &str = "team.web";
const WEB_SECRET: &str = "web-secret";
const GATEWAY: &str = "identity.gateway";
const GATEWAY_SECRET: &str = "gateway-secret";
const WEB_REDIRECT: &str = "https://web.example.com/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()))
}

struct Upstream {
    url: String,
    keys: ActiveKeys,
    /// The nonce the next token response puts in its ID token.
    nonce: Arc<std::sync::Mutex<String>>,
}

/// A minimal upstream OpenID Connect provider: discovery, JWKS, and a token endpoint that
/// answers any code with an ID token for "u-123".
async fn upstream() -> Upstream {
    let now = jiff::Timestamp::now();
    let key = keys::generate(SigningAlgorithm::RS256, now, now - jiff::SignedDuration::from_secs(60)).unwrap();
    let jwk = key.public_jwk.clone();
    let active = ActiveKeys::new(&keys::KeySet { keys: vec![key.clone()] }).unwrap();
    let signer = Arc::new(ActiveKeys::new(&keys::KeySet { keys: vec![key] }).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let nonce = Arc::new(std::sync::Mutex::new(String::new()));
    let discovery = json!({
        "issuer": url, "jwks_uri": format!("{url}/jwks"), "authorization_endpoint": format!("{url}/auth"),
        "token_endpoint": format!("{url}/token"),
    });
    let (iss, n) = (url.clone(), nonce.clone());
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", axum::routing::get(move || async move { axum::Json(discovery) }))
        .route("/jwks", axum::routing::get(move || async move { axum::Json(json!({ "keys": [jwk] })) }))
        .route(
            "/token",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (iss, n, signer) = (iss.clone(), n.clone(), signer.clone());
                async move {
                    let auth =
                        headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    let ok_auth = auth == format!("Basic {}", STANDARD.encode("tessera:upstream-secret"));
                    let ok_body = body.contains("code=good") && body.contains("code_verifier=");
                    if !ok_auth || !ok_body {
                        return (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": "invalid_grant" })));
                    }
                    let t = jiff::Timestamp::now().as_second();
                    let claims = json!({
                        "iss": iss, "aud": "tessera", "sub": "u-123", "exp": t + 60, "iat": t,
                        "nonce": *n.lock().unwrap(), "email": "bob@example.com", "name": "Bob",
                        "groups": ["admins"], "amr": ["pwd", "mfa"],
                    });
                    let id_token = signer.sign_access_token(jiff::Timestamp::now(), &claims).unwrap().0;
                    (
                        StatusCode::OK,
                        axum::Json(json!({ "access_token": "x", "token_type": "Bearer", "id_token": id_token })),
                    )
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Upstream { url, keys: active, nonce }
}

struct H {
    app: axum::Router,
    issuer: Arc<Issuer>,
    upstream: Upstream,
}

async fn harness() -> H {
    harness_with_store(Arc::new(MemoryStore::new())).await
}

async fn harness_with_store(store: Arc<dyn crate::store::TokenStore>) -> H {
    let upstream = upstream().await;
    let yaml = format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: {{ name: people, namespace: identity }}
spec:
  issuer: {ISSUER}
  audiences: [api://people]
  signing: {{ algorithm: ES256 }}
  clientNamespaces: {{ from: All }}
  trustedClients: [{SPA}, {WEB}]
---
apiVersion: tessera.dev/v1alpha1
kind: AuthScope
metadata: {{ name: read, namespace: identity }}
spec: {{ serverRef: {{ name: people }}, name: orders:read, description: Read your orders }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthScope
metadata: {{ name: admin, namespace: identity }}
spec: {{ serverRef: {{ name: people }}, name: orders:admin, consent: Required, description: Manage every order }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClaim
metadata: {{ name: groups, namespace: identity }}
spec: {{ serverRef: {{ name: people }}, name: groups, token: IdToken, value: "user == null ? null : user.groups" }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClaim
metadata: {{ name: dept, namespace: identity }}
spec: {{ serverRef: {{ name: people }}, name: dept, token: IdToken, alwaysInclude: false, value: "'sales'" }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClaim
metadata: {{ name: email-at, namespace: identity }}
spec: {{ serverRef: {{ name: people }}, name: user_email, value: "user == null ? null : user.email" }}
---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: people, namespace: identity }}
spec:
  serverRef: {{ name: people }}
  clients: {{ all: true }}
  rules:
    - name: admins-with-mfa
      grantTypes: [authorization_code, "urn:ietf:params:oauth:grant-type:device_code"]
      scopes: ["*"]
      users: {{ groups: [admins] }}
      condition: "'mfa' in user.amr"
    - name: everyone-reads
      grantTypes: [authorization_code, "urn:ietf:params:oauth:grant-type:device_code"]
      scopes: [openid, profile, email, address, phone, offline_access, orders:read]
      users: {{ everyone: true }}
      refreshTokenIdleTimeout: 1h
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: spa, namespace: team }}
spec:
  serverRef: {{ name: people, namespace: identity }}
  displayName: Orders SPA
  grantTypes: [authorization_code, refresh_token, "urn:ietf:params:oauth:grant-type:device_code"]
  redirectUris: [{SPA_REDIRECT}]
  postLogoutRedirectUris: [http://127.0.0.1:8400/]
  authentication: {{ method: None }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: web, namespace: team }}
spec:
  serverRef: {{ name: people, namespace: identity }}
  grantTypes: [authorization_code, refresh_token]
  redirectUris: [{WEB_REDIRECT}, https://web.example.com/other]
  authentication: {{ method: ClientSecretBasic }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: web-oauth, namespace: team }}
stringData: {{ client_secret: {WEB_SECRET} }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: gateway, namespace: identity }}
spec:
  serverRef: {{ name: people }}
  grantTypes: [client_credentials]
  authentication: {{ method: ClientSecretBasic }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: gateway-oauth, namespace: identity }}
stringData: {{ client_secret: {GATEWAY_SECRET} }}
"#
    );
    let mut m = manifests::Manifests::default();
    manifests::add_documents(&mut m, Path::new("people.yaml"), &yaml).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let compiled = compile_all(&m, Some(&StateDir::new(dir.path().into()))).unwrap().remove(0);
    assert!(compiled.rejected.is_empty(), "{:?}", compiled.rejected);
    let mut config = compiled.config;
    config.identity = Some(IdentityConfig {
        session_lifetime_secs: 3600,
        upstreams: vec![UpstreamConfig {
            name: "corp".into(),
            display_name: "Corp SSO".into(),
            issuer: upstream.url.clone(),
            client_id: "tessera".into(),
            client_secret: "upstream-secret".into(),
            scopes: vec!["openid".into(), "email".into()],
            claim_mapping: Default::default(),
        }],
        users: vec![StaticUser {
            username: "alice".into(),
            password_hash: bcrypt::hash("alice-password", 4).unwrap(),
            sub: Some("alice-1".into()),
            name: Some("Alice".into()),
            email: Some("alice@example.com".into()),
            groups: vec!["readers".into()],
            standard: crate::config::StandardClaims {
                given_name: Some("Alice".into()),
                family_name: Some("Example".into()),
                locale: Some("en-GB".into()),
                updated_at: Some(1_700_000_000),
                email_verified: Some(true),
                address: Some(crate::config::standard_claims::Address {
                    locality: Some("Utrecht".into()),
                    country: Some("NL".into()),
                    ..Default::default()
                }),
                phone_number: Some("+31 30 000 0000".into()),
                phone_number_verified: Some(false),
                ..Default::default()
            },
            unknown: Default::default(),
        }],
    });
    let now = jiff::Timestamp::now();
    let key = keys::generate(SigningAlgorithm::ES256, now, now).unwrap();
    let served = Served::new(config, &keys::KeySet { keys: vec![key] }).unwrap();
    let issuer = Issuer::new(IssuerOptions::default(), store);
    issuer.replace(served);
    H { app: issuer.router(), issuer, upstream }
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Page {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The value of hidden input `name`.
    fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker).unwrap_or_else(|| panic!("no {name} in {}", self.body)) + marker.len();
        self.body[start..].split('"').next().unwrap().to_owned()
    }

    /// Query parameters of the redirect.
    fn params(&self) -> HashMap<String, String> {
        let loc = self.location.as_deref().unwrap_or_else(|| panic!("no redirect: {} {}", self.status, self.body));
        let q = loc.split_once('?').map_or("", |(_, q)| q);
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }
}

/// A browser: keeps cookies, sends forms, does not follow redirects by itself.
#[derive(Default, Clone)]
struct Browser {
    cookies: HashMap<String, String>,
}

impl Browser {
    async fn send(&mut self, app: &axum::Router, mut req: Request<Body>) -> Page {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        if !cookie.is_empty() {
            req.headers_mut().insert(header::COOKIE, cookie.parse().unwrap());
        }
        let resp = app.clone().oneshot(req).await.unwrap();
        for c in resp.headers().get_all(header::SET_COOKIE) {
            let (kv, _) = c.to_str().unwrap().split_once(';').unwrap();
            let (k, v) = kv.split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.into(), v.into());
            }
        }
        let status = resp.status();
        let location = resp.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned());
        let body = String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
        Page { status, location, body }
    }

    /// Follows a redirect to our own consent page (sign-in steps end there when consent is due).
    async fn follow_to_consent(&mut self, app: &axum::Router, page: Page) -> Page {
        match page.location.as_deref() {
            Some(l) if page.status == StatusCode::SEE_OTHER && l.starts_with(&format!("{ISSUER}/v1/consent?")) => {
                let l = l.to_owned();
                self.get(app, &l).await
            }
            _ => page,
        }
    }

    /// Answers the consent page `consent` with `decision` (allow or deny).
    async fn answer_consent(&mut self, app: &axum::Router, consent: &Page, decision: &str) -> Page {
        let (request, csrf) = (consent.hidden("request"), consent.hidden("csrf"));
        let fields = [("request", request.as_str()), ("csrf", &csrf), ("decision", decision)];
        self.post(app, &format!("{BASE}/v1/consent"), &fields).await
    }

    /// Submits the login form of `login`.
    async fn log_in(&mut self, app: &axum::Router, login: &Page, username: &str, password: &str) -> Page {
        let (request, csrf) = (login.hidden("request"), login.hidden("csrf"));
        let fields = [("request", request.as_str()), ("csrf", &csrf), ("username", username), ("password", password)];
        self.post(app, &format!("{BASE}/v1/login"), &fields).await
    }

    async fn get(&mut self, app: &axum::Router, url: &str) -> Page {
        let path = url.strip_prefix("http://127.0.0.1:9").unwrap_or(url);
        self.send(app, Request::get(path).body(Body::empty()).unwrap()).await
    }

    async fn post(&mut self, app: &axum::Router, url: &str, fields: &[(&str, &str)]) -> Page {
        let path = url.strip_prefix("http://127.0.0.1:9").unwrap_or(url);
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(app, req).await
    }
}

fn authorize_url(client: &str, redirect: &str, scope: &str, extra: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", client)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", scope)
        .append_pair("state", "st-1")
        .append_pair("nonce", "n-1");
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    format!("{BASE}/v1/authorize?{}", q.finish())
}

fn spa_url(scope: &str) -> String {
    let (scope, prompt) = scope.split_once("&prompt=").map_or((scope, None), |(s, p)| (s, Some(p)));
    let c = challenge(VERIFIER);
    let mut extra = vec![("code_challenge", c.as_str()), ("code_challenge_method", "S256")];
    if let Some(p) = prompt {
        extra.push(("prompt", p));
    }
    authorize_url(SPA, SPA_REDIRECT, scope, &extra)
}

/// Signs in as alice on the login page the authorization request led to.
async fn login_alice(h: &H, b: &mut Browser, start: &Page) -> Page {
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
    let login = b.get(&h.app, start.location.as_deref().unwrap()).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("Sign in with Corp SSO"));
    b.log_in(&h.app, &login, "alice", "alice-password").await
}

async fn token(h: &H, body: &[(&str, &str)], basic: Option<(&str, &str)>) -> (StatusCode, Value) {
    let encoded = form_urlencoded::Serializer::new(String::new()).extend_pairs(body).finish();
    let mut req = Request::post(format!("{BASE}/v1/token"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(encoded))
        .unwrap();
    if let Some((id, secret)) = basic {
        let v = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
        req.headers_mut().insert(header::AUTHORIZATION, v.parse().unwrap());
    }
    let resp = h.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn redeem_spa(h: &H, code: &str) -> (StatusCode, Value) {
    token(
        h,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", SPA),
            ("code", code),
            ("redirect_uri", SPA_REDIRECT),
            ("code_verifier", VERIFIER),
        ],
        None,
    )
    .await
}

/// Whether the platform's gateway (a client in the server's namespace, which sees every
/// token of the server) finds `access_token` active.
async fn introspect_active(h: &H, access_token: &str) -> bool {
    let body = format!("token={access_token}");
    let v = format!("Basic {}", STANDARD.encode(format!("{GATEWAY}:{GATEWAY_SECRET}")));
    let req = Request::post(format!("{BASE}/v1/introspect"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::AUTHORIZATION, v)
        .body(Body::from(body))
        .unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["active"] == true
}

fn id_token_claims(h: &H, id_token: &str) -> serde_json::Map<String, Value> {
    let served = h.issuer.current("identity", "people").unwrap();
    let jwks = served.keys.jwks(jiff::Timestamp::now());
    let parsed = jwt::verify_signature(id_token, &jwks.keys).unwrap();
    assert_eq!(parsed.header.typ.as_deref(), Some("JWT"));
    parsed.claims
}

/// A signed-in SPA code for alice with `scope`.
async fn spa_code(h: &H, b: &mut Browser, scope: &str) -> String {
    let start = b.get(&h.app, &spa_url(scope)).await;
    let done = if b.cookies.contains_key("tessera_session") { start } else { login_alice(h, b, &start).await };
    let p = done.params();
    assert_eq!(p.get("state").map(String::as_str), Some("st-1"), "{p:?}");
    assert_eq!(p.get("iss").map(String::as_str), Some(ISSUER));
    p.get("code").cloned().unwrap_or_else(|| panic!("no code: {p:?}"))
}

#[tokio::test]
async fn code_flow_with_pkce_gives_id_token_userinfo_and_rotating_refresh_tokens() {
    let h = harness().await;
    let mut b = Browser::default();
    let code = spa_code(&h, &mut b, "openid profile email offline_access orders:read").await;
    let (status, t) = redeem_spa(&h, &code).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let id = id_token_claims(&h, t["id_token"].as_str().unwrap());
    assert_eq!(id["iss"], ISSUER);
    assert_eq!(id["aud"], SPA);
    assert_eq!(id["sub"], "static|alice-1");
    assert_eq!(id["nonce"], "n-1");
    assert_eq!(id["amr"], json!(["pwd"]));
    assert!(id.get("email").is_none(), "scope claims go to userinfo (OpenID Connect Core §5.4)");
    assert_eq!(id["groups"], json!(["readers"]));
    assert!(id.get("dept").is_none(), "alwaysInclude false stays out of the ID token");
    assert!(id["auth_time"].as_i64().unwrap() <= id["iat"].as_i64().unwrap());
    let at = t["access_token"].as_str().unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, at.as_bytes());
    assert_eq!(id["at_hash"], URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]));
    let access = jwt::peek(at).unwrap().claims;
    assert_eq!(access["uid"], "static|alice-1");
    assert_eq!(access["sub"], "static|alice-1");
    assert_eq!(access["user_email"], "alice@example.com");

    // userinfo
    let req = Request::get(format!("{BASE}/v1/userinfo")).header(header::AUTHORIZATION, format!("Bearer {at}"));
    let info = b.send(&h.app, req.body(Body::empty()).unwrap()).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.body);
    let info = info.json();
    assert_eq!(info["sub"], "static|alice-1");
    assert_eq!(info["email"], "alice@example.com");
    assert_eq!(info["dept"], "sales");
    let bad = b
        .send(
            &h.app,
            Request::get(format!("{BASE}/v1/userinfo"))
                .header(header::AUTHORIZATION, "Bearer nope")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);

    // refresh: rotation, then reuse of the old token revokes the family
    let r1 = t["refresh_token"].as_str().unwrap().to_owned();
    let (s, t2) = token(&h, &[("grant_type", "refresh_token"), ("client_id", SPA), ("refresh_token", &r1)], None).await;
    assert_eq!(s, StatusCode::OK, "{t2}");
    let r2 = t2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert_eq!(id_token_claims(&h, t2["id_token"].as_str().unwrap())["sub"], "static|alice-1");
    let (s, e) = token(&h, &[("grant_type", "refresh_token"), ("client_id", SPA), ("refresh_token", &r1)], None).await;
    assert_eq!((s, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let (s, _) = token(&h, &[("grant_type", "refresh_token"), ("client_id", SPA), ("refresh_token", &r2)], None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "the current token died with its family");

    // concurrent refreshes of one token: one winner, and the family is gone
    let code = spa_code(&h, &mut b, "openid offline_access").await;
    let (_, t) = redeem_spa(&h, &code).await;
    let rt = t["refresh_token"].as_str().unwrap().to_owned();
    let body = [("grant_type", "refresh_token"), ("client_id", SPA), ("refresh_token", rt.as_str())];
    let results = futures::future::join_all((0..10).map(|_| token(&h, &body, None))).await;
    assert_eq!(results.iter().filter(|(s, _)| *s == StatusCode::OK).count(), 1, "{results:?}");
    let winner =
        results.iter().find(|(s, _)| *s == StatusCode::OK).unwrap().1["refresh_token"].as_str().unwrap().to_owned();
    let (s, _) =
        token(&h, &[("grant_type", "refresh_token"), ("client_id", SPA), ("refresh_token", &winner)], None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "the losers' replays revoked the family");
    // a refresh token is bound to its client
    let code = spa_code(&h, &mut b, "openid offline_access").await;
    let (_, t) = redeem_spa(&h, &code).await;
    let rt = t["refresh_token"].as_str().unwrap();
    let (s, _) = token(&h, &[("grant_type", "refresh_token"), ("refresh_token", rt)], Some((WEB, WEB_SECRET))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = token(&h, &[("grant_type", "refresh_token"), ("client_id", SPA), ("refresh_token", rt)], None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "presented by another client, the family is revoked");

    // a second authorization uses the session: no login page
    let again = b.get(&h.app, &spa_url("openid")).await;
    assert!(again.params().contains_key("code"), "{:?}", again.location);
}

#[tokio::test]
async fn a_malformed_refresh_request_is_refused_before_the_refresh_token_rotates() {
    let h = harness().await;
    let mut b = Browser::default();
    let code = spa_code(&h, &mut b, "openid offline_access").await;
    let (_, t) = redeem_spa(&h, &code).await;
    let rt = t["refresh_token"].as_str().unwrap().to_owned();
    let bad = [("grant_type", "refresh_token"), ("client_id", SPA), ("refresh_token", rt.as_str()), ("scope", "a\"b")];
    let (s, e) = token(&h, &bad, None).await;
    assert_eq!((s, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")));
    let (s, t2) = token(&h, &[("grant_type", "refresh_token"), ("client_id", SPA), ("refresh_token", &rt)], None).await;
    assert_eq!(s, StatusCode::OK, "the refused request spent nothing: {t2}");
}

#[tokio::test]
async fn consent_is_asked_for_required_scopes_and_remembered() {
    let h = harness().await;
    let mut b = Browser::default();
    // alice is not an admin: the admin rule does not match, so orders:admin is refused...
    let start = b.get(&h.app, &spa_url("openid orders:admin")).await;
    let denied = login_alice(&h, &mut b, &start).await;
    assert_eq!(denied.params().get("error").map(String::as_str), Some("invalid_scope"));
    assert_eq!(denied.params().get("iss").map(String::as_str), Some(ISSUER));

    // ...Bob signs in upstream (admins, mfa) and is asked to consent to it.
    let mut b = Browser::default();
    let start = b.get(&h.app, &spa_url("openid orders:admin")).await;
    let login = b.get(&h.app, start.location.as_deref().unwrap()).await;
    let request = login.hidden("request");
    let up = b.get(&h.app, &format!("{BASE}/v1/login/upstream?request={request}&upstream=corp")).await;
    let p = up.params();
    assert!(up.location.as_deref().unwrap().starts_with(&format!("{}/auth?", h.upstream.url)));
    assert_eq!(p["code_challenge_method"], "S256");
    assert_eq!(p["redirect_uri"], format!("{ISSUER}/v1/login/callback"));
    *h.upstream.nonce.lock().unwrap() = p["nonce"].clone();
    // a wrong code is refused upstream and shown on our page
    let state = p["state"].clone();
    let callback = b.get(&h.app, &format!("{BASE}/v1/login/callback?code=good&state={state}")).await;
    let consent = b.follow_to_consent(&h.app, callback).await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    // reloading the consent page shows it again (it is a GET of its own)
    let reloaded = b.get(&h.app, &format!("{BASE}/v1/consent?request={}", consent.hidden("request"))).await;
    assert_eq!(reloaded.status, StatusCode::OK, "{}", reloaded.body);
    assert!(consent.body.contains("Manage every order"), "{}", consent.body);
    let done = b.answer_consent(&h.app, &consent, "allow").await;
    let code = done.params()["code"].clone();
    let (s, t) = redeem_spa(&h, &code).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let id = id_token_claims(&h, t["id_token"].as_str().unwrap());
    assert_eq!(id["sub"], "corp|u-123", "namespaced by the upstream");
    assert_eq!(id["amr"], json!(["pwd", "mfa"]));
    assert_eq!(id["acr"], "2", "the upstream's mfa is a second factor");
    assert_eq!(id["groups"], json!(["admins"]));
    assert_eq!(t["scope"], "openid orders:admin");
    // consent is remembered in the session
    let again = b.get(&h.app, &spa_url("openid orders:admin")).await;
    assert!(again.params().contains_key("code"), "{:?} {}", again.location, again.body);
    // the upstream state is single-use
    let replay = b.get(&h.app, &format!("{BASE}/v1/login/callback?code=good&state={state}")).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert!(replay.location.is_none());
    let _ = &h.upstream.keys;
}

#[tokio::test]
async fn consent_denied_and_prompt_values_redirect_with_errors() {
    let h = harness().await;
    let mut b = Browser::default();
    let none = b.get(&h.app, &spa_url("openid&prompt=none")).await;
    assert_eq!(none.params().get("error").map(String::as_str), Some("login_required"));
    let start = b.get(&h.app, &spa_url("openid")).await;
    let ok = login_alice(&h, &mut b, &start).await;
    assert!(ok.params().contains_key("code"));
    // prompt=login shows the login page despite the session
    let again = b.get(&h.app, &spa_url("openid&prompt=login")).await;
    assert!(again.location.as_deref().unwrap().contains("/v1/login?request="));
    // prompt=consent asks, and deny goes back with access_denied
    let ask = b.get(&h.app, &spa_url("openid&prompt=consent")).await;
    let ask = b.follow_to_consent(&h.app, ask).await;
    assert_eq!(ask.status, StatusCode::OK);
    let denied = b.answer_consent(&h.app, &ask, "deny").await;
    assert_eq!(denied.params().get("error").map(String::as_str), Some("access_denied"));
    // a forged form (wrong csrf) is refused on our page
    let ask = b.get(&h.app, &spa_url("openid&prompt=consent")).await;
    let ask = b.follow_to_consent(&h.app, ask).await;
    let forged = b
        .post(
            &h.app,
            &format!("{BASE}/v1/consent"),
            &[("request", &ask.hidden("request")), ("csrf", "x"), ("decision", "allow")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
    assert!(forged.location.is_none());
    // another browser cannot continue alice's sign-in
    let mut other = Browser::default();
    let stolen = other.answer_consent(&h.app, &ask, "allow").await;
    assert_eq!(stolen.status, StatusCode::BAD_REQUEST);
    // wrong password: the login page again, 401
    let mut fresh = Browser::default();
    let start = fresh.get(&h.app, &spa_url("openid")).await;
    let login = fresh.get(&h.app, start.location.as_deref().unwrap()).await;
    let wrong = fresh.log_in(&h.app, &login, "alice", "x").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("Wrong username or password"));
    assert!(!fresh.cookies.contains_key("tessera_session"));
    // guessing is slowed down: after the burst, 429 with Retry-After
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(fresh.log_in(&h.app, &login, "alice", "x").await.status);
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
}

#[tokio::test]
async fn bad_clients_and_redirect_uris_are_shown_never_redirected() {
    let h = harness().await;
    let mut b = Browser::default();
    let c = challenge(VERIFIER);
    let pkce = [("code_challenge", c.as_str()), ("code_challenge_method", "S256")];
    let mutations = [
        "HTTPS://web.example.com/cb",
        "https://WEB.example.com/cb",
        "https://web.example.com/CB",
        "https://web.example.com/cb/",
        "https://web.example.com/cb?x=1",
        "https://web.example.com/cb#frag",
        "https://web.example.com/cb@evil.example",
        "https://evil.example@web.example.com/cb",
        "https://web.example.com%2Fcb",
        "https://web.example.com/cb%2F",
        "https://web.example.com%252Fcb",
        "https://web.example.com/%63b",
        "https://wéb.example.com/cb",
        "https://xn--wb-9ia.example.com/cb",
        " https://web.example.com/cb",
        "https://web.example.com/cb ",
        "https://web.example.com/x/../cb",
        "https://web.example.com/cb/../other",
        "http://web.example.com/cb",
        "https://web.example.com.evil.example/cb",
        "",
    ];
    for m in mutations {
        let page = b.get(&h.app, &authorize_url(WEB, m, "openid", &pkce)).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{m}");
        assert!(page.location.is_none(), "{m} redirected");
        assert!(page.body.contains("redirect_uri"), "{m}: {}", page.body);
    }
    for url in [
        authorize_url("team.nobody", WEB_REDIRECT, "openid", &pkce),
        format!("{BASE}/v1/authorize?response_type=code&redirect_uri={WEB_REDIRECT}"),
    ] {
        let page = b.get(&h.app, &url).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        assert!(page.location.is_none());
        assert!(page.body.contains("client_id"));
    }
    // loopback redirect URIs may use any port
    let any_port = b.get(&h.app, &authorize_url(SPA, "http://127.0.0.1:51999/callback", "openid", &pkce)).await;
    assert!(any_port.location.as_deref().unwrap().contains("/v1/login?request="));
}

#[tokio::test]
async fn request_errors_after_the_redirect_uri_is_known_go_back_with_iss() {
    let h = harness().await;
    let mut b = Browser::default();
    let c = challenge(VERIFIER);
    let cases: Vec<(String, &str)> = vec![
        (authorize_url(SPA, SPA_REDIRECT, "openid", &[]), "invalid_request"),
        (
            authorize_url(SPA, SPA_REDIRECT, "openid", &[("code_challenge", &c), ("code_challenge_method", "plain")]),
            "invalid_request",
        ),
        (
            authorize_url(
                SPA,
                SPA_REDIRECT,
                "openid",
                &[("code_challenge", "short"), ("code_challenge_method", "S256")],
            ),
            "invalid_request",
        ),
        (
            authorize_url(
                SPA,
                SPA_REDIRECT,
                "openid",
                &[("code_challenge", &c), ("code_challenge_method", "S256"), ("request", "x")],
            ),
            "invalid_request_object",
        ),
        (spa_url("openid").replace("response_type=code", "response_type=token"), "unsupported_response_type"),
        (spa_url("openid").replace("response_type=code", "response_type=code+id_token"), "unsupported_response_type"),
    ];
    for (url, expected) in cases {
        let page = b.get(&h.app, &url).await;
        let p = page.params();
        assert_eq!(p.get("error").map(String::as_str), Some(expected), "{url}");
        assert_eq!(p.get("iss").map(String::as_str), Some(ISSUER));
        assert_eq!(p.get("state").map(String::as_str), Some("st-1"));
        assert!(page.location.unwrap().starts_with(SPA_REDIRECT));
    }
}

#[tokio::test]
async fn pkce_downgrades_are_refused_and_burn_the_code() {
    let h = harness().await;
    let mut b = Browser::default();
    // challenge sent, no verifier: refused, and the right verifier afterwards is too late
    let code = spa_code(&h, &mut b, "openid").await;
    let (s, e) = token(
        &h,
        &[("grant_type", "authorization_code"), ("client_id", SPA), ("code", &code), ("redirect_uri", SPA_REDIRECT)],
        None,
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let (s, _) = redeem_spa(&h, &code).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // a short or wrong verifier
    for verifier in ["abc", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX"] {
        let code = spa_code(&h, &mut b, "openid").await;
        let (s, e) = token(
            &h,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", SPA),
                ("code", &code),
                ("redirect_uri", SPA_REDIRECT),
                ("code_verifier", verifier),
            ],
            None,
        )
        .await;
        assert_eq!((s, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{verifier}");
        assert_eq!(redeem_spa(&h, &code).await.0, StatusCode::BAD_REQUEST, "burned");
    }
    // a confidential client without a challenge, then a verifier at the token endpoint
    let start = b.get(&h.app, &authorize_url(WEB, WEB_REDIRECT, "openid", &[])).await;
    let code = start.params()["code"].clone();
    let (s, e) = token(
        &h,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", WEB_REDIRECT),
            ("code_verifier", VERIFIER),
        ],
        Some((WEB, WEB_SECRET)),
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    // and a redirect_uri other than the authorization request's
    let start = b.get(&h.app, &authorize_url(WEB, WEB_REDIRECT, "openid", &[])).await;
    let code = start.params()["code"].clone();
    let (s, _) = token(
        &h,
        &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", "https://web.example.com/other")],
        Some((WEB, WEB_SECRET)),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let start = b.get(&h.app, &authorize_url(WEB, WEB_REDIRECT, "openid", &[])).await;
    let code = start.params()["code"].clone();
    let (s, t) = token(
        &h,
        &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", WEB_REDIRECT)],
        Some((WEB, WEB_SECRET)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
}

#[tokio::test]
async fn a_code_redeemed_twice_succeeds_once_and_revokes_what_it_issued() {
    let h = harness().await;
    let mut b = Browser::default();
    let code = spa_code(&h, &mut b, "openid offline_access").await;
    let (s, t) = redeem_spa(&h, &code).await;
    assert_eq!(s, StatusCode::OK);
    let at = t["access_token"].as_str().unwrap().to_owned();
    assert!(introspect_active(&h, &at).await);
    let (s, e) = redeem_spa(&h, &code).await;
    assert_eq!((s, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert!(!introspect_active(&h, &at).await, "the first redemption's access token is revoked");
    let rt = t["refresh_token"].as_str().unwrap();
    let (s, _) = token(&h, &[("grant_type", "refresh_token"), ("client_id", SPA), ("refresh_token", rt)], None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "and its refresh token");

    // 20 at once: exactly one succeeds, and what it got is revoked
    let code = spa_code(&h, &mut b, "openid offline_access").await;
    let results = futures::future::join_all((0..20).map(|_| redeem_spa(&h, &code))).await;
    let ok: Vec<&Value> = results.iter().filter(|(s, _)| *s == StatusCode::OK).map(|(_, t)| t).collect();
    assert_eq!(ok.len(), 1, "{results:?}");
    assert!(!introspect_active(&h, ok[0]["access_token"].as_str().unwrap()).await);
    let (s, _) = token(
        &h,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", SPA),
            ("refresh_token", ok[0]["refresh_token"].as_str().unwrap()),
        ],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn device_flow_polls_then_gets_tokens_after_approval() {
    let h = harness().await;
    let (s, d) = {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([("client_id", SPA), ("scope", "openid offline_access orders:read")])
            .finish();
        let req = Request::post(format!("{BASE}/v1/device/authorize"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        let resp = h.app.clone().oneshot(req).await.unwrap();
        let s = resp.status();
        (s, serde_json::from_slice::<Value>(&axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap()).unwrap())
    };
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["verification_uri"], format!("{ISSUER}/v1/device"));
    assert_eq!(d["interval"], 5);
    let device_code = d["device_code"].as_str().unwrap().to_owned();
    let poll_body = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", SPA),
        ("device_code", device_code.as_str()),
    ];
    let poll = || token(&h, &poll_body, None);
    assert_eq!(poll().await.1["error"], "authorization_pending");
    assert_eq!(poll().await.1["error"], "slow_down");
    // another client cannot redeem it
    let (s, _) = token(
        &h,
        &[("grant_type", "urn:ietf:params:oauth:grant-type:device_code"), ("device_code", &device_code)],
        Some((WEB, WEB_SECRET)),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let mut b = Browser::default();
    let entry = b.get(&h.app, d["verification_uri_complete"].as_str().unwrap()).await;
    assert_eq!(entry.status, StatusCode::OK);
    let wrong = b.post(&h.app, &format!("{BASE}/v1/device"), &[("user_code", "BCDF-GHJK")]).await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    let typed = d["user_code"].as_str().unwrap().to_lowercase();
    let to_login = b.post(&h.app, &format!("{BASE}/v1/device"), &[("user_code", &typed)]).await;
    let consent = login_alice(&h, &mut b, &to_login).await;
    let consent = b.follow_to_consent(&h.app, consent).await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    assert!(consent.body.contains("A device is asking"));
    let done = b.answer_consent(&h.app, &consent, "allow").await;
    assert!(done.body.contains("Device connected"), "{}", done.body);
    let (s, t) = poll().await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(id_token_claims(&h, t["id_token"].as_str().unwrap())["sub"], "static|alice-1");
    assert!(t["refresh_token"].is_string());
    assert_eq!(poll().await.1["error"], "expired_token", "a device code is redeemed once");
    // the user code is spent
    let reused = b.post(&h.app, &format!("{BASE}/v1/device"), &[("user_code", &typed)]).await;
    assert_eq!(reused.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn logout_has_pages_of_its_own_that_name_the_parameter_at_fault() {
    let h = harness().await;
    let mut b = Browser::default();
    // A bare GET, signed in or not, asks first and signs nobody out.
    let bare = b.get(&h.app, &format!("{BASE}/v1/logout")).await;
    assert_eq!(bare.status, StatusCode::OK);
    assert!(bare.body.contains("<title>Sign out?</title>") && bare.body.contains("method=\"post\""), "{}", bare.body);
    let code = spa_code(&h, &mut b, "openid").await;
    let (_, t) = redeem_spa(&h, &code).await;
    let bare = b.get(&h.app, &format!("{BASE}/v1/logout")).await;
    assert!(bare.body.contains("<title>Sign out?</title>"), "{}", bare.body);
    assert!(b.cookies.contains_key("tessera_session"), "a bare GET ended the session");
    let redirect = "post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A8400%2F";
    for (query, names) in [
        (redirect.to_owned(), "id_token_hint is missing"),
        (format!("id_token_hint=not-a-token&{redirect}"), "id_token_hint is not an ID token"),
        (format!("client_id=nobody&{redirect}"), "client_id names no application"),
        (format!("client_id={SPA}&{redirect}x"), "post_logout_redirect_uri is not registered"),
        (format!("id_token_hint={}&client_id=other", t["id_token"].as_str().unwrap()), "client_id does not match"),
    ] {
        let r = b.get(&h.app, &format!("{BASE}/v1/logout?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(r.body.contains("<title>Sign-out error</title>"), "{query}: {}", r.body);
        assert!(r.body.contains(names), "{query}: {}", r.body);
        assert!(r.location.is_none());
    }
    assert!(b.cookies.contains_key("tessera_session"), "a refused logout ended the session");
}

#[tokio::test]
async fn logout_ends_the_session_and_returns_only_to_registered_uris() {
    let h = harness().await;
    let mut b = Browser::default();
    let code = spa_code(&h, &mut b, "openid").await;
    let (_, t) = redeem_spa(&h, &code).await;
    let hint = t["id_token"].as_str().unwrap();
    let bad = b
        .get(
            &h.app,
            &format!("{BASE}/v1/logout?id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F"),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.location.is_none());
    assert!(b.cookies.contains_key("tessera_session"), "a refused logout keeps the session");
    let out = b
        .get(
            &h.app,
            &format!("{BASE}/v1/logout?id_token_hint={hint}&post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A8400%2F&state=bye"),
        )
        .await;
    assert_eq!(out.location.as_deref(), Some("http://127.0.0.1:8400/?state=bye"));
    assert!(!b.cookies.contains_key("tessera_session"));
    let none = b.get(&h.app, &spa_url("openid&prompt=none")).await;
    assert_eq!(none.params().get("error").map(String::as_str), Some("login_required"));
}

#[tokio::test]
async fn discovery_lists_the_browser_endpoints() {
    let h = harness().await;
    let mut b = Browser::default();
    let d = b.get(&h.app, &format!("{BASE}/.well-known/openid-configuration")).await.json();
    assert_eq!(d["authorization_endpoint"], format!("{ISSUER}/v1/authorize"));
    assert_eq!(d["userinfo_endpoint"], format!("{ISSUER}/v1/userinfo"));
    assert_eq!(d["end_session_endpoint"], format!("{ISSUER}/v1/logout"));
    assert_eq!(d["device_authorization_endpoint"], format!("{ISSUER}/v1/device/authorize"));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
}

#[tokio::test]
async fn a_token_store_outage_answers_503_pages_and_keeps_the_kubelet_probe_ready() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = crate::store::RedisStore::new(&format!("redis://127.0.0.1:{port}")).unwrap();
    let h = harness_with_store(Arc::new(store)).await;
    let mut b = Browser::default();
    let strict = b.get(&h.app, "/readyz").await;
    assert_eq!(strict.status, StatusCode::SERVICE_UNAVAILABLE);
    let kubelet = b.get(&h.app, KUBELET_READINESS_PATH).await;
    assert_eq!(kubelet.status, StatusCode::OK);
    assert!(kubelet.body.starts_with("degraded: token store unavailable"), "{}", kubelet.body);
    let page = b.get(&h.app, &spa_url("openid")).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{}", page.body);
    assert!(page.location.is_none());
    assert!(page.body.contains("temporarily unavailable"), "{}", page.body);
    let (s, e) = redeem_spa(&h, "some-code").await;
    assert_eq!((s, e["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("temporarily_unavailable")));
}

/// Claims and request parameters of OpenID Connect Core (issue 20).
mod claims;
