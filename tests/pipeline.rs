//! The five-stage pipeline against the real parts: kube-apiserver, Redis,
//! pve-sim with real containers, and the controller as a process.

use crate::support;

use std::time::Duration;

use infrahaus_operator::crd::{Phase, StageState};
use k8s_openapi::api::core::v1::{Event, Secret};
use serde_json::{json, Value};
use support::fixtures::{container, controller_key, ssh, subscribe, template, READY_TIMEOUT};
use support::World;

async fn happy_path(network: Value, name: &str) {
    let mut world = World::new("happy").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    let events = subscribe(&world, name).await;
    world.apply(container(name, "web", network.clone())).await.expect("container");

    let ct = world.wait_phase(name, Phase::Ready, READY_TIMEOUT).await.expect("Ready");
    let status = ct.status.clone().expect("status");
    let vmid = status.vmid.expect("vmid");
    let ip = status.ip_address.clone().expect("ip");
    assert_eq!(status.progress, Some(100));
    assert_eq!(status.message.as_deref(), Some("Container ready"));
    assert_eq!(status.node.as_deref(), Some("pve1"));
    assert!(status.task_ref.is_none());
    assert_eq!(status.observed_generation, ct.metadata.generation);
    assert!(status.stages.iter().all(|s| s.state == StageState::Succeeded), "{:?}", status.stages);
    assert_eq!(status.stages.len(), 5);
    for condition in ["Created", "Started", "Deployed", "Synced", "Ready"] {
        let c = status.conditions.iter().find(|c| c.type_ == condition).expect(condition);
        assert_eq!(c.status, "True", "{condition}");
        assert_eq!(c.observed_generation, ct.metadata.generation);
    }
    assert!(!status.ssh_host_key_fingerprints.is_empty());
    assert!(status.ssh_host_key_fingerprints.iter().all(|f| f.starts_with("SHA256:")));
    if let Some(static_ip) = network["ipv4"].as_str().filter(|v| *v != "dhcp") {
        assert_eq!(ip, static_ip.split('/').next().unwrap_or_default());
    } else {
        let addr: std::net::Ipv4Addr = ip.parse().expect("IPv4 address");
        assert!(addr.is_loopback(), "dhcp address {ip} is from the simulator's loopback pool");
    }

    // One run to Ready: a wake right after it (its own status writes) runs
    // nothing again, so the stream has one complete event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stream = world.redis_stream(name).await.expect("events stream");
    let completes = stream.iter().filter(|e| e["type"] == "complete").count();
    assert_eq!(completes, 1, "one complete event: {stream:#?}");

    // Discovery: the listener started by the script, and sshd.
    let ports: Vec<(i32, String)> =
        status.listening_ports.iter().map(|p| (p.port, p.process.clone().unwrap_or_default())).collect();
    assert!(ports.contains(&(8080, "python3".to_string())), "ports: {ports:?}");
    assert!(ports.iter().any(|(port, _)| *port == 22), "ports: {ports:?}");
    assert!(status.services.iter().all(|s| !s.starts_with("ssh")), "services: {:?}", status.services);

    // Secrets: credentials found in the container, and the generated root password.
    let creds_name = status.credentials_secret_ref.clone().expect("credentials ref").name;
    assert_eq!(creds_name, format!("{name}-credentials"));
    let creds = world.api::<Secret>().get(&creds_name).await.expect("credentials secret");
    assert_eq!(creds.data.clone().expect("data")["api-key"].0, b"app-api-key-1234");
    let root_ref = status.root_password_secret_ref.clone().expect("root password ref");
    assert_eq!((root_ref.name.as_str(), root_ref.key.as_str()), (format!("{name}-root-password").as_str(), "password"));
    let root = world.api::<Secret>().get(&root_ref.name).await.expect("root password secret");
    // Both are owned by the Container (collected with it) and labelled.
    for secret in [&creds, &root] {
        let owners = secret.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1, "{:?}", secret.metadata.name);
        assert_eq!(owners[0].uid, ct.metadata.uid.clone().expect("uid"));
        let labels = secret.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("infrahaus-operator"));
    }
    assert!(root.data.clone().expect("data")["password"].0.len() >= 16);

    // The guest in Proxmox carries the marker and the tag.
    let config = world.pve_get(&format!("/nodes/pve1/lxc/{vmid}/config")).await.expect("config");
    let description = config["description"].as_str().unwrap_or_default();
    assert!(description.contains(&format!("infrahaus.io/uid={}", ct.metadata.uid.clone().expect("uid"))), "{config}");
    assert!(config["tags"].as_str().unwrap_or_default().split(';').any(|t| t == "infrahaus"), "{config}");
    assert_eq!(config["hostname"], name);

    // Files inside the container, read with the stock ssh client.
    let key = controller_key(&world).await;
    assert_eq!(ssh(&ip, key.path(), "hostname").trim(), name);
    assert_eq!(ssh(&ip, key.path(), "cat /etc/app/app.conf"), "listen=8080\n");
    assert_eq!(
        ssh(&ip, key.path(), "stat -c %a /etc/app/app.conf /etc/infrahaus/credentials")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["640", "700"]
    );
    assert_eq!(ssh(&ip, key.path(), "cat /opt/app/motd"), "hello from infrahaus\n");
    let env = ssh(&ip, key.path(), "cat /etc/config-manager/config.env");
    assert!(
        env.contains(&format!("CONTAINER_NAME={name}")) || env.contains(&format!("CONTAINER_NAME='{name}'")),
        "{env}"
    );
    assert!(env.contains("TEMPLATE_NAME=web") || env.contains("TEMPLATE_NAME='web'"), "{env}");
    ssh(&ip, key.path(), "test -x /usr/local/bin/config-sync.sh && test -f /etc/systemd/system/config-manager.service");
    assert!(!std::path::Path::new("/etc/app/app.conf").exists(), "a container's file reached the host");

    // Kubernetes Events for every stage.
    let k8s_events = world.api::<Event>().list(&Default::default()).await.expect("events");
    let reasons: Vec<String> = k8s_events
        .items
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter_map(|e| e.reason.clone())
        .collect();
    for reason in ["StageStarted", "StageSucceeded", "Ready"] {
        assert!(reasons.iter().any(|r| r == reason), "events: {reasons:?}");
    }
    assert_eq!(reasons.iter().filter(|r| *r == "StageStarted").count(), 5, "events: {reasons:?}");

    // The exact Redis sequence a subscriber saw.
    let events = tokio::time::timeout(Duration::from_secs(10), events).await.expect("events done").expect("join");
    assert_redis_sequence(&events, &world.ns, name, vmid);
}

fn assert_redis_sequence(events: &[Value], ns: &str, name: &str, vmid: i32) {
    let steps: Vec<&str> =
        events.iter().filter(|e| e["type"] == "step").map(|e| e["step"].as_str().unwrap_or_default()).collect();
    let mut order: Vec<&str> = steps.clone();
    order.dedup();
    assert_eq!(order, ["creating", "starting", "deploying", "syncing", "finalizing"], "steps: {steps:?}");
    let percents: Vec<i64> = events.iter().map(|e| e["percent"].as_i64().expect("percent")).collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "percent decreased: {percents:?}");
    assert_eq!(events.first().map(|e| e["percent"].as_i64()), Some(Some(5)));
    let last = events.last().expect("events");
    assert_eq!(last["type"], "complete");
    assert_eq!(last["percent"], 100);
    for event in events {
        assert_eq!(event["container"]["namespace"], ns);
        assert_eq!(event["container"]["name"], name);
        assert!(event["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{event}");
    }
    assert!(events.iter().filter(|e| e["type"] != "step" || e["step"] != "creating").all(|e| e["vmid"] == vmid));
    let logs: Vec<(&str, &str, &str)> = events
        .iter()
        .filter(|e| e["type"] == "log")
        .map(|e| {
            (
                e["script"].as_str().unwrap_or_default(),
                e["stream"].as_str().unwrap_or_default(),
                e["message"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        logs.iter().any(|(s, st, m)| *s == "10-listener.sh" && *st == "stdout" && m.starts_with("listener started on")),
        "logs: {logs:?}"
    );
    assert!(logs.contains(&("20-credentials.sh", "stdout", "writing credentials")), "logs: {logs:?}");
    assert!(logs.contains(&("20-credentials.sh", "stderr", "credentials written")), "logs: {logs:?}");
}

#[tokio::test]
async fn dhcp_container_reaches_ready() {
    happy_path(json!({"bridge": "vmbr0", "ipv4": "dhcp"}), "web-dhcp").await;
}

#[tokio::test]
async fn static_ip_container_reaches_ready() {
    happy_path(json!({"bridge": "vmbr0", "ipv4": "127.0.101.7/24", "gateway": "127.0.101.1"}), "web-static").await;
}

#[tokio::test]
async fn failing_script_is_an_error_and_retry_resumes_without_recreating() {
    let mut world = World::new("script").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", true)).await.expect("template");
    let events = subscribe(&world, "web-fail").await;
    world.apply(container("web-fail", "web", json!({"ipv4": "dhcp"}))).await.expect("container");

    let ct = world.wait_phase("web-fail", Phase::Error, READY_TIMEOUT).await.expect("Error");
    let status = ct.status.clone().expect("status");
    let message = status.message.clone().unwrap_or_default();
    assert!(message.starts_with("syncing failed"), "{message}");
    assert!(message.contains("20-credentials.sh") && message.contains("exited with code 3"), "{message}");
    assert!(message.contains("disk full") && message.contains("writing credentials"), "{message}");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready condition");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "ScriptFailed"));
    let events = tokio::time::timeout(Duration::from_secs(10), events).await.expect("events").expect("join");
    let last = events.last().expect("events");
    assert_eq!((last["type"].as_str(), last["step"].as_str()), (Some("error"), Some("syncing")), "{last}");

    // Error is final for this generation: nothing more happens by itself.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(world.container("web-fail").await.expect("get").status.expect("status").phase, Some(Phase::Error));

    world.apply(template("web", false)).await.expect("fixed template");
    world
        .apply(json!({
            "apiVersion": "infrahaus.io/v1alpha1", "kind": "Container",
            "metadata": {"name": "web-fail", "annotations": {"infrahaus.io/retry": "1"}},
            "spec": {"nodeRef": {"name": "pve1"}, "templateRef": {"name": "web"}, "network": {"ipv4": "dhcp"}, "tags": ["web"]}
        }))
        .await
        .expect("retry annotation");
    world
        .wait_for("web-fail", READY_TIMEOUT, "retry picked up", |ct| {
            ct.status.as_ref().and_then(|s| s.last_applied_retry.as_deref()) == Some("1")
        })
        .await
        .expect("controller acts on the retry annotation");
    let ct = world.wait_phase("web-fail", Phase::Ready, READY_TIMEOUT).await.expect("Ready after retry");
    let vmid = ct.status.expect("status").vmid.expect("vmid");
    let tasks = world.pve_get(&format!("/nodes/pve1/tasks?vmid={vmid}&typefilter=vzcreate")).await.expect("tasks");
    assert_eq!(tasks.as_array().map(Vec::len), Some(1), "exactly one vzcreate: {tasks}");
}

#[tokio::test]
async fn a_failure_with_long_output_keeps_its_event_and_a_bounded_status() {
    let mut world = World::new("noisy").await.expect("world");
    world.start_controller(&[]).expect("controller");
    let mut noisy = template("noisy", false);
    noisy["spec"]["scripts"] = json!([{
        "name": "10-noisy.sh",
        "content": "#!/bin/bash\nfor i in $(seq 12); do printf 'line %s ' $i; head -c 600 /dev/zero | tr '\\0' x; echo; done\nexit 4\n"
    }]);
    world.apply(noisy).await.expect("template");
    world.apply(container("noisy", "noisy", json!({"ipv4": "dhcp"}))).await.expect("container");

    let ct = world.wait_phase("noisy", Phase::Error, READY_TIMEOUT).await.expect("Error");
    let message = ct.status.expect("status").message.unwrap_or_default();
    assert!(message.contains("10-noisy.sh") && message.contains("exited with code 4"), "{message}");
    assert!(message.contains("line 12 xxx"), "the last output lines are in the message: {message}");

    // The StageFailed Event is kept: a note over 1,024 bytes would be rejected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let note = loop {
        let events = world.api::<Event>().list(&Default::default()).await.expect("events");
        let failed = events
            .items
            .into_iter()
            .find(|e| e.involved_object.name.as_deref() == Some("noisy") && e.reason.as_deref() == Some("StageFailed"));
        if let Some(event) = failed {
            break event.message.unwrap_or_default();
        }
        assert!(tokio::time::Instant::now() < deadline, "no StageFailed Event for a long failure message");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(note.len() <= 1024, "{} bytes", note.len());
    assert!(note.starts_with("syncing failed: script 10-noisy.sh exited with code 4"), "{note}");
}

/// The percents of every event in the Container's Redis stream, in order,
/// never go down (one generation).
async fn assert_percent_never_goes_down(world: &World, name: &str) {
    let events = world.redis_stream(name).await.expect("stream");
    let percents: Vec<u64> = events.iter().filter_map(|event| event["percent"].as_u64()).collect();
    assert!(percents.len() > 10, "{events:?}");
    assert!(percents.windows(2).all(|pair| pair[0] <= pair[1]), "percent went down: {percents:?}");
}

#[tokio::test]
async fn percent_never_goes_down_within_a_generation_across_a_restart() {
    let mut world = World::new("percent").await.expect("world");
    let first = world.start_controller(&[]).expect("controller");
    let mut slow = template("web", false);
    slow["spec"]["scripts"] = json!([
        {"name": "10-first.sh", "content": "#!/bin/bash\necho one\n"},
        {"name": "20-slow.sh", "content": "#!/bin/bash\nsleep 6\necho done\n"}
    ]);
    world.apply(slow).await.expect("template");
    world.apply(container("steady", "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    world
        .wait_for("steady", READY_TIMEOUT, "the slow script running", |ct| {
            ct.status.as_ref().and_then(|s| s.progress).is_some_and(|p| p >= 81)
        })
        .await
        .expect("Syncing past the first script");
    world.controller(first).kill();
    world.start_controller(&[]).expect("second controller");
    world.wait_phase("steady", Phase::Ready, READY_TIMEOUT).await.expect("Ready after the restart");

    assert_percent_never_goes_down(&world, "steady").await;
}

#[tokio::test]
async fn percent_never_goes_down_within_a_generation_across_a_retry() {
    let mut world = World::new("percent").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", true)).await.expect("template");
    world.apply(container("steady", "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    world.wait_phase("steady", Phase::Error, READY_TIMEOUT).await.expect("Error");

    world.apply(template("web", false)).await.expect("fixed template");
    let mut retried = container("steady", "web", json!({"ipv4": "dhcp"}));
    retried["metadata"]["annotations"] = json!({"infrahaus.io/retry": "1"});
    world.apply(retried).await.expect("retry annotation");
    world
        .wait_for("steady", READY_TIMEOUT, "retry picked up", |ct| {
            ct.status.as_ref().and_then(|s| s.last_applied_retry.as_deref()) == Some("1")
        })
        .await
        .expect("controller acts on the retry annotation");
    world.wait_phase("steady", Phase::Ready, READY_TIMEOUT).await.expect("Ready after the retry");

    assert_percent_never_goes_down(&world, "steady").await;
}

#[tokio::test]
async fn a_changed_static_address_does_not_strand_a_ready_container() {
    let mut world = World::new("readdress").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    let network = |ip: &str| json!({"bridge": "vmbr0", "ipv4": ip, "gateway": "127.0.102.1"});
    world.apply(container("moving", "web", network("127.0.102.7/24"))).await.expect("container");
    world.wait_phase("moving", Phase::Ready, READY_TIMEOUT).await.expect("Ready");

    // Until network changes are applied to the guest, it keeps its address,
    // and the new generation is deployed there.
    world.apply(container("moving", "web", network("127.0.102.8/24"))).await.expect("changed address");
    let ct = world
        .wait_for("moving", Duration::from_secs(90), "Ready for the new generation", |ct| {
            let status = ct.status.as_ref();
            status.and_then(|s| s.phase) == Some(Phase::Ready)
                && status.and_then(|s| s.observed_generation) == ct.metadata.generation
        })
        .await
        .expect("not stuck in Deploying");
    assert_eq!(ct.status.and_then(|s| s.ip_address).as_deref(), Some("127.0.102.7"), "the address the guest has");
}

/// Containers waiting for a node slot hold the vmids they were given, and
/// the next Container skips them and another client's guests above them:
/// each is created once, without a vmid found taken again and again.
#[tokio::test]
async fn containers_queued_together_skip_each_others_vmids_and_another_clients_guests() {
    let mut world = World::new("vmids").await.expect("world");
    for vmid in ["101", "102"] {
        let form = [
            ("vmid", vmid),
            ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
            ("hostname", "someone-else"),
        ];
        let upid = world.pve_request(reqwest::Method::POST, "/nodes/pve1/lxc", &form).await.expect("foreign guest");
        world.pve_wait_task(&upid).await.expect("created");
    }
    // One slot, taken by a long create at a vmid of the spec's choosing:
    // the others are given vmids and wait for it.
    world.apply_node_with_slots("pve1", 1).await.expect("one slot");
    let slow = json!({"type": "vzcreate", "ms": 3000});
    world.sim_admin(reqwest::Method::POST, "/sim/task-duration", slow).await.expect("slow creates");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    let mut first = container("vm-first", "web", json!({"ipv4": "dhcp"}));
    first["spec"]["vmid"] = 200.into();
    world.apply(first).await.expect("container");
    world.wait_active_task("vzcreate", READY_TIMEOUT).await.expect("a create on pve1");
    let names = ["vm-a", "vm-b", "vm-c"];
    for name in names {
        world.apply(container(name, "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    }
    let mut vmids = Vec::new();
    for name in names {
        let ct = world.wait_phase(name, Phase::Ready, READY_TIMEOUT).await.expect("Ready");
        vmids.push(ct.status.and_then(|s| s.vmid).expect("vmid"));
    }
    vmids.sort();
    vmids.dedup();
    assert_eq!(vmids.len(), names.len(), "one vmid each: {vmids:?}");
    assert!(!vmids.contains(&101) && !vmids.contains(&102), "another client's guests are left alone: {vmids:?}");
    let logs = world.controller_logs();
    let retried: Vec<&str> = logs.lines().filter(|l| l.contains("reconcile failed; retrying")).collect();
    assert!(retried.is_empty(), "no allocation failed: {retried:#?}");
}
