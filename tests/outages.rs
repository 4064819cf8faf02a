//! Outages of a counterpart in the middle of a batch: the kube-apiserver
//! stopped for 30 s (on a control plane of the test's own, started again on
//! the same etcd), and Proxmox answering 596 to every request for 2 minutes.
//! Containers wait, the request rate during the Proxmox outage is bounded
//! (printed), and afterwards the batch completes with every invariant of the
//! crash campaign.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::chaos::{settle, violations};
use crate::support;

use reqwest::Method;
use serde_json::json;
use support::fixtures::{container, template};
use support::World;

const BATCH: usize = 6;

async fn apply_batch(world: &World, prefix: &str) -> BTreeSet<String> {
    world.apply(template("web", false)).await.expect("template");
    let names: BTreeSet<String> = (0..BATCH).map(|i| format!("{prefix}-{i}")).collect();
    for name in &names {
        world.apply(container(name, "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    }
    names
}

async fn assert_completes(world: &World, kept: &BTreeSet<String>) {
    let gone = BTreeSet::new();
    settle(world, kept, &gone).await;
    let violations = violations(world, kept, &gone).await;
    assert!(violations.is_empty(), "{violations:#?}\n{}", world.controller_logs());
}

#[tokio::test]
async fn the_api_server_stopped_for_30_seconds_mid_batch() {
    let mut world = World::isolated("outage-api").await.expect("world");
    let controller = world.start_controller(&[]).expect("controller");
    let names = apply_batch(&world, "api").await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let stopped = Instant::now();
    world.kube.stop_apiserver();
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Start-up waits with blocking I/O: off the test's runtime.
    let kube = world.kube;
    tokio::task::spawn_blocking(move || kube.start_apiserver())
        .await
        .expect("join")
        .expect("the API server starts again");
    let survived = world.controller(controller).is_running();
    println!(
        "kube-apiserver down for {:.0} s in a batch of {BATCH}: the controller {}",
        stopped.elapsed().as_secs_f64(),
        if survived { "kept running" } else { "exited and was started again" }
    );
    if !survived {
        let log = world.controller(controller).log_tail(200);
        assert!(!log.contains("panicked"), "the controller panicked:\n{log}");
        world.start_controller(&[]).expect("restart");
    }
    assert_completes(&world, &names).await;
}

#[tokio::test]
async fn proxmox_answering_596_for_two_minutes_holds_the_batch_and_bounds_the_requests() {
    const OUTAGE: Duration = Duration::from_secs(120);
    let mut world = World::new("outage-pve").await.expect("world");
    world.start_controller(&[]).expect("controller");
    let names = apply_batch(&world, "pve").await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let fault = json!({"path": ".*", "count": u32::MAX, "status": 596, "message": "Connection timed out"});
    world.sim_admin(Method::POST, "/sim/fail", fault).await.expect("outage");
    let (reads, writes) = world.sim_requests().await.expect("requests");
    tokio::time::sleep(OUTAGE).await;
    let (reads_after, writes_after) = world.sim_requests().await.expect("requests");
    world.sim_admin(Method::POST, "/sim/reset", json!({})).await.expect("outage over");

    let requests = (reads_after - reads) + (writes_after - writes);
    let per_second = requests as f64 / OUTAGE.as_secs_f64();
    println!(
        "Proxmox answering 596 for {} s: {requests} requests from {BATCH} Containers, {per_second:.2}/s in all, {:.3}/s per Container",
        OUTAGE.as_secs(),
        per_second / BATCH as f64
    );
    // The backoff doubles to minutes: far below one request per second per
    // Container once it has grown.
    assert!(per_second / (BATCH as f64) < 1.0, "{per_second:.2} requests/s during the outage");
    let back = Instant::now();
    assert_completes(&world, &names).await;
    println!("the batch settled {:.1} s after Proxmox answered again", back.elapsed().as_secs_f64());
}

/// Applies one Container while pve-sim's SSH port behaves as `fault` says,
/// and returns the Ready condition's reason, the status message of the
/// Error it ends in and the SSH sessions the controller opened.
async fn ssh_fault_error(prefix: &str, fault: serde_json::Value, file_bytes: usize) -> (String, String, f64) {
    let mut world = World::new(prefix).await.expect("world");
    world.sim_admin(Method::POST, "/sim/ssh-fault", fault).await.expect("ssh fault");
    let controller = world.start_controller(&["--boot-timeout=10s"]).expect("controller");
    let mut web = template("web", false);
    web["spec"]["files"][1]["content"] = json!("x".repeat(file_bytes));
    world.apply(web).await.expect("template");
    world.apply(container(prefix, "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    let started = Instant::now();
    let ct = world.wait_phase(prefix, infrahaus_operator::crd::Phase::Error, Duration::from_secs(120)).await;
    let status = ct.expect("Error").status.expect("status");
    let reason = infrahaus_operator::crd::conditions::find_condition(&status.conditions, "Ready")
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    let message = status.message.unwrap_or_default();
    let sessions = world.controller_metric(controller, "infrahaus_ssh_sessions_total").await.expect("metrics");
    println!(
        "{prefix}: Error after {:.1} s ({reason}), {sessions} SSH sessions: {message:.200}",
        started.elapsed().as_secs_f64()
    );
    (reason, message, sessions)
}

#[tokio::test]
async fn a_container_whose_sshd_never_starts_is_an_error_after_the_boot_timeout() {
    let (reason, message, _) = ssh_fault_error("ssh-none", json!({"mode": "none"}), 16).await;
    assert_eq!(reason, "SshUnreachable");
    assert!(message.starts_with("deploying failed: gave up connecting to"), "{message}");
}

#[tokio::test]
async fn an_ssh_port_that_never_answers_is_an_error_after_the_boot_timeout() {
    let (reason, message, _) = ssh_fault_error("ssh-silent", json!({"mode": "silent"}), 16).await;
    assert_eq!(reason, "SshUnreachable");
    assert!(message.starts_with("deploying failed: gave up connecting to"), "{message}");
}

#[tokio::test]
async fn an_ssh_connection_cut_mid_upload_is_an_error_naming_the_stage() {
    let fault = json!({"mode": "close-after", "bytes": 96 * 1024});
    let (reason, message, sessions) = ssh_fault_error("ssh-cut", fault, 512 * 1024).await;
    assert_eq!(reason, "SshUnreachable");
    assert!(message.starts_with("deploying failed: the SSH connection to the guest kept failing"), "{message}");
    // Every attempt writes progress before the cut; the backoff (1, 2, 4,
    // 8 s) holds against those writes' wakes: a handful of attempts in the
    // boot timeout, not one per second.
    assert!(sessions <= 6.0, "{sessions} SSH sessions in the boot timeout: the backoff did not hold");
}
