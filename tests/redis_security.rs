//! Redis secured as production runs it: a password (`requirepass`) and TLS
//! (`rediss://`, a certificate from a private CA given with
//! `--redis-ca-file`). The controller publishes every event, `watch` and the
//! dashboard follow them, and the password reaches no log.

use std::process::Command;
use std::time::Duration;

use crate::support;

use infrahaus_operator::crd::Phase;
use serde_json::json;
use support::dashboard::Dashboard;
use support::fixtures::{container, template, READY_TIMEOUT};
use support::World;
use testbed::redis_server::RedisSecurity;

const PASSWORD: &str = "redis-Pa55word-never-logged";

async fn secured(tls: bool) {
    let security = RedisSecurity { password: Some(PASSWORD.to_owned()), tls };
    let redis = testbed::secured_redis(security).await.expect("redis-server");
    assert_eq!(redis.url.starts_with("rediss://"), tls, "{}", redis.url.replace(PASSWORD, "…"));
    // The server really asks for the password.
    let anonymous = redis.url.replace(&format!(":{PASSWORD}@"), "");
    let client = infrahaus_operator::redis_client::open(&anonymous, redis.ca_file.as_deref()).expect("client");
    let mut connection = client.get_multiplexed_async_connection().await.expect("connect");
    let refused = redis::cmd("XLEN").arg("x").query_async::<i64>(&mut connection).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("NOAUTH")), "Redis takes commands without the password");

    let prefix = if tls { "redis-tls" } else { "redis-auth" };
    let mut world = World::new(prefix).await.expect("world");
    world.redis_url = Some(redis.url.clone());
    world.redis_ca_file = redis.ca_file.clone();
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    world.apply(container("web-r", "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    world.wait_phase("web-r", Phase::Ready, READY_TIMEOUT).await.expect("Ready");

    // Every event went through: the stream ends with `complete`.
    let events = world.redis_stream_until_complete("web-r", Duration::from_secs(10)).await.expect("stream");
    assert!(events.iter().any(|e| e["type"] == "complete"), "no complete event in {} events", events.len());
    assert!(events.iter().any(|e| e["step"] == "syncing" && e["type"] == "log"), "script output is in the stream");

    // `watch` replays the stream through the same URL and CA.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_infrahaus-operator"));
    watch
        .args(["watch", &format!("{}/web-r", world.ns), "--timeout", "30s"])
        .env("KUBECONFIG", &world.kube.kubeconfig)
        .env("REDIS_URL", &redis.url)
        .env_remove("REDIS_CA_FILE");
    if let Some(ca) = &redis.ca_file {
        watch.arg("--redis-ca-file").arg(ca);
    }
    let out = tokio::task::spawn_blocking(move || watch.output().expect("watch")).await.expect("join");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let errors = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}\n{errors}");
    assert!(text.lines().last().is_some_and(|l| l.starts_with("[100%] complete")), "{text}");

    // The dashboard follows it too.
    let mut extra = vec!["--auth=none".to_owned()];
    if let Some(ca) = &redis.ca_file {
        extra.push(format!("--redis-ca-file={}", ca.display()));
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let dashboard = Dashboard::start(&world, Some(&redis.url), &extra).await.expect("dashboard");
    let mut stream = dashboard.events(&world.ns, "web-r", None, &[]).await.expect("event stream");
    let replayed = stream.take(events.len(), Duration::from_secs(20)).await.expect("replay");
    assert_eq!(replayed.len(), events.len(), "the dashboard replays every event");

    for (place, text) in [("controller log", world.controller_logs()), ("dashboard log", dashboard.log_text())] {
        assert!(!text.contains(PASSWORD), "the {place} holds the Redis password");
        assert!(!text.contains("progress events are not reaching Redis"), "the {place} says Redis failed:\n{text}");
    }
    assert!(!errors.contains(PASSWORD) && !text.contains(PASSWORD), "watch printed the Redis password");
}

#[tokio::test]
async fn a_redis_with_a_password_gets_every_event_and_the_password_is_never_logged() {
    secured(false).await;
}

#[tokio::test]
async fn a_redis_over_tls_with_a_private_ca_gets_every_event() {
    secured(true).await;
}
