//! Faults and edges: failed tasks, bursts of transient errors, a Redis
//! outage, deletion in every phase, a foreign guest at the vmid, and a host
//! key that changes.

use crate::support;

use std::time::Duration;

use infrahaus_operator::crd::{Container, Phase, StageName, StageState};
use kube::api::DeleteParams;
use kube::ResourceExt;
use reqwest::Method;
use serde_json::{json, Value};
use support::fixtures::{container, controller_key, ssh, template, READY_TIMEOUT};
use support::World;

async fn sim(world: &World, path: &str, body: Value) {
    world.sim_admin(Method::POST, path, body).await.expect("pve-sim admin call");
}

async fn guest_exists(world: &World, vmid: i32) -> bool {
    let guests = world.pve_get("/nodes/pve1/lxc").await.expect("list guests");
    guests.as_array().is_some_and(|list| list.iter().any(|g| g["vmid"].as_i64() == Some(i64::from(vmid))))
}

async fn wait_gone(world: &World, name: &str) {
    let api = world.api::<Container>();
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    while api.get_opt(name).await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "{name} still exists (finalizer not removed)");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn failed_create_task_is_an_error_with_the_log_tail() {
    let mut world = World::new("taskfail").await.expect("world");
    world.start_controller(&[]).expect("controller");
    sim(
        &world,
        "/sim/task-fault",
        json!({"type": "vzcreate", "error": "unable to create CT - no space left on device"}),
    )
    .await;
    world.apply(template("web", false)).await.expect("template");
    world.apply(container("broken", "web", json!({"ipv4": "dhcp"}))).await.expect("container");

    let ct = world.wait_phase("broken", Phase::Error, READY_TIMEOUT).await.expect("Error");
    let status = ct.status.expect("status");
    let message = status.message.unwrap_or_default();
    assert!(message.starts_with("creating failed"), "{message}");
    assert!(message.contains("TASK ERROR: unable to create CT - no space left on device"), "log tail in: {message}");
    let created = status.conditions.iter().find(|c| c.type_ == "Created").expect("Created condition");
    assert_eq!((created.status.as_str(), created.reason.as_str()), ("False", "TaskFailed"));
}

#[tokio::test]
async fn bursts_of_transient_errors_still_end_ready() {
    let mut world = World::new("transient").await.expect("world");
    world.start_controller(&[]).expect("controller");
    let lock_timeout = "can't lock file '/run/lock/lxc/pve-config-100.lock' - got timeout";
    for fault in [
        json!({"path": "^/cluster/nextid$", "count": 2, "status": 596, "message": "Connection timed out"}),
        json!({"path": "^/nodes/pve1/lxc$", "method": "POST", "count": 2, "status": 500, "message": lock_timeout}),
        json!({"path": "^/nodes/pve1/lxc$", "method": "POST", "count": 1, "status": 500, "message": "Internal Server Error"}),
        json!({"path": "/tasks/.*/status$", "count": 3, "status": 596, "message": "Connection timed out"}),
        json!({"path": "/status/start$", "method": "POST", "count": 2, "status": 500, "message": lock_timeout}),
        json!({"path": "/status/current$", "count": 2, "status": 500, "message": "CT is locked (create)"}),
        json!({"path": "/interfaces$", "count": 2, "status": 502, "message": "Bad Gateway"}),
    ] {
        sim(&world, "/sim/fail", fault).await;
    }
    world.apply(template("web", false)).await.expect("template");
    world.apply(container("sturdy", "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    let ct = world.wait_phase("sturdy", Phase::Ready, READY_TIMEOUT).await.expect("Ready despite faults");
    let vmid = ct.status.expect("status").vmid.expect("vmid");
    let tasks = world.pve_get(&format!("/nodes/pve1/tasks?vmid={vmid}&typefilter=vzcreate")).await.expect("tasks");
    assert_eq!(tasks.as_array().map(Vec::len), Some(1), "one vzcreate: {tasks}");
}

#[tokio::test]
async fn redis_outage_during_the_pipeline_does_not_stop_it() {
    let mut world = World::new("redisdown").await.expect("world");
    let redis = testbed::dedicated_redis().await.expect("own redis");
    world.redis_url = Some(redis.url.clone());
    world.start_controller(&[]).expect("controller");
    sim(&world, "/sim/task-duration", json!({"type": "vzcreate", "ms": 3000})).await;
    world.apply(template("web", false)).await.expect("template");
    world.apply(container("noredis", "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    world
        .wait_for("noredis", READY_TIMEOUT, "phase Creating", |ct| {
            ct.status.as_ref().and_then(|s| s.phase) == Some(Phase::Creating)
        })
        .await
        .expect("creating");
    redis.stop();
    world.wait_phase("noredis", Phase::Ready, READY_TIMEOUT).await.expect("Ready without Redis");
}

#[tokio::test]
async fn deletion_while_ready_while_creating_and_with_retain() {
    let mut world = World::new("delete").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    let api = world.api::<Container>();

    // Ready, deletionPolicy Delete (the default): the guest goes.
    world.apply(container("gone", "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    let ct = world.wait_phase("gone", Phase::Ready, READY_TIMEOUT).await.expect("Ready");
    let vmid = ct.status.expect("status").vmid.expect("vmid");
    assert!(ct.metadata.finalizers.unwrap_or_default().contains(&"infrahaus.io/cleanup".to_string()));
    api.delete("gone", &DeleteParams::default()).await.expect("delete");
    wait_gone(&world, "gone").await;
    assert!(!guest_exists(&world, vmid).await, "CT {vmid} destroyed");
    // The Secrets it owned are garbage-collected with it.
    let secrets = world.api::<k8s_openapi::api::core::v1::Secret>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for owned in ["gone-credentials", "gone-root-password"] {
        while secrets.get_opt(owned).await.expect("get secret").is_some() {
            assert!(tokio::time::Instant::now() < deadline, "Secret {owned} outlived its Container");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Creating: the create task is waited on, then the guest destroyed.
    sim(&world, "/sim/task-duration", json!({"type": "vzcreate", "ms": 4000})).await;
    world.apply(container("early", "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    let ct = world
        .wait_for("early", READY_TIMEOUT, "a create task in flight", |ct| {
            ct.status.as_ref().and_then(|s| s.task_ref.as_deref()).is_some_and(|t| t.contains(":vzcreate:"))
        })
        .await
        .expect("creating");
    let vmid = ct.status.expect("status").vmid.expect("vmid");
    api.delete("early", &DeleteParams::default()).await.expect("delete");
    wait_gone(&world, "early").await;
    assert!(!guest_exists(&world, vmid).await, "CT {vmid} destroyed after its create finished");
    sim(&world, "/sim/task-duration", json!({"type": "vzcreate", "ms": 0})).await;

    // Retain: the guest stays.
    let mut kept = container("kept", "web", json!({"ipv4": "dhcp"}));
    kept["spec"]["deletionPolicy"] = "Retain".into();
    world.apply(kept).await.expect("container");
    let ct = world.wait_phase("kept", Phase::Ready, READY_TIMEOUT).await.expect("Ready");
    let vmid = ct.status.expect("status").vmid.expect("vmid");
    api.delete("kept", &DeleteParams::default()).await.expect("delete");
    wait_gone(&world, "kept").await;
    assert!(guest_exists(&world, vmid).await, "CT {vmid} retained");
}

#[tokio::test]
async fn foreign_guest_at_the_vmid_is_an_error_and_untouched() {
    let mut world = World::new("foreign").await.expect("world");
    world.start_controller(&[]).expect("controller");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(world.sim.cert_pem.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let created = http
        .post(world.sim.api_url("/nodes/pve1/lxc"))
        .header("Authorization", world.sim.auth_header())
        .form(&[
            ("vmid", "150"),
            ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
            ("hostname", "someone-elses"),
            ("description", "hand-made guest"),
        ])
        .send()
        .await
        .expect("create foreign guest");
    assert!(created.status().is_success(), "{}", created.text().await.unwrap_or_default());
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let before = loop {
        let config = world.pve_get("/nodes/pve1/lxc/150/config").await.expect("config");
        if config.get("lock").is_none_or(Value::is_null) {
            break config;
        }
        assert!(tokio::time::Instant::now() < deadline, "the hand-made guest's create never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    world.apply(template("web", false)).await.expect("template");
    let mut ct = container("squatter", "web", json!({"ipv4": "dhcp"}));
    ct["spec"]["vmid"] = 150.into();
    world.apply(ct).await.expect("container");
    let ct = world.wait_phase("squatter", Phase::Error, READY_TIMEOUT).await.expect("Error");
    let status = ct.status.expect("status");
    assert!(status.message.as_deref().unwrap_or_default().contains("vmid 150"), "{:?}", status.message);
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready condition");
    assert_eq!(ready.reason, "ForeignGuest");

    world.api::<Container>().delete("squatter", &DeleteParams::default()).await.expect("delete");
    wait_gone(&world, "squatter").await;
    let after = world.pve_get("/nodes/pve1/lxc/150/config").await.expect("config");
    assert_eq!(before, after, "the foreign guest is untouched");
    let tasks = world.pve_get("/nodes/pve1/tasks?vmid=150").await.expect("tasks");
    let types: Vec<&str> = tasks.as_array().into_iter().flatten().filter_map(|t| t["type"].as_str()).collect();
    assert_eq!(types, ["vzcreate"], "no task other than its own create touched CT 150");
}

#[tokio::test]
async fn changed_host_key_is_an_error() {
    let mut world = World::new("hostkey").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    world.apply(container("rekeyed", "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    let ct = world.wait_phase("rekeyed", Phase::Ready, READY_TIMEOUT).await.expect("Ready");
    let ip = ct.status.clone().expect("status").ip_address.expect("ip");

    // Someone replaces the container's host keys and restarts sshd.
    let key = controller_key(&world).await;
    ssh(&ip, key.path(), "rm -f /etc/ssh/ssh_host_*; ssh-keygen -A >/dev/null; kill -HUP $(pgrep -o -x sshd)");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A spec change makes the controller deploy again.
    let mut changed = container("rekeyed", "web", json!({"ipv4": "dhcp"}));
    changed["spec"]["tags"] = json!(["web", "v2"]);
    world.apply(changed).await.expect("spec change");
    let ct = world
        .wait_for("rekeyed", READY_TIMEOUT, "phase Error", |ct| {
            ct.status.as_ref().and_then(|s| s.phase) == Some(Phase::Error)
        })
        .await
        .expect("Error");
    let status = ct.status.expect("status");
    let message = status.message.unwrap_or_default();
    assert!(message.starts_with("deploying failed") && message.contains("host key"), "{message}");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready condition");
    assert_eq!(ready.reason, "HostKeyMismatch");
}

#[tokio::test]
async fn a_missing_secret_is_retried_with_a_growing_backoff_not_a_hot_loop() {
    let mut world = World::new("backoff").await.expect("world");
    let index = world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    let mut patient = container("patient", "web", json!({"ipv4": "dhcp"}));
    patient["spec"]["rootPasswordSecretRef"] = json!({"name": "patient-password", "key": "password"});
    world.apply(patient).await.expect("container");

    tokio::time::sleep(Duration::from_secs(30)).await;
    let attempts = world.controller_logs().lines().filter(|l| l.contains("reconcile failed; retrying")).count();
    println!("backoff: {attempts} failed reconciles in 30 s while a Secret is missing");
    assert!((3..=10).contains(&attempts), "{attempts} attempts in 30 s:\n{}", world.controller(index).log_tail(10));

    world
        .apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "patient-password"},
                      "stringData": {"password": "correct-horse-battery"}}))
        .await
        .expect("secret");
    world.wait_phase("patient", Phase::Ready, READY_TIMEOUT).await.expect("Ready once the Secret exists");
}

#[tokio::test]
async fn retain_keeps_the_guest_and_its_secrets() {
    let mut world = World::new("retain").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    let mut kept = container("kept", "web", json!({"ipv4": "dhcp"}));
    kept["spec"]["deletionPolicy"] = "Retain".into();
    world.apply(kept).await.expect("container");
    let ct = world.wait_phase("kept", Phase::Ready, READY_TIMEOUT).await.expect("Ready");
    let uid = ct.metadata.uid.clone().expect("uid");
    let vmid = ct.status.expect("status").vmid.expect("vmid");
    world.api::<Container>().delete("kept", &DeleteParams::default()).await.expect("delete");
    wait_gone(&world, "kept").await;
    assert!(guest_exists(&world, vmid).await, "CT {vmid} retained");

    // Garbage collection had time to act on anything still owned.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let secrets = world.api::<k8s_openapi::api::core::v1::Secret>();
    for name in ["kept-root-password", "kept-credentials"] {
        let secret = secrets.get_opt(name).await.expect("get").unwrap_or_else(|| panic!("Secret {name} was collected"));
        let owners = secret.metadata.owner_references.unwrap_or_default();
        assert!(owners.iter().all(|owner| owner.uid != uid), "{name} still owned by the deleted Container");
        assert!(!secret.data.unwrap_or_default().is_empty(), "{name} keeps its values");
    }
}

#[tokio::test]
async fn a_generated_password_secret_of_another_container_is_not_taken() {
    let mut world = World::new("pwowner").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    // A Container that owns a Secret named like the next one's generated one.
    world
        .apply(json!({"apiVersion": "infrahaus.io/v1alpha1", "kind": "Container", "metadata": {"name": "holder"},
                      "spec": {"nodeRef": {"name": "nowhere"}}}))
        .await
        .expect("holder");
    let holder = world.container("holder").await.expect("holder");
    world
        .apply(json!({"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": "again-root-password", "ownerReferences": [{
                          "apiVersion": "infrahaus.io/v1alpha1", "kind": "Container", "name": "holder",
                          "uid": holder.metadata.uid, "controller": true}]},
                      "stringData": {"password": "holders-password"}}))
        .await
        .expect("secret");
    world.apply(container("again", "web", json!({"ipv4": "dhcp"}))).await.expect("container");

    let ct = world
        .wait_for("again", READY_TIMEOUT, "Ready or Error", |ct| {
            matches!(ct.status.as_ref().and_then(|s| s.phase), Some(Phase::Ready | Phase::Error))
        })
        .await
        .expect("settled");
    let status = ct.status.expect("status");
    let message = status.message.unwrap_or_default();
    assert_eq!(status.phase, Some(Phase::Error), "took another Container's password Secret: {message}");
    assert!(message.contains("again-root-password belongs to Container holder"), "{message}");
}

#[tokio::test]
async fn a_generated_password_secret_left_by_an_earlier_container_of_the_name_is_waited_out() {
    let mut world = World::new("pwstale").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    // What a deleted Container `again` leaves for the garbage collector: its
    // generated Secret, owned by a uid no Container has any more. The
    // finalizer holds it while the collector is at work, as a slow collector
    // would.
    world
        .apply(json!({"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": "again-root-password", "finalizers": ["test.infrahaus.io/hold"], "ownerReferences": [{
                          "apiVersion": "infrahaus.io/v1alpha1", "kind": "Container", "name": "again",
                          "uid": "0b7a8e52-5d3c-4d0e-9a55-3f1c2b6d9e01", "controller": true}]},
                      "stringData": {"password": "password-of-the-earlier-one"}}))
        .await
        .expect("secret");
    world.apply(container("again", "web", json!({"ipv4": "dhcp"}))).await.expect("container");

    let waiting = world
        .wait_for("again", READY_TIMEOUT, "waiting for the Secret to be collected", |ct| {
            ct.status.as_ref().and_then(|s| s.message.as_deref()).is_some_and(|m| m.contains("garbage-collected"))
        })
        .await
        .expect("waits");
    let status = waiting.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Creating), "{:?}", status.message);
    let guests = world.pve_get("/nodes/pve1/lxc").await.expect("list guests");
    assert_eq!(guests, json!([]), "no guest is created with a password about to be collected");
    let message = status.message.unwrap_or_default();
    assert!(message.contains("again-root-password is left from an earlier Container again"), "{message}");

    // The collector's work ends: the Secret goes.
    let secrets = world.api::<k8s_openapi::api::core::v1::Secret>();
    let release = json!({"metadata": {"finalizers": null}});
    secrets
        .patch("again-root-password", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&release))
        .await
        .expect("release the finalizer");
    match secrets.delete("again-root-password", &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => panic!("delete: {error}"),
    }
    let ct = world.wait_phase("again", Phase::Ready, READY_TIMEOUT).await.expect("Ready once it is gone");
    let secret = secrets.get("again-root-password").await.expect("a new generated Secret");
    let owner = &secret.owner_references()[0];
    assert_eq!(Some(owner.uid.as_str()), ct.metadata.uid.as_deref(), "owned by the new Container");
    let password = secret.data.expect("data")["password"].0.clone();
    assert_ne!(password, b"password-of-the-earlier-one", "a password of its own, not one about to be collected");
}

/// A world with the web template and a Ready Container `name` (also the
/// world's prefix); returns the world and the guest's vmid.
async fn ready_container(name: &str) -> (World, i32) {
    let mut world = World::new(name).await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    world.apply(container(name, "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    let ct = world.wait_phase(name, Phase::Ready, READY_TIMEOUT).await.expect("Ready");
    (world, ct.status.expect("status").vmid.expect("vmid"))
}

#[tokio::test]
async fn deletion_needs_no_template() {
    let (world, vmid) = ready_container("orphan").await;

    // The template goes first, as with `kubectl delete ns` or an Argo CD prune.
    world
        .api::<infrahaus_operator::crd::ContainerTemplate>()
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete template");
    world.api::<Container>().delete("orphan", &DeleteParams::default()).await.expect("delete");
    wait_gone(&world, "orphan").await;
    assert!(!guest_exists(&world, vmid).await, "CT {vmid} destroyed");
}

#[tokio::test]
async fn a_node_outlives_its_containers_and_a_missing_token_holds_the_deletion() {
    let (world, vmid) = ready_container("nodeless").await;
    let nodes = world.api::<infrahaus_operator::crd::ProxmoxNode>();

    // The node goes first, as with `kubectl delete ns`: it stays while the
    // Container uses it.
    nodes.delete("pve1", &DeleteParams::default()).await.expect("delete node");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let node = nodes.get("pve1").await.expect("the node is kept");
        assert!(node.metadata.deletion_timestamp.is_some(), "deletion pending");
        assert!(node.finalizers().iter().any(|f| f == "infrahaus.io/containers"));
        let events = world.api::<k8s_openapi::api::core::v1::Event>().list(&Default::default()).await.expect("events");
        let in_use = events
            .items
            .iter()
            .find(|e| e.involved_object.kind.as_deref() == Some("ProxmoxNode") && e.reason.as_deref() == Some("InUse"));
        if let Some(event) = in_use {
            assert!(event.message.as_deref().unwrap_or_default().contains("still used by nodeless"), "{event:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no InUse Event on the node");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Without the node's token the Container's deletion holds and says why.
    world
        .api::<k8s_openapi::api::core::v1::Secret>()
        .delete("pve1-token", &DeleteParams::default())
        .await
        .expect("delete token");
    world.api::<Container>().delete("nodeless", &DeleteParams::default()).await.expect("delete");
    let ct = world
        .wait_for("nodeless", Duration::from_secs(30), "the reason in status", |ct| {
            ct.status.as_ref().and_then(|s| s.message.as_deref()).is_some_and(|m| m.contains("waits"))
        })
        .await
        .expect("status says why the deletion waits");
    let message = ct.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("token Secret pve1-token"), "{message}");
    assert!(guest_exists(&world, vmid).await, "the guest is not leaked");

    // The token comes back: the guest is destroyed, the Container goes, and
    // then the node.
    world
        .apply(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "pve1-token"},
            "stringData": {"tokenId": world.sim.token_id, "secret": world.sim.token_secret}
        }))
        .await
        .expect("token again");
    wait_gone(&world, "nodeless").await;
    assert!(!guest_exists(&world, vmid).await, "CT {vmid} destroyed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while nodes.get_opt("pve1").await.expect("get node").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the node outlived its last Container");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The vmids of every guest on the node.
async fn guest_vmids(world: &World) -> Vec<i64> {
    let guests = world.pve_get("/nodes/pve1/lxc").await.expect("list guests");
    let mut vmids: Vec<i64> = guests.as_array().into_iter().flatten().filter_map(|g| g["vmid"].as_i64()).collect();
    vmids.sort_unstable();
    vmids
}

/// Every `vzcreate` the node ran, for any vmid.
async fn all_vzcreates(world: &World) -> usize {
    let tasks = world.pve_get("/nodes/pve1/tasks?typefilter=vzcreate&source=all&limit=1000").await.expect("tasks");
    tasks.as_array().map_or(0, Vec::len)
}

/// The next `POST /nodes/pve1/lxc` is carried out but its answer is lost, and
/// the create it starts runs long enough to be seen under its create lock.
async fn lose_next_create_answer(world: &World) {
    sim(world, "/sim/task-duration", json!({"type": "vzcreate", "ms": 4000})).await;
    sim(world, "/sim/drop-response", json!({"method": "POST", "path": "^/nodes/pve1/lxc$"})).await;
}

#[tokio::test]
async fn a_lost_create_answer_neither_duplicates_nor_leaks_the_guest() {
    let mut world = World::new("lostpost").await.expect("world");
    let first = world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");

    // An allocated vmid: the guest the lost POST made is this Container's.
    lose_next_create_answer(&world).await;
    world.apply(container("lost", "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    let ct = world.wait_phase("lost", Phase::Ready, READY_TIMEOUT).await.expect("Ready");
    let vmid = ct.status.expect("status").vmid.expect("vmid");
    assert_eq!(guest_vmids(&world).await, [i64::from(vmid)], "one guest, no second one beside a leaked first");
    assert_eq!(all_vzcreates(&world).await, 1, "exactly one vzcreate");

    // spec.vmid: its own guest is not taken for a foreign one.
    lose_next_create_answer(&world).await;
    let mut pinned = container("lost-pinned", "web", json!({"ipv4": "dhcp"}));
    pinned["spec"]["vmid"] = 170.into();
    world.apply(pinned).await.expect("container");
    let ct = world
        .wait_for("lost-pinned", READY_TIMEOUT, "Ready or Error", |ct| {
            matches!(ct.status.as_ref().and_then(|s| s.phase), Some(Phase::Ready | Phase::Error))
        })
        .await
        .expect("settled");
    let status = ct.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Ready), "{:?}", status.message);
    assert_eq!(all_vzcreates(&world).await, 2);

    // Deleted while the create whose answer was lost still runs, and seen by
    // a controller that goes straight to the deletion: the guest is waited
    // for, recognised and destroyed, not left behind.
    lose_next_create_answer(&world).await;
    world.apply(container("lost-deleted", "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let vmid = loop {
        let ct = world.container("lost-deleted").await.expect("container");
        if let Some(vmid) = ct.status.and_then(|s| s.vmid) {
            if world.vzcreate_tasks(vmid).await.expect("tasks").iter().any(|t| t["endtime"].is_null()) {
                break vmid;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the create of lost-deleted never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    world.controller(first).kill();
    world.api::<Container>().delete("lost-deleted", &DeleteParams::default()).await.expect("delete");
    world.start_controller(&[]).expect("second controller");
    wait_gone(&world, "lost-deleted").await;
    assert!(!guest_exists(&world, vmid).await, "CT {vmid} destroyed, not leaked");
    assert_eq!(guest_vmids(&world).await.len(), 2, "only the two Ready Containers' guests remain");
}

#[tokio::test]
async fn a_guest_that_lost_its_tag_before_start_is_not_started() {
    let mut world = World::new("untagged").await.expect("world");
    world.start_controller(&[]).expect("controller");
    // The first starts fail as a node that does not answer would, which
    // leaves time to change the created guest by hand before Start retries.
    sim(
        &world,
        "/sim/fail",
        json!({"method": "POST", "path": "^/nodes/pve1/lxc/\\d+/status/start$", "count": 3, "status": 596, "message": "Connection timed out"}),
    )
    .await;
    world.apply(template("web", false)).await.expect("template");
    world.apply(container("untagged", "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    let ct = world
        .wait_for("untagged", READY_TIMEOUT, "Create succeeded", |ct| {
            ct.status
                .as_ref()
                .and_then(|s| s.stage(StageName::Creating))
                .is_some_and(|s| s.state == StageState::Succeeded)
        })
        .await
        .expect("created");
    let vmid = ct.status.expect("status").vmid.expect("vmid");
    world.pve_put(&format!("/nodes/pve1/lxc/{vmid}/config"), &[("tags", "web")]).await.expect("retag by hand");

    let ct = world.wait_phase("untagged", Phase::Error, READY_TIMEOUT).await.expect("Error");
    let status = ct.status.expect("status");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready condition");
    assert_eq!(ready.reason, "ForeignGuest", "{:?}", status.message);
    assert!(status.message.as_deref().unwrap_or_default().contains("is not started"), "{:?}", status.message);
    let current = world.pve_get(&format!("/nodes/pve1/lxc/{vmid}/status/current")).await.expect("status");
    assert_eq!(current["status"], "stopped", "the guest was not started");
}

#[tokio::test]
async fn deletion_holds_while_the_node_names_another_proxmox_node() {
    let (world, vmid) = ready_container("moved").await;
    let other = testbed::PveSim::start(testbed::PveSimOptions { node: "pve2".into(), ..Default::default() })
        .await
        .expect("second pve-sim");

    // The ProxmoxNode now points at another node, where the vmid is unknown.
    world
        .apply(json!({
            "apiVersion": "infrahaus.io/v1alpha1", "kind": "ProxmoxNode",
            "metadata": {"name": "pve1"},
            "spec": {
                "endpoint": other.url,
                "nodeName": other.node,
                "tokenSecretRef": {"name": "pve1-token"},
                "tls": {"fingerprint": other.fingerprint},
                "maxConcurrentOperations": 4
            }
        }))
        .await
        .expect("repoint node");
    world.api::<Container>().delete("moved", &DeleteParams::default()).await.expect("delete");
    let ct = world
        .wait_for("moved", Duration::from_secs(30), "the reason in status", |ct| {
            ct.status.as_ref().and_then(|s| s.message.as_deref()).is_some_and(|m| m.contains("waits"))
        })
        .await
        .expect("status says why the deletion waits");
    let message = ct.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("created on node pve1") && message.contains("now names node pve2"), "{message}");
    assert!(guest_exists(&world, vmid).await, "the guest on pve1 is not leaked");

    // The node is put back: the deletion completes on the right node.
    world.apply_node("pve1").await.expect("node restored");
    wait_gone(&world, "moved").await;
    assert!(!guest_exists(&world, vmid).await, "CT {vmid} destroyed");
}

#[tokio::test]
async fn a_slow_redis_does_not_slow_a_chatty_script() {
    let mut world = World::new("slowredis").await.expect("world");
    let redis = testbed::redis().await.expect("redis");
    let url = url::Url::parse(&redis.url).expect("redis url");
    let target = std::net::SocketAddr::new(
        url.host_str().and_then(|h| h.parse().ok()).expect("loopback host"),
        url.port().expect("port"),
    );
    // Every command takes 100 ms to reach Redis: 600 lines published one by
    // one would take a minute, four times the script's timeout.
    let proxy = support::slow_proxy(target, Duration::from_millis(100)).await.expect("proxy");
    world.redis_url = Some(format!("redis://{proxy}"));
    world.start_controller(&[]).expect("controller");
    world
        .apply(json!({
            "apiVersion": "infrahaus.io/v1alpha1", "kind": "ContainerTemplate",
            "metadata": {"name": "chatty"},
            "spec": {
                "osTemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                "scripts": [{
                    "name": "10-chatty.sh",
                    "content": "#!/bin/bash\nfor i in $(seq 600); do echo \"line $i\"; done\n",
                    "timeoutSeconds": 15
                }]
            }
        }))
        .await
        .expect("template");
    world.apply(container("chatty", "chatty", json!({"ipv4": "dhcp"}))).await.expect("container");
    let ct = world
        .wait_for("chatty", READY_TIMEOUT, "Ready or Error", |ct| {
            matches!(ct.status.as_ref().and_then(|s| s.phase), Some(Phase::Ready | Phase::Error))
        })
        .await
        .expect("settled");
    let status = ct.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Ready), "{:?}", status.message);
    // Publishing the lines one at a time, each awaited, costs 600 x 100 ms;
    // Sync must not wait for that. (Half of it is the bound, for a busy machine.)
    let sync = status.stage(StageName::Syncing).expect("Sync stage");
    let (started, finished) = (sync.started_at.clone().expect("start"), sync.finished_at.clone().expect("end"));
    let took = Duration::from_secs_f64(finished.0.duration_since(started.0).as_secs_f64().max(0.0));
    println!("Sync with 600 lines through a Redis 100 ms away took {took:?}");
    assert!(took < Duration::from_secs(30), "Sync waited for Redis: {took:?}");

    // The lines still reach Redis, in order.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let events = world.redis_stream("chatty").await.expect("stream");
        let lines: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "log" && e["script"] == "10-chatty.sh")
            .filter_map(|e| e["message"].as_str())
            .collect();
        if lines.len() == 600 {
            let expected: Vec<String> = (1..=600).map(|i| format!("line {i}")).collect();
            assert_eq!(lines, expected, "in order");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} of 600 lines reached Redis", lines.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
