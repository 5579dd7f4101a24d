use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tessera: self-hosted, Okta-style custom authorization servers on Kubernetes.
#[derive(Parser)]
#[command(name = "tessera", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Serve authorization servers straight from resource files, without a cluster.
    Serve(ServeArgs),
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
    #[command(flatten)]
    trust: TrustArgs,
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
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => match tessera::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            init_tracing();
            let options = tessera::standalone::ServeOptions {
                files: args.files,
                listen: args.listen,
                state_dir: args.state_dir,
                issuer: args.trust.options(),
            };
            match runtime().map(|rt| rt.block_on(tessera::standalone::serve(options))) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => fail(e),
                Err(e) => fail(e),
            }
        }
    }
}
