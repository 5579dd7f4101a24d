//! Every write the operator makes to the API server for a server's reconcile: server-side
//! apply of its children, deletes, its status, Events. Each write that reaches the API server
//! is counted (`tessera_operator_api_writes`); one that would change nothing is skipped
//! (`applied`).

use std::time::Instant;

use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::{
    Context, Error, MANAGER,
    applied::{self, Key, Memo},
};
use crate::api::{AuthorizationServer, AuthorizationServerStatus, conditions};

/// Server-side apply of one child, unless what we applied last is identical and nobody changed
/// it since (`Applied`); returns what `memo` keeps of the object as the API server holds it.
pub async fn apply<K>(ctx: &Context, ns: &str, obj: K, memo: impl FnOnce(&K) -> Memo) -> Result<Memo, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut patch = serde_json::to_value(&obj).map_err(|source| Error::Serialize { what: "child object", source })?;
    patch["apiVersion"] = json!(<K as k8s_openapi::Resource>::API_VERSION);
    patch["kind"] = json!(<K as k8s_openapi::Resource>::KIND);
    let key = Key::new(<K as k8s_openapi::Resource>::KIND, ns, &name);
    let digest = applied::digest(&patch);
    if let Some(memo) = ctx.applied.unchanged(&key, digest, Instant::now()) {
        return Ok(memo);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    // Only its status moved since our write (the Deployment controller's progress): a read is
    // all the reconcile needs, unless the object read shows more than that changed.
    if let Some(spec) = ctx.applied.status_moved(&key, digest, Instant::now()) {
        match api.get_opt(&name).await {
            Ok(Some(current)) if applied::spec_fingerprint(current.meta()) == spec => {
                let memo = memo(&current);
                let version = current.meta().resource_version.as_deref();
                ctx.applied.record(key, digest, version, spec, memo.clone(), Instant::now());
                return Ok(memo);
            }
            Ok(_) => ctx.applied.forget(&key),
            Err(e) => {
                ctx.applied.forget(&key);
                return Err(e.into());
            }
        }
    }
    let after = match api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(after) => after,
        Err(e) => {
            ctx.applied.forget(&key);
            return Err(e.into());
        }
    };
    let memo = memo(&after);
    // An unchanged apply is a no-op that keeps the resourceVersion: count only real writes.
    let (version, spec) = (after.meta().resource_version.as_deref(), applied::spec_fingerprint(after.meta()));
    if ctx.applied.record(key, digest, version, spec, memo.clone(), Instant::now()) {
        ctx.metrics.write(<K as k8s_openapi::Resource>::KIND, "apply");
    }
    Ok(memo)
}

pub fn no_memo<K>(_: &K) -> Memo {
    Memo::None
}

/// Marks "known to be absent" in `Applied` (no object has this digest).
const ABSENT: u64 = u64::MAX;

pub async fn delete_if_present<K>(ctx: &Context, ns: &str, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let key = Key::new(<K as k8s_openapi::Resource>::KIND, ns, name);
    if ctx.applied.unchanged(&key, ABSENT, Instant::now()).is_some() {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    if api.get_opt(name).await?.is_some() {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => ctx.metrics.write(<K as k8s_openapi::Resource>::KIND, "delete"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.applied.record(key, ABSENT, None, 0, Memo::None, Instant::now());
    Ok(())
}

pub async fn server_status(
    ctx: &Context,
    server: &AuthorizationServer,
    desired: AuthorizationServerStatus,
) -> Result<(), Error> {
    let current = server.status.clone().unwrap_or_default();
    let same = !conditions::differ_beyond_timestamps(&current.conditions, &desired.conditions)
        && AuthorizationServerStatus { conditions: vec![], ..current.clone() }
            == AuthorizationServerStatus { conditions: vec![], ..desired.clone() };
    if same {
        return Ok(());
    }
    let api: Api<AuthorizationServer> = Api::namespaced(ctx.client.clone(), &server.namespace().unwrap_or_default());
    let patch = json!({ "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthorizationServer", "status": desired });
    api.patch_status(&server.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    ctx.metrics.write("AuthorizationServer", "patch-status");
    let was_ready = current.conditions.iter().any(|c| c.type_ == conditions::READY && c.status == "True");
    let is_ready = desired.conditions.iter().any(|c| c.type_ == conditions::READY && c.status == "True");
    if was_ready != is_ready {
        let (type_, reason, note) = if is_ready {
            (EventType::Normal, "Ready", format!("issuer {} is serving", server.spec.issuer))
        } else {
            (EventType::Warning, "NotReady", "the issuer is not serving yet".to_owned())
        };
        publish(ctx, server, type_, reason, note).await;
    }
    Ok(())
}

pub async fn publish(ctx: &Context, server: &AuthorizationServer, type_: EventType, reason: &str, note: String) {
    let event = Event { type_, reason: reason.into(), note: Some(note), action: "Reconcile".into(), secondary: None };
    // A recorder per event: kube's keeps every event it sent for 6 minutes (to count repeats),
    // ~1,000 events at 1,000 servers; ours are transitions, rarely repeated.
    let recorder = Recorder::new(ctx.client.clone(), Reporter { controller: MANAGER.into(), instance: None });
    if let Err(e) = recorder.publish(&event, &server.object_ref(&())).await {
        tracing::debug!(error = %e, "could not publish event");
    } else {
        ctx.metrics.write("Event", "create");
    }
}
