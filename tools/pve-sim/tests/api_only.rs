//! `--api-only-guests`: two hundred guests created, started, changed, rebooted,
//! stopped and destroyed through the API, with the same tasks, locks and
//! error texts as containers, and no process, namespace, mount or file
//! behind any of them. Prints the memory pve-sim needs per guest.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::future::try_join_all;
use serde_json::{json, Value};

use crate::common::{mounts_mentioning, processes_mentioning, Sim, SshKey, DEBIAN};

const COUNT: u32 = 200;
const FIRST: u32 = 400;
const CREATE_MS: u64 = 1000;
const START_MS: u64 = 300;

/// The children of every thread of a process.
fn child_processes(pid: u64) -> Vec<u64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .flat_map(|task| {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            children.split_whitespace().filter_map(|c| c.parse().ok()).collect::<Vec<u64>>()
        })
        .collect()
}

async fn status(sim: &Sim, vmid: u32) -> Result<Value> {
    Sim::ok(sim.get(&sim.node_path(&format!("/lxc/{vmid}/status/current"))).await?)
}

/// The address of a guest's eth0 in `GET interfaces`.
async fn eth0_address(sim: &Sim, vmid: u32) -> Result<Option<String>> {
    let interfaces = Sim::ok(sim.get(&sim.node_path(&format!("/lxc/{vmid}/interfaces"))).await?)?;
    Ok(interfaces
        .as_array()
        .and_then(|list| list.iter().find(|i| i["name"] == "eth0"))
        .and_then(|eth0| eth0["ip-addresses"][0]["ip-address"].as_str())
        .map(String::from))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_api_only_guests_run_without_any_process() -> Result<()> {
    let create_ms = format!("vzcreate={CREATE_MS}");
    let start_ms = format!("vzstart={START_MS}");
    let sim = Sim::start(&["--api-only-guests", "--task-duration", &create_ms, "--task-duration", &start_ms]).await?;
    let key = SshKey::generate()?;
    let before = sim.admin_state().await?;
    assert_eq!(before["mode"], "api-only");
    assert_eq!(before["host_key_pool"], Value::Null);
    let sim_pid = before["process"]["pid"].as_u64().context("pve-sim pid")?;
    let rss_before = before["process"]["rss_bytes"].as_u64().context("pve-sim rss")?;
    let vmids: Vec<u32> = (FIRST..FIRST + COUNT).collect();

    // While a create runs its config holds the create lock alone, as for a container.
    let first = Sim::ok(
        sim.post(
            &sim.node_path("/lxc"),
            &[
                ("vmid", &FIRST.to_string()),
                ("ostemplate", DEBIAN),
                ("hostname", &format!("api-{FIRST}")),
                ("net0", "name=eth0,bridge=vmbr0,ip=dhcp"),
                ("ssh-public-keys", &key.public),
                ("password", "s3cret-pw"),
            ],
        )
        .await?,
    )?;
    let first = first.as_str().context("upid")?.to_string();
    let during = status(&sim, FIRST).await?;
    assert_eq!((during["lock"].as_str(), during["status"].as_str()), (Some("create"), Some("stopped")));
    let locked = sim.post(&sim.node_path(&format!("/lxc/{FIRST}/status/start")), &[]).await?;
    assert_eq!((locked.status, locked.reason.as_str()), (500, "CT is locked (create)"));
    assert_eq!(sim.wait_task(&first).await?["exitstatus"], "OK");

    let created = Instant::now();
    for chunk in vmids[1..].chunks(50) {
        try_join_all(chunk.iter().map(|vmid| {
            let (sim, key) = (&sim, &key);
            async move {
                let hostname = format!("api-{vmid}");
                let log = sim
                    .create(
                        *vmid,
                        &[
                            ("hostname", &hostname),
                            ("net0", "name=eth0,bridge=vmbr0,ip=dhcp"),
                            ("ssh-public-keys", &key.public),
                        ],
                    )
                    .await?;
                ensure!(log.iter().any(|l| l.starts_with("extracting archive")), "create log of {vmid}: {log:?}");
                ensure!(
                    !log.iter().any(|l| l.starts_with("Creating SSH host key") || l.starts_with("done: SHA256:")),
                    "an API-only create prints no host keys: {log:?}"
                );
                ensure!(log.last().map(String::as_str) == Some("TASK OK"));
                Ok(())
            }
        }))
        .await?;
    }
    let create_secs = created.elapsed().as_secs_f64();
    ensure!(create_secs >= 4.0 * CREATE_MS as f64 / 1000.0, "four rounds of creates of {CREATE_MS} ms each");

    let started = Instant::now();
    for chunk in vmids.chunks(50) {
        try_join_all(chunk.iter().map(|vmid| sim.start_ct(*vmid))).await?;
    }
    let start_secs = started.elapsed().as_secs_f64();

    let mut addresses = BTreeSet::new();
    let mut first_address = None;
    for vmid in &vmids {
        let current = status(&sim, *vmid).await?;
        ensure!(current["status"] == "running", "{vmid}: {current}");
        ensure!(current.get("pid").is_none() && current.get("lock").is_none(), "{vmid}: {current}");
        ensure!(current["name"] == format!("api-{vmid}"), "{vmid}: {current}");
        let address = eth0_address(&sim, *vmid).await?.with_context(|| format!("{vmid} has no address"))?;
        ensure!(address.starts_with(&format!("{}.", sim.pool_prefix)), "{vmid}: {address}");
        if *vmid == FIRST {
            first_address = Some(address.clone());
        }
        addresses.insert(address);
    }
    assert_eq!(addresses.len(), COUNT as usize, "every guest has an address of its own");

    // Nothing runs or exists behind the guests.
    let state = sim.admin_state().await?;
    let containers = state["containers"].as_array().context("containers")?;
    assert_eq!(containers.len(), COUNT as usize);
    for c in containers {
        assert_eq!((c["status"].as_str(), c["pid"].as_u64(), c["dir"].as_str()), (Some("running"), None, None), "{c}");
        assert_eq!(c["pids"], json!([]), "{c}");
    }
    assert_eq!(child_processes(sim_pid), Vec::<u64>::new(), "pve-sim started no process");
    let lxc_dir = sim.sim.state_dir.join("lxc");
    assert_eq!(processes_mentioning(&lxc_dir.display().to_string()), Vec::<u32>::new(), "no ct-init runs");
    assert_eq!(processes_mentioning(&format!("ListenAddress={}.", sim.pool_prefix)), Vec::<u32>::new(), "no sshd");
    assert!(!lxc_dir.exists(), "no guest has files in {}", lxc_dir.display());
    assert_eq!(mounts_mentioning(&sim.sim.state_dir), Vec::<String>::new(), "no guest has mounts");
    for address in addresses.iter().take(5) {
        let target = format!("{address}:22").parse()?;
        let answered = tokio::task::spawn_blocking(move || {
            std::net::TcpStream::connect_timeout(&target, Duration::from_millis(300)).is_ok()
        })
        .await?;
        assert!(!answered, "nothing listens on {address}:22");
    }
    let namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    assert_eq!(namespace(&sim_pid.to_string()), namespace("self"), "pve-sim made no mount namespace");
    let blocked = sim.admin("ssh-fault", json!({"mode": "silent"})).await?;
    assert_eq!((blocked.status, blocked.reason.as_str()), (400, "no guest runs sshd with --api-only-guests"));

    let rss_after = state["process"]["rss_bytes"].as_u64().context("pve-sim rss")?;
    let per_guest = rss_after.saturating_sub(rss_before) as f64 / f64::from(COUNT);
    println!("api-only: created {COUNT} guests in {create_secs:.1} s ({CREATE_MS} ms per create)");
    println!("api-only: started {COUNT} guests in {start_secs:.1} s ({START_MS} ms per start)");
    println!(
        "api-only: pve-sim RSS {:.1} MiB -> {:.1} MiB, {:.1} KiB per running guest",
        rss_before as f64 / 1_048_576.0,
        rss_after as f64 / 1_048_576.0,
        per_guest / 1024.0
    );
    assert!(per_guest < 512.0 * 1024.0, "an API-only guest costs {per_guest} bytes of pve-sim's memory");

    // Config, pending, resize, reboot, shutdown and stop as for a container.
    let ct = |rest: &str| sim.node_path(&format!("/lxc/{FIRST}{rest}"));
    Sim::ok(sim.put(&ct("/config"), &[("hostname", "renamed"), ("nameserver", "127.0.0.53")]).await?)?;
    let pending = Sim::ok(sim.get(&ct("/pending")).await?)?;
    let nameserver = pending.as_array().and_then(|p| p.iter().find(|e| e["key"] == "nameserver")).context("ns")?;
    assert_eq!(nameserver["pending"], "127.0.0.53", "{pending}");
    assert_eq!(Sim::ok(sim.get(&ct("/config?current=1")).await?)?["hostname"], "renamed");
    sim.run_task(sim.put(&ct("/resize"), &[("disk", "rootfs"), ("size", "+1G")]).await?).await?;
    assert!(Sim::ok(sim.get(&ct("/config")).await?)?["rootfs"].as_str().is_some_and(|r| r.ends_with("size=5G")));
    let shrink = sim.put(&ct("/resize"), &[("disk", "rootfs"), ("size", "1G")]).await?;
    assert_eq!(shrink.reason, "unable to shrink disk size");
    let reboot = sim.run_task(sim.post(&ct("/status/reboot"), &[]).await?).await?;
    assert_eq!(reboot.last().map(String::as_str), Some("TASK OK"));
    assert_eq!(Sim::ok(sim.get(&ct("/config?current=1")).await?)?["nameserver"], "127.0.0.53", "applied at reboot");
    assert_eq!(status(&sim, FIRST).await?["status"], "running");
    sim.run_task(sim.post(&ct("/status/shutdown"), &[("timeout", "5")]).await?).await?;
    assert_eq!(status(&sim, FIRST).await?["status"], "stopped");
    assert_eq!(Sim::ok(sim.get(&ct("/interfaces")).await?)?, Value::Null);
    let not_running = sim.post(&ct("/status/stop"), &[]).await?;
    assert_eq!(not_running.reason, format!("CT {FIRST} not running"));
    let timed = Instant::now();
    sim.start_ct(FIRST).await?;
    ensure!(timed.elapsed() >= Duration::from_millis(START_MS), "a start lasts its {START_MS} ms");
    assert_eq!(eth0_address(&sim, FIRST).await?, first_address, "the lease stays with the guest");
    let already = sim.post(&ct("/status/start"), &[]).await?;
    assert_eq!(already.reason, format!("CT {FIRST} already running"));
    let refuse = sim.delete(&ct("")).await?;
    assert_eq!(refuse.reason, format!("unable to destroy CT {FIRST} - container is running"));
    sim.run_task(sim.post(&ct("/status/stop"), &[]).await?).await?;

    let tasks = sim.get(&sim.node_path(&format!("/tasks?source=all&vmid={FIRST}"))).await?;
    let types: Vec<&str> =
        tasks.data().as_array().context("tasks")?.iter().filter_map(|t| t["type"].as_str()).collect();
    assert_eq!(types, ["vzstop", "vzstart", "vzshutdown", "vzreboot", "resize", "vzstart", "vzcreate"]);

    for chunk in vmids.chunks(50) {
        try_join_all(chunk.iter().map(|vmid| {
            let path = sim.node_path(&format!("/lxc/{vmid}?force=1&purge=1"));
            let sim = &sim;
            async move { sim.run_task(sim.delete(&path).await?).await }
        }))
        .await?;
    }
    let left = sim.admin_state().await?;
    assert_eq!(left["containers"], json!([]), "every guest is destroyed");
    let gone = sim.get(&ct("/status/current")).await?;
    assert_eq!(gone.reason, format!("Configuration file 'nodes/pve1/lxc/{FIRST}.conf' does not exist"));
    assert_eq!(child_processes(sim_pid), Vec::<u64>::new());
    Ok(())
}
