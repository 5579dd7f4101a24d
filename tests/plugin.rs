//! `kubectl tessera` (the binary run as `kubectl-tessera`) against kube-testenv: status,
//! rotate, rotate-secret and preview of the examples reconciled by the operator.

mod support;

use std::{path::PathBuf, process::Command};

use kube::{Api, ResourceExt};
use support::{examples as ex, operator::OperatorProcess};
use tessera::api::{AuthClient, AuthorizationServer};

/// The test binary under the plugin's name, as kubectl finds it on $PATH.
fn plugin_binary(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("kubectl-tessera");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tessera"), &path).unwrap();
    path
}

async fn kubectl_tessera(plugin: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let kubeconfig = support::control_plane().kubeconfig.clone();
    let mut cmd = Command::new(plugin);
    cmd.args(args).arg("--kubeconfig").arg(&kubeconfig);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn status_rotate_rotate_secret_and_preview_work_against_the_cluster() {
    let client = support::client().await;
    let server_ns = support::namespace(&client, "plugin-id").await;
    let client_ns = support::namespace(&client, "plugin-cl").await;
    let plane = support::control_plane();
    let log = plane.data_dir.join(format!("operator-{server_ns}.log"));
    let _operator = OperatorProcess::start(&plane.kubeconfig, &[&server_ns, &client_ns], &log);
    ex::apply_examples(&client, &server_ns, &client_ns).await;
    let servers: Api<AuthorizationServer> = Api::namespaced(client.clone(), &server_ns);
    ex::wait_condition(&servers, "payments", "SigningKeysReady", "True").await;
    ex::wait_condition(&servers, "payments", "ConfigReady", "True").await;
    let clients: Api<AuthClient> = Api::namespaced(client.clone(), &client_ns);
    ex::wait_condition(&clients, "orders-api", "Ready", "True").await;

    let dir = tempfile::tempdir().unwrap();
    let plugin = plugin_binary(dir.path());

    let (ok, status, err) = kubectl_tessera(&plugin, &["status", "payments", "-n", &server_ns]).await;
    assert!(ok, "status failed: {err}");
    eprintln!("{status}");
    let server = servers.get("payments").await.unwrap();
    let active = server.status.as_ref().unwrap().signing.as_ref().unwrap().active_key_id.clone().unwrap();
    for expected in [
        format!("AuthorizationServer {server_ns}/payments"),
        "ConfigReady".into(),
        "SigningKeysReady".into(),
        format!("active: {active}"),
        "Active".into(),
        "http://127.0.0.1:8080/oauth2/payments/v1/token".into(),
        format!("{client_ns}/orders-api"),
        "orders-api-oauth".into(),
    ] {
        assert!(status.contains(&expected), "status lacks {expected:?}:\n{status}");
    }

    let (ok, _, err) = kubectl_tessera(&plugin, &["status", "nope", "-n", &server_ns]).await;
    assert!(!ok && err.contains("not found"), "{err}");

    let (ok, out, err) = kubectl_tessera(&plugin, &["rotate", "payments", "--namespace", &server_ns]).await;
    assert!(ok, "rotate failed: {err}");
    assert!(out.contains("tessera.dev/rotate="), "{out}");
    let annotated = servers.get("payments").await.unwrap();
    let stamp = annotated.annotations().get("tessera.dev/rotate").expect("the rotate annotation");
    assert!(stamp.parse::<jiff::Timestamp>().is_ok(), "not a timestamp: {stamp}");

    let (ok, _, err) = kubectl_tessera(&plugin, &["rotate-secret", "orders-api", "-n", &client_ns]).await;
    assert!(ok, "rotate-secret failed: {err}");
    let c = clients.get("orders-api").await.unwrap();
    assert!(c.annotations().contains_key("tessera.dev/rotate-secret"));

    let client_id = format!("{client_ns}.orders-api");
    let (ok, out, err) = kubectl_tessera(
        &plugin,
        &["preview", "payments", "-n", &server_ns, "--client", &client_id, "--scope", "payments:read"],
    )
    .await;
    assert!(ok, "preview failed: {err}");
    assert!(out.contains("GRANTED by machine-access/"), "preview:\n{out}");
}

#[test]
fn the_tessera_name_keeps_the_ordinary_cli() {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("operator") && help.contains("crds"), "{help}");
}
