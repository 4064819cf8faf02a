//! Two replicas with `--leader-elect` share five Containers: only the Lease
//! holder works, each Container gets exactly one `vzcreate`, and when the
//! leader is killed mid-work the other replica finishes.

use crate::support;

use std::time::Duration;

use infrahaus_operator::crd::{Container, Phase};
use infrahaus_operator::leader::DEFAULT_LEASE_NAME;
use k8s_openapi::api::coordination::v1::Lease;
use reqwest::Method;
use serde_json::json;
use support::fixtures::{container, template, READY_TIMEOUT};
use support::World;

const NAMES: [&str; 5] = ["web-1", "web-2", "web-3", "web-4", "web-5"];

/// The pid in the Lease's holder identity (`<hostname>-<pid>`), once held.
async fn leader_pid(world: &World) -> Option<u32> {
    let lease = world.api::<Lease>().get_opt(DEFAULT_LEASE_NAME).await.expect("get Lease")?;
    let holder = lease.spec?.holder_identity?;
    holder.rsplit('-').next()?.parse().ok()
}

/// Waits until one of `candidates` holds the Lease; returns its index.
async fn wait_leader(world: &World, candidates: &[usize]) -> usize {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let pid = leader_pid(world).await;
        if let Some(index) = candidates.iter().copied().find(|i| Some(world.controller(*i).pid()) == pid) {
            return index;
        }
        assert!(tokio::time::Instant::now() < deadline, "none of {candidates:?} holds the Lease (holder pid {pid:?})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Applies the five Containers, then starts two replicas: the leader finds
/// all five at once and works on them concurrently.
async fn apply_and_start_replicas(world: &mut World) -> [usize; 2] {
    world.apply(template("web", false)).await.expect("template");
    for name in NAMES {
        world.apply(container(name, "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    }
    [
        world.start_controller(&["--leader-elect"]).expect("first replica"),
        world.start_controller(&["--leader-elect"]).expect("second replica"),
    ]
}

/// Every Container Ready, with its own vmid and exactly one create task.
async fn assert_all_ready_with_one_vzcreate(world: &World) {
    let mut vmids = Vec::new();
    for name in NAMES {
        let ct = world.wait_phase(name, Phase::Ready, READY_TIMEOUT).await.expect("Ready");
        let vmid = ct.status.expect("status").vmid.expect("vmid");
        let tasks = world.vzcreate_tasks(vmid).await.expect("tasks");
        assert_eq!(tasks.len(), 1, "{name}: exactly one vzcreate for CT {vmid}: {tasks:?}");
        vmids.push(vmid);
    }
    vmids.sort_unstable();
    vmids.dedup();
    assert_eq!(vmids.len(), NAMES.len(), "every Container has its own guest: {vmids:?}");
    let guests = world.pve_get("/nodes/pve1/lxc").await.expect("guests");
    assert_eq!(guests.as_array().map(Vec::len), Some(NAMES.len()), "no extra guest: {guests}");
}

fn acquired(world: &World, index: usize) -> bool {
    std::fs::read_to_string(world.controller(index).log_path()).unwrap_or_default().contains("acquired the Lease")
}

#[tokio::test]
async fn two_replicas_create_each_container_once() {
    let mut world = World::new("replicas").await.expect("world");
    let replicas = apply_and_start_replicas(&mut world).await;
    let leader = wait_leader(&world, &replicas).await;
    assert_all_ready_with_one_vzcreate(&world).await;
    let standby = replicas.into_iter().find(|i| *i != leader).expect("standby");
    assert!(acquired(&world, leader), "the Lease holder reconciles");
    assert!(!acquired(&world, standby), "the standby never led:\n{}", world.controller(standby).log_tail(20));
    assert_eq!(leader_pid(&world).await, Some(world.controller(leader).pid()), "the leader kept the Lease");
}

#[tokio::test]
async fn the_standby_finishes_when_the_leader_is_killed_mid_work() {
    let mut world = World::new("failover").await.expect("world");
    world
        .sim_admin(Method::POST, "/sim/task-duration", json!({"type": "vzcreate", "ms": 8000}))
        .await
        .expect("slow vzcreate");
    let replicas = apply_and_start_replicas(&mut world).await;
    let leader = wait_leader(&world, &replicas).await;
    let standby = replicas.into_iter().find(|i| *i != leader).expect("standby");

    let in_flight = |ct: &Container| {
        ct.status.as_ref().and_then(|s| s.task_ref.as_deref()).is_some_and(|t| t.contains(":vzcreate:"))
    };
    world.wait_for("web-1", READY_TIMEOUT, "a create task in flight", in_flight).await.expect("work in flight");
    world.controller(leader).kill();
    let mut unfinished = 0;
    for name in NAMES {
        let phase = world.container(name).await.expect("container").status.and_then(|s| s.phase);
        if phase != Some(Phase::Ready) {
            unfinished += 1;
        }
    }
    assert!(unfinished > 0, "the leader was killed before it finished");
    assert!(!acquired(&world, standby), "the standby waited while the leader lived");

    assert_eq!(wait_leader(&world, &[standby]).await, standby);
    assert_all_ready_with_one_vzcreate(&world).await;
    assert!(acquired(&world, standby), "the standby took over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_mid_script_exits_within_its_grace_and_releases_the_lease() {
    let mut world = World::new("grace").await.expect("world");
    let mut slow = template("slow", false);
    slow["spec"]["scripts"] =
        json!([{"name": "10-slow.sh", "content": "#!/bin/bash\necho working\nsleep 300\n", "timeoutSeconds": 600}]);
    world.apply(slow).await.expect("template");
    let leader = world.start_controller(&["--leader-elect"]).expect("controller");
    world.apply(container("slow", "slow", json!({"ipv4": "dhcp"}))).await.expect("container");
    world.wait_phase("slow", Phase::Syncing, READY_TIMEOUT).await.expect("Syncing");

    let controller = world.controller(leader);
    controller.signal(libc::SIGTERM);
    // The script would hold a drain without a grace for 300 s.
    let status = tokio::task::block_in_place(|| controller.wait_exit(Duration::from_secs(60)));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit within the grace:\n{}", controller.log_tail(20));
    let lease = world.api::<Lease>().get(DEFAULT_LEASE_NAME).await.expect("Lease");
    let holder = lease.spec.and_then(|spec| spec.holder_identity);
    assert_eq!(holder, None, "the Lease is released at exit");
}
