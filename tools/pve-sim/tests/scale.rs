//! Fifty containers created and started at once, each reachable by ssh.
//! Prints the time to start them and the memory each running one takes.

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use futures::future::try_join_all;

use crate::common::{Sim, SshKey};

const COUNT: u32 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_containers_start_at_once() -> Result<()> {
    let sim = Sim::start(&[]).await?;
    let key = SshKey::generate()?;
    let vmids: Vec<u32> = (300..300 + COUNT).collect();

    let created = Instant::now();
    try_join_all(vmids.iter().map(|vmid| {
        let hostname = format!("scale-{vmid}");
        let (sim, key) = (&sim, &key);
        async move {
            sim.create(
                *vmid,
                &[
                    ("hostname", &hostname),
                    ("net0", "name=eth0,bridge=vmbr0,ip=dhcp"),
                    ("ssh-public-keys", &key.public),
                ],
            )
            .await
        }
    }))
    .await?;
    let create_secs = created.elapsed().as_secs_f64();

    let started = Instant::now();
    try_join_all(vmids.iter().map(|vmid| sim.start_ct(*vmid))).await?;
    let start_secs = started.elapsed().as_secs_f64();

    let state = sim.admin_state().await?;
    let containers = state["containers"].as_array().context("containers")?;
    ensure!(containers.len() == COUNT as usize);
    let rss: u64 = containers.iter().filter_map(|c| c["rss_bytes"].as_u64()).sum();
    let pss: u64 = containers
        .iter()
        .flat_map(|c| c["pids"].as_array().cloned().unwrap_or_default())
        .filter_map(|pid| pid.as_u64())
        .map(proportional_set_size)
        .sum();
    let ips: Vec<(String, String)> = containers
        .iter()
        .map(|c| (c["ip"].as_str().unwrap_or_default().to_string(), format!("scale-{}", c["vmid"])))
        .collect();

    let reached = Instant::now();
    for chunk in ips.chunks(10) {
        try_join_all(chunk.iter().map(|(ip, hostname)| {
            let key = &key;
            async move {
                let out = key.ssh(ip, "hostname").await?;
                ensure!(out.status.success(), "ssh {ip}: {}", String::from_utf8_lossy(&out.stderr));
                ensure!(String::from_utf8_lossy(&out.stdout).trim() == hostname, "wrong host behind {ip}");
                Ok(())
            }
        }))
        .await?;
    }
    let ssh_secs = reached.elapsed().as_secs_f64();

    println!("created {COUNT} containers in {create_secs:.1} s (host keys included)");
    println!("started {COUNT} containers in {start_secs:.1} s");
    println!("ssh hostname into all {COUNT} in {ssh_secs:.1} s");
    println!(
        "memory per running container: {:.1} MiB RSS (ct-init, init and sshd; {:.0} MiB for {COUNT})",
        rss as f64 / f64::from(COUNT) / 1_048_576.0,
        rss as f64 / 1_048_576.0
    );
    println!(
        "memory per running container: {:.1} MiB PSS (shared pages split between containers)",
        pss as f64 / f64::from(COUNT) / 1_048_576.0
    );

    try_join_all(vmids.iter().map(|vmid| {
        let path = sim.node_path(&format!("/lxc/{vmid}?force=1&purge=1"));
        let sim = &sim;
        async move { sim.run_task(sim.delete(&path).await?).await }
    }))
    .await?;
    let left = sim.admin_state().await?;
    ensure!(left["containers"].as_array().is_some_and(|c| c.is_empty()), "containers left: {left}");
    Ok(())
}

/// A process's proportional set size in bytes, from `/proc/PID/smaps_rollup`.
fn proportional_set_size(pid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
