//! `kubectl tessera`: the binary invoked as `kubectl-tessera` is a kubectl plugin that shows
//! a server's status, triggers key and client-secret rotation, and previews token requests
//! against the resources in the cluster.

mod cluster_preview;
mod status;

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

use crate::api::{AuthClient, AuthorizationServer};

pub use status::render_status;

pub use crate::api::{ROTATE_ANNOTATION, ROTATE_REVOKE_ANNOTATION};

/// Annotation that issues a new client secret, keeping the previous one for an overlap window.
pub const ROTATE_SECRET_ANNOTATION: &str = "tessera.dev/rotate-secret";

/// The name kubectl looks for on $PATH to run `kubectl tessera`.
pub const PLUGIN_BINARY: &str = "kubectl-tessera";

/// Operate Tessera authorization servers (kubectl plugin).
#[derive(Parser, Debug)]
#[command(name = "kubectl tessera", version)]
pub struct PluginArgs {
    /// Namespace of the object; default: the kubeconfig context's namespace.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Path of the kubeconfig; default: $KUBECONFIG, then ~/.kube/config, then in-cluster.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Conditions, endpoints, signing keys and clients of an AuthorizationServer.
    Status { server: String },
    /// Make the server's Next signing key Active now.
    Rotate {
        server: String,
        /// Emergency: also drop the current signing key from the JWKS at once.
        #[arg(long)]
        revoke: bool,
    },
    /// Issue a new secret for an AuthClient (the previous one stays valid for a while).
    RotateSecret { client: String },
    /// Which policy and rule a token request matches, and the token's claims, from the
    /// server's resources in the cluster.
    Preview(PreviewArgs),
}

#[derive(clap::Args, Debug)]
pub struct PreviewArgs {
    /// The AuthorizationServer (in --namespace).
    pub server: String,
    /// The client_id making the request.
    #[arg(long)]
    pub client: String,
    #[arg(long, default_value = "client_credentials")]
    pub grant_type: String,
    /// Requested scopes; none: the server's defaults.
    #[arg(long, num_args = 1..)]
    pub scope: Vec<String>,
    #[command(flatten)]
    pub user: crate::standalone::preview::UserArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Preview(#[from] crate::standalone::StandaloneError),
}

/// True when this process was started as `kubectl-tessera` (argv[0]'s file name).
pub fn invoked_as_plugin(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0.and_then(|a| std::path::Path::new(a).file_stem()).is_some_and(|stem| stem == PLUGIN_BINARY)
}

/// Entry point of the plugin: parses `args` (argv[0] included) and runs the command.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = PluginArgs::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn client(args: &PluginArgs) -> Result<(Client, String), PluginError> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| PluginError::Config(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| PluginError::Config(e.to_string()))?
        }
        None => kube::Config::infer().await.map_err(|e| PluginError::Config(e.to_string()))?,
    };
    let namespace = args.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}

/// Runs one plugin command; returns what it prints.
pub async fn run(args: PluginArgs) -> Result<String, PluginError> {
    let (client, ns) = client(&args).await?;
    let now = jiff::Timestamp::now();
    match &args.command {
        PluginCommand::Status { server } => {
            let servers: Api<AuthorizationServer> = Api::namespaced(client.clone(), &ns);
            let found = servers
                .get_opt(server)
                .await?
                .ok_or_else(|| PluginError::NotFound(format!("AuthorizationServer {ns}/{server} not found")))?;
            let clients = clients_of(&client, &ns, server).await?;
            Ok(render_status(&found, &clients, now))
        }
        PluginCommand::Rotate { server, revoke } => {
            let (key, effect) = if *revoke {
                (ROTATE_REVOKE_ANNOTATION, "the Next key becomes Active and the old key leaves the JWKS")
            } else {
                (ROTATE_ANNOTATION, "the Next key becomes Active")
            };
            annotate::<AuthorizationServer>(&client, &ns, server, key, now).await?;
            Ok(format!("authorizationserver/{server} annotated {key}={now}: {effect}\n"))
        }
        PluginCommand::RotateSecret { client: name } => {
            annotate::<AuthClient>(&client, &ns, name, ROTATE_SECRET_ANNOTATION, now).await?;
            Ok(format!("authclient/{name} annotated {ROTATE_SECRET_ANNOTATION}={now}: a new secret will be issued\n"))
        }
        PluginCommand::Preview(p) => cluster_preview::preview(&client, &ns, p).await,
    }
}

/// AuthClients that point at `ns/server`: all namespaces when we may list them, else `ns`.
async fn clients_of(client: &Client, ns: &str, server: &str) -> Result<Vec<AuthClient>, PluginError> {
    let all: Api<AuthClient> = Api::all(client.clone());
    let list = match all.list(&Default::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(e)) if e.code == 403 => {
            Api::<AuthClient>::namespaced(client.clone(), ns).list(&Default::default()).await?.items
        }
        Err(e) => return Err(e.into()),
    };
    Ok(list.into_iter().filter(|c| c.spec.server_ref.name == server && c.server_namespace() == ns).collect())
}

async fn annotate<K>(client: &Client, ns: &str, name: &str, key: &str, now: jiff::Timestamp) -> Result<(), PluginError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let patch = serde_json::json!({ "metadata": { "annotations": { key: now.to_string() } } });
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            Err(PluginError::NotFound(format!("{} {ns}/{name} not found", K::kind(&()))))
        }
        Err(e) => Err(e.into()),
    }
}
