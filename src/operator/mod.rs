//! `tessera operator`: controllers that turn authorization servers into issuer workloads.
//!
//! Reconcile is a pipeline: read → validate → build (pure, in `children`) → apply
//! (server-side apply, field manager `tessera-operator`) → report status.

pub mod children;
mod client_secrets;
mod crash;
mod dependents;
pub mod metrics;
mod server;
mod status;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        Controller,
        events::{Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use tracing::{info, warn};

use crate::api::{AccessPolicy, AuthClaim, AuthClient, AuthScope, AuthorizationServer};

pub use children::{BuildContext, MANAGER};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0}")]
    Invalid(String),
    #[error("serializing {what}: {source}")]
    Serialize { what: &'static str, source: serde_json::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub build: BuildContext,
    pub metrics: Arc<metrics::Metrics>,
    pub recorder: Recorder,
    /// Namespaces watched; `None` means the whole cluster.
    pub namespaces: Option<Vec<String>>,
    /// resourceVersion of each child after our last apply, to tell writes from no-ops.
    applied_versions: std::sync::Mutex<std::collections::HashMap<String, Option<String>>>,
}

impl Context {
    pub fn new(client: Client, build: BuildContext, namespaces: Option<Vec<String>>) -> Self {
        let recorder = Recorder::new(client.clone(), Reporter { controller: MANAGER.into(), instance: None });
        Self { client, build, metrics: Arc::default(), recorder, namespaces, applied_versions: Default::default() }
    }

    /// Api handles for `K` in every watched namespace (one `all` handle cluster-wide).
    fn apis<K>(&self) -> Vec<Api<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespaces {
            None => vec![Api::all(self.client.clone())],
            Some(list) => list.iter().map(|ns| Api::namespaced(self.client.clone(), ns)).collect(),
        }
    }
}

/// Options of `tessera operator`.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    pub namespaces: Vec<String>,
    pub issuer_image: String,
    pub listen: SocketAddr,
    pub leader_election: bool,
    pub lease_namespace: String,
    pub identity: String,
}

fn server_of(namespace: Option<String>, server: &str) -> Option<ObjectRef<AuthorizationServer>> {
    Some(ObjectRef::new(server).within(&namespace?))
}

/// Runs the controllers until SIGTERM/SIGINT, as the leader when leader election is on.
pub async fn run(client: Client, opts: OperatorOptions) -> anyhow::Result<()> {
    let namespaces = (!opts.namespaces.is_empty()).then(|| opts.namespaces.clone());
    let ctx = Arc::new(Context::new(client.clone(), BuildContext { image: opts.issuer_image.clone() }, namespaces));
    let leading = Arc::new(std::sync::atomic::AtomicBool::new(!opts.leader_election));
    let health = status::serve_health(opts.listen, ctx.metrics.clone(), leading.clone());
    tokio::spawn(health);

    if opts.leader_election {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "tessera-operator")
            .with_namespace(&opts.lease_namespace)
            .with_identity(&opts.identity)
            .with_duration(15)
            .with_grace(5)
            .with_field_manager(MANAGER)
            .build()
            .await?;
        let (mut channel, task) = manager.watch().await;
        info!("waiting to become leader");
        while !*channel.borrow_and_update() {
            tokio::select! {
                changed = channel.changed() => changed?,
                _ = shutdown_signal() => return Ok(()),
            }
        }
        info!("leading");
        leading.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::select! {
            _ = run_controllers(ctx.clone()) => {}
            // Losing the lease ends the process: a new leader takes over and we restart clean.
            _ = async { while channel.changed().await.is_ok() && *channel.borrow() {} } => {
                warn!("lost leadership; exiting");
            }
        }
        drop(channel);
        let _ = task.await;
        return Ok(());
    }
    run_controllers(ctx).await;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run_controllers(ctx: Arc<Context>) {
    let wc = watcher::Config::default();
    let mut tasks = tokio::task::JoinSet::new();
    let scopes = match &ctx.namespaces {
        None => vec![None],
        Some(list) => list.iter().cloned().map(Some).collect(),
    };
    for ns in scopes {
        let api = |c: &Client| -> (Api<AuthorizationServer>, Api<AuthScope>, Api<AuthClaim>, Api<AccessPolicy>) {
            match &ns {
                None => (Api::all(c.clone()), Api::all(c.clone()), Api::all(c.clone()), Api::all(c.clone())),
                Some(ns) => (
                    Api::namespaced(c.clone(), ns),
                    Api::namespaced(c.clone(), ns),
                    Api::namespaced(c.clone(), ns),
                    Api::namespaced(c.clone(), ns),
                ),
            }
        };
        let (servers, scopes, claims, policies) = api(&ctx.client);
        let clients: Api<AuthClient> = match &ns {
            None => Api::all(ctx.client.clone()),
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        };
        let secrets: Api<Secret> = match &ns {
            None => Api::all(ctx.client.clone()),
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        };
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = match &ns {
            None => Api::all(ctx.client.clone()),
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        };
        let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=tessera-operator");
        // Secrets a server's spec.identity reads: metadata-only requests, so no Secret data is cached.
        let secret_metadata: Api<PartialObjectMeta<Secret>> = match &ns {
            None => Api::all(ctx.client.clone()),
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        };
        let servers_controller = Controller::new(servers, wc.clone());
        let known_servers = servers_controller.store();
        let mut servers_controller = servers_controller
            .owns(secrets, owned.clone())
            .watches(secret_metadata, wc.clone(), move |secret: PartialObjectMeta<Secret>| {
                let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
                server::servers_reading_secret(known_servers.state().iter().map(|s| &**s), &ns, &name)
            })
            .owns(deployments, owned)
            .watches(scopes.clone(), wc.clone(), |s: AuthScope| {
                server_of(s.metadata.namespace, &s.spec.server_ref.name)
            })
            .watches(claims.clone(), wc.clone(), |c: AuthClaim| {
                server_of(c.metadata.namespace, &c.spec.server_ref.name)
            })
            .watches(policies.clone(), wc.clone(), |p: AccessPolicy| {
                server_of(p.metadata.namespace, &p.spec.server_ref.name)
            })
            .graceful_shutdown_on(shutdown_signal());
        // Clients may live in any watched namespace, not only their server's.
        for clients in ctx.apis::<AuthClient>() {
            servers_controller = servers_controller.watches(clients, wc.clone(), |c: AuthClient| {
                server_of(Some(c.server_namespace()), &c.spec.server_ref.name)
            });
        }
        let servers_controller =
            servers_controller.run(server::reconcile, server::error_policy, ctx.clone()).for_each(|_| async {});
        tasks.spawn(servers_controller);
        tasks.spawn(dependents::run(scopes, ctx.clone()));
        tasks.spawn(dependents::run(claims, ctx.clone()));
        tasks.spawn(dependents::run(policies, ctx.clone()));
        tasks.spawn(dependents::run(clients, ctx.clone()));
    }
    tasks.join_all().await;
}

/// Requeue after an error, with a little back-off.
pub(crate) fn retry_after_error() -> kube::runtime::controller::Action {
    kube::runtime::controller::Action::requeue(Duration::from_secs(5))
}

/// Command-line options of `tessera operator`.
#[derive(clap::Args, Clone, Debug)]
pub struct OperatorArgs {
    /// Watch only these namespaces (repeatable); default: the whole cluster.
    #[arg(long = "namespace", short = 'n', env = "TESSERA_WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Image of the issuer pods (the same image as the operator's).
    #[arg(long, env = "TESSERA_ISSUER_IMAGE", default_value = concat!("tessera:", env!("CARGO_PKG_VERSION")))]
    pub issuer_image: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    /// Elect a leader through a Lease, so that only one replica writes.
    #[arg(long, env = "TESSERA_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (default: the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Path of a kubeconfig; default: in-cluster, then $KUBECONFIG, then ~/.kube/config.
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
}

/// A Kubernetes client from `--kubeconfig`, or the usual inference.
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

pub async fn main(args: OperatorArgs) -> anyhow::Result<()> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let identity = args.identity.clone().unwrap_or_else(|| format!("tessera-operator-{}", std::process::id()));
    run(
        client,
        OperatorOptions {
            namespaces: args.namespaces,
            issuer_image: args.issuer_image,
            listen: args.listen,
            leader_election: args.leader_elect,
            lease_namespace: args.lease_namespace,
            identity,
        },
    )
    .await
}
