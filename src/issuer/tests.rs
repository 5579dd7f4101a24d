//! HTTP tests of the issuer, in-process, including the negative table of issue 4.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::api::SigningAlgorithm;
use crate::keys::{self, ActiveKeys};
use crate::standalone::{StateDir, compile_all, manifests};
use crate::store::MemoryStore;

const ISSUER: &str = "http://127.0.0.1:9/oauth2/payments";
const TOKEN: &str = "/oauth2/payments/v1/token";

/// A JWT issuer we control: discovery and JWKS on a loopback port, and a key to sign with.
struct FakeIssuer {
    url: String,
    keys: ActiveKeys,
    jwk: serde_json::Map<String, Value>,
    /// How many times its JWKS was fetched.
    jwks_fetches: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeIssuer {
    async fn start() -> Self {
        Self::start_with(SigningAlgorithm::ES256).await
    }

    async fn start_with(alg: SigningAlgorithm) -> Self {
        let now = jiff::Timestamp::now();
        let key = keys::generate(alg, now, now - jiff::SignedDuration::from_secs(60)).unwrap();
        let jwk = key.public_jwk.clone();
        let active = ActiveKeys::new(&keys::KeySet { keys: vec![key] }).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let discovery = json!({ "issuer": url, "jwks_uri": format!("{url}/openid/v1/jwks") });
        let jwks = json!({ "keys": [jwk] });
        let jwks_fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = jwks_fetches.clone();
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/openid/v1/jwks",
                axum::routing::get(move || {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async move { axum::Json(jwks) }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, keys: active, jwk, jwks_fetches }
    }

    fn sign(&self, claims: Value) -> String {
        self.keys.sign_access_token(jiff::Timestamp::now(), &claims).unwrap().0
    }
}

struct Harness {
    app: axum::Router,
    issuer: Arc<Issuer>,
    kube: FakeIssuer,
    ci: FakeIssuer,
    client_key: FakeIssuer,
}

async fn harness() -> Harness {
    harness_with("").await
}

async fn harness_with(server_extra: &str) -> Harness {
    // Kubernetes signs ServiceAccount tokens with RS256.
    let kube = FakeIssuer::start_with(SigningAlgorithm::RS256).await;
    let ci = FakeIssuer::start().await;
    let client_key = FakeIssuer::start().await;
    let yaml = format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: {{ name: payments, namespace: identity }}
spec:
  issuer: {ISSUER}
  audiences: [api://payments]
  signing: {{ algorithm: ES256 }}
  clientNamespaces: {{ from: All }}
  trustedOrigins: [http://localhost:3000]
  trustedIssuers:
    - kubernetes: true
    - issuer: {ci}
      audiences: [api://payments]
{server_extra}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthScope
metadata: {{ name: read, namespace: identity }}
spec: {{ serverRef: {{ name: payments }}, name: payments:read, default: true }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthScope
metadata: {{ name: admin, namespace: identity }}
spec: {{ serverRef: {{ name: payments }}, name: payments:admin, discoverable: false }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClaim
metadata: {{ name: subject-ns, namespace: identity }}
spec: {{ serverRef: {{ name: payments }}, name: subject_namespace, value: "subject == null ? null : subject.sub" }}
---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: machines, namespace: identity }}
spec:
  serverRef: {{ name: payments }}
  clients: {{ all: true }}
  rules:
    - {{ name: m2m, grantTypes: [client_credentials, "urn:ietf:params:oauth:grant-type:token-exchange"], scopes: [payments:read] }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: basic, namespace: team }}
spec:
  serverRef: {{ name: payments, namespace: identity }}
  grantTypes: [client_credentials]
  authentication: {{ method: ClientSecretBasic }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: basic-oauth, namespace: team }}
stringData: {{ client_secret: basic-secret }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: post, namespace: team }}
spec:
  serverRef: {{ name: payments, namespace: identity }}
  grantTypes: [client_credentials, "urn:ietf:params:oauth:grant-type:token-exchange"]
  authentication: {{ method: ClientSecretPost }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: post-oauth, namespace: team }}
stringData: {{ client_secret: post-secret }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: pkjwt, namespace: team }}
spec:
  serverRef: {{ name: payments, namespace: identity }}
  grantTypes: [client_credentials]
  authentication: {{ method: PrivateKeyJwt, jwks: {{ keys: [{jwk}] }} }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: worker, namespace: team }}
spec:
  serverRef: {{ name: payments, namespace: identity }}
  grantTypes: [client_credentials]
  authentication: {{ method: ServiceAccount, serviceAccountName: worker }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: public, namespace: team }}
spec:
  serverRef: {{ name: payments, namespace: identity }}
  grantTypes: [authorization_code]
  redirectUris: [http://localhost:3000/callback]
  authentication: {{ method: None }}
"#,
        ci = ci.url,
        jwk = serde_json::to_string(&client_key.jwk).unwrap(),
    );
    let mut m = manifests::Manifests::default();
    manifests::add_documents(&mut m, Path::new("test.yaml"), &yaml).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let compiled = compile_all(&m, Some(&StateDir::new(dir.path().into()))).unwrap().remove(0);
    assert!(compiled.rejected.is_empty(), "{:?}", compiled.rejected);
    let now = jiff::Timestamp::now();
    let key = keys::generate(SigningAlgorithm::ES256, now, now).unwrap();
    let served = Served::new(compiled.config, &keys::KeySet { keys: vec![key] }).unwrap();
    let options = IssuerOptions { kubernetes_issuer: Some(kube.url.clone()), ..Default::default() };
    let issuer = Issuer::new(options, Arc::new(MemoryStore::new()));
    issuer.replace(served);
    Harness { app: issuer.router(), issuer, kube, ci, client_key }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
}

impl Reply {
    fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }
}

async fn send(app: &axum::Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, headers, json }
}

fn form(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn basic(path: &str, id: &str, secret: &str, body: &str) -> Request<Body> {
    let mut r = form(path, body);
    let v = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
    r.headers_mut().insert(header::AUTHORIZATION, v.parse().unwrap());
    r
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn assertion_body(assertion: &str) -> String {
    format!(
        "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
    )
}

fn pkjwt_claims(jti: &str) -> Value {
    json!({ "iss": "team.pkjwt", "sub": "team.pkjwt", "aud": format!("{ISSUER}/v1/token"), "exp": now() + 60, "iat": now(), "jti": jti })
}

fn sa_claims(sub: &str, aud: &str, exp: i64, kube: &FakeIssuer) -> Value {
    json!({ "iss": kube.url, "sub": sub, "aud": [aud], "exp": exp, "iat": now() - 5 })
}

// --- discovery and keys ---

#[tokio::test]
async fn discovery_is_served_under_the_issuer_path_and_in_rfc8414_form() {
    let h = harness().await;
    for path in [
        "/oauth2/payments/.well-known/openid-configuration",
        "/oauth2/payments/.well-known/oauth-authorization-server",
        "/.well-known/oauth-authorization-server/oauth2/payments",
    ] {
        let r = send(&h.app, get(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.json["issuer"], ISSUER);
        assert_eq!(r.json["token_endpoint"], format!("{ISSUER}/v1/token"));
        let scopes: Vec<&str> =
            r.json["scopes_supported"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(scopes.contains(&"payments:read"));
        assert!(!scopes.contains(&"payments:admin"), "non-discoverable scope listed");
    }
    assert_eq!(send(&h.app, get("/oauth2/other/v1/keys")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_server_without_sign_in_advertises_the_none_response_type_not_an_empty_list() {
    let h = harness().await;
    for path in
        ["/oauth2/payments/.well-known/openid-configuration", "/.well-known/oauth-authorization-server/oauth2/payments"]
    {
        let d = send(&h.app, get(path)).await.json;
        assert_eq!(d["response_types_supported"], json!(["none"]), "{path}");
        assert!(d.get("authorization_endpoint").is_none(), "{path}");
    }
}

#[tokio::test]
async fn an_algorithm_change_keeps_the_old_algorithm_advertised_while_its_key_is_published() {
    let h = harness().await;
    let config = h.issuer.current("identity", "payments").unwrap().config.clone();
    assert_eq!(config.signing.algorithm, SigningAlgorithm::ES256);
    let now = jiff::Timestamp::now();
    let hour = jiff::SignedDuration::from_hours(1);
    // RS256 signed until now and stays published an hour; the configured ES256 key signs.
    let mut old = keys::generate(SigningAlgorithm::RS256, now - hour * 48, now - hour * 48).unwrap();
    old.retires_at = Some(now);
    old.delete_at = Some(now + hour);
    let new = keys::generate(SigningAlgorithm::ES256, now - hour * 24, now).unwrap();
    let algs = |keys: Vec<keys::StoredKey>| {
        let served = Served::new(config.clone(), &keys::KeySet { keys }).unwrap();
        discovery::metadata(&served, now)["id_token_signing_alg_values_supported"].clone()
    };
    assert_eq!(algs(vec![old.clone(), new.clone()]), json!(["ES256", "RS256"]), "retired RS256 key still published");
    // Before the switch: RS256 signs, the ES256 Next key is published.
    let mut signing_old = old.clone();
    signing_old.retires_at = Some(now + hour);
    signing_old.delete_at = Some(now + hour * 2);
    let mut next = new.clone();
    next.activates_at = now + hour;
    assert_eq!(algs(vec![signing_old, next]), json!(["RS256", "ES256"]), "old algorithm signs");
    // Once the old key is deleted, only ES256 is left.
    old.delete_at = Some(now);
    assert_eq!(algs(vec![old, new]), json!(["ES256"]));
    // Through the endpoint: the harness's one ES256 key.
    let d = send(&h.app, get("/oauth2/payments/.well-known/openid-configuration")).await.json;
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["ES256"]));
}

#[tokio::test]
async fn discovery_of_a_server_without_sign_in_advertises_no_scopes_for_people() {
    let h = harness().await;
    let r = send(&h.app, get("/oauth2/payments/.well-known/openid-configuration")).await;
    let scopes: Vec<&str> = r.json["scopes_supported"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for s in ["openid", "profile", "email", "address", "phone", "offline_access"] {
        assert!(!scopes.contains(&s), "{s} advertised, but nobody can sign in: {scopes:?}");
    }
    let claims: Vec<&str> = r.json["claims_supported"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(claims.contains(&"scope") && !claims.contains(&"email"), "{claims:?}");
}

#[tokio::test]
async fn jwks_lists_public_members_with_cache_control() {
    let h = harness().await;
    let r = send(&h.app, get("/oauth2/payments/v1/keys")).await;
    assert_eq!(r.status, StatusCode::OK);
    let keys = r.json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("d").is_none());
    assert_eq!(keys[0]["alg"], "ES256");
    let cc = r.headers[header::CACHE_CONTROL].to_str().unwrap();
    assert!(cc.starts_with("max-age=") && cc.contains("must-revalidate"), "{cc}");
}

// --- token: success per client authentication method ---

async fn access_token_claims(h: &Harness, r: &Reply) -> serde_json::Map<String, Value> {
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let token = r.json["access_token"].as_str().unwrap();
    let jwks = send(&h.app, get("/oauth2/payments/v1/keys")).await.json;
    let keys: Vec<_> = jwks["keys"].as_array().unwrap().iter().map(|k| k.as_object().unwrap().clone()).collect();
    let v = crate::keys::jwt::verify_signature(token, &keys).unwrap();
    assert_eq!(v.header.typ.as_deref(), Some("at+jwt"));
    v.claims
}

#[tokio::test]
async fn client_secret_basic_gets_an_rfc9068_token_with_okta_claims() {
    let h = harness().await;
    let r =
        send(&h.app, basic(TOKEN, "team.basic", "basic-secret", "grant_type=client_credentials&scope=payments%3Aread"))
            .await;
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let c = access_token_claims(&h, &r).await;
    for claim in ["ver", "jti", "iss", "aud", "iat", "exp", "cid", "scp", "scope", "sub", "client_id"] {
        assert!(c.contains_key(claim), "missing {claim}");
    }
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["aud"], "api://payments");
    assert_eq!(c["sub"], "team.basic");
    assert_eq!(c["scp"], json!(["payments:read"]));
    assert_eq!(c["scope"], "payments:read", "RFC 9068 §2.2.3 scope beside Okta's scp");
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.json["expires_in"], 3600);
}

#[tokio::test]
async fn client_secret_post_gets_default_scopes() {
    let h = harness().await;
    let r =
        send(&h.app, form(TOKEN, "grant_type=client_credentials&client_id=team.post&client_secret=post-secret")).await;
    let c = access_token_claims(&h, &r).await;
    assert_eq!(c["scp"], json!(["payments:read"]));
}

#[tokio::test]
async fn private_key_jwt_works_once_and_replay_is_refused() {
    let h = harness().await;
    let a = h.client_key.sign(pkjwt_claims("one"));
    let r = send(&h.app, form(TOKEN, &assertion_body(&a))).await;
    access_token_claims(&h, &r).await;
    let again = send(&h.app, form(TOKEN, &assertion_body(&a))).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert_eq!(again.error(), "invalid_client");
    assert!(again.json["error_description"].as_str().unwrap().contains("already used"));
}

#[tokio::test]
async fn private_key_jwt_with_wrong_audience_is_refused() {
    let h = harness().await;
    let mut claims = pkjwt_claims("aud");
    claims["aud"] = json!("https://elsewhere.example.com/token");
    let r = send(&h.app, form(TOKEN, &assertion_body(&h.client_key.sign(claims)))).await;
    assert_eq!((r.status, r.error()), (StatusCode::UNAUTHORIZED, "invalid_client"));
}

#[tokio::test]
async fn alg_none_assertion_is_refused() {
    let h = harness().await;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(pkjwt_claims("none").to_string());
    let r = send(&h.app, form(TOKEN, &assertion_body(&format!("{header}.{claims}.")))).await;
    assert_eq!((r.status, r.error()), (StatusCode::UNAUTHORIZED, "invalid_client"));
    assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let h = harness().await;
    let header =
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, h.client_key.jwk["kid"].as_str().unwrap()));
    let claims = URL_SAFE_NO_PAD.encode(pkjwt_claims("hs").to_string());
    let input = format!("{header}.{claims}");
    // The attacker's HMAC key: the client's public key as published.
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        serde_json::to_string(&h.client_key.jwk).unwrap().as_bytes(),
    );
    let sig = URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref());
    let r = send(&h.app, form(TOKEN, &assertion_body(&format!("{input}.{sig}")))).await;
    assert_eq!((r.status, r.error()), (StatusCode::UNAUTHORIZED, "invalid_client"));
}

#[tokio::test]
async fn service_account_token_authenticates_its_bound_client() {
    let h = harness().await;
    let sa = h.kube.sign(sa_claims("system:serviceaccount:team:worker", ISSUER, now() + 600, &h.kube));
    let r = send(&h.app, form(TOKEN, &assertion_body(&sa))).await;
    let c = access_token_claims(&h, &r).await;
    assert_eq!(c["client_id"], "team.worker");
}

#[tokio::test]
async fn service_account_token_expired_wrong_audience_or_other_namespace_is_refused() {
    let h = harness().await;
    let cases = [
        ("expired", sa_claims("system:serviceaccount:team:worker", ISSUER, now() - 120, &h.kube)),
        (
            "wrong audience",
            sa_claims("system:serviceaccount:team:worker", "https://kubernetes.default.svc", now() + 600, &h.kube),
        ),
        ("other namespace", sa_claims("system:serviceaccount:other:worker", ISSUER, now() + 600, &h.kube)),
    ];
    for (case, claims) in cases {
        let body = format!("{}&client_id=team.worker", assertion_body(&h.kube.sign(claims)));
        let r = send(&h.app, form(TOKEN, &body)).await;
        assert_eq!((r.status, r.error()), (StatusCode::UNAUTHORIZED, "invalid_client"), "{case}: {}", r.json);
    }
    // A token from another issuer (signed by a key the cluster never published) is refused too.
    let forged = h.ci.sign(sa_claims("system:serviceaccount:team:worker", ISSUER, now() + 600, &h.kube));
    let r = send(&h.app, form(TOKEN, &assertion_body(&forged))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

// --- token: the negative table ---

#[tokio::test]
async fn wrong_secret_and_unknown_client_are_invalid_client_with_www_authenticate() {
    let h = harness().await;
    for (id, secret) in [("team.basic", "wrong"), ("team.nobody", "basic-secret"), ("team.post", "post-secret")] {
        let r = send(&h.app, basic(TOKEN, id, secret, "grant_type=client_credentials")).await;
        assert_eq!((r.status, r.error()), (StatusCode::UNAUTHORIZED, "invalid_client"), "{id}");
        assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
    }
}

#[tokio::test]
async fn disallowed_grant_is_unauthorized_client() {
    let h = harness().await;
    let body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=x&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt";
    let r = send(&h.app, basic(TOKEN, "team.basic", "basic-secret", body)).await;
    assert_eq!((r.status, r.error()), (StatusCode::BAD_REQUEST, "unauthorized_client"));
    let r = send(&h.app, basic(TOKEN, "team.basic", "basic-secret", "grant_type=password")).await;
    assert_eq!(r.error(), "unsupported_grant_type");
}

#[tokio::test]
async fn scope_not_allowed_is_invalid_scope() {
    let h = harness().await;
    for scope in ["payments%3Aadmin", "payments%3Aread+payments%3Aadmin", "nope", "openid"] {
        let r = send(
            &h.app,
            basic(TOKEN, "team.basic", "basic-secret", &format!("grant_type=client_credentials&scope={scope}")),
        )
        .await;
        assert_eq!((r.status, r.error()), (StatusCode::BAD_REQUEST, "invalid_scope"), "{scope}");
    }
}

#[tokio::test]
async fn malformed_requests_never_panic_or_500() {
    let h = harness().await;
    let cases: Vec<Request<Body>> = vec![
        Request::post(TOKEN).header(header::CONTENT_TYPE, "application/json").body(Body::from("{}")).unwrap(),
        Request::post(TOKEN).body(Body::from("grant_type=client_credentials")).unwrap(),
        form(TOKEN, "grant_type=client_credentials&grant_type=client_credentials"),
        form(TOKEN, "%%%&&&==="),
        form(TOKEN, ""),
        basic(TOKEN, "team.basic", "basic-secret", "grant_type=client_credentials&scope=%22bad%22"),
        form(
            TOKEN,
            &format!(
                "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={}",
                "a.b.c"
            ),
        ),
        form(TOKEN, &"a".repeat(MAX_BODY + 1)),
        Request::get(TOKEN).body(Body::empty()).unwrap(),
        Request::post(TOKEN)
            .header(header::AUTHORIZATION, "Basic !!!")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("grant_type=client_credentials"))
            .unwrap(),
    ];
    for (i, req) in cases.into_iter().enumerate() {
        let r = send(&h.app, req).await;
        assert!(r.status.is_client_error(), "case {i}: {}", r.status);
        assert!(r.json["error"].is_string(), "case {i}: {}", r.json);
    }
}

#[tokio::test]
async fn suspended_server_answers_503() {
    let h = harness_with("  suspended: true").await;
    let r = send(&h.app, basic(TOKEN, "team.basic", "basic-secret", "grant_type=client_credentials")).await;
    assert_eq!((r.status, r.error()), (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"));
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let h = harness_with("  rateLimit: { perClient: 1, burst: 2 }").await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = send(&h.app, basic(TOKEN, "team.basic", "basic-secret", "grant_type=client_credentials")).await;
        statuses.push(r.status);
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers.contains_key(header::RETRY_AFTER));
        }
    }
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
}

#[tokio::test]
async fn cors_allows_trusted_origins_only() {
    let h = harness().await;
    let mut req = get("/oauth2/payments/v1/keys");
    req.headers_mut().insert(header::ORIGIN, "http://localhost:3000".parse().unwrap());
    let r = send(&h.app, req).await;
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://localhost:3000");
    let mut req = get("/oauth2/payments/v1/keys");
    req.headers_mut().insert(header::ORIGIN, "https://evil.example.com".parse().unwrap());
    assert!(!send(&h.app, req).await.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}

// --- token exchange ---

fn exchange_body(token: &str) -> String {
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&client_id=team.post&client_secret=post-secret&subject_token={token}&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
    )
}

#[tokio::test]
async fn token_exchange_with_a_trusted_issuer_carries_the_issuer_in_the_subject() {
    let h = harness().await;
    let subject =
        h.ci.sign(json!({ "iss": h.ci.url, "sub": "repo:acme/payments", "aud": "api://payments", "exp": now() + 300 }));
    let r = send(&h.app, form(TOKEN, &exchange_body(&subject))).await;
    assert_eq!(r.json["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    let c = access_token_claims(&h, &r).await;
    // `<issuer>#<sub>`: no trusted issuer can hand out a client's or a ServiceAccount's `sub`.
    assert_eq!(c["sub"], format!("{}#repo:acme/payments", h.ci.url));
    assert_eq!(c["cid"], "team.post");
    assert_eq!(c["subject_namespace"], "repo:acme/payments");
}

#[tokio::test]
async fn token_exchange_with_a_kubernetes_service_account_token() {
    let h = harness().await;
    let subject = h.kube.sign(sa_claims("system:serviceaccount:team:worker", ISSUER, now() + 300, &h.kube));
    let r = send(&h.app, form(TOKEN, &exchange_body(&subject))).await;
    let c = access_token_claims(&h, &r).await;
    assert_eq!(c["sub"], "system:serviceaccount:team:worker");
    // The Kubernetes issuer's tokens keep their `sub` only in the ServiceAccount form.
    let odd = h.kube.sign(sa_claims("team.basic", ISSUER, now() + 300, &h.kube));
    assert_eq!(send(&h.app, form(TOKEN, &exchange_body(&odd))).await.error(), "invalid_grant");
}

#[tokio::test]
async fn token_exchange_with_an_untrusted_issuer_is_invalid_grant() {
    let h = harness().await;
    let rogue = FakeIssuer::start().await;
    let subject =
        rogue.sign(json!({ "iss": rogue.url, "sub": "mallory", "aud": "api://payments", "exp": now() + 300 }));
    let r = send(&h.app, form(TOKEN, &exchange_body(&subject))).await;
    assert_eq!((r.status, r.error()), (StatusCode::BAD_REQUEST, "invalid_grant"));
    // A trusted issuer's name on a token signed by someone else fails the signature check.
    let forged = rogue.sign(json!({ "iss": h.ci.url, "sub": "mallory", "aud": "api://payments", "exp": now() + 300 }));
    let r = send(&h.app, form(TOKEN, &exchange_body(&forged))).await;
    assert_eq!(r.error(), "invalid_grant");
    // And an expired subject token.
    let expired = h.ci.sign(json!({ "iss": h.ci.url, "sub": "x", "aud": "api://payments", "exp": now() - 300 }));
    assert_eq!(send(&h.app, form(TOKEN, &exchange_body(&expired))).await.error(), "invalid_grant");
}

#[tokio::test]
async fn refresh_token_grant_with_an_unknown_token_is_invalid_grant() {
    let h = harness().await;
    let _ = &h.issuer;
    let r = send(
        &h.app,
        form(TOKEN, "grant_type=refresh_token&refresh_token=nope&client_id=team.post&client_secret=post-secret"),
    )
    .await;
    // team.post may not use refresh_token at all.
    assert_eq!(r.error(), "unauthorized_client");
}

// --- introspection and revocation ---

#[tokio::test]
async fn introspection_then_revocation_makes_the_token_inactive() {
    let h = harness().await;
    let r = send(&h.app, basic(TOKEN, "team.basic", "basic-secret", "grant_type=client_credentials")).await;
    let token = r.json["access_token"].as_str().unwrap().to_owned();
    let body = format!("token={token}");
    let i = send(&h.app, basic("/oauth2/payments/v1/introspect", "team.basic", "basic-secret", &body)).await;
    assert_eq!(i.json["active"], true, "{}", i.json);
    assert_eq!(i.json["scope"], "payments:read");
    assert_eq!(i.json["client_id"], "team.basic");
    // Another client may not revoke it: the same 200, and the token stays active.
    let other = send(
        &h.app,
        form("/oauth2/payments/v1/revoke", &format!("{body}&client_id=team.post&client_secret=post-secret")),
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    let i = send(&h.app, basic("/oauth2/payments/v1/introspect", "team.basic", "basic-secret", &body)).await;
    assert_eq!(i.json["active"], true, "{}", i.json);
    let rv = send(&h.app, basic("/oauth2/payments/v1/revoke", "team.basic", "basic-secret", &body)).await;
    assert_eq!(rv.status, StatusCode::OK);
    let i = send(&h.app, basic("/oauth2/payments/v1/introspect", "team.basic", "basic-secret", &body)).await;
    assert_eq!(i.json, json!({ "active": false }));
}

#[tokio::test]
async fn introspection_needs_client_authentication_and_garbage_is_inactive() {
    let h = harness().await;
    let r = send(&h.app, form("/oauth2/payments/v1/introspect", "token=abc")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&h.app, basic("/oauth2/payments/v1/introspect", "team.basic", "basic-secret", "token=a.b.c")).await;
    assert_eq!(r.json, json!({ "active": false }));
    let r = send(&h.app, basic("/oauth2/payments/v1/revoke", "team.basic", "basic-secret", "token=a.b.c")).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn swapped_keys_are_served_at_once() {
    let h = harness().await;
    let before = send(&h.app, get("/oauth2/payments/v1/keys")).await.json;
    let current = h.issuer.current("identity", "payments").unwrap();
    let now = jiff::Timestamp::now();
    let key = keys::generate(SigningAlgorithm::EdDSA, now, now).unwrap();
    h.issuer.replace(Served::new(current.config.clone(), &keys::KeySet { keys: vec![key] }).unwrap());
    let after = send(&h.app, get("/oauth2/payments/v1/keys")).await.json;
    assert_ne!(before, after);
    assert_eq!(after["keys"][0]["alg"], "EdDSA");
}

#[tokio::test]
async fn health_endpoints_report_liveness_and_readiness() {
    let empty = Issuer::new(IssuerOptions::default(), Arc::new(MemoryStore::new())).router();
    let r = empty.clone().oneshot(get("/readyz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(empty.oneshot(get("/livez")).await.unwrap().status(), StatusCode::OK);
    let h = harness().await;
    assert_eq!(h.app.clone().oneshot(get("/readyz")).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn one_process_serves_several_servers_by_issuer_path() {
    let h = harness().await;
    let mut other = h.issuer.current("identity", "payments").unwrap().config.clone();
    other.name = "orders".into();
    other.issuer = "http://127.0.0.1:9/oauth2/orders".into();
    let now = jiff::Timestamp::now();
    let key = keys::generate(SigningAlgorithm::EdDSA, now, now).unwrap();
    h.issuer.replace(Served::new(other, &keys::KeySet { keys: vec![key] }).unwrap());
    let a = send(&h.app, get("/oauth2/payments/.well-known/openid-configuration")).await;
    let b = send(&h.app, get("/oauth2/orders/.well-known/openid-configuration")).await;
    assert_eq!(a.json["issuer"], ISSUER);
    assert_eq!(b.json["issuer"], "http://127.0.0.1:9/oauth2/orders");
    let keys_b = send(&h.app, get("/oauth2/orders/v1/keys")).await;
    assert_eq!(keys_b.json["keys"][0]["alg"], "EdDSA");
    // A token of one server is not active at the other.
    let t = send(&h.app, basic(TOKEN, "team.basic", "basic-secret", "grant_type=client_credentials")).await;
    let body = format!("token={}", t.json["access_token"].as_str().unwrap());
    let i = send(&h.app, basic("/oauth2/orders/v1/introspect", "team.basic", "basic-secret", &body)).await;
    assert_eq!(i.json, json!({ "active": false }));
}

#[tokio::test]
async fn trusted_keys_are_fetched_when_config_loads_not_on_the_token_path() {
    use std::sync::atomic::Ordering::SeqCst;
    let h = harness().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while h.kube.jwks_fetches.load(SeqCst) == 0 || h.ci.jwks_fetches.load(SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "keys were not fetched ahead of use");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let before = h.kube.jwks_fetches.load(SeqCst);
    let sa = h.kube.sign(sa_claims("system:serviceaccount:team:worker", ISSUER, now() + 600, &h.kube));
    let r = send(&h.app, form(TOKEN, &assertion_body(&sa))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(h.kube.jwks_fetches.load(SeqCst), before, "the token request fetched keys");
}

#[tokio::test]
async fn public_clients_may_not_introspect_or_get_machine_tokens() {
    let h = harness().await;
    let t = send(&h.app, basic(TOKEN, "team.basic", "basic-secret", "grant_type=client_credentials")).await;
    let body = format!("token={}&client_id=team.public", t.json["access_token"].as_str().unwrap());
    let r = send(&h.app, form("/oauth2/payments/v1/introspect", &body)).await;
    assert_eq!((r.status, r.error()), (StatusCode::UNAUTHORIZED, "invalid_client"));
    let r = send(&h.app, form(TOKEN, "grant_type=client_credentials&client_id=team.public")).await;
    assert_eq!(r.error(), "unauthorized_client");
}

#[tokio::test]
async fn basic_credentials_are_form_decoded_and_raw_ones_still_work() {
    let h = harness_with("").await;
    let mut current = h.issuer.current("identity", "payments").unwrap().config.clone();
    let odd = "a+b%2Fc&d=e";
    if let Some(c) = current.clients.iter_mut().find(|c| c.client_id == "team.basic") {
        c.secret_hashes = vec![crate::config::hash_secret(odd)];
    }
    let now = jiff::Timestamp::now();
    let key = keys::generate(SigningAlgorithm::ES256, now, now).unwrap();
    h.issuer.replace(Served::new(current, &keys::KeySet { keys: vec![key] }).unwrap());
    // As RFC 6749 §2.3.1 asks: the secret form-encoded inside the Basic header.
    let encoded: String = form_urlencoded::byte_serialize(odd.as_bytes()).collect();
    let r = send(&h.app, basic(TOKEN, "team.basic", &encoded, "grant_type=client_credentials")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // As curl -u sends it: raw.
    let r = send(&h.app, basic(TOKEN, "team.basic", odd, "grant_type=client_credentials")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
}

/// Sign-in, consent, device flow, logout and federation, through a simulated browser.
mod people;
