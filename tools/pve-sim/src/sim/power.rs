//! Power actions: start, stop, shutdown and reboot, and the checks they share.

use std::sync::Arc;
use std::time::Duration;

use super::tasks::TaskCtx;
use super::{no_such_ct, ApiError, ApiResult, Caller, Ct, Sim};
use crate::runtime::{self, Running};
use crate::schema::{parse_boolean, Params};

/// `vm_shutdown`'s default `timeout`.
const SHUTDOWN_TIMEOUT_SECS: u64 = 60;

impl Sim {
    pub(super) fn is_running(ct: &Ct) -> bool {
        ct.running.as_ref().is_some_and(|r| !r.has_exited())
    }

    /// `vm_start`: applies what was pending, starts the container (an
    /// API-only guest has nothing to start), waits out the task's duration
    /// when `pace` is given, then shows the guest running.
    pub(super) async fn start_container(&self, vmid: u32, pace: Option<&TaskCtx>) -> Result<(), String> {
        let (hostname, ip) = {
            let mut state = self.state();
            let ct = state.cts.get_mut(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid).message)?;
            if Self::is_running(ct) {
                return Err(format!("CT {vmid} already running"));
            }
            // `vm_start`: pending changes are applied while starting.
            ct.pending.apply(&mut ct.config);
            (ct.config.get("hostname").cloned().unwrap_or_else(|| format!("CT{vmid}")), ct.lease.map(|(a, _)| a))
        };
        let mut running = if self.cfg.api_only_guests {
            Running::api_only()
        } else {
            let ssh_fault = self.faults().ssh;
            let ct = self
                .spawner
                .start(&self.ct_dir(vmid), &hostname, ip, ssh_fault)
                .await
                .map_err(|e| format!("startup for container '{vmid}' failed: {e:#}"))?;
            Running::Container(ct)
        };
        if let Some(ctx) = pace {
            if let Err(e) = ctx.pace().await {
                runtime::stop(&mut running).await;
                return Err(e);
            }
        }
        if self.cfg.api_only_guests {
            // Its uptime counts from when the start ends.
            running = Running::api_only();
        }
        let mut leftover = None;
        {
            let mut state = self.state();
            match state.cts.get_mut(&vmid) {
                Some(ct) => ct.running = Some(running),
                None => leftover = Some(running),
            }
        }
        if let Some(mut running) = leftover {
            runtime::stop(&mut running).await;
        }
        Ok(())
    }

    /// `vm_stop` with a shutdown timeout: the container is asked to stop;
    /// if it has not after `timeout`, it is killed when `force`, else the
    /// task fails as Proxmox's does.
    async fn shutdown_container(&self, vmid: u32, timeout: Duration, force: bool) -> Result<(), String> {
        let running = self.state().cts.get_mut(&vmid).and_then(|ct| ct.running.take());
        let Some(mut running) = running else { return Ok(()) };
        if runtime::shutdown(&mut running, timeout).await {
            return Ok(());
        }
        if force {
            runtime::stop(&mut running).await;
            return Ok(());
        }
        if let Some(ct) = self.state().cts.get_mut(&vmid) {
            ct.running = Some(running);
        }
        Err("container did not stop".into())
    }

    pub(super) async fn stop_container(&self, vmid: u32) {
        let running = self.state().cts.get_mut(&vmid).and_then(|ct| ct.running.take());
        if let Some(mut running) = running {
            runtime::stop(&mut running).await;
        }
    }

    /// Checks shared by the power operations; returns whether the CT runs.
    pub(super) fn power_precheck(&self, vmid: u32) -> ApiResult<bool> {
        let state = self.state();
        let ct = state.cts.get(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid))?;
        Self::check_lock(ct)?;
        Ok(Self::is_running(ct))
    }

    pub(crate) fn power(
        self: &Arc<Self>,
        vmid: u32,
        action: &str,
        params: &Params,
        caller: &Caller,
    ) -> ApiResult<String> {
        let running = self.power_precheck(vmid)?;
        let timeout = params.get("timeout").and_then(|t| t.parse().ok());
        let force = params.get("forceStop").and_then(|f| parse_boolean(f)) == Some(true);
        let sim = self.clone();
        match action {
            "start" => {
                if running {
                    return Err(ApiError::internal(format!("CT {vmid} already running")));
                }
                Ok(self.spawn_task(
                    "vzstart",
                    vmid,
                    caller,
                    move |ctx| async move { sim.start_container(vmid, Some(&ctx)).await },
                    || {},
                ))
            }
            "stop" | "shutdown" => {
                if !running {
                    return Err(ApiError::internal(format!("CT {vmid} not running")));
                }
                let task_type = if action == "stop" { "vzstop" } else { "vzshutdown" };
                let shutdown = action == "shutdown";
                Ok(self.spawn_task(
                    task_type,
                    vmid,
                    caller,
                    move |ctx| async move {
                        ctx.pace().await?;
                        if shutdown {
                            let timeout = Duration::from_secs(timeout.unwrap_or(SHUTDOWN_TIMEOUT_SECS));
                            sim.shutdown_container(vmid, timeout, force).await
                        } else {
                            sim.stop_container(vmid).await;
                            Ok(())
                        }
                    },
                    || {},
                ))
            }
            "reboot" => {
                if !running {
                    return Err(ApiError::internal(format!("CT {vmid} not running")));
                }
                // `vm_reboot`: a shutdown that kills after its timeout, then
                // `vm_start`, which applies what was pending. The guest shows
                // running while the task's duration passes, as during a slow
                // shutdown; the restart itself follows.
                Ok(self.spawn_task(
                    "vzreboot",
                    vmid,
                    caller,
                    move |ctx| async move {
                        ctx.pace().await?;
                        let timeout = timeout.map_or(Duration::from_secs(10), Duration::from_secs);
                        sim.shutdown_container(vmid, timeout, true).await?;
                        sim.start_container(vmid, None).await
                    },
                    || {},
                ))
            }
            other => Err(ApiError::new(
                501,
                format!("Method 'POST /nodes/{}/lxc/{vmid}/status/{other}' not implemented", self.cfg.node),
            )),
        }
    }
}
