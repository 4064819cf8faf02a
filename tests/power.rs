//! `spec.powerState`: Stopped shuts the guest down (after a first run has
//! brought it to Ready), Running starts it again and deploys once more.

use crate::support;

use infrahaus_operator::crd::Phase;
use serde_json::json;
use support::fixtures::{container, controller_key, ssh, template, READY_TIMEOUT};
use support::World;

async fn guest_status(world: &World, vmid: i32) -> String {
    let status = world.pve_get(&format!("/nodes/pve1/lxc/{vmid}/status/current")).await.expect("status");
    status["status"].as_str().unwrap_or_default().to_string()
}

async fn tasks_of(world: &World, vmid: i32, kind: &str) -> usize {
    world.tasks(vmid, kind).await.expect("tasks").len()
}

#[tokio::test]
async fn stopped_shuts_the_guest_down_and_running_brings_it_back_deployed() {
    let mut world = World::new("power").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    let mut manifest = container("switch", "web", json!({"ipv4": "dhcp"}));
    world.apply(manifest.clone()).await.expect("container");
    let ct = world.wait_phase("switch", Phase::Ready, READY_TIMEOUT).await.expect("Ready");
    let vmid = ct.status.as_ref().and_then(|s| s.vmid).expect("vmid");
    assert_eq!(ct.spec.power_state, infrahaus_operator::crd::PowerState::Running, "the default");
    assert_eq!(ct.status.as_ref().and_then(|s| s.power_state), Some(infrahaus_operator::crd::PowerState::Running));

    manifest["spec"]["powerState"] = json!("Stopped");
    let ct = world.apply_and_wait_ready("switch", manifest.clone()).await.expect("stopped");
    assert_eq!(guest_status(&world, vmid).await, "stopped");
    assert_eq!(tasks_of(&world, vmid, "vzshutdown").await, 1, "one shutdown");
    assert_eq!(ct.status.as_ref().and_then(|s| s.power_state), Some(infrahaus_operator::crd::PowerState::Stopped));
    let message = ct.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("stopped"), "{message}");
    let columns = world.kubectl(&["get", "ct", "switch"], None).expect("kubectl get");
    let table = String::from_utf8_lossy(&columns.stdout).to_string();
    assert!(table.contains("POWER") && table.contains("Stopped"), "kubectl get ct shows the power state:\n{table}");

    manifest["spec"]["powerState"] = json!("Running");
    let ct = world.apply_and_wait_ready("switch", manifest).await.expect("running");
    assert_eq!(guest_status(&world, vmid).await, "running");
    assert_eq!(tasks_of(&world, vmid, "vzstart").await, 2, "started again");
    let ip = ct.status.and_then(|s| s.ip_address).expect("ip");
    let key = controller_key(&world).await;
    assert_eq!(ssh(&ip, key.path(), "cat /opt/app/motd"), "hello from infrahaus\n", "deployed and reachable again");
}

#[tokio::test]
async fn a_container_applied_stopped_is_completed_first() {
    let mut world = World::new("power-first").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    let mut manifest = container("cold", "web", json!({"ipv4": "dhcp"}));
    manifest["spec"]["powerState"] = json!("Stopped");
    world.apply(manifest).await.expect("container");
    let ct = world.wait_phase("cold", Phase::Ready, READY_TIMEOUT).await.expect("Ready");
    let status = ct.status.expect("status");
    let vmid = status.vmid.expect("vmid");
    assert!(status.stages.iter().all(|s| s.state == infrahaus_operator::crd::StageState::Succeeded), "{status:?}");
    assert!(!status.listening_ports.is_empty(), "finalized while running: {status:?}");
    assert_eq!(guest_status(&world, vmid).await, "stopped", "then shut down");
}
