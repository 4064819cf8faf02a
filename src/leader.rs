//! `--leader-elect`: only the replica holding a Lease reconciles.
//!
//! A replica waits as a standby until it acquires the Lease, then runs the
//! controller while renewing it. When shutdown is requested the controller
//! winds down (finishing or handing back in-flight work) and the Lease is
//! released, so a standby takes over at once. A replica that dies without
//! releasing is replaced once its Lease expires (about one lease duration).
//!
//! Losing the Lease while leading is not recovered in-process: the
//! controller is dropped and [`LeaderElector::run`] returns an error, so the
//! process exits non-zero and Kubernetes restarts it as a fresh standby.
//! Waiting again in the same process would be possible, but any task the
//! controller spawned could outlive the dropped future and keep acting next
//! to the new leader; a restart guarantees that nothing of the old term
//! survives, and every stage is resumable, so the restart loses nothing.
//! For the same reason a failed renewal counts as a loss: after it, this
//! replica can no longer prove that nobody else has taken over.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseManagerError, LeaseParams};

use crate::server::Readiness;
use crate::shutdown::Shutdown;

/// The Lease all replicas compete for, in the controller's namespace.
pub const DEFAULT_LEASE_NAME: &str = "infrahaus-operator-leader";

/// How long a Lease stays valid after its last renewal.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// How often the leader renews its Lease.
pub const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_secs(5);

/// Bounds of the wait between attempts while the API server is unreachable.
const STANDBY_RETRY_MIN: Duration = Duration::from_secs(1);
const STANDBY_RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    pub lease_name: String,
    pub namespace: String,
    /// Unique among replicas; shown as the Lease's holder.
    pub identity: String,
    /// Whole seconds; a Lease records its duration in seconds.
    pub lease_duration: Duration,
    /// Whole seconds, shorter than `lease_duration`.
    pub renew_interval: Duration,
}

impl LeaderElectionConfig {
    /// The defaults in `namespace`, with this process's identity.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            lease_name: DEFAULT_LEASE_NAME.to_owned(),
            namespace: namespace.into(),
            identity: default_identity(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_interval: DEFAULT_RENEW_INTERVAL,
        }
    }

    fn params(&self) -> Result<LeaseParams, LeaderError> {
        let duration = self.lease_duration.as_secs();
        let renew = self.renew_interval.as_secs();
        if renew == 0 || renew >= duration {
            return Err(LeaderError::InvalidConfig(format!(
                "the renew interval ({renew}s) must be at least 1s and shorter than the lease duration ({duration}s)"
            )));
        }
        if self.identity.is_empty() {
            return Err(LeaderError::InvalidConfig("the identity is empty".to_owned()));
        }
        // The lease manager renews `grace` seconds before expiry, so the
        // renew interval is the duration minus the grace.
        Ok(LeaseParams::new(self.identity.clone(), duration, duration - renew))
    }
}

/// `<hostname>-<pid>`: the pod name in a cluster, and still unique for
/// several processes on one machine.
pub fn default_identity() -> String {
    let hostname = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "infrahaus-operator".to_owned());
    format!("{hostname}-{}", std::process::id())
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("invalid leader election settings: {0}")]
    InvalidConfig(String),
    #[error(
        "cannot create or read the Lease {namespace}/{name}; the service account needs get, list, watch, create and patch on leases"
    )]
    Setup {
        namespace: String,
        name: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error("another replica took the Lease; stopped reconciling")]
    Lost,
    #[error("cannot renew the Lease; stopped reconciling as another replica may take over")]
    Renew(#[source] LeaseManagerError),
}

/// Runs a controller only while this replica holds the Lease.
pub struct LeaderElector {
    client: Client,
    config: LeaderElectionConfig,
    params: LeaseParams,
    manager: LeaseManager,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector").field("config", &self.config).finish_non_exhaustive()
    }
}

enum Standby {
    Acquired,
    Unchanged,
    Failed(LeaseManagerError),
    LeaseReleased,
    Shutdown,
}

impl LeaderElector {
    /// Validates the settings and creates the Lease if it does not exist.
    pub async fn new(client: Client, config: LeaderElectionConfig) -> Result<Self, LeaderError> {
        let params = config.params()?;
        let manager = new_manager(&client, &config, &params).await?;
        Ok(Self { client, config, params, manager })
    }

    /// Waits for the Lease, then runs the future built by `controller` while
    /// renewing the Lease.
    ///
    /// `shutdown` ends the wait; once leading, the controller is expected to
    /// observe shutdown itself and end, after which the Lease is released and
    /// `Ok` returned. Losing the Lease drops the controller and returns an
    /// error (see the module documentation for why the process should exit).
    pub async fn run<F, Fut>(self, shutdown: impl Future<Output = ()>, controller: F) -> Result<(), LeaderError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        let Self { client, config, params, manager } = self;
        let Some(manager) = wait_for_lease(&client, &config, &params, manager, shutdown).await? else {
            return Ok(());
        };
        tracing::info!(
            identity = %config.identity,
            lease = %config.lease_name,
            namespace = %config.namespace,
            "acquired the Lease; reconciling"
        );
        let controller = controller();
        tokio::pin!(controller);
        loop {
            tokio::select! {
                () = &mut controller => break,
                changed = manager.changed() => match changed {
                    Ok(true) => {}
                    Ok(false) => return Err(LeaderError::Lost),
                    Err(error) => return Err(LeaderError::Renew(error)),
                },
            }
        }
        match manager.release().await {
            Ok(()) => tracing::info!(identity = %config.identity, "released the Lease"),
            Err(error) => tracing::warn!(
                %error,
                "could not release the Lease; a standby takes over once it expires"
            ),
        }
        Ok(())
    }
}

/// The future a controller receives to learn that it should wind down.
pub type StopSignal = std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>>;

/// `--leader-elect` in one call: stands by in `namespace` with the default
/// settings (ready for `/readyz` from then on), and once elected runs
/// `controller`, which receives the shutdown signal to wind down on.
pub async fn run_as_leader<F, Fut>(
    client: Client,
    namespace: &str,
    readiness: Readiness,
    shutdown: Shutdown,
    controller: F,
) -> Result<(), LeaderError>
where
    F: FnOnce(StopSignal) -> Fut,
    Fut: Future<Output = ()>,
{
    let elector = LeaderElector::new(client, LeaderElectionConfig::new(namespace)).await?;
    // A standby is a healthy replica: it is ready to take over.
    readiness.set_ready();
    let stop = shutdown.clone();
    elector.run(shutdown.wait(), move || controller(Box::pin(stop.wait()))).await
}

/// Returns the manager once it holds the Lease, or `None` on shutdown.
async fn wait_for_lease(
    client: &Client,
    config: &LeaderElectionConfig,
    params: &LeaseParams,
    mut manager: LeaseManager,
    shutdown: impl Future<Output = ()>,
) -> Result<Option<LeaseManager>, LeaderError> {
    tokio::pin!(shutdown);
    // The lease manager sleeps until the holder's Lease would expire; a
    // watch on the Lease notices a graceful release (or deletion) at once,
    // and a fresh manager re-reads the Lease.
    let api = Api::<Lease>::namespaced(client.clone(), &config.namespace);
    let selector = format!("metadata.name={}", config.lease_name);
    let lease_events = watcher(api, watcher::Config::default().fields(&selector)).default_backoff();
    tokio::pin!(lease_events);
    let mut retry = STANDBY_RETRY_MIN;
    tracing::info!(identity = %config.identity, lease = %config.lease_name, "waiting for the Lease");
    loop {
        let step = tokio::select! {
            () = &mut shutdown => Standby::Shutdown,
            changed = manager.changed() => match changed {
                Ok(true) => Standby::Acquired,
                Ok(false) => Standby::Unchanged,
                Err(error) => Standby::Failed(error),
            },
            Some(event) = lease_events.next() => match event {
                Ok(event) if lease_is_free(&event) => Standby::LeaseReleased,
                _ => Standby::Unchanged,
            },
        };
        match step {
            Standby::Acquired => return Ok(Some(manager)),
            Standby::Unchanged => {}
            Standby::Shutdown => return Ok(None),
            Standby::LeaseReleased => match new_manager(client, config, params).await {
                Ok(fresh) => manager = fresh,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot re-read the Lease; keep waiting")
                }
            },
            Standby::Failed(error) => {
                tracing::warn!(%error, retry_seconds = retry.as_secs(), "cannot check the Lease; retrying");
                tokio::select! {
                    () = &mut shutdown => return Ok(None),
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(STANDBY_RETRY_MAX);
                continue;
            }
        }
        retry = STANDBY_RETRY_MIN;
    }
}

async fn new_manager(
    client: &Client,
    config: &LeaderElectionConfig,
    params: &LeaseParams,
) -> Result<LeaseManager, LeaderError> {
    LeaseManager::new(
        client.clone(),
        &config.lease_name,
        &config.namespace,
        params.clone(),
        LeaseCreateMode::AutoCreate,
    )
    .await
    .map_err(|source| LeaderError::Setup {
        namespace: config.namespace.clone(),
        name: config.lease_name.clone(),
        source,
    })
}

/// Whether a Lease event shows the Lease without a holder (or gone).
fn lease_is_free(event: &watcher::Event<Lease>) -> bool {
    match event {
        watcher::Event::Apply(lease) | watcher::Event::InitApply(lease) => {
            lease.spec.as_ref().and_then(|spec| spec.holder_identity.as_ref()).is_none()
        }
        watcher::Event::Delete(_) => true,
        watcher::Event::Init | watcher::Event::InitDone => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;

    fn config(duration: u64, renew: u64) -> LeaderElectionConfig {
        LeaderElectionConfig {
            lease_duration: Duration::from_secs(duration),
            renew_interval: Duration::from_secs(renew),
            ..LeaderElectionConfig::new("default")
        }
    }

    #[test]
    fn durations_are_checked() {
        let cases = [(15, 5, true), (2, 1, true), (5, 5, false), (5, 0, false), (1, 3, false)];
        for (duration, renew, valid) in cases {
            assert_eq!(config(duration, renew).params().is_ok(), valid, "{duration}s/{renew}s");
        }
        let anonymous = LeaderElectionConfig { identity: String::new(), ..config(15, 5) };
        assert!(anonymous.params().is_err());
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = LeaderElectionConfig::new("infrahaus-system");
        assert_eq!(config.lease_name, "infrahaus-operator-leader");
        assert_eq!(config.lease_duration, Duration::from_secs(15));
        assert_eq!(config.renew_interval, Duration::from_secs(5));
        assert!(config.identity.ends_with(&format!("-{}", std::process::id())), "{}", config.identity);
    }

    #[test]
    fn a_lease_without_holder_is_free() {
        let lease = |holder: Option<&str>| Lease {
            spec: Some(LeaseSpec { holder_identity: holder.map(str::to_owned), ..LeaseSpec::default() }),
            ..Lease::default()
        };
        let cases = [
            (watcher::Event::Apply(lease(Some("a-1"))), false),
            (watcher::Event::Apply(lease(None)), true),
            (watcher::Event::InitApply(lease(None)), true),
            (watcher::Event::Apply(Lease::default()), true),
            (watcher::Event::Delete(lease(Some("a-1"))), true),
            (watcher::Event::Init, false),
            (watcher::Event::InitDone, false),
        ];
        for (event, free) in cases {
            assert_eq!(lease_is_free(&event), free, "{event:?}");
        }
    }
}
