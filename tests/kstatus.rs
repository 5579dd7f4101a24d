//! kstatus (`sigs.k8s.io/cli-utils/pkg/kstatus/status`, what Flux, kpt and cli-utils' applier
//! use to wait for an apply) reading Tessera's objects from a real control plane: progress is
//! InProgress with what it waits for, a permanent error is Failed with its reason's message
//! (so Flux fails at once instead of waiting for its timeout), a served server is Current.
//!
//! Prerequisite (scripts/test builds it): the Go program of tests/interop/go/kstatus in
//! target/interop-go/kstatus (or `$GO_KSTATUS`). Missing, the test fails: it never skips.

mod support;

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

use kube::Api;
use serde_json::{Value, json};
use support::{
    examples::{WAIT, apply_doc, examples, get_value, mark_pods_ready, wait_condition_reason as wait_condition},
    operator::OperatorProcess,
};
use tessera::api::{AccessPolicy, AuthScope, AuthorizationServer};

fn kstatus_binary() -> PathBuf {
    let built = std::env::var_os("GO_KSTATUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo_root().join("target/interop-go/kstatus"));
    assert!(
        built.exists(),
        "interop prerequisite missing: {}. Build it with scripts/test, or: cd tests/interop/go && go build -o ../../../target/interop-go/kstatus ./kstatus",
        built.display()
    );
    built
}

/// kstatus's (status, message) of `obj`.
fn kstatus(obj: &Value) -> (String, String) {
    let mut child = Command::new(kstatus_binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": [obj] });
    child.stdin.take().unwrap().write_all(list.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kstatus: {}", String::from_utf8_lossy(&out.stderr));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    (line["status"].as_str().unwrap().to_owned(), line["message"].as_str().unwrap().to_owned())
}

/// Waits until kstatus computes `status` for the object `get` reads, and returns its message.
async fn wait_kstatus<F, Fut>(what: &str, status: &str, get: F) -> String
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    support::eventually(WAIT, &format!("{what}: kstatus {status}"), || async {
        let (s, message) = kstatus(&get().await?);
        (s == status).then_some(message)
    })
    .await
}

#[tokio::test]
async fn kstatus_sees_progress_a_stall_with_its_reason_and_a_served_server() {
    kstatus_binary();
    let client = support::client().await;
    let ns = support::namespace(&client, "kstatus").await;
    let plane = support::control_plane();
    let _operator =
        OperatorProcess::start(&plane.kubeconfig, &[&ns], &plane.data_dir.join(format!("operator-{ns}.log")));
    let docs = examples(&ns, &ns);
    let find = |kind: &str, name: &str| {
        docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap().clone()
    };
    let servers: Api<AuthorizationServer> = Api::namespaced(client.clone(), &ns);
    let server = || get_value(&servers, "payments");

    // Its static users' Secret does not exist yet: waiting for it, which kstatus shows.
    apply_doc(&client, &find("AuthorizationServer", "payments")).await;
    wait_condition(&servers, "payments", "ConfigReady", "False", "IdentitySecretNotFound").await;
    let message = wait_kstatus("server without its Secret", "InProgress", server).await;
    assert!(message.contains(&format!("Secret {ns}/people")), "{message}");

    // A Secret whose users are invalid: only someone's change can clear that. Failed, and why.
    let people = find("Secret", "people");
    let mut broken = people.clone();
    broken["stringData"]["users.yaml"] = json!("- username: alice\n  passwordHash: plain-text-password\n");
    apply_doc(&client, &broken).await;
    wait_condition(&servers, "payments", "ConfigReady", "False", "InvalidStaticUsers").await;
    let message = wait_kstatus("server with invalid users", "Failed", server).await;
    assert!(message.contains(&format!("key users.yaml of Secret {ns}/people")), "{message}");
    assert!(!message.contains("plain-text-password"), "no Secret value in status");

    // Fixed and served: Current.
    apply_doc(&client, &people).await;
    wait_condition(&servers, "payments", "ConfigReady", "True", "Compiled").await;
    mark_pods_ready(&client, &ns).await;
    wait_kstatus("served server", "Current", server).await;

    // A dependent refused for a conflict is Failed with the refusal's message.
    let scopes: Api<AuthScope> = Api::namespaced(client.clone(), &ns);
    apply_doc(&client, &find("AuthScope", "payments-read")).await;
    wait_condition(&scopes, "payments-read", "Accepted", "True", "Accepted").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut dup = find("AuthScope", "payments-read");
    dup["metadata"]["name"] = json!("payments-read-again");
    apply_doc(&client, &dup).await;
    wait_condition(&scopes, "payments-read-again", "Accepted", "False", "Conflict").await;
    let message = wait_kstatus("conflicting scope", "Failed", || get_value(&scopes, "payments-read-again")).await;
    assert!(message.contains("payments:read"), "{message}");
    wait_kstatus("accepted scope", "Current", || get_value(&scopes, "payments-read")).await;

    // A dependent whose server does not exist yet waits for it: InProgress, not Failed.
    let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &ns);
    let mut early = find("AccessPolicy", "machine-access");
    early["spec"]["serverRef"]["name"] = json!("later");
    apply_doc(&client, &early).await;
    wait_condition(&policies, "machine-access", "Accepted", "False", "ServerNotFound").await;
    let message =
        wait_kstatus("policy before its server", "InProgress", || get_value(&policies, "machine-access")).await;
    assert!(message.contains("later"), "{message}");
}
