//! Manifests and helpers shared by the pipeline tests: the web template,
//! Containers, a Redis subscriber and the stock ssh client.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{json, Value};

use super::World;

pub const READY_TIMEOUT: Duration = Duration::from_secs(180);

pub fn template(name: &str, failing_script: bool) -> Value {
    let listener = r#"#!/bin/bash
set -e
ip=$(echo "$SSH_CONNECTION" | cut -d' ' -f3)
setsid nohup python3 -m http.server 8080 --bind "$ip" >/dev/null 2>&1 < /dev/null &
for i in $(seq 1 50); do ss -tlnH "src $ip and sport = :8080" | grep -q . && break; sleep 0.1; done
echo "listener started on $ip:8080"
"#;
    let credentials = if failing_script {
        "#!/bin/bash\necho 'writing credentials'\necho 'disk full' >&2\nexit 3\n"
    } else {
        "#!/bin/bash\nset -e\necho 'writing credentials'\nprintf 'app-api-key-1234' > /etc/infrahaus/credentials/api-key\necho 'credentials written' >&2\n"
    };
    json!({
        "apiVersion": "infrahaus.io/v1alpha1", "kind": "ContainerTemplate",
        "metadata": {"name": name},
        "spec": {
            "osTemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            "defaults": {"cores": 1, "memoryMiB": 512, "swapMiB": 512, "diskGiB": 8, "storage": "local-lvm"},
            "packages": ["bash"],
            "files": [
                {"path": "/etc/app/app.conf", "content": "listen=8080\n", "mode": "0640"},
                {"path": "/opt/app/motd", "content": "hello from infrahaus\n"}
            ],
            "scripts": [
                {"name": "10-listener.sh", "content": listener},
                {"name": "20-credentials.sh", "content": credentials, "timeoutSeconds": 60}
            ]
        }
    })
}

pub fn container(name: &str, template: &str, network: Value) -> Value {
    json!({
        "apiVersion": "infrahaus.io/v1alpha1", "kind": "Container",
        "metadata": {"name": name},
        "spec": {
            "nodeRef": {"name": "pve1"},
            "templateRef": {"name": template},
            "network": network,
            "tags": ["web"]
        }
    })
}

/// Collects the Redis events of one Container until `complete` or `error`.
pub async fn subscribe(world: &World, name: &str) -> tokio::task::JoinHandle<Vec<Value>> {
    let url = world.redis_url.clone().expect("redis");
    let channel = format!("container:{}/{name}:progress", world.ns);
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut pubsub = client.get_async_pubsub().await.expect("subscribe connection");
    pubsub.subscribe(&channel).await.expect("subscribe");
    tokio::spawn(async move {
        let mut events = Vec::new();
        let mut stream = pubsub.on_message();
        while let Ok(Some(msg)) = tokio::time::timeout(READY_TIMEOUT, stream.next()).await {
            let payload: String = msg.get_payload().unwrap_or_default();
            let event: Value = serde_json::from_str(&payload).expect("event is JSON");
            let end = matches!(event["type"].as_str(), Some("complete" | "error"));
            events.push(event);
            if end {
                break;
            }
        }
        events
    })
}

pub fn ssh(ip: &str, key: &std::path::Path, command: &str) -> String {
    let out = std::process::Command::new("ssh")
        .args(["-i"])
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
        ])
        .arg(format!("root@{ip}"))
        .arg(command)
        .output()
        .expect("run ssh");
    assert!(out.status.success(), "ssh {command}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The controller's private key, written to a file for the stock ssh client.
pub async fn controller_key(world: &World) -> tempfile::NamedTempFile {
    let secret = world.api::<Secret>().get("infrahaus-ssh-key").await.expect("ssh key secret");
    let pem = secret.data.expect("data")["ssh-privatekey"].0.clone();
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), pem).expect("write key");
    file
}
