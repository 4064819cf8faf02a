//! `infrahaus-operator run`: wiring only. Configuration, telemetry, the
//! controller's SSH key, the web server, leader election and the controller.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use kube::runtime::events::Recorder;

use crate::controller::{self, sshkey, Context, NodeLimits, RunOptions, Timings};
use crate::metrics::Metrics;
use crate::server::{self, Readiness};
use crate::shutdown::Shutdown;
use crate::telemetry::{self, LogFormat};
use crate::{k8s, progress};

/// How long in-flight reconciles may take to finish after SIGTERM; below
/// Kubernetes' default 30 s termination grace period. What is cut off resumes
/// from its recorded stage and task on the next start.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);
/// How long the events still queued for Redis may take to go out at exit.
const PROGRESS_FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Options of `infrahaus-operator run`; each is also an environment variable.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Redis URL for progress events (Pub/Sub and a replay stream). Without it
    /// the controller runs the same and publishes nothing.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// The PEM file of the CA that signed the certificate of a TLS Redis
    /// (`rediss://`), when the system's roots do not cover it.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Only reconcile Containers in this namespace (empty: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE", default_value = "")]
    pub watch_namespace: String,
    /// The Deployment (in the controller's namespace) that owns the SSH key
    /// Secret, so that deleting it deletes the key. Without it the key
    /// outlives the controller, and a controller installed again still
    /// reaches every guest.
    #[arg(long, env = "SSH_KEY_OWNER")]
    pub ssh_key_owner: Option<String>,
    /// How many Containers run pipeline stages (Create to Finalize) at once.
    /// Others wait for a slot without holding one; deletions, drift checks
    /// and configuration changes go on beside them.
    #[arg(long, env = "CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,
    /// How often a Ready Container is compared with its guest (one status
    /// and one config request to Proxmox, no SSH); drift is set back. With
    /// up to 20% jitter. `0s` turns the check off.
    #[arg(long, env = "RESYNC_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub resync_interval: std::time::Duration,
    /// How long a started guest may take to have an address and an sshd
    /// that answers; then its stage fails (reason SshUnreachable).
    #[arg(long, env = "BOOT_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub boot_timeout: std::time::Duration,
    /// Watch Secrets (metadata only), so a changed Secret behind a template
    /// file's `secretKeyRef` re-syncs its Containers at once; needs list and
    /// watch on Secrets. Without it the change is found at the next resync.
    #[arg(long, env = "WATCH_SECRETS")]
    pub watch_secrets: bool,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Reconcile only while holding the leader Lease, so several replicas can run.
    #[arg(long, env = "LEADER_ELECT")]
    pub leader_elect: bool,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format)?;
    let shutdown = Shutdown::on_signals().context("installing signal handlers")?;
    let client = kube::Client::try_default().await.context("no Kubernetes configuration (kubeconfig or in-cluster)")?;
    let namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string());

    let metrics = Metrics::new();
    let readiness = Readiness::new();
    let server = tokio::spawn(server::serve(args.metrics_addr, metrics.clone(), readiness.clone(), shutdown.wait()));

    let ssh_key = sshkey::ensure(client.clone(), &namespace, args.ssh_key_owner.as_deref())
        .await
        .with_context(|| format!("loading the SSH key from Secret {}/{}", namespace, sshkey::SECRET_NAME))?;
    let ssh_public_key = ssh_key.public_key_line().context("encoding the SSH public key")?;
    let progress = progress::progress_sink(args.redis_url.as_deref(), args.redis_ca_file.as_deref(), metrics.clone())
        .context("invalid --redis-url or --redis-ca-file")?;
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), k8s::reporter()),
        client: client.clone(),
        metrics,
        progress: progress.clone(),
        ssh_key,
        ssh_public_key,
        node_limits: NodeLimits::default(),
        timings: Timings {
            resync_interval: args.resync_interval,
            boot_timeout: args.boot_timeout,
            ..Timings::default()
        },
        failures: Default::default(),
        node_checks: Default::default(),
        drift_checks: Default::default(),
        breakers: Default::default(),
        node_back: Default::default(),
        vmids: Default::default(),
        pipeline_slots: usize::from(args.concurrency.max(1)),
    });
    let options = RunOptions {
        watch_namespace: Some(args.watch_namespace).filter(|ns| !ns.is_empty()),
        concurrency: args.concurrency,
        watch_secrets: args.watch_secrets,
    };

    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        namespace = %namespace,
        leader_elect = args.leader_elect,
        "infrahaus-operator starting"
    );
    if args.leader_elect {
        let on_shutdown = shutdown.clone();
        // The grace ends the controller, so the elector releases the Lease
        // before the pod's termination grace period runs out.
        crate::leader::run_as_leader(client, &namespace, readiness.clone(), shutdown.clone(), move |stop| async move {
            drain_with_grace(controller::run(ctx, options, stop), &on_shutdown).await
        })
        .await
        .context("leader election")?;
    } else {
        readiness.set_ready();
        drain_with_grace(controller::run(ctx, options, shutdown.wait()), &shutdown).await;
    }
    readiness.set_not_ready();
    // The last events of the reconciles that drained (their Ready or Error).
    progress.flush(PROGRESS_FLUSH_GRACE).await;
    shutdown.trigger();
    match server.await {
        Ok(result) => result.context("metrics server")?,
        Err(error) => return Err(error).context("metrics server task"),
    }
    tracing::info!("infrahaus-operator stopped");
    Ok(())
}

/// Lets reconciles in flight finish after shutdown, for at most
/// [`SHUTDOWN_GRACE`]; what is still running then is dropped and resumes from
/// its recorded stage in the next process.
async fn drain_with_grace(drained: impl std::future::Future<Output = ()>, shutdown: &Shutdown) {
    let grace = async {
        shutdown.wait().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = drained => {}
        () = grace => tracing::warn!(
            grace = ?SHUTDOWN_GRACE,
            "work still in flight at shutdown is handed back; it resumes from its recorded stage"
        ),
    }
}
