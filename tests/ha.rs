//! High availability: three `tessera serve` processes (same files, same state dir for keys,
//! one Redis through TESSERA_REDIS_URL) behind a round-robin client, as replicas behind a
//! Service. Token state is shared; Redis outages and replica deaths are survived. People's
//! sign-ins hop replicas on every step (authorize, login, consent, device approval, code,
//! refresh), as a browser behind a load balancer without session affinity would.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::redis::{RedisServer, available};
use tessera::api::SigningAlgorithm;
use tessera::keys::{self, ActiveKeys};

const PATH: &str = "/oauth2/payments";
const SECRET: &str = "basic-secret";
/// The public browser client (PKCE) people sign in to.
const SPA: &str = "team.spa";
const SPA_REDIRECT: &str = "http://127.0.0.1:8400/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const PEOPLE_SCOPE: &str = "openid offline_access payments:read";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

struct Replica {
    child: Option<Child>,
    base: String,
}

impl Replica {
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three replicas of one server, a client key for private_key_jwt, and a round-robin cursor.
struct Cluster {
    replicas: Vec<Replica>,
    issuer: String,
    client_key: ActiveKeys,
    next: AtomicUsize,
    http: reqwest::Client,
    _files: tempfile::TempDir,
    _state: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// `hash`: alice's password hash (bcrypt cost 4, fast to check).
fn manifests(issuer: &str, jwk: &str, hash: &str) -> String {
    format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: {{ name: payments, namespace: identity }}
spec:
  issuer: {issuer}
  audiences: [api://payments]
  signing: {{ algorithm: ES256 }}
  clientNamespaces: {{ from: All }}
  # The SPA lives in another namespace: trusted here so sign-ins keep their steps (no consent page).
  trustedClients: [{SPA}]
  rateLimit: {{ perClient: 100000, burst: 100000 }}
  storage: {{ type: Redis, redis: {{ urlSecretRef: {{ name: payments-redis }} }} }}
  workload: {{ replicas: 3 }}
  identity: {{ staticUsers: {{ secretName: people }} }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: people, namespace: identity }}
stringData:
  users.yaml: |
    - username: alice
      passwordHash: {hash}
      name: Alice Example
---
apiVersion: tessera.dev/v1alpha1
kind: AuthScope
metadata: {{ name: read, namespace: identity }}
spec: {{ serverRef: {{ name: payments }}, name: payments:read, default: true }}
---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: machines, namespace: identity }}
spec:
  serverRef: {{ name: payments }}
  clients: {{ all: true }}
  rules:
    - {{ name: m2m, grantTypes: [client_credentials], scopes: [payments:read] }}
    - name: people
      grantTypes: [authorization_code, refresh_token, "{DEVICE_GRANT}"]
      scopes: [openid, offline_access, payments:read]
      users: {{ everyone: true }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: basic, namespace: identity }}
spec:
  serverRef: {{ name: payments, namespace: identity }}
  grantTypes: [client_credentials]
  authentication: {{ method: ClientSecretBasic }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: basic-oauth, namespace: identity }}
stringData: {{ client_secret: {SECRET} }}
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
metadata: {{ name: spa, namespace: team }}
spec:
  serverRef: {{ name: payments, namespace: identity }}
  grantTypes: [authorization_code, refresh_token, "{DEVICE_GRANT}"]
  redirectUris: [{SPA_REDIRECT}]
  authentication: {{ method: None }}
"#
    )
}

fn start_replica(files: &std::path::Path, state: &std::path::Path, redis_url: &str, log: PathBuf) -> Replica {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "-f"])
        .arg(files)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(state)
        .env("TESSERA_REDIS_URL", redis_url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .expect("start tessera serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tessera serve did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Replica { child: Some(child), base: format!("http://127.0.0.1:{port}") }
}

impl Cluster {
    fn start(redis: &RedisServer) -> Cluster {
        let t = jiff::Timestamp::now();
        let key = keys::generate(SigningAlgorithm::ES256, t, t - jiff::SignedDuration::from_secs(60)).unwrap();
        let jwk = serde_json::to_string(&key.public_jwk).unwrap();
        let client_key = ActiveKeys::new(&keys::KeySet { keys: vec![key] }).unwrap();
        // The issuer URI names one address, as a Service would; every replica serves it.
        let issuer = format!("http://127.0.0.1:{}{PATH}", free_port());
        let files = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("alice-password", 4).unwrap();
        std::fs::write(files.path().join("server.yaml"), manifests(&issuer, &jwk, &hash)).unwrap();
        let state = tempfile::tempdir().unwrap();
        // The first replica creates the signing keys in the state dir; the others read them.
        let mut replicas = Vec::new();
        for i in 0..3 {
            let log = state.path().join(format!("replica-{i}.log"));
            replicas.push(start_replica(files.path(), state.path(), &redis.url(), log));
        }
        Cluster {
            replicas,
            issuer,
            client_key,
            next: AtomicUsize::new(0),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            _files: files,
            _state: state,
        }
    }

    fn round_robin(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.replicas.len()
    }

    fn assertion(&self, jti: &str) -> String {
        let claims = json!({
            "iss": "team.pkjwt", "sub": "team.pkjwt", "aud": format!("{}/v1/token", self.issuer),
            "exp": now() + 60, "iat": now(), "jti": jti
        });
        self.client_key.sign_access_token(jiff::Timestamp::now(), &claims).unwrap().0
    }

    async fn post(&self, replica: usize, endpoint: &str, form: &[(&str, &str)], basic: bool) -> Reply {
        let url = format!("{}{PATH}{endpoint}", self.replicas[replica].base);
        let mut req = self.http.post(url).form(form);
        if basic {
            req = req.basic_auth("identity.basic", Some(SECRET));
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap_or("").to_owned());
                let json = r.json::<Value>().await.unwrap_or(Value::Null);
                Reply { status, retry_after, json }
            }
            Err(_) => Reply { status: 0, retry_after: None, json: Value::Null },
        }
    }

    /// client_credentials with a client secret: needs no token state.
    async fn secret_token(&self, replica: usize) -> Reply {
        self.post(replica, "/v1/token", &[("grant_type", "client_credentials")], true).await
    }

    /// client_credentials with private_key_jwt: its jti must be recorded.
    async fn assertion_token(&self, replica: usize, jti: &str) -> Reply {
        let a = self.assertion(jti);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", a.as_str()),
        ];
        self.post(replica, "/v1/token", &form, false).await
    }

    async fn introspect(&self, replica: usize, token: &str) -> Reply {
        self.post(replica, "/v1/introspect", &[("token", token)], true).await
    }

    async fn revoke(&self, replica: usize, token: &str) -> Reply {
        self.post(replica, "/v1/revoke", &[("token", token)], true).await
    }

    async fn readyz(&self, replica: usize) -> u16 {
        let url = format!("{}/readyz", self.replicas[replica].base);
        self.http.get(url).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<String>,
    json: Value,
}

impl Reply {
    fn token(&self) -> String {
        assert_eq!(self.status, 200, "{:?}", self.json);
        self.json["access_token"].as_str().unwrap().to_owned()
    }
}

// ---- people: a browser that hops replicas --------------------------------------------------

/// A browser: keeps cookies by hand and follows no redirect by itself. Cookies belong to a
/// host, not a port, so one jar serves every replica on 127.0.0.1, as one jar serves every
/// pod behind a Service.
#[derive(Default)]
struct Browser {
    cookies: BTreeMap<String, String>,
}

/// What a browser request got. Its Debug shows the status, the redirect without its query
/// and the page's text, never a code, a form's hidden values or a cookie.
struct Page {
    status: u16,
    location: Option<String>,
    retry_after: Option<String>,
    content_type: String,
    body: String,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let location = self.location.as_deref().map(|l| l.split('?').next().unwrap_or_default());
        f.debug_struct("Page")
            .field("status", &self.status)
            .field("location", &location)
            .field("retry_after", &self.retry_after)
            .field("text", &self.text())
            .finish()
    }
}

impl Page {
    /// The text of the page without its markup (attribute values, hence hidden fields, dropped).
    fn text(&self) -> String {
        let main = self.body.split_once("<main>").map_or(self.body.as_str(), |(_, m)| m);
        let mut out = String::new();
        let mut in_tag = false;
        for ch in main.chars() {
            match ch {
                '<' => {
                    in_tag = true;
                    out.push(' ');
                }
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(300).collect()
    }

    /// The value of hidden input `name`.
    fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker).unwrap_or_else(|| panic!("no {name} field on {self:?}")) + marker.len();
        self.body[start..].split('"').next().unwrap().to_owned()
    }

    /// The query parameters of the redirect.
    fn params(&self) -> HashMap<String, String> {
        let loc = self.location.as_deref().unwrap_or_else(|| panic!("no redirect: {self:?}"));
        let q = loc.split_once('?').map_or("", |(_, q)| q);
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }

    /// The authorization code of a redirect to the client.
    fn code(&self) -> String {
        assert_eq!(self.status, 303, "{self:?}");
        assert!(self.location.as_deref().unwrap().starts_with(SPA_REDIRECT), "{self:?}");
        let p = self.params();
        assert!(!p.contains_key("error"), "{:?} {:?}", p.get("error"), p.get("error_description"));
        p.get("code").cloned().unwrap_or_else(|| panic!("no code in the redirect: {self:?}"))
    }

    /// A 503 page: Retry-After, HTML, a message a person understands; not a 500 or a panic.
    fn assert_unavailable(&self, what: &str) {
        assert_eq!(self.status, 503, "{what}: {self:?}");
        assert!(self.retry_after.is_some(), "{what}: 503 without Retry-After: {self:?}");
        assert!(self.content_type.starts_with("text/html"), "{what}: {self:?}");
        let text = self.text();
        assert!(text.starts_with("Temporarily unavailable") && text.contains("Try again"), "{what}: {self:?}");
    }
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()))
}

/// The SPA's authorization request for alice (PKCE S256, state, nonce).
fn authorize_path(scope: &str) -> String {
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", SPA)
        .append_pair("redirect_uri", SPA_REDIRECT)
        .append_pair("scope", scope)
        .append_pair("state", "st-1")
        .append_pair("nonce", "n-1")
        .append_pair("code_challenge", &challenge(VERIFIER))
        .append_pair("code_challenge_method", "S256")
        .finish();
    format!("/v1/authorize?{q}")
}

impl Cluster {
    /// `url` on `replica`: an absolute URL of the issuer (a Location, a form's action) or a
    /// path below it.
    fn on(&self, replica: usize, url: &str) -> String {
        let rest = url.strip_prefix(self.issuer.as_str()).unwrap_or(url);
        format!("{}{PATH}{rest}", self.replicas[replica].base)
    }

    /// A GET (no form) or a form POST from browser `b` to `replica`.
    async fn browse(&self, b: &mut Browser, replica: usize, url: &str, form: Option<&[(&str, &str)]>) -> Page {
        let url = self.on(replica, url);
        let mut req = match form {
            Some(f) => self.http.post(url).form(f),
            None => self.http.get(url),
        };
        if !b.cookies.is_empty() {
            let jar = b.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
            req = req.header("cookie", jar);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("replica {replica}: {}", e.without_url()));
        for c in r.headers().get_all("set-cookie") {
            let kv = c.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = kv.split_once('=').unwrap();
            if v.is_empty() {
                b.cookies.remove(k);
            } else {
                b.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let header = |name: &str| r.headers().get(name).map(|v| v.to_str().unwrap_or_default().to_owned());
        let (location, retry_after) = (header("location"), header("retry-after"));
        let content_type = header("content-type").unwrap_or_default();
        let status = r.status().as_u16();
        Page { status, location, retry_after, content_type, body: r.text().await.unwrap_or_default() }
    }

    /// Signs alice in from the login page `to_login` led to: the page on `replica`, the
    /// password on the next one. Returns what the login answered.
    async fn log_in(&self, b: &mut Browser, replica: usize, to_login: &Page) -> Page {
        assert_eq!(to_login.status, 303, "{to_login:?}");
        let page = self.browse(b, replica, to_login.location.as_deref().unwrap(), None).await;
        assert_eq!(page.status, 200, "{page:?}");
        let (request, csrf) = (page.hidden("request"), page.hidden("csrf"));
        let form =
            [("request", request.as_str()), ("csrf", &csrf), ("username", "alice"), ("password", "alice-password")];
        self.browse(b, (replica + 1) % 3, "/v1/login", Some(&form)).await
    }

    /// A code for alice, every step on the next replica from `first`: authorize, login page,
    /// login; returns the code and the replica that issued it.
    async fn sign_in(&self, b: &mut Browser, first: usize) -> (String, usize) {
        let start = self.browse(b, first, &authorize_path(PEOPLE_SCOPE), None).await;
        let done = self.log_in(b, (first + 1) % 3, &start).await;
        (done.code(), (first + 2) % 3)
    }

    async fn redeem(&self, replica: usize, code: &str) -> Reply {
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", SPA),
            ("code", code),
            ("redirect_uri", SPA_REDIRECT),
            ("code_verifier", VERIFIER),
        ];
        self.post(replica, "/v1/token", &form, false).await
    }

    async fn refresh(&self, replica: usize, refresh_token: &str) -> Reply {
        let form = [("grant_type", "refresh_token"), ("client_id", SPA), ("refresh_token", refresh_token)];
        self.post(replica, "/v1/token", &form, false).await
    }

    async fn userinfo(&self, replica: usize, access_token: &str) -> Reply {
        let url = format!("{}{PATH}/v1/userinfo", self.replicas[replica].base);
        let r = self.http.get(url).bearer_auth(access_token).send().await.unwrap();
        let status = r.status().as_u16();
        Reply { status, retry_after: None, json: r.json().await.unwrap_or(Value::Null) }
    }
}

impl Reply {
    /// The refresh token of a token response.
    fn refresh_token(&self) -> String {
        assert_eq!(self.status, 200, "{}", self.error());
        self.json["refresh_token"].as_str().expect("a refresh token").to_owned()
    }

    /// `error: description` of an error response (never a token).
    fn error(&self) -> String {
        format!("{} {}: {}", self.status, self.json["error"], self.json["error_description"])
    }

    fn assert_invalid_grant(&self, what: &str) {
        assert_eq!(
            (self.status, self.json["error"].as_str()),
            (400, Some("invalid_grant")),
            "{what}: {}",
            self.error()
        );
    }
}

#[tokio::test]
async fn a_code_issued_by_one_replica_is_redeemed_on_another_and_refreshed_on_a_third() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let c = Cluster::start(&redis);
    let mut b = Browser::default();
    // authorize on 0, login page on 1, password on 2 (which issues the code), redeem on 0.
    let (code, issued_by) = c.sign_in(&mut b, 0).await;
    assert_eq!(issued_by, 2);
    let tokens = c.redeem(0, &code).await;
    let access = tokens.token();
    assert!(tokens.json["id_token"].is_string());
    let refresh = tokens.refresh_token();
    for replica in 0..3 {
        assert_eq!(c.introspect(replica, &access).await.json["active"], true, "replica {replica}");
    }
    let info = c.userinfo(1, &access).await;
    assert_eq!((info.status, info.json["sub"].as_str()), (200, Some("static|alice")), "{}", info.error());
    // Rotation on 1, then the new token rotates on 2.
    let rotated = c.refresh(1, &refresh).await;
    assert_ne!(rotated.refresh_token(), refresh);
    let again = c.refresh(2, &rotated.refresh_token()).await;
    let current = again.refresh_token();

    // The code is spent on every replica; its replay revokes what it issued, family included.
    for replica in [1, 2] {
        c.redeem(replica, &code).await.assert_invalid_grant("a second redemption");
    }
    assert_eq!(c.introspect(2, &access).await.json["active"], false);
    c.refresh(0, &current).await.assert_invalid_grant("a refresh token of a replayed code's family");

    // The session started on replica 2 is known to the others: authorize answers a code at once.
    for replica in [1, 0] {
        let page = c.browse(&mut b, replica, &authorize_path(PEOPLE_SCOPE), None).await;
        let code = page.code();
        c.redeem((replica + 1) % 3, &code).await.token();
    }
}

#[tokio::test]
async fn fifty_parallel_redemptions_of_one_code_across_replicas_succeed_once_and_revoke_its_tokens() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let c = Cluster::start(&redis);
    let mut b = Browser::default();
    let (code, _) = c.sign_in(&mut b, 1).await;
    let replies = futures::future::join_all((0..50).map(|i| c.redeem(i % 3, &code))).await;
    let winners: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    let statuses: BTreeMap<u16, usize> = replies.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.status).or_default() += 1;
        m
    });
    eprintln!("50 parallel redemptions over 3 replicas: statuses {statuses:?}");
    assert_eq!(winners.len(), 1, "statuses {statuses:?}");
    for r in replies.iter().filter(|r| r.status != 200) {
        r.assert_invalid_grant("a losing redemption");
    }
    // The replays revoked what the one success issued, on every replica.
    let access = winners[0].token();
    let refresh = winners[0].refresh_token();
    for replica in 0..3 {
        let r = c.introspect(replica, &access).await;
        assert_eq!(r.json["active"], false, "replica {replica}: the access token of a replayed code is still active");
    }
    for replica in 0..3 {
        c.refresh(replica, &refresh).await.assert_invalid_grant("the refresh token of a replayed code");
    }
}

#[tokio::test]
async fn refresh_reuse_on_another_replica_revokes_the_family_everywhere() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let c = Cluster::start(&redis);
    let mut b = Browser::default();
    let (code, _) = c.sign_in(&mut b, 2).await;
    let first = c.redeem(1, &code).await.refresh_token();
    // Rotated on 0; the old token replayed on 1; the new one is then dead on 2.
    let second = c.refresh(0, &first).await.refresh_token();
    let replay = c.refresh(1, &first).await;
    replay.assert_invalid_grant("a rotated-away refresh token");
    assert!(replay.json["error_description"].as_str().unwrap().contains("already used"), "{}", replay.error());
    c.refresh(2, &second).await.assert_invalid_grant("the current token of a revoked family");
    c.refresh(0, &second).await.assert_invalid_grant("the current token of a revoked family");
}

#[tokio::test]
async fn the_device_flow_hops_replicas_from_authorization_to_tokens() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let c = Cluster::start(&redis);
    let d = c.post(0, "/v1/device/authorize", &[("client_id", SPA), ("scope", PEOPLE_SCOPE)], false).await;
    assert_eq!(d.status, 200, "{}", d.error());
    let device_code = d.json["device_code"].as_str().unwrap().to_owned();
    let user_code = d.json["user_code"].as_str().unwrap().to_owned();
    let poll_form = [("grant_type", DEVICE_GRANT), ("client_id", SPA), ("device_code", device_code.as_str())];
    let poll = |replica: usize| c.post(replica, "/v1/token", &poll_form, false);
    assert_eq!(poll(1).await.json["error"], "authorization_pending");

    // The person: code typed on 2, login page on 0, password on 1, consent page on 2, answer on 0.
    let mut b = Browser::default();
    let to_login = c.browse(&mut b, 2, "/v1/device", Some(&[("user_code", user_code.as_str())])).await;
    let to_consent = c.log_in(&mut b, 0, &to_login).await;
    assert_eq!(to_consent.status, 303, "{to_consent:?}");
    let consent = c.browse(&mut b, 2, to_consent.location.as_deref().unwrap(), None).await;
    assert_eq!(consent.status, 200, "{consent:?}");
    assert!(consent.text().contains("A device is asking"), "{consent:?}");
    let (request, csrf) = (consent.hidden("request"), consent.hidden("csrf"));
    let form = [("request", request.as_str()), ("csrf", &csrf), ("decision", "allow")];
    let done = c.browse(&mut b, 0, "/v1/consent", Some(&form)).await;
    assert!(done.text().contains("Device connected"), "{done:?}");

    let tokens = poll(0).await;
    let access = tokens.token();
    assert!(tokens.json["refresh_token"].is_string());
    assert_eq!(c.introspect(2, &access).await.json["active"], true);
    for replica in [1, 2] {
        assert_eq!(poll(replica).await.json["error"], "expired_token", "a device code is redeemed once");
    }
}

#[tokio::test]
async fn a_jti_consumed_on_one_replica_is_refused_on_the_others() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let c = Cluster::start(&redis);
    let a = c.assertion("once-only");
    let form = |a: &str| {
        vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned()),
            ("client_assertion", a.to_owned()),
        ]
    };
    let send = |replica: usize| {
        let url = format!("{}{PATH}/v1/token", c.replicas[replica].base);
        c.http.post(url).form(&form(&a)).send()
    };
    assert_eq!(send(0).await.unwrap().status(), 200);
    for replica in [1, 2, 0] {
        let r = send(replica).await.unwrap();
        assert_eq!(r.status(), 401, "replica {replica} accepted a replayed assertion");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
        assert!(body["error_description"].as_str().unwrap().contains("already used"));
    }
}

#[tokio::test]
async fn a_revocation_on_one_replica_is_seen_by_introspection_on_the_others() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let c = Cluster::start(&redis);
    let token = c.secret_token(0).await.token();
    for replica in 0..3 {
        assert_eq!(c.introspect(replica, &token).await.json["active"], true, "replica {replica}");
    }
    assert_eq!(c.revoke(1, &token).await.status, 200);
    for replica in [0, 2, 1] {
        assert_eq!(
            c.introspect(replica, &token).await.json["active"],
            false,
            "replica {replica} missed the revocation"
        );
    }
}

#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    unavailable: usize,
    other: Vec<u16>,
}

impl Tally {
    fn add(&mut self, r: &Reply) {
        match r.status {
            200 => self.ok += 1,
            503 => {
                assert_eq!(r.json["error"], "temporarily_unavailable", "{r:?}");
                assert!(r.retry_after.is_some(), "503 without Retry-After: {r:?}");
                self.unavailable += 1;
            }
            s => self.other.push(s),
        }
    }
}

#[derive(Default, Debug)]
struct Phase {
    stateless: Tally,
    stateful: Tally,
}

/// One round of load on the next replica: a secret-based token, a private_key_jwt token and
/// an introspection.
async fn round(c: &Cluster, n: usize, held: &str, phase: &mut Phase) {
    let replica = c.round_robin();
    phase.stateless.add(&c.secret_token(replica).await);
    phase.stateful.add(&c.assertion_token(replica, &format!("load-{n}")).await);
    let r = c.introspect(replica, held).await;
    phase.stateful.add(&r);
    if r.status == 200 {
        assert_eq!(r.json["active"], true);
    }
}

#[tokio::test]
async fn a_user_code_typed_in_several_browsers_at_once_admits_only_one() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let c = Cluster::start(&redis);
    let d = c.post(0, "/v1/device/authorize", &[("client_id", SPA), ("scope", PEOPLE_SCOPE)], false).await;
    let user_code = d.json["user_code"].as_str().unwrap_or_else(|| panic!("{}", d.error())).to_owned();
    let form = [("user_code", user_code.as_str())];
    let mut browsers: Vec<Browser> = (0..12).map(|_| Browser::default()).collect();
    let pages = futures::future::join_all(
        browsers.iter_mut().enumerate().map(|(i, b)| c.browse(b, i % 3, "/v1/device", Some(&form))),
    )
    .await;
    let admitted = pages.iter().filter(|p| p.status == 303).count();
    let refused = pages.iter().filter(|p| p.status == 400 && p.text().contains("unknown or has expired")).count();
    assert_eq!((admitted, refused), (1, 11), "{pages:?}");
}

/// What people and their apps hold when Redis goes down: a sign-in waiting on its login
/// page, a signed-in browser with an unredeemed code and a refresh token, a device's user code.
struct InFlight {
    pending: Browser,
    login_url: String,
    request: String,
    csrf: String,
    signed_in: Browser,
    code: String,
    refresh: String,
    user_code: String,
}

async fn people_in_flight(c: &Cluster) -> InFlight {
    let mut pending = Browser::default();
    let start = c.browse(&mut pending, 0, &authorize_path(PEOPLE_SCOPE), None).await;
    assert_eq!(start.status, 303, "{start:?}");
    let login_url = start.location.clone().unwrap();
    let login = c.browse(&mut pending, 1, &login_url, None).await;
    let (request, csrf) = (login.hidden("request"), login.hidden("csrf"));
    let mut signed_in = Browser::default();
    let (code, _) = c.sign_in(&mut signed_in, 2).await;
    let refresh = c.redeem(0, &code).await.refresh_token();
    let code = c.browse(&mut signed_in, 1, &authorize_path(PEOPLE_SCOPE), None).await.code();
    let d = c.post(2, "/v1/device/authorize", &[("client_id", SPA), ("scope", PEOPLE_SCOPE)], false).await;
    let user_code = d.json["user_code"].as_str().unwrap_or_else(|| panic!("{}", d.error())).to_owned();
    InFlight { pending, login_url, request, csrf, signed_in, code, refresh, user_code }
}

/// With Redis down every step of a sign-in answers 503 with Retry-After on every replica:
/// an HTML page for the browser, `temporarily_unavailable` JSON for the apps.
async fn people_are_told_to_retry(c: &Cluster, f: &mut InFlight) {
    for replica in 0..3 {
        let mut fresh = Browser::default();
        c.browse(&mut fresh, replica, &authorize_path(PEOPLE_SCOPE), None).await.assert_unavailable("authorize");
        let authorize = c.browse(&mut f.signed_in, replica, &authorize_path(PEOPLE_SCOPE), None).await;
        authorize.assert_unavailable("authorize with a session");
        c.browse(&mut f.pending, replica, &f.login_url, None).await.assert_unavailable("login page");
        let form =
            [("request", f.request.as_str()), ("csrf", &f.csrf), ("username", "alice"), ("password", "alice-password")];
        c.browse(&mut f.pending, replica, "/v1/login", Some(&form)).await.assert_unavailable("login");
        let form = [("request", f.request.as_str()), ("csrf", &f.csrf), ("decision", "allow")];
        c.browse(&mut f.signed_in, replica, "/v1/consent", Some(&form)).await.assert_unavailable("consent");
        let form = [("user_code", f.user_code.as_str())];
        c.browse(&mut f.signed_in, replica, "/v1/device", Some(&form)).await.assert_unavailable("device code entry");
        let device = c.post(replica, "/v1/device/authorize", &[("client_id", SPA), ("scope", PEOPLE_SCOPE)], false);
        for (what, r) in [
            ("device authorize", device.await),
            ("redeem", c.redeem(replica, &f.code).await),
            ("refresh", c.refresh(replica, &f.refresh).await),
        ] {
            assert_eq!(
                (r.status, r.json["error"].as_str()),
                (503, Some("temporarily_unavailable")),
                "{what}: {}",
                r.error()
            );
            assert!(r.retry_after.is_some(), "{what}: 503 without Retry-After");
        }
    }
}

#[tokio::test]
async fn redis_outage_fails_only_stateful_requests_and_recovers_without_restart() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let c = Cluster::start(&redis);
    let held = c.secret_token(0).await.token();
    let mut in_flight = people_in_flight(&c).await;
    let mut n = 0;
    let mut run = async |phase: &mut Phase, secs: f64| {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < until {
            n += 1;
            round(&c, n, &held, phase).await;
        }
    };

    let mut before = Phase::default();
    run(&mut before, 2.0).await;
    redis.stop();
    let mut during = Phase::default();
    run(&mut during, 3.0).await;
    let ready_during: Vec<u16> = futures::future::join_all((0..3).map(|i| c.readyz(i))).await;
    let people_checked = Instant::now();
    people_are_told_to_retry(&c, &mut in_flight).await;
    let people_checked = people_checked.elapsed();
    redis.resume();
    let resumed = Instant::now();
    // Recovery: every replica ready again, without a restart.
    let mut recovering = Phase::default();
    while futures::future::join_all((0..3).map(|i| c.readyz(i))).await.iter().any(|s| *s != 200) {
        assert!(resumed.elapsed() < Duration::from_secs(15), "replicas not ready 15s after Redis returned");
        run(&mut recovering, 0.1).await;
    }
    let recovered_in = resumed.elapsed();
    let mut after = Phase::default();
    run(&mut after, 2.0).await;

    eprintln!("redis outage: before {before:?}");
    eprintln!("redis outage: during {during:?} readyz {ready_during:?}");
    eprintln!("redis outage: recovering ({recovered_in:?}) {recovering:?}");
    eprintln!("redis outage: after {after:?}");
    eprintln!("redis outage: every sign-in step answered 503 on each replica ({people_checked:?} for 27 requests)");

    for (name, p) in [("before", &before), ("during", &during), ("recovering", &recovering), ("after", &after)] {
        assert!(p.stateless.other.is_empty() && p.stateful.other.is_empty(), "{name}: unexpected statuses {p:?}");
        assert_eq!(p.stateless.unavailable, 0, "{name}: client_secret tokens need no state");
    }
    assert_eq!(before.stateful.unavailable, 0);
    assert_eq!(after.stateful.unavailable, 0, "after recovery every request succeeds");
    assert!(after.stateful.ok > 0 && after.stateless.ok > 0);
    assert!(during.stateful.unavailable > 0 && during.stateless.ok > 0);
    assert_eq!(during.stateful.ok, 0, "nothing stateful can succeed while Redis is down");
    assert_eq!(ready_during, [503, 503, 503]);

    // Sign-ins work again. Redis came back empty (no persistence here): a sign-in left on its
    // login page has to start again, and is told so.
    let stale = c.browse(&mut in_flight.pending, 2, &in_flight.login_url, None).await;
    assert_eq!(stale.status, 400, "{stale:?}");
    assert!(stale.text().contains("start again"), "{stale:?}");
    let mut b = Browser::default();
    let (code, _) = c.sign_in(&mut b, 0).await;
    let refresh = c.redeem(1, &code).await.refresh_token();
    c.refresh(2, &refresh).await.refresh_token();
}

#[tokio::test]
async fn killing_a_replica_under_load_loses_no_issued_token() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let mut c = Cluster::start(&redis);
    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(std::sync::Mutex::new(Vec::<(usize, String)>::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let failed_after_retry = Arc::new(AtomicUsize::new(0));
    let c_ref: &Cluster = &c;
    // The balancer ejects a replica that refuses a connection, as endpoints drop an unready pod.
    let ejected: [AtomicBool; 3] = Default::default();
    let pick = || loop {
        let r = c_ref.round_robin();
        if !ejected[r].load(Ordering::Relaxed) {
            return r;
        }
    };
    let worker = async |_: usize| {
        while !stop.load(Ordering::Relaxed) {
            let replica = pick();
            sent.fetch_add(1, Ordering::Relaxed);
            let mut r = c_ref.secret_token(replica).await;
            let mut served_by = replica;
            if r.status != 200 {
                failed.fetch_add(1, Ordering::Relaxed);
                if r.status == 0 {
                    ejected[replica].store(true, Ordering::Relaxed);
                }
                // A client (or the balancer) retries once on another replica.
                served_by = pick();
                r = c_ref.secret_token(served_by).await;
                if r.status != 200 {
                    failed_after_retry.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            issued.lock().unwrap().push((served_by, r.token()));
        }
    };
    let load = futures::future::join_all((0..4).map(worker));
    let killer = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = sent.load(Ordering::Relaxed);
        // SIGKILL: no graceful shutdown, in-flight requests on it are cut.
        let victim = c_ref.replicas[1].child.as_ref().map(|ch| ch.id()).unwrap();
        let _ = Command::new("kill").arg("-9").arg(victim.to_string()).status();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        before
    };
    let (_, sent_before_kill) = futures::join!(load, killer);
    c.replicas[1].kill();

    let sent = sent.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let failed_after_retry = failed_after_retry.load(Ordering::Relaxed);
    let during = sent - sent_before_kill;
    eprintln!(
        "replica kill: {sent} requests ({during} from the kill on), {failed} failed on first try ({:.2}% of those), {failed_after_retry} after one retry on another replica",
        100.0 * failed as f64 / during.max(1) as f64
    );
    assert_eq!(failed_after_retry, 0);

    // Every token issued, by any replica including the dead one, is still valid on the survivors.
    let issued = issued.lock().unwrap().clone();
    let from_victim = issued.iter().filter(|(r, _)| *r == 1).count();
    assert!(from_victim > 0, "the killed replica issued nothing before it died");
    for (i, (_, token)) in issued.iter().enumerate() {
        let survivor = if i % 2 == 0 { 0 } else { 2 };
        let r = c.introspect(survivor, token).await;
        assert_eq!(r.json["active"], true, "token lost: {r:?}");
    }
    eprintln!("replica kill: {} issued tokens ({from_victim} by the killed replica) all still active", issued.len());
}
