//! Scopes, claims, policies and clients whose server does not exist: `Accepted=False,
//! reason=ServerNotFound`. Everything else about them is decided by their server's reconcile.

use std::{fmt::Debug, sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde::{Serialize, de::DeserializeOwned};

use super::{Context, Error, status};
use crate::api::{AccessPolicy, AuthClaim, AuthClient, AuthScope, AuthorizationServer};

/// A resource that points at an AuthorizationServer.
pub trait Dependent:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    /// (namespace, name) of the server it belongs to.
    fn server(&self) -> (String, String);
    /// Whether it belongs to server `namespace/name` (no allocation: called for every cached
    /// object on every server reconcile).
    fn belongs_to(&self, namespace: &str, name: &str) -> bool;
    /// Its status as JSON (null when it has none), taken out of the object.
    fn take_status(&mut self) -> serde_json::Value;
}

macro_rules! dependent {
    ($ty:ty, $kind:literal, |$s:ident| $server_ns:expr, |$b:ident| $server_ns_ref:expr) => {
        impl Dependent for $ty {
            const KIND: &'static str = $kind;
            fn server(&self) -> (String, String) {
                let $s = self;
                ($server_ns, self.spec.server_ref.name.clone())
            }
            fn belongs_to(&self, namespace: &str, name: &str) -> bool {
                let $b = self;
                self.spec.server_ref.name == name && $server_ns_ref == Some(namespace)
            }
            fn take_status(&mut self) -> serde_json::Value {
                self.status.take().and_then(|s| serde_json::to_value(s).ok()).unwrap_or_default()
            }
        }
    };
}

dependent!(AuthScope, "AuthScope", |s| s.namespace().unwrap_or_default(), |b| b.metadata.namespace.as_deref());
dependent!(AuthClaim, "AuthClaim", |s| s.namespace().unwrap_or_default(), |b| b.metadata.namespace.as_deref());
dependent!(AccessPolicy, "AccessPolicy", |s| s.namespace().unwrap_or_default(), |b| b.metadata.namespace.as_deref());
dependent!(AuthClient, "AuthClient", |s| s.server_namespace(), |b| {
    b.spec.server_ref.namespace.as_deref().or(b.metadata.namespace.as_deref())
});

/// Runs the controller of `K` on the operator's shared watch of it (`trigger`, cached in `store`).
pub async fn run<K: Dependent>(
    trigger: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    store: Store<K>,
    ctx: Arc<Context>,
) {
    Controller::for_stream(trigger, store)
        .graceful_shutdown_on(super::shutdown_signal())
        .run(reconcile::<K>, |_, _, _| super::retry_after_error(), ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile<K: Dependent>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.get_or_create(&super::metrics::KindLabel { kind: K::KIND.into() }).inc();
    let (ns, name) = obj.server();
    // The server is usually in the operator's cache; only a miss (not there yet, being deleted,
    // or in a namespace we do not watch) is confirmed through the API before reporting it.
    let server_ref = ObjectRef::<AuthorizationServer>::new(&name).within(&ns);
    let cached = ctx.stores.get().is_some_and(|stores| {
        stores.servers.iter().any(|s| s.get(&server_ref).is_some_and(|s| s.metadata.deletion_timestamp.is_none()))
    });
    if cached {
        return Ok(Action::await_change());
    }
    let servers: Api<AuthorizationServer> = Api::namespaced(ctx.client.clone(), &ns);
    let exists = servers.get_opt(&name).await?.is_some_and(|s| s.metadata.deletion_timestamp.is_none());
    if !exists {
        let message =
            format!("AuthorizationServer {ns}/{name} does not exist; this {} takes effect when it does", K::KIND);
        status::set_dependent(&ctx, &*obj, status::Acceptance::rejected("ServerNotFound", message)).await?;
        // The server's creation re-reconciles it through the server controller's watch.
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    Ok(Action::await_change())
}
