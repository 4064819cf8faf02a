//! `infrahaus-operator watch` against the real parts: the controller takes a
//! Container through its stages while the watch command follows it, from
//! Redis or from the Container's status.

use crate::support;

use std::process::{Command, Output};

use serde_json::json;
use support::fixtures::{container, template};
use support::World;

const WATCH_TIMEOUT: &str = "180s";

/// Runs `infrahaus-operator watch <ns>/<name>` without a terminal, reading
/// from Redis when `redis` is set and from the Kubernetes API otherwise.
fn watch_command(world: &World, name: &str, redis: bool, timeout: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_infrahaus-operator"));
    cmd.arg("watch")
        .arg(format!("{}/{name}", world.ns))
        .args(["--timeout", timeout])
        .env("KUBECONFIG", &world.kube.kubeconfig)
        .env_remove("REDIS_URL")
        .env_remove("NO_COLOR");
    if redis {
        cmd.env("REDIS_URL", world.redis_url.as_deref().expect("redis"));
    }
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run infrahaus-operator watch")).await.expect("join")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The event lines of a watch's output (those that start with a percent).
fn event_lines(out: &Output) -> Vec<String> {
    stdout(out).lines().filter(|l| l.starts_with('[')).map(str::to_owned).collect()
}

#[tokio::test]
async fn redis_watch_shows_every_step_and_script_line_and_exits_0() {
    let mut world = World::new("watch").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    let live = tokio::spawn(run(watch_command(&world, "web-watch", true, WATCH_TIMEOUT)));
    world.apply(container("web-watch", "web", json!({"ipv4": "dhcp"}))).await.expect("container");

    let live = live.await.expect("join");
    let text = stdout(&live);
    assert_eq!(live.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&live.stderr));
    assert!(!text.contains('\x1b'), "no ANSI without a terminal: {text}");
    for step in ["creating", "starting", "deploying", "syncing", "finalizing"] {
        assert!(text.lines().any(|l| l.contains(&format!("%] {step}"))), "step {step} missing:\n{text}");
    }
    assert!(text.contains("10-listener.sh: listener started on"), "{text}");
    assert!(text.contains("20-credentials.sh (stderr): credentials written"), "{text}");
    assert!(text.lines().last().is_some_and(|l| l.starts_with("[100%] complete")), "{text}");

    // A late watcher replays the same events from the stream, each once.
    let replay = run(watch_command(&world, "web-watch", true, "30s")).await;
    assert_eq!(replay.status.code(), Some(0), "{}", stdout(&replay));
    assert_eq!(event_lines(&replay), event_lines(&live));

    // Events that never reached Redis: the watch falls back to the status.
    let url = world.redis_url.clone().expect("redis");
    let mut redis = redis::Client::open(url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let key = format!("container:{}/web-watch:events", world.ns);
    redis::cmd("DEL").arg(&key).exec_async(&mut redis).await.expect("DEL");
    let quiet = run(watch_command(&world, "web-watch", true, "30s")).await;
    let text = stdout(&quiet);
    assert_eq!(quiet.status.code(), Some(0), "{text}");
    assert!(text.lines().last().is_some_and(|l| l.starts_with("[100%] Ready")), "{text}");
}

#[tokio::test]
async fn a_failing_script_makes_both_watch_modes_exit_1() {
    let mut world = World::new("watch-fail").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", true)).await.expect("template");
    let from_redis = tokio::spawn(run(watch_command(&world, "web-fail", true, WATCH_TIMEOUT)));
    let from_status = tokio::spawn(run(watch_command(&world, "web-fail", false, WATCH_TIMEOUT)));
    world.apply(container("web-fail", "web", json!({"ipv4": "dhcp"}))).await.expect("container");

    let from_redis = from_redis.await.expect("join");
    let text = stdout(&from_redis);
    assert_eq!(from_redis.status.code(), Some(1), "{text}\n{}", String::from_utf8_lossy(&from_redis.stderr));
    assert!(text.contains("20-credentials.sh (stderr): disk full"), "{text}");
    let last_event = event_lines(&from_redis).into_iter().rev().find(|l| l.contains("] error")).unwrap_or_default();
    assert!(last_event.contains("syncing failed"), "{text}");
    assert!(text.contains("exited with code 3"), "{text}");

    let from_status = from_status.await.expect("join");
    let text = stdout(&from_status);
    assert_eq!(from_status.status.code(), Some(1), "{text}\n{}", String::from_utf8_lossy(&from_status.stderr));
    assert!(text.lines().any(|l| l.contains("] Error")), "{text}");
    assert!(text.contains("20-credentials.sh"), "{text}");
}

#[tokio::test]
async fn without_redis_watch_follows_the_status_until_ready() {
    let mut world = World::new("watch-status").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    let watch = tokio::spawn(run(watch_command(&world, "web-status", false, WATCH_TIMEOUT)));
    world.apply(container("web-status", "web", json!({"ipv4": "dhcp"}))).await.expect("container");

    let out = watch.await.expect("join");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains('\x1b'), "{text}");
    let phases: Vec<&str> =
        text.lines().filter_map(|l| l.get(7..).and_then(|rest| rest.split_whitespace().next())).collect();
    assert!(phases.contains(&"Syncing"), "{text}");
    assert_eq!(phases.last(), Some(&"Ready"), "{text}");
    assert!(text.contains("Container ready"), "{text}");

    // A Container that never appears ends the watch at the timeout, exit 2.
    let out = run(watch_command(&world, "absent", false, "2s")).await;
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not finish within"));
}
