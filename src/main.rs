use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use infrahaus_operator::crd;
use infrahaus_operator::dashboard::{self, DashboardArgs};
use infrahaus_operator::run::{self, RunArgs};
use infrahaus_operator::watch::{self, WatchArgs};

/// Kubernetes operator that creates and configures Proxmox VE LXC containers.
#[derive(Debug, Parser)]
#[command(name = "infrahaus-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as one multi-document YAML stream.
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Follow one Container's progress until it is Ready (exit 0) or in Error (exit 1).
    Watch(WatchArgs),
    /// Serve the dashboard: the Container list, each Container's progress as
    /// Server-Sent Events, and a web page.
    Dashboard(DashboardArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            tokio::runtime::Runtime::new().context("starting the async runtime")?.block_on(run::run(args))
        }
        Command::Crds { output_dir } => print_crds(output_dir),
        Command::Watch(args) => std::process::exit(watch::main(args)),
        Command::Dashboard(args) => {
            tokio::runtime::Runtime::new().context("starting the async runtime")?.block_on(dashboard::run(args))
        }
    }
}

fn print_crds(output_dir: Option<PathBuf>) -> anyhow::Result<()> {
    match output_dir {
        None => {
            print!("{}", crd::crd_yaml().context("serialising the CRDs to YAML")?);
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for definition in crd::crds() {
                let path = dir.join(crd::crd_file_name(&definition));
                let yaml = crd::crd_document(&definition)
                    .with_context(|| format!("serialising {} to YAML", definition.spec.names.kind))?;
                std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}
