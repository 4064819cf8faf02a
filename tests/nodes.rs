//! ProxmoxNode status: reachable with an accepted token is Ready with the
//! version; a rejected token or a wrong certificate pin says why not.

use crate::support;

use std::time::Duration;

use infrahaus_operator::crd::ProxmoxNode;
use serde_json::json;
use support::World;

async fn wait_ready_condition(world: &World, name: &str) -> (String, String, Option<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let node = world.api::<ProxmoxNode>().get(name).await.expect("get node");
        if let Some(status) = node.status {
            if let Some(c) = status.conditions.iter().find(|c| c.type_ == "Ready") {
                return (c.status.clone(), c.reason.clone(), status.version.clone());
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} has no Ready condition");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn node_status_reports_reachability_token_and_tls() {
    let mut world = World::new("nodes").await.expect("world");
    world.start_controller(&[]).expect("controller");

    let (status, reason, version) = wait_ready_condition(&world, "pve1").await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Connected"));
    assert!(version.is_some_and(|v| !v.is_empty()));

    world
        .apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wrong-token"},
                      "stringData": {"tokenId": world.sim.token_id, "secret": "not-the-secret"}}))
        .await
        .expect("secret");
    let node = |name: &str, token: &str, fingerprint: &str| {
        json!({"apiVersion": "infrahaus.io/v1alpha1", "kind": "ProxmoxNode", "metadata": {"name": name},
               "spec": {"endpoint": world.sim.url, "nodeName": "pve1", "tokenSecretRef": {"name": token},
                        "tls": {"fingerprint": fingerprint}}})
    };
    world.apply(node("bad-token", "wrong-token", &world.sim.fingerprint)).await.expect("node");
    let wrong_pin = "AA:".repeat(31) + "AA";
    world.apply(node("bad-pin", "pve1-token", &wrong_pin)).await.expect("node");

    let (status, reason, _) = wait_ready_condition(&world, "bad-token").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Unauthorized"));
    let (status, reason, _) = wait_ready_condition(&world, "bad-pin").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "TlsError"));
    assert!(!world.controller_logs().contains("not-the-secret"), "the token never reaches the logs");
}

#[tokio::test]
async fn container_waits_for_its_node_and_says_so() {
    let mut world = World::new("waitnode").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(support::fixtures::template("web", false)).await.expect("template");
    let mut ct = support::fixtures::container("early-bird", "web", json!({"ipv4": "dhcp"}));
    ct["spec"]["nodeRef"]["name"] = "pve-later".into();
    world.apply(ct).await.expect("container");
    let waiting = world
        .wait_for("early-bird", Duration::from_secs(60), "a message about the missing node", |ct| {
            ct.status.as_ref().and_then(|s| s.message.as_deref()).is_some_and(|m| m.contains("ProxmoxNode pve-later"))
        })
        .await
        .expect("waiting message");
    assert_eq!(waiting.status.and_then(|s| s.phase), Some(infrahaus_operator::crd::Phase::Pending));

    world.apply_node("pve-later").await.expect("node appears");
    world
        .wait_phase("early-bird", infrahaus_operator::crd::Phase::Ready, support::fixtures::READY_TIMEOUT)
        .await
        .expect("Ready once the node exists");
}
