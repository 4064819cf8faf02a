//! The controllers: Containers (through their five stages) and ProxmoxNodes
//! (reachability), and what every reconcile shares.

mod container;
pub(crate) mod node;
mod slots;
pub(crate) mod sshkey;
mod vmids;

pub(crate) use slots::{NodeLimits, NodePermit};
pub(crate) use vmids::Vmids;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::events::Recorder;

use crate::metrics::Metrics;
use crate::progress::ProgressSink;
use crate::ssh::SshKeyPair;

/// Shared by every reconcile.
pub(crate) struct Context {
    pub client: kube::Client,
    pub metrics: Metrics,
    pub progress: Arc<dyn ProgressSink>,
    pub recorder: Recorder,
    pub ssh_key: SshKeyPair,
    pub ssh_public_key: String,
    pub node_limits: NodeLimits,
    /// How many Containers run pipeline stages at once (`--concurrency`).
    pub pipeline_slots: usize,
    pub timings: Timings,
    /// Transient failures in a row, per Container (by uid), for the backoff.
    pub failures: std::sync::Mutex<HashMap<String, Backoff>>,
    /// When each ProxmoxNode (by uid) was last checked, and at which
    /// generation: a Container's change wakes its node's reconcile, which
    /// must not ask Proxmox again each time.
    pub node_checks: std::sync::Mutex<HashMap<String, (Option<i64>, tokio::time::Instant)>>,
    /// When each Ready Container (by uid) was last compared with its guest,
    /// so a wake by a watch event does not ask Proxmox again each time.
    pub drift_checks: std::sync::Mutex<HashMap<String, tokio::time::Instant>>,
    /// One circuit breaker per Proxmox endpoint, shared by every client of
    /// it: a node that does not answer is tried about once per open period,
    /// however many Containers wait for it.
    pub breakers: std::sync::Mutex<HashMap<String, Arc<crate::proxmox::Breaker>>>,
    /// Told by a breaker when its node answers again.
    pub node_back: Arc<tokio::sync::Notify>,
    /// Vmids handed out and not created yet, so Containers created together
    /// do not all try the same one.
    pub vmids: Vmids,
}

impl Context {
    /// The circuit breaker of `endpoint`.
    pub fn breaker(&self, endpoint: &str) -> Arc<crate::proxmox::Breaker> {
        let mut breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let node_back = &self.node_back;
        breakers
            .entry(endpoint.to_owned())
            .or_insert_with(|| Arc::new(crate::proxmox::Breaker::notifying(node_back.clone())))
            .clone()
    }
}

/// The backoff of one Container after transient failures in a row.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    pub failures: u32,
    /// When the next attempt is due; `None` once something it depends on
    /// changed.
    pub until: Option<tokio::time::Instant>,
    /// What the user wanted at the last failure (see the Container
    /// controller's `wanted`).
    pub wanted: u64,
    /// Set when the failure was a Proxmox node that did not answer: the
    /// Container is woken when a node answers again.
    pub node_down: Option<kube::runtime::reflector::ObjectRef<crate::crd::Container>>,
}

/// Timings of the pipeline; tests shorten them.
#[derive(Clone, Debug)]
pub(crate) struct Timings {
    /// How often a Proxmox task is polled.
    pub task_poll: Duration,
    /// How long a Proxmox task may run.
    pub task_timeout: Duration,
    /// How long to wait for a DHCP address and for sshd to answer.
    pub boot_timeout: Duration,
    /// How long to wait before a reconcile that hit a transient fault runs
    /// again the first time; each further failure in a row doubles it.
    pub retry_backoff: Duration,
    /// The longest wait between two attempts.
    pub retry_backoff_max: Duration,
    /// How often a Ready Container is checked against its guest for drift
    /// (zero: never, only changes wake it).
    pub resync_interval: Duration,
}

impl Timings {
    /// The wait before attempt `failures + 1` after `failures` transient
    /// failures in a row: doubling from `retry_backoff` up to
    /// `retry_backoff_max`, with up to 20% jitter either way so Containers
    /// that failed together do not retry in lockstep.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doubled = self.retry_backoff.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        let base = doubled.min(self.retry_backoff_max);
        base.mul_f64(rand::random_range(0.8..=1.2))
    }

    /// The wait until a Ready Container's next drift check: the resync
    /// interval with up to 20% jitter either way, so Containers that became
    /// Ready together (or were all reconciled at a controller start) spread
    /// their checks over a fifth of the interval and more each round.
    pub fn next_resync(&self) -> Option<Duration> {
        (!self.resync_interval.is_zero()).then(|| self.resync_interval.mul_f64(rand::random_range(0.8..=1.2)))
    }
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            task_poll: Duration::from_millis(500),
            task_timeout: Duration::from_secs(600),
            boot_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(300),
            resync_interval: Duration::from_secs(300),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RunOptions {
    pub watch_namespace: Option<String>,
    pub concurrency: u16,
    /// Whether Secrets are watched for changes of template files' sources.
    pub watch_secrets: bool,
}

impl RunOptions {
    /// The objects of kind `K` this controller watches: in one namespace, or
    /// in all.
    pub fn watched<K>(&self, client: kube::Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match &self.watch_namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
}

/// Runs the Container and ProxmoxNode controllers until `shutdown` resolves;
/// reconciles in flight then finish before this returns.
pub(crate) async fn run(
    ctx: Arc<Context>,
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    tokio::join!(container::run(ctx.clone(), options.clone(), shutdown.clone()), node::run(ctx, options, shutdown),);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_wait_to_the_cap_with_jitter() {
        let timings = Timings::default();
        for (failures, base) in [(1, 1), (2, 2), (3, 4), (6, 32), (9, 256), (10, 300), (40, 300)] {
            let delay = timings.backoff(failures).as_secs_f64();
            let base = f64::from(base);
            assert!((base * 0.8..=base * 1.2).contains(&delay), "{failures}: {delay} s, around {base} s");
        }
    }
}
