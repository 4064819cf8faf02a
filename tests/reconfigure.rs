//! Day-2 changes of a Ready Container reach its guest: what Proxmox hot-plugs
//! is in effect at once, what it keeps pending is reported in RestartRequired
//! and applied by one reboot with `restartPolicy: OnPendingChange`; the disk
//! grows and never shrinks.

use crate::support;

use infrahaus_operator::crd::conditions::find_condition;
use infrahaus_operator::crd::{Container, Phase};
use serde_json::{json, Value};
use support::fixtures::{container, controller_key, ssh, template, READY_TIMEOUT};
use support::World;

/// The guest's limits in effect and its pending values, from pve-sim's state.
async fn guest(world: &World, vmid: i32) -> Value {
    world.sim_guest(vmid).await.expect("sim state").unwrap_or_else(|| panic!("no guest {vmid}"))
}

async fn tasks_of(world: &World, vmid: i32, kind: &str) -> usize {
    world.tasks(vmid, kind).await.expect("tasks").len()
}

async fn event_notes(world: &World, name: &str, reason: &str) -> Vec<String> {
    world.event_notes(name, reason).await.expect("events")
}

async fn apply_and_wait(world: &World, name: &str, manifest: Value) -> Container {
    world.apply_and_wait_ready(name, manifest).await.expect("reconfigured")
}

async fn ready(world: &mut World, name: &str) -> (Value, i32) {
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    let manifest = container(name, "web", json!({"ipv4": "dhcp"}));
    world.apply(manifest.clone()).await.expect("container");
    let ct = world.wait_phase(name, Phase::Ready, READY_TIMEOUT).await.expect("Ready");
    (manifest, ct.status.and_then(|s| s.vmid).expect("vmid"))
}

#[tokio::test]
async fn memory_cores_and_swap_reach_the_running_guest_without_a_restart() {
    let mut world = World::new("reconf-live").await.expect("world");
    let (mut manifest, vmid) = ready(&mut world, "live").await;
    assert_eq!(guest(&world, vmid).await["limits"]["memory"], "512", "the template's default");

    manifest["spec"]["resources"] = json!({"cores": 2, "memoryMiB": 1024, "swapMiB": 256});
    let ct = apply_and_wait(&world, "live", manifest).await;

    let guest = guest(&world, vmid).await;
    assert_eq!(
        (guest["limits"]["memory"].clone(), guest["limits"]["cores"].clone(), guest["limits"]["swap"].clone()),
        (json!("1024"), json!("2"), json!("256")),
        "the running guest has the new values: {guest}"
    );
    assert_eq!(guest["status"], "running");
    assert_eq!(tasks_of(&world, vmid, "vzreboot").await + tasks_of(&world, vmid, "vzstop").await, 0, "no restart");
    let notes = event_notes(&world, "live", "Reconfigured").await;
    assert_eq!(notes, [format!("CT {vmid}: changed cores, memory, swap")], "one Event naming the keys");
    let conditions = ct.status.expect("status").conditions;
    assert!(find_condition(&conditions, "RestartRequired").is_none(), "nothing pending: {conditions:?}");
    let stream = world.redis_stream("live").await.expect("stream");
    assert!(
        stream.iter().any(|e| e["type"] == "step" && e["step"] == "reconfiguring"),
        "progress of the reconfiguration on Redis: {stream:?}"
    );
}

#[tokio::test]
async fn a_change_proxmox_keeps_pending_requires_a_restart_which_on_pending_change_makes_once() {
    let mut world = World::new("reconf-pending").await.expect("world");
    let (mut manifest, vmid) = ready(&mut world, "pending").await;

    manifest["spec"]["network"]["nameservers"] = json!(["127.0.0.53"]);
    let ct = apply_and_wait(&world, "pending", manifest.clone()).await;
    let conditions = ct.status.expect("status").conditions;
    let restart = find_condition(&conditions, "RestartRequired").expect("RestartRequired");
    assert_eq!(restart.status, "True", "{restart:?}");
    assert!(restart.message.contains("nameserver"), "{restart:?}");
    assert_eq!(guest(&world, vmid).await["pending"]["nameserver"], "127.0.0.53", "Proxmox holds it pending");
    assert_eq!(tasks_of(&world, vmid, "vzreboot").await, 0, "restartPolicy Never restarts nothing");

    manifest["spec"]["restartPolicy"] = json!("OnPendingChange");
    let ct = apply_and_wait(&world, "pending", manifest).await;
    let conditions = ct.status.expect("status").conditions;
    let restart = find_condition(&conditions, "RestartRequired").expect("RestartRequired");
    assert_eq!((restart.status.as_str(), restart.reason.as_str()), ("False", "Applied"), "{restart:?}");
    assert_eq!(tasks_of(&world, vmid, "vzreboot").await, 1, "rebooted once");
    let config = world.pve_get(&format!("/nodes/pve1/lxc/{vmid}/config?current=1")).await.expect("config");
    assert_eq!(config["nameserver"], "127.0.0.53", "in effect after the reboot");
    assert_eq!(guest(&world, vmid).await["status"], "running");
}

#[tokio::test]
async fn the_disk_grows_and_a_shrink_is_rejected_at_apply_time() {
    let mut world = World::new("reconf-disk").await.expect("world");
    let (mut manifest, vmid) = ready(&mut world, "disk").await;
    assert_eq!(guest(&world, vmid).await["limits"]["disk_bytes"], 8u64 << 30);

    manifest["spec"]["resources"] = json!({"diskGiB": 12});
    apply_and_wait(&world, "disk", manifest.clone()).await;
    assert_eq!(guest(&world, vmid).await["limits"]["disk_bytes"], 12u64 << 30, "grown by a resize task");
    assert_eq!(tasks_of(&world, vmid, "resize").await, 1);
    let notes = event_notes(&world, "disk", "Reconfigured").await;
    assert!(notes.iter().any(|n| n.contains("rootfs")), "{notes:?}");

    manifest["spec"]["resources"] = json!({"diskGiB": 10});
    let error = world.apply(manifest).await.expect_err("a shrink is rejected");
    assert!(error.to_string().contains("resources.diskGiB can only grow"), "{error}");
}

fn ready_condition(ct: &Container) -> (String, String) {
    let conditions = ct.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    find_condition(&conditions, "Ready").map(|c| (c.reason.clone(), c.message.clone())).unwrap_or_default()
}

#[tokio::test]
async fn ssh_public_keys_added_to_the_spec_reach_the_guest_and_removed_ones_leave_it() {
    let mut world = World::new("reconf-keys").await.expect("world");
    let (mut manifest, _) = ready(&mut world, "keys").await;
    let key = controller_key(&world).await;
    let added = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBq3l0Lq9V7oQ8V2s1mB0C1t8mJxk5H3Q0bWq3yW2uVx day2@example";

    manifest["spec"]["sshPublicKeys"] = json!([added]);
    let ct = apply_and_wait(&world, "keys", manifest.clone()).await;
    let ip = ct.status.and_then(|s| s.ip_address).expect("ip");
    let keys = ssh(&ip, key.path(), "cat /root/.ssh/authorized_keys");
    assert_eq!(keys.lines().filter(|l| *l == added).count(), 1, "the key is in the guest once: {keys}");

    manifest["spec"]["sshPublicKeys"] = json!([]);
    apply_and_wait(&world, "keys", manifest).await;
    // Still reachable with the controller's key, which always stays.
    let keys = ssh(&ip, key.path(), "cat /root/.ssh/authorized_keys");
    assert!(!keys.contains(added), "a key removed from the spec leaves the guest: {keys}");
}

#[tokio::test]
async fn a_new_host_key_is_an_error_until_an_operator_accepts_it() {
    let mut world = World::new("reconf-hostkey").await.expect("world");
    let (mut manifest, vmid) = ready(&mut world, "hostkey").await;
    let key = controller_key(&world).await;
    let ct = world.container("hostkey").await.expect("ct");
    let (ip, pins) = ct.status.map(|s| (s.ip_address.expect("ip"), s.ssh_host_key_fingerprints)).expect("status");

    // New host keys, as a reinstalled guest has; sshd reads them at the reboot.
    ssh(&ip, key.path(), "rm -f /etc/ssh/ssh_host_*; ssh-keygen -A >/dev/null");
    let upid = world.pve_request(reqwest::Method::POST, &format!("/nodes/pve1/lxc/{vmid}/status/reboot"), &[]).await;
    world.pve_wait_task(&upid.expect("reboot")).await.expect("rebooted");

    manifest["metadata"]["annotations"] = json!({"infrahaus.io/retry": "1"});
    world.apply(manifest.clone()).await.expect("retry");
    let ct = world
        .wait_for("hostkey", READY_TIMEOUT, "Error for the new host key", |ct| {
            ct.status.as_ref().and_then(|s| s.phase) == Some(Phase::Error) && ready_condition(ct).0 == "HostKeyMismatch"
        })
        .await
        .expect("HostKeyMismatch");
    let message = ready_condition(&ct).1;
    let fingerprint = message
        .split("infrahaus.io/accept-host-key=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the message names the annotation and the new key: {message}"))
        .to_string();
    assert!(!pins.contains(&fingerprint), "a new key: {fingerprint} vs {pins:?}");
    assert_eq!(ct.status.expect("status").ssh_host_key_fingerprints, pins, "the pin stays without the annotation");

    manifest["metadata"]["annotations"] =
        json!({"infrahaus.io/retry": "1", "infrahaus.io/accept-host-key": fingerprint.clone()});
    world.apply(manifest).await.expect("accept");
    let ct = world
        .wait_for("hostkey", READY_TIMEOUT, "Ready with the accepted key", |ct| {
            ct.status.as_ref().is_some_and(|s| s.phase == Some(Phase::Ready))
        })
        .await
        .expect("Ready");
    assert_eq!(ct.status.expect("status").ssh_host_key_fingerprints, vec![fingerprint.clone()], "the pin is replaced");
    let notes = event_notes(&world, "hostkey", "HostKeyAccepted").await;
    assert!(notes.iter().any(|n| n.contains(&fingerprint)), "an Event records it: {notes:?}");
}
