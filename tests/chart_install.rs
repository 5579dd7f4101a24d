//! charts/tessera installed by a real helm into kube-testenv: both RBAC modes, the operator
//! run under a token of the chart's ServiceAccount completing the examples, CRD upgrade, and
//! uninstall keeping CRDs and users' resources.

mod support;

use std::path::{Path, PathBuf};

use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Secret, ServiceAccount},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{examples as ex, helm, operator::OperatorProcess};
use tessera::api::{AuthScope, AuthorizationServer};

/// Tests that run an operator take turns: a cluster-wide operator would also reconcile the
/// namespaced test's servers.
static OPERATOR_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn kubeconfig() -> PathBuf {
    support::control_plane().kubeconfig.clone()
}

async fn helm_install(release: &str, namespace: &str, sets: &[&str]) -> String {
    let chart = helm::chart_dir();
    let mut args = vec!["install", release, chart.to_str().unwrap(), "--namespace", namespace];
    args.extend(["--set", "image.tag=test"]);
    for set in sets {
        args.extend(["--set", set]);
    }
    let kc = kubeconfig();
    let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
    tokio::task::spawn_blocking(move || helm::ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), Some(&kc)))
        .await
        .unwrap()
}

fn helm_blocking(args: &[&str]) -> String {
    helm::ok(args, Some(&kubeconfig()))
}

/// Runs the operator as the chart's ServiceAccount `release_ns/sa`, with leader election.
async fn operator_as_chart_identity(
    client: &Client,
    release_ns: &str,
    sa: &str,
    namespaces: &[&str],
) -> (OperatorProcess, PathBuf, PathBuf) {
    let plane = support::control_plane();
    let token = ex::token_for(client, release_ns, sa).await;
    let kc = plane.data_dir.join(format!("kubeconfig-{release_ns}-{sa}"));
    ex::token_kubeconfig(&plane.kubeconfig, &token, &kc);
    let log = plane.data_dir.join(format!("operator-{release_ns}.log"));
    let args = ["--listen", "127.0.0.1:0", "--leader-elect", "--lease-namespace", release_ns, "--identity", sa];
    (OperatorProcess::start_with(&kc, namespaces, &log, &args), kc, log)
}

/// The examples reach ConfigReady, SigningKeysReady and Ready, and the client Secret is written.
async fn examples_complete(client: &Client, server_ns: &str, client_ns: &str, log: &Path) {
    ex::apply_examples(client, server_ns, client_ns).await;
    let servers: Api<AuthorizationServer> = Api::namespaced(client.clone(), server_ns);
    ex::wait_condition(&servers, "payments", "ConfigReady", "True").await;
    ex::wait_condition(&servers, "payments", "SigningKeysReady", "True").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), client_ns);
    let written = support::eventually(ex::WAIT, "the client Secret orders-api-oauth", || async {
        secrets.get_opt("orders-api-oauth").await.unwrap()
    })
    .await;
    assert!(written.data.unwrap().contains_key("client_secret"));
    ex::mark_pods_ready(client, server_ns).await;
    ex::wait_condition(&servers, "payments", "Ready", "True").await;
    let text = std::fs::read_to_string(log).unwrap();
    assert!(!text.to_lowercase().contains("forbidden"), "the operator was refused something:\n{text}");
}

async fn lease_holder(client: &Client, ns: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns).get_opt("tessera-operator").await.unwrap()?;
    lease.spec?.holder_identity
}

#[tokio::test]
async fn cluster_wide_install_lets_the_operator_complete_the_examples() {
    let _turn = OPERATOR_TURN.lock().await;
    let client = support::client().await;
    let release_ns = support::namespace(&client, "tessera-system").await;
    let notes = helm_install("tessera", &release_ns, &["crds.install=false"]).await;
    assert!(notes.contains("watching the whole cluster"), "NOTES.txt:\n{notes}");
    let sa = "tessera";
    Api::<ServiceAccount>::namespaced(client.clone(), &release_ns).get(sa).await.unwrap();

    let server_ns = support::namespace(&client, "cw-id").await;
    let client_ns = support::namespace(&client, "cw-cl").await;
    let (_operator, _kc, log) = operator_as_chart_identity(&client, &release_ns, sa, &[]).await;
    examples_complete(&client, &server_ns, &client_ns, &log).await;
    assert_eq!(lease_holder(&client, &release_ns).await.as_deref(), Some(sa));

    // The people's roles aggregate into Kubernetes' view, edit and admin.
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    for (builtin, verb) in [("view", "list"), ("edit", "create"), ("admin", "delete")] {
        support::eventually(ex::WAIT, &format!("ClusterRole {builtin} to aggregate tessera.dev"), || async {
            let role = roles.get(builtin).await.ok()?;
            role.rules?
                .iter()
                .any(|r| {
                    r.api_groups.as_deref().unwrap_or_default().iter().any(|g| g == "tessera.dev")
                        && r.resources.as_deref().unwrap_or_default().iter().any(|x| x == "authorizationservers")
                        && r.verbs.iter().any(|v| v == verb)
                })
                .then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn namespaced_install_confines_the_operator_to_its_namespaces() {
    let _turn = OPERATOR_TURN.lock().await;
    let client = support::client().await;
    let release_ns = support::namespace(&client, "tessera-ns-system").await;
    let server_ns = support::namespace(&client, "ns-id").await;
    let client_ns = support::namespace(&client, "ns-cl").await;
    let outside = support::namespace(&client, "ns-outside").await;
    let watch = format!("watchNamespaces={{{server_ns},{client_ns}}}");
    let notes = helm_install("tessera-ns", &release_ns, &["crds.install=false", &watch]).await;
    assert!(notes.contains(&format!("watching only: {server_ns}, {client_ns}")), "NOTES.txt:\n{notes}");

    let sa = "tessera-ns";
    let (_operator, kc, log) = operator_as_chart_identity(&client, &release_ns, sa, &[&server_ns, &client_ns]).await;
    examples_complete(&client, &server_ns, &client_ns, &log).await;
    assert_eq!(lease_holder(&client, &release_ns).await.as_deref(), Some(sa));

    // The same identity cannot read Secrets anywhere else, nor list them cluster-wide.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "not-yours" }, "stringData": { "password": "hunter2" }
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &outside).create(&PostParams::default(), &secret).await.unwrap();
    let chart_identity = ex::client_from(&kc).await;
    let forbidden = |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(e)) if e.code == 403);
    assert!(forbidden(Api::<Secret>::namespaced(chart_identity.clone(), &outside).get("not-yours").await.map(drop)));
    assert!(forbidden(Api::<Secret>::all(chart_identity.clone()).list(&Default::default()).await.map(drop)));
    assert!(forbidden(
        Api::<Secret>::namespaced(chart_identity.clone(), &release_ns).list(&Default::default()).await.map(drop)
    ));
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(chart_identity.clone());
    assert!(namespaces.get(&server_ns).await.is_ok());
    assert!(forbidden(namespaces.get(&outside).await.map(drop)));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

async fn crd(client: &Client, name: &str) -> Option<CustomResourceDefinition> {
    Api::<CustomResourceDefinition>::all(client.clone()).get_opt(name).await.unwrap()
}

#[tokio::test]
async fn helm_upgrades_changed_crds_and_uninstall_keeps_crds_and_resources() {
    let client = support::client().await;
    let release_ns = support::namespace(&client, "tessera-crds").await;
    // The CRDs were applied before any release (as by `kubectl apply -f crds/`): adopt them,
    // as a team moving to the chart would.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for c in tessera::api::crds() {
        let name = c.metadata.name.unwrap();
        let adopt = json!({ "metadata": {
            "labels": { "app.kubernetes.io/managed-by": "Helm" },
            "annotations": { "meta.helm.sh/release-name": "tessera-crds", "meta.helm.sh/release-namespace": release_ns }
        }});
        crds.patch(&name, &PatchParams::default(), &Patch::Merge(&adopt)).await.unwrap();
    }
    helm_install("tessera-crds", &release_ns, &["rbac.create=false"]).await;
    let before = crd(&client, "authscopes.tessera.dev").await.unwrap();
    assert_eq!(before.metadata.annotations.unwrap().get("helm.sh/resource-policy").map(String::as_str), Some("keep"));

    // A chart whose AuthScope CRD changed: helm upgrade applies the change.
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("tessera");
    copy_dir(&helm::chart_dir(), &chart);
    let path = chart.join("templates/crds/authscopes.tessera.dev.yaml");
    let changed = std::fs::read_to_string(&path)
        .unwrap()
        .replace("Granted when a request names no scope.", "Granted when a request names no scope (upgraded).");
    std::fs::write(&path, changed).unwrap();
    let (chart_s, ns) = (chart.to_str().unwrap().to_owned(), release_ns.clone());
    tokio::task::spawn_blocking(move || {
        helm_blocking(&["upgrade", "tessera-crds", &chart_s, "-n", &ns, "--set", "rbac.create=false"])
    })
    .await
    .unwrap();
    let after = serde_json::to_string(&crd(&client, "authscopes.tessera.dev").await.unwrap().spec).unwrap();
    assert!(after.contains("(upgraded)"), "the CRD was not upgraded");

    // A user's resource, then uninstall: the CRDs and the resource stay.
    let scope_ns = support::namespace(&client, "kept").await;
    let scope: AuthScope = serde_json::from_value(json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthScope",
        "metadata": { "name": "orders-read", "namespace": scope_ns },
        "spec": { "serverRef": { "name": "payments" }, "name": "orders:read" }
    }))
    .unwrap();
    let scopes: Api<AuthScope> = Api::namespaced(client.clone(), &scope_ns);
    scopes.create(&PostParams::default(), &scope).await.unwrap();
    let ns = release_ns.clone();
    let out =
        tokio::task::spawn_blocking(move || helm_blocking(&["uninstall", "tessera-crds", "-n", &ns])).await.unwrap();
    assert!(out.contains("kept due to the resource policy"), "helm uninstall said:\n{out}");
    for c in tessera::api::crds() {
        let name = c.metadata.name.unwrap();
        assert!(crd(&client, &name).await.is_some(), "CRD {name} was deleted by helm uninstall");
    }
    assert!(scopes.get_opt("orders-read").await.unwrap().is_some(), "the user's AuthScope was deleted");
}
