//! Key rotation end to end, against the real control plane: the operator rotates keys on a
//! schedule compressed to seconds, an issuer process started from the Deployment's own command
//! line (as its ServiceAccount) serves tokens, and a real verifier — Node `jose`
//! `createRemoteJWKSet` with its default caching — verifies every token it gets.

mod support;

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use support::{
    examples::{WAIT, apply_doc, free_port, get_value, token_for, token_kubeconfig},
    operator::OperatorProcess,
};
use tessera::api::AuthorizationServer;

const PERIOD_SECS: u64 = 40;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node_dir() -> PathBuf {
    support::repo_root().join("tests/interop/node")
}

fn require_node() {
    let ok = node_dir().join("node_modules/jose").exists()
        && Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    // This test is the proof that rotation never breaks a verifier: without its verifier it fails.
    assert!(ok, "node and tests/interop/node/node_modules are required: run `npm ci` in tests/interop/node");
}

fn docs(ns: &str, port: u16) -> Vec<Value> {
    let server = json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthorizationServer",
        "metadata": { "name": "rot", "namespace": ns },
        "spec": {
            "issuer": format!("http://127.0.0.1:{port}/oauth2/rot"),
            "audiences": ["api://rot"],
            "signing": { "algorithm": "ES256", "rotation": {
                "mode": "Automatic", "period": format!("{PERIOD_SECS}s"), "prePublish": "35s", "retainRetired": "10s" } }
        }
    });
    let scope = json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthScope",
        "metadata": { "name": "rot-read", "namespace": ns },
        "spec": { "serverRef": { "name": "rot" }, "name": "rot:read", "default": true }
    });
    let policy = json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": { "name": "m2m", "namespace": ns },
        "spec": { "serverRef": { "name": "rot" }, "clients": { "all": true },
                  "rules": [{ "name": "m2m", "grantTypes": ["client_credentials"], "scopes": ["rot:read"], "accessTokenLifetime": "5m" }] }
    });
    let client = json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthClient",
        "metadata": { "name": "verifier", "namespace": ns },
        "spec": { "serverRef": { "name": "rot" }, "grantTypes": ["client_credentials"],
                  "authentication": { "method": "ClientSecretBasic", "secretName": "verifier-oauth" } }
    });
    vec![server, scope, policy, client]
}

/// Starts the issuer exactly as the Deployment would, but listening on a loopback port.
async fn start_issuer_from_deployment(client: &kube::Client, ns: &str, port: u16) -> KillOnDrop {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = support::eventually(WAIT, "the issuer Deployment", || async {
        deployments.get_opt("rot-issuer").await.unwrap()
    })
    .await;
    let pod = d.spec.unwrap().template.spec.unwrap();
    let mut args = pod.containers[0].args.clone().unwrap();
    let listen = args.iter().position(|a| a == "--listen").expect("the issuer command line names --listen");
    args[listen + 1] = format!("127.0.0.1:{port}");
    let sa = pod.service_account_name.unwrap();
    let token = token_for(client, ns, &sa).await;
    let plane = support::control_plane();
    let kubeconfig = plane.data_dir.join(format!("issuer-{ns}.kubeconfig"));
    token_kubeconfig(&plane.kubeconfig, &token, &kubeconfig);
    let log = std::fs::File::create(plane.data_dir.join(format!("issuer-{ns}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

async fn http_ok(url: &str) -> bool {
    reqwest::get(url).await.is_ok_and(|r| r.status().is_success())
}

fn active_kid(server: &Value) -> Option<String> {
    server["status"]["signing"]["activeKeyId"].as_str().map(str::to_owned)
}

async fn fetch_token(token_url: &str, id: &str, secret: &str) -> String {
    let resp = reqwest::Client::new()
        .post(token_url)
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap_or_else(|| panic!("no token: {body}")).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_and_manual_rotations_never_fail_a_verifier_and_revocation_does() {
    require_node();
    let client = support::client().await;
    let ns = support::namespace(&client, "rotation").await;
    let port = free_port();
    for doc in docs(&ns, port) {
        apply_doc(&client, &doc).await;
    }
    let plane = support::control_plane();
    let _operator =
        OperatorProcess::start(&plane.kubeconfig, &[&ns], &plane.data_dir.join(format!("operator-{ns}.log")));
    let _issuer = start_issuer_from_deployment(&client, &ns, port).await;

    let issuer = format!("http://127.0.0.1:{port}/oauth2/rot");
    let jwks_url = format!("{issuer}/v1/keys");
    let token_url = format!("{issuer}/v1/token");
    support::eventually(WAIT, "the issuer to serve its JWKS", || async { http_ok(&jwks_url).await.then_some(()) })
        .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let creds =
        support::eventually(WAIT, "the client Secret", || async { secrets.get_opt("verifier-oauth").await.unwrap() })
            .await;
    let field = |k: &str| String::from_utf8(creds.data.as_ref().unwrap()[k].0.clone()).unwrap();
    let (client_id, client_secret) = (field("client_id"), field("client_secret"));

    // The verifier runs for ten scheduled periods and a little more.
    let seconds = PERIOD_SECS * 10 + 45;
    let verifier = Command::new("node")
        .current_dir(node_dir())
        .args(["rotation-verifier.mjs", "loop", &token_url, &jwks_url, &issuer, &client_id, &client_secret])
        .arg(seconds.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let verifier = tokio::task::spawn_blocking(move || verifier.wait_with_output().unwrap());

    // Watch the active key; after a few scheduled rotations, one manual rotation.
    let servers: Api<AuthorizationServer> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    let mut actives: Vec<String> = Vec::new();
    let mut manual_asked = false;
    while started.elapsed() < Duration::from_secs(seconds) {
        if let Some(kid) = get_value(&servers, "rot").await.as_ref().and_then(active_kid)
            && actives.last() != Some(&kid)
        {
            actives.push(kid);
        }
        if !manual_asked && actives.len() >= 5 {
            let patch = json!({ "metadata": { "annotations": { "tessera.dev/rotate": "manual-1" } } });
            servers.patch("rot", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
            manual_asked = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = verifier.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("summary").cloned())
        .unwrap_or_else(|| panic!("the verifier printed no summary: {stdout}"));
    eprintln!(
        "verifier: ok={} failed={} kids={}",
        summary["ok"],
        summary["failed"],
        summary["kids"].as_array().map_or(0, Vec::len)
    );
    assert_eq!(summary["failed"], 0, "verifications failed during rotation: {summary}");
    assert!(summary["ok"].as_u64().unwrap() > 1000, "too few verifications: {summary}");
    assert!(manual_asked, "never saw enough rotations to ask for a manual one: {actives:?}");
    let kids = summary["kids"].as_array().unwrap().len();
    assert!(
        kids >= 11,
        "expected at least 10 scheduled and 1 manual rotation to be seen by the verifier, saw {kids} keys"
    );
    let server = get_value(&servers, "rot").await.unwrap();
    let keys_secret = secrets.get("rot-signing-keys").await.unwrap();
    assert_eq!(
        keys_secret.metadata.annotations.unwrap_or_default().get("tessera.dev/rotate-handled").map(String::as_str),
        Some("manual-1"),
        "the manual rotation was handled"
    );

    // Emergency: a token signed by the compromised key stops verifying once the verifier refetches.
    let compromised_token = fetch_token(&token_url, &client_id, &client_secret).await;
    let compromised = active_kid(&server).unwrap();
    let patch = json!({ "metadata": { "annotations": { "tessera.dev/rotate-revoke": "incident-1" } } });
    servers.patch("rot", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    support::eventually(WAIT, "the compromised key to be revoked in status", || async {
        let s = get_value(&servers, "rot").await?;
        let revoked = s["status"]["signing"]["keys"]
            .as_array()?
            .iter()
            .any(|k| k["kid"] == compromised.as_str() && k["state"] == "Revoked");
        (revoked && active_kid(&s).as_deref() != Some(compromised.as_str())).then_some(())
    })
    .await;
    support::eventually(WAIT, "the issuer to drop the revoked key from its JWKS", || async {
        let body = reqwest::get(&jwks_url).await.ok()?.text().await.ok()?;
        (!body.contains(&compromised)).then_some(())
    })
    .await;
    let once = |token: String| {
        let (dir, jwks_url, issuer) = (node_dir(), jwks_url.clone(), issuer.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new("node")
                    .current_dir(dir)
                    .args(["rotation-verifier.mjs", "once", &jwks_url, &issuer, &token])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let refused = once(compromised_token).await;
    assert_eq!(
        refused.status.code(),
        Some(3),
        "a token of the revoked key must fail: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let fresh = fetch_token(&token_url, &client_id, &client_secret).await;
    let accepted = once(fresh).await;
    assert!(accepted.status.success(), "a fresh token verifies: {}", String::from_utf8_lossy(&accepted.stdout));
}

/// The converged state: the Secret is exactly what the planner wants now, with one signing key
/// and one Next key, and status shows that same key set.
async fn converged(client: &kube::Client, ns: &str) -> Option<(Vec<String>, String)> {
    use tessera::{
        api::{AccessPolicy, AuthorizationServer},
        config::{CompileInput, compile},
        keys::{KeySet, plan},
    };
    let servers: Api<AuthorizationServer> = Api::namespaced(client.clone(), ns);
    let server = servers.get("rot").await.ok()?;
    let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), ns);
    let input = CompileInput {
        server: server.clone(),
        scopes: vec![],
        claims: vec![],
        policies: policies.list(&Default::default()).await.ok()?.items,
        clients: vec![],
        identity_secrets: Default::default(),
        namespace_labels: Default::default(),
    };
    let settings = compile(&input).config.signing;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets.get_opt("rot-signing-keys").await.ok()??;
    let keys = KeySet::from_json(&secret.data?.get("keys.json")?.0).ok()?;
    let now = jiff::Timestamp::now();
    let signing = keys.signing_key(now)?.kid.clone();
    let next: Vec<_> = keys.published(now).filter(|k| k.activates_at > now).collect();
    let mut kids: Vec<String> = keys.keys.iter().map(|k| k.kid.clone()).collect();
    let status = server.status?;
    let signing_status = status.signing?;
    let mut status_kids: Vec<String> = signing_status.keys.iter().map(|k| k.kid.clone()).collect();
    kids.sort();
    status_kids.sort();
    let unique = {
        let mut u = kids.clone();
        u.dedup();
        u.len() == kids.len()
    };
    let ok = next.len() == 1
        && unique
        && plan(&settings, &keys, now).is_empty()
        && signing_status.active_key_id.as_deref() == Some(signing.as_str())
        && kids == status_kids
        && status.observed_generation == server.metadata.generation;
    ok.then_some((kids, signing))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_at_each_step_of_a_rotation_converges_to_the_planned_keys_and_status() {
    let client = support::client().await;
    let ns = support::namespace(&client, "crash-rot").await;
    let mut docs = docs(&ns, free_port());
    docs[0]["spec"]["signing"]["rotation"] =
        json!({ "mode": "Automatic", "period": "15s", "prePublish": "10s", "retainRetired": "10s" });
    for doc in &docs {
        apply_doc(&client, doc).await;
    }
    let plane = support::control_plane();
    let points = [
        "before-keys-write",
        "after-keys-write",
        "after-keys-event",
        "after-config-apply",
        "after-workload-apply",
        "before-status-write",
    ];
    let mut seen_signing = Vec::new();
    for point in points {
        let log = plane.data_dir.join(format!("operator-{ns}-{point}.log"));
        let mut crashing = OperatorProcess::start_env(
            &plane.kubeconfig,
            &[&ns],
            &log,
            &["--listen", "127.0.0.1:0"],
            &[("TESSERA_CRASH_AT", point)],
        );
        // Every key change (the bootstrap, then each scheduled rotation) passes every point.
        let code = tokio::task::spawn_blocking(move || {
            let code = crashing.wait_exit(Duration::from_secs(60));
            (code, crashing)
        })
        .await
        .unwrap();
        assert_eq!(code.0, Some(86), "the operator should have crashed at {point}");
        let log = plane.data_dir.join(format!("operator-{ns}-{point}-after.log"));
        let mut recovered = OperatorProcess::start(&plane.kubeconfig, &[&ns], &log);
        let (kids, signing) =
            support::eventually(WAIT, &format!("convergence after a crash at {point}"), || converged(&client, &ns))
                .await;
        eprintln!("{point}: converged with {} keys, {signing} signing", kids.len());
        seen_signing.push(signing);
        recovered.kill();
    }
    seen_signing.dedup();
    assert!(seen_signing.len() >= 3, "the crashes should span several rotations: {seen_signing:?}");
}
