//! Real pods: kube-testenv --node (kube-scheduler, kubelet, kube-proxy, containerd, runc,
//! CNI bridge) with the tessera image of scripts/image imported. The chart installed by helm
//! runs the operator in a pod; the examples' issuer pods pass their probes under PodSecurity
//! `restricted` and answer discovery, JWKS and client_credentials through their Service and
//! pod IPs; a key rotation reaches the running pod through its Secret watch; deleting a pod
//! stops its container on SIGTERM within seconds. The host is checked to be as before.
//!
//! One test: the node is a machine-wide thing (one bridge, one pod range), and the steps
//! build on each other. Needs root (scripts/test installs the packages).

mod support;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{Namespace, Pod, Secret, Service},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{examples as ex, helm, node::Node};
use tessera::api::AuthorizationServer;

const IMAGE_REPO: &str = "ghcr.io/tessera-dev/tessera";
const IMAGE_TAG: &str = "node-test";
const WAIT: Duration = Duration::from_secs(120);

async fn restricted_namespace(client: &Client, name: &str, labels: Value) {
    let mut labels = labels;
    labels["pod-security.kubernetes.io/enforce"] = json!("restricted");
    labels["pod-security.kubernetes.io/enforce-version"] = json!("latest");
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } })).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// One line per pod: name, phase, IP, node and container ids, as the kubelet reported them.
fn describe(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let containers: Vec<String> = status
        .container_statuses
        .unwrap_or_default()
        .iter()
        .map(|c| {
            format!(
                "{} ready={} started={} restarts={} id={}",
                c.name,
                c.ready,
                c.started.unwrap_or(false),
                c.restart_count,
                c.container_id.clone().unwrap_or_default()
            )
        })
        .collect();
    format!(
        "pod {} phase={} ip={} node={} [{}]",
        pod.name_any(),
        status.phase.unwrap_or_default(),
        status.pod_ip.unwrap_or_default(),
        pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
        containers.join("; ")
    )
}

async fn ready_pods(pods: &Api<Pod>, selector: &str, want: usize) -> Vec<Pod> {
    support::eventually(WAIT, &format!("{want} Ready pod(s) {selector}"), || async {
        let list = pods.list(&ListParams::default().labels(selector)).await.unwrap();
        let ready: Vec<Pod> =
            list.items.into_iter().filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none()).collect();
        (ready.len() >= want).then_some(ready)
    })
    .await
}

fn container_id(pod: &Pod) -> String {
    pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0].container_id.clone().unwrap()
}

fn pod_ip(pod: &Pod) -> String {
    pod.status.as_ref().unwrap().pod_ip.clone().unwrap()
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let resp = http.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.json().await.unwrap()
}

fn kids(jwks: &Value) -> BTreeSet<String> {
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

/// The `kid` of a JWT's header (the token itself is never printed).
fn jwt_kid(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let header: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_and_issuer_pods_run_on_a_real_node() {
    let started = Instant::now();
    let (archive, mut node) = tokio::task::spawn_blocking(|| {
        let archive = support::node::build_image(&format!("{IMAGE_REPO}:{IMAGE_TAG}"));
        (archive, Node::start())
    })
    .await
    .unwrap();
    node.import_image(&archive);
    let client = support::client_for(&node.kubeconfig).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();

    // (a) The chart, with the image: the operator runs in a pod under its ServiceAccount.
    restricted_namespace(&client, "tessera-system", json!({})).await;
    let chart = helm::chart_dir();
    let kc = node.kubeconfig.clone();
    let t = Instant::now();
    let notes = tokio::task::spawn_blocking(move || {
        helm::ok(
            &[
                "install",
                "tessera",
                chart.to_str().unwrap(),
                "--namespace",
                "tessera-system",
                "--set",
                &format!("image.tag={IMAGE_TAG}"),
                "--set",
                "replicas=2",
            ],
            Some(&kc),
        )
    })
    .await
    .unwrap();
    assert!(notes.contains("tessera"), "helm install printed:\n{notes}");
    let system_pods: Api<Pod> = Api::namespaced(client.clone(), "tessera-system");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "tessera-system");
    // The leader is Ready (a standby reports not-ready) and its name is in the Lease.
    let leader = support::eventually(WAIT, "a Ready operator pod holding the Lease", || async {
        let holder = leases.get_opt("tessera-operator").await.unwrap()?.spec?.holder_identity?;
        let pod = system_pods.get_opt(&holder).await.unwrap()?;
        is_ready(&pod).then_some(pod)
    })
    .await;
    let leader = &leader;
    let spec = leader.spec.clone().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("tessera"), "the chart's ServiceAccount");
    assert_eq!(spec.node_name.as_deref(), Some(support::node::NODE_NAME));
    assert!(
        spec.volumes.unwrap_or_default().iter().any(|v| v.projected.is_some()),
        "the ServiceAccount token is projected into the pod"
    );
    assert_eq!(spec.containers[0].image.as_deref(), Some(format!("{IMAGE_REPO}:{IMAGE_TAG}").as_str()));
    assert_eq!(node.task_status(&container_id(leader)).as_deref(), Some("RUNNING"), "containerd runs the operator");
    eprintln!(
        "operator Ready and holding the Lease {:.1}s after helm install: {}",
        t.elapsed().as_secs_f64(),
        describe(leader)
    );

    // (b) The examples: issuer pods scheduled, probed and serving under `restricted`.
    restricted_namespace(&client, "identity", json!({})).await;
    restricted_namespace(&client, "team-orders", json!({})).await;
    let t = Instant::now();
    ex::apply_examples(&client, "identity", "team-orders").await;
    let servers: Api<AuthorizationServer> = Api::namespaced(client.clone(), "identity");
    ex::wait_condition(&servers, "payments", "Ready", "True").await;
    let identity_pods: Api<Pod> = Api::namespaced(client.clone(), "identity");
    let issuers = ready_pods(&identity_pods, "app.kubernetes.io/name=tessera-issuer", 1).await;
    let issuer = &issuers[0];
    eprintln!("issuer Ready {:.1}s after the examples: {}", t.elapsed().as_secs_f64(), describe(issuer));
    let c = &issuer.spec.as_ref().unwrap().containers[0];
    assert!(c.startup_probe.is_some() && c.readiness_probe.is_some() && c.liveness_probe.is_some());
    let cs = &issuer.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
    assert!(cs.ready && cs.started == Some(true), "{}", describe(issuer));
    assert_eq!(node.task_status(&container_id(issuer)).as_deref(), Some("RUNNING"));
    let deployment = Api::<Deployment>::namespaced(client.clone(), "identity").get("payments-issuer").await.unwrap();
    assert!(deployment.status.unwrap().available_replicas.unwrap_or(0) >= 1);

    let svc = Api::<Service>::namespaced(client.clone(), "identity").get("payments-issuer").await.unwrap();
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();
    let via_service = format!("http://{cluster_ip}/oauth2/payments");
    let via_pod = format!("http://{}:8080/oauth2/payments", pod_ip(issuer));
    for base in [&via_service, &via_pod] {
        let discovery = get_json(&http, &format!("{base}/.well-known/openid-configuration")).await;
        assert_eq!(discovery["issuer"], "http://127.0.0.1:8080/oauth2/payments");
        let jwks = get_json(&http, &format!("{base}/v1/keys")).await;
        assert!(!kids(&jwks).is_empty());
    }
    let secret = Api::<Secret>::namespaced(client.clone(), "team-orders").get("orders-api-oauth").await.unwrap();
    let data = secret.data.unwrap();
    let field = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    let (client_id, client_secret) = (field("client_id"), field("client_secret"));
    let token = |base: String| {
        let http = http.clone();
        let (id, secret) = (client_id.clone(), client_secret.clone());
        async move {
            let resp = http
                .post(format!("{base}/v1/token"))
                .basic_auth(id, Some(secret))
                .form(&[("grant_type", "client_credentials"), ("scope", "payments:read")])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "client_credentials at {base}");
            let body: Value = resp.json().await.unwrap();
            body["access_token"].as_str().expect("an access_token").to_owned()
        }
    };
    let access = token(via_service.clone()).await;
    let jwks = get_json(&http, &format!("{via_service}/v1/keys")).await;
    assert!(kids(&jwks).contains(&jwt_kid(&access)), "the token's kid is in the JWKS");
    token(via_pod.clone()).await;
    eprintln!("discovery, JWKS and client_credentials answered via Service {cluster_ip} and pod {}", pod_ip(issuer));

    // A manual rotation reaches the running pod through its Secret watch within a second.
    // The emergency form (rotate-revoke): a plain rotate waits until the Next key has been
    // published for prePublish (168h in the examples), which a fresh server has not.
    let keys: Api<Secret> = Api::namespaced(client.clone(), "identity");
    let before_kids = kids(&get_json(&http, &format!("{via_pod}/v1/keys")).await);
    let before_rv = keys.get("payments-signing-keys").await.unwrap().resource_version();
    let patch = json!({ "metadata": { "annotations": { "tessera.dev/rotate-revoke": jiff::Timestamp::now().as_second().to_string() } } });
    servers.patch("payments", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let secret_updated = support::eventually(WAIT, "the signing-keys Secret to change", || async {
        let rv = keys.get("payments-signing-keys").await.unwrap().resource_version();
        (rv != before_rv).then(Instant::now)
    })
    .await;
    let served = loop {
        let now = kids(&get_json(&http, &format!("{via_pod}/v1/keys")).await);
        if now.difference(&before_kids).next().is_some() {
            break secret_updated.elapsed();
        }
        assert!(
            secret_updated.elapsed() < Duration::from_secs(10),
            "the pod still serves {now:?} 10s after the Secret changed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("rotation: the new kid served by the pod {} ms after the Secret update was seen", served.as_millis());
    assert!(served <= Duration::from_secs(1), "the new key reached the pod after {served:?}");

    // (c) Deleting a pod: its container exits on SIGTERM well inside the grace period.
    let victim = ready_pods(&identity_pods, "app.kubernetes.io/name=tessera-issuer", 1).await.remove(0);
    let id = container_id(&victim);
    assert_eq!(node.task_status(&id).as_deref(), Some("RUNNING"));
    let t = Instant::now();
    identity_pods.delete(&victim.name_any(), &DeleteParams::default()).await.unwrap();
    let exited = loop {
        let status = node.task_status(&id);
        if status.as_deref() != Some("RUNNING") {
            break t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(30), "container {id} still running 30s after the pod's deletion");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let gone = support::eventually(WAIT, "the deleted pod to go", || async {
        identity_pods.get_opt(&victim.name_any()).await.unwrap().is_none().then(|| t.elapsed())
    })
    .await;
    eprintln!(
        "pod deletion: container {id} exited {} ms after the delete, the pod object was gone after {} ms",
        exited.as_millis(),
        gone.as_millis()
    );
    assert!(exited <= Duration::from_secs(5), "the issuer took {exited:?} to exit on SIGTERM");
    let replacement = ready_pods(&identity_pods, "app.kubernetes.io/name=tessera-issuer", 1).await.remove(0);
    eprintln!("replacement: {}", describe(&replacement));
    token(format!("http://{}:8080/oauth2/payments", pod_ip(&replacement))).await;

    let problems = tokio::task::spawn_blocking(move || node.stop()).await.unwrap();
    assert!(problems.is_empty(), "the host was not restored:\n{}", problems.join("\n"));
    eprintln!("tests/node.rs done in {:.1}s", started.elapsed().as_secs_f64());
}
