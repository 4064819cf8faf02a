//! Restarts: the controller is killed (SIGKILL) during a long create task and
//! during a script. A new process resumes where the old one stopped: the
//! create task is waited on rather than issued again, stages that succeeded
//! are not run again, and a script still running in the guest is waited for
//! before it is started again.

use crate::support;

use infrahaus_operator::crd::{Container, Phase, StageName, StageState};
use k8s_openapi::api::core::v1::Event;
use reqwest::Method;
use serde_json::{json, Value};
use support::fixtures::{container, controller_key, ssh, template, READY_TIMEOUT};
use support::World;

fn task_ref(ct: &Container) -> Option<&str> {
    ct.status.as_ref().and_then(|s| s.task_ref.as_deref())
}

/// A template whose one script prints a line, sleeps, and prints another,
/// and records its start and end (with its pid) in `/tmp/runs`.
fn slow_script_template(name: &str) -> Value {
    json!({
        "apiVersion": "infrahaus.io/v1alpha1", "kind": "ContainerTemplate",
        "metadata": {"name": name},
        "spec": {
            "osTemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            "scripts": [{
                "name": "10-slow.sh",
                "content": "#!/bin/bash\necho \"start $$\" >> /tmp/runs\necho 'slow script started'\nsleep 6\necho \"end $$\" >> /tmp/runs\necho 'slow script finished'\n",
                "timeoutSeconds": 120
            }]
        }
    })
}

/// How many `StageStarted` Events the Container got for the stage whose
/// Event action is `action`.
async fn stage_started_events(world: &World, name: &str, action: &str) -> usize {
    let events = world.api::<Event>().list(&Default::default()).await.expect("events");
    events
        .items
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter(|e| e.reason.as_deref() == Some("StageStarted") && e.action.as_deref() == Some(action))
        .count()
}

#[tokio::test]
async fn killed_during_the_create_task_waits_on_that_task_after_a_restart() {
    let mut world = World::new("restart-create").await.expect("world");
    let first = world.start_controller(&[]).expect("controller");
    world
        .sim_admin(Method::POST, "/sim/task-duration", json!({"type": "vzcreate", "ms": 8000}))
        .await
        .expect("slow vzcreate");
    world.apply(template("web", false)).await.expect("template");
    world.apply(container("slow-create", "web", json!({"ipv4": "dhcp"}))).await.expect("container");

    let ct = world
        .wait_for("slow-create", READY_TIMEOUT, "a create task in taskRef", |ct| {
            task_ref(ct).is_some_and(|t| t.contains(":vzcreate:"))
        })
        .await
        .expect("create task recorded");
    world.controller(first).kill();
    let upid = task_ref(&ct).expect("taskRef").to_string();
    let vmid = ct.status.as_ref().and_then(|s| s.vmid).expect("vmid recorded before the create");

    let tasks = world.vzcreate_tasks(vmid).await.expect("tasks");
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert!(tasks[0]["endtime"].is_null(), "the controller died while the create task ran: {tasks:?}");

    world.start_controller(&[]).expect("second controller");
    let ct = world.wait_phase("slow-create", Phase::Ready, READY_TIMEOUT).await.expect("Ready after restart");
    let status = ct.status.expect("status");
    assert_eq!(status.vmid, Some(vmid));
    let tasks = world.vzcreate_tasks(vmid).await.expect("tasks");
    assert_eq!(tasks.len(), 1, "exactly one vzcreate: {tasks:?}");
    assert_eq!(tasks[0]["upid"], upid.as_str(), "the task recorded before the kill is the only one");
    assert!(!status.ssh_host_key_fingerprints.is_empty(), "host keys pinned from the log of the resumed task");
    assert_eq!(stage_started_events(&world, "slow-create", "Create").await, 1);
}

#[tokio::test]
async fn killed_during_a_script_resumes_without_running_finished_stages_again() {
    let mut world = World::new("restart-sync").await.expect("world");
    let first = world.start_controller(&[]).expect("controller");
    world.apply(slow_script_template("slow")).await.expect("template");
    world.apply(container("slow-sync", "slow", json!({"ipv4": "dhcp"}))).await.expect("container");

    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let events = world.redis_stream("slow-sync").await.expect("stream");
        if events.iter().any(|e| e["type"] == "log" && e["message"] == "slow script started") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the slow script never started: {events:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    world.controller(first).kill();
    let before = world.container("slow-sync").await.expect("container").status.expect("status");
    assert_eq!(before.phase, Some(Phase::Syncing), "killed while the script ran");
    let vmid = before.vmid.expect("vmid");
    let finished = [StageName::Creating, StageName::Starting, StageName::Deploying];
    for stage in finished {
        assert_eq!(before.stage(stage).map(|s| s.state), Some(StageState::Succeeded), "{stage}");
    }

    world.start_controller(&[]).expect("second controller");
    let ct = world.wait_phase("slow-sync", Phase::Ready, READY_TIMEOUT).await.expect("Ready after restart");
    let after = ct.status.expect("status");
    for stage in finished {
        assert_eq!(after.stage(stage), before.stage(stage), "{stage} ran again after the restart");
    }
    for action in ["Create", "Start", "Deploy"] {
        assert_eq!(stage_started_events(&world, "slow-sync", action).await, 1, "StageStarted for {action}");
    }
    let tasks = world.vzcreate_tasks(vmid).await.expect("tasks");
    assert_eq!(tasks.len(), 1, "exactly one vzcreate: {tasks:?}");
    let events = world.redis_stream("slow-sync").await.expect("stream");
    assert!(
        events.iter().any(|e| e["type"] == "log" && e["message"] == "slow script finished"),
        "the script ran to its end after the restart: {events:?}"
    );
    assert_eq!(events.last().map(|e| e["type"].clone()), Some(json!("complete")));

    let ip = after.ip_address.expect("ip");
    let key = controller_key(&world).await;
    let runs = ssh(&ip, key.path(), "cat /tmp/runs");
    let runs: Vec<&str> = runs.lines().map(|l| l.split(' ').next().unwrap_or_default()).collect();
    assert_eq!(
        runs,
        ["start", "end", "start", "end"],
        "the resumed Sync started the script only after the run the killed controller left in the guest had ended"
    );
}
