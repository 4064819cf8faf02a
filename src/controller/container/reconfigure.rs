//! Day-2 changes: a Container whose guest already ran gets changed settings
//! (cores, memory, swap, hostname, nameservers, start on boot, tags, a larger
//! disk) into the guest's Proxmox config before Deploy and Sync run again.
//!
//! Proxmox decides what takes effect at once: a running guest takes the
//! hot-pluggable options and keeps the rest pending until it restarts. The
//! controller does not guess which: it reads `GET .../pending` after the
//! update, reports what waits in the condition RestartRequired, and with
//! `restartPolicy: OnPendingChange` reboots the guest once to apply it. What
//! was applied at once is read back (`config?current=1`) before the run goes
//! on, so a Container is Ready for a generation only once Proxmox has its
//! values in effect or holds them pending, as RestartRequired says.
//!
//! Resumable like the stages: a resize or reboot task in flight is recorded
//! in `status.taskRef` and waited on after a restart; the rest is compared
//! against the guest's config again, so nothing is applied twice.

use kube::runtime::events::EventType;

use super::job::{event_percent, next_percent, Job};
use super::settings::Settings;
use crate::crd::conditions::{reasons, set_condition, types, DesiredCondition};
use crate::crd::{RestartPolicy, RETRY_ANNOTATION};
use crate::error::Error;
use crate::progress::ProgressEvent;
use crate::proxmox;

/// The `step` of this work in progress events.
pub(crate) const STEP: &str = "reconfiguring";
/// The action of its Kubernetes Events.
pub(crate) const ACTION: &str = "Reconfigure";
/// Where its progress sits: after Start, before Deploy.
const PERCENT: u8 = 38;

/// `drift`: the guest was changed outside the operator, and what is set back
/// is reported as DriftCorrected rather than Reconfigured.
pub(super) async fn run(job: &mut Job<'_>, drift: bool) -> Result<(), Error> {
    let vmid = job.vmid()?;
    let node = job.node.clone();
    for task_type in ["resize", "vzreboot"] {
        if let Some(upid) = job.in_flight_task(task_type)? {
            step(job, format!("Waiting for {task_type} task {upid}")).await;
        }
        job.finish_in_flight(task_type).await?;
    }

    let config = match job.pve.lxc_config(&node, vmid).await {
        Ok(config) => config,
        Err(error) if error.is_no_such_guest() => return Err(guest_missing(job, vmid)),
        Err(error) => return Err(error.into()),
    };
    if !proxmox::is_owned_by(config.description.as_deref(), config.tags.as_deref(), &job.uid) {
        return Err(Error::permanent(
            reasons::OWNERSHIP_LOST,
            format!(
                "guest {vmid} on node {node} no longer carries the `infrahaus.io/uid={}` marker and `infrahaus` tag \
                 of this Container; it is left untouched",
                job.uid
            ),
        ));
    }
    let settings = Settings::resolve(&job.ct, job.hostname(), job.template.as_ref().map(|(_, t)| t));
    let changes = settings.changes(&config);
    let mut changed: Vec<&str> = changes.iter().map(|(key, _)| *key).collect();
    if !changes.is_empty() {
        step(job, format!("Changing {} of CT {vmid}", changed.join(", "))).await;
        job.pve.update_lxc_config(&node, vmid, &changes, config.digest.as_deref()).await?;
    }
    if let Some(size) = settings.disk_growth(&config) {
        step(job, format!("Growing the root disk of CT {vmid} to {size}")).await;
        let upid = job.pve.resize_lxc(&node, vmid, "rootfs", &size).await?;
        job.follow_task(&upid).await?;
        changed.push("rootfs");
    } else if let Some(gib) = settings.disk_kept_larger(&config) {
        let note = format!(
            "CT {vmid}: the root disk stays at {gib} GiB, larger than diskGiB {}: Proxmox cannot shrink a disk",
            settings.disk_gib
        );
        job.event(EventType::Warning, "DiskNotShrunk", ACTION, note).await;
    }

    let mut pending = pending_keys(job, vmid).await?;
    if !pending.is_empty() && job.ct.spec.restart_policy == RestartPolicy::OnPendingChange {
        let message = format!("Rebooting CT {vmid} to apply {}", pending.join(", "));
        step(job, message.clone()).await;
        let upid = job.pve.reboot_lxc(&node, vmid).await?;
        job.follow_task(&upid).await?;
        job.event(EventType::Normal, "Restarted", ACTION, message).await;
        pending = pending_keys(job, vmid).await?;
    }

    if !changes.is_empty() {
        let current = job.pve.lxc_config_current(&node, vmid).await?;
        let missing: Vec<&str> = settings
            .changes(&current)
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| !pending.iter().any(|p| p == key))
            .collect();
        if !missing.is_empty() {
            return Err(Error::transient(format!(
                "Proxmox shows neither in effect nor pending: {} of CT {vmid}",
                missing.join(", ")
            )));
        }
    }
    record_pending(job, &pending);
    job.save().await?;
    if !changed.is_empty() {
        let note = format!("CT {vmid}: changed {}", changed.join(", "));
        let note = match pending.is_empty() {
            true => note,
            false => format!("{note}; pending until it restarts: {}", pending.join(", ")),
        };
        match drift {
            true => job.event(EventType::Warning, reasons::DRIFT_CORRECTED, ACTION, format!("{note} back to the spec")),
            false => job.event(EventType::Normal, "Reconfigured", ACTION, note),
        }
        .await;
    }
    Ok(())
}

/// The guest was destroyed outside the operator. It is not recreated on its
/// own: someone may have meant it, and a new guest has none of the old one's
/// data.
fn guest_missing(job: &Job<'_>, vmid: u32) -> Error {
    let at = match job.ct.spec.vmid {
        Some(_) => format!("at vmid {vmid} again"),
        None => "at a newly allocated vmid".to_string(),
    };
    Error::permanent(
        reasons::GUEST_MISSING,
        format!(
            "guest {vmid} on node {} no longer exists: it was destroyed outside the operator. It is not recreated \
             on its own; set the annotation {RETRY_ANNOTATION} to a new value to create it again {at} (a new, \
             empty guest)",
            job.node
        ),
    )
}

/// The options Proxmox holds for the guest's next start.
async fn pending_keys(job: &Job<'_>, vmid: u32) -> Result<Vec<String>, Error> {
    let entries = job.pve.lxc_pending(&job.node, vmid).await?;
    Ok(entries.into_iter().filter(|e| e.is_pending()).map(|e| e.key).collect())
}

/// RestartRequired: True while Proxmox holds pending values; turned False
/// once they are applied (and not added to a Container that never had any).
fn record_pending(job: &mut Job<'_>, pending: &[String]) {
    let generation = job.ct.metadata.generation;
    let desired = if pending.is_empty() {
        if !job.status.conditions.iter().any(|c| c.type_ == types::RESTART_REQUIRED) {
            return;
        }
        DesiredCondition::falsy(types::RESTART_REQUIRED, reasons::APPLIED, "every setting is in effect", generation)
    } else {
        let message = format!("pending until the guest restarts: {}", pending.join(", "));
        DesiredCondition::truthy(types::RESTART_REQUIRED, reasons::PENDING_CHANGES, message, generation)
    };
    set_condition(&mut job.status.conditions, desired, &super::pipeline::now());
}

async fn step(job: &mut Job<'_>, message: String) {
    tracing::info!(step = STEP, "{message}");
    job.status.message = Some(message.clone());
    let (last, percent) = step_percent(job.last_percent);
    job.last_percent = last;
    job.publish(ProgressEvent::step(&job.identity(), STEP, percent, &message)).await;
}

/// The run's last percent after a reconfiguration step, and the percent of
/// the step's event: where the work sits, or further if the run got there
/// already. The run's percent moves up to it, so the events after it (a
/// failure, script output) do not go back to the percent before.
pub(super) fn step_percent(last: i32) -> (i32, u8) {
    let percent = next_percent(last, i32::from(PERCENT));
    (percent, event_percent(percent))
}
