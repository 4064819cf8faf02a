//! Benchmarks against the real parts (pve-sim, the API server, Redis): the
//! controller against a straight-line baseline (P1), the ideal schedule
//! (P2, with the scaling curve) and Ansible; 1,000 Ready Containers at rest
//! (P3); progress to Redis (P4); and more. Each prints its figures and
//! records the main ones for `hack/bench`'s table; they assert only that
//! the work completed.
//!
//! Run with `hack/bench` (or `cargo test -p infrahaus-operator --test integration -- --ignored --nocapture bench::`).

use crate::support;

#[path = "bench_ansible.rs"]
mod ansible;

use std::time::{Duration, Instant};

use infrahaus_operator::crd::{Container, Phase, StageName};
use serde_json::{json, Value};
use support::{rss_kib, World};

const CONTAINERS: usize = 20;

/// Whether `hack/bench --quick` runs: smaller sizes, the same measures.
fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0")
}

/// A figure for `hack/bench`'s table and `target/bench/results.json`:
/// appended as one JSON line to `$BENCH_RESULTS` when it is set. `goal` is
/// the target the issue sets (`"<= 5 ms"`), `met` whether this run reached it.
fn figure(name: &str, value: f64, unit: &str, goal: Option<(&str, bool)>) {
    let Some(path) = std::env::var_os("BENCH_RESULTS") else { return };
    let line = json!({
        "name": name, "value": (value * 1000.0).round() / 1000.0, "unit": unit,
        "ratio": if unit == "ratio" { Some(value) } else { None },
        "goal": goal.map(|(goal, _)| goal), "met": goal.map(|(_, met)| met)
    });
    use std::io::Write;
    let written =
        std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut file| writeln!(file, "{line}"));
    if let Err(error) = written {
        eprintln!("bench: could not record {name}: {error}");
    }
}

/// Where `hack/bench` keeps its results (the directory of `$BENCH_RESULTS`).
fn bench_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("BENCH_RESULTS").map(std::path::PathBuf::from)?.parent().map(Into::into)
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
        world.apply(bench_container(&format!("bench-{i}"), "bench")).await.expect("container");
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
    figure(&format!("{CONTAINERS} Containers to Ready (wall)"), wall.as_secs_f64(), "s", None);
    figure("controller RSS peak, 20 Containers", peak_rss as f64 / 1024.0, "MiB", None);
}

/// Applies `count` Containers of the template `bench` and waits until all
/// are Ready.
async fn all_ready(world: &World, prefix: &str, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    for name in &names {
        world.apply(bench_container(name, "bench")).await.expect("container");
    }
    for name in &names {
        world.wait_phase(name, Phase::Ready, Duration::from_secs(900)).await.expect("Ready");
    }
    names
}

/// A Container `name` of `template` on pve1 with DHCP.
fn bench_container(name: &str, template: &str) -> Value {
    json!({
        "apiVersion": "infrahaus.io/v1alpha1", "kind": "Container",
        "metadata": {"name": name},
        "spec": {"nodeRef": {"name": "pve1"}, "templateRef": {"name": template}, "network": {"ipv4": "dhcp"}}
    })
}

/// A Container `name` of the template `bench` on `node`, in the world's
/// namespace, for the API's `create`.
fn container_object(world: &World, name: &str, node: &str) -> Container {
    let mut manifest = bench_container(name, "bench");
    manifest["metadata"]["namespace"] = world.ns.clone().into();
    manifest["spec"]["nodeRef"]["name"] = node.into();
    serde_json::from_value(manifest).expect("Container")
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
    let count = if quick() { 10 } else { 20 };
    let names = all_ready(&world, "day2", count).await;
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
        "bench: day-2 memory change, apply to the guest's config: p50 {:.2} s  p90 {:.2} s  max {:.2} s ({count} Containers, one at a time)",
        percentile(&secs, 0.5),
        percentile(&secs, 0.9),
        secs.last().copied().unwrap_or(0.0)
    );
    figure("day-2 memory change, apply to guest p50", percentile(&secs, 0.5), "s", None);
}

/// What the drift check of 100 Ready Containers costs: the Proxmox requests
/// of a controller start (each Container compared once) and of the resync
/// interval at rest.
#[tokio::test]
#[ignore = "benchmark; run with hack/bench"]
async fn resync_of_100_ready_containers() {
    const INTERVAL_SECS: u64 = 10;
    let count = if quick() { 30 } else { 100 };
    let mut world = World::new("bench-resync").await.expect("world");
    let first = world.start_controller(&["--concurrency", "10"]).expect("controller");
    bench_template(&world, json!({})).await;
    let started = Instant::now();
    all_ready(&world, "rs", count).await;
    let to_ready = started.elapsed();
    world.controller(first).kill();

    let (reads_before, writes_before) = world.sim_requests().await.expect("requests");
    let interval = format!("--resync-interval={INTERVAL_SECS}s");
    let second = world.start_controller(&["--concurrency", "10", &interval]).expect("second controller");
    let restarted = Instant::now();
    while world.controller_metric(second, "infrahaus_reconciles_total").await.unwrap_or(0.0) < count as f64 {
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
    println!("bench: {count} Containers to Ready in {:.1} s", to_ready.as_secs_f64());
    println!(
        "bench: controller start with {count} Ready Containers: all reconciled in {:.1} s, {} Proxmox reads, {} writes",
        reconciled.as_secs_f64(),
        reads_start - reads_before,
        writes_start - writes_before
    );
    println!(
        "bench: resync of {count} Ready Containers: {per_round:.0} Proxmox requests per round ({:.2} per Container), {} writes in {} s at --resync-interval={INTERVAL_SECS}s",
        per_round / count as f64,
        writes_end - writes_start,
        window.as_secs()
    );
    let writes = (writes_start - writes_before) as f64;
    figure(
        &format!("restart with {count} Ready: all reconciled"),
        reconciled.as_secs_f64(),
        "s",
        Some(("<= 10 s", reconciled.as_secs_f64() <= 10.0)),
    );
    figure(&format!("restart with {count} Ready: Proxmox writes"), writes, "writes", Some(("0", writes == 0.0)));
    figure("resync: Proxmox requests per Container per round", per_round / count as f64, "requests", None);
}

/// The template work of P1, the same for the controller and the baseline.
const P1_FILE: (&str, &str) = ("/etc/bench.conf", "x=1\n");
const P1_SCRIPT: (&str, &str) = ("10-hello.sh", "#!/bin/bash\necho hello\n");

/// The work of one Container in a straight line, with no Kubernetes: what
/// the five stages do (nextid, create, start, the address, the layout and
/// the file over SSH, config-sync and the script, discovery), through the
/// same library, polling tasks and the address every 50 ms. The key pair is
/// made before the clock starts.
async fn straight_line(world: &World) -> Duration {
    use infrahaus_operator::{discovery, layout, proxmox, ssh};
    let token = proxmox::ApiToken::new(world.sim.token_id.clone(), world.sim.token_secret.clone());
    let tls = proxmox::TlsOptions { fingerprint: Some(world.sim.fingerprint.clone()), ..Default::default() };
    let pve = proxmox::Client::new(proxmox::ClientConfig::new(world.sim.url.clone(), token, tls)).expect("client");
    let key = ssh::SshKeyPair::generate("baseline");
    let public = key.public_key_line().expect("public key");
    let (node, poll, limit) = (world.sim.node.as_str(), Duration::from_millis(50), Duration::from_secs(120));
    let started = Instant::now();

    let vmid = pve.next_id().await.expect("nextid");
    let params = proxmox::CreateLxcParams {
        vmid,
        ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
        hostname: format!("baseline-{vmid}"),
        cores: Some(1),
        memory_mib: Some(512),
        swap_mib: Some(512),
        rootfs: Some(proxmox::rootfs("local-lvm", 8)),
        net0: Some(proxmox::net0(&proxmox::Net0 { bridge: None, ipv4: None, gateway: None })),
        nameserver: None,
        password: None,
        ssh_public_keys: Some(public),
        unprivileged: true,
        features: None,
        onboot: None,
        tags: None,
        description: None,
        start: false,
    };
    let upid = pve.create_lxc(node, &params).await.expect("create");
    pve.wait_task(&upid, poll, limit).await.expect("create task");
    let upid = pve.start_lxc(node, vmid).await.expect("start");
    pve.wait_task(&upid, poll, limit).await.expect("start task");
    let ip = loop {
        let interfaces = pve.lxc_interfaces(node, vmid).await.expect("interfaces");
        if let Some(ip) = interfaces.as_deref().and_then(proxmox::eth0_ipv4) {
            break ip;
        }
        tokio::time::sleep(poll).await;
    };

    let target = ssh::SshTarget::root(std::net::SocketAddr::new(ip.into(), 22), key, ssh::HostKeyCheck::TrustFirst);
    let session = ssh::connect_with_retry(&target, tokio::time::Instant::now() + limit).await.expect("ssh");
    let plan = layout::render(&layout::LayoutInput {
        namespace: "bench".into(),
        name: format!("baseline-{vmid}"),
        uid: format!("baseline-{vmid}"),
        hostname: format!("baseline-{vmid}"),
        vmid,
        template_name: Some("bench".into()),
        packages: vec!["bash".into()],
    })
    .expect("layout");
    let ok = |output: ssh::Output| assert!(output.status.success(), "{}", output.stderr);
    ok(session.exec_capture(plan.prepare_command, limit).await.expect("prepare"));
    for file in &plan.files {
        session.upload(file.path, file.content.as_bytes(), file.mode).await.expect("layout file");
    }
    ok(session.exec_capture(plan.activate_command, limit).await.expect("activate"));
    session.upload(P1_FILE.0, P1_FILE.1.as_bytes(), 0o644).await.expect("file");
    ok(session.exec_capture(layout::SYNC_COMMAND, limit).await.expect("config-sync"));
    let path = layout::script_path(P1_SCRIPT.0).expect("script path");
    session.upload(&path, P1_SCRIPT.1.as_bytes(), layout::SCRIPT_MODE).await.expect("script");
    ok(session.exec_capture(&layout::script_command(P1_SCRIPT.0).expect("command"), limit).await.expect("script"));
    for command in [discovery::SERVICES_COMMAND, discovery::TCP_PORTS_COMMAND, discovery::UDP_PORTS_COMMAND] {
        session.exec_capture(command, limit).await.expect("discovery");
    }
    ok(session.exec_capture(&discovery::credentials_command(), limit).await.expect("credentials"));
    let took = started.elapsed();
    let _ = session.close().await;
    took
}

/// A world whose pve-sim has [`SIM_SETTINGS`] and `keys` sets of host keys
/// made (at most the pool's size), with the template `bench` of P1's work
/// (a file, the package bash, a script).
async fn p1_world(prefix: &str, keys: u64) -> World {
    let options =
        testbed::pve_sim::PveSimOptions { extra_args: SIM_SETTINGS.map(String::from).to_vec(), ..Default::default() };
    let world = World::with_sim(prefix, options).await.expect("world");
    let script = json!([{"name": P1_SCRIPT.0, "content": P1_SCRIPT.1}]);
    bench_template(&world, json!({"packages": ["bash"], "scripts": script})).await;
    host_keys_made(&world.sim, keys.min(HOST_KEY_POOL)).await;
    world
}

/// P1: one Container, apply to Ready through the controller, against the
/// same work in a straight line; median of 5 each, taken in turns, on the
/// same pve-sim with the same task durations.
#[tokio::test]
#[ignore = "benchmark; run with hack/bench"]
async fn one_container_against_a_straight_line() {
    let rounds = if quick() { 3 } else { 5 };
    let mut world = p1_world("bench-p1", 2 * rounds as u64).await;
    world.start_controller(&[]).expect("controller");
    let api = world.api::<Container>();
    let (mut controller, mut baseline) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        baseline.push(straight_line(&world).await.as_secs_f64());
        let name = format!("p1-{round}");
        let ct = container_object(&world, &name, "pve1");
        // Created through the API, as the straight line uses it: a kubectl
        // process would count its own start against the controller.
        let started = Instant::now();
        api.create(&Default::default(), &ct).await.expect("container");
        loop {
            let phase = api.get(&name).await.expect("get").status.and_then(|s| s.phase);
            if phase == Some(Phase::Ready) {
                break;
            }
            assert_ne!(phase, Some(Phase::Error), "{name} failed");
            assert!(started.elapsed() < Duration::from_secs(300), "{name} not Ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        controller.push(started.elapsed().as_secs_f64());
    }
    controller.sort_by(f64::total_cmp);
    baseline.sort_by(f64::total_cmp);
    let (c, b) = (percentile(&controller, 0.5), percentile(&baseline, 0.5));
    println!(
        "bench: P1, one Container (vzcreate 2 s, vzstart 1 s): controller {c:.2} s, straight line {b:.2} s, controller / baseline {:.3} (median of {rounds})",
        c / b
    );
    figure("P1 controller apply to Ready", c, "s", None);
    figure("P1 straight-line baseline", b, "s", None);
    figure("P1 controller / baseline", c / b, "ratio", Some(("<= 1.05", c / b <= 1.05)));
}

/// 1,000 Containers behind a node that answers nothing but 596: the
/// requests per second the node sees from all of them (the per-node circuit
/// breaker lets about one through per open period), after they were applied.
#[tokio::test]
#[ignore = "benchmark; run with hack/bench"]
async fn a_thousand_containers_behind_a_dead_node() {
    const WINDOW: Duration = Duration::from_secs(60);
    let count = if quick() { 200 } else { 1000 };
    let mut world = World::new("bench-dead").await.expect("world");
    bench_template(&world, json!({})).await;
    let fault = json!({"path": ".*", "count": u32::MAX, "status": 596, "message": "Connection timed out"});
    world.sim_admin(reqwest::Method::POST, "/sim/fail", fault).await.expect("dead node");
    let controller = world.start_controller(&[]).expect("controller");
    let pid = world.controller(controller).pid();
    let (reads_0, writes_0) = world.sim_requests().await.expect("requests");
    let started = Instant::now();
    let names: Vec<String> = (0..count).map(|i| format!("dead-{i}")).collect();
    for chunk in names.chunks(50) {
        futures::future::join_all(chunk.iter().map(|name| world.apply(bench_container(name, "bench"))))
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
        "bench: {count} Containers behind a node answering 596: {:.2} Proxmox requests/s in all over the {} s after they were applied ({after} requests; {during_apply} while applying them in {:.1} s), {reconciles:.0} reconciles, controller RSS {:.1} MiB",
        after as f64 / WINDOW.as_secs_f64(),
        WINDOW.as_secs(),
        applied.as_secs_f64(),
        rss_kib(pid) as f64 / 1024.0
    );
    figure(&format!("{count} Containers behind a dead node"), after as f64 / WINDOW.as_secs_f64(), "requests/s", None);
    let api = world.api::<Container>();
    let listed = api.list(&Default::default()).await.expect("list").items;
    assert_eq!(listed.len(), count);
    assert!(
        listed.iter().all(|c| c.status.as_ref().and_then(|s| s.phase) != Some(Phase::Ready)),
        "nothing is Ready behind a dead node"
    );
    // Let them go: the node answers again and each Container's guest (if
    // any got one) is cleaned up with it.
    world.sim_admin(reqwest::Method::POST, "/sim/reset", json!({})).await.expect("node back");
}

/// Progress to Redis: the latency from a stage's step to a Pub/Sub
/// subscriber, and a script printing 100,000 lines as fast as it can: lines
/// per second through the pipeline to Redis, and what the subscriber and the
/// stream got (the stream's `entries-added`, since it keeps only about the
/// last 1,000 events).
// Two workers: the subscriber takes its receive time on one while the test
// polls the Container's phase on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with hack/bench"]
async fn progress_latency_and_a_flood_of_lines() {
    use futures::StreamExt;
    let lines: usize = if quick() { 20_000 } else { 100_000 };
    let mut world = World::new("bench-p4").await.expect("world");
    let controller = world.start_controller(&[]).expect("controller");
    bench_template(&world, json!({})).await;
    let mut flood = json!({
        "apiVersion": "infrahaus.io/v1alpha1", "kind": "ContainerTemplate", "metadata": {"name": "flood"},
        "spec": {"osTemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"}
    });
    flood["spec"]["scripts"] =
        json!([{"name": "10-flood.sh", "content": format!("#!/bin/bash\nseq 1 {lines}\n"), "timeoutSeconds": 600}]);
    world.apply(flood).await.expect("flood template");
    let url = world.redis_url.clone().expect("redis");
    let client = redis::Client::open(url.as_str()).expect("redis client");

    // Five Containers with no scripts, one after the other, for the latency
    // of their steps (about 80 in all), then one whose script floods.
    let mut received = Vec::new();
    let runs: Vec<(String, &str)> = (0..5)
        .map(|i| (format!("p4-steps-{i}"), "bench"))
        .chain(std::iter::once(("p4-flood".to_string(), "flood")))
        .collect();
    for (name, template) in &runs {
        let (name, template) = (name.as_str(), *template);
        let mut pubsub = client.get_async_pubsub().await.expect("subscribe connection");
        pubsub.subscribe(infrahaus_operator::progress::progress_channel(&world.ns, name)).await.expect("subscribe");
        let receiver = tokio::spawn(async move {
            let mut received: Vec<(Instant, chrono::DateTime<chrono::Utc>, Value)> = Vec::new();
            let mut messages = pubsub.on_message();
            while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(60), messages.next()).await {
                let Ok(event) = serde_json::from_slice::<Value>(message.get_payload_bytes()) else { continue };
                let done = event["type"] == "complete" || event["type"] == "error";
                received.push((Instant::now(), chrono::Utc::now(), event));
                if done {
                    break;
                }
            }
            received
        });
        world.apply(bench_container(name, template)).await.expect("container");
        world.wait_phase(name, Phase::Ready, Duration::from_secs(600)).await.expect("Ready");
        received.push(receiver.await.expect("subscriber"));
    }
    let flooded = received.pop().expect("the flood's events");
    let steps: Vec<_> = received.into_iter().flatten().collect();

    // Latency of step events: the subscriber's clock against the event's
    // timestamp (milliseconds, the same machine's clock).
    let mut latency: Vec<f64> = steps
        .iter()
        .filter(|(_, _, e)| e["type"] == "step")
        .filter_map(|(_, at, e)| {
            let sent = chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str()?).ok()?;
            Some((*at - sent.with_timezone(&chrono::Utc)).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    latency.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latency, 0.5), percentile(&latency, 0.99));
    println!(
        "bench: progress, step event to a Pub/Sub subscriber: p50 {p50:.1} ms  p99 {p99:.1} ms over {} steps (timestamps have millisecond resolution)",
        latency.len()
    );
    figure("progress step to subscriber p50", p50, "ms", None);
    figure("progress step to subscriber p99", p99, "ms", Some(("<= 5 ms", p99 <= 5.0)));

    let flood: Vec<&(Instant, chrono::DateTime<chrono::Utc>, Value)> =
        flooded.iter().filter(|(_, _, e)| e["type"] == "log" && e["script"] == "10-flood.sh").collect();
    let seconds = match (flood.first(), flood.last()) {
        (Some(first), Some(last)) => last.0.duration_since(first.0).as_secs_f64().max(0.001),
        _ => 0.0,
    };
    let per_second = if seconds > 0.0 { flood.len() as f64 / seconds } else { 0.0 };
    let key = infrahaus_operator::progress::events_stream(&world.ns, "p4-flood");
    let mut connection = client.get_multiplexed_async_connection().await.expect("redis");
    let info: std::collections::HashMap<String, redis::Value> =
        redis::cmd("XINFO").arg("STREAM").arg(&key).query_async(&mut connection).await.expect("XINFO STREAM");
    let added = match info.get("entries-added") {
        Some(redis::Value::Int(n)) => *n as usize,
        _ => 0,
    };
    let published = flooded.len();
    let dropped = world.controller_metric(controller, "infrahaus_progress_events_dropped_total").await.unwrap_or(0.0);
    let failed = world.controller_metric(controller, "infrahaus_redis_publish_failures_total").await.unwrap_or(0.0);
    // Every event goes out as a PUBLISH and an XADD in one pipeline: the
    // stream's count is what the controller published, and the subscriber's
    // shortfall against it is what Pub/Sub dropped on the way.
    let stream_lost = dropped + failed;
    println!(
        "bench: progress, a script printing {lines} lines: {per_second:.0} lines/s reached the subscriber; the stream added {added} events (it keeps ~1000), {stream_lost:.0} lost before it (queue drops {dropped:.0}, failed publishes {failed:.0}); the subscriber got {published} events ({} of {lines} lines), {} fewer than the stream",
        flood.len(),
        added.saturating_sub(published)
    );
    figure("progress flood lines per second", per_second, "lines/s", None);
    figure("progress events lost from the stream", stream_lost, "events", Some(("0", stream_lost == 0.0)));
    figure("progress events Pub/Sub dropped", added.saturating_sub(published) as f64, "events", None);
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
    figure(&format!("dashboard: Redis connections for {CLIENTS} SSE clients"), connections as f64, "connections", None);
    figure("dashboard: XADD to SSE client p99", percentile(&millis, 0.99), "ms", None);
}

/// A Proxmox API client for `sim`, pinned by its certificate fingerprint.
fn pve_client(sim: &testbed::pve_sim::PveSim) -> infrahaus_operator::proxmox::Client {
    use infrahaus_operator::proxmox;
    let token = proxmox::ApiToken::new(sim.token_id.clone(), sim.token_secret.clone());
    let tls = proxmox::TlsOptions { fingerprint: Some(sim.fingerprint.clone()), ..Default::default() };
    proxmox::Client::new(proxmox::ClientConfig::new(sim.url.clone(), token, tls)).expect("client")
}

/// The status the controller writes when a Container of `bench` (no
/// files, no scripts) reached Ready on guest `vmid` of pve1.
fn ready_status(ct: &Container, vmid: u32) -> Value {
    use infrahaus_operator::crd::{ContainerStatus, PowerState, StageState, StageStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = ContainerStatus {
        phase: Some(Phase::Ready),
        progress: Some(100),
        message: Some("Container ready".into()),
        vmid: Some(vmid as i32),
        node: Some("pve1".into()),
        stages: StageName::ALL
            .iter()
            .map(|name| StageStatus {
                name: *name,
                state: StageState::Succeeded,
                started_at: Some(now.clone()),
                finished_at: Some(now.clone()),
                message: None,
            })
            .collect(),
        observed_generation: ct.metadata.generation,
        power_state: Some(PowerState::Running),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Succeeded".into(),
            message: format!("CT {vmid} is ready"),
            last_transition_time: now,
            observed_generation: ct.metadata.generation,
        }],
        ..Default::default()
    };
    json!({ "status": status })
}

/// P3: 1,000 Ready Containers at rest. Their guests exist only in pve-sim's
/// API and task engine (`--api-only-guests`: no namespace, no sshd), so they
/// cannot go through Deploy over SSH: each guest is created and started
/// through the Proxmox API as the controller creates it (the ownership
/// marker, the managed tag, the template's settings), and its Container is
/// given the status the controller writes at Ready. A first controller start
/// checks them all (and records the template hash); after it is killed, a
/// second start is measured: the time until every Container was reconciled,
/// the Proxmox writes and SSH sessions that caused, the controller's memory
/// at rest and the requests per minute its resync interval costs.
#[tokio::test]
#[ignore = "benchmark; run with hack/bench"]
async fn a_thousand_ready_containers_at_rest() {
    use futures::StreamExt;
    use infrahaus_operator::proxmox;
    use kube::api::{Patch, PatchParams};
    let count: u32 = if quick() { 200 } else { 1000 };
    let (interval, window) = if quick() { (10, 30) } else { (30, 120) };
    let options = testbed::pve_sim::PveSimOptions {
        extra_args: ["--api-only-guests", "--ip-pool", "127.100.0.0/21"].map(String::from).to_vec(),
        ..Default::default()
    };
    let mut world = World::with_sim("bench-p3", options).await.expect("world");
    bench_template(&world, json!({"files": []})).await;
    let pve = pve_client(&world.sim);
    let api = world.api::<Container>();
    let names: Vec<String> = (0..count).map(|i| format!("rest-{i}")).collect();
    let prepared = Instant::now();
    for chunk in names.chunks(100) {
        futures::future::join_all(chunk.iter().map(|name| {
            let mut manifest = bench_container(name, "bench");
            manifest["metadata"]["finalizers"] = json!(["infrahaus.io/cleanup"]);
            world.apply(manifest)
        }))
        .await
        .into_iter()
        .for_each(|applied| applied.expect("container"));
    }
    let node = world.sim.node.clone();
    let guests = futures::stream::iter(names.iter().enumerate().map(|(i, name)| {
        let (api, pve, node) = (&api, &pve, &node);
        async move {
            let ct = api.get(name).await.expect("get");
            let vmid = 1000 + i as u32;
            let uid = ct.metadata.uid.clone().expect("uid");
            let description = format!(
                "Managed by infrahaus-operator: Container {}/{name}",
                ct.metadata.namespace.clone().unwrap_or_default()
            );
            let params = proxmox::CreateLxcParams {
                vmid,
                ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
                hostname: name.clone(),
                cores: None,
                memory_mib: Some(512),
                swap_mib: None,
                rootfs: Some(proxmox::rootfs("local-lvm", 8)),
                net0: Some(proxmox::net0(&proxmox::Net0 { bridge: None, ipv4: Some("dhcp"), gateway: None })),
                nameserver: None,
                password: None,
                ssh_public_keys: None,
                unprivileged: true,
                features: None,
                onboot: None,
                tags: Some(proxmox::render_tags(&[])),
                description: Some(proxmox::description_with_marker(&uid, Some(&description))),
                start: true,
            };
            let upid = pve.create_lxc(node, &params).await.expect("create");
            pve.wait_task(&upid, Duration::from_millis(20), Duration::from_secs(60)).await.expect("create task");
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(ready_status(&ct, vmid)))
                .await
                .expect("Ready status");
        }
    }))
    .buffer_unordered(16);
    guests.collect::<Vec<()>>().await;
    println!(
        "bench: P3, {count} guests created and their Containers made Ready in {:.1} s",
        prepared.elapsed().as_secs_f64()
    );

    // The first start: every Container checked once.
    let args = ["--concurrency", "10"];
    let first = world.start_controller(&args).expect("controller");
    let (reads_0, writes_0) = world.sim_requests().await.expect("requests");
    let reconciled_first = reconciled(&world, first, count, reads_0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (reads_1, writes_1) = world.sim_requests().await.expect("requests");
    world.controller(first).kill();
    let not_ready = api
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter(|c| c.status.as_ref().and_then(|s| s.phase) != Some(Phase::Ready))
        .count();
    assert_eq!(not_ready, 0, "every Container stays Ready");

    // The second start, measured.
    let interval_arg = format!("--resync-interval={interval}s");
    let second = world.start_controller(&["--concurrency", "10", &interval_arg]).expect("second controller");
    let pid = world.controller(second).pid();
    let (reads_2, writes_2) = world.sim_requests().await.expect("requests");
    let restart = reconciled(&world, second, count, reads_2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (reads_3, writes_3) = world.sim_requests().await.expect("requests");
    let ssh = world.controller_metric(second, "infrahaus_ssh_sessions_total").await.unwrap_or(0.0);
    let writes = (writes_3 - writes_2) as f64;

    // At rest: memory, and what the resync interval costs.
    tokio::time::sleep(Duration::from_secs(interval)).await;
    let (reads_4, writes_4) = world.sim_requests().await.expect("requests");
    tokio::time::sleep(Duration::from_secs(window)).await;
    let (reads_5, writes_5) = world.sim_requests().await.expect("requests");
    let rss = rss_kib(pid) as f64 / 1024.0;
    let per_minute = ((reads_5 - reads_4) + (writes_5 - writes_4)) as f64 * 60.0 / window as f64;
    println!(
        "bench: P3, first controller start with {count} Ready Containers: all reconciled in {:.1} s, {} Proxmox reads, {} writes",
        reconciled_first.as_secs_f64(),
        reads_1 - reads_0,
        writes_1 - writes_0
    );
    println!(
        "bench: P3, restart with {count} Ready Containers: all reconciled in {:.1} s, {} Proxmox reads, {writes} writes, {ssh} SSH sessions",
        restart.as_secs_f64(),
        reads_3 - reads_2
    );
    println!(
        "bench: P3, at rest: controller RSS {rss:.1} MiB, {per_minute:.0} Proxmox requests/min at --resync-interval={interval}s ({:.0} at the default 5m), {} writes",
        per_minute * interval as f64 / 300.0,
        writes_5 - writes_4
    );
    figure(&format!("P3 {count} Ready at rest: controller RSS"), rss, "MiB", Some(("<= 64 MiB", rss <= 64.0)));
    let secs = restart.as_secs_f64();
    figure(&format!("P3 restart, {count} Ready: all reconciled"), secs, "s", Some(("<= 10 s", secs <= 10.0)));
    figure(&format!("P3 restart, {count} Ready: Proxmox writes"), writes, "writes", Some(("0", writes == 0.0)));
    figure(&format!("P3 restart, {count} Ready: SSH sessions"), ssh, "sessions", Some(("0", ssh == 0.0)));
    figure(&format!("P3 {count} Ready at rest, resync every {interval}s"), per_minute, "requests/min", None);
}

/// How long until controller `index` has reconciled all `count` Containers:
/// it started that many reconciles and pve-sim answered the two reads of
/// each drift check (counted from `reads_before`).
async fn reconciled(world: &World, index: usize, count: u32, reads_before: u64) -> Duration {
    let started = Instant::now();
    loop {
        let reconciles = world.controller_metric(index, "infrahaus_reconciles_total").await.unwrap_or(0.0);
        let (reads, _) = world.sim_requests().await.expect("requests");
        if reconciles >= count as f64 && reads - reads_before >= 2 * count as u64 {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(300), "not every Container was reconciled in 300 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The controller's CPU time so far (user and system), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the whole line.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / per_second
}

/// pve-sim's settings on both sides of every comparison: task durations
/// (each a task's total, the real work inside it), and host keys made
/// before the clock starts (see [`p1_world`]) so their generation takes no
/// CPU from the run.
const SIM_SETTINGS: [&str; 6] =
    ["--task-duration", "vzcreate=2000", "--task-duration", "vzstart=1000", "--host-key-pool", "128"];
/// The host-key sets pve-sim keeps ready (`--host-key-pool` above).
const HOST_KEY_POOL: u64 = 128;

/// The node slots of each ProxmoxNode in the batches.
const NODE_SLOTS: u32 = 4;
/// The controller's pipeline slots in the batches: more than the nodes'
/// slots together, so the nodes are what bounds a batch.
const PIPELINE_SLOTS: usize = 64;

/// One batch of Containers spread over two pve-sim nodes.
struct Batch {
    count: usize,
    /// Apply of the first to Ready of the last.
    wall: f64,
    /// The controller's CPU seconds in that time.
    cpu: f64,
    /// Each Container's apply-to-Ready, sorted.
    ready: Vec<f64>,
    /// Each stage's runs: seconds in all and how many, in stage order.
    stages: Vec<(StageName, f64, f64)>,
}

/// A second pve-sim node, `pve2`, with its token Secret and ProxmoxNode.
async fn second_node(world: &World) -> testbed::pve_sim::PveSim {
    let options = testbed::pve_sim::PveSimOptions {
        node: "pve2".into(),
        extra_args: SIM_SETTINGS.map(String::from).to_vec(),
        ..Default::default()
    };
    let sim = testbed::pve_sim::PveSim::start(options).await.expect("second pve-sim");
    world
        .apply(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pve2-token"},
            "stringData": {"tokenId": sim.token_id, "secret": sim.token_secret}
        }))
        .await
        .expect("token");
    world
        .apply(json!({
            "apiVersion": "infrahaus.io/v1alpha1", "kind": "ProxmoxNode", "metadata": {"name": "pve2"},
            "spec": {
                "endpoint": sim.url, "nodeName": "pve2", "tokenSecretRef": {"name": "pve2-token"},
                "tls": {"fingerprint": sim.fingerprint}, "maxConcurrentOperations": NODE_SLOTS
            }
        }))
        .await
        .expect("node");
    sim
}

/// Waits until `sim`'s host-key pool holds `keys` sets, so key generation
/// runs before the clock starts.
async fn host_keys_made(sim: &testbed::pve_sim::PveSim, keys: u64) {
    let client = support::sim_http(sim).expect("client");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let state: Value = client
            .get(format!("{}/sim/state", sim.url))
            .header("Authorization", sim.auth_header())
            .send()
            .await
            .expect("sim state")
            .json()
            .await
            .expect("sim state json");
        let ready = state["data"]["host_key_pool"]["ready"].as_u64().unwrap_or(0);
        if ready >= keys {
            return;
        }
        assert!(Instant::now() < deadline, "pve-sim's host-key pool holds {ready} of {keys} after 600 s: {state}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `count` Containers, half on pve1 and half on pve2 (each with
/// [`NODE_SLOTS`] slots), of the P1 template, from apply to all Ready.
async fn batch(count: usize) -> Batch {
    let per_node = count.div_ceil(2) as u64;
    let mut world = p1_world(&format!("bench-batch-{count}"), per_node).await;
    world.apply_node_with_slots("pve1", NODE_SLOTS).await.expect("pve1");
    let pve2 = second_node(&world).await;
    host_keys_made(&pve2, per_node.min(HOST_KEY_POOL)).await;
    let slots = PIPELINE_SLOTS.to_string();
    let controller = world.start_controller(&["--concurrency", &slots]).expect("controller");
    let pid = world.controller(controller).pid();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let api = world.api::<Container>();
    let containers: Vec<Container> = (0..count)
        .map(|i| container_object(&world, &format!("b{count}-{i}"), if i % 2 == 0 { "pve1" } else { "pve2" }))
        .collect();
    let post = kube::api::PostParams::default();
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    for chunk in containers.chunks(20) {
        futures::future::join_all(chunk.iter().map(|ct| api.create(&post, ct))).await.into_iter().for_each(|created| {
            created.expect("create");
        });
    }
    let mut ready: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let list = api.list(&Default::default()).await.expect("list").items;
        let at = started.elapsed().as_secs_f64();
        for ct in &list {
            let phase = ct.status.as_ref().and_then(|s| s.phase);
            assert_ne!(phase, Some(Phase::Error), "{:?} failed: {:?}", ct.metadata.name, ct.status);
            if phase == Some(Phase::Ready) {
                ready.entry(ct.metadata.name.clone().unwrap_or_default()).or_insert(at);
            }
        }
        if ready.len() == count {
            break;
        }
        assert!(Instant::now() < deadline, "only {}/{count} Ready after 1800 s", ready.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let mut ready: Vec<f64> = ready.into_values().collect();
    ready.sort_by(f64::total_cmp);
    // The controller's own measure of each stage run (milliseconds, where
    // the status's timestamps have seconds).
    let metrics = world.controller_metrics(controller).await.expect("metrics");
    let stage_metric = |stage: StageName, suffix: &str| {
        let key = format!("infrahaus_stage_duration_seconds_{suffix}{{stage=\"{}\"}}", stage.as_str());
        metrics.lines().find_map(|line| line.strip_prefix(&key)?.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    let stages = StageName::ALL
        .iter()
        .map(|stage| (*stage, stage_metric(*stage, "sum"), stage_metric(*stage, "count")))
        .collect();
    // The controller's log beside the figures, to see where a batch's time
    // went.
    if let Some(dir) = bench_dir() {
        let _ = std::fs::write(dir.join(format!("batch-{count}-controller.log")), world.controller_logs());
    }
    drop(pve2);
    Batch { count, wall, cpu, ready, stages }
}

/// P2 and the scaling curve: batches of 1, 10, 50 and 200 Containers over
/// two pve-sim nodes with 4 slots each. The single Container gives the
/// service times; the ideal schedule of a batch is that Container's
/// apply-to-Ready plus, per node, the node-slot work (Create and Start hold
/// a slot, Deploy, Sync and Finalize do not) of the other Containers spread
/// over its slots: `T1 + max(0, n/4 - 1) * (create + start)` with `n` the
/// Containers of the busier node, or the pipeline slots' bound if larger.
/// Prints wall / ideal, Ready-time percentiles and where the time went;
/// writes the curve (wall and controller CPU seconds) for the plot.
#[tokio::test]
#[ignore = "benchmark; run with hack/bench"]
async fn scaling_and_the_ideal_schedule() {
    let sizes: &[usize] = if quick() { &[1, 10, 20] } else { &[1, 10, 50, 200] };
    let mut batches = Vec::new();
    for &count in sizes {
        let batch = batch(count).await;
        println!(
            "bench: scaling, {count} Containers over 2 nodes: wall {:.1} s, controller CPU {:.2} s",
            batch.wall, batch.cpu
        );
        batches.push(batch);
    }
    let one = &batches[0];
    let service = |stage: StageName| one.stages.iter().find(|(s, _, _)| *s == stage).map_or(0.0, |(_, secs, _)| *secs);
    let t1 = one.wall;
    let (create, start) = (service(StageName::Creating), service(StageName::Starting));
    let all_stages: f64 = StageName::ALL.iter().map(|s| service(*s)).sum();
    println!(
        "bench: service times of one Container: apply to Ready {t1:.2} s; stages {}",
        StageName::ALL.iter().map(|s| format!("{} {:.2} s", s.as_str(), service(*s))).collect::<Vec<_>>().join(", ")
    );
    let mut rows = Vec::new();
    for batch in &batches {
        let busier = batch.count.div_ceil(2) as f64;
        let nodes = t1 + (busier / NODE_SLOTS as f64 - 1.0).max(0.0) * (create + start);
        let pipeline = t1 + (batch.count as f64 / PIPELINE_SLOTS as f64 - 1.0).max(0.0) * all_stages;
        let ideal = nodes.max(pipeline);
        rows.push((batch.count, batch.wall, batch.cpu, ideal));
    }
    println!("bench: scaling curve (2 nodes, {NODE_SLOTS} slots each, --concurrency {PIPELINE_SLOTS})");
    println!(
        "bench:   {:>10} {:>9} {:>9} {:>12} {:>11} {:>14}",
        "Containers", "wall s", "ideal s", "wall/ideal", "CPU s", "CPU ms/Ct"
    );
    for (count, wall, cpu, ideal) in &rows {
        println!(
            "bench:   {count:>10} {wall:>9.1} {ideal:>9.1} {:>12.3} {cpu:>11.2} {:>14.1}",
            wall / ideal,
            cpu * 1000.0 / *count as f64
        );
    }
    if let Some(dir) = bench_dir() {
        let tsv: String = std::iter::once("containers\twall\tideal\tcpu\n".to_string())
            .chain(rows.iter().map(|(count, wall, cpu, ideal)| format!("{count}\t{wall:.3}\t{ideal:.3}\t{cpu:.3}\n")))
            .collect();
        std::fs::write(dir.join("scaling.tsv"), tsv).expect("scaling.tsv");
    }

    let last = batches.last().expect("a batch");
    let (count, wall, _, ideal) = rows.last().copied().expect("a row");
    println!(
        "bench: P2, {count} Containers over 2 nodes: wall {wall:.1} s, ideal {ideal:.1} s, wall / ideal {:.3}; Ready p50 {:.1} s, p90 {:.1} s, p99 {:.1} s",
        wall / ideal,
        percentile(&last.ready, 0.5),
        percentile(&last.ready, 0.9),
        percentile(&last.ready, 0.99)
    );
    let in_stages: f64 = last.stages.iter().map(|(_, secs, _)| secs).sum();
    let waiting = last.ready.iter().sum::<f64>() - in_stages;
    let total = last.ready.iter().sum::<f64>().max(f64::EPSILON);
    println!(
        "bench: P2, where the time went (share of the Containers' apply-to-Ready time, mean per Container): {}, between stages and waiting for a slot {:.0}% ({:.2} s)",
        last.stages
            .iter()
            .map(|(stage, secs, _)| format!(
                "{} {:.0}% ({:.2} s)",
                stage.as_str(),
                secs * 100.0 / total,
                secs / count as f64
            ))
            .collect::<Vec<_>>()
            .join(", "),
        waiting * 100.0 / total,
        waiting / count as f64
    );
    figure(&format!("P2 {count} Containers, 2 nodes: wall"), wall, "s", None);
    figure(
        &format!("P2 {count} Containers: wall / ideal"),
        wall / ideal,
        "ratio",
        Some(("<= 1.10", wall / ideal <= 1.10)),
    );
    figure(&format!("P2 {count} Containers: Ready p50"), percentile(&last.ready, 0.5), "s", None);
    figure(&format!("P2 {count} Containers: Ready p99"), percentile(&last.ready, 0.99), "s", None);
    for (count, wall, cpu, _) in &rows {
        figure(&format!("scaling {count} Containers: wall"), *wall, "s", None);
        figure(&format!("scaling {count} Containers: controller CPU"), *cpu, "s", None);
    }
}
