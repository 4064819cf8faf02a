//! End to end with the stock OpenSSH client: create with a key, start, log in,
//! show that writes stay inside the container, stop, destroy, and check that
//! nothing of the container remains.

use anyhow::{ensure, Context, Result};

use crate::common::{mounts_mentioning, processes_mentioning, Sim, SshKey};

#[tokio::test]
async fn ssh_into_a_container_and_leave_nothing_behind() -> Result<()> {
    let sim = Sim::start(&[]).await?;
    let key = SshKey::generate()?;
    let vmid = 120;
    let ip = format!("{}.20", sim.pool_prefix);

    // 1. create with a key
    let net0 = format!("name=eth0,bridge=vmbr0,ip={ip}/24");
    let log = sim
        .create(
            vmid,
            &[("hostname", "e2e-web"), ("net0", &net0), ("ssh-public-keys", &key.public), ("password", "s3cret-pw")],
        )
        .await?;
    let pinned: Vec<String> = log
        .iter()
        .filter_map(|l| l.strip_prefix("done: "))
        .filter_map(|l| l.strip_suffix(" root@e2e-web"))
        .map(String::from)
        .collect();
    ensure!(pinned.len() == 3, "create log reports three host keys: {log:?}");

    // 2. start
    sim.start_ct(vmid).await?;
    let state = sim.admin_state().await?;
    let dir = state["containers"][0]["dir"].as_str().context("container dir")?.to_string();

    // 3. `ssh root@<ip> hostname` prints the hostname given at create
    let out = key.ssh(&ip, "hostname").await?;
    ensure!(out.status.success(), "ssh failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "e2e-web");

    // The host key the client saw is one the create log printed.
    let listing = std::process::Command::new("ssh-keygen").arg("-l").arg("-f").arg(key.known_hosts(&ip)).output()?;
    let seen = String::from_utf8_lossy(&listing.stdout);
    let seen_fp = seen.split_whitespace().nth(1).context("known_hosts fingerprint")?;
    assert!(pinned.iter().any(|p| p == seen_fp), "{seen_fp} not in {pinned:?}");

    // 4. a write inside the container stays inside it
    let marker = format!("/root/pve-sim-e2e-{}", std::process::id());
    let out = key.ssh(&ip, &format!("echo inside > {marker} && cat {marker} && echo x > /etc/pve-sim-e2e")).await?;
    ensure!(out.status.success(), "write failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "inside");
    assert!(!std::path::Path::new(&marker).exists(), "the write reached the host's {marker}");
    assert!(!std::path::Path::new("/etc/pve-sim-e2e").exists(), "the write reached the host's /etc");
    let out = key.ssh(&ip, "ps -e -o pid= | wc -l; python3 -c 'print(6*7)'; ss -tlnH | grep -c ':22 '").await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    ensure!(lines.len() == 3 && lines[1] == "42", "tools inside the container: {text}");
    let inside_pids: u32 = lines[0].trim().parse()?;
    assert!(inside_pids < 10, "the container sees only its own processes, saw {inside_pids}");

    // 5. stop
    let stop_path = sim.node_path(&format!("/lxc/{vmid}/status/stop"));
    sim.run_task(sim.post(&stop_path, &[]).await?).await?;
    let status = Sim::ok(sim.get(&sim.node_path(&format!("/lxc/{vmid}/status/current"))).await?)?;
    assert_eq!(status["status"], "stopped");
    assert!(key.ssh(&ip, "true").await.map(|o| !o.status.success()).unwrap_or(true), "sshd still answers");

    // 6. destroy
    let destroy = sim.node_path(&format!("/lxc/{vmid}?purge=1&destroy-unreferenced-disks=1"));
    sim.run_task(sim.delete(&destroy).await?).await?;

    // 7. nothing remains: no process, no mount, no file
    assert_eq!(processes_mentioning(&dir), Vec::<u32>::new(), "container processes remain");
    assert_eq!(mounts_mentioning(std::path::Path::new(&dir)), Vec::<String>::new(), "container mounts remain");
    assert!(!std::path::Path::new(&dir).exists(), "container files remain in {dir}");
    let reply = sim.get(&sim.node_path(&format!("/lxc/{vmid}/config"))).await?;
    assert_eq!(reply.status, 500);
    Ok(())
}
