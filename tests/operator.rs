//! The operator against a real control plane: children, status, references, RBAC, deletion,
//! crash-restart convergence and idempotence.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{Namespace, Pod, Secret, Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    examples::{
        WAIT, apply_doc, examples, free_port, get_value, mark_pods_ready, token_for,
        wait_condition_reason as wait_condition,
    },
    operator::OperatorProcess,
};
use tessera::api::{AccessPolicy, AuthClaim, AuthClient, AuthScope, AuthorizationServer};

/// A server namespace and a client namespace, with the examples applied into them.
struct Setup {
    client: Client,
    server_ns: String,
    client_ns: String,
    _operator: OperatorProcess,
}

async fn setup(name: &str) -> Setup {
    let client = support::client().await;
    let server_ns = support::namespace(&client, &format!("{name}-id")).await;
    let client_ns = support::namespace(&client, &format!("{name}-cl")).await;
    label_namespace(&client, &client_ns, "payments").await;
    let plane = support::control_plane();
    let log = plane.data_dir.join(format!("operator-{server_ns}.log"));
    let operator = OperatorProcess::start(&plane.kubeconfig, &[&server_ns, &client_ns], &log);
    Setup { client, server_ns, client_ns, _operator: operator }
}

async fn label_namespace(client: &Client, ns: &str, value: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let patch = json!({ "metadata": { "labels": { "tessera.dev/clients": value } } });
    api.patch(ns, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

fn secret_text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

#[tokio::test]
async fn examples_become_a_ready_server_with_owned_children_and_a_complete_config() {
    let s = setup("ready").await;
    for doc in examples(&s.server_ns, &s.client_ns) {
        apply_doc(&s.client, &doc).await;
    }
    let ns = &s.server_ns;
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), ns);
    support::eventually(WAIT, "the issuer Deployment", || async {
        deployments.get_opt("payments-issuer").await.unwrap()
    })
    .await;

    let servers: Api<AuthorizationServer> = Api::namespaced(s.client.clone(), ns);
    let server = servers.get("payments").await.unwrap();
    let uid = server.metadata.uid.clone().unwrap();
    let owned_by_server = |refs: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
        refs.unwrap_or_default().iter().any(|o| o.uid == uid && o.controller == Some(true))
    };
    async fn owners<K>(
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        Api::<K>::namespaced(client.clone(), ns).get(name).await.unwrap().meta().owner_references.clone()
    }
    for (kind, refs) in [
        ("ServiceAccount", owners::<ServiceAccount>(&s.client, ns, "payments-issuer").await),
        ("Role", owners::<Role>(&s.client, ns, "payments-issuer").await),
        ("RoleBinding", owners::<RoleBinding>(&s.client, ns, "payments-issuer").await),
        ("Service", owners::<Service>(&s.client, ns, "payments-issuer").await),
    ] {
        assert!(owned_by_server(refs), "{kind} payments-issuer is not owned by its server");
    }
    assert!(owned_by_server(deployments.get("payments-issuer").await.unwrap().metadata.owner_references));
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), ns);
    let config =
        support::eventually(WAIT, "the config Secret", || async { secrets.get_opt("payments-config").await.unwrap() })
            .await;
    assert!(owned_by_server(config.metadata.owner_references.clone()));
    let keys = secrets.get("payments-signing-keys").await.unwrap();
    assert!(owned_by_server(keys.metadata.owner_references.clone()));

    // The compiled config holds every scope, claim, policy and client of the examples.
    let config_json = support::eventually(WAIT, "all three clients in the config", || async {
        let c = secrets.get("payments-config").await.unwrap();
        let text = secret_text(&c, "config.json");
        text.contains(&format!("{}.orders-worker", s.client_ns)).then_some(text)
    })
    .await;
    for needle in [
        "payments:read",
        "payments:write",
        "payments:admin",
        "tenant",
        "k8s_namespace",
        "groups",
        "machine-access",
        "admins",
        &format!("{}.orders-api", s.client_ns),
        &format!("{}.orders-admin", s.client_ns),
    ] {
        assert!(config_json.contains(needle), "config lacks {needle}");
    }

    // The client's secret was written in its own namespace; only a hash reached the config.
    let client_secret: Api<Secret> = Api::namespaced(s.client.clone(), &s.client_ns);
    let written = support::eventually(WAIT, "the client Secret", || async {
        client_secret.get_opt("orders-api-oauth").await.unwrap()
    })
    .await;
    let secret_value = secret_text(&written, "client_secret");
    assert!(secret_value.len() >= 43, "256-bit secret expected");
    assert!(!config_json.contains(&secret_value), "the config must hold only the secret's hash");
    assert_eq!(secret_text(&written, "token_endpoint"), "http://127.0.0.1:8080/oauth2/payments/v1/token");

    wait_condition(&servers, "payments", "ConfigReady", "True", "Compiled").await;
    wait_condition(&servers, "payments", "SigningKeysReady", "True", "KeysPublished").await;
    wait_condition(&servers, "payments", "Ready", "False", "Progressing").await;
    mark_pods_ready(&s.client, ns).await;
    wait_condition(&servers, "payments", "Ready", "True", "Ready").await;
    let server = get_value(&servers, "payments").await.unwrap();
    assert_eq!(server["status"]["observedGeneration"], server["metadata"]["generation"]);
    assert!(server["status"]["signing"]["activeKeyId"].is_string());
    assert_eq!(server["status"]["endpoints"]["token"], "http://127.0.0.1:8080/oauth2/payments/v1/token");

    let clients: Api<AuthClient> = Api::namespaced(s.client.clone(), &s.client_ns);
    wait_condition(&clients, "orders-api", "Accepted", "True", "Accepted").await;
    let scopes: Api<AuthScope> = Api::namespaced(s.client.clone(), ns);
    wait_condition(&scopes, "payments-read", "Accepted", "True", "Accepted").await;

    // Idempotence: a second reconcile of the unchanged server writes nothing.
    let versions = |c: Client, ns: String, cns: String| async move {
        let mut v = BTreeMap::new();
        for s in Api::<Secret>::namespaced(c.clone(), &ns).list(&ListParams::default()).await.unwrap() {
            v.insert(format!("secret/{}", s.name_any()), s.resource_version().unwrap());
        }
        for s in Api::<Secret>::namespaced(c.clone(), &cns).list(&ListParams::default()).await.unwrap() {
            v.insert(format!("client-secret/{}", s.name_any()), s.resource_version().unwrap());
        }
        let d = Api::<Deployment>::namespaced(c.clone(), &ns).get("payments-issuer").await.unwrap();
        v.insert("deployment".into(), d.resource_version().unwrap());
        for o in Api::<AuthScope>::namespaced(c.clone(), &ns).list(&ListParams::default()).await.unwrap() {
            v.insert(format!("scope/{}", o.name_any()), o.resource_version().unwrap());
        }
        for o in Api::<AuthClient>::namespaced(c.clone(), &cns).list(&ListParams::default()).await.unwrap() {
            v.insert(format!("client/{}", o.name_any()), o.resource_version().unwrap());
        }
        v
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = versions(s.client.clone(), ns.clone(), s.client_ns.clone()).await;
    // Touch the server without changing its spec: the controller reconciles it again.
    let touch = json!({ "metadata": { "annotations": { "test/touch": "1" } } });
    servers.patch("payments", &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = versions(s.client.clone(), ns.clone(), s.client_ns.clone()).await;
    assert_eq!(before, after, "an unchanged server's reconcile must not write");
}

#[tokio::test]
async fn bad_references_are_reported_and_recover_when_fixed() {
    let s = setup("refs").await;
    let ns = s.server_ns.clone();
    let policies: Api<AccessPolicy> = Api::namespaced(s.client.clone(), &ns);
    let docs = examples(&ns, &s.client_ns);
    let find = |kind: &str, name: &str| {
        docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap().clone()
    };

    // A policy whose server does not exist yet.
    apply_doc(&s.client, &find("AccessPolicy", "machine-access")).await;
    wait_condition(&policies, "machine-access", "Accepted", "False", "ServerNotFound").await;
    apply_doc(&s.client, &find("AuthorizationServer", "payments")).await;
    wait_condition(&policies, "machine-access", "Accepted", "True", "Accepted").await;

    // A claim whose CEL does not compile; fixed, it is accepted.
    let claims: Api<AuthClaim> = Api::namespaced(s.client.clone(), &ns);
    let mut claim = find("AuthClaim", "tenant");
    claim["spec"]["value"] = json!("client.metadata.tenant +");
    apply_doc(&s.client, &claim).await;
    wait_condition(&claims, "tenant", "Accepted", "False", "InvalidExpression").await;
    claim["spec"]["value"] = json!("client.namespace");
    apply_doc(&s.client, &claim).await;
    wait_condition(&claims, "tenant", "Accepted", "True", "Accepted").await;

    // Two scopes with one name: the older wins, the newer is in Conflict until renamed.
    let scopes: Api<AuthScope> = Api::namespaced(s.client.clone(), &ns);
    apply_doc(&s.client, &find("AuthScope", "payments-read")).await;
    wait_condition(&scopes, "payments-read", "Accepted", "True", "Accepted").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut dup = find("AuthScope", "payments-read");
    dup["metadata"]["name"] = json!("payments-read-again");
    apply_doc(&s.client, &dup).await;
    wait_condition(&scopes, "payments-read-again", "Accepted", "False", "Conflict").await;
    wait_condition(&scopes, "payments-read", "Accepted", "True", "Accepted").await;
    dup["spec"]["name"] = json!("payments:read-again");
    apply_doc(&s.client, &dup).await;
    wait_condition(&scopes, "payments-read-again", "Accepted", "True", "Accepted").await;

    // A client in a namespace the server's selector does not allow.
    label_namespace(&s.client, &s.client_ns, "someone-else").await;
    apply_doc(&s.client, &find("AuthClient", "orders-api")).await;
    let clients: Api<AuthClient> = Api::namespaced(s.client.clone(), &s.client_ns);
    wait_condition(&clients, "orders-api", "Accepted", "False", "NamespaceNotAllowed").await;
    label_namespace(&s.client, &s.client_ns, "payments").await;
    // The namespace label is not watched: the client's next change, or the periodic
    // reconcile, picks it up. Touch the client to make it prompt.
    let touch = json!({ "metadata": { "annotations": { "test/touch": "1" } } });
    clients.patch("orders-api", &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
    wait_condition(&clients, "orders-api", "Accepted", "True", "Accepted").await;
    let client = get_value(&clients, "orders-api").await.unwrap();
    assert_eq!(client["status"]["clientId"], json!(format!("{}.orders-api", s.client_ns)));
    assert_eq!(client["status"]["secretName"], "orders-api-oauth");
}

#[tokio::test]
async fn issuer_identity_reads_its_two_secrets_and_nothing_else() {
    let s = setup("rbac").await;
    for doc in examples(&s.server_ns, &s.client_ns) {
        apply_doc(&s.client, &doc).await;
    }
    let ns = s.server_ns.clone();
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &ns);
    let deployment = support::eventually(WAIT, "the issuer Deployment", || async {
        deployments.get_opt("payments-issuer").await.unwrap()
    })
    .await;
    let sa = deployment.spec.unwrap().template.spec.unwrap().service_account_name.unwrap();
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &ns);
    support::eventually(WAIT, "the keys Secret", || async { secrets.get_opt("payments-signing-keys").await.unwrap() })
        .await;
    // The Role may land a moment after the Deployment.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let token = token_for(&s.client, &ns, &sa).await;
    let plane = support::control_plane();
    let mut config = kube::Config::new(plane.url.parse().unwrap());
    let kc = kube::config::Kubeconfig::read_from(&plane.kubeconfig).unwrap();
    let admin = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    config.root_cert = admin.root_cert.clone();
    config.auth_info.token = Some(token.into());
    let as_issuer = Client::try_from(config).unwrap();

    let issuer_secrets: Api<Secret> = Api::namespaced(as_issuer.clone(), &ns);
    issuer_secrets.get("payments-config").await.expect("issuer can read its config");
    issuer_secrets.get("payments-signing-keys").await.expect("issuer can read its keys");
    let forbidden = |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    assert!(
        forbidden(issuer_secrets.list(&ListParams::default()).await.map(|_| ())),
        "listing all Secrets must be forbidden"
    );
    let other: Secret =
        serde_json::from_value(json!({ "metadata": { "name": "other" }, "stringData": { "k": "v" } })).unwrap();
    secrets.create(&PostParams::default(), &other).await.unwrap();
    assert!(forbidden(issuer_secrets.get("other").await.map(|_| ())), "another Secret must be forbidden");
    assert!(forbidden(
        Api::<Secret>::namespaced(as_issuer.clone(), &s.client_ns).get("orders-api-oauth").await.map(|_| ())
    ));
    assert!(forbidden(Api::<Pod>::namespaced(as_issuer.clone(), &ns).list(&ListParams::default()).await.map(|_| ())));
    assert!(forbidden(
        issuer_secrets
            .patch(
                "payments-config",
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"labels": {"x": "y"}}}))
            )
            .await
            .map(|_| ())
    ));
    // Watching the two Secrets by name is allowed (that is how the issuer follows changes).
    let lp = ListParams::default().fields("metadata.name=payments-config");
    issuer_secrets.list(&lp).await.expect("list of its own config Secret by name");
}

#[tokio::test]
async fn deleting_the_server_removes_everything_it_created_including_client_secrets() {
    let s = setup("delete").await;
    for doc in examples(&s.server_ns, &s.client_ns) {
        apply_doc(&s.client, &doc).await;
    }
    let ns = s.server_ns.clone();
    let client_secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.client_ns);
    support::eventually(WAIT, "the client Secret", || async {
        client_secrets.get_opt("orders-api-oauth").await.unwrap()
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &ns);
    support::eventually(WAIT, "the config Secret", || async { secrets.get_opt("payments-config").await.unwrap() })
        .await;

    let servers: Api<AuthorizationServer> = Api::namespaced(s.client.clone(), &ns);
    servers.delete("payments", &DeleteParams::default()).await.unwrap();
    support::eventually(WAIT, "the server to be gone", || async {
        servers.get_opt("payments").await.unwrap().is_none().then_some(())
    })
    .await;
    support::eventually(WAIT, "the client Secret to be deleted", || async {
        client_secrets.get_opt("orders-api-oauth").await.unwrap().is_none().then_some(())
    })
    .await;
    support::eventually(WAIT, "owned children to be collected", || async {
        let none_left = secrets.get_opt("payments-config").await.unwrap().is_none()
            && secrets.get_opt("payments-signing-keys").await.unwrap().is_none()
            && Api::<Deployment>::namespaced(s.client.clone(), &ns).get_opt("payments-issuer").await.unwrap().is_none()
            && Api::<ReplicaSet>::namespaced(s.client.clone(), &ns)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
            && Api::<Service>::namespaced(s.client.clone(), &ns).get_opt("payments-issuer").await.unwrap().is_none()
            && Api::<Role>::namespaced(s.client.clone(), &ns).get_opt("payments-issuer").await.unwrap().is_none();
        none_left.then_some(())
    })
    .await;
    let policies: Api<AccessPolicy> = Api::namespaced(s.client.clone(), &ns);
    wait_condition(&policies, "machine-access", "Accepted", "False", "ServerNotFound").await;
}

#[tokio::test]
async fn killing_the_operator_mid_reconcile_converges_without_duplicates() {
    let client = support::client().await;
    let server_ns = support::namespace(&client, "crash-id").await;
    let client_ns = support::namespace(&client, "crash-cl").await;
    label_namespace(&client, &client_ns, "payments").await;
    let plane = support::control_plane();
    for doc in examples(&server_ns, &client_ns) {
        apply_doc(&client, &doc).await;
    }
    // Start and kill the operator several times at different moments of its work.
    for (i, delay_ms) in [150u64, 400, 700, 1200].into_iter().enumerate() {
        let log = plane.data_dir.join(format!("operator-crash-{server_ns}-{i}.log"));
        let mut op = OperatorProcess::start(&plane.kubeconfig, &[&server_ns, &client_ns], &log);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        op.kill();
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &server_ns);
    let client_secrets: Api<Secret> = Api::namespaced(client.clone(), &client_ns);
    let first_keys = secrets.get_opt("payments-signing-keys").await.unwrap();
    let first_client_secret = client_secrets.get_opt("orders-api-oauth").await.unwrap();

    let log = plane.data_dir.join(format!("operator-crash-{server_ns}-final.log"));
    let _op = OperatorProcess::start(&plane.kubeconfig, &[&server_ns, &client_ns], &log);
    let servers: Api<AuthorizationServer> = Api::namespaced(client.clone(), &server_ns);
    wait_condition(&servers, "payments", "ConfigReady", "True", "Compiled").await;
    mark_pods_ready(&client, &server_ns).await;
    wait_condition(&servers, "payments", "Ready", "True", "Ready").await;

    let keys = secrets.get("payments-signing-keys").await.unwrap();
    let key_set: Value = serde_json::from_slice(&keys.data.as_ref().unwrap()["keys.json"].0).unwrap();
    let kids: Vec<String> =
        key_set["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect();
    let mut unique = kids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(kids.len(), unique.len(), "duplicate kids: {kids:?}");
    if let Some(first) = first_keys {
        assert_eq!(first.data, keys.data, "a key set written before the crash is kept as it was");
    }
    let cs = client_secrets.get("orders-api-oauth").await.unwrap();
    if let Some(first) = first_client_secret {
        assert_eq!(
            secret_text(&first, "client_secret"),
            secret_text(&cs, "client_secret"),
            "the client secret is never re-issued"
        );
    }
    let all_client_secrets =
        client_secrets.list(&ListParams::default().labels("tessera.dev/server-name=payments")).await.unwrap();
    assert_eq!(all_client_secrets.items.len(), 2, "one Secret per client with a secret");
    let deployments =
        Api::<Deployment>::namespaced(client.clone(), &server_ns).list(&ListParams::default()).await.unwrap();
    assert_eq!(deployments.items.len(), 1);
}

async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut buf = String::new();
    stream.read_to_string(&mut buf).await.ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf))
}

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    let client = support::client().await;
    let server_ns = support::namespace(&client, "lease-id").await;
    let client_ns = support::namespace(&client, "lease-cl").await;
    label_namespace(&client, &client_ns, "payments").await;
    let plane = support::control_plane();
    let ports = [free_port(), free_port()];
    let mut operators: Vec<Option<OperatorProcess>> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let listen = format!("127.0.0.1:{port}");
            let identity = format!("op-{i}");
            let log = plane.data_dir.join(format!("operator-lease-{server_ns}-{i}.log"));
            let args =
                ["--listen", &listen, "--leader-elect", "--lease-namespace", &server_ns, "--identity", &identity];
            Some(OperatorProcess::start_with(&plane.kubeconfig, &[&server_ns, &client_ns], &log, &args))
        })
        .collect();

    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), &server_ns);
    let holder = support::eventually(WAIT, "a lease holder", || async {
        leases.get_opt("tessera-operator").await.unwrap()?.spec?.holder_identity
    })
    .await;
    let leader = if holder == "op-0" { 0 } else { 1 };
    let standby = 1 - leader;
    support::eventually(WAIT, "the leader to report its role", || async {
        let (code, body) = http_get(ports[leader], "/readyz").await?;
        (code == 200 && body.ends_with("leader")).then_some(())
    })
    .await;
    // The standby is ready (healthy, able to take over) but not leading.
    support::eventually(WAIT, "the standby to report its role", || async {
        let (code, body) = http_get(ports[standby], "/readyz").await?;
        (code == 200 && body.ends_with("standby")).then_some(())
    })
    .await;
    assert_eq!(http_get(ports[standby], "/healthz").await.unwrap().0, 200, "the standby is alive");

    for doc in examples(&server_ns, &client_ns) {
        apply_doc(&client, &doc).await;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &server_ns);
    support::eventually(WAIT, "the leader to render the config", || async {
        secrets.get_opt("payments-config").await.unwrap()
    })
    .await;
    let metrics = http_get(ports[leader], "/metrics").await.unwrap().1;
    assert!(metrics.contains("tessera_operator_reconciles_total"), "{metrics}");
    assert!(metrics.contains("tessera_operator_api_writes_total"), "{metrics}");
    let standby_metrics = http_get(ports[standby], "/metrics").await.unwrap().1;
    assert!(!standby_metrics.contains("tessera_operator_api_writes_total{"), "the standby wrote: {standby_metrics}");

    // The leader dies; the standby takes the lease and keeps reconciling.
    operators[leader].take().unwrap().kill();
    support::eventually(Duration::from_secs(90), "the standby to take over", || async {
        http_get(ports[standby], "/readyz").await?.1.ends_with("leader").then_some(())
    })
    .await;
    let scopes: Api<AuthScope> = Api::namespaced(client.clone(), &server_ns);
    let mut doc = examples(&server_ns, &client_ns).into_iter().find(|d| d["kind"] == "AuthScope").unwrap();
    doc["metadata"]["name"] = json!("after-failover");
    doc["spec"]["name"] = json!("payments:after-failover");
    apply_doc(&client, &doc).await;
    wait_condition(&scopes, "after-failover", "Accepted", "True", "Accepted").await;
    drop(operators);
}

#[tokio::test]
async fn rotating_a_client_secret_keeps_the_previous_one_valid_for_the_overlap() {
    let s = setup("secret-rot").await;
    for doc in examples(&s.server_ns, &s.client_ns) {
        apply_doc(&s.client, &doc).await;
    }
    let client_secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.client_ns);
    let first = support::eventually(WAIT, "the client Secret", || async {
        client_secrets.get_opt("orders-api-oauth").await.unwrap()
    })
    .await;
    let first_secret = secret_text(&first, "client_secret");

    let clients: Api<AuthClient> = Api::namespaced(s.client.clone(), &s.client_ns);
    let patch = json!({ "metadata": { "annotations": { "tessera.dev/rotate-secret": "r1" } } });
    clients.patch("orders-api", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let rotated = support::eventually(WAIT, "a new client secret", || async {
        let s = client_secrets.get("orders-api-oauth").await.unwrap();
        (secret_text(&s, "client_secret") != first_secret).then_some(s)
    })
    .await;
    assert_eq!(
        secret_text(&rotated, "previous_client_secret"),
        first_secret,
        "the previous secret stays for the overlap"
    );
    let until: jiff::Timestamp = secret_text(&rotated, "previous_valid_until").parse().unwrap();
    assert!(until > jiff::Timestamp::now() + jiff::SignedDuration::from_hours(23));

    // Both secrets' hashes are in the config the issuer serves, neither secret itself.
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.server_ns);
    let id = format!("{}.orders-api", s.client_ns);
    support::eventually(WAIT, "both secrets accepted by the config", || async {
        let config = secret_text(&secrets.get("payments-config").await.unwrap(), "config.json");
        let config: Value = serde_json::from_str(&config).unwrap();
        let client = config["clients"].as_array()?.iter().find(|c| c["clientId"] == id.as_str())?.clone();
        let hashes = client["secretHashes"].as_array()?.clone();
        let expected = [
            tessera::config::hash_secret(&secret_text(&rotated, "client_secret")),
            tessera::config::hash_secret(&first_secret),
        ];
        (hashes.len() == 2
            && expected.iter().all(|h| hashes.iter().any(|x| x == h.as_str()))
            && !config.to_string().contains(&first_secret))
        .then_some(())
    })
    .await;

    // The same request value again changes nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = client_secrets.get("orders-api-oauth").await.unwrap();
    assert_eq!(again.metadata.resource_version, rotated.metadata.resource_version);
}

/// The message of condition `type_` of an object as JSON.
fn condition_message(obj: &Value, type_: &str) -> String {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn sign_in_config_waits_for_its_secrets_and_follows_their_changes() {
    let s = setup("signin").await;
    let ns = s.server_ns.clone();
    let docs = examples(&ns, &s.client_ns);
    let find = |kind: &str, name: &str| {
        docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap().clone()
    };
    let people = find("Secret", "people");
    let mut server = find("AuthorizationServer", "payments");
    server["spec"]["identity"] = json!({
        "sessionLifetime": "2h",
        "upstreams": [{
            "name": "corp",
            "issuer": "https://sso.example.com/",
            "clientId": "tessera",
            "clientSecretRef": { "name": "corp-oidc" }
        }],
        "staticUsers": { "secretName": "people" }
    });
    apply_doc(&s.client, &people).await;
    apply_doc(&s.client, &server).await;
    let servers: Api<AuthorizationServer> = Api::namespaced(s.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), &ns);

    // The upstream's Secret does not exist: no config at all, and status says which Secret.
    wait_condition(&servers, "payments", "ConfigReady", "False", "IdentitySecretNotFound").await;
    wait_condition(&servers, "payments", "Ready", "False", "IdentitySecretNotFound").await;
    let status = get_value(&servers, "payments").await.unwrap();
    assert_eq!(
        condition_message(&status, "ConfigReady"),
        format!("spec.identity: Secret {ns}/corp-oidc (client secret of upstream corp) was not found")
    );
    assert!(secrets.get_opt("payments-config").await.unwrap().is_none(), "no config without its sign-in");

    // Created, it is picked up through the Secret watch, with nothing else changing.
    let corp: Secret = serde_json::from_value(
        json!({ "metadata": { "name": "corp-oidc" }, "stringData": { "client_secret": "corp-secret-value" } }),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &corp).await.unwrap();
    wait_condition(&servers, "payments", "ConfigReady", "True", "Compiled").await;
    let config: Value = support::eventually(WAIT, "the config Secret", || async {
        let c = secrets.get_opt("payments-config").await.unwrap()?;
        serde_json::from_str(&secret_text(&c, "config.json")).ok()
    })
    .await;
    let identity = &config["identity"];
    assert_eq!(identity["sessionLifetimeSecs"], 7200);
    assert_eq!(identity["upstreams"][0]["name"], "corp");
    assert_eq!(identity["upstreams"][0]["issuer"], "https://sso.example.com");
    assert_eq!(identity["upstreams"][0]["clientSecret"], "corp-secret-value");
    assert_eq!(identity["users"][0]["username"], "alice");
    mark_pods_ready(&s.client, &ns).await;
    wait_condition(&servers, "payments", "Ready", "True", "Ready").await;

    // Broken static users: the reason on status, the last good config keeps being served.
    let mut broken = people.clone();
    broken["stringData"]["users.yaml"] = json!("- username: alice\n  passwordHash: plain-text-password\n");
    apply_doc(&s.client, &broken).await;
    wait_condition(&servers, "payments", "ConfigReady", "False", "InvalidStaticUsers").await;
    let status = get_value(&servers, "payments").await.unwrap();
    let message = condition_message(&status, "ConfigReady");
    assert!(message.contains(&format!("key users.yaml of Secret {ns}/people")), "{message}");
    let kept = secret_text(&secrets.get("payments-config").await.unwrap(), "config.json");
    assert!(kept.contains("$argon2id$") && !kept.contains("plain-text-password"), "the last good config is kept");

    // Secret values never reach status or events.
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let shown = format!("{status} {}", serde_json::to_string(&events.items).unwrap());
    for secret in ["corp-secret-value", "plain-text-password", "$argon2id$"] {
        assert!(!shown.contains(secret), "{secret} shown in status or events");
    }

    apply_doc(&s.client, &people).await;
    wait_condition(&servers, "payments", "ConfigReady", "True", "Compiled").await;
    wait_condition(&servers, "payments", "Ready", "True", "Ready").await;
}

#[tokio::test]
async fn children_changed_or_deleted_by_someone_else_are_repaired() {
    // The operator skips writes whose rendered child has not changed since its last write;
    // a change or deletion by anyone else must still be undone.
    let s = setup("drift").await;
    for doc in examples(&s.server_ns, &s.client_ns) {
        apply_doc(&s.client, &doc).await;
    }
    let ns = &s.server_ns;
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), ns);
    let rendered = support::eventually(WAIT, "the complete config", || async {
        let c = secrets.get_opt("payments-config").await.unwrap()?;
        let text = secret_text(&c, "config.json");
        text.contains(&format!("{}.orders-worker", s.client_ns)).then_some(text)
    })
    .await;
    let client_secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.client_ns);
    support::eventually(WAIT, "the client Secret", || async {
        client_secrets.get_opt("orders-api-oauth").await.unwrap()
    })
    .await;

    let edit = json!({ "data": { "config.json": "e30=" } });
    secrets.patch("payments-config", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    support::eventually(WAIT, "the config Secret to be restored", || async {
        let c = secrets.get("payments-config").await.unwrap();
        (secret_text(&c, "config.json") == rendered).then_some(())
    })
    .await;

    client_secrets.delete("orders-api-oauth", &DeleteParams::default()).await.unwrap();
    // Nothing about the client changed; its server's reconcile is woken by a touch.
    let servers: Api<AuthorizationServer> = Api::namespaced(s.client.clone(), ns);
    let touch = json!({ "metadata": { "annotations": { "test/touch": "drift" } } });
    servers.patch("payments", &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
    support::eventually(WAIT, "the client Secret to be written again", || async {
        client_secrets.get_opt("orders-api-oauth").await.unwrap()
    })
    .await;

    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), ns);
    deployments.delete("payments-issuer", &DeleteParams::default()).await.unwrap();
    support::eventually(WAIT, "the issuer Deployment to be created again", || async {
        deployments.get_opt("payments-issuer").await.unwrap().filter(|d| d.metadata.deletion_timestamp.is_none())
    })
    .await;
}

#[tokio::test]
async fn secrets_that_exist_without_the_operators_label_are_adopted_not_replaced() {
    // Managed Secrets the watches have not seen are created without a read first; one that
    // exists unlabelled (restored from a backup, say) must make that create fail and be adopted.
    let s = setup("adopt").await;
    let now = jiff::Timestamp::now();
    let key = tessera::keys::generate(tessera::keys::SigningAlgorithm::ES256, now, now).unwrap();
    let kid = key.kid.clone();
    let keys = tessera::keys::KeySet { keys: vec![key] }.to_json().unwrap();
    let keys_secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "payments-signing-keys" },
        "stringData": { "keys.json": keys },
    }))
    .unwrap();
    let server_secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.server_ns);
    server_secrets.create(&PostParams::default(), &keys_secret).await.unwrap();
    let client_secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "orders-api-oauth" },
        "stringData": { "client_secret": "restored-client-secret-of-orders-api" },
    }))
    .unwrap();
    let client_secrets: Api<Secret> = Api::namespaced(s.client.clone(), &s.client_ns);
    client_secrets.create(&PostParams::default(), &client_secret).await.unwrap();

    for doc in examples(&s.server_ns, &s.client_ns) {
        apply_doc(&s.client, &doc).await;
    }
    let servers: Api<AuthorizationServer> = Api::namespaced(s.client.clone(), &s.server_ns);
    support::eventually(WAIT, "the restored key signing", || async {
        let server = servers.get("payments").await.unwrap();
        (server.status?.signing?.active_key_id? == kid).then_some(())
    })
    .await;
    let id = format!("{}.orders-api", s.client_ns);
    let hash = tessera::config::hash_secret("restored-client-secret-of-orders-api");
    support::eventually(WAIT, "the restored client secret in the config", || async {
        let config = secret_text(&server_secrets.get_opt("payments-config").await.unwrap()?, "config.json");
        let config: Value = serde_json::from_str(&config).unwrap();
        let client = config["clients"].as_array()?.iter().find(|c| c["clientId"] == id.as_str())?.clone();
        (client["secretHashes"].as_array()?.iter().any(|h| h == hash.as_str())).then_some(())
    })
    .await;
    let adopted = client_secrets.get("orders-api-oauth").await.unwrap();
    assert_eq!(secret_text(&adopted, "client_secret"), "restored-client-secret-of-orders-api");
    assert_eq!(adopted.labels().get("app.kubernetes.io/managed-by").map(String::as_str), Some("tessera-operator"));
}
