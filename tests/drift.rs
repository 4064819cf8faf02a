//! Drift: a Ready Container is compared with its guest every resync
//! interval, and what was changed outside the operator is set back, or
//! reported when it must not be (a destroyed guest, a guest that lost its
//! ownership marker). A controller restart with Ready Containers writes
//! nothing to Proxmox and opens no SSH session.

use std::time::Duration;

use crate::support;

use infrahaus_operator::crd::conditions::find_condition;
use infrahaus_operator::crd::{Container, Phase, StageName};
use reqwest::Method;
use serde_json::{json, Value};
use support::fixtures::{container, template, READY_TIMEOUT};
use support::World;

/// Short, so the tests see a few resyncs.
const RESYNC: &str = "--resync-interval=2s";

async fn ready(world: &mut World, name: &str) -> (Value, i32) {
    world.start_controller(&[RESYNC]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    let manifest = container(name, "web", json!({"ipv4": "dhcp"}));
    world.apply(manifest.clone()).await.expect("container");
    let ct = world.wait_phase(name, Phase::Ready, READY_TIMEOUT).await.expect("Ready");
    (manifest, ct.status.and_then(|s| s.vmid).expect("vmid"))
}

async fn guest(world: &World, vmid: i32) -> Option<Value> {
    world.sim_guest(vmid).await.expect("sim state")
}

fn ready_reason(ct: &Container) -> String {
    let conditions = ct.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    find_condition(&conditions, "Ready").map(|c| c.reason.clone()).unwrap_or_default()
}

async fn wait_error(world: &World, name: &str, reason: &str) -> Container {
    world
        .wait_for(name, Duration::from_secs(60), reason, |ct| {
            ct.status.as_ref().and_then(|s| s.phase) == Some(Phase::Error) && ready_reason(ct) == reason
        })
        .await
        .expect("Error")
}

async fn wait_guest(world: &World, vmid: i32, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        if let Some(guest) = guest(world, vmid).await.filter(|g| check(g)) {
            return guest;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("guest {vmid} never {what}: {:?}\n{}", guest(world, vmid).await, world.controller_logs());
}

async fn stop(world: &World, vmid: i32) {
    let upid = world.pve_request(Method::POST, &format!("/nodes/pve1/lxc/{vmid}/status/stop"), &[]).await;
    world.pve_wait_task(&upid.expect("stop")).await.expect("stopped");
}

#[tokio::test]
async fn memory_changed_through_the_proxmox_api_is_set_back() {
    let mut world = World::new("drift-memory").await.expect("world");
    let (_, vmid) = ready(&mut world, "mem").await;

    world.pve_put(&format!("/nodes/pve1/lxc/{vmid}/config"), &[("memory", "2048")]).await.expect("changed by hand");
    assert_eq!(guest(&world, vmid).await.expect("guest")["limits"]["memory"], "2048", "in effect at once");
    wait_guest(&world, vmid, "got its memory back", |g| g["limits"]["memory"] == "512").await;

    // The Event follows the read-back of the config in effect.
    let mut notes = Vec::new();
    for _ in 0..150 {
        notes = world.event_notes("mem", "DriftCorrected").await.expect("events");
        if notes.iter().any(|n| n.contains("memory")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(notes.iter().any(|n| n.contains("memory")), "an Event names the key: {notes:?}");
    let ct = world.wait_phase("mem", Phase::Ready, READY_TIMEOUT).await.expect("still Ready");
    assert_eq!(ct.status.and_then(|s| s.vmid), Some(vmid));
    assert_eq!(world.tasks(vmid, "vzreboot").await.expect("tasks").len(), 0, "no restart");
}

#[tokio::test]
async fn a_guest_stopped_by_hand_is_started_again() {
    let mut world = World::new("drift-stopped").await.expect("world");
    let (_, vmid) = ready(&mut world, "stopped").await;

    let stopped_at = k8s_openapi::jiff::Timestamp::now();
    stop(&world, vmid).await;
    wait_guest(&world, vmid, "ran again", |g| g["status"] == "running").await;
    world
        .wait_for("stopped", READY_TIMEOUT, "Ready again", |ct| {
            let status = ct.status.as_ref();
            let finalized = status.and_then(|s| s.stage(StageName::Finalizing)).and_then(|s| s.finished_at.clone());
            status.is_some_and(|s| s.phase == Some(Phase::Ready)) && finalized.is_some_and(|t| t.0 > stopped_at)
        })
        .await
        .expect("Ready");
    assert_eq!(world.tasks(vmid, "vzstart").await.expect("tasks").len(), 2, "started once more");
    let notes = world.event_notes("stopped", "DriftCorrected").await.expect("events");
    assert!(notes.iter().any(|n| n.contains("stopped outside the operator")), "{notes:?}");
}

#[tokio::test]
async fn a_destroyed_guest_is_guest_missing_until_the_retry_annotation_recreates_it() {
    let mut world = World::new("drift-missing").await.expect("world");
    let (mut manifest, vmid) = ready(&mut world, "gone").await;

    stop(&world, vmid).await;
    let upid = world.pve_request(Method::DELETE, &format!("/nodes/pve1/lxc/{vmid}"), &[]).await.expect("destroy");
    world.pve_wait_task(&upid).await.expect("destroyed");

    let ct = wait_error(&world, "gone", "GuestMissing").await;
    let message = ct.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
    assert!(message.contains("destroyed outside the operator"), "{message}");
    assert!(message.contains("infrahaus.io/retry"), "says how to recreate it: {message}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let creates = world.pve_get("/nodes/pve1/tasks?typefilter=vzcreate&source=all&limit=1000").await.expect("tasks");
    assert_eq!(creates.as_array().map(Vec::len), Some(1), "never recreated on its own: {creates}");

    manifest["metadata"]["annotations"] = json!({"infrahaus.io/retry": "recreate"});
    world.apply(manifest).await.expect("retry");
    let ct = world
        .wait_for("gone", READY_TIMEOUT, "Ready with a new guest", |ct| {
            ct.status.as_ref().is_some_and(|s| s.phase == Some(Phase::Ready) && s.last_applied_retry.is_some())
        })
        .await
        .expect("Ready");
    let new = ct.status.and_then(|s| s.vmid).expect("vmid");
    assert_eq!(guest(&world, new).await.expect("the new guest")["status"], "running");
    let creates = world.pve_get("/nodes/pve1/tasks?typefilter=vzcreate&source=all&limit=1000").await.expect("tasks");
    assert_eq!(creates.as_array().map(Vec::len), Some(2), "created once more: {creates}");
}

#[tokio::test]
async fn a_guest_that_lost_its_ownership_marker_is_left_alone() {
    let mut world = World::new("drift-owner").await.expect("world");
    let (_, vmid) = ready(&mut world, "owner").await;
    let path = format!("/nodes/pve1/lxc/{vmid}/config");

    world.pve_put(&path, &[("description", "taken over by hand"), ("memory", "1024")]).await.expect("changed by hand");
    let ct = wait_error(&world, "owner", "OwnershipLost").await;
    assert!(ct.status.and_then(|s| s.message).is_some_and(|m| m.contains("left untouched")));
    let (_, writes) = world.sim_requests().await.expect("requests");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(world.sim_requests().await.expect("requests").1, writes, "nothing written after");
    let config = world.pve_get(&path).await.expect("config");
    assert_eq!((config["description"].as_str(), config["memory"].as_u64()), (Some("taken over by hand"), Some(1024)));
    assert_eq!(guest(&world, vmid).await.expect("guest")["status"], "running", "the guest is untouched");
}

#[tokio::test]
async fn a_controller_restart_with_twenty_ready_containers_writes_nothing_and_opens_no_ssh_session() {
    let mut world = World::new("drift-restart").await.expect("world");
    let first = world.start_controller(&["--concurrency=10"]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    let names: Vec<String> = (0..20).map(|i| format!("ct-{i:02}")).collect();
    for name in &names {
        world.apply(container(name, "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    }
    for name in &names {
        world.wait_phase(name, Phase::Ready, Duration::from_secs(600)).await.expect("Ready");
    }
    world.controller(first).kill();
    let (reads_before, writes_before) = world.sim_requests().await.expect("requests");

    let second = world.start_controller(&["--concurrency=10"]).expect("second controller");
    // Every Container is reconciled once at the start (its template hash and
    // its guest compared), then nothing is due for a resync interval.
    let mut reconciles = 0.0;
    for _ in 0..300 {
        reconciles = world.controller_metric(second, "infrahaus_reconciles_total").await.unwrap_or(0.0);
        if reconciles >= 20.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reconciles >= 20.0, "every Container reconciled: {reconciles}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (reads, writes) = world.sim_requests().await.expect("requests");
    let sessions = world.controller_metric(second, "infrahaus_ssh_sessions_total").await.expect("metrics");
    let (reads, writes) = (reads - reads_before, writes - writes_before);
    println!("restart with 20 Ready Containers: {reads} Proxmox reads, {writes} writes, {sessions} SSH sessions");
    assert_eq!(writes, 0, "no Proxmox write");
    assert_eq!(sessions, 0.0, "no SSH session");
    assert!(reads >= 40, "each guest was compared (status and config): {reads} reads");
    for name in &names {
        assert_eq!(world.container(name).await.expect("ct").status.and_then(|s| s.phase), Some(Phase::Ready));
    }
}
