//! SSH host keys of containers: taken from the pool of `--host-key-pool`,
//! unique per container, with the container's comment, reported in the create
//! log and served by its sshd; and a configured task duration as the total a
//! task lasts, with the real work (host keys, a container's start) inside it.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::common::{Sim, SshKey, DEBIAN};

const KEY_FILES: [&str; 3] = ["ssh_host_rsa_key", "ssh_host_ecdsa_key", "ssh_host_ed25519_key"];

/// `ssh-keygen ARGS FILE`'s output.
fn ssh_keygen(args: &[&str], file: &Path) -> Result<String> {
    let out = std::process::Command::new("ssh-keygen").args(args).arg(file).output()?;
    ensure!(out.status.success(), "ssh-keygen {args:?} {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn wait_pool_ready(sim: &Sim, ready: u64) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pool = sim.admin_state().await?["host_key_pool"].clone();
        if pool["ready"].as_u64() == Some(ready) {
            return Ok(pool);
        }
        ensure!(Instant::now() < deadline, "the pool did not reach {ready} ready sets: {pool}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The container directory `/sim/state` reports for a vmid.
async fn ct_dir(sim: &Sim, vmid: u32) -> Result<String> {
    let state = sim.admin_state().await?;
    let containers = state["containers"].as_array().context("containers")?;
    let ct = containers.iter().find(|c| c["vmid"] == vmid).with_context(|| format!("{vmid} in {state}"))?;
    Ok(ct["dir"].as_str().context("dir")?.to_string())
}

#[tokio::test]
async fn pooled_host_keys_are_unique_commented_logged_and_served() -> Result<()> {
    let sim = Sim::start(&["--host-key-pool", "4"]).await?;
    let at_start = sim.admin_state().await?;
    assert_eq!(at_start["mode"], "containers");
    assert_eq!(at_start["host_key_pool"]["size"], 4);
    println!("host key pool right after the ready line: {}", at_start["host_key_pool"]);
    let pool = wait_pool_ready(&sim, 4).await?;
    assert_eq!(pool["taken"], 0);
    let pool_dir = sim.sim.state_dir.join("host-key-pool");
    let sets: Vec<_> = std::fs::read_dir(&pool_dir)?.flatten().collect();
    assert_eq!(sets.len(), 4, "four sets wait in {}", pool_dir.display());

    let key = SshKey::generate()?;
    let vmids: Vec<u32> = (170..176).collect();
    let mut all = Vec::new();
    for vmid in &vmids {
        let hostname = format!("pool-{vmid}");
        let net0 = format!("name=eth0,bridge=vmbr0,ip={}.{}/24", sim.pool_prefix, vmid - 140);
        let log =
            sim.create(*vmid, &[("hostname", &hostname), ("net0", &net0), ("ssh-public-keys", &key.public)]).await?;
        for file in KEY_FILES {
            let line = format!("Creating SSH host key '{file}' - this may take some time ...");
            ensure!(log.contains(&line), "{vmid}: no '{line}' in {log:?}");
        }
        let logged: Vec<String> = log
            .iter()
            .filter_map(|l| l.strip_prefix("done: "))
            .filter_map(|l| l.strip_suffix(&format!(" root@{hostname}")))
            .map(String::from)
            .collect();
        ensure!(logged.len() == 3 && logged.iter().all(|f| f.starts_with("SHA256:")), "{vmid}: {log:?}");

        let upper = Path::new(&ct_dir(&sim, *vmid).await?).join("upper/etc/ssh");
        for (file, fingerprint) in KEY_FILES.iter().zip(&logged) {
            let private = upper.join(file);
            let public = upper.join(format!("{file}.pub"));
            let listed = ssh_keygen(&["-l", "-E", "sha256", "-f"], &public)?;
            ensure!(listed.contains(fingerprint.as_str()), "{listed} is not the logged {fingerprint}");
            ensure!(listed.contains(&format!(" root@{hostname} ")), "{file} of {vmid}: {listed}");
            let from_private = ssh_keygen(&["-y", "-f"], &private)?;
            ensure!(from_private.ends_with(&format!(" root@{hostname}")), "{file} of {vmid}: {from_private}");
            let mode = std::fs::metadata(&private)?.permissions().mode() & 0o777;
            ensure!(mode == 0o600, "{file} of {vmid} has mode {mode:o}");
        }
        all.extend(logged);
    }
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "every container has keys of its own: {all:?}");

    let pool = sim.admin_state().await?["host_key_pool"].clone();
    let taken = pool["taken"].as_u64().unwrap_or(0);
    assert_eq!(taken + pool["generated_at_create"].as_u64().unwrap_or(0), vmids.len() as u64, "{pool}");
    assert!(taken >= 4, "the creates took the four ready sets: {pool}");
    let refilled = wait_pool_ready(&sim, 4).await?;
    println!("host key pool after {} creates and its refill: {refilled}", vmids.len());

    // sshd serves a pooled key, the one the create log printed.
    let vmid = vmids[0];
    let ip = format!("{}.{}", sim.pool_prefix, vmid - 140);
    sim.start_ct(vmid).await?;
    let out = key.ssh(&ip, "hostname").await?;
    ensure!(out.status.success(), "ssh failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("pool-{vmid}"));
    let seen = ssh_keygen(&["-l", "-f"], &key.known_hosts(&ip))?;
    let seen = seen.split_whitespace().nth(1).context("known_hosts fingerprint")?.to_string();
    assert!(all[..3].contains(&seen), "{seen} is not among {:?}", &all[..3]);

    for vmid in &vmids {
        let path = sim.node_path(&format!("/lxc/{vmid}?force=1&purge=1"));
        sim.run_task(sim.delete(&path).await?).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_task_duration_is_the_total_with_the_real_work_inside_it() -> Result<()> {
    const MS: u64 = 3000;
    let durations = [format!("vzcreate={MS}"), format!("vzstart={MS}")];
    let sim = Sim::start(&["--task-duration", &durations[0], "--task-duration", &durations[1]]).await?;
    let vmid = 190;
    let ip = format!("{}.40", sim.pool_prefix);
    let net0 = format!("name=eth0,bridge=vmbr0,ip={ip}/24");

    // Without a pool the create generates its host keys, while its duration passes.
    let posted = Instant::now();
    let upid = Sim::ok(
        sim.post(
            &sim.node_path("/lxc"),
            &[("vmid", "190"), ("ostemplate", DEBIAN), ("hostname", "paced"), ("net0", &net0)],
        )
        .await?,
    )?;
    let upid = upid.as_str().context("upid")?.to_string();
    let key_file = Path::new(&ct_dir(&sim, vmid).await?).join("upper/etc/ssh/ssh_host_ed25519_key.pub");
    while !key_file.exists() {
        ensure!(posted.elapsed() < Duration::from_millis(MS), "no host key before the create's {MS} ms were over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let keys_after = posted.elapsed();
    let current = Sim::ok(sim.get(&sim.node_path("/lxc/190/status/current")).await?)?;
    assert_eq!(current["lock"], "create", "the keys exist while the create still runs");
    assert_eq!(sim.wait_task(&upid).await?["exitstatus"], "OK");
    let create_took = posted.elapsed();
    assert!(create_took >= Duration::from_millis(MS), "{create_took:?}");
    assert!(create_took < Duration::from_millis(MS + 1500), "the keys' time is inside the duration: {create_took:?}");
    let log = sim.task_log(&upid).await?;
    assert_eq!(log.iter().filter(|l| l.starts_with("done: SHA256:")).count(), 3, "{log:?}");

    // A start runs the container, then waits out its duration before it shows running.
    let posted = Instant::now();
    let upid = Sim::ok(sim.post(&sim.node_path("/lxc/190/status/start"), &[]).await?)?;
    let upid = upid.as_str().context("upid")?.to_string();
    let target = format!("{ip}:22").parse()?;
    loop {
        let listening = tokio::task::spawn_blocking(move || {
            std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok()
        })
        .await?;
        if listening {
            break;
        }
        ensure!(posted.elapsed() < Duration::from_millis(MS), "sshd did not listen before the start's {MS} ms");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sshd_after = posted.elapsed();
    let current = Sim::ok(sim.get(&sim.node_path("/lxc/190/status/current")).await?)?;
    assert_eq!(current["status"], "stopped", "running shows when the start task ends");
    assert_eq!(sim.wait_task(&upid).await?["exitstatus"], "OK");
    let start_took = posted.elapsed();
    assert!(start_took >= Duration::from_millis(MS), "{start_took:?}");
    assert!(start_took < Duration::from_millis(MS + 1500), "the start's time is inside the duration: {start_took:?}");
    assert_eq!(Sim::ok(sim.get(&sim.node_path("/lxc/190/status/current")).await?)?["status"], "running");
    println!(
        "{MS} ms tasks: create took {create_took:?} (host keys after {keys_after:?}), \
         start took {start_took:?} (sshd after {sshd_after:?})"
    );

    sim.run_task(sim.delete(&sim.node_path("/lxc/190?force=1&purge=1")).await?).await?;
    Ok(())
}
