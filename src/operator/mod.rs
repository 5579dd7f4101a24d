//! `tessera operator`: controllers that turn authorization servers into issuer workloads.
//!
//! A server's reconcile is a pipeline (`server`): read → decide (pure) → write (`write`,
//! server-side apply, field manager `tessera-operator`; the objects built by `children`) →
//! report (`dependents::reports`).

mod applied;
pub mod children;
mod client_secrets;
mod crash;
mod dependents;
mod health;
pub mod metrics;
mod server;
mod watches;
mod write;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use kube::{Api, Client, Resource};
use tracing::{info, warn};

pub use children::{BuildContext, MANAGER};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
    #[error("serializing {what}: {source}")]
    Serialize { what: &'static str, source: serde_json::Error },
    #[error("Secret {namespace}/{name} does not hold a valid key set: {source}")]
    InvalidKeySet { namespace: String, name: String, source: crate::keys::KeyError },
    #[error("signing keys: {0}")]
    Keys(#[from] crate::keys::KeyError),
    #[error("Secret {namespace}/{name} exists without {key}")]
    ClientSecretMissing { namespace: String, name: String, key: &'static str },
    #[error("{kind} cache: {source}")]
    CacheClosed { kind: &'static str, source: kube::runtime::reflector::store::WriterDropped },
    #[error("the operator's caches are not set up yet")]
    CachesNotReady,
}

impl Error {
    /// The variant's name: the `reason` label of `reconcile_errors`.
    pub fn reason(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            Self::Kube(_) => "Kube",
            Self::Finalizer(e) => match e.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.reason(),
                _ => "Finalizer",
            },
            Self::Serialize { .. } => "Serialize",
            Self::InvalidKeySet { .. } => "InvalidKeySet",
            Self::Keys(_) => "Keys",
            Self::ClientSecretMissing { .. } => "ClientSecretMissing",
            Self::CacheClosed { .. } => "CacheClosed",
            Self::CachesNotReady => "CachesNotReady",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub build: BuildContext,
    pub metrics: Arc<metrics::Metrics>,
    /// Namespaces watched; `None` means the whole cluster.
    pub namespaces: Option<Vec<String>>,
    /// What we last wrote to each child: skips writes and reads that would change nothing.
    applied: applied::Applied,
    /// The managed Secrets that exist: one absent is created without a read first.
    existing: applied::Existing,
    /// Status fingerprints of the dependents, whose statuses the caches do not keep.
    statuses: dependents::status::Statuses,
    /// Dependents' statuses waiting to be written, after their servers' configs.
    reports: dependents::reports::Reports,
    /// Caches of scopes, claims, policies and clients, once the controllers run.
    stores: std::sync::OnceLock<watches::Stores>,
}

impl Context {
    pub fn new(client: Client, build: BuildContext, namespaces: Option<Vec<String>>) -> Self {
        let metrics: Arc<metrics::Metrics> = Arc::default();
        let reports = dependents::reports::Reports::default();
        metrics.register_gauge(
            "status_reports_pending",
            "Status reports of scopes, claims, policies and clients not written yet",
            reports.gauge.clone(),
        );
        Self {
            client,
            build,
            metrics,
            namespaces,
            applied: Default::default(),
            existing: Default::default(),
            statuses: Default::default(),
            reports,
            stores: Default::default(),
        }
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
    /// Timeouts and the connection limit of the metrics and health listener.
    pub connections: crate::listener::ConnectionLimits,
}

/// Runs the controllers until SIGTERM/SIGINT, as the leader when leader election is on.
pub async fn run(client: Client, opts: OperatorOptions) -> anyhow::Result<()> {
    let namespaces = (!opts.namespaces.is_empty()).then(|| opts.namespaces.clone());
    let ctx = Arc::new(Context::new(client.clone(), BuildContext { image: opts.issuer_image.clone() }, namespaces));
    let leading = Arc::new(std::sync::atomic::AtomicBool::new(!opts.leader_election));
    let health = health::serve_health(opts.listen, opts.connections, ctx.metrics.clone(), leading.clone());
    tokio::spawn(health);

    let drain_timeout = opts.connections.drain_timeout;
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
            _ = until_drained(watches::run_controllers(ctx.clone()), drain_timeout) => {}
            // Losing the lease ends the process: a new leader takes over and we restart clean.
            _ = async { while channel.changed().await.is_ok() && *channel.borrow() {} } => {
                warn!("lost leadership; exiting");
            }
        }
        // Closing the channel makes the lease manager release the Lease: a standby takes over
        // now instead of when the Lease expires.
        drop(channel);
        match tokio::time::timeout(LEASE_RELEASE_TIMEOUT, task).await {
            Ok(Ok(Ok(_))) => info!("lease released"),
            Ok(Ok(Err(e))) => warn!(error = %e, "releasing the lease failed; it expires by itself"),
            Ok(Err(_)) | Err(_) => warn!("releasing the lease did not finish; it expires by itself"),
        }
        return Ok(());
    }
    until_drained(watches::run_controllers(ctx), drain_timeout).await;
    Ok(())
}

/// Time the Lease release may take on shutdown, within what `tessera operator` has after its drain.
const LEASE_RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs the controllers; after a shutdown request, their reconciles in flight get `drain_timeout`.
async fn until_drained(controllers: impl std::future::Future<Output = ()>, drain_timeout: Duration) {
    if crate::shutdown::within_grace(controllers, drain_timeout).await.is_none() {
        warn!("reconciles still running at the drain timeout; stopping them");
    }
}

/// SIGTERM or SIGINT (`crate::shutdown`).
async fn shutdown_signal() {
    crate::shutdown::requested().await
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
    #[command(flatten)]
    pub connections: crate::listener::ConnectionLimits,
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
            connections: args.connections,
        },
    )
    .await
}
