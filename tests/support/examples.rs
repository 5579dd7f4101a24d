//! The examples applied into a test's namespaces, and the waits that follow them.

use std::{path::Path, time::Duration};

use k8s_openapi::api::{
    authentication::v1::TokenRequest,
    core::v1::{Namespace, Pod, ServiceAccount},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(90);

/// The examples (our kinds and Secrets), with namespace `identity` → server_ns and
/// `team-orders` → client_ns.
pub fn examples(server_ns: &str, client_ns: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut paths: Vec<_> =
        std::fs::read_dir(super::repo_root().join("examples")).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(path).unwrap();
        for de in serde_norway::Deserializer::from_str(&text) {
            let mut doc: Value = serde::Deserialize::deserialize(de).unwrap();
            let secret = doc["apiVersion"] == "v1" && doc["kind"] == "Secret";
            if doc["apiVersion"] != "tessera.dev/v1alpha1" && !secret {
                continue;
            }
            let rename = |ns: &str| if ns == "identity" { server_ns.to_owned() } else { client_ns.to_owned() };
            let ns = rename(doc["metadata"]["namespace"].as_str().unwrap());
            doc["metadata"]["namespace"] = json!(ns);
            if let Some(ref_ns) = doc["spec"]["serverRef"]["namespace"].as_str() {
                doc["spec"]["serverRef"]["namespace"] = json!(rename(ref_ns));
            }
            out.push(doc);
        }
    }
    out
}

/// Applies the examples; the client namespace gets the labels of the examples' team-orders.
pub async fn apply_examples(client: &Client, server_ns: &str, client_ns: &str) {
    let labels = json!({ "tessera.dev/clients": "payments", "tessera.dev/tenant": "acme" });
    let patch = json!({ "metadata": { "labels": labels } });
    Api::<Namespace>::all(client.clone())
        .patch(client_ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    for doc in examples(server_ns, client_ns) {
        apply_doc(client, &doc).await;
    }
}

pub fn condition(obj: &Value, type_: &str) -> Option<String> {
    let c = obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?;
    c["status"].as_str().map(str::to_owned)
}

/// Waits until condition `type_` of `name` has `status`.
pub async fn wait_condition<K>(api: &Api<K>, name: &str, type_: &str, status: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    super::eventually(WAIT, &format!("{name}: {type_}={status}"), || async {
        let obj = api.get_opt(name).await.unwrap()?;
        (condition(&serde_json::to_value(obj).unwrap(), type_)? == status).then_some(())
    })
    .await;
}

/// No kubelet runs: mark the issuer's pods Ready so the Deployment becomes Available.
pub async fn mark_pods_ready(client: &Client, ns: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels("app.kubernetes.io/name=tessera-issuer");
    super::eventually(WAIT, "issuer pods to be created", || async {
        (!pods.list(&lp).await.unwrap().items.is_empty()).then_some(())
    })
    .await;
    for pod in pods.list(&lp).await.unwrap() {
        let now = jiff::Timestamp::now().to_string();
        let status = json!({ "status": {
            "phase": "Running",
            "conditions": [
                { "type": "Ready", "status": "True", "lastTransitionTime": now },
                { "type": "ContainersReady", "status": "True", "lastTransitionTime": now },
                { "type": "PodScheduled", "status": "True", "lastTransitionTime": now }
            ]
        }});
        pods.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    }
}

/// A copy of the admin kubeconfig `admin` that authenticates with `token` only, at `out`.
pub fn token_kubeconfig(admin: &Path, token: &str, out: &Path) {
    let mut kc: Value = serde_norway::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    for user in kc["users"].as_array_mut().unwrap() {
        user["user"] = json!({ "token": token });
    }
    std::fs::write(out, serde_norway::to_string(&kc).unwrap()).unwrap();
}

/// A client of the control plane authenticated by the kubeconfig at `path`.
pub async fn client_from(path: &Path) -> Client {
    super::client_for(path).await
}

/// Server-side applies one document of our kinds or a Secret (its namespace is in its metadata).
pub async fn apply_doc(client: &Client, doc: &Value) {
    let kind = doc["kind"].as_str().unwrap();
    let ns = doc["metadata"]["namespace"].as_str().unwrap();
    let ar = match kind {
        "Secret" => kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
        other => tessera::api::api_resource(other).unwrap_or_else(|| panic!("unexpected kind {other}")),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    api.patch(&obj.name_any(), &PatchParams::apply("tests").force(), &Patch::Apply(&obj)).await.unwrap();
}

pub fn condition_with_reason(obj: &Value, type_: &str) -> Option<(String, String)> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).map(|c| {
        (c["status"].as_str().unwrap_or_default().to_owned(), c["reason"].as_str().unwrap_or_default().to_owned())
    })
}

pub async fn get_value<K>(api: &Api<K>, name: &str) -> Option<Value>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.get_opt(name).await.unwrap().map(|o| serde_json::to_value(o).unwrap())
}

pub async fn wait_condition_reason<K>(api: &Api<K>, name: &str, type_: &str, status: &str, reason: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let what = format!("{name}: {type_}={status} ({reason})");
    super::eventually(WAIT, &what, || async {
        let v = get_value(api, name).await?;
        let (s, r) = condition_with_reason(&v, type_)?;
        (s == status && r == reason).then_some(())
    })
    .await;
}

/// A ServiceAccount token from TokenRequest, valid for an hour.
pub async fn token_for(client: &Client, ns: &str, sa: &str) -> String {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let req: TokenRequest =
        serde_json::from_value(json!({ "spec": { "audiences": [], "expirationSeconds": 3600 } })).unwrap();
    let resp: TokenRequest = api.create_subresource("token", sa, &PostParams::default(), &req).await.unwrap();
    resp.status.unwrap().token
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
