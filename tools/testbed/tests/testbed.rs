//! The test bed itself: a real API server (version, CRDs with CEL, status,
//! watches, Secrets), a real Redis, and no process left behind.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::ByteString;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

const FIELD_MANAGER: &str = "testbed-test";

#[tokio::test]
async fn apiserver_reports_the_built_release() {
    let env = testbed::kube().await.expect("test bed starts");
    let client = env.client().await.expect("client");
    let info = client.apiserver_version().await.expect("GET /version");
    let expected =
        std::fs::read_to_string(testbed::repo_root().join("tools/kube-testenv/K8S_VERSION")).expect("K8S_VERSION");
    assert_eq!(info.git_version, expected.trim());
    assert_eq!(env.version, expected.trim());
    eprintln!("kube-apiserver {} ready in {:.2}s", info.git_version, env.startup.as_secs_f64());
}

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.testbed.infrahaus.io"},
        "spec": {
            "group": "testbed.infrahaus.io",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {"size": {"type": "integer"}},
                            "x-kubernetes-validations": [
                                {"rule": "self.size <= 10", "message": "size must be at most 10"}
                            ]
                        },
                        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
                    }
                }}
            }]
        }
    }))
    .expect("valid CRD")
}

#[tokio::test]
async fn crd_with_status_printer_columns_and_cel_rule() {
    let env = testbed::kube().await.expect("test bed starts");
    let client = env.client().await.expect("client");
    let ns = testbed::unique_namespace(&client, "crd").await.expect("namespace");

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = widget_crd();
    let ssa = PatchParams::apply(FIELD_MANAGER).force();
    crds.patch("widgets.testbed.infrahaus.io", &ssa, &Patch::Apply(&crd)).await.expect("apply CRD");
    let established = kube::runtime::wait::await_condition(
        crds.clone(),
        "widgets.testbed.infrahaus.io",
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .expect("CRD established in time")
        .expect("watch CRD");

    let gvk = GroupVersionKind::gvk("testbed.infrahaus.io", "v1", "Widget");
    let resource = ApiResource::from_gvk(&gvk);
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);

    // Watch first, so both changes must arrive through the watch.
    let mut seen = watcher(widgets.clone(), watcher::Config::default()).applied_objects().boxed();

    let widget = json!({
        "apiVersion": "testbed.infrahaus.io/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 3}
    });
    widgets.patch("w1", &ssa, &Patch::Apply(&widget)).await.expect("server-side apply");
    let status = json!({
        "apiVersion": "testbed.infrahaus.io/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "status": {"phase": "Ready"}
    });
    widgets.patch_status("w1", &ssa, &Patch::Apply(&status)).await.expect("status patch");

    let saw_both = async {
        let mut saw_spec = false;
        while let Some(obj) = seen.try_next().await.expect("watch stream") {
            saw_spec |= obj.data["spec"]["size"] == 3;
            if saw_spec && obj.data["status"]["phase"] == "Ready" {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), saw_both).await.expect("watcher saw the object and its status");

    let bad = json!({
        "apiVersion": "testbed.infrahaus.io/v1", "kind": "Widget",
        "metadata": {"name": "w2"}, "spec": {"size": 11}
    });
    let err = widgets.patch("w2", &ssa, &Patch::Apply(&bad)).await.expect_err("CEL rule rejects size 11");
    assert!(err.to_string().contains("size must be at most 10"), "error was: {err}");

    let table = std::process::Command::new("kubectl")
        .args(["get", "widgets", "-n", &ns, "--kubeconfig"])
        .arg(&env.kubeconfig)
        .output();
    if let Ok(out) = table {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("SIZE") && text.contains("PHASE") && text.contains("Ready"), "kubectl printed: {text}");
    }
}

#[tokio::test]
async fn secret_round_trips() {
    let env = testbed::kube().await.expect("test bed starts");
    let client = env.client().await.expect("client");
    let ns = testbed::unique_namespace(&client, "secret").await.expect("namespace");
    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    let data = BTreeMap::from([("password".to_string(), ByteString(b"s3cr3t\n\x00binary".to_vec()))]);
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("roundtrip".into()), ..Default::default() },
        data: Some(data.clone()),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await.expect("create");
    let back = secrets.get("roundtrip").await.expect("get");
    assert_eq!(back.data, Some(data));
}

#[tokio::test]
async fn redis_publish_reaches_subscriber() {
    let redis = testbed::redis().await.expect("redis starts");
    let client = redis::Client::open(redis.url.as_str()).expect("url");
    let mut pubsub = client.get_async_pubsub().await.expect("connect subscriber");
    pubsub.subscribe("testbed:channel").await.expect("subscribe");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    let receivers: i64 =
        redis::cmd("PUBLISH").arg("testbed:channel").arg("hello").query_async(&mut conn).await.expect("publish");
    assert_eq!(receivers, 1);
    let msg = tokio::time::timeout(Duration::from_secs(10), pubsub.on_message().next())
        .await
        .expect("message in time")
        .expect("stream open");
    assert_eq!(msg.get_channel_name(), "testbed:channel");
    assert_eq!(msg.get_payload::<String>().expect("utf-8"), "hello");
}

/// Run as a child by `nothing_survives_the_test_binary`: starts every server,
/// records their pids, then ends the way the parent asks.
#[tokio::test]
#[ignore = "started as a child process by nothing_survives_the_test_binary"]
async fn child_starts_servers_then_dies() {
    let Ok(pid_file) = std::env::var("TESTBED_PID_FILE") else { return };
    let env = testbed::kube().await.expect("test bed starts");
    let redis = testbed::redis().await.expect("redis starts");
    let mut pids = vec![env.etcd.pid(), env.apiserver_pid(), redis.process.pid()];
    pids.extend(env.controller_manager.as_ref().map(|p| p.pid()));
    let text: Vec<String> = pids.iter().map(u32::to_string).collect();
    std::fs::write(&pid_file, format!("{}\n{}\n", text.join(" "), env.dir.display())).expect("write pids");
    match std::env::var("TESTBED_CHILD_END").as_deref() {
        Ok("sigkill") => loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
        },
        _ => panic!("this child test fails on purpose; its servers must still be stopped"),
    }
}

fn remove_work_dirs_of(pid: u32) {
    let marker = format!("-{pid}-");
    for entry in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("infrahaus-") && name.contains(&marker) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[test]
fn nothing_survives_the_test_binary() {
    for end in ["panic", "sigkill"] {
        let dir = std::env::temp_dir().join(format!("testbed-pids-{}-{end}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let mut child = std::process::Command::new(std::env::current_exe().expect("current exe"))
            .args(["--exact", "child_starts_servers_then_dies", "--ignored", "--nocapture"])
            .env("TESTBED_PID_FILE", &dir)
            .env("TESTBED_CHILD_END", end)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn child test binary");

        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        let contents = loop {
            if let Ok(text) = std::fs::read_to_string(&dir) {
                if text.ends_with('\n') && text.lines().count() == 2 {
                    break text;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("child exited ({status}) before recording its servers");
            }
            assert!(std::time::Instant::now() < deadline, "child did not start its servers");
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut lines = contents.lines();
        let pids: Vec<u32> =
            lines.next().unwrap_or_default().split_whitespace().map(|p| p.parse().expect("pid")).collect();
        let kube_dir = std::path::PathBuf::from(lines.next().unwrap_or_default());
        assert!(pids.len() >= 3, "pids: {pids:?}");
        assert!(pids.iter().all(|&p| testbed::process::pid_alive(p)), "servers run while the child runs");

        if end == "sigkill" {
            child.kill().expect("SIGKILL the child");
        }
        let status = child.wait().expect("wait for child");
        assert!(!status.success(), "the child ends by failing or being killed");

        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while pids.iter().any(|&p| testbed::process::pid_alive(p)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let alive: Vec<u32> = pids.iter().copied().filter(|&p| testbed::process::pid_alive(p)).collect();
        assert!(alive.is_empty(), "after the child ended by {end}, still running: {alive:?}");
        if end == "panic" {
            assert!(!kube_dir.exists(), "{} was removed at exit", kube_dir.display());
        } else {
            // A killed binary cannot clean its files; the kernel only ends its processes.
            remove_work_dirs_of(child.id());
        }
        let _ = std::fs::remove_file(&dir);
    }
}
