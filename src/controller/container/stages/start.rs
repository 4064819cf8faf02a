//! Start: `POST .../status/start`, wait for the task, confirm the container
//! runs. A container that already runs is left as it is; one that no longer
//! carries this Container's marker and tag is never started.

use super::super::job::Job;
use crate::crd::conditions::reasons;
use crate::error::Error;
use crate::proxmox;

/// The guest at the vmid must still be the one created for this Container:
/// between Create and Start (or a restart much later) it may have been
/// destroyed and another made at the same vmid by someone else.
async fn check_owned(job: &Job<'_>, vmid: u32) -> Result<(), Error> {
    let config = job.pve.lxc_config(&job.node, vmid).await?;
    if proxmox::is_owned_by(config.description.as_deref(), config.tags.as_deref(), &job.uid) {
        return Ok(());
    }
    Err(Error::permanent(
        reasons::FOREIGN_GUEST,
        format!(
            "CT {vmid} on node {} does not carry this Container's `infrahaus.io/uid={}` marker and `infrahaus` tag \
             (replaced or changed by hand); it is not started",
            job.node, job.uid
        ),
    ))
}

pub(super) async fn run(job: &mut Job<'_>) -> Result<(), Error> {
    let node = job.node.clone();
    let vmid = job.vmid()?;

    job.finish_in_flight("vzstart").await?;

    let timings = &job.ctx.timings;
    let current = job.pve.wait_unlocked(&node, vmid, timings.task_poll, timings.task_timeout).await?;
    if !current.is_running() {
        check_owned(job, vmid).await?;
        job.hold_node_slot()?;
        job.progress(30, format!("Starting container {vmid}")).await?;
        let upid = job.pve.start_lxc(&node, vmid).await?;
        job.set_task(&upid).await?;
        let started = job.wait_task(&upid).await;
        job.status.task_ref = None;
        let after = job.pve.lxc_status(&node, vmid).await?;
        match started {
            Ok(_) => {}
            // Started meanwhile by someone else (another start task, the web
            // UI): Proxmox fails the second start with "CT <vmid> already
            // running", and the container runs as asked.
            Err(error) if after.is_running() => {
                tracing::info!(%error, "the start task failed but the container runs");
            }
            Err(error) => return Err(error),
        }
        if !after.is_running() {
            return Err(Error::transient(format!(
                "CT {vmid} start task succeeded but the container is {}",
                after.status
            )));
        }
    }
    job.progress(100, format!("Container {vmid} running")).await?;
    Ok(())
}
