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
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD into a directory.
    Crds {
        /// Write `<name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Run the controllers that turn AuthorizationServers into issuer workloads.
    Operator(tessera::operator::OperatorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { dir } => report(print_crds(dir.as_deref())),
        Command::Operator(args) => report(run_async(tessera::operator::main(args))),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an async subcommand on a multi-threaded runtime, with JSON logs on stderr.
fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tessera::telemetry::init();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(fut)
}

fn print_crds(dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    match dir {
        None => print!("{}", tessera::api::crds_yaml()?),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in tessera::api::crds() {
                let path = dir.join(tessera::api::crd_file_name(&crd));
                std::fs::write(&path, tessera::api::crd_yaml(&crd)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}
