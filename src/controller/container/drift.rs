//! Drift: a Ready Container is compared with its guest once per resync
//! interval (`--resync-interval`, jittered): one `GET .../status/current` and
//! one `GET .../config`, no SSH. What someone changed outside the operator is
//! handed to the pipeline as a drift run, which works from what it reads
//! itself:
//! - a setting changed (memory in the Proxmox UI) is set back to the spec,
//!   with the Event DriftCorrected naming the keys;
//! - a guest stopped while `powerState: Running` is started again (and one
//!   started while `Stopped` is shut down), with an Event;
//! - a destroyed guest is never silently recreated: phase Error, reason
//!   GuestMissing, until the retry annotation asks for a new one;
//! - a guest without this Container's ownership marker is left alone: phase
//!   Error, reason OwnershipLost.
//!
//! A wake by a watch event between two checks (the Container's own status
//! write, a template's change) asks Proxmox nothing: the time of the last
//! check is kept per Container, in memory. A restarted controller checks
//! every Ready Container once (reads only).

use kube::ResourceExt;
use tokio::time::Instant;

use super::plan;
use super::resolve;
use super::settings::{self, Settings};
use crate::controller::Context;
use crate::crd::{Container, ContainerTemplateSpec, PowerState};
use crate::error::Error;
use crate::proxmox;

/// The drift run `ct` needs, or none when its guest is as the spec asks or
/// the check is not due.
pub(super) async fn check(
    ct: &Container,
    ctx: &Context,
    template: Option<&ContainerTemplateSpec>,
) -> Result<Option<plan::Run>, Error> {
    let Some(vmid) = ct.status.as_ref().and_then(|s| s.vmid).map(|v| v as u32) else { return Ok(None) };
    if !due(ct, ctx) {
        return Ok(None);
    }
    let inputs = resolve::resolve_node(ct, ctx).await?;
    let (pve, node) = (&inputs.pve, &inputs.node_name);
    let findings = match pve.lxc_status(node, vmid).await {
        Err(error) if error.is_no_such_guest() => vec![format!("CT {vmid} no longer exists on node {node}")],
        Err(error) => return Err(error.into()),
        Ok(status) => {
            let config = pve.lxc_config(node, vmid).await?;
            let settings = Settings::resolve(ct, settings::hostname(ct), template);
            findings(ct, &settings, &config, status.is_running(), vmid)
        }
    };
    checked(ct, ctx);
    if findings.is_empty() {
        tracing::debug!(vmid, "guest is as the spec asks");
        return Ok(None);
    }
    tracing::info!(vmid, findings = findings.join("; "), "guest drifted from the spec");
    Ok(Some(plan::drifted(ct)))
}

/// What differs between the guest and the spec, in words.
fn findings(ct: &Container, settings: &Settings, config: &proxmox::LxcConfig, running: bool, vmid: u32) -> Vec<String> {
    let uid = ct.uid().unwrap_or_default();
    if !proxmox::is_owned_by(config.description.as_deref(), config.tags.as_deref(), &uid) {
        return vec![format!("CT {vmid} lost the ownership marker of this Container")];
    }
    let mut findings = Vec::new();
    let mut keys: Vec<&str> = settings.changes(config).into_iter().map(|(key, _)| key).collect();
    if settings.disk_growth(config).is_some() {
        keys.push("rootfs");
    }
    if !keys.is_empty() {
        findings.push(format!("changed outside the operator: {}", keys.join(", ")));
    }
    match (ct.spec.power_state, running) {
        (PowerState::Running, false) => findings.push(format!("CT {vmid} is stopped")),
        (PowerState::Stopped, true) => findings.push(format!("CT {vmid} is running")),
        _ => {}
    }
    findings
}

/// Whether the last check of `ct` (in this process) is older than half the
/// resync interval; the requeue after a check waits at least 80% of it.
fn due(ct: &Container, ctx: &Context) -> bool {
    let interval = ctx.timings.resync_interval;
    if interval.is_zero() {
        return false;
    }
    let checks = ctx.drift_checks.lock().unwrap_or_else(|e| e.into_inner());
    checks.get(&ct.uid().unwrap_or_default()).is_none_or(|at| at.elapsed() >= interval / 2)
}

/// Records that `ct`'s guest was found as the spec asks (or is being set
/// back) now.
pub(super) fn checked(ct: &Container, ctx: &Context) {
    let mut checks = ctx.drift_checks.lock().unwrap_or_else(|e| e.into_inner());
    checks.insert(ct.uid().unwrap_or_default(), Instant::now());
}

/// Forgets `ct` (deleted).
pub(super) fn forget(ct: &Container, ctx: &Context) {
    let mut checks = ctx.drift_checks.lock().unwrap_or_else(|e| e.into_inner());
    checks.remove(&ct.uid().unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ContainerSpec;

    fn container(power: &str) -> Container {
        let spec = serde_json::json!({
            "nodeRef": {"name": "pve1"}, "powerState": power,
            "resources": {"cores": 1, "memoryMiB": 512, "diskGiB": 8}
        });
        let mut ct = Container::new("web", serde_json::from_value::<ContainerSpec>(spec).expect("spec"));
        ct.metadata.uid = Some("u-1".into());
        ct
    }

    fn config(memory: u64, description: &str) -> proxmox::LxcConfig {
        serde_json::from_value(serde_json::json!({
            "hostname": "web", "cores": 1, "memory": memory, "tags": "infrahaus",
            "description": description, "rootfs": "local-lvm:vm-100-disk-0,size=8G"
        }))
        .expect("config")
    }

    #[test]
    fn findings_name_what_drifted() {
        let owned = proxmox::description_with_marker("u-1", None);
        let running = container("Running");
        let settings = Settings::resolve(&running, "web".into(), None);
        assert_eq!(findings(&running, &settings, &config(512, &owned), true, 100), Vec::<String>::new());
        assert_eq!(
            findings(&running, &settings, &config(2048, &owned), false, 100),
            ["changed outside the operator: memory", "CT 100 is stopped"]
        );
        let stopped = container("Stopped");
        assert_eq!(findings(&stopped, &settings, &config(512, &owned), true, 100), ["CT 100 is running"]);
        assert_eq!(findings(&stopped, &settings, &config(512, &owned), false, 100), Vec::<String>::new());
        assert_eq!(
            findings(&running, &settings, &config(2048, "taken over"), true, 100),
            ["CT 100 lost the ownership marker of this Container"],
            "nothing else is compared on a guest that is not ours"
        );
    }
}
