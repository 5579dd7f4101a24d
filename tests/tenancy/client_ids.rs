//! Client ids, subjects and the rules `serve` enforces without admission (items 3, 13 and 14
//! of issue 17). A hostile tenant here is namespace `aaa-evil`, admitted by the examples'
//! server (it carries the `tessera.dev/clients: payments` label) and sorted before
//! `team-orders`, so that on a tie it would be the "older" owner of an id.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tessera::api::AuthClient;

use crate::support::{
    self,
    examples::{apply_examples, free_port, wait_condition_reason},
    operator::OperatorProcess,
};

// --- against `tessera serve` ---

/// `tessera serve` of the examples plus `extra` (YAML documents), on a free port.
struct Serve {
    child: Child,
    port: u16,
    state: tempfile::TempDir,
    _files: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hostile namespace, admitted like team-orders, with an AuthClient of `client_id` whose
/// secret (`evil-secret`) the attacker wrote.
fn squatter(name: &str, client_id: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{ name: aaa-evil, labels: {{ tessera.dev/clients: payments }} }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: {name}-oauth, namespace: aaa-evil }}
stringData: {{ client_secret: evil-secret }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: {name}, namespace: aaa-evil }}
spec:
  serverRef: {{ name: payments, namespace: identity }}
  clientId: "{client_id}"
  grantTypes: [client_credentials]
  authentication: {{ method: ClientSecretPost }}
"#
    )
}

impl Serve {
    fn start(extra: &str) -> Self {
        let port = free_port();
        let files = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(support::repo_root().join("examples")).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap().replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
            std::fs::write(files.path().join(path.file_name().unwrap()), text).unwrap();
        }
        std::fs::write(
            files.path().join("99-tenant.yaml"),
            extra.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}")),
        )
        .unwrap();
        let state = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["serve", "-f"])
            .arg(files.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start tessera serve");
        let mut serve = Self { child, port, state, _files: files };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = serve.child.try_wait() {
                panic!("tessera serve exited: {status}");
            }
            assert!(Instant::now() < deadline, "tessera serve did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        serve.port = port;
        serve
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The generated secret of a client of `identity/payments`, from the state directory.
    fn generated_secret(&self, client_id: &str) -> String {
        let path: PathBuf = self.state.path().join("identity/payments/clients").join(format!("{client_id}.json"));
        let creds: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        creds["client_secret"].as_str().unwrap().to_owned()
    }

    /// POSTs a form to the payments token endpoint: the status and the JSON answer.
    async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = reqwest::Client::new().post(self.url("/oauth2/payments/v1/token")).form(form).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

/// The claims of a JWT, unverified (the tests here check what a token says, not its signature).
fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn clients_outside_the_server_namespace_cannot_claim_another_namespaces_id() {
    let serve = Serve::start(&squatter("orders-admin", "team-orders.orders-admin"));
    let evil = [
        ("grant_type", "client_credentials"),
        ("client_id", "team-orders.orders-admin"),
        ("client_secret", "evil-secret"),
        ("scope", "payments:admin"),
    ];
    let (status, body) = serve.token(&evil).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "the squatter got {body}");

    let secret = serve.generated_secret("team-orders.orders-admin");
    let real = [
        ("grant_type", "client_credentials"),
        ("client_id", "team-orders.orders-admin"),
        ("client_secret", secret.as_str()),
        ("scope", "payments:admin"),
    ];
    let (status, body) = serve.token(&real).await;
    assert_eq!(status, 200, "the real client is refused: {body}");
    let token = claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        (token["sub"].as_str(), token["scp"][0].as_str()),
        (Some("team-orders.orders-admin"), Some("payments:admin"))
    );
}

#[tokio::test]
async fn client_ids_shaped_like_a_person_or_a_service_account_get_no_token() {
    for (name, id) in [("alice", "alice"), ("worker", "system:serviceaccount:team-orders:orders-worker")] {
        let serve = Serve::start(&squatter(name, id));
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", "evil-secret"),
            ("scope", "payments:read"),
        ];
        let (status, body) = serve.token(&form).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{id} got {body}");
    }
}

#[tokio::test]
async fn a_public_client_gets_no_client_credentials_token_under_serve() {
    let public = r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: { name: m2m-public, namespace: team-orders }
spec:
  serverRef: { name: payments, namespace: identity }
  grantTypes: [client_credentials]
  authentication: { method: None }
"#;
    let serve = Serve::start(public);
    let form =
        [("grant_type", "client_credentials"), ("client_id", "team-orders.m2m-public"), ("scope", "payments:read")];
    let (status, body) = serve.token(&form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "a client with no credentials got {body}"
    );
}

#[tokio::test]
async fn servers_of_one_name_in_two_namespaces_have_their_own_keys_under_serve() {
    let twin = r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: { name: payments, namespace: other }
spec:
  issuer: http://127.0.0.1:8080/oauth2/other-payments
  audiences: [api://other-payments]
"#;
    let serve = Serve::start(twin);
    let kids = |path: &'static str| {
        let url = serve.url(path);
        async move {
            let jwks: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            let mut kids: Vec<String> =
                jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect();
            kids.sort();
            kids
        }
    };
    let (a, b) = (kids("/oauth2/payments/v1/keys").await, kids("/oauth2/other-payments/v1/keys").await);
    assert!(!a.is_empty() && !b.is_empty());
    assert!(a.iter().all(|k| !b.contains(k)), "identity/payments and other/payments share keys: {a:?} {b:?}");
    assert!(serve.state.path().join("other/payments/keys.json").is_file());
}

// --- against a real control plane ---

async fn create_client(api: &Api<AuthClient>, name: &str, client_id: &str, server_ns: &str) -> Result<(), String> {
    let client: AuthClient = serde_json::from_value(json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthClient",
        "metadata": { "name": name },
        "spec": {
            "serverRef": { "name": "payments", "namespace": server_ns },
            "clientId": client_id,
            "grantTypes": ["client_credentials"],
        },
    }))
    .unwrap();
    api.create(&PostParams::default(), &client).await.map(drop).map_err(|e| e.to_string())
}

#[tokio::test]
async fn admission_refuses_client_ids_outside_the_charset() {
    let client = support::client().await;
    let ns = support::namespace(&client, "ids-charset").await;
    let api: Api<AuthClient> = Api::namespaced(client.clone(), &ns);
    for (name, id) in [("sa", "system:serviceaccount:team-orders:orders-worker"), ("pipe", "corp|alice"), ("at", "a@b")]
    {
        let err = create_client(&api, name, id, &ns).await.expect_err(id);
        assert!(err.contains("clientId must start with a letter or digit"), "{id}: {err}");
    }
    create_client(&api, "fine", &format!("{ns}.fine"), &ns).await.unwrap();
}

/// The chart's client id admission policy, bound only to namespaces labelled `label`, so the
/// control plane the other tests share keeps its behaviour.
async fn install_admission_policy(client: &kube::Client, label: &str) {
    let docs = support::helm::render("tessera", "tessera-system", &[]);
    use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
    let ar = |kind: &str| match kind {
        "ValidatingAdmissionPolicy" => kube::api::ApiResource::erase::<ValidatingAdmissionPolicy>(&()),
        _ => kube::api::ApiResource::erase::<ValidatingAdmissionPolicyBinding>(&()),
    };
    let policy_name = format!("client-ids-{label}");
    for mut doc in docs.into_iter().filter(|d| d["apiVersion"] == "admissionregistration.k8s.io/v1") {
        let kind = doc["kind"].as_str().unwrap().to_owned();
        doc["metadata"]["name"] = json!(policy_name);
        if kind == "ValidatingAdmissionPolicyBinding" {
            doc["spec"]["policyName"] = json!(policy_name);
            doc["spec"]["matchResources"] =
                json!({ "namespaceSelector": { "matchLabels": { "tessera-test/client-ids": label } } });
        }
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar(&kind));
        let obj: DynamicObject = serde_json::from_value(doc).unwrap();
        api.patch(&policy_name, &PatchParams::apply("tests").force(), &Patch::Apply(&obj)).await.unwrap();
    }
}

#[tokio::test]
async fn the_charts_admission_policy_refuses_a_client_id_another_namespace_owns() {
    let client = support::client().await;
    let server_ns = support::namespace(&client, "ids-server").await;
    let evil_ns = support::namespace(&client, "ids-evil").await;
    let label = evil_ns.clone();
    install_admission_policy(&client, &label).await;
    let patch = json!({ "metadata": { "labels": { "tessera-test/client-ids": label } } });
    for ns in [&server_ns, &evil_ns] {
        Api::<Namespace>::all(client.clone()).patch(ns, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    let evil: Api<AuthClient> = Api::namespaced(client.clone(), &evil_ns);
    // A policy takes a moment to be enforced after it is created.
    support::eventually(Duration::from_secs(30), "the admission policy to refuse a squatter", || async {
        match create_client(&evil, "probe", "team-orders.orders-admin", &server_ns).await {
            Err(e) if e.contains("belongs to another namespace") => Some(()),
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(()) => {
                let _ = evil.delete("probe", &Default::default()).await;
                None
            }
        }
    })
    .await;
    for id in ["alice", "console"] {
        let err = create_client(&evil, "plain", id, &server_ns).await.expect_err(id);
        assert!(err.contains("belongs to another namespace"), "{id}: {err}");
    }
    create_client(&evil, "own", &format!("{evil_ns}.orders-admin"), &server_ns).await.unwrap();
    // In the server's namespace, ids without a '.' are its own.
    let own: Api<AuthClient> = Api::namespaced(client.clone(), &server_ns);
    create_client(&own, "console", "console", &server_ns).await.unwrap();
    let err = create_client(&own, "dotted", "team-orders.console", &server_ns).await.expect_err("dotted");
    assert!(err.contains("belongs to another namespace"), "{err}");
}

#[tokio::test]
async fn the_operator_refuses_a_squatted_client_id_on_status_and_the_owner_keeps_it() {
    let client = support::client().await;
    let server_ns = support::namespace(&client, "sq-id").await;
    let team_ns = support::namespace(&client, "sq-team").await;
    // Sorts first, so it would win a tie: the hostile namespace, admitted like the team.
    let evil_ns = support::namespace(&client, "aaa-evil").await;
    let patch = json!({ "metadata": { "labels": { "tessera.dev/clients": "payments" } } });
    Api::<Namespace>::all(client.clone())
        .patch(&evil_ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    // The squatter is older than the client whose id it takes.
    let evil: Api<AuthClient> = Api::namespaced(client.clone(), &evil_ns);
    create_client(&evil, "squat", &format!("{team_ns}.orders-admin"), &server_ns).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply_examples(&client, &server_ns, &team_ns).await;

    let plane = support::control_plane();
    let log = plane.data_dir.join(format!("operator-{server_ns}.log"));
    let _operator = OperatorProcess::start(&plane.kubeconfig, &[&server_ns, &team_ns, &evil_ns], &log);
    wait_condition_reason(&evil, "squat", "Accepted", "False", "ClientIdNotOwned").await;
    let team: Api<AuthClient> = Api::namespaced(client.clone(), &team_ns);
    wait_condition_reason(&team, "orders-admin", "Accepted", "True", "Accepted").await;
    // No credentials Secret was written for the squatter.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &evil_ns);
    assert!(secrets.get_opt("squat-oauth").await.unwrap().is_none());
    let status = evil.get("squat").await.unwrap().status.unwrap();
    let accepted = status.conditions.iter().find(|c| c.type_ == "Accepted").unwrap();
    assert!(accepted.message.contains("belongs to another namespace"), "{}", accepted.message);
}
