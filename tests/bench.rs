//! Benchmark: many Containers at once through the whole pipeline against
//! pve-sim. Prints figures (wall time to all Ready, per-stage durations, the
//! controller's memory); asserts only that everything became Ready.
//!
//! Run with `hack/bench` (or `cargo test -p infrahaus-operator --test integration -- --ignored --nocapture bench::`).

use crate::support;

use std::time::{Duration, Instant};

use infrahaus_operator::crd::{Container, Phase, StageName};
use serde_json::json;
use support::{rss_kib, World};

const CONTAINERS: usize = 20;

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
    let work = json!({
        "packages": ["bash"],
        "scripts": [{"name": "10-hello.sh", "content": "#!/bin/bash\necho hello\n"}]
    });
    bench_template(&world, work).await;
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

/// Applies `count` Containers of the template `bench` and waits until all
/// are Ready.
async fn all_ready(world: &World, prefix: &str, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    for name in &names {
        world
            .apply(json!({
                "apiVersion": "infrahaus.io/v1alpha1", "kind": "Container",
                "metadata": {"name": name},
                "spec": {"nodeRef": {"name": "pve1"}, "templateRef": {"name": "bench"}, "network": {"ipv4": "dhcp"}}
            }))
            .await
            .expect("container");
    }
    for name in &names {
        world.wait_phase(name, Phase::Ready, Duration::from_secs(900)).await.expect("Ready");
    }
    names
}

/// The template `bench`: one small file, 512 MiB of memory, and what
/// `extra` adds to its spec (packages, scripts).
async fn bench_template(world: &World, extra: serde_json::Value) {
    let mut spec = json!({
        "osTemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        "defaults": {"memoryMiB": 512},
        "files": [{"path": "/etc/bench.conf", "content": "x=1\n"}]
    });
    for (key, value) in extra.as_object().cloned().unwrap_or_default() {
        spec[key] = value;
    }
    let template = json!({"apiVersion": "infrahaus.io/v1alpha1", "kind": "ContainerTemplate", "metadata": {"name": "bench"}, "spec": spec});
    world.apply(template).await.expect("template");
}

/// A day-2 change: how long a memory change takes from the apply to the
/// guest's config in effect, one Container after the other (p50 over 20).
#[tokio::test]
#[ignore = "benchmark; run with hack/bench"]
async fn day_two_memory_change() {
    let mut world = World::new("bench-day2").await.expect("world");
    world.start_controller(&["--concurrency", "10"]).expect("controller");
    bench_template(&world, json!({})).await;
    let names = all_ready(&world, "day2", 20).await;
    let mut secs = Vec::new();
    for name in &names {
        let vmid = world.container(name).await.expect("ct").status.and_then(|s| s.vmid).expect("vmid");
        let started = Instant::now();
        world
            .apply(json!({
                "apiVersion": "infrahaus.io/v1alpha1", "kind": "Container",
                "metadata": {"name": name},
                "spec": {"nodeRef": {"name": "pve1"}, "templateRef": {"name": "bench"}, "network": {"ipv4": "dhcp"},
                         "resources": {"memoryMiB": 1024}}
            }))
            .await
            .expect("change");
        loop {
            let guest = world.sim_guest(vmid).await.expect("state").expect("guest");
            if guest["limits"]["memory"] == "1024" {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "memory never changed: {guest}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        secs.push(started.elapsed().as_secs_f64());
    }
    secs.sort_by(f64::total_cmp);
    println!(
        "bench: day-2 memory change, apply to the guest's config: p50 {:.2} s  p90 {:.2} s  max {:.2} s (20 Containers, one at a time)",
        percentile(&secs, 0.5),
        percentile(&secs, 0.9),
        secs.last().copied().unwrap_or(0.0)
    );
}

/// What the drift check of 100 Ready Containers costs: the Proxmox requests
/// of a controller start (each Container compared once) and of the resync
/// interval at rest.
#[tokio::test]
#[ignore = "benchmark; run with hack/bench"]
async fn resync_of_100_ready_containers() {
    const COUNT: usize = 100;
    const INTERVAL_SECS: u64 = 10;
    let mut world = World::new("bench-resync").await.expect("world");
    let first = world.start_controller(&["--concurrency", "10"]).expect("controller");
    bench_template(&world, json!({})).await;
    let started = Instant::now();
    all_ready(&world, "rs", COUNT).await;
    let to_ready = started.elapsed();
    world.controller(first).kill();

    let (reads_before, writes_before) = world.sim_requests().await.expect("requests");
    let interval = format!("--resync-interval={INTERVAL_SECS}s");
    let second = world.start_controller(&["--concurrency", "10", &interval]).expect("second controller");
    let restarted = Instant::now();
    while world.controller_metric(second, "infrahaus_reconciles_total").await.unwrap_or(0.0) < COUNT as f64 {
        assert!(restarted.elapsed() < Duration::from_secs(120), "not every Container was reconciled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reconciled = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (reads_start, writes_start) = world.sim_requests().await.expect("requests");

    let window = Duration::from_secs(INTERVAL_SECS * 4);
    tokio::time::sleep(window).await;
    let (reads_end, writes_end) = world.sim_requests().await.expect("requests");
    let rounds = window.as_secs_f64() / INTERVAL_SECS as f64;
    let per_round = (reads_end - reads_start) as f64 / rounds;
    println!("bench: {COUNT} Containers to Ready in {:.1} s", to_ready.as_secs_f64());
    println!(
        "bench: controller start with {COUNT} Ready Containers: all reconciled in {:.1} s, {} Proxmox reads, {} writes",
        reconciled.as_secs_f64(),
        reads_start - reads_before,
        writes_start - writes_before
    );
    println!(
        "bench: resync of {COUNT} Ready Containers: {per_round:.0} Proxmox requests per round ({:.2} per Container), {} writes in {} s at --resync-interval={INTERVAL_SECS}s",
        per_round / COUNT as f64,
        writes_end - writes_start,
        window.as_secs()
    );
}

/// 1,000 Containers behind a node that answers nothing but 596: the
/// requests per second the node sees from all of them (the per-node circuit
/// breaker lets about one through per open period), after they were applied.
#[tokio::test]
#[ignore = "benchmark; run with hack/bench"]
async fn a_thousand_containers_behind_a_dead_node() {
    const COUNT: usize = 1000;
    const WINDOW: Duration = Duration::from_secs(60);
    let mut world = World::new("bench-dead").await.expect("world");
    bench_template(&world, json!({})).await;
    let fault = json!({"path": ".*", "count": u32::MAX, "status": 596, "message": "Connection timed out"});
    world.sim_admin(reqwest::Method::POST, "/sim/fail", fault).await.expect("dead node");
    let controller = world.start_controller(&[]).expect("controller");
    let pid = world.controller(controller).pid();
    let (reads_0, writes_0) = world.sim_requests().await.expect("requests");
    let started = Instant::now();
    let names: Vec<String> = (0..COUNT).map(|i| format!("dead-{i}")).collect();
    for chunk in names.chunks(50) {
        futures::future::join_all(chunk.iter().map(|name| {
            world.apply(json!({
                "apiVersion": "infrahaus.io/v1alpha1", "kind": "Container",
                "metadata": {"name": name},
                "spec": {"nodeRef": {"name": "pve1"}, "templateRef": {"name": "bench"}, "network": {"ipv4": "dhcp"}}
            }))
        }))
        .await
        .into_iter()
        .for_each(|applied| applied.expect("container"));
    }
    let applied = started.elapsed();
    let (reads_1, writes_1) = world.sim_requests().await.expect("requests");
    tokio::time::sleep(WINDOW).await;
    let (reads_2, writes_2) = world.sim_requests().await.expect("requests");
    let reconciles = world.controller_metric(controller, "infrahaus_reconciles_total").await.unwrap_or(0.0);
    let during_apply = (reads_1 - reads_0) + (writes_1 - writes_0);
    let after = (reads_2 - reads_1) + (writes_2 - writes_1);
    println!(
        "bench: {COUNT} Containers behind a node answering 596: {:.2} Proxmox requests/s in all over the {} s after they were applied ({after} requests; {during_apply} while applying them in {:.1} s), {reconciles:.0} reconciles, controller RSS {:.1} MiB",
        after as f64 / WINDOW.as_secs_f64(),
        WINDOW.as_secs(),
        applied.as_secs_f64(),
        rss_kib(pid) as f64 / 1024.0
    );
    let api = world.api::<Container>();
    let listed = api.list(&Default::default()).await.expect("list").items;
    assert_eq!(listed.len(), COUNT);
    assert!(
        listed.iter().all(|c| c.status.as_ref().and_then(|s| s.phase) != Some(Phase::Ready)),
        "nothing is Ready behind a dead node"
    );
    // Let them go: the node answers again and each Container's guest (if
    // any got one) is cleaned up with it.
    world.sim_admin(reqwest::Method::POST, "/sim/reset", json!({})).await.expect("node back");
}

/// The dashboard with 500 SSE clients on one Container: the Redis
/// connections they cost (as `CLIENT LIST` shows the dashboard's), its
/// memory, and the latency from an XADD to each client's receive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with hack/bench"]
async fn dashboard_sse_clients_on_one_container() {
    use support::dashboard::{add_log_events, dashboard_connections, idle_container, Dashboard};
    const CLIENTS: usize = 500;
    const EVENTS: usize = 20;
    let world = World::new("bench-dashboard").await.expect("world");
    let redis = testbed::dedicated_redis().await.expect("a Redis of the benchmark's own");
    idle_container(&world, "web-1").await.expect("container");
    let limits = ["--auth=none", "--max-streams=1000", "--max-streams-per-user=1000"];
    let dashboard = Dashboard::start(&world, Some(&redis.url), &limits).await.expect("dashboard");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss_kib(dashboard.pid());

    add_log_events(&world, &redis.url, "web-1", 0, 1).await.expect("the first event");
    let connect_started = Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut stream = dashboard.events(&world.ns, "web-1", None, &[]).await.expect("stream");
        stream.take(1, Duration::from_secs(30)).await.expect("the replayed event");
        clients.push(stream);
    }
    let connect_time = connect_started.elapsed();
    let connections = dashboard_connections(&redis.url).await.expect("CLIENT LIST");

    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut received = Vec::with_capacity(EVENTS);
                while received.len() < EVENTS {
                    let event = stream.next(Duration::from_secs(120)).await.expect("read").expect("every event");
                    let at = Instant::now();
                    let json: serde_json::Value = serde_json::from_str(&event.data).expect("JSON");
                    let line = json["message"].as_str().and_then(|m| m.strip_prefix("line ")).expect("a numbered line");
                    received.push((line.parse::<usize>().expect("a number"), at));
                }
                received
            })
        })
        .collect();
    let mut sent = vec![Instant::now(); EVENTS + 1];
    for (n, at) in sent.iter_mut().enumerate().skip(1) {
        *at = Instant::now();
        add_log_events(&world, &redis.url, "web-1", n, 1).await.expect("xadd");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let busy_rss = rss_kib(dashboard.pid());
    let mut millis = Vec::with_capacity(CLIENTS * EVENTS);
    for reader in readers {
        for (n, received) in reader.await.expect("reader") {
            millis.push(received.duration_since(sent[n]).as_secs_f64() * 1000.0);
        }
    }
    millis.sort_by(f64::total_cmp);
    assert_eq!(millis.len(), CLIENTS * EVENTS, "every client received every event");

    println!(
        "bench: dashboard, {CLIENTS} SSE clients on one Container: {connections} Redis connections (CLIENT LIST), connected in {:.1} s",
        connect_time.as_secs_f64()
    );
    println!(
        "bench: dashboard RSS idle {:.1} MiB, with {CLIENTS} clients {:.1} MiB ({:.1} KiB per client)",
        idle_rss as f64 / 1024.0,
        busy_rss as f64 / 1024.0,
        busy_rss.saturating_sub(idle_rss) as f64 / CLIENTS as f64
    );
    println!(
        "bench: dashboard XADD to client receive, {CLIENTS} clients x {EVENTS} events: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        percentile(&millis, 0.5),
        percentile(&millis, 0.99),
        millis.last().copied().unwrap_or(0.0)
    );
}
