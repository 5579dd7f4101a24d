//! The operator's watches: one shared watch (and cache) per kind and namespace, its changes
//! fanned out as triggers to the controllers that need them, and the wiring of each
//! controller's triggers.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::warn;

use super::{Context, applied, dependents, server, shutdown_signal};
use crate::api::{AccessPolicy, AuthClaim, AuthClient, AuthScope, AuthorizationServer};

fn server_of(namespace: Option<String>, server: &str) -> Option<ObjectRef<AuthorizationServer>> {
    Some(ObjectRef::new(server).within(&namespace?))
}

/// Trims what the operator never reads from a cached object: `managedFields` and kubectl's
/// last-applied copy are often larger than the object itself.
fn slim<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(a) = obj.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// One cached object, hashed (a map of 16,000 of these costs little).
fn object_key(meta: &kube::api::ObjectMeta) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&meta.namespace, &meta.name, &meta.uid).hash(&mut h);
    h.finish()
}

/// A hash of what a change must touch for a reconcile to care: the spec (through its
/// generation), labels, annotations (rotation requests), finalizers and deletion.
fn meaningful_fingerprint(meta: &kube::api::ObjectMeta) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.labels.hash(&mut h);
    meta.annotations.hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.deletion_timestamp.as_ref().map(|t| t.0.as_second()).hash(&mut h);
    h.finish()
}

/// One watch of `K` (slimmed into one store), its changes fanned out to `n` trigger streams:
/// every controller that needs `K` shares the watch and the cache instead of opening its own.
#[allow(clippy::type_complexity)]
fn shared_watch<K>(
    api: Api<K>,
    n: usize,
    mut modify: impl FnMut(&mut K) + Send + 'static,
    on_delete: impl Fn(&K) + Send + 'static,
) -> (Store<K>, futures::future::BoxFuture<'static, ()>, Vec<futures::channel::mpsc::UnboundedReceiver<K>>)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| futures::channel::mpsc::unbounded()).unzip();
    // What a reconcile reacts to, per object: status-only writes (most of them ours) wake nobody.
    let mut seen: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let modify = move |obj: &mut K| {
        slim(obj);
        modify(obj)
    };
    let driver = watcher(api, watcher::Config::default()).default_backoff().modify(modify).reflect(writer).for_each(
        move |event| {
            let send = |obj: &K| {
                for tx in &senders {
                    let _ = tx.unbounded_send(obj.clone());
                }
            };
            match event {
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                    let fingerprint = meaningful_fingerprint(obj.meta());
                    if seen.insert(object_key(obj.meta()), fingerprint) != Some(fingerprint) {
                        send(&obj);
                    }
                }
                Ok(watcher::Event::Delete(obj)) => {
                    seen.remove(&object_key(obj.meta()));
                    on_delete(&obj);
                    send(&obj);
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(e) => warn!(error = %e, kind = %K::kind(&()), "watch failed; retrying"),
            }
            std::future::ready(())
        },
    );
    (reader, futures::FutureExt::boxed(driver), receivers)
}

/// An owned-object watch of `K` (metadata only) as reconcile triggers: our own writes coming
/// back (the resourceVersion our write returned) wake nobody; any other change or a deletion
/// drops what `Applied` remembers of the object, so that the next reconcile writes it again.
fn owned_triggers<K>(
    events: impl futures::Stream<Item = Result<watcher::Event<PartialObjectMeta<K>>, watcher::Error>>,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>>
where
    K: k8s_openapi::Resource + Clone,
{
    events.filter_map(move |event| {
        let key = |o: &PartialObjectMeta<K>| {
            let meta = &o.metadata;
            applied::Key::new(
                K::KIND,
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default(),
            )
        };
        let out = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let spec = applied::spec_fingerprint(&o.metadata);
                (!ctx.applied.observed(&key(&o), o.metadata.resource_version.as_deref(), spec)).then_some(Ok(o))
            }
            Ok(watcher::Event::Delete(o)) => {
                ctx.applied.forget(&key(&o));
                Some(Ok(o))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        std::future::ready(out)
    })
}

/// Keeps `Context::existing` up to date from one owned-Secret watch.
fn track_existing(
    ctx: Arc<Context>,
) -> impl FnMut(&Result<watcher::Event<PartialObjectMeta<Secret>>, watcher::Error>) + Send + 'static {
    let mut listed = false;
    move |event| {
        let key = |o: &PartialObjectMeta<Secret>| {
            applied::Key::new(
                "Secret",
                o.metadata.namespace.as_deref().unwrap_or_default(),
                o.metadata.name.as_deref().unwrap_or_default(),
            )
        };
        match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => ctx.existing.seen(key(o), true),
            Ok(watcher::Event::Delete(o)) => ctx.existing.seen(key(o), false),
            Ok(watcher::Event::InitDone) if !listed => {
                listed = true;
                ctx.existing.listed();
            }
            _ => {}
        }
    }
}

/// Caches a dependent without its status, keeping only the status fingerprint (`Statuses`).
fn without_status<K: dependents::Dependent>(ctx: &Arc<Context>) -> impl FnMut(&mut K) + Send + 'static {
    let ctx = ctx.clone();
    move |obj| ctx.statuses.take(obj)
}

fn forget_status<K: dependents::Dependent>(ctx: &Arc<Context>) -> impl Fn(&K) + Send + 'static {
    let ctx = ctx.clone();
    move |obj| ctx.statuses.forget(obj)
}

fn as_trigger<K>(
    rx: futures::channel::mpsc::UnboundedReceiver<K>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> {
    rx.map(Ok)
}

type Rx<K> = futures::channel::mpsc::UnboundedReceiver<K>;

fn scoped_api<K>(c: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        None => Api::all(c.clone()),
        Some(ns) => Api::namespaced(c.clone(), ns),
    }
}

/// A dependent kind's shared watch in one namespace: its cache, the trigger of the server
/// controller and the trigger of the kind's own controller.
struct DependentWatch<K: dependents::Dependent> {
    store: Store<K>,
    to_server: Rx<K>,
    to_own: Rx<K>,
}

impl<K: dependents::Dependent> DependentWatch<K> {
    fn start(ctx: &Arc<Context>, ns: &Option<String>, watches: &mut tokio::task::JoinSet<()>) -> Self {
        let (store, driver, mut rx) =
            shared_watch(scoped_api::<K>(&ctx.client, ns), 2, without_status(ctx), forget_status(ctx));
        watches.spawn(driver);
        let to_server = rx.remove(0);
        Self { store, to_server, to_own: rx.remove(0) }
    }
}

/// The shared watches of one namespace, but for its clients (see `run_controllers`).
struct NamespaceWatches {
    ns: Option<String>,
    servers: (Store<AuthorizationServer>, Rx<AuthorizationServer>),
    scopes: DependentWatch<AuthScope>,
    claims: DependentWatch<AuthClaim>,
    policies: DependentWatch<AccessPolicy>,
}

impl NamespaceWatches {
    fn start(ctx: &Arc<Context>, ns: &Option<String>, watches: &mut tokio::task::JoinSet<()>) -> Self {
        let (servers, servers_driver, mut servers_rx) =
            shared_watch(scoped_api::<AuthorizationServer>(&ctx.client, ns), 1, |_| {}, |_| {});
        watches.spawn(servers_driver);
        Self {
            ns: ns.clone(),
            servers: (servers, servers_rx.remove(0)),
            scopes: DependentWatch::start(ctx, ns, watches),
            claims: DependentWatch::start(ctx, ns, watches),
            policies: DependentWatch::start(ctx, ns, watches),
        }
    }
}

pub(super) async fn run_controllers(ctx: Arc<Context>) {
    let mut tasks = tokio::task::JoinSet::new();
    // The shared watches feed the controllers and never end by themselves: they stop with them.
    let mut watches = tokio::task::JoinSet::new();
    let scopes: Vec<Option<String>> = match &ctx.namespaces {
        None => vec![None],
        Some(list) => list.iter().cloned().map(Some).collect(),
    };
    // Clients may live in any watched namespace, not only their server's: every namespace's
    // client watch feeds every server controller (and its own dependents controller).
    let mut client_triggers: Vec<Vec<_>> = (0..scopes.len()).map(|_| Vec::new()).collect();
    let mut client_dependents = Vec::new();
    let mut stores = Stores::default();
    for ns in &scopes {
        let api = scoped_api::<AuthClient>(&ctx.client, ns);
        let (store, driver, mut rx) = shared_watch(api, scopes.len() + 1, without_status(&ctx), forget_status(&ctx));
        watches.spawn(driver);
        client_dependents.push((store.clone(), rx.remove(0)));
        for (i, r) in rx.into_iter().enumerate() {
            client_triggers[i].push(r);
        }
        stores.clients.push(store);
    }
    let per_ns: Vec<NamespaceWatches> =
        scopes.iter().map(|ns| NamespaceWatches::start(&ctx, ns, &mut watches)).collect();
    for w in &per_ns {
        stores.servers.push(w.servers.0.clone());
        stores.scopes.push(w.scopes.store.clone());
        stores.claims.push(w.claims.store.clone());
        stores.policies.push(w.policies.store.clone());
    }
    if ctx.stores.set(stores).is_err() {
        warn!("controllers started twice");
        return;
    }
    ctx.existing.expect(per_ns.len());
    for (w, client_rx) in per_ns.into_iter().zip(client_triggers) {
        let (scopes, claims, policies) = (w.scopes.to_server, w.claims.to_server, w.policies.to_server);
        tasks.spawn(server_controller(&ctx, w.ns, w.servers, scopes, claims, policies, client_rx));
        tasks.spawn(dependents::run(as_trigger(w.scopes.to_own), w.scopes.store, ctx.clone()));
        tasks.spawn(dependents::run(as_trigger(w.claims.to_own), w.claims.store, ctx.clone()));
        tasks.spawn(dependents::run(as_trigger(w.policies.to_own), w.policies.store, ctx.clone()));
    }
    for (store, rx) in client_dependents {
        tasks.spawn(dependents::run(as_trigger(rx), store, ctx.clone()));
    }
    tasks.spawn(dependents::reports::run(ctx.clone()));
    tasks.join_all().await;
    watches.abort_all();
}

/// The AuthorizationServer controller of one namespace: woken by its servers, their owned
/// children, the Secrets their `spec.identity` reads and every dependent that points at them.
fn server_controller(
    ctx: &Arc<Context>,
    ns: Option<String>,
    (servers, servers_rx): (Store<AuthorizationServer>, Rx<AuthorizationServer>),
    scopes: Rx<AuthScope>,
    claims: Rx<AuthClaim>,
    policies: Rx<AccessPolicy>,
    client_rx: Vec<Rx<AuthClient>>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let client = &ctx.client;
    // Owned children only wake the server up: their metadata is enough.
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=tessera-operator");
    let secrets =
        watcher(scoped_api::<PartialObjectMeta<k8s_openapi::api::core::v1::Secret>>(client, &ns), owned.clone());
    let deployments =
        watcher(scoped_api::<PartialObjectMeta<k8s_openapi::api::apps::v1::Deployment>>(client, &ns), owned);
    // Secrets a server's spec.identity reads: metadata-only requests, so no Secret data is cached.
    let identity_secrets = watcher(scoped_api::<PartialObjectMeta<Secret>>(client, &ns), watcher::Config::default());
    let known_servers = servers.clone();
    // A burst of changes to one server (it and its dependents applied together) becomes one
    // reconcile; a bounded number run at once, so 1,000 new servers do not flood the API.
    let config = kube::runtime::controller::Config::default().debounce(Duration::from_millis(50)).concurrency(16);
    let mut controller = Controller::for_stream(as_trigger(servers_rx), servers)
        .with_config(config)
        .owns_stream(owned_triggers(secrets.default_backoff().inspect(track_existing(ctx.clone())), ctx.clone()))
        .watches_stream(
            identity_secrets.default_backoff().touched_objects(),
            move |secret: PartialObjectMeta<Secret>| {
                let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
                server::servers_reading_secret(known_servers.state().iter().map(|s| &**s), &ns, &name)
            },
        )
        .owns_stream(owned_triggers(deployments.default_backoff(), ctx.clone()))
        .watches_stream(as_trigger(scopes), |s: AuthScope| server_of(s.metadata.namespace, &s.spec.server_ref.name))
        .watches_stream(as_trigger(claims), |c: AuthClaim| server_of(c.metadata.namespace, &c.spec.server_ref.name))
        .watches_stream(as_trigger(policies), |p: AccessPolicy| {
            server_of(p.metadata.namespace, &p.spec.server_ref.name)
        })
        .graceful_shutdown_on(shutdown_signal());
    for rx in client_rx {
        controller = controller.watches_stream(as_trigger(rx), |c: AuthClient| {
            server_of(Some(c.server_namespace()), &c.spec.server_ref.name)
        });
    }
    controller.run(server::reconcile, server::error_policy, ctx.clone()).for_each(|_| async {})
}

/// The operator's caches of the objects that point at servers, one store per watched namespace
/// (or one for the cluster), read by each server reconcile instead of listing through the API.
#[derive(Default)]
pub(crate) struct Stores {
    pub servers: Vec<Store<AuthorizationServer>>,
    pub scopes: Vec<Store<AuthScope>>,
    pub claims: Vec<Store<AuthClaim>>,
    pub policies: Vec<Store<AccessPolicy>>,
    pub clients: Vec<Store<AuthClient>>,
}
