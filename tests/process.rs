//! The `run` process: health, readiness and metrics endpoints, and a clean
//! exit on SIGTERM.

use std::time::Duration;

use testbed::ManagedProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_and_metrics_and_exits_cleanly_on_sigterm() {
    let kube = testbed::kube().await.expect("test bed");
    let client = kube.client().await.expect("client");
    let ns = testbed::unique_namespace(&client, "process").await.expect("namespace");
    let port = testbed::process::free_port().expect("port");
    let dir = testbed::process::work_dir("infrahaus-process").expect("work dir");
    testbed::process::remove_at_exit(dir.clone());
    let log = dir.join("controller.log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_infrahaus-operator"));
    cmd.args(["run", "--watch-namespace", &ns, "--metrics-addr", &format!("127.0.0.1:{port}"), "--log-format", "json"])
        .env("KUBECONFIG", &kube.kubeconfig)
        .env("POD_NAMESPACE", &ns)
        .env_remove("REDIS_URL");
    let controller = ManagedProcess::spawn("infrahaus-operator", cmd, &log).expect("start controller");

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16());
        if ready.as_ref().is_ok_and(|s| *s == 200) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready: {ready:?}\n{}", controller.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = http.get(format!("{base}/healthz")).send().await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    let metrics = http.get(format!("{base}/metrics")).send().await.expect("metrics");
    let content_type = metrics.headers()["content-type"].to_str().unwrap_or_default().to_string();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let body = metrics.text().await.expect("body");
    for family in ["infrahaus_reconciles_total", "infrahaus_redis_publish_failures_total", "infrahaus_containers"] {
        assert!(body.contains(family), "/metrics lacks {family}:\n{body}");
    }

    // The SSH key Secret was generated in the controller's namespace.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client, &ns);
    let key = secrets.get("infrahaus-ssh-key").await.expect("ssh key secret");
    assert_eq!(key.type_.as_deref(), Some("kubernetes.io/ssh-auth"));

    controller.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| controller.wait_exit(Duration::from_secs(30)));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit after SIGTERM");
    let text = std::fs::read_to_string(controller.log_path()).unwrap_or_default();
    assert!(text.contains("infrahaus-operator stopped"), "no clean stop in the log:\n{text}");
    assert!(text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('{')), "json log format:\n{text}");
}
