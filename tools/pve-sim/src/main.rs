//! pve-sim: a Proxmox VE API simulator whose containers are real Linux
//! namespaces running OpenSSH. See the crate README for usage.

mod api;
mod ctconfig;
mod ctinit;
mod faults;
mod hostkeys;
mod requests;
mod runtime;
mod schema;
mod sim;
mod tls;
mod upid;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use hyper_util::rt::TokioIo;
use tokio::signal::unix::{signal, SignalKind};

const DEFAULT_TEMPLATES: &[&str] =
    &["local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", "local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz"];

#[derive(Parser, Debug)]
#[command(name = "pve-sim", version, about = "Proxmox VE API simulator with real namespace containers")]
struct Cli {
    /// Loopback address to serve HTTPS on (port 0 picks a free port).
    #[arg(long)]
    listen: SocketAddr,
    /// The node name used in API paths and UPIDs.
    #[arg(long, default_value = "pve1")]
    node: String,
    /// Accepted API token, `USER@REALM!NAME=SECRET`; may repeat.
    #[arg(long = "token", required = true)]
    tokens: Vec<String>,
    /// User for `POST /access/ticket`, `USER@REALM:PASSWORD`; may repeat.
    #[arg(long = "user")]
    users: Vec<String>,
    /// Directory for containers' files and the certificate.
    #[arg(long)]
    state_dir: PathBuf,
    /// Where to write the server certificate (default `<state-dir>/pve-ssl.pem`).
    #[arg(long)]
    cert_out: Option<PathBuf>,
    /// Serve this certificate (PEM) instead of a generated one.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Loopback network `ip=dhcp` leases addresses from.
    #[arg(long, default_value = "127.0.100.0/24")]
    ip_pool: String,
    /// Minimum duration of every task.
    #[arg(long, default_value_t = 0)]
    task_duration_ms: u64,
    /// Minimum duration of one task type, `TYPE=MS` (e.g. `vzcreate=2000`); may repeat.
    #[arg(long = "task-duration")]
    task_durations: Vec<String>,
    /// How long a task or config update waits for a held CT lock before failing.
    #[arg(long, default_value_t = 10_000)]
    lock_timeout_ms: u64,
    /// Extra `vztmpl` volume offered by storage `local`, e.g. `local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst`.
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Delay requests, `[METHOD ]PATH_REGEX=MS`; may repeat.
    #[arg(long = "latency")]
    latencies: Vec<String>,
    /// Fail requests, `[METHOD ]PATH_REGEX=COUNT:STATUS:MESSAGE`; may repeat.
    #[arg(long = "fail-request")]
    fail_requests: Vec<String>,
    /// Carry out requests but close the connection instead of answering,
    /// `[METHOD ]PATH_REGEX=COUNT`; may repeat.
    #[arg(long = "drop-response")]
    drop_responses: Vec<String>,
    /// Make the next task of a type fail, `TYPE=MESSAGE`; may repeat.
    #[arg(long = "fail-task")]
    fail_tasks: Vec<String>,
    /// Make the next task of a type end with N warnings, `TYPE=N`; may repeat.
    #[arg(long = "warn-task")]
    warn_tasks: Vec<String>,
    /// Guests exist in the API and the task engine only: no root filesystem,
    /// namespace, sshd or host keys (cheap enough to hold thousands).
    #[arg(long)]
    api_only_guests: bool,
    /// Keep N sets of SSH host keys generated in the background for creates
    /// to take (0: every create generates its own).
    #[arg(long, default_value_t = 0)]
    host_key_pool: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("ct-init") {
        let ct_args = ctinit::CtInitArgs::parse_from(&args[1..]);
        std::process::exit(ctinit::run(ct_args));
    }
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "pve_sim=info".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread().enable_all().build().map(|rt| rt.block_on(serve(cli)));
    match result {
        Ok(Ok(())) => std::process::exit(0),
        Ok(Err(e)) => {
            tracing::error!("{e:#}");
            std::process::exit(1);
        }
        Err(e) => {
            tracing::error!("tokio runtime: {e}");
            std::process::exit(1);
        }
    }
}

fn parse_tokens(specs: &[String]) -> Result<HashMap<String, String>> {
    specs
        .iter()
        .map(|spec| {
            let (id, secret) = spec.split_once('=').context("--token must be USER@REALM!NAME=SECRET")?;
            if !id.contains('@') || !id.contains('!') || secret.is_empty() {
                bail!("--token must be USER@REALM!NAME=SECRET, got '{id}=...'");
            }
            Ok((id.to_string(), secret.to_string()))
        })
        .collect()
}

fn parse_users(specs: &[String]) -> Result<HashMap<String, String>> {
    specs
        .iter()
        .map(|spec| {
            let (user, password) = spec.split_once(':').context("--user must be USER@REALM:PASSWORD")?;
            if !user.contains('@') {
                bail!("--user must be USER@REALM:PASSWORD");
            }
            Ok((user.to_string(), password.to_string()))
        })
        .collect()
}

fn build_faults(cli: &Cli) -> Result<faults::Faults> {
    let err = |e: String| anyhow::anyhow!(e);
    let mut f = faults::Faults { default_duration: Duration::from_millis(cli.task_duration_ms), ..Default::default() };
    for spec in &cli.latencies {
        f.latencies.push(faults::parse_latency(spec).map_err(err)?);
    }
    for spec in &cli.fail_requests {
        f.failures.push(faults::parse_fail_request(spec).map_err(err)?);
    }
    for spec in &cli.drop_responses {
        f.drops.push(faults::parse_drop_response(spec).map_err(err)?);
    }
    for spec in &cli.fail_tasks {
        f.task_rules.push(faults::parse_fail_task(spec).map_err(err)?);
    }
    for spec in &cli.warn_tasks {
        f.task_rules.push(faults::parse_warn_task(spec).map_err(err)?);
    }
    for spec in &cli.task_durations {
        let (task_type, duration) = faults::parse_task_duration(spec).map_err(err)?;
        f.durations.insert(task_type, duration);
    }
    Ok(f)
}

async fn serve(cli: Cli) -> Result<()> {
    if !cli.listen.ip().is_loopback() {
        bail!("refusing to listen on {}: pve-sim serves loopback addresses only", cli.listen);
    }
    if cli.api_only_guests && cli.host_key_pool > 0 {
        tracing::warn!("--host-key-pool has no effect with --api-only-guests: guests have no host keys");
    }
    if !cli.api_only_guests && !std::path::Path::new("/usr/sbin/sshd").exists() {
        tracing::warn!("/usr/sbin/sshd is missing: containers will not start (install openssh-server)");
    }
    std::fs::create_dir_all(&cli.state_dir).with_context(|| format!("create {}", cli.state_dir.display()))?;
    let state_dir = cli.state_dir.canonicalize()?;
    let identity = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => tls::load(cert, key)?,
        _ => {
            let (cert, key) = tls::self_signed(&cli.node)?;
            tls::identity(cert, &key)?
        }
    };
    let cert_out = cli.cert_out.clone().unwrap_or_else(|| state_dir.join("pve-ssl.pem"));
    std::fs::write(&cert_out, &identity.cert_pem).with_context(|| format!("write {}", cert_out.display()))?;
    let cert_out = cert_out.canonicalize()?;

    let pool = ctconfig::Ipv4Pool::parse(&cli.ip_pool).map_err(|e| anyhow::anyhow!(e))?;
    let mut templates: Vec<String> = DEFAULT_TEMPLATES.iter().map(|t| t.to_string()).collect();
    templates.extend(cli.templates.iter().cloned());
    let auth = Arc::new(api::Auth::new(parse_tokens(&cli.tokens)?, parse_users(&cli.users)?));
    let sim = sim::Sim::new(
        sim::SimConfig {
            node: cli.node.clone(),
            state_dir,
            pool,
            pool_cidr: cli.ip_pool.clone(),
            lock_timeout: Duration::from_millis(cli.lock_timeout_ms),
            templates,
            fingerprint: identity.fingerprint.clone(),
            api_only_guests: cli.api_only_guests,
            host_key_pool: cli.host_key_pool,
        },
        build_faults(&cli)?,
    )?;

    let listener = tokio::net::TcpListener::bind(cli.listen).await.with_context(|| format!("bind {}", cli.listen))?;
    let local = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config.clone());
    println!("pve-sim ready url=https://{local} fingerprint={} cert={}", identity.fingerprint, cert_out.display());
    std::io::stdout().flush()?;
    tracing::info!(%local, node = %cli.node, "serving the Proxmox VE API");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let sim = sim.clone();
                let auth = auth.clone();
                tokio::spawn(async move {
                    let tls = match acceptor.accept(stream).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            tracing::debug!(%peer, "TLS handshake: {e}");
                            return;
                        }
                    };
                    let service = hyper::service::service_fn(move |req| api::handle(sim.clone(), auth.clone(), req));
                    if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await {
                        tracing::debug!(%peer, "connection: {e}");
                    }
                });
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("stopping all containers");
    sim.shutdown().await;
    Ok(())
}
