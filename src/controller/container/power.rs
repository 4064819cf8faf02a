//! Power state: `spec.powerState: Stopped` shuts the guest down once the
//! Container has been Ready (a first run finishes first, so the guest is
//! complete before it is stopped); `Running` starts a stopped guest again
//! through the Start stage, and Deploy, Sync and Finalize follow.

use kube::runtime::events::EventType;

use super::job::Job;
use crate::error::Error;

/// How long a shutdown may take before the guest is stopped hard
/// (`forceStop=1`).
pub(crate) const SHUTDOWN_TIMEOUT_SECS: u32 = 60;

/// Whether the guest runs now.
pub(super) async fn running(job: &Job<'_>) -> Result<bool, Error> {
    let vmid = job.vmid()?;
    Ok(job.pve.lxc_status(&job.node, vmid).await?.is_running())
}

/// Shuts the guest down (waiting on a shutdown already in flight first).
pub(super) async fn stop(job: &mut Job<'_>) -> Result<(), Error> {
    let vmid = job.vmid()?;
    job.finish_in_flight("vzshutdown").await?;
    if !running(job).await? {
        return Ok(());
    }
    let message = format!("Shutting down CT {vmid} (powerState Stopped)");
    tracing::info!("{message}");
    job.status.message = Some(message);
    let upid = job.pve.shutdown_lxc(&job.node, vmid, SHUTDOWN_TIMEOUT_SECS, true).await?;
    job.follow_task(&upid).await?;
    job.event(EventType::Normal, "Stopped", "Stop", format!("CT {vmid} shut down (powerState Stopped)")).await;
    Ok(())
}
