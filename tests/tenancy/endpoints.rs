//! The token endpoint and sign-in against `tessera serve`: failed client authentications
//! never spend a client's rate limit (item 6), unknown usernames are limited like known ones
//! (item 9), revocation and introspection keep to the caller's own tokens (item 11 and the
//! review), and user codes cannot be guessed at speed. Requests come from several loopback
//! addresses (127.0.0.2, …) so that per-source limits are seen as a server sees them.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::serve::{Serve, free_port, issuer_at, start};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::Value;

/// A bcrypt hash (cost 4) of `PASSWORD`, the password of every static user here.
const PASSWORD: &str = "correct horse battery";
const PASSWORD_HASH: &str = "$2b$04$QDAKOYeNMlgBxNWx/uxC1uCTzzZLGKpkmS774QuRolfGAZu3rqCAC";
const WEB_REDIRECT: &str = "https://web.example.com/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// `tessera serve` of one server (`payments`), its clients and static users; `server_extra`
/// goes into the AuthorizationServer's spec.
fn serve(server_extra: &str) -> Serve {
    let port = free_port();
    let issuer = issuer_at(port);
    let yaml = format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: {{ name: payments, namespace: identity }}
spec:
  issuer: {issuer}
  audiences: [api://payments, team-b.reports]
  signing: {{ algorithm: ES256 }}
  clientNamespaces: {{ from: All }}
  identity: {{ staticUsers: {{ secretName: people }} }}
{server_extra}
---
apiVersion: v1
kind: Secret
metadata: {{ name: people, namespace: identity }}
stringData:
  users.yaml: |
    - username: alice
      passwordHash: "{PASSWORD_HASH}"
---
apiVersion: tessera.dev/v1alpha1
kind: AuthScope
metadata: {{ name: read, namespace: identity }}
spec: {{ serverRef: {{ name: payments }}, name: payments:read, default: true }}
---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: all, namespace: identity }}
spec:
  serverRef: {{ name: payments }}
  clients: {{ all: true }}
  rules:
    - {{ name: machines, grantTypes: [client_credentials], scopes: [payments:read] }}
    - name: people
      grantTypes: [authorization_code, refresh_token, "urn:ietf:params:oauth:grant-type:device_code"]
      scopes: [openid, offline_access, payments:read]
      users: {{ everyone: true }}
{clients}"#,
        clients = [
            client("team-orders", "orders-api", "orders-secret", "[client_credentials]", ""),
            client("team-b", "b", "b-secret", "[client_credentials]", ""),
            client("team-b", "reports", "reports-secret", "[client_credentials]", ""),
            client("identity", "gateway", "gateway-secret", "[client_credentials]", ""),
            client(
                "identity",
                "web",
                "web-secret",
                r#"[authorization_code, refresh_token, "urn:ietf:params:oauth:grant-type:device_code"]"#,
                &format!("  redirectUris: [{WEB_REDIRECT}]\n"),
            ),
        ]
        .concat(),
    );
    start(port, &yaml, &[])
}

fn client(namespace: &str, name: &str, secret: &str, grants: &str, extra: &str) -> String {
    format!(
        r#"---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: {name}, namespace: {namespace} }}
spec:
  serverRef: {{ name: payments, namespace: identity }}
  grantTypes: {grants}
  authentication: {{ method: ClientSecretBasic }}
{extra}---
apiVersion: v1
kind: Secret
metadata: {{ name: {name}-oauth, namespace: {namespace} }}
stringData: {{ client_secret: {secret} }}
"#
    )
}

/// An HTTP client whose connections come from `source` (any 127.0.0.0/8 address is local).
fn from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn location(&self) -> String {
        let l = self.headers.get("location").unwrap_or_else(|| panic!("no redirect: {} {}", self.status, self.body));
        l.to_str().unwrap().to_owned()
    }

    fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker).unwrap_or_else(|| panic!("no {name} in {}", self.body)) + marker.len();
        self.body[start..].split('"').next().unwrap().to_owned()
    }
}

async fn reply(r: reqwest::RequestBuilder) -> Reply {
    let r = r.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    Reply { status, headers, body: r.text().await.unwrap() }
}

async fn post(http: &reqwest::Client, url: &str, auth: Option<(&str, &str)>, form: &[(&str, &str)]) -> Reply {
    let mut r = http.post(url).form(form);
    if let Some((id, secret)) = auth {
        r = r.basic_auth(id, Some(secret));
    }
    reply(r).await
}

impl Serve {
    async fn machine_token(&self, http: &reqwest::Client, id: &str, secret: &str) -> String {
        let r = post(http, &self.at("/v1/token"), Some((id, secret)), &[("grant_type", "client_credentials")]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.json()["access_token"].as_str().unwrap().to_owned()
    }
}

// --- item 6 ---

#[tokio::test]
async fn failed_authentications_never_spend_the_clients_rate_limit() {
    let s = serve("  rateLimit: { perClient: 5, burst: 10 }");
    let attacker = from("127.0.0.2");
    let token = s.at("/v1/token");
    let grant = [("grant_type", "client_credentials")];
    let mut refused = 0;
    for _ in 0..300 {
        let r = post(&attacker, &token, Some(("team-orders.orders-api", "guess")), &grant).await;
        match r.status {
            StatusCode::UNAUTHORIZED => assert_eq!(r.json()["error"], "invalid_client"),
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert!(r.headers.contains_key("retry-after"), "429 without Retry-After");
                assert_eq!(r.json()["error"], "slow_down", "{}", r.body);
            }
            other => panic!("wrong secret answered {other}: {}", r.body),
        }
    }
    assert!(refused >= 250, "the guessing source was refused only {refused} times of 300");
    // The client itself, from its own address, is not affected.
    let owner = from("127.0.0.1");
    for _ in 0..5 {
        let r = post(&owner, &token, Some(("team-orders.orders-api", "orders-secret")), &grant).await;
        assert_eq!(r.status, StatusCode::OK, "the real client was refused after someone else's failures: {}", r.body);
    }
    // Its own rate limit still holds, counted on its authenticated requests only.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(post(&owner, &token, Some(("team-orders.orders-api", "orders-secret")), &grant).await.status);
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
}

// --- item 9 ---

/// Starts a sign-in for `identity.web`; returns the login page and the cookies to send.
async fn login_page(s: &Serve, http: &reqwest::Client) -> (Reply, String) {
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, VERIFIER.as_bytes()));
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", "identity.web"),
            ("redirect_uri", WEB_REDIRECT),
            ("scope", "openid offline_access payments:read"),
            ("state", "s"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .finish();
    let start = reply(http.get(s.at(&format!("/v1/authorize?{query}")))).await;
    let cookies = cookies(&start, "");
    let page = reply(http.get(start.location()).header("cookie", &cookies)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let cookies = self::cookies(&page, &cookies);
    (page, cookies)
}

/// The cookies of `r` added to `jar` (a `Cookie` header value).
fn cookies(r: &Reply, jar: &str) -> String {
    let mut all: HashMap<String, String> =
        jar.split("; ").filter_map(|c| c.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    for c in r.headers.get_all("set-cookie") {
        let kv = c.to_str().unwrap().split(';').next().unwrap();
        if let Some((k, v)) = kv.split_once('=') {
            all.insert(k.to_owned(), v.to_owned());
        }
    }
    all.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
}

async fn log_in(s: &Serve, http: &reqwest::Client, page: &Reply, cookies: &str, user: &str, pw: &str) -> Reply {
    let form = [
        ("request", page.hidden("request")),
        ("csrf", page.hidden("csrf")),
        ("username", user.into()),
        ("password", pw.into()),
    ];
    reply(http.post(s.at("/v1/login")).header("cookie", cookies).form(&form)).await
}

/// Wrong passwords for `user` until the first 429; the number of attempts it took.
async fn attempts_until_refused(s: &Serve, http: &reqwest::Client, user: &str) -> usize {
    let (page, cookies) = login_page(s, http).await;
    for n in 1..=20 {
        let r = log_in(s, http, &page, &cookies, user, "wrong").await;
        match r.status {
            StatusCode::UNAUTHORIZED => assert!(r.body.contains("Wrong username or password")),
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(r.headers.contains_key("retry-after"));
                return n;
            }
            other => panic!("{user}: wrong password answered {other}"),
        }
    }
    panic!("{user}: 20 wrong passwords and no 429");
}

#[tokio::test]
async fn unknown_usernames_are_limited_like_known_ones() {
    let s = serve("");
    let http = from("127.0.0.1");
    let known = attempts_until_refused(&s, &http, "alice").await;
    let unknown = attempts_until_refused(&s, &http, "mallory").await;
    assert!((11..=13).contains(&known) && (11..=13).contains(&unknown), "alice {known}, mallory {unknown}");
    // Another unknown name has a bucket of its own: a guesser learns nothing from 429s.
    let (page, cookies) = login_page(&s, &http).await;
    let r = log_in(&s, &http, &page, &cookies, "trent", "wrong").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "an unknown name shares the limit of other unknown names");
    let r = log_in(&s, &http, &page, &cookies, "Mallory ", "wrong").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "names are limited as normalised");
}

// --- item 11 ---

/// alice signs in at `identity.web`; its access and refresh tokens.
async fn person_tokens(s: &Serve, http: &reqwest::Client) -> (String, String) {
    let (page, cookies) = login_page(s, http).await;
    let done = log_in(s, http, &page, &cookies, "alice", PASSWORD).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let location = done.location();
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code in {location}"));
    let form = [
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", WEB_REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let t = post(http, &s.at("/v1/token"), Some(("identity.web", "web-secret")), &form).await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    let j = t.json();
    (j["access_token"].as_str().unwrap().to_owned(), j["refresh_token"].as_str().unwrap().to_owned())
}

async fn refresh(s: &Serve, http: &reqwest::Client, token: &str) -> Reply {
    let form = [("grant_type", "refresh_token"), ("refresh_token", token)];
    post(http, &s.at("/v1/token"), Some(("identity.web", "web-secret")), &form).await
}

#[tokio::test]
async fn revoking_another_clients_tokens_has_no_effect() {
    let s = serve("");
    let http = from("127.0.0.1");
    let (access, refresh_token) = person_tokens(&s, &http).await;
    let revoke = s.at("/v1/revoke");
    // Another client, authenticated: the same 200 as for any token, and nothing happens.
    let other = post(&http, &revoke, Some(("team-b.b", "b-secret")), &[("token", &refresh_token)]).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    let r = refresh(&s, &http, &refresh_token).await;
    assert_eq!(r.status, StatusCode::OK, "another client revoked the family: {}", r.body);
    let rotated = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let other = post(&http, &revoke, Some(("team-b.b", "b-secret")), &[("token", &access)]).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    let i = post(&http, &s.at("/v1/introspect"), Some(("identity.web", "web-secret")), &[("token", &access)]).await;
    assert_eq!(i.json()["active"], true, "another client revoked the access token: {}", i.body);
    // The client it was issued to can.
    let own = post(&http, &revoke, Some(("identity.web", "web-secret")), &[("token", &rotated)]).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(refresh(&s, &http, &rotated).await.json()["error"], "invalid_grant");
}

// --- introspection ---

#[tokio::test]
async fn introspection_shows_a_tenant_only_its_own_tokens_and_its_audience() {
    let s = serve("");
    let http = from("127.0.0.1");
    let token = s.machine_token(&http, "team-orders.orders-api", "orders-secret").await;
    let introspect = |id: &'static str, secret: &'static str| {
        let (http, url, token) = (http.clone(), s.at("/v1/introspect"), token.clone());
        async move { post(&http, &url, Some((id, secret)), &[("token", &token)]).await.json() }
    };
    assert_eq!(introspect("team-orders.orders-api", "orders-secret").await["active"], true);
    assert_eq!(introspect("team-b.b", "b-secret").await, serde_json::json!({ "active": false }));
    // A resource server: its client id is one of the token's audiences.
    assert_eq!(introspect("team-b.reports", "reports-secret").await["active"], true);
    // A client of the platform, in the server's own namespace.
    assert_eq!(introspect("identity.gateway", "gateway-secret").await["active"], true);
}

// --- device user codes ---

#[tokio::test]
async fn user_code_guessing_is_limited_per_source_and_per_server() {
    let s = serve("");
    let device = s.at("/v1/device");
    let guess = |source: &str| {
        let (http, device) = (from(source), device.clone());
        async move { reply(http.post(&device).form(&[("user_code", "BCDF-GHJK")])).await }
    };
    // One source: 10 wrong codes, then 429 with Retry-After.
    for n in 0..10 {
        let r = guess("127.0.0.2").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "wrong code {n}");
        assert!(r.body.contains("unknown or has expired"));
    }
    let r = guess("127.0.0.2").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key("retry-after"));
    // Many sources: the server stops hearing guesses after 60 in a burst.
    let mut statuses = Vec::new();
    for source in 3..12 {
        for _ in 0..8 {
            statuses.push(guess(&format!("127.0.0.{source}")).await.status);
        }
    }
    let fresh = guess("127.0.0.99").await;
    assert_eq!(fresh.status, StatusCode::TOO_MANY_REQUESTS, "guesses from everywhere are not bounded: {statuses:?}");
}
