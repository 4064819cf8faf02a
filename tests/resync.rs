//! A changed ContainerTemplate reaches every Ready Container that uses it:
//! Deploy, Sync and Finalize run again. An unchanged one re-runs nothing,
//! also after a controller restart.

use std::time::Duration;

use crate::support;

use infrahaus_operator::crd::{Container, Phase};
use k8s_openapi::api::core::v1::Event;
use serde_json::json;
use support::fixtures::{container, controller_key, ssh, template, READY_TIMEOUT};
use support::World;

fn template_hash(ct: &Container) -> Option<String> {
    ct.status.as_ref().and_then(|s| s.template_hash.clone())
}

async fn deploys(world: &World) -> usize {
    let events = world.api::<Event>().list(&Default::default()).await.expect("events");
    events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("StageStarted") && e.action.as_deref() == Some("Deploy"))
        .map(|e| e.count.unwrap_or(1).max(1) as usize)
        .sum()
}

#[tokio::test]
async fn a_changed_template_redeploys_its_containers_and_an_unchanged_one_nothing() {
    let mut world = World::new("resync").await.expect("world");
    let first = world.start_controller(&[]).expect("controller");
    let mut web = template("web", false);
    world.apply(web.clone()).await.expect("template");
    let mut hashes = Vec::new();
    for name in ["one", "two"] {
        world.apply(container(name, "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    }
    for name in ["one", "two"] {
        let ct = world.wait_phase(name, Phase::Ready, READY_TIMEOUT).await.expect("Ready");
        hashes.push(template_hash(&ct).expect("the template's hash is recorded at Ready"));
    }
    let deploys_before = deploys(&world).await;

    // A restart with nothing changed: no Deploy, no task.
    world.controller(first).kill();
    world.start_controller(&[]).expect("second controller");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(deploys(&world).await, deploys_before, "an unchanged template re-runs nothing after a restart");

    web["spec"]["files"][1]["content"] = json!("hello again from infrahaus\n");
    world.apply(web).await.expect("changed template");
    let key = controller_key(&world).await;
    for (name, old) in ["one", "two"].into_iter().zip(hashes) {
        let ct = world
            .wait_for(name, READY_TIMEOUT, "Ready from the changed template", |ct| {
                ct.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)
                    && template_hash(ct).is_some_and(|h| h != old)
            })
            .await
            .expect("re-synced");
        let ip = ct.status.and_then(|s| s.ip_address).expect("ip");
        assert_eq!(ssh(&ip, key.path(), "cat /opt/app/motd"), "hello again from infrahaus\n", "{name}");
    }
    assert!(deploys(&world).await >= deploys_before + 2, "each Container deployed again");
}

fn out_of_sync(ct: &Container) -> Option<String> {
    let conditions = ct.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    infrahaus_operator::crd::conditions::find_condition(&conditions, "TemplateOutOfSync").map(|c| c.status.clone())
}

#[tokio::test]
async fn a_changed_config_map_reaches_on_change_containers_and_manual_ones_wait_for_the_retry() {
    let mut world = World::new("resync-cm").await.expect("world");
    world.start_controller(&[]).expect("controller");
    let motd = |text: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "motd"}, "data": {"motd": text}});
    world.apply(motd("first\n")).await.expect("configmap");
    let mut web = template("web", false);
    web["spec"]["files"][1] =
        json!({"path": "/opt/app/motd", "contentFrom": {"configMapKeyRef": {"name": "motd", "key": "motd"}}});
    world.apply(web).await.expect("template");
    let auto = container("auto", "web", json!({"ipv4": "dhcp"}));
    let mut manual = container("manual", "web", json!({"ipv4": "dhcp"}));
    manual["spec"]["templateSync"] = json!("Manual");
    world.apply(auto).await.expect("auto");
    world.apply(manual.clone()).await.expect("manual");
    let key = controller_key(&world).await;
    let mut ips = Vec::new();
    let mut hashes = Vec::new();
    for name in ["auto", "manual"] {
        let ct = world.wait_phase(name, Phase::Ready, READY_TIMEOUT).await.expect("Ready");
        hashes.push(template_hash(&ct).expect("hash"));
        let ip = ct.status.and_then(|s| s.ip_address).expect("ip");
        assert_eq!(ssh(&ip, key.path(), "cat /opt/app/motd"), "first\n", "{name}");
        ips.push(ip);
    }

    world.apply(motd("second\n")).await.expect("changed configmap");
    world
        .wait_for("auto", READY_TIMEOUT, "synced from the changed ConfigMap", |ct| {
            ct.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)
                && template_hash(ct).is_some_and(|h| h != hashes[0])
        })
        .await
        .expect("auto re-synced");
    assert_eq!(ssh(&ips[0], key.path(), "cat /opt/app/motd"), "second\n");
    let ct = world
        .wait_for("manual", READY_TIMEOUT, "TemplateOutOfSync", |ct| out_of_sync(ct).as_deref() == Some("True"))
        .await
        .expect("TemplateOutOfSync");
    assert_eq!(template_hash(&ct).as_deref(), Some(hashes[1].as_str()), "the recorded hash stays");
    assert_eq!(ssh(&ips[1], key.path(), "cat /opt/app/motd"), "first\n", "Manual changes nothing");

    manual["metadata"]["annotations"] = json!({"infrahaus.io/retry": "sync"});
    world.apply(manual).await.expect("retry");
    world
        .wait_for("manual", READY_TIMEOUT, "synced after the retry", |ct| {
            ct.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)
                && out_of_sync(ct).as_deref() == Some("False")
        })
        .await
        .expect("manual synced");
    assert_eq!(ssh(&ips[1], key.path(), "cat /opt/app/motd"), "second\n");
}
