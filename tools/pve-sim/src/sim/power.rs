//! Power actions: start, stop, shutdown and reboot, and the checks they share.

use std::sync::Arc;

use super::{no_such_ct, ApiError, ApiResult, Caller, Ct, Sim};
use crate::runtime;

impl Sim {
    fn is_running(ct: &Ct) -> bool {
        ct.running.as_ref().is_some_and(|r| !r.has_exited())
    }

    pub(super) async fn start_container(&self, vmid: u32) -> Result<(), String> {
        let (hostname, ip) = {
            let state = self.state();
            let ct = state.cts.get(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid).message)?;
            if Self::is_running(ct) {
                return Err(format!("CT {vmid} already running"));
            }
            (ct.config.get("hostname").cloned().unwrap_or_else(|| format!("CT{vmid}")), ct.lease.map(|(a, _)| a))
        };
        let running = self
            .spawner
            .start(&self.ct_dir(vmid), &hostname, ip)
            .await
            .map_err(|e| format!("startup for container '{vmid}' failed: {e:#}"))?;
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

    pub(crate) fn power(self: &Arc<Self>, vmid: u32, action: &str, caller: &Caller) -> ApiResult<String> {
        let running = self.power_precheck(vmid)?;
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
                    move |_| async move { sim.start_container(vmid).await },
                    || {},
                ))
            }
            "stop" | "shutdown" => {
                if !running {
                    return Err(ApiError::internal(format!("CT {vmid} not running")));
                }
                let task_type = if action == "stop" { "vzstop" } else { "vzshutdown" };
                Ok(self.spawn_task(
                    task_type,
                    vmid,
                    caller,
                    move |_| async move {
                        sim.stop_container(vmid).await;
                        Ok(())
                    },
                    || {},
                ))
            }
            "reboot" => {
                if !running {
                    return Err(ApiError::internal(format!("CT {vmid} not running")));
                }
                Ok(self.spawn_task(
                    "vzreboot",
                    vmid,
                    caller,
                    move |_| async move {
                        sim.stop_container(vmid).await;
                        sim.start_container(vmid).await
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
