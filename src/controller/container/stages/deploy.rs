//! Deploy: find the container's address, SSH in, install the config-manager
//! layout and the template's files.

use std::net::IpAddr;

use tokio::time::Instant;

use super::super::job::Job;
use super::super::resolve;
use crate::crd::conditions::reasons;
use crate::error::Error;
use crate::layout::{self, LayoutInput};
use crate::proxmox;

pub(super) async fn run(job: &mut Job<'_>) -> Result<(), Error> {
    let ip = find_address(job).await?;
    job.status.ip_address = Some(ip.to_string());
    job.progress(25, format!("Connecting to {ip} over SSH")).await?;

    let session = job.ssh(ip).await?;

    let (template_name, packages, files) = match &job.template {
        Some((name, t)) => (Some(name.clone()), t.packages.clone(), t.files.clone()),
        None => (None, Vec::new(), Vec::new()),
    };
    let plan = layout::render(&LayoutInput {
        namespace: job.namespace.clone(),
        name: job.name.clone(),
        uid: job.uid.clone(),
        hostname: job.hostname(),
        vmid: job.vmid()?,
        template_name,
        packages,
    })?;

    job.progress(50, "Installing the config-manager layout").await?;
    run_checked(&session, plan.prepare_command, "prepare the layout").await?;
    for file in &plan.files {
        session.upload(file.path, file.content.as_bytes(), file.mode).await?;
    }
    run_checked(&session, plan.activate_command, "enable config-manager.service").await?;
    let keys = job.authorized_keys().join("\n") + "\n";
    let output = session
        .exec_capture_with_stdin(layout::AUTHORIZED_KEYS_COMMAND, Some(keys.as_bytes()), COMMAND_TIMEOUT)
        .await?;
    checked(output, "update root's authorized_keys")?;

    if !files.is_empty() {
        job.progress(75, format!("Writing {} template files", files.len())).await?;
    }
    for file in &files {
        let content = resolve::file_content(&job.ctx.client, &job.namespace, file).await?;
        let mode = layout::parse_file_mode(file.mode.as_deref().unwrap_or("0644"))?;
        session.upload(&file.path, &content, mode).await?;
    }
    job.progress(100, "Configuration deployed").await?;
    Ok(())
}

/// How long one command of the layout may take.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

async fn run_checked(session: &crate::ssh::SshSession, command: &str, what: &str) -> Result<(), Error> {
    checked(session.exec_capture(command, COMMAND_TIMEOUT).await?, what)
}

fn checked(output: crate::ssh::Output, what: &str) -> Result<(), Error> {
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::permanent(
            reasons::FAILED,
            format!("could not {what}: {} ({})", output.stderr.trim(), output.status),
        ))
    }
}

/// The static address from the spec, or the one DHCP gave eth0.
/// The address the guest has on eth0, as Proxmox reports it, for a static
/// address too: a changed `spec.network.ipv4` is not applied to a running
/// guest, which keeps answering at its old address.
async fn find_address(job: &mut Job<'_>) -> Result<IpAddr, Error> {
    let node = job.node.clone();
    let vmid = job.vmid()?;
    let timings = &job.ctx.timings;
    let deadline = Instant::now() + timings.boot_timeout;
    let mut interval = proxmox::PollInterval::up_to(timings.task_poll);
    loop {
        let interfaces = job.pve.lxc_interfaces(&node, vmid).await?;
        if let Some(ip) = interfaces.as_deref().and_then(proxmox::eth0_ipv4) {
            return Ok(IpAddr::V4(ip));
        }
        if Instant::now() >= deadline {
            return Err(Error::transient(format!(
                "CT {vmid} has no IPv4 address on eth0 after {:?}; is DHCP working on its bridge?",
                timings.boot_timeout
            )));
        }
        tokio::time::sleep(interval.next_wait()).await;
    }
}
