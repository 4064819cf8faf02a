//! No leaks: after a full pipeline, the controller's log (debug level, text
//! and JSON), the Events, the Container and its Redis events hold no
//! password, token, private key or credential value.

use crate::support;

use infrahaus_operator::crd::Phase;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Secret};
use k8s_openapi::api::events::v1::Event;
use serde_json::json;
use support::fixtures::{container, template, READY_TIMEOUT};
use support::World;

/// The value the template's credentials script writes.
const CREDENTIAL: &str = "app-api-key-1234";

async fn nothing_leaks(log_format: &str) {
    let mut world = World::new(&format!("leaks-{log_format}")).await.expect("world");
    world.start_controller(&["--log-format", log_format]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    world.apply(container("web-secret", "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    world.wait_phase("web-secret", Phase::Ready, READY_TIMEOUT).await.expect("Ready");

    let credentials = world.api::<Secret>().get("web-secret-credentials").await.expect("credentials Secret");
    assert_eq!(credentials.data.expect("data")["api-key"].0, CREDENTIAL.as_bytes(), "the script wrote the credential");
    let mut secrets = world.secret_values().await.expect("secret values");
    assert!(secrets.contains(&world.sim.token_secret), "the PVE token secret is checked");
    let root = world.api::<Secret>().get("web-secret-root-password").await.expect("root password Secret");
    secrets.push(String::from_utf8(root.data.expect("data")["password"].0.clone()).expect("UTF-8 password"));
    let key = world.api::<Secret>().get("infrahaus-ssh-key").await.expect("SSH key Secret");
    let pem = String::from_utf8(key.data.expect("data")["ssh-privatekey"].0.clone()).expect("UTF-8 key");
    let key_lines: Vec<String> =
        pem.lines().filter(|l| !l.starts_with("-----") && l.len() >= 8).map(str::to_string).collect();
    assert!(key_lines.len() >= 3, "the private key's body is checked: {} lines", key_lines.len());
    secrets.extend(key_lines);
    secrets.push(CREDENTIAL.to_string());
    secrets.push("PRIVATE KEY".to_string());

    let logs = world.controller_logs();
    if log_format == "json" {
        let first = logs.lines().next().expect("the controller logged");
        serde_json::from_str::<serde_json::Value>(first).expect("JSON log lines");
    }
    assert!(
        logs.contains("web-secret") && logs.contains("writing credentials"),
        "the log covers the pipeline and the scripts' output"
    );
    let events = world.api::<Event>().list(&Default::default()).await.expect("events");
    let core_events = world.api::<CoreEvent>().list(&Default::default()).await.expect("core events");
    let recorded = |list: Vec<String>| list.iter().any(|reason| reason == "StageSucceeded");
    assert!(
        recorded(events.items.iter().filter_map(|e| e.reason.clone()).collect())
            && recorded(core_events.items.iter().filter_map(|e| e.reason.clone()).collect()),
        "Events were recorded"
    );
    let redis = world.redis_stream("web-secret").await.expect("Redis stream");
    assert!(redis.iter().any(|e| e["type"] == "complete"), "the Redis stream covers the pipeline");
    let found = world.places_holding(&secrets, &["web-secret".to_owned()]).await.expect("scan");
    assert!(found.is_empty(), "{found:#?}");
}

#[tokio::test]
async fn no_secret_in_text_logs_events_status_or_redis() {
    nothing_leaks("text").await;
}

#[tokio::test]
async fn no_secret_in_json_logs_events_status_or_redis() {
    nothing_leaks("json").await;
}

#[tokio::test]
async fn a_script_that_prints_a_secret_file_leaks_nothing() {
    let mut world = World::new("printing").await.expect("world");
    world.start_controller(&[]).expect("controller");
    let token = "app-token-8c1f2e9d";
    world
        .apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secret"},
                      "stringData": {"token": token}}))
        .await
        .expect("secret");
    let mut web = template("web", false);
    web["spec"]["files"] = json!([{"path": "/etc/app/token", "mode": "0600",
                                   "contentFrom": {"secretKeyRef": {"name": "app-secret", "key": "token"}}}]);
    web["spec"]["scripts"] = json!([{"name": "10-print.sh",
        "content": "#!/bin/bash\nset -x\nTOKEN=$(cat /etc/app/token)\necho \"token is $TOKEN\"\ncat /etc/app/token >&2\nexit 5\n"}]);
    world.apply(web).await.expect("template");
    world.apply(container("printing", "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    let ct = world.wait_phase("printing", Phase::Error, READY_TIMEOUT).await.expect("Error");

    let message = ct.status.clone().expect("status").message.unwrap_or_default();
    assert!(message.contains("token is [redacted]"), "the line is kept, the value replaced: {message}");
    let status = serde_json::to_string(&ct.status).expect("status json");
    let stream = serde_json::to_string(&world.redis_stream("printing").await.expect("stream")).expect("json");
    assert!(stream.contains("[redacted]"), "{stream}");
    let events = world.api::<CoreEvent>().list(&Default::default()).await.expect("events");
    let notes = serde_json::to_string(&events.items).expect("events json");
    for (place, text) in [("status", &status), ("Redis", &stream), ("Events", &notes)] {
        assert!(!text.contains(token), "the token reached {place}");
    }
}
