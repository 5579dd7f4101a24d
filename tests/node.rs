//! Real pods: kube-testenv --node (kube-scheduler, kubelet, kube-proxy, containerd, runc,
//! CNI bridge) with the tessera image of scripts/image imported. In order:
//! - (a) the chart installed by helm runs the operator in a pod under its ServiceAccount
//!   (projected token); the Ready pod holds the Lease;
//! - (b) the examples' issuer pods pass their probes under PodSecurity `restricted` and answer
//!   discovery, JWKS and client_credentials through their Service and their pod IP;
//! - (c) deleting an issuer pod stops its container on SIGTERM within 5 s (no load);
//! - (d) two replicas on the host's redis-server (reached on the host end of the node's veth):
//!   a code issued through one pod is redeemed through the other; a manual key rotation
//!   reaches every replica through its Secret watch within a second;
//! - (e) `kubectl drain` honours the issuer's PDB while a client keeps getting tokens;
//! - (f) `helm upgrade` to another image tag rolls operator and issuers while the issuer
//!   keeps answering through its Service.
//!
//! Under load, every request gets a response and every response is a 200: an issuer pod being
//! deleted keeps accepting for its preStop sleep (while kube-proxy stops sending it new
//! connections), then drains on SIGTERM, so the Service never hands a client a closed port.
//! Pod IPs and container ids are printed as the kubelet reports them. The host is checked to
//! be as before (support/node.rs), and the test fails if it is not.
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
    support::node::show(format_args!(
        "operator Ready and holding the Lease {:.1}s after helm install: {}",
        t.elapsed().as_secs_f64(),
        describe(leader)
    ));

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
    support::node::show(format_args!(
        "issuer Ready {:.1}s after the examples: {}",
        t.elapsed().as_secs_f64(),
        describe(issuer)
    ));
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
    support::node::show(format_args!(
        "discovery, JWKS and client_credentials answered via Service {cluster_ip} and pod {}",
        pod_ip(issuer)
    ));

    // (c) Deleting a pod: its container exits on SIGTERM well inside the grace period.
    let victim = ready_pods(&identity_pods, "app.kubernetes.io/name=tessera-issuer", 1).await.remove(0);
    let id = container_id(&victim);
    assert_eq!(node.task_status(&id).as_deref(), Some("RUNNING"));
    let t = Instant::now();
    identity_pods.delete(&victim.name_any(), &DeleteParams::default()).await.unwrap();
    let exited = loop {
        let status = node.task_status(&id);
        if status.as_deref() != Some("RUNNING") {
            break (t.elapsed(), jiff::Zoned::now().time());
        }
        assert!(t.elapsed() < Duration::from_secs(30), "container {id} still running 30s after the pod's deletion");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let gone = support::eventually(WAIT, "the deleted pod to go", || async {
        identity_pods.get_opt(&victim.name_any()).await.unwrap().is_none().then(|| t.elapsed())
    })
    .await;
    let (exited, exited_at) = exited;
    // The kubelet's own log says when it began stopping the container: then its preStop sleep,
    // then SIGTERM and the process's shutdown.
    let after_sigterm = kubelet_killed_at(&node.node_dir, &id)
        .map(|killed| {
            format!(
                "{} ms after the kubelet began stopping it (preStop sleep, SIGTERM)",
                killed.duration_until(exited_at).as_millis()
            )
        })
        .unwrap_or_else(|| "(no SIGTERM line in kubelet.log)".to_owned());
    support::node::show(format_args!(
        "pod deletion: container {id} exited {} ms after the delete, {after_sigterm}; the pod object was gone after {} ms",
        exited.as_millis(),
        gone.as_millis()
    ));
    assert!(exited <= Duration::from_secs(5), "the issuer took {exited:?} to exit on SIGTERM");
    let replacement = ready_pods(&identity_pods, "app.kubernetes.io/name=tessera-issuer", 1).await.remove(0);
    support::node::show(format_args!("replacement: {}", describe(&replacement)));
    token(format!("http://{}:8080/oauth2/payments", pod_ip(&replacement))).await;

    let keys: Api<Secret> = Api::namespaced(client.clone(), "identity");

    // (d) Two replicas sharing the host's redis-server (on the host end of the node's veth).
    let redis =
        tokio::task::spawn_blocking(|| support::redis::RedisServer::start_on(support::node::HOST_IP)).await.unwrap();
    let redis_secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "payments-redis", "namespace": "identity" },
        "stringData": { "url": redis.url() }
    }))
    .unwrap();
    keys.create(&PostParams::default(), &redis_secret).await.unwrap();
    let patch = json!({ "spec": {
        "storage": { "type": "Redis", "redis": { "urlSecretRef": { "name": "payments-redis" } } },
        "workload": { "replicas": 2 }
    } });
    let t = Instant::now();
    servers.patch("payments", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "identity");
    let replicas = rolled_out(&deployments, &identity_pods, "payments-issuer", 2).await;
    support::node::show(format_args!(
        "Redis at {}: 2 replicas rolled out in {:.1}s",
        redis.bind,
        t.elapsed().as_secs_f64()
    ));
    for p in &replicas {
        support::node::show(format_args!("  {}", describe(p)));
    }
    let bases: Vec<String> = replicas.iter().map(|p| format!("http://{}:8080/oauth2/payments", pod_ip(p))).collect();

    // A code issued through one pod is redeemed through the other (and is spent on both).
    let mut browser = Browser::default();
    let code = browser.sign_in(&http_no_redirect(), &bases[0]).await;
    let redeemed = redeem(&http, &bases[1], &code).await;
    assert_eq!(redeemed.0, 200, "the code of pod 0 redeemed on pod 1: {}", redeemed.1["error"]);
    assert!(redeemed.1["access_token"].is_string() && redeemed.1["id_token"].is_string());
    let replay = redeem(&http, &bases[0], &code).await;
    assert_eq!((replay.0, replay.1["error"].as_str()), (400, Some("invalid_grant")), "the code replayed on pod 0");
    support::node::show(format_args!(
        "authorization code issued by {} redeemed by {} (replay on the first: invalid_grant)",
        replicas[0].name_any(),
        replicas[1].name_any()
    ));

    // A manual rotation reaches every running pod through its Secret watch within a second.
    // The emergency form (rotate-revoke): a plain rotate waits until the Next key has been
    // published for prePublish (168h in the examples), which a fresh server has not.
    let before_kids = kids(&get_json(&http, &format!("{}/v1/keys", bases[0])).await);
    let before_rv = keys.get("payments-signing-keys").await.unwrap().resource_version();
    let patch = json!({ "metadata": { "annotations": { "tessera.dev/rotate-revoke": jiff::Timestamp::now().as_second().to_string() } } });
    let t = Instant::now();
    servers.patch("payments", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let mut secret_seen: Option<Instant> = None;
    let mut pod_seen: Vec<Option<Instant>> = vec![None; bases.len()];
    while secret_seen.is_none() || pod_seen.iter().any(Option::is_none) {
        assert!(t.elapsed() < Duration::from_secs(60), "rotation not seen everywhere after 60s: {pod_seen:?}");
        let jwks = futures::future::join_all(bases.iter().map(|b| {
            let url = format!("{b}/v1/keys");
            let http = http.clone();
            async move { get_json(&http, &url).await }
        }))
        .await;
        let rv = keys.get("payments-signing-keys").await.unwrap().resource_version();
        let now = Instant::now();
        if secret_seen.is_none() && rv != before_rv {
            secret_seen = Some(now);
        }
        for (seen, jwks) in pod_seen.iter_mut().zip(&jwks) {
            if seen.is_none() && kids(jwks).difference(&before_kids).next().is_some() {
                *seen = Some(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secret_seen = secret_seen.unwrap();
    let latencies: Vec<Duration> = pod_seen.iter().map(|s| s.unwrap().saturating_duration_since(secret_seen)).collect();
    support::node::show(format_args!(
        "rotation: the Secret changed {} ms after the annotation; the new kid served by each replica {:?} ms after that (polled every 20 ms)",
        secret_seen.duration_since(t).as_millis(),
        latencies.iter().map(Duration::as_millis).collect::<Vec<_>>()
    ));
    assert!(latencies.iter().all(|l| *l <= Duration::from_secs(1)), "the new key reached the pods after {latencies:?}");

    // (e) kubectl drain of the node: the issuer's PDB (maxUnavailable 1) lets one pod go and
    // keeps the other, which serves throughout (its replacement cannot schedule: the only node
    // is cordoned), so the drain times out.
    let load = Load::start(&via_service, &client_id, &client_secret);
    let t = Instant::now();
    let (drained, drain_out) = tokio::task::spawn_blocking({
        let node_kc = node.kubeconfig.clone();
        move || {
            let out = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&node_kc)
                .args([
                    "drain",
                    support::node::NODE_NAME,
                    "--ignore-daemonsets",
                    "--delete-emptydir-data",
                    "--timeout=20s",
                ])
                .output()
                .expect("running kubectl");
            (
                out.status.success(),
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            )
        }
    })
    .await
    .unwrap();
    let during_drain = ready_pods(&identity_pods, "app.kubernetes.io/name=tessera-issuer", 1).await;
    let stats = load.stop().await;
    support::node::show(format_args!(
        "kubectl drain ({:.1}s, {}): {} issuer pod(s) still Ready: {}; load through the Service: {stats}",
        t.elapsed().as_secs_f64(),
        if drained { "completed" } else { "timed out" },
        during_drain.len(),
        during_drain.iter().map(describe).collect::<Vec<_>>().join(" | ")
    ));
    assert!(!drained, "the drain must not complete while the PDB forbids the last issuer's eviction:\n{drain_out}");
    assert!(drain_out.contains("disruption budget"), "kubectl drain said:\n{drain_out}");
    assert_eq!(during_drain.len(), 1, "the PDB keeps exactly one issuer pod");
    token(format!("http://{}:8080/oauth2/payments", pod_ip(&during_drain[0]))).await;
    stats.assert_every_request_answered("during the drain");
    let (ok, out) = node.kubectl(&["uncordon", support::node::NODE_NAME]);
    assert!(ok, "kubectl uncordon: {out}");
    rolled_out(&deployments, &identity_pods, "payments-issuer", 2).await;
    leader_on(&leases, &system_pods, None).await;

    // (f) helm upgrade to a changed image tag: the operator pods and then the issuer pods roll
    // to it, and the issuer keeps serving through its Service all along.
    let new_tag = format!("{IMAGE_TAG}-2");
    node.tag_image(&format!("{IMAGE_REPO}:{IMAGE_TAG}"), &format!("{IMAGE_REPO}:{new_tag}"));
    let load = Load::start(&via_service, &client_id, &client_secret);
    let t = Instant::now();
    let chart = helm::chart_dir();
    let kc = node.kubeconfig.clone();
    let tag = new_tag.clone();
    tokio::task::spawn_blocking(move || {
        helm::ok(
            &[
                "upgrade",
                "tessera",
                chart.to_str().unwrap(),
                "--namespace",
                "tessera-system",
                "--reuse-values",
                "--set",
                &format!("image.tag={tag}"),
            ],
            Some(&kc),
        )
    })
    .await
    .unwrap();
    let new_image = format!("{IMAGE_REPO}:{new_tag}");
    support::eventually(Duration::from_secs(180), "the issuer pods on the new image", || async {
        let d = deployments.get("payments-issuer").await.unwrap();
        let image = d.spec.as_ref()?.template.spec.as_ref()?.containers[0].image.clone()?;
        let st = d.status?;
        let done = image == new_image
            && st.observed_generation == d.metadata.generation
            && st.updated_replicas == Some(2)
            && st.ready_replicas == Some(2)
            && st.replicas == Some(2);
        done.then_some(())
    })
    .await;
    let issuers_after = rolled_out(&deployments, &identity_pods, "payments-issuer", 2).await;
    let stats = load.stop().await;
    let new_leader = leader_on(&leases, &system_pods, Some(&new_image)).await;
    support::node::show(format_args!(
        "helm upgrade to {new_tag}: issuers rolled in {:.1}s; load through the Service: {stats}",
        t.elapsed().as_secs_f64()
    ));
    for p in std::iter::once(&new_leader).chain(&issuers_after) {
        support::node::show(format_args!("  {}", describe(p)));
    }
    stats.assert_every_request_answered("during the helm upgrade");
    drop(redis);

    let problems = tokio::task::spawn_blocking(move || node.stop()).await.unwrap();
    assert!(problems.is_empty(), "the host was not restored:\n{}", problems.join("\n"));
    support::node::show(format_args!("tests/node.rs done in {:.1}s", started.elapsed().as_secs_f64()));
}

/// The Ready operator pod holding the Lease (a standby reports not-ready), of `image` if given.
async fn leader_on(leases: &Api<Lease>, pods: &Api<Pod>, image: Option<&str>) -> Pod {
    support::eventually(Duration::from_secs(180), "a Ready operator pod holding the Lease", || async {
        let holder = leases.get_opt("tessera-operator").await.unwrap()?.spec?.holder_identity?;
        let pod = pods.get_opt(&holder).await.unwrap()?;
        let on_image = image.is_none_or(|i| pod.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(i));
        (is_ready(&pod) && on_image && pod.metadata.deletion_timestamp.is_none()).then_some(pod)
    })
    .await
}

/// When the kubelet started killing container `id` with its grace period (SIGTERM), as the
/// time of day of its log line (klog: `I1203 11:28:18.628927 ...`, local time).
fn kubelet_killed_at(node_dir: &std::path::Path, id: &str) -> Option<jiff::civil::Time> {
    let log = std::fs::read_to_string(node_dir.join("kubelet.log")).ok()?;
    let line = log.lines().find(|l| l.contains("Killing container with a grace period") && l.contains(id))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Waits until Deployment `name` has exactly `want` pods, all of its current template and
/// Ready, and returns them.
async fn rolled_out(deployments: &Api<Deployment>, pods: &Api<Pod>, name: &str, want: i32) -> Vec<Pod> {
    support::eventually(Duration::from_secs(180), &format!("{name} rolled out to {want} Ready pods"), || async {
        let d = deployments.get(name).await.unwrap();
        let st = d.status.clone()?;
        let done = st.observed_generation == d.metadata.generation
            && st.updated_replicas == Some(want)
            && st.ready_replicas == Some(want)
            && st.replicas == Some(want);
        if !done {
            return None;
        }
        let list = pods.list(&ListParams::default().labels("app.kubernetes.io/name=tessera-issuer")).await.unwrap();
        let ready: Vec<Pod> =
            list.items.into_iter().filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none()).collect();
        (ready.len() == want as usize).then_some(ready)
    })
    .await
}

const SPA: &str = "team-orders.example-spa";
const SPA_REDIRECT: &str = "http://127.0.0.1:8400/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const ISSUER: &str = "http://127.0.0.1:8080/oauth2/payments";

fn http_no_redirect() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A browser that keeps its cookies by hand and follows no redirect by itself. What it got
/// is never printed beyond status codes (no code, cookie or hidden form value).
#[derive(Default)]
struct Browser {
    cookies: std::collections::BTreeMap<String, String>,
}

impl Browser {
    /// `url` (absolute on the issuer, or a path below it) on the pod at `base`: (status,
    /// Location, body).
    async fn go(
        &mut self,
        http: &reqwest::Client,
        base: &str,
        url: &str,
        form: Option<&[(&str, &str)]>,
    ) -> (u16, Option<String>, String) {
        let url = format!("{base}{}", url.strip_prefix(ISSUER).unwrap_or(url));
        let mut req = match form {
            Some(f) => http.post(&url).form(f),
            None => http.get(&url),
        };
        if !self.cookies.is_empty() {
            req = req
                .header("cookie", self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "));
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{}", e.without_url()));
        for c in r.headers().get_all("set-cookie") {
            let kv = c.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = kv.split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
        (r.status().as_u16(), location, r.text().await.unwrap_or_default())
    }

    /// Alice signs in to the SPA through the pod at `base`; returns the authorization code.
    async fn sign_in(&mut self, http: &reqwest::Client, base: &str) -> String {
        use base64::Engine;
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, VERIFIER.as_bytes()));
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", SPA)
            .append_pair("redirect_uri", SPA_REDIRECT)
            .append_pair("scope", "openid payments:read")
            .append_pair("state", "st-1")
            .append_pair("nonce", "n-1")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let (status, location, _) = self.go(http, base, &format!("/v1/authorize?{q}"), None).await;
        assert_eq!(status, 303, "authorize");
        let (status, _, page) = self.go(http, base, &location.unwrap(), None).await;
        assert_eq!(status, 200, "the login page");
        let hidden = |name: &str| {
            let marker = format!("name=\"{name}\" value=\"");
            let start =
                page.find(&marker).unwrap_or_else(|| panic!("no {name} field on the login page")) + marker.len();
            page[start..].split('"').next().unwrap().to_owned()
        };
        let (request, csrf) = (hidden("request"), hidden("csrf"));
        let form =
            [("request", request.as_str()), ("csrf", &csrf), ("username", "alice"), ("password", "alice-password")];
        let (status, location, _) = self.go(http, base, "/v1/login", Some(&form)).await;
        let location = location.unwrap_or_default();
        assert_eq!(status, 303, "login");
        assert!(location.starts_with(SPA_REDIRECT), "login redirected to {}", location.split('?').next().unwrap());
        let q = location.split_once('?').map_or("", |(_, q)| q);
        let params: std::collections::HashMap<String, String> =
            form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        assert!(!params.contains_key("error"), "{:?}", params.get("error"));
        params["code"].clone()
    }
}

/// The SPA redeems `code` at the pod at `base`: (status, body). The body is never printed whole.
async fn redeem(http: &reqwest::Client, base: &str, code: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", SPA),
        ("code", code),
        ("redirect_uri", SPA_REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let r = http.post(format!("{base}/v1/token")).form(&form).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// client_credentials through the Service in a loop, a new connection each time (as a client
/// behind a Service would open them): counts answers by status and connection errors.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<LoadStats>,
}

#[derive(Debug, Default)]
struct LoadStats {
    ok: u64,
    /// Responses other than 200, by status.
    failed: std::collections::BTreeMap<u16, u64>,
    /// Requests that got no response, by kind (connect: refused or unreachable; timeout;
    /// other: reset or closed before an answer).
    no_response: std::collections::BTreeMap<&'static str, u64>,
}

impl std::fmt::Display for LoadStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ok, failed responses {:?}, without a response {:?}", self.ok, self.failed, self.no_response)
    }
}

impl LoadStats {
    fn assert_every_request_answered(&self, when: &str) {
        assert!(self.ok > 0, "no request succeeded {when}: {self}");
        assert!(self.failed.is_empty(), "failed responses {when}: {self}");
        assert!(self.no_response.is_empty(), "requests without a response {when}: {self}");
    }
}

impl Load {
    fn start(base: &str, id: &str, secret: &str) -> Load {
        let http =
            reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(5)).build().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (base, id, secret, flag) = (base.to_owned(), id.to_owned(), secret.to_owned(), stop.clone());
        let task = tokio::spawn(async move {
            let mut stats = LoadStats::default();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = http
                    .post(format!("{base}/v1/token"))
                    .basic_auth(&id, Some(&secret))
                    .form(&[("grant_type", "client_credentials"), ("scope", "payments:read")])
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => stats.ok += 1,
                    Ok(r) => *stats.failed.entry(r.status().as_u16()).or_default() += 1,
                    Err(e) => {
                        let kind = if e.is_connect() {
                            "connect"
                        } else if e.is_timeout() {
                            "timeout"
                        } else {
                            "other"
                        };
                        *stats.no_response.entry(kind).or_default() += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stats
        });
        Load { stop, task }
    }

    async fn stop(self) -> LoadStats {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}
