//! Benchmark: many Containers at once through the whole pipeline against
//! pve-sim. Prints figures (wall time to all Ready, per-stage durations, the
//! controller's memory); asserts only that everything became Ready.
//!
//! Run with `hack/bench` (or `cargo test -p infrahaus-operator --test integration -- --ignored --nocapture bench::`).

use crate::support;

use std::time::{Duration, Instant};

use infrahaus_operator::crd::{Container, Phase, StageName};
use serde_json::json;
use support::World;

const CONTAINERS: usize = 20;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test]
#[ignore = "benchmark; run with hack/bench"]
async fn many_containers_to_ready() {
    let mut world = World::new("bench").await.expect("world");
    let controller = world.start_controller(&["--concurrency", "10"]).expect("controller");
    world
        .apply(json!({
            "apiVersion": "infrahaus.io/v1alpha1", "kind": "ContainerTemplate",
            "metadata": {"name": "bench"},
            "spec": {
                "osTemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                "packages": ["bash"],
                "files": [{"path": "/etc/bench.conf", "content": "x=1\n"}],
                "scripts": [{"name": "10-hello.sh", "content": "#!/bin/bash\necho hello\n"}]
            }
        }))
        .await
        .expect("template");
    let pid = world.controller(controller).pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib(pid);

    let started = Instant::now();
    for i in 0..CONTAINERS {
        world
            .apply(json!({
                "apiVersion": "infrahaus.io/v1alpha1", "kind": "Container",
                "metadata": {"name": format!("bench-{i}")},
                "spec": {"nodeRef": {"name": "pve1"}, "templateRef": {"name": "bench"}, "network": {"ipv4": "dhcp"}}
            }))
            .await
            .expect("container");
    }
    let mut peak_rss = idle_rss;
    let api = world.api::<Container>();
    let deadline = Instant::now() + Duration::from_secs(600);
    let containers = loop {
        peak_rss = peak_rss.max(rss_kib(pid));
        let list = api.list(&Default::default()).await.expect("list").items;
        let ready = list.iter().filter(|c| c.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)).count();
        assert!(
            list.iter().all(|c| c.status.as_ref().and_then(|s| s.phase) != Some(Phase::Error)),
            "a Container failed"
        );
        if ready == CONTAINERS {
            break list;
        }
        assert!(Instant::now() < deadline, "only {ready}/{CONTAINERS} Ready after 600 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wall = started.elapsed();

    println!(
        "bench: {CONTAINERS} Containers to Ready in {:.1} s ({:.2} s each on average, concurrency 10)",
        wall.as_secs_f64(),
        wall.as_secs_f64() / CONTAINERS as f64
    );
    for stage in StageName::ALL {
        let mut secs: Vec<f64> = containers
            .iter()
            .filter_map(|c| {
                let s = c.status.as_ref()?.stage(stage)?;
                let start = s.started_at.as_ref()?.0;
                let end = s.finished_at.as_ref()?.0;
                Some(end.duration_since(start).as_secs_f64())
            })
            .collect();
        secs.sort_by(f64::total_cmp);
        println!(
            "bench: stage {:<10} p50 {:.2} s  p90 {:.2} s  max {:.2} s",
            stage.as_str(),
            percentile(&secs, 0.5),
            percentile(&secs, 0.9),
            secs.last().copied().unwrap_or(0.0)
        );
    }
    println!(
        "bench: controller RSS idle {:.1} MiB, peak {:.1} MiB, after {:.1} MiB",
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        rss_kib(pid) as f64 / 1024.0
    );
}
