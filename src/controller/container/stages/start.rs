//! Start: `POST .../status/start`, wait for the task, confirm the container
//! runs. A container that already runs is left as it is.

use super::super::job::Job;
use crate::error::Error;

pub(super) async fn run(job: &mut Job<'_>) -> Result<(), Error> {
    let node = job.node.clone();
    let vmid = job.vmid()?;

    if let Some(upid) = job.in_flight_task("vzstart")? {
        job.wait_task(&upid).await?;
        job.status.task_ref = None;
    }

    let timings = &job.ctx.timings;
    let current = job.pve.wait_unlocked(&node, vmid, timings.task_poll, timings.task_timeout).await?;
    if !current.is_running() {
        let _permit = job.node_permit().await;
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
