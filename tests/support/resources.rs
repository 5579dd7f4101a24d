//! Shared helpers for tests that drive resources through the control plane.

use std::time::Duration;

use k8s_openapi::api::{authentication::v1::TokenRequest, core::v1::ServiceAccount};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tessera::api::{AccessPolicy, AuthClaim, AuthClient, AuthScope, AuthorizationServer};

pub const WAIT: Duration = Duration::from_secs(60);

/// Server-side applies one document of our kinds (its namespace is in its metadata).
pub async fn apply_doc(client: &Client, doc: &Value) {
    let kind = doc["kind"].as_str().unwrap();
    let ns = doc["metadata"]["namespace"].as_str().unwrap();
    let ar = match kind {
        "AuthorizationServer" => kube::api::ApiResource::erase::<AuthorizationServer>(&()),
        "AuthScope" => kube::api::ApiResource::erase::<AuthScope>(&()),
        "AuthClaim" => kube::api::ApiResource::erase::<AuthClaim>(&()),
        "AccessPolicy" => kube::api::ApiResource::erase::<AccessPolicy>(&()),
        "AuthClient" => kube::api::ApiResource::erase::<AuthClient>(&()),
        other => panic!("unexpected kind {other}"),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    api.patch(&obj.name_any(), &PatchParams::apply("tests").force(), &Patch::Apply(&obj)).await.unwrap();
}

pub fn condition(obj: &Value, type_: &str) -> Option<(String, String)> {
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

pub async fn wait_condition<K>(api: &Api<K>, name: &str, type_: &str, status: &str, reason: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let what = format!("{name}: {type_}={status} ({reason})");
    super::eventually(WAIT, &what, || async {
        let v = get_value(api, name).await?;
        let (s, r) = condition(&v, type_)?;
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
