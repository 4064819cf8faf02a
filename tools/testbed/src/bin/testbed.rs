//! `testbed serve`: the test bed for people, the demo and benchmarks. Starts
//! the control plane, Redis and (optionally) pve-sim, writes their settings to
//! `<dir>/env` as shell exports, and runs until SIGTERM or SIGINT.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use testbed::{KubeEnv, KubeEnvOptions, PveSim, PveSimOptions, RedisServer};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start everything and keep it running until SIGTERM/SIGINT.
    Serve {
        /// Working directory (logs, data, kubeconfig, env file).
        #[arg(long)]
        dir: PathBuf,
        /// Also start pve-sim.
        #[arg(long)]
        pve_sim: bool,
    },
}

fn main() -> Result<()> {
    let Cli { command: Cmd::Serve { dir, pve_sim } } = Cli::parse();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let dir = dir.canonicalize()?;

    let kube = KubeEnv::start(&dir.join("kube"), KubeEnvOptions::default())?;
    let redis = RedisServer::start(&dir.join("redis"))?;
    let sim = if pve_sim { Some(PveSim::start_blocking(PveSimOptions::default())?) } else { None };

    let mut env = String::new();
    writeln!(env, "export KUBECONFIG={}", kube.kubeconfig.display())?;
    writeln!(env, "export REDIS_URL={}", redis.url)?;
    if let Some(sim) = &sim {
        writeln!(env, "export PVE_URL={}", sim.url)?;
        writeln!(env, "export PVE_NODE={}", sim.node)?;
        writeln!(env, "export PVE_FINGERPRINT={}", sim.fingerprint)?;
        writeln!(env, "export PVE_TOKEN_ID='{}'", sim.token_id)?;
        writeln!(env, "export PVE_TOKEN_SECRET='{}'", sim.token_secret)?;
    }
    let env_file = dir.join("env");
    std::fs::write(&env_file, &env)?;
    println!("test bed ready (kube-apiserver {} up in {:.1}s)", kube.version, kube.startup.as_secs_f64());
    print!("{env}");

    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })?;
    drop(sim);
    let _ = std::fs::remove_file(env_file);
    // Leaving through `exit` runs the harness's shutdown of every server.
    std::process::exit(0);
}
