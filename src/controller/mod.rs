//! The controllers: Containers (through their five stages) and ProxmoxNodes
//! (reachability), and what every reconcile shares.

mod container;
pub(crate) mod node;
pub(crate) mod sshkey;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::events::Recorder;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

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
    pub timings: Timings,
    /// Transient failures in a row, per Container (by uid), for the backoff.
    pub failures: std::sync::Mutex<HashMap<String, u32>>,
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
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            task_poll: Duration::from_millis(500),
            task_timeout: Duration::from_secs(600),
            boot_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(300),
        }
    }
}

/// One semaphore per ProxmoxNode, sized by its `maxConcurrentOperations`.
#[derive(Default)]
pub(crate) struct NodeLimits {
    semaphores: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
}

impl NodeLimits {
    pub async fn acquire(&self, key: &str, limit: usize) -> Option<OwnedSemaphorePermit> {
        let limit = limit.max(1);
        let semaphore = {
            let mut map = self.semaphores.lock().await;
            let entry = map.entry(key.to_string()).or_insert_with(|| (limit, Arc::new(Semaphore::new(limit))));
            if entry.0 != limit {
                resize(&entry.1, entry.0, limit).await;
                entry.0 = limit;
            }
            entry.1.clone()
        };
        semaphore.acquire_owned().await.ok()
    }
}

/// Moves a node's semaphore from `old` to `new` permits in all. Permits held
/// under the old limit stay counted: a lower limit forgets free permits now
/// and absorbs the rest as they are released, ahead of new waiters (tokio's
/// semaphore is fair), so the cap holds while a limit changes.
async fn resize(semaphore: &Arc<Semaphore>, old: usize, new: usize) {
    if new > old {
        semaphore.add_permits(new - old);
        return;
    }
    let excess = old - new;
    let owed = excess - semaphore.forget_permits(excess);
    let Ok(owed @ 1..) = u32::try_from(owed) else { return };
    let mut absorb = Box::pin(semaphore.clone().acquire_many_owned(owed));
    // The first poll queues it now, ahead of every later waiter.
    match futures::poll!(&mut absorb) {
        std::task::Poll::Ready(permits) => permits.into_iter().for_each(OwnedSemaphorePermit::forget),
        std::task::Poll::Pending => {
            tokio::spawn(async move {
                if let Ok(permits) = absorb.await {
                    permits.forget();
                }
            });
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RunOptions {
    pub watch_namespace: Option<String>,
    pub concurrency: u16,
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

    #[tokio::test]
    async fn node_limits_cap_concurrent_operations_per_node() {
        let limits = NodeLimits::default();
        let first = limits.acquire("ns/pve1", 2).await;
        let second = limits.acquire("ns/pve1", 2).await;
        assert!(first.is_some() && second.is_some());
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), limits.acquire("ns/pve1", 2)).await;
        assert!(third.is_err(), "a third operation on the node waits");
        let other = tokio::time::timeout(std::time::Duration::from_millis(50), limits.acquire("ns/pve2", 2)).await;
        assert!(other.is_ok_and(|p| p.is_some()), "another node has its own limit");
        drop(first);
        let after = tokio::time::timeout(std::time::Duration::from_millis(50), limits.acquire("ns/pve1", 2)).await;
        assert!(after.is_ok_and(|p| p.is_some()), "a released permit is reused");
    }

    #[tokio::test]
    async fn a_changed_limit_counts_the_permits_taken_under_the_old_one() {
        let wait = std::time::Duration::from_millis(50);
        let limits = Arc::new(NodeLimits::default());
        let first = limits.acquire("ns/pve1", 2).await;
        let second = limits.acquire("ns/pve1", 2).await;
        let lowered = {
            let limits = limits.clone();
            tokio::spawn(async move { limits.acquire("ns/pve1", 1).await })
        };
        tokio::time::sleep(wait).await;
        assert!(!lowered.is_finished(), "a third operation while two run, under a limit of 1");
        drop(first);
        tokio::time::sleep(wait).await;
        assert!(!lowered.is_finished(), "two at once under a limit of 1");
        drop(second);
        let permit = tokio::time::timeout(wait * 10, lowered).await.expect("in time").expect("join");
        assert!(permit.is_some(), "one operation once the others ended");

        // Raising the limit again frees room at once.
        let more = tokio::time::timeout(wait, limits.acquire("ns/pve1", 3)).await;
        assert!(more.is_ok_and(|p| p.is_some()), "a raised limit admits more");
    }
}
