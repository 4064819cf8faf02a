//! Leader election against a real API server: one replica at a time runs
//! the controller, and a standby takes over when the leader dies or leaves.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use infrahaus_operator::leader::{LeaderElectionConfig, LeaderElector, LeaderError, DEFAULT_LEASE_NAME};
use infrahaus_operator::shutdown::Shutdown;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;

/// Which replicas run their controller right now.
#[derive(Default)]
struct Replicas {
    running: Mutex<Vec<String>>,
    most_at_once: AtomicUsize,
}

/// Marks a replica as running for as long as its controller future lives.
struct RunningGuard {
    replicas: Arc<Replicas>,
    identity: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Ok(mut running) = self.replicas.running.lock() {
            running.retain(|identity| identity != &self.identity);
        }
    }
}

impl Replicas {
    fn running(&self) -> Vec<String> {
        self.running.lock().map(|running| running.clone()).unwrap_or_default()
    }

    fn enter(self: &Arc<Self>, identity: &str) -> RunningGuard {
        if let Ok(mut running) = self.running.lock() {
            running.push(identity.to_owned());
            self.most_at_once.fetch_max(running.len(), Ordering::SeqCst);
        }
        RunningGuard { replicas: self.clone(), identity: identity.to_owned() }
    }

    /// A controller that runs until `stop` resolves.
    fn controller(
        self: &Arc<Self>,
        identity: &str,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        let replicas = self.clone();
        let identity = identity.to_owned();
        move || {
            Box::pin(async move {
                let _guard = replicas.enter(&identity);
                stop.await;
            })
        }
    }

    async fn wait_until_running(&self, identity: &str, within: Duration) -> Result<Duration> {
        let started = Instant::now();
        while self.running() != [identity] {
            ensure!(
                started.elapsed() < within,
                "{identity} did not become the only running replica within {within:?}; running: {:?}",
                self.running()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(started.elapsed())
    }
}

fn config(namespace: &str, identity: &str, duration: u64, renew: u64) -> LeaderElectionConfig {
    LeaderElectionConfig {
        identity: identity.to_owned(),
        lease_duration: Duration::from_secs(duration),
        renew_interval: Duration::from_secs(renew),
        ..LeaderElectionConfig::new(namespace)
    }
}

async fn setup(prefix: &str) -> Result<(Client, String)> {
    let client = testbed::kube().await?.client().await?;
    let namespace = testbed::unique_namespace(&client, prefix).await?;
    Ok((client, namespace))
}

#[tokio::test]
async fn a_dead_leader_is_replaced_once_its_lease_expires() -> Result<()> {
    let (client, namespace) = setup("leader-death").await?;
    let replicas = Arc::new(Replicas::default());

    let a = LeaderElector::new(client.clone(), config(&namespace, "replica-a", 4, 1)).await?;
    let task_a = tokio::spawn(a.run(std::future::pending(), replicas.controller("replica-a", std::future::pending())));
    replicas.wait_until_running("replica-a", Duration::from_secs(20)).await?;

    let b = LeaderElector::new(client.clone(), config(&namespace, "replica-b", 4, 1)).await?;
    let task_b = tokio::spawn(b.run(std::future::pending(), replicas.controller("replica-b", std::future::pending())));
    // Longer than a lease duration: the leader's renewals keep B waiting.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(replicas.running(), ["replica-a"]);

    // Aborting the task drops A without releasing the Lease, as a crash would.
    task_a.abort();
    let died = Instant::now();
    ensure!(task_a.await.is_err_and(|error| error.is_cancelled()), "replica A was not aborted");
    replicas.wait_until_running("replica-b", Duration::from_secs(20)).await?;
    let takeover = died.elapsed();
    println!("replica B took over {takeover:?} after replica A died (lease 4s, renewed every 1s)");
    assert!(takeover >= Duration::from_secs(2), "B took over before A's Lease expired: {takeover:?}");
    assert!(takeover < Duration::from_secs(10), "{takeover:?}");
    assert_eq!(replicas.most_at_once.load(Ordering::SeqCst), 1);

    let lease = Api::<Lease>::namespaced(client, &namespace).get(DEFAULT_LEASE_NAME).await?;
    let holder = lease.spec.and_then(|spec| spec.holder_identity);
    assert_eq!(holder.as_deref(), Some("replica-b"));
    task_b.abort();
    Ok(())
}

#[tokio::test]
async fn a_graceful_shutdown_hands_the_lease_over_at_once() -> Result<()> {
    let (client, namespace) = setup("leader-handover").await?;
    let replicas = Arc::new(Replicas::default());
    // A long lease: without the release, B would wait up to ten seconds.
    let lease = |identity| config(&namespace, identity, 10, 2);

    let shutdown_a = Shutdown::new();
    let a = LeaderElector::new(client.clone(), lease("replica-a")).await?;
    let task_a = tokio::spawn(a.run(shutdown_a.wait(), replicas.controller("replica-a", shutdown_a.wait())));
    replicas.wait_until_running("replica-a", Duration::from_secs(20)).await?;

    let shutdown_b = Shutdown::new();
    let b = LeaderElector::new(client.clone(), lease("replica-b")).await?;
    let task_b = tokio::spawn(b.run(shutdown_b.wait(), replicas.controller("replica-b", shutdown_b.wait())));
    let shutdown_c = Shutdown::new();
    let c = LeaderElector::new(client.clone(), lease("replica-c")).await?;
    let task_c = tokio::spawn(c.run(shutdown_c.wait(), replicas.controller("replica-c", shutdown_c.wait())));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(replicas.running(), ["replica-a"]);

    shutdown_a.trigger();
    let released = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), task_a).await.context("A did not stop")???;
    let next = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let [only] = replicas.running().as_slice() {
                return only.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .context("no standby took over after the release")?;
    let handover = released.elapsed();
    println!("{next} took over {handover:?} after replica A released the Lease (lease 10s)");
    assert!(handover < Duration::from_secs(4), "{handover:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(replicas.running(), std::slice::from_ref(&next));
    assert_eq!(replicas.most_at_once.load(Ordering::SeqCst), 1);

    // The standby ends on shutdown without ever running its controller.
    let (leader, standby, leader_task, standby_task) = if next == "replica-b" {
        (shutdown_b, shutdown_c, task_b, task_c)
    } else {
        (shutdown_c, shutdown_b, task_c, task_b)
    };
    standby.trigger();
    tokio::time::timeout(Duration::from_secs(5), standby_task).await.context("the standby did not stop")???;
    assert_eq!(replicas.running(), [next]);
    leader.trigger();
    tokio::time::timeout(Duration::from_secs(10), leader_task).await.context("the leader did not stop")???;
    assert!(replicas.running().is_empty());

    let lease = Api::<Lease>::namespaced(client, &namespace).get(DEFAULT_LEASE_NAME).await?;
    assert_eq!(lease.spec.and_then(|spec| spec.holder_identity), None);
    Ok(())
}

#[tokio::test]
async fn a_leader_that_loses_its_lease_stops_its_controller() -> Result<()> {
    let (client, namespace) = setup("leader-lost").await?;
    let replicas = Arc::new(Replicas::default());
    let a = LeaderElector::new(client.clone(), config(&namespace, "replica-a", 4, 1)).await?;
    let task_a = tokio::spawn(a.run(std::future::pending(), replicas.controller("replica-a", std::future::pending())));
    replicas.wait_until_running("replica-a", Duration::from_secs(20)).await?;

    // Another holder appears (a replica with a badly skewed clock, say).
    let patch = serde_json::json!({"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 60}});
    Api::<Lease>::namespaced(client, &namespace)
        .patch(DEFAULT_LEASE_NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let outcome = tokio::time::timeout(Duration::from_secs(10), task_a).await.context("A kept running")??;
    assert!(matches!(outcome, Err(LeaderError::Lost)), "{outcome:?}");
    assert!(replicas.running().is_empty());
    Ok(())
}
