//! `tessera issuer` against a real control plane: it serves what its two Secrets hold, swaps
//! a changed config in within a second, and accepts a ServiceAccount token minted by
//! TokenRequest as the client assertion of an AuthClient of method ServiceAccount, refusing
//! the same ServiceAccount name from another namespace.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tessera::config::{CONFIG_SECRET_KEY, ServerConfig, config_secret_name};
use tessera::keys::{KEYS_SECRET_KEY, KeySet, keys_secret_name, plan};
use tessera::standalone::{StateDir, compile_all, manifests};

struct IssuerProcess(Child);

impl Drop for IssuerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The compiled config of a server in `ns` whose client `worker` authenticates as ServiceAccount `worker`.
fn config(ns: &str, issuer: &str) -> ServerConfig {
    let yaml = format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: {{ name: payments, namespace: {ns} }}
spec: {{ issuer: "{issuer}", audiences: [api://payments], signing: {{ algorithm: ES256 }}, trustedIssuers: [ {{ kubernetes: true }} ] }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthScope
metadata: {{ name: read, namespace: {ns} }}
spec: {{ serverRef: {{ name: payments }}, name: payments:read, default: true }}
---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: machines, namespace: {ns} }}
spec:
  serverRef: {{ name: payments }}
  clients: {{ all: true }}
  rules: [ {{ name: m2m, grantTypes: [client_credentials], scopes: [payments:read] }} ]
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: worker, namespace: {ns} }}
spec:
  serverRef: {{ name: payments }}
  grantTypes: [client_credentials]
  authentication: {{ method: ServiceAccount, serviceAccountName: worker }}
"#
    );
    let mut m = manifests::Manifests::default();
    manifests::add_documents(&mut m, Path::new("cluster.yaml"), &yaml).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let compiled = compile_all(&m, Some(&StateDir::new(dir.path().into()))).unwrap().remove(0);
    assert!(compiled.rejected.is_empty(), "{:?}", compiled.rejected);
    compiled.config
}

fn secret(name: String, key: &str, value: String) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta { name: Some(name), ..Default::default() },
        data: Some(BTreeMap::from([(key.to_owned(), ByteString(value.into_bytes()))])),
        ..Default::default()
    }
}

async fn apply(api: &Api<Secret>, s: &Secret) {
    let name = s.metadata.name.clone().unwrap();
    let mut s = s.clone();
    s.metadata.managed_fields = None;
    let body = serde_json::to_value(&s).unwrap();
    let mut body = body.as_object().unwrap().clone();
    body.insert("apiVersion".into(), json!("v1"));
    body.insert("kind".into(), json!("Secret"));
    api.patch(&name, &PatchParams::apply("tests").force(), &Patch::Apply(&Value::Object(body))).await.unwrap();
}

async fn service_account_token(client: &kube::Client, ns: &str, name: &str, audience: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    let _ = sas.create(&PostParams::default(), &sa).await;
    let req: TokenRequest =
        serde_json::from_value(json!({ "spec": { "audiences": [audience], "expirationSeconds": 600 } })).unwrap();
    let resp = sas.create_token_request(name, &PostParams::default(), &req).await.unwrap();
    resp.status.unwrap().token
}

async fn token_with_assertion(http: &reqwest::Client, issuer: &str, assertion: &str) -> (u16, Value) {
    let resp = http
        .post(format!("{issuer}/v1/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn issuer_serves_its_secrets_swaps_them_and_authenticates_service_accounts() {
    let client = support::client().await;
    let plane = support::control_plane();
    let ns = support::namespace(&client, "issuer").await;
    let other_ns = support::namespace(&client, "elsewhere").await;
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}/oauth2/payments");

    let mut cfg = config(&ns, &issuer);
    let now = jiff::Timestamp::now();
    let keys = plan(&cfg.signing, &KeySet::default(), now).apply(&KeySet::default(), &cfg.signing, now).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    apply(&secrets, &secret(config_secret_name("payments"), CONFIG_SECRET_KEY, cfg.to_json().unwrap())).await;
    apply(&secrets, &secret(keys_secret_name("payments"), KEYS_SECRET_KEY, keys.to_json().unwrap())).await;

    let _issuer = IssuerProcess(
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["issuer", "--namespace", &ns, "--server", "payments", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("KUBECONFIG", &plane.kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    support::eventually(Duration::from_secs(30), "the issuer to be ready", || async {
        let r = http.get(&ready).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    // A ServiceAccount token of the bound ServiceAccount, audience = issuer: a token.
    let sa_token = service_account_token(&client, &ns, "worker", &issuer).await;
    let (status, body) = token_with_assertion(&http, &issuer, &sa_token).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string());

    // The same ServiceAccount name in another namespace: refused.
    let foreign = service_account_token(&client, &other_ns, "worker", &issuer).await;
    let body = format!(
        "grant_type=client_credentials&client_id={ns}.worker&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={foreign}"
    );
    let resp = http
        .post(format!("{issuer}/v1/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // A token for another audience: refused.
    let wrong_aud = service_account_token(&client, &ns, "worker", "https://kubernetes.default.svc").await;
    assert_eq!(token_with_assertion(&http, &issuer, &wrong_aud).await.0, 401);

    // A changed config Secret is served within a second or so.
    cfg.audiences = vec!["api://payments-v2".into()];
    apply(&secrets, &secret(config_secret_name("payments"), CONFIG_SECRET_KEY, cfg.to_json().unwrap())).await;
    let changed = Instant::now();
    let token_url = format!("{issuer}/v1/token");
    let (http2, sa2) = (http.clone(), sa_token.clone());
    support::eventually(Duration::from_secs(10), "the new audience in tokens", || {
        let (http, sa, url) = (http2.clone(), sa2.clone(), token_url.clone());
        async move {
            let resp = http
                .post(&url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", sa.as_str()),
                ])
                .send()
                .await
                .ok()?;
            let body: Value = resp.json().await.ok()?;
            let token = body["access_token"].as_str()?;
            let claims = tessera::keys::jwt::peek(token).ok()?.claims;
            (claims["aud"] == "api://payments-v2").then_some(())
        }
    })
    .await;
    eprintln!("config swap observed after {:?}", changed.elapsed());
    assert!(changed.elapsed() < Duration::from_secs(5), "swap took {:?}", changed.elapsed());
}
