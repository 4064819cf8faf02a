//! Node slots (`maxConcurrentOperations`) are never waited for inside a
//! reconcile: Containers queued for a busy node hold none of the
//! controller's `--concurrency` reconciles, so work on other nodes goes on.

use crate::support;

use std::time::Duration;

use infrahaus_operator::crd::{Container, Phase};
use kube::api::DeleteParams;
use reqwest::Method;
use serde_json::json;
use support::fixtures::{container, template, READY_TIMEOUT};
use support::World;

/// pve-sim's vzcreate tasks from now on take `ms`.
async fn set_vzcreate(world: &World, ms: u64) {
    world
        .sim_admin(Method::POST, "/sim/task-duration", json!({"type": "vzcreate", "ms": ms}))
        .await
        .expect("vzcreate duration");
}

/// Deletes Container `name` and waits until it is gone.
async fn delete_and_wait_gone(world: &World, name: &str) {
    let api = world.api::<Container>();
    api.delete(name, &DeleteParams::default()).await.expect("delete");
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    while api.get_opt(name).await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "{name} was never deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn phase(ct: &Container) -> Option<Phase> {
    ct.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test]
async fn containers_queued_for_a_busy_node_do_not_hold_up_another_nodes_deletion() {
    let mut world = World::new("slots").await.expect("world");
    // Two ProxmoxNodes, each with one slot of its own (both name the one
    // pve-sim), and two reconciles at a time in all.
    world.apply_node_with_slots("pve1", 1).await.expect("pve1");
    world.apply_node_with_slots("other", 1).await.expect("other");
    world.start_controller(&["--concurrency", "2"]).expect("controller");
    world.apply(template("web", false)).await.expect("template");

    let mut elsewhere = container("elsewhere", "web", json!({"ipv4": "dhcp"}));
    elsewhere["spec"]["nodeRef"]["name"] = "other".into();
    world.apply(elsewhere).await.expect("container");
    world.wait_phase("elsewhere", Phase::Ready, READY_TIMEOUT).await.expect("Ready");

    // pve1 is busy with one long create; the second Container waits for its
    // slot. The create is long enough for the deletion below to fit in it on
    // a loaded machine; the second Container's create is short again.
    set_vzcreate(&world, 30_000).await;
    for name in ["busy-1", "busy-2"] {
        world.apply(container(name, "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    }
    world.wait_active_task("vzcreate", READY_TIMEOUT).await.expect("a create on pve1");
    set_vzcreate(&world, 500).await;

    // The second Container finds pve1's one slot taken and says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: Vec<String> = futures::future::join_all(["busy-1", "busy-2"].map(|n| world.container(n)))
            .await
            .into_iter()
            .filter_map(|ct| ct.ok()?.status?.message)
            .collect();
        if waiting.iter().any(|m| m.contains("waiting for one of the 1 operation slots of node pve1")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the Container queued for pve1 says so: {waiting:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Deleting the Container on the other node goes ahead at once, while
    // pve1's create still runs.
    delete_and_wait_gone(&world, "elsewhere").await;
    let active = world.pve_get("/nodes/pve1/tasks?typefilter=vzcreate&source=active").await.expect("tasks");
    assert!(active.as_array().is_some_and(|t| !t.is_empty()), "the deletion waited for pve1's create to end: {active}");
    for name in ["busy-1", "busy-2"] {
        let ct = world.container(name).await.expect("container");
        assert_ne!(phase(&ct), Some(Phase::Ready), "{name}: the deletion waited for pve1's create");
    }

    // The queued one gets the slot when the first is done, woken, not polled.
    for name in ["busy-1", "busy-2"] {
        world.wait_phase(name, Phase::Ready, READY_TIMEOUT).await.expect("Ready");
    }
    let logs = world.controller_logs();
    let failures: Vec<&str> =
        logs.lines().filter(|l| l.contains("reconcile failed; retrying") && l.contains("name=busy-")).collect();
    assert!(failures.is_empty(), "waiting for a slot is no failure: {failures:#?}");
}

/// Waits until `name` is in `phase`, without failing on other phases.
async fn wait_in(world: &World, name: &str, phase: Phase) {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let ct = world.container(name).await.expect("container");
        if self::phase(&ct) == Some(phase) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} never reached {phase:?}: {:?}", ct.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn with_every_pipeline_slot_in_a_long_script_a_deletion_and_a_day_two_change_go_on() {
    let mut world = World::new("slots-busy").await.expect("world");
    world.start_controller(&["--concurrency", "2"]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    for name in ["gone", "changed"] {
        world.apply(container(name, "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    }
    let mut vmid = 0;
    for name in ["gone", "changed"] {
        let ct = world.wait_phase(name, Phase::Ready, READY_TIMEOUT).await.expect("Ready");
        vmid = ct.status.and_then(|s| s.vmid).expect("vmid");
    }

    // Both pipeline slots go to scripts that run for ten minutes.
    let mut slow = template("slow", false);
    slow["spec"]["scripts"] =
        json!([{"name": "10-long.sh", "content": "#!/bin/bash\nsleep 600\n", "timeoutSeconds": 900}]);
    world.apply(slow).await.expect("slow template");
    for name in ["long-1", "long-2"] {
        world.apply(container(name, "slow", json!({"ipv4": "dhcp"}))).await.expect("container");
    }
    for name in ["long-1", "long-2"] {
        wait_in(&world, name, Phase::Syncing).await;
    }
    // A third Container waits for a slot, and says so.
    world.apply(container("third", "web", json!({"ipv4": "dhcp"}))).await.expect("container");

    // A day-2 change of a Ready Container reaches its guest at once.
    let mut changed = container("changed", "web", json!({"ipv4": "dhcp"}));
    changed["spec"]["resources"] = json!({"memoryMiB": 768});
    world.apply(changed).await.expect("memory change");
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let guest = world.sim_guest(vmid).await.expect("sim state").expect("guest");
        if guest["limits"]["memory"] == "768" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the memory change never reached the guest: {guest}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A deletion goes through at once.
    delete_and_wait_gone(&world, "gone").await;

    // All of it while both slots were still in their scripts.
    for name in ["long-1", "long-2"] {
        let ct = world.container(name).await.expect("container");
        assert_eq!(phase(&ct), Some(Phase::Syncing), "{name} left its script: {:?}", ct.status);
    }
    let third = world.container("third").await.expect("container");
    let message = third.status.and_then(|s| s.message).unwrap_or_default();
    assert_eq!(message, "waiting for one of the 2 pipeline slots of the controller (--concurrency)");
}
