//! Misbehaving scripts: one that never exits is stopped at its timeout (its
//! process in the guest killed, not left running) and the stage fails with
//! the script's name and the timeout; one that leaves a background child
//! holding stdout open does not hang the stage; floods of output (200 MB,
//! lines of 10 MB, bytes that are not UTF-8) leave the controller's memory
//! bounded (the peak RSS is printed) and the events readable.

use std::time::{Duration, Instant};

use crate::support;

use infrahaus_operator::crd::Phase;
use serde_json::{json, Value};
use support::fixtures::{container, controller_key, ssh, READY_TIMEOUT};
use support::{rss_kib, World};

fn template(name: &str, scripts: Value) -> Value {
    json!({
        "apiVersion": "infrahaus.io/v1alpha1", "kind": "ContainerTemplate",
        "metadata": {"name": name},
        "spec": {"osTemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", "scripts": scripts}
    })
}

/// The pids of processes in the guest whose command line is `command`.
fn guest_processes(ip: &str, key: &std::path::Path, command: &str) -> String {
    let list = format!(
        "for p in /proc/[0-9]*; do [ \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" = '{command} ' ] && echo ${{p#/proc/}}; done; true"
    );
    ssh(ip, key, &list)
}

#[tokio::test]
async fn a_script_that_never_exits_is_killed_at_its_timeout() {
    let mut world = World::new("script-hang").await.expect("world");
    world.start_controller(&[]).expect("controller");
    let scripts = json!([{"name": "10-hang.sh", "content": "#!/bin/bash\necho waiting forever\nexec sleep 4242\n", "timeoutSeconds": 3}]);
    world.apply(template("hang", scripts)).await.expect("template");
    world.apply(container("hang", "hang", json!({"ipv4": "dhcp"}))).await.expect("container");

    let ct = world.wait_phase("hang", Phase::Error, READY_TIMEOUT).await.expect("Error");
    let status = ct.status.expect("status");
    let message = status.message.unwrap_or_default();
    assert!(message.starts_with("syncing failed: script 10-hang.sh did not finish within 3s"), "{message}");
    let ip = status.ip_address.expect("ip");
    let key = controller_key(&world).await;
    let left = guest_processes(&ip, key.path(), "sleep 4242");
    assert_eq!(left.trim(), "", "the script's process is killed in the guest");
}

#[tokio::test]
async fn a_background_child_holding_stdout_does_not_hang_the_stage() {
    let mut world = World::new("script-child").await.expect("world");
    world.start_controller(&[]).expect("controller");
    // The child inherits stdout and stderr and outlives the script.
    let scripts = json!([{"name": "10-child.sh", "content": "#!/bin/bash\nsleep 300 &\necho started a child\n", "timeoutSeconds": 120}]);
    world.apply(template("child", scripts)).await.expect("template");
    let started = Instant::now();
    world.apply(container("child", "child", json!({"ipv4": "dhcp"}))).await.expect("container");
    let ct = world.wait_phase("child", Phase::Ready, READY_TIMEOUT).await.expect("Ready");
    let took = started.elapsed();
    let synced = ct.status.as_ref().and_then(|s| s.stage(infrahaus_operator::crd::StageName::Syncing)).cloned();
    let secs = synced
        .and_then(|s| Some(s.finished_at?.0.duration_since(s.started_at?.0).as_secs_f64()))
        .expect("Sync's times");
    println!("a script leaving a child on stdout: Sync took {secs:.1} s, Ready after {:.1} s", took.as_secs_f64());
    assert!(secs < 60.0, "Sync waited for the child ({secs:.1} s): the script ended at once");
}

#[tokio::test]
async fn floods_of_output_leave_the_controller_bounded_and_the_events_readable() {
    let mut world = World::new("script-flood").await.expect("world");
    let controller = world.start_controller(&[]).expect("controller");
    let scripts = json!([
        {"name": "10-bulk.sh", "content": "#!/bin/bash\nhead -c 200000000 /dev/zero | tr '\\0' x | fold -w 4000\necho bulk done\n", "timeoutSeconds": 600},
        {"name": "20-long-lines.sh", "content": "#!/bin/bash\nfor i in 1 2 3; do head -c 10485760 /dev/zero | tr '\\0' y; echo; done\necho long lines done\n", "timeoutSeconds": 600},
        {"name": "30-binary.sh", "content": "#!/bin/bash\nprintf 'bad \\xff\\xfe bytes \\xc3\\x28 here\\n'\nhead -c 100000 /dev/urandom\necho\necho binary done\n", "timeoutSeconds": 600}
    ]);
    world.apply(template("flood", scripts)).await.expect("template");
    let pid = world.controller(controller).pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid);
    world.apply(container("flood", "flood", json!({"ipv4": "dhcp"}))).await.expect("container");
    let mut peak = idle;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        peak = peak.max(rss_kib(pid));
        let phase = world.container("flood").await.ok().and_then(|ct| ct.status?.phase);
        if phase == Some(Phase::Ready) {
            break;
        }
        assert_ne!(phase, Some(Phase::Error), "the flood failed: {}", world.controller_logs());
        assert!(Instant::now() < deadline, "not Ready after 900 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "floods of output (200 MB, 3 lines of 10 MB, bytes that are not UTF-8): controller RSS idle {:.1} MiB, peak {:.1} MiB",
        idle as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    assert!(peak < idle + 200 * 1024, "the controller held the output: idle {idle} KiB, peak {peak} KiB");

    // What is queued for Redis is still going out: wait for the end.
    let events = world.redis_stream_until_complete("flood", Duration::from_secs(120)).await.expect("stream");
    let logs: Vec<&Value> = events.iter().filter(|e| e["type"] == "log").collect();
    assert!(logs.iter().all(|e| e["message"].as_str().is_some_and(|m| m.len() <= 4096)), "bounded lines");
    // The stream keeps about the last 1,000 events: the end of the flood.
    let tail: Vec<String> = events
        .iter()
        .rev()
        .take(6)
        .map(|e| e["message"].as_str().unwrap_or_default().chars().take(80).collect())
        .collect();
    assert!(logs.iter().any(|e| e["message"] == "binary done"), "the last line is in the stream: {tail:#?}");
    let bad = logs.iter().find(|e| e["message"].as_str().is_some_and(|m| m.starts_with("bad "))).expect("the bad line");
    assert_eq!(
        bad["message"], "bad \u{fffd}\u{fffd} bytes \u{fffd}( here",
        "invalid bytes are replaced, the rest kept"
    );
}
