//! The Argo CD health check shipped with the chart, run by Lua 5.1 (Argo CD
//! runs gopher-lua, which implements Lua 5.1) the way Argo CD runs it: the
//! object as the global `obj`, a table `{status, message}` returned.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/infrahaus-operator")
}

fn script() -> PathBuf {
    chart_dir().join("argocd/health.lua")
}

/// A Lua 5.1 table constructor for a JSON value; JSON null becomes nil,
/// as in Argo CD's conversion of the object.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(key, value)| format!("[{}] = {}", lua_string(key), lua_literal(value)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for byte in s.bytes() {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b' '..=b'~' => out.push(byte as char),
            other => out.push_str(&format!("\\{other:03}")),
        }
    }
    out.push('"');
    out
}

/// Runs the health check on `object` and returns (status, message).
fn health(object: &Value) -> (String, String) {
    let harness = format!(
        "obj = {}\nlocal check = assert(loadfile({}))\nlocal result = check()\nio.write(result.status, \"\\n\", result.message, \"\\n\")\n",
        lua_literal(object),
        lua_string(&script().display().to_string()),
    );
    let out = Command::new("lua5.1")
        .args(["-e", &harness])
        .output()
        .expect("run lua5.1 (Debian package lua5.1; hack/deps installs it)");
    assert!(out.status.success(), "lua5.1 failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8 output");
    let mut lines = text.lines();
    let status = lines.next().unwrap_or_default().to_string();
    let message = lines.next().unwrap_or_default().to_string();
    (status, message)
}

fn container(status: Option<Value>) -> Value {
    let mut object = json!({
        "apiVersion": "infrahaus.io/v1alpha1", "kind": "Container",
        "metadata": {"name": "web-1", "namespace": "default", "generation": 2, "finalizers": ["infrahaus.io/cleanup"]},
        "spec": {"nodeRef": {"name": "pve1"}, "templateRef": {"name": "web"}, "network": {"ipv4": "dhcp"}}
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    object
}

fn condition(type_: &str, status: &str, generation: i64, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": "Succeeded", "message": message,
           "observedGeneration": generation, "lastTransitionTime": "2026-11-22T10:00:00Z"})
}

fn ready_status() -> Value {
    json!({
        "phase": "Ready", "progress": 100, "message": "Container ready", "vmid": 120, "node": "pve1",
        "ipAddress": "127.0.0.10", "observedGeneration": 2,
        "conditions": [condition("Created", "True", 2, "created"), condition("Ready", "True", 2, "CT 120 is ready")]
    })
}

#[test]
fn ready_true_is_healthy() {
    assert_eq!(health(&container(Some(ready_status()))), ("Healthy".into(), "Container ready".into()));
}

#[test]
fn a_change_waiting_for_a_restart_is_healthy_and_says_so() {
    let mut status = ready_status();
    status["conditions"].as_array_mut().expect("conditions").push(condition(
        "RestartRequired",
        "True",
        2,
        "pending until the guest restarts: nameserver",
    ));
    assert_eq!(
        health(&container(Some(status))),
        ("Healthy".into(), "Container ready; restart required: pending until the guest restarts: nameserver".into())
    );
}

#[test]
fn a_template_change_waiting_for_the_retry_is_healthy_and_says_so() {
    let mut status = ready_status();
    status["conditions"].as_array_mut().expect("conditions").push(condition(
        "TemplateOutOfSync",
        "True",
        2,
        "ContainerTemplate web changed",
    ));
    assert_eq!(
        health(&container(Some(status))),
        ("Healthy".into(), "Container ready; template out of sync: ContainerTemplate web changed".into())
    );
}

#[test]
fn a_destroyed_guest_is_degraded() {
    let status = json!({
        "phase": "Error",
        "message": "reconfiguring failed: guest 120 on node pve1 no longer exists: it was destroyed outside the operator",
        "observedGeneration": 2, "conditions": [condition("Ready", "False", 2, "GuestMissing")]
    });
    let (health, message) = health(&container(Some(status)));
    assert_eq!(health, "Degraded");
    assert!(message.contains("destroyed outside the operator"), "{message}");
}

#[test]
fn ownership_lost_is_degraded() {
    let status = json!({
        "phase": "Error", "message": "reconfiguring failed: guest 120 on node pve1 no longer carries the marker",
        "observedGeneration": 2, "conditions": [condition("Ready", "False", 2, "OwnershipLost")]
    });
    assert_eq!(health(&container(Some(status))).0, "Degraded");
}

#[test]
fn phase_error_is_degraded_with_the_controllers_message() {
    let status = json!({
        "phase": "Error", "progress": 70,
        "message": "syncing failed: script 20-credentials.sh exited with code 3: disk full",
        "observedGeneration": 2,
        "conditions": [condition("Ready", "False", 2, "script failed")]
    });
    assert_eq!(
        health(&container(Some(status))),
        ("Degraded".into(), "syncing failed: script 20-credentials.sh exited with code 3: disk full".into())
    );
}

#[test]
fn a_stage_in_flight_is_progressing_with_its_phase_and_percent() {
    let status = json!({
        "phase": "Creating", "progress": 10, "message": "Creating LXC container...",
        "conditions": [condition("Ready", "False", 2, "creating")]
    });
    assert_eq!(
        health(&container(Some(status))),
        ("Progressing".into(), "Creating (10%): Creating LXC container...".into())
    );
}

#[test]
fn deletion_is_progressing_even_when_ready() {
    let mut object = container(Some(ready_status()));
    object["metadata"]["deletionTimestamp"] = json!("2026-11-22T11:00:00Z");
    let (status, message) = health(&object);
    assert_eq!(status, "Progressing");
    assert!(message.starts_with("Deleting"), "{message}");

    object["status"]["phase"] = json!("Deleting");
    object["status"]["conditions"] = json!([]);
    assert_eq!(health(&object).0, "Progressing");
}

#[test]
fn no_status_yet_is_progressing() {
    assert_eq!(health(&container(None)), ("Progressing".into(), "Waiting for the controller".into()));
    assert_eq!(health(&container(Some(json!({})))).0, "Progressing");
}

#[test]
fn a_spec_change_not_yet_observed_is_progressing() {
    let mut object = container(Some(ready_status()));
    object["metadata"]["generation"] = json!(3);
    let (status, message) = health(&object);
    assert_eq!(status, "Progressing");
    assert!(message.contains("generation 3"), "{message}");

    let mut failed = container(Some(json!({"phase": "Error", "message": "creating failed", "observedGeneration": 2})));
    failed["metadata"]["generation"] = json!(3);
    assert_eq!(health(&failed).0, "Progressing", "a retry after a spec change is not Degraded");
}

#[test]
fn a_retry_not_yet_acted_on_is_progressing() {
    let failed =
        json!({"phase": "Error", "message": "creating failed", "observedGeneration": 2, "lastAppliedRetry": "1"});
    let mut object = container(Some(failed));
    object["metadata"]["annotations"] = json!({"infrahaus.io/retry": "2"});
    let (status, message) = health(&object);
    assert_eq!(status, "Progressing");
    assert!(message.contains("retry 2"), "{message}");

    object["metadata"]["annotations"] = json!({"infrahaus.io/retry": "1"});
    assert_eq!(health(&object).0, "Degraded", "a retry already acted on leaves the Error final");
}

#[test]
fn the_argocd_cm_patch_embeds_the_script_unchanged() {
    let patch_text = std::fs::read_to_string(chart_dir().join("argocd/argocd-cm-patch.yaml")).expect("read the patch");
    let patch: Value = serde_yaml::from_str(&patch_text).expect("the patch is YAML");
    let embedded = patch["data"]["resource.customizations.health.infrahaus.io_Container"]
        .as_str()
        .expect("the patch sets the health customization for infrahaus.io/Container");
    let script = std::fs::read_to_string(script()).expect("read health.lua");
    assert_eq!(embedded, script, "argocd-cm-patch.yaml is out of date with health.lua");
}
