//! `kubectl apply -k deploy/` against kube-testenv (its own control plane: the plain
//! manifests use the same cluster-wide names as a Helm release called `tessera`).

mod support;

use std::process::Command;

use k8s_openapi::api::{apps::v1::Deployment, rbac::v1::ClusterRoleBinding};
use kube::Api;

#[tokio::test]
async fn kubectl_apply_k_deploy_installs_the_operator() {
    let client = support::client().await;
    let kubeconfig = support::control_plane().kubeconfig.clone();
    let deploy = support::repo_root().join("deploy");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["apply", "-k"])
            .arg(&deploy)
            .output()
            .expect("running kubectl (is it installed?)")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl apply -k deploy/ failed:\n{stderr}");
    let deployment = Api::<Deployment>::namespaced(client.clone(), "tessera-system").get("tessera").await.unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("tessera"));
    let binding = Api::<ClusterRoleBinding>::all(client.clone()).get("tessera-operator").await.unwrap();
    assert_eq!(binding.subjects.unwrap()[0].namespace.as_deref(), Some("tessera-system"));
}
