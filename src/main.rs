use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Tessera: self-hosted, Okta-style custom authorization servers on Kubernetes.
#[derive(Parser)]
#[command(name = "tessera", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD into a directory.
    Crds {
        /// Write `<name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write them as Helm templates (gated by `crds.install`) into this directory.
        #[arg(long)]
        chart_dir: Option<PathBuf>,
    },
    /// Run the controllers that turn AuthorizationServers into issuer workloads.
    Operator(tessera::operator::OperatorArgs),
    /// Serve authorization servers straight from resource files, without a cluster.
    Serve(ServeArgs),
    /// Run the issuer of one server in a cluster, from its config and keys Secrets.
    Issuer(IssuerArgs),
    /// Show which policy and rule a token request matches, and the token's claims.
    Preview(PreviewArgs),
    /// Rotate the signing keys in `serve`'s state directory now (a running `serve` picks them up).
    Rotate(RotateArgs),
}

#[derive(clap::Args)]
struct RotateArgs {
    /// Resource files or directories, as given to `serve`.
    #[arg(short = 'f', long = "filename", default_value = "examples")]
    files: Vec<PathBuf>,
    #[arg(long, default_value = ".tessera", env = "TESSERA_STATE_DIR")]
    state_dir: PathBuf,
    /// The AuthorizationServer (`name` or `namespace/name`); default: every one in the files.
    #[arg(long)]
    server: Option<String>,
    /// Emergency: the signing key also leaves the JWKS at once (its tokens stop verifying).
    #[arg(long)]
    revoke: bool,
}

#[derive(clap::Args)]
struct IssuerArgs {
    #[arg(long, env = "TESSERA_NAMESPACE")]
    namespace: String,
    /// Name of the AuthorizationServer.
    #[arg(long, env = "TESSERA_SERVER")]
    server: String,
    #[arg(long, default_value = "0.0.0.0:8080", env = "TESSERA_LISTEN")]
    listen: SocketAddr,
    /// Serve HTTPS with `tls.crt` and `tls.key` from this directory (re-read every minute).
    #[arg(long, env = "TESSERA_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Redis URL (`redis://` or `rediss://`, password in the URL) for storage.type Redis.
    #[arg(long, env = "TESSERA_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    connections: tessera::listener::ConnectionLimits,
    /// Ceiling of the in-memory token store in MiB; beyond it the oldest pending sign-ins are dropped.
    #[arg(long, env = "TESSERA_MEMORY_STORE_LIMIT_MIB", default_value_t = tessera::store::DEFAULT_MEMORY_LIMIT_MIB)]
    memory_store_limit_mib: usize,
}

#[derive(clap::Args)]
struct PreviewArgs {
    /// Resource files or directories.
    #[arg(short = 'f', long = "filename", default_value = "examples")]
    files: Vec<PathBuf>,
    /// The AuthorizationServer, when the files hold several.
    #[arg(long)]
    server: Option<String>,
    #[arg(long)]
    client: String,
    /// client_credentials, token-exchange, ... (or the full URN).
    #[arg(long, default_value = "client_credentials")]
    grant_type: String,
    /// Requested scopes; none: the server's defaults.
    #[arg(long, num_args = 1..)]
    scope: Vec<String>,
    /// A JWT whose claims become `subject` (its signature is not checked by preview).
    #[arg(long)]
    subject_token: Option<PathBuf>,
    #[command(flatten)]
    user: tessera::standalone::preview::UserArgs,
}

fn read_subject(path: &std::path::Path) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    tessera::keys::jwt::peek(text.trim()).map(|j| j.claims).map_err(|e| format!("{}: {e}", path.display()))
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Resource files or directories (multi-document YAML).
    #[arg(short = 'f', long = "filename", default_value = "examples")]
    files: Vec<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:8080", env = "TESSERA_LISTEN")]
    listen: SocketAddr,
    /// Where keys and generated client secrets are kept.
    #[arg(long, default_value = ".tessera", env = "TESSERA_STATE_DIR")]
    state_dir: PathBuf,
    /// Serve HTTPS with `tls.crt` and `tls.key` from this directory.
    #[arg(long, env = "TESSERA_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Redis URL (`redis://` or `rediss://`, password in the URL) for storage.type Redis.
    #[arg(long, env = "TESSERA_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    connections: tessera::listener::ConnectionLimits,
    /// Ceiling of the in-memory token store in MiB; beyond it the oldest pending sign-ins are dropped.
    #[arg(long, env = "TESSERA_MEMORY_STORE_LIMIT_MIB", default_value_t = tessera::store::DEFAULT_MEMORY_LIMIT_MIB)]
    memory_store_limit_mib: usize,
    /// How often the resource files and key state are checked for changes, in seconds.
    #[arg(long, env = "TESSERA_RELOAD_INTERVAL", default_value_t = 2.0)]
    reload_interval: f64,
}

#[derive(clap::Args, Clone)]
struct TrustArgs {
    /// The cluster's ServiceAccount issuer (`iss` of projected tokens), for ServiceAccount clients.
    #[arg(long, env = "TESSERA_KUBERNETES_ISSUER")]
    kubernetes_issuer: Option<String>,
    /// Its JWKS URL; default: from its discovery document.
    #[arg(long, env = "TESSERA_KUBERNETES_JWKS_URI")]
    kubernetes_jwks_uri: Option<String>,
}

impl TrustArgs {
    fn options(&self) -> tessera::issuer::IssuerOptions {
        tessera::issuer::IssuerOptions {
            kubernetes_issuer: self.kubernetes_issuer.clone(),
            kubernetes_jwks_uri: self.kubernetes_jwks_uri.clone(),
            kube_client: None,
        }
    }
}

fn init_tracing() {
    tessera::telemetry::init();
}

/// mimalloc: a token request makes many small, short-lived allocations; glibc malloc was ~15%
/// of the issuer's CPU at peak, and mimalloc serves the same requests 5–10% faster
/// (BENCHMARKS.md). Built without transparent huge pages (`no_thp`): with them an idle issuer
/// held ~9 MiB more.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (the version libmimalloc-sys builds).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The operator returns freed memory to the OS at once. mimalloc's default delay (1 s) purges
/// only when the thread that freed the memory allocates again, so after a burst (1,000 new
/// servers) an operator that then idles kept ~3 MiB it no longer used; its allocation rate is
/// low enough that purging at once costs nothing measurable (BENCHMARKS.md).
fn purge_freed_memory_at_once() {
    // SAFETY: sets a process-wide allocator option; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}

/// What a long-running subcommand may still take after its drain timeout (the operator's
/// Lease release, say) before the process exits regardless.
const AFTER_DRAIN: Duration = Duration::from_secs(5);

/// Runs a long-running subcommand: the SIGTERM and SIGINT handlers first (as PID 1 nothing
/// else would stop the process), then `command`, which gets `drain_timeout` (and
/// `AFTER_DRAIN`) after a signal; a requested shutdown exits 0.
fn run_until_stopped<E: std::fmt::Display>(
    drain_timeout: Duration,
    command: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let outcome = rt.block_on(async {
        tessera::shutdown::listen_for_signals().map_err(|e| format!("installing signal handlers: {e}"))?;
        match tessera::shutdown::within_grace(command, drain_timeout + AFTER_DRAIN).await {
            Some(result) => result.map_err(|e| format!("{e:#}")),
            None => {
                tracing::warn!("still stopping past the drain timeout; exiting");
                Ok(())
            }
        }
    });
    // A blocking task (a DNS lookup, say) must not hold the exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    if tessera::plugin::invoked_as_plugin(std::env::args_os().next().as_deref()) {
        return tessera::plugin::main(std::env::args_os());
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { dir, chart_dir } => report(print_crds(dir.as_deref(), chart_dir.as_deref())),
        Command::Operator(args) => {
            tessera::telemetry::init();
            purge_freed_memory_at_once();
            run_until_stopped(args.connections.drain_timeout, tessera::operator::main(args))
        }
        Command::Serve(args) => {
            init_tracing();
            let options = tessera::standalone::ServeOptions {
                files: args.files,
                listen: args.listen,
                state_dir: args.state_dir,
                tls_dir: args.tls_dir,
                redis_url: args.redis_url,
                issuer: args.trust.options(),
                connections: args.connections,
                memory_store_limit: args.memory_store_limit_mib.saturating_mul(1 << 20),
                reload_interval: match std::time::Duration::try_from_secs_f64(args.reload_interval) {
                    Ok(d) if !d.is_zero() => d,
                    _ => return fail("--reload-interval must be a positive number of seconds"),
                },
            };
            run_until_stopped(options.connections.drain_timeout, tessera::standalone::serve(options))
        }
        Command::Issuer(args) => {
            init_tracing();
            let target = tessera::issuer::watch::IssuerRun {
                namespace: args.namespace,
                server: args.server,
                listen: args.listen,
                tls_dir: args.tls_dir,
                redis_url: args.redis_url,
                connections: args.connections,
                memory_store_limit: args.memory_store_limit_mib.saturating_mul(1 << 20),
            };
            let drain_timeout = target.connections.drain_timeout;
            run_until_stopped(drain_timeout, tessera::issuer::watch::run(target, args.trust.options()))
        }
        Command::Rotate(args) => {
            let options = tessera::standalone::RotateOptions {
                files: args.files,
                state_dir: args.state_dir,
                server: args.server,
                revoke: args.revoke,
            };
            match tessera::standalone::rotate(&options, jiff::Timestamp::now()) {
                Ok(lines) => {
                    for line in lines {
                        println!("{line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Preview(args) => {
            let subject = match args.subject_token.as_deref().map(read_subject).transpose() {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let request = tessera::standalone::preview::PreviewRequest {
                server: args.server,
                client_id: args.client,
                grant_type: args.grant_type,
                scopes: args
                    .scope
                    .iter()
                    .flat_map(|s| s.split(' '))
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                subject,
                user: args.user.user(),
            };
            match tessera::standalone::load(&args.files)
                .map_err(tessera::standalone::StandaloneError::from)
                .and_then(|m| tessera::standalone::preview::preview(&m, &request))
            {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("{e:#}")),
    }
}

type RenderCrd = fn(&CustomResourceDefinition) -> Result<String, serde_norway::Error>;

fn print_crds(dir: Option<&std::path::Path>, chart_dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    if dir.is_none() && chart_dir.is_none() {
        print!("{}", tessera::api::crds_yaml()?);
    }
    let targets: [(Option<&std::path::Path>, RenderCrd); 2] =
        [(dir, tessera::api::crd_yaml), (chart_dir, tessera::api::crd_chart_template)];
    for (dir, render) in targets {
        if let Some(dir) = dir {
            write_crds(dir, render)?;
        }
    }
    Ok(())
}

fn write_crds(dir: &std::path::Path, render: RenderCrd) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for crd in tessera::api::crds() {
        let path = dir.join(tessera::api::crd_file_name(&crd));
        std::fs::write(&path, render(&crd)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        // mimalloc v3 purges after 1,000 ms by default: no other option has that value.
        // SAFETY: reads a process-wide allocator option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000);
    }
}
