//! Deploy: find the container's address, SSH in, install the config-manager
//! layout and the template's files.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use tokio::time::Instant;

use super::super::job::Job;
use crate::crd::{conditions::reasons, TemplateFile};
use crate::error::Error;
use crate::layout::{self, LayoutInput};
use crate::{k8s, proxmox};

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

    if !files.is_empty() {
        job.progress(75, format!("Writing {} template files", files.len())).await?;
    }
    for file in &files {
        let content = file_content(job, file).await?;
        let mode = layout::parse_file_mode(file.mode.as_deref().unwrap_or("0644"))?;
        session.upload(&file.path, &content, mode).await?;
    }
    let _ = session.close().await;
    job.progress(100, "Configuration deployed").await?;
    Ok(())
}

async fn run_checked(session: &crate::ssh::SshSession, command: &str, what: &str) -> Result<(), Error> {
    let output = session.exec_capture(command, std::time::Duration::from_secs(120)).await?;
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
        tokio::time::sleep(timings.task_poll).await;
    }
}

pub(super) async fn file_content(job: &Job<'_>, file: &TemplateFile) -> Result<Vec<u8>, Error> {
    if let Some(content) = &file.content {
        return Ok(content.clone().into_bytes());
    }
    let missing = |what: String| Error::transient(format!("file {}: waiting for {what}", file.path));
    let source = file.content_from.as_ref().ok_or_else(|| {
        Error::permanent(reasons::INVALID_PARAMETERS, format!("file {} has neither content nor contentFrom", file.path))
    })?;
    if let Some(r) = &source.config_map_key_ref {
        let api: Api<ConfigMap> = Api::namespaced(job.ctx.client.clone(), &job.namespace);
        let cm = api.get_opt(&r.name).await?.ok_or_else(|| missing(format!("ConfigMap {}", r.name)))?;
        let data = cm.data.and_then(|mut d| d.remove(&r.key)).map(String::into_bytes);
        let binary = || cm.binary_data.as_ref().and_then(|d| d.get(&r.key)).map(|b| b.0.clone());
        return data.or_else(binary).ok_or_else(|| missing(format!("key {} in ConfigMap {}", r.key, r.name)));
    }
    if let Some(r) = &source.secret_key_ref {
        let api: Api<Secret> = Api::namespaced(job.ctx.client.clone(), &job.namespace);
        let secret = api.get_opt(&r.name).await?.ok_or_else(|| missing(format!("Secret {}", r.name)))?;
        return k8s::secret_key(&secret, &r.key).ok_or_else(|| missing(format!("key {} in Secret {}", r.key, r.name)));
    }
    Err(Error::permanent(reasons::INVALID_PARAMETERS, format!("file {}: contentFrom names no source", file.path)))
}
