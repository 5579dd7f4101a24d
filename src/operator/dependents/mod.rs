//! Scopes, claims, policies and clients: the objects that point at a server. Their own
//! controller only reports those whose server does not exist (`Accepted=False,
//! reason=ServerNotFound`); everything else about them is decided by their server's reconcile
//! and reported through `reports`.

mod kinds;
pub mod reports;
pub mod status;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
};

use super::{Context, Error};
use crate::api::{AccessPolicy, AuthClaim, AuthClient, AuthScope, AuthorizationServer};

pub use kinds::Dependent;

/// Everything that points at one server.
#[derive(Clone, Debug, Default)]
pub struct Dependents {
    pub scopes: Vec<AuthScope>,
    pub claims: Vec<AuthClaim>,
    pub policies: Vec<AccessPolicy>,
    pub clients: Vec<AuthClient>,
}

impl Dependents {
    /// The dependents of server `ns/name`, from the operator's caches (a reconcile runs only
    /// once they are set).
    pub async fn of(ctx: &Context, ns: &str, name: &str) -> Result<Self, Error> {
        let stores = ctx.stores.get().ok_or(Error::CachesNotReady)?;
        Ok(Self {
            scopes: from_stores(&stores.scopes, ns, name).await?,
            claims: from_stores(&stores.claims, ns, name).await?,
            policies: from_stores(&stores.policies, ns, name).await?,
            clients: from_stores(&stores.clients, ns, name).await?,
        })
    }
}

/// The objects of `stores` that point at server `ns/name`.
async fn from_stores<K: Dependent>(stores: &[Store<K>], ns: &str, name: &str) -> Result<Vec<K>, Error> {
    let mut out = Vec::new();
    for store in stores {
        store.wait_until_ready().await.map_err(|source| Error::CacheClosed { kind: K::KIND, source })?;
        out.extend(store.state().into_iter().filter(|o| o.belongs_to(ns, name)).map(|o| (*o).clone()));
    }
    // The API lists by name; keep that order (the compiled config does not depend on it).
    out.sort_by_key(|o| (o.namespace(), o.name_any()));
    Ok(out)
}

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
        status::set_dependent(&ctx, &*obj, status::Acceptance::rejected(status::SERVER_NOT_FOUND, message)).await?;
        // The server's creation re-reconciles it through the server controller's watch.
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    Ok(Action::await_change())
}
