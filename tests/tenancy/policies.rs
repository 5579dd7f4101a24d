//! What the platform asserts against what a tenant asserts (item 4 of issue 17), consent for
//! clients of other namespaces (item 5) and logout without `id_token_hint` (item 12), against
//! `tessera serve`. Browsers are reqwest clients with a cookie jar of their own.

use std::collections::BTreeMap;

use crate::serve::{Serve, free_port, issuer_at, start};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::Value;

/// A bcrypt hash (cost 4) of `PASSWORD`.
const PASSWORD: &str = "correct horse battery";
const PASSWORD_HASH: &str = "$2b$04$QDAKOYeNMlgBxNWx/uxC1uCTzzZLGKpkmS774QuRolfGAZu3rqCAC";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const WEB_REDIRECT: &str = "https://web.example.com/cb";
const APP_REDIRECT: &str = "https://app.example.com/cb";

/// `tessera serve` of server `identity/payments` (every namespace may hold clients, static
/// user alice) and `extra` YAML documents; `server_extra` goes into the server's spec.
fn serve(server_extra: &str, extra: &str) -> Serve {
    let port = free_port();
    let issuer = issuer_at(port);
    let yaml = format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: {{ name: payments, namespace: identity }}
spec:
  issuer: {issuer}
  audiences: [api://payments]
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
spec: {{ serverRef: {{ name: payments }}, name: payments:read }}
{extra}"#
    );
    start(port, &yaml, &[])
}

impl Serve {
    /// A client_credentials token's claims, or the error JSON with its status.
    async fn client_credentials(&self, id: &str, secret: &str, scope: &str) -> Result<Value, (u16, Value)> {
        let r = reqwest::Client::new()
            .post(self.at("/v1/token"))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", scope)])
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        match body["access_token"].as_str() {
            Some(t) => Ok(claims(t)),
            None => Err((status, body)),
        }
    }
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// An AuthClient (client id `<namespace>.<name>`) and the Secret with its `secret`.
fn client(namespace: &str, name: &str, labels: &str, spec_extra: &str) -> String {
    format!(
        r#"---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: {name}, namespace: {namespace}, labels: {{ {labels} }} }}
spec:
  serverRef: {{ name: payments, namespace: identity }}
  authentication: {{ method: ClientSecretBasic }}
{spec_extra}
---
apiVersion: v1
kind: Secret
metadata: {{ name: {name}-oauth, namespace: {namespace} }}
stringData: {{ client_secret: {name}-secret }}
"#
    )
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> String {
        let l = self.headers.get("location").unwrap_or_else(|| panic!("no redirect: {} {}", self.status, self.body));
        l.to_str().unwrap().to_owned()
    }

    fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker).unwrap_or_else(|| panic!("no {name} in {}", self.body)) + marker.len();
        self.body[start..].split('"').next().unwrap().to_owned()
    }

    /// The query parameters of the redirect.
    fn redirect_params(&self) -> BTreeMap<String, String> {
        let location = self.location();
        let query = location.split_once('?').map_or("", |(_, q)| q);
        form_urlencoded::parse(query.as_bytes()).into_owned().collect()
    }
}

/// One person's browser: cookies kept, redirects not followed.
struct Browser {
    http: reqwest::Client,
    jar: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { http, jar: BTreeMap::new() }
    }

    async fn send(&mut self, r: reqwest::RequestBuilder) -> Reply {
        let cookies = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let r = r.header("cookie", cookies).send().await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        for c in headers.get_all("set-cookie") {
            let kv = c.to_str().unwrap().split(';').next().unwrap();
            if let Some((k, v)) = kv.split_once('=') {
                if v.is_empty() {
                    self.jar.remove(k);
                } else {
                    self.jar.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        Reply { status, headers, body: r.text().await.unwrap() }
    }

    async fn get(&mut self, url: &str) -> Reply {
        let r = self.http.get(url);
        self.send(r).await
    }

    async fn post(&mut self, url: &str, form: &[(&str, String)]) -> Reply {
        let r = self.http.post(url).form(form);
        self.send(r).await
    }

    /// `/v1/authorize` for `client_id` with PKCE; `extra` adds parameters (prompt, ...).
    async fn authorize(
        &mut self,
        s: &Serve,
        client_id: &str,
        redirect: &str,
        scope: &str,
        extra: &[(&str, &str)],
    ) -> Reply {
        let challenge =
            URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, VERIFIER.as_bytes()));
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect),
                ("scope", scope),
                ("state", "st"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ])
            .extend_pairs(extra.iter().copied())
            .finish();
        self.get(&s.at(&format!("/v1/authorize?{query}"))).await
    }

    /// Signs alice in through first-party `identity.web`: the redirect with its code.
    async fn sign_in(&mut self, s: &Serve) -> Reply {
        let start = self.authorize(s, "identity.web", WEB_REDIRECT, "openid payments:read", &[]).await;
        let page = self.get(&start.location()).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let form = [
            ("request", page.hidden("request")),
            ("csrf", page.hidden("csrf")),
            ("username", "alice".to_owned()),
            ("password", PASSWORD.to_owned()),
        ];
        let done = self.post(&s.at("/v1/login"), &form).await;
        assert!(done.location().starts_with(WEB_REDIRECT), "first-party sign-in asked something: {}", done.location());
        done
    }

    /// Whether the browser is still signed in: a `prompt=none` authorization gets a code.
    async fn signed_in(&mut self, s: &Serve) -> bool {
        let r = self.authorize(s, "identity.web", WEB_REDIRECT, "openid", &[("prompt", "none")]).await;
        let params = r.redirect_params();
        match params.get("error").map(String::as_str) {
            None => params.contains_key("code"),
            Some("login_required") => false,
            Some(other) => panic!("prompt=none answered {other}"),
        }
    }
}

/// Where an authorization went: straight back with a code, or to the consent page.
fn went_to_consent(r: &Reply, s: &Serve) -> bool {
    let location = r.location();
    if location.starts_with(&s.at("/v1/consent")) {
        return true;
    }
    assert!(r.redirect_params().contains_key("code"), "neither a code nor consent: {location}");
    false
}

// --- item 4 ---

#[tokio::test]
async fn a_tenants_own_labels_and_metadata_never_satisfy_what_the_platform_asserts() {
    let extra = [
        r#"---
apiVersion: v1
kind: Namespace
metadata: { name: team-gold, labels: { tessera.dev/tier: gold, tessera.dev/tenant: gold-co } }
---
apiVersion: v1
kind: Namespace
metadata: { name: aaa-evil }
---
apiVersion: tessera.dev/v1alpha1
kind: AuthScope
metadata: { name: admin, namespace: identity }
spec: { serverRef: { name: payments }, name: payments:admin }
---
apiVersion: tessera.dev/v1alpha1
kind: AuthScope
metadata: { name: gold, namespace: identity }
spec: { serverRef: { name: payments }, name: payments:gold }
---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: { name: gold-label, namespace: identity }
spec:
  serverRef: { name: payments }
  priority: 1
  clients: { selector: { matchLabels: { tier: gold } } }
  rules: [ { name: admin, grantTypes: [client_credentials], scopes: [payments:admin] } ]
---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: { name: gold-namespace, namespace: identity }
spec:
  serverRef: { name: payments }
  priority: 2
  clients: { all: true, namespaceSelector: { matchLabels: { tessera.dev/tier: gold } } }
  rules: [ { name: gold, grantTypes: [client_credentials], scopes: [payments:gold] } ]
---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: { name: machines, namespace: identity }
spec:
  serverRef: { name: payments }
  priority: 3
  clients: { all: true }
  rules: [ { name: read, grantTypes: [client_credentials], scopes: [payments:read] } ]
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClaim
metadata: { name: tenant, namespace: identity }
spec:
  serverRef: { name: payments }
  name: tenant
  value: "'tessera.dev/tenant' in client.namespaceLabels ? client.namespaceLabels['tessera.dev/tenant'] : null"
"#
        .to_owned(),
        client("aaa-evil", "app", "tier: gold", "  grantTypes: [client_credentials]\n  metadata: { tenant: gold-co }"),
        client("team-gold", "app", "", "  grantTypes: [client_credentials]"),
        client("identity", "console", "tier: gold", "  grantTypes: [client_credentials]"),
    ]
    .concat();
    let s = serve("", &extra);

    for scope in ["payments:admin", "payments:gold"] {
        let got = s.client_credentials("aaa-evil.app", "app-secret", scope).await;
        let (status, body) = got.expect_err("the tenant's own labels selected it");
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{scope}: {body}");
    }
    let evil = s.client_credentials("aaa-evil.app", "app-secret", "payments:read").await.unwrap();
    assert!(evil.get("tenant").is_none(), "spec.metadata passed for the tenant: {evil}");

    let gold = s.client_credentials("team-gold.app", "app-secret", "payments:gold").await.unwrap();
    assert_eq!(gold["tenant"], "gold-co", "the namespace's label is the tenant: {gold}");
    let own = s.client_credentials("identity.console", "console-secret", "payments:admin").await.unwrap();
    assert_eq!(own["scp"][0], "payments:admin", "labels of the server's own clients still select: {own}");
}

// --- item 5 ---

#[tokio::test]
async fn clients_of_other_namespaces_get_a_code_only_after_the_person_allows_them() {
    let code_client = |ns: &str, name: &str, redirect: &str| {
        client(
            ns,
            name,
            "",
            &format!(
                "  grantTypes: [authorization_code, refresh_token]\n  redirectUris: [{redirect}]\n  displayName: Payments"
            ),
        )
    };
    let extra = [
        r#"---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: { name: people, namespace: identity }
spec:
  serverRef: { name: payments }
  clients: { all: true }
  rules:
    - { name: people, grantTypes: [authorization_code, refresh_token], scopes: [openid, offline_access, payments:read], users: { everyone: true } }
"#
        .to_owned(),
        code_client("identity", "web", WEB_REDIRECT),
        code_client("team-b", "app", APP_REDIRECT),
        code_client("team-b", "friend", APP_REDIRECT),
    ]
    .concat();
    let s = serve("  trustedClients: [team-b.friend]", &extra);
    let mut alice = Browser::new();
    alice.sign_in(&s).await;

    // Third-party: the consent page, which says so, before any code.
    let scope = "openid payments:read";
    let r = alice.authorize(&s, "team-b.app", APP_REDIRECT, scope, &[]).await;
    assert!(went_to_consent(&r, &s), "a signed-in person was sent back to a tenant's app without a page");
    let page = alice.get(&r.location()).await;
    assert!(page.body.contains("team-b.app") && page.body.contains("not operated by"), "{}", page.body);
    let none = alice.authorize(&s, "team-b.app", APP_REDIRECT, scope, &[("prompt", "none")]).await;
    assert_eq!(none.redirect_params().get("error").map(String::as_str), Some("consent_required"));
    let form = [("request", page.hidden("request")), ("csrf", page.hidden("csrf")), ("decision", "allow".into())];
    let allowed = alice.post(&s.at("/v1/consent"), &form).await;
    assert!(allowed.location().starts_with(APP_REDIRECT) && allowed.redirect_params().contains_key("code"));

    // Asked once per client and scope set, remembered for the person (a new session too).
    let again = alice.authorize(&s, "team-b.app", APP_REDIRECT, scope, &[]).await;
    assert!(!went_to_consent(&again, &s), "the same scopes were asked again");
    let mut later = Browser::new();
    later.sign_in(&s).await;
    let r = later.authorize(&s, "team-b.app", APP_REDIRECT, scope, &[]).await;
    assert!(!went_to_consent(&r, &s), "consent is remembered per person, not per session");
    let r = alice.authorize(&s, "team-b.app", APP_REDIRECT, "openid", &[]).await;
    assert!(!went_to_consent(&r, &s), "fewer scopes than allowed need no page");

    // offline_access: asked every time for a third-party client.
    for _ in 0..2 {
        let r = alice.authorize(&s, "team-b.app", APP_REDIRECT, "openid offline_access", &[]).await;
        assert!(went_to_consent(&r, &s), "a refresh token for a tenant's app without asking");
        let page = alice.get(&r.location()).await;
        let form = [("request", page.hidden("request")), ("csrf", page.hidden("csrf")), ("decision", "allow".into())];
        assert!(alice.post(&s.at("/v1/consent"), &form).await.redirect_params().contains_key("code"));
    }

    // A client the server's owner trusts, and the server's own, keep today's behaviour.
    let r = alice.authorize(&s, "team-b.friend", APP_REDIRECT, "openid offline_access payments:read", &[]).await;
    assert!(!went_to_consent(&r, &s), "spec.trustedClients was asked for consent");
    let r = alice.authorize(&s, "identity.web", WEB_REDIRECT, "openid offline_access payments:read", &[]).await;
    assert!(!went_to_consent(&r, &s), "the server's own client was asked for consent");
}

/// Everyone may sign in to any client with authorization_code for `openid payments:read`.
const PEOPLE_SIGN_IN: &str = r#"---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: { name: people, namespace: identity }
spec:
  serverRef: { name: payments }
  clients: { all: true }
  rules:
    - { name: people, grantTypes: [authorization_code], scopes: [openid, payments:read], users: { everyone: true } }
"#;

// --- item 12 ---

#[tokio::test]
async fn logout_without_a_valid_id_token_hint_asks_before_ending_the_session() {
    let extra = [
        PEOPLE_SIGN_IN.to_owned(),
        client(
            "identity",
            "web",
            "",
            &format!("  grantTypes: [authorization_code]\n  redirectUris: [{WEB_REDIRECT}]\n  postLogoutRedirectUris: [{WEB_REDIRECT}]"),
        ),
    ]
    .concat();
    let s = serve("", &extra);
    let mut alice = Browser::new();
    alice.sign_in(&s).await;

    // A cross-site GET (an <img> or a link) without a hint: a page, the session stays.
    let page = alice.get(&s.at("/v1/logout")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("method=\"post\""), "{}", page.body);
    assert!(alice.signed_in(&s).await, "a GET without id_token_hint ended the session");
    let forged = alice.post(&s.at("/v1/logout"), &[("confirm", "guess".to_owned())]).await;
    assert_eq!(forged.status, StatusCode::OK);
    assert!(alice.signed_in(&s).await, "a POST without the page's token ended the session");

    // The person confirms: signed out, and sent where the application asked.
    let query = format!("/v1/logout?client_id=identity.web&post_logout_redirect_uri={WEB_REDIRECT}&state=bye");
    let page = alice.get(&s.at(&query)).await;
    let form: Vec<(&str, String)> = ["confirm", "client_id", "post_logout_redirect_uri", "state"]
        .into_iter()
        .map(|k| (k, page.hidden(k)))
        .collect();
    let done = alice.post(&s.at("/v1/logout"), &form).await;
    assert_eq!(done.location(), format!("{WEB_REDIRECT}?state=bye"));
    assert!(!alice.signed_in(&s).await, "the confirmed logout left the session");

    // With a valid id_token_hint, as before: signed out at once.
    let mut bob = Browser::new();
    let signed_bob = bob.sign_in(&s).await;
    let code = signed_bob.redirect_params()["code"].clone();
    let tokens: Value = reqwest::Client::new()
        .post(s.at("/v1/token"))
        .basic_auth("identity.web", Some("web-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", WEB_REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hint = tokens["id_token"].as_str().unwrap_or_else(|| panic!("no id_token: {tokens}"));
    let r = bob.get(&s.at(&format!("/v1/logout?id_token_hint={hint}"))).await;
    assert!(r.body.contains("You are signed out"), "{}", r.body);
    assert!(!bob.signed_in(&s).await, "a valid id_token_hint did not end the session");
}

// --- item 8, for people who are signed in ---

#[tokio::test]
async fn a_signed_in_persons_authorizations_are_not_charged_to_the_sources_sign_in_limit() {
    let extra = [
        PEOPLE_SIGN_IN.to_owned(),
        client("identity", "web", "", &format!("  grantTypes: [authorization_code]\n  redirectUris: [{WEB_REDIRECT}]")),
    ]
    .concat();
    let s = serve("", &extra);
    // An SPA renewing its tokens (or many people behind one NAT): far past the 60 sign-ins a
    // source may start, every authorization with a fresh session is answered with a code.
    let mut alice = Browser::new();
    alice.sign_in(&s).await;
    for i in 0..150 {
        let r = alice.authorize(&s, "identity.web", WEB_REDIRECT, "openid", &[]).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "authorization {i} of a signed-in person: {}", r.body);
        assert!(r.redirect_params().contains_key("code"), "authorization {i}: {}", r.location());
    }
    // Those left the address's budget whole: 59 more people (alice's own sign-in took one)
    // can start signing in from it.
    for i in 0..59 {
        let r = Browser::new().authorize(&s, "identity.web", WEB_REDIRECT, "openid", &[]).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "sign-in {i} from the same address: {}", r.body);
        assert!(r.location().contains("/v1/login?request="), "{}", r.location());
    }
    // What the limit bounds, a sign-in that waits for a login, is still refused past it.
    let mut refused = 0;
    for _ in 0..20 {
        let r = Browser::new().authorize(&s, "identity.web", WEB_REDIRECT, "openid", &[]).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers.contains_key("retry-after"), "429 without Retry-After");
            refused += 1;
        }
    }
    assert!(refused >= 15, "20 sign-ins past the limit, only {refused} refused");
}

// --- item 4, through the operator: namespace labels come from the Namespace objects ---

#[tokio::test]
async fn the_operator_selects_clients_of_other_namespaces_by_their_namespaces_labels_only() {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::Api;
    use kube::api::{Patch, PatchParams};

    use crate::support::{self, examples::apply_doc, examples::apply_examples, operator::OperatorProcess};

    let kube = support::client().await;
    let server_ns = support::namespace(&kube, "pol-id").await;
    let team_ns = support::namespace(&kube, "pol-team").await;
    let evil_ns = support::namespace(&kube, "pol-evil").await;
    apply_examples(&kube, &server_ns, &team_ns).await;
    let namespaces = Api::<Namespace>::all(kube.clone());
    for (ns, labels) in [
        (&team_ns, serde_json::json!({ "tessera.dev/tier": "gold" })),
        (&evil_ns, serde_json::json!({ "tessera.dev/clients": "payments" })),
    ] {
        let patch = serde_json::json!({ "metadata": { "labels": labels } });
        namespaces.patch(ns, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    let policy = |name: &str, clients: Value| {
        serde_json::json!({
            "apiVersion": "tessera.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": { "name": name, "namespace": server_ns },
            "spec": { "serverRef": { "name": "payments" }, "clients": clients,
                      "rules": [ { "name": "admin", "grantTypes": ["client_credentials"], "scopes": ["payments:admin"] } ] }
        })
    };
    apply_doc(&kube, &policy("gold-label", serde_json::json!({ "selector": { "matchLabels": { "tier": "gold" } } })))
        .await;
    let by_namespace =
        serde_json::json!({ "all": true, "namespaceSelector": { "matchLabels": { "tessera.dev/tier": "gold" } } });
    apply_doc(&kube, &policy("gold-namespace", by_namespace)).await;
    let evil_client = serde_json::json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthClient",
        "metadata": { "name": "app", "namespace": evil_ns, "labels": { "tier": "gold" } },
        "spec": { "serverRef": { "name": "payments", "namespace": server_ns }, "grantTypes": ["client_credentials"],
                  "metadata": { "tenant": "acme" } }
    });
    apply_doc(&kube, &evil_client).await;

    let plane = support::control_plane();
    let log = plane.data_dir.join(format!("operator-{server_ns}.log"));
    let _operator = OperatorProcess::start(&plane.kubeconfig, &[&server_ns, &team_ns, &evil_ns], &log);
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), &server_ns);
    let evil_id = format!("{evil_ns}.app");
    let config: Value = support::eventually(support::examples::WAIT, "the config with the tenant's client", || async {
        let secret = secrets.get_opt("payments-config").await.unwrap()?;
        let config: Value = serde_json::from_slice(&secret.data?.get("config.json")?.0).ok()?;
        config["clients"].as_array()?.iter().any(|c| c["clientId"] == evil_id.as_str()).then_some(config)
    })
    .await;
    let policy_ids = |name: &str| -> Vec<String> {
        let p = config["policies"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
        p["clients"]["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()).collect()
    };
    assert!(policy_ids("gold-label").is_empty(), "the tenant's own label selected it: {:?}", policy_ids("gold-label"));
    let gold = policy_ids("gold-namespace");
    assert!(gold.contains(&format!("{team_ns}.orders-api")) && !gold.contains(&evil_id), "{gold:?}");
    let team = config["clients"].as_array().unwrap().iter().find(|c| c["clientId"] == format!("{team_ns}.orders-api"));
    assert_eq!(team.unwrap()["namespaceLabels"]["tessera.dev/tenant"], "acme", "the operator read the namespace");
}
