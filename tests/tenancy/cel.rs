//! CEL expressions a tenant writes (AuthClaim values, AccessPolicy conditions) cannot crash,
//! stall or slow the operator or `serve`: refused before parsing when too deep, and when the
//! config compiles when too costly (`docs/security.md`, "CEL expressions").

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tessera::api::{AuthClaim, AuthorizationServer};

use crate::support::{
    self,
    examples::{WAIT, apply_doc, examples, get_value, wait_condition_reason},
    operator::OperatorProcess,
};

/// Overflowed the parser's stack (item 1 of issue 17): 55 nested parentheses.
fn crashing_value() -> String {
    format!("user == null ? {}1{} : 0", "(".repeat(55), ")".repeat(55))
}

/// 10^6 inner evaluations in 181 characters (item 2).
fn stalling_value() -> String {
    let ten = "[0,1,2,3,4,5,6,7,8,9]";
    format!("{ten}.map(a,{ten}.map(b,{ten}.map(c,{ten}.map(d,{ten}.map(e,{ten}.map(f,1))))))")
}

/// Reads only `client`, so it would be worked out for every client when the config loads.
fn costly_at_load_value() -> String {
    let list = format!("[{}]", (0..300).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
    format!("{list}.map(a, {list}.map(b, client.id + client.namespace))")
}

fn claim(name: &str, value: &str, ns: &str) -> Value {
    json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthClaim",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "serverRef": { "name": "payments" }, "name": name, "token": "AccessToken", "value": value },
    })
}

struct Serve {
    child: Child,
    port: u16,
    state: tempfile::TempDir,
    log: PathBuf,
    _files: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tessera serve` of the examples and `extra` documents, on a free port.
fn serve(extra: &[Value]) -> Serve {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let files = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(support::repo_root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap().replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
        std::fs::write(files.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let hostile: Vec<String> = extra.iter().map(|d| serde_norway::to_string(d).unwrap()).collect();
    std::fs::write(files.path().join("90-hostile.yaml"), hostile.join("---\n")).unwrap();
    let state = tempfile::tempdir().unwrap();
    let log = files.path().join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "-f"])
        .arg(files.path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(state.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start tessera serve");
    let mut s = Serve { child, port, state, log, _files: files };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(s.child.try_wait().unwrap().is_none(), "tessera serve exited:\n{}", s.log_text());
        assert!(Instant::now() < deadline, "tessera serve did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

impl Serve {
    fn log_text(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    /// A client_credentials token of the examples' orders-api client, its claims decoded.
    async fn token_claims(&self) -> Value {
        let id = "team-orders.orders-api";
        let creds: Value = serde_json::from_slice(
            &std::fs::read(self.state.path().join("identity/payments/clients").join(format!("{id}.json"))).unwrap(),
        )
        .unwrap();
        let url = format!("http://127.0.0.1:{}/oauth2/payments/v1/token", self.port);
        let response = reqwest::Client::new()
            .post(url)
            .basic_auth(id, creds["client_secret"].as_str())
            .form(&[("grant_type", "client_credentials"), ("scope", "payments:read")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap();
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }
}

#[tokio::test]
async fn serve_leaves_out_deep_and_costly_claims_and_keeps_serving() {
    let hostile = [
        claim("crash", &crashing_value(), "identity"),
        claim("stall", &stalling_value(), "identity"),
        claim("slow-start", &costly_at_load_value(), "identity"),
        claim("brackets", &format!("client.id + '{}'", "[(".repeat(100)), "identity"),
    ];
    let started = Instant::now();
    let s = serve(&hostile);
    let claims = s.token_claims().await;
    assert!(started.elapsed() < Duration::from_secs(20), "serving took {:?}", started.elapsed());
    assert_eq!(claims["tenant"], "acme", "{claims}");
    for name in ["crash", "stall", "slow-start"] {
        assert!(claims.get(name).is_none(), "{name} was set: {claims}");
    }
    // Brackets inside a string literal are not nesting: that claim is admitted.
    assert!(claims["brackets"].as_str().is_some_and(|b| b.ends_with("[([(")), "{claims}");
    let log = s.log_text();
    let warnings: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect();
    for (name, says) in [("crash", "nests 223 deep"), ("stall", "nests"), ("slow-start", "estimated cost")] {
        let fields = warnings.iter().map(|w| &w["fields"]).find(|f| f["name"] == name);
        let fields = fields.unwrap_or_else(|| panic!("no warning for {name}:\n{log}"));
        assert_eq!(fields["reason"], "InvalidExpression", "{fields}");
        assert!(fields["message"].as_str().is_some_and(|m| m.contains(says)), "{name}: {fields}");
    }
    // Still serving.
    s.token_claims().await;
}

#[tokio::test]
async fn the_operator_refuses_a_stack_overflowing_claim_and_keeps_rotating_other_servers_keys() {
    let client = support::client().await;
    let victim_ns = support::namespace(&client, "cel-id").await;
    let client_ns = support::namespace(&client, "cel-cl").await;
    let other_ns = support::namespace(&client, "cel-other").await;
    let patch = json!({ "metadata": { "labels": { "tessera.dev/clients": "payments" } } });
    Api::<Namespace>::all(client.clone())
        .patch(&client_ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let plane = support::control_plane();
    let log = plane.data_dir.join(format!("operator-{victim_ns}.log"));
    let mut operator = OperatorProcess::start(&plane.kubeconfig, &[&victim_ns, &client_ns, &other_ns], &log);

    // Another team's server, reconciled by the same operator.
    let docs = examples(&victim_ns, &client_ns);
    let mut other = docs.iter().find(|d| d["kind"] == "AuthorizationServer").unwrap().clone();
    other["metadata"]["namespace"] = json!(other_ns);
    other["spec"]["issuer"] = json!("http://127.0.0.1:8080/oauth2/other");
    // Its sign-in Secrets stay in the examples' namespace: this server signs machine tokens only.
    other["spec"].as_object_mut().unwrap().remove("identity");
    // Rotated only when asked, and soon: a Next key signs once published for prePublish.
    other["spec"]["signing"]["rotation"] =
        json!({ "mode": "Manual", "period": "2160h", "prePublish": "10s", "retainRetired": "10s" });
    apply_doc(&client, &other).await;
    let servers: Api<AuthorizationServer> = Api::namespaced(client.clone(), &other_ns);
    wait_condition_reason(&servers, "payments", "SigningKeysReady", "True", "KeysPublished").await;
    let active = |v: &Value| v["status"]["signing"]["activeKeyId"].as_str().map(str::to_owned);
    let before = active(&get_value(&servers, "payments").await.unwrap()).unwrap();

    // The examples, and the claim that overflowed the operator's 2 MiB worker stack.
    for doc in &docs {
        apply_doc(&client, doc).await;
    }
    apply_doc(&client, &claim("crash", &crashing_value(), &victim_ns)).await;
    let claims: Api<AuthClaim> = Api::namespaced(client.clone(), &victim_ns);
    wait_condition_reason(&claims, "crash", "Accepted", "False", "InvalidExpression").await;
    let status = get_value(&claims, "crash").await.unwrap();
    let conditions = status["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let accepted = conditions.iter().find(|c| c["type"] == "Accepted").cloned().unwrap_or_default();
    let message = accepted["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("nests 223 deep") && message.contains("at most"), "{status}");
    wait_condition_reason(&claims, "tenant", "Accepted", "True", "Accepted").await;

    // The other server's key still rotates on request.
    let rotate = json!({ "metadata": { "annotations": { "tessera.dev/rotate": "cel-test" } } });
    servers.patch("payments", &PatchParams::default(), &Patch::Merge(&rotate)).await.unwrap();
    support::eventually(WAIT, "the other server's active key to change", || async {
        let now = active(&get_value(&servers, "payments").await?)?;
        (now != before).then_some(())
    })
    .await;
    assert_eq!(operator.wait_exit(Duration::from_millis(500)), None, "the operator exited; see {}", log.display());
}
