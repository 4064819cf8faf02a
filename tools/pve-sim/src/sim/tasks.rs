//! Worker tasks: spawning and finishing them, their logs, and the task list,
//! status, log and stop of `/nodes/{node}/tasks`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::Notify;

use super::{boot_ticks, now, ApiError, ApiResult, Caller, Sim, State};
use crate::faults::TaskOutcome;
use crate::upid::Upid;

pub(super) struct Task {
    upid: Upid,
    text: String,
    log: Vec<String>,
    pub(super) end: Option<(i64, String)>,
    abort: Arc<Notify>,
}

impl Sim {
    /// Starts a worker like `fork_worker`: takes the config lock, then does
    /// the work. The task's configured duration (`--task-duration`) is the
    /// minimum of its total run time, counted from when it holds the lock:
    /// the work prepares what takes real time (a container's files and host
    /// keys, its processes), then waits out the rest of the duration with
    /// [`TaskCtx::pace`] (where a stop request interrupts it), then makes its
    /// effects visible. `on_failure` undoes what a failed task leaves.
    pub(super) fn spawn_task<W, F>(
        self: &Arc<Self>,
        task_type: &str,
        vmid: u32,
        caller: &Caller,
        work: W,
        on_failure: impl FnOnce() + Send + 'static,
    ) -> String
    where
        W: FnOnce(TaskCtx) -> F + Send + 'static,
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let upid = Upid {
            node: self.cfg.node.clone(),
            pid: std::process::id().wrapping_add(seq + 1),
            pstart: boot_ticks() + u64::from(seq),
            starttime: now(),
            task_type: task_type.to_string(),
            id: vmid.to_string(),
            user: caller.userid.clone(),
        };
        let text = upid.to_string();
        let abort = Arc::new(Notify::new());
        {
            let mut state = self.state();
            let index = state.tasks.len();
            state.tasks.push(Task { upid, text: text.clone(), log: Vec::new(), end: None, abort: abort.clone() });
            state.task_index.insert(text.clone(), index);
        }
        let (outcome, duration) = {
            let mut faults = self.faults();
            (faults.take_task_outcome(task_type), faults.duration(task_type))
        };
        let sim = self.clone();
        let upid = text.clone();
        tokio::spawn(async move {
            let result: Result<u32, String> = async {
                let _guard = sim.lock_config(vmid).await?;
                let ctx = TaskCtx {
                    sim: sim.clone(),
                    upid: upid.clone(),
                    deadline: tokio::time::Instant::now() + duration,
                    abort,
                    paced: Arc::new(AtomicBool::new(false)),
                };
                let result = match outcome {
                    Some(TaskOutcome::Fail(message)) => {
                        ctx.pace().await?;
                        Err(message)
                    }
                    Some(TaskOutcome::Warnings(n)) => {
                        work(ctx.clone()).await?;
                        for i in 1..=n {
                            ctx.log(format!("WARN: simulated warning {i} of {n}"));
                        }
                        Ok(n)
                    }
                    None => work(ctx.clone()).await.map(|()| 0),
                };
                if result.is_ok() && !ctx.paced.load(Ordering::Relaxed) {
                    // A worker that never paced still lasts its duration.
                    tokio::time::sleep_until(ctx.deadline).await;
                }
                result
            }
            .await;
            let status = match &result {
                Ok(0) => "OK".to_string(),
                Ok(n) => format!("WARNINGS: {n}"),
                Err(message) => message.clone(),
            };
            if result.is_err() {
                on_failure();
            }
            let last = match &result {
                Err(message) => format!("TASK ERROR: {message}"),
                Ok(_) => format!("TASK {status}"),
            };
            sim.append_log(&upid, last);
            sim.finish_task(&upid, status);
        });
        text
    }

    fn finish_task(&self, upid: &str, status: String) {
        let mut state = self.state();
        if let Some(task) = Self::task_mut(&mut state, upid) {
            task.end = Some((now(), status));
        }
    }

    fn append_log(&self, upid: &str, line: String) {
        let mut state = self.state();
        if let Some(task) = Self::task_mut(&mut state, upid) {
            task.log.push(line);
        }
    }

    fn task_mut<'a>(state: &'a mut State, upid: &str) -> Option<&'a mut Task> {
        let index = *state.task_index.get(upid)?;
        state.tasks.get_mut(index)
    }

    fn task_entry(task: &Task) -> Value {
        let mut entry = json!({
            "upid": task.text, "node": task.upid.node, "pid": task.upid.pid, "pstart": task.upid.pstart,
            "starttime": task.upid.starttime, "type": task.upid.task_type, "id": task.upid.id, "user": task.upid.user,
        });
        if let (Some(obj), Some((endtime, status))) = (entry.as_object_mut(), &task.end) {
            obj.insert("endtime".into(), json!(endtime));
            obj.insert("status".into(), json!(status));
        }
        entry
    }

    pub(crate) fn task_list(&self, filter: &TaskFilter) -> (Value, usize) {
        let state = self.state();
        let mut matching: Vec<&Task> = state.tasks.iter().filter(|t| filter.matches(t)).collect();
        matching.sort_by(|a, b| b.upid.starttime.cmp(&a.upid.starttime).then(b.upid.pstart.cmp(&a.upid.pstart)));
        let total = matching.len();
        let page = matching.into_iter().skip(filter.start).take(filter.limit).map(Self::task_entry).collect();
        (Value::Array(page), total)
    }

    fn find_task<'a>(&self, state: &'a State, upid: &str) -> ApiResult<&'a Task> {
        upid.parse::<Upid>().map_err(|e| ApiError::param("upid", format!("{e} '{upid}'")))?;
        state
            .task_index
            .get(upid)
            .and_then(|index| state.tasks.get(*index))
            .ok_or_else(|| ApiError::internal("no such task"))
    }

    pub(crate) fn task_status(&self, upid: &str) -> ApiResult<Value> {
        let state = self.state();
        let task = self.find_task(&state, upid)?;
        let mut status = json!({
            "upid": task.text, "node": task.upid.node, "pid": task.upid.pid, "pstart": task.upid.pstart,
            "starttime": task.upid.starttime, "type": task.upid.task_type, "id": task.upid.id,
            "user": task.upid.user, "status": if task.end.is_some() { "stopped" } else { "running" },
        });
        if let (Some(obj), Some((_, exit))) = (status.as_object_mut(), &task.end) {
            obj.insert("exitstatus".into(), json!(exit));
        }
        Ok(status)
    }

    pub(crate) fn task_log(&self, upid: &str, start: usize, limit: usize) -> ApiResult<(Value, usize)> {
        let state = self.state();
        let task = self.find_task(&state, upid)?;
        let lines = task
            .log
            .iter()
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(i, line)| json!({"n": i + 1, "t": line}))
            .collect();
        Ok((Value::Array(lines), task.log.len()))
    }

    pub(crate) fn task_stop(&self, upid: &str) -> ApiResult<()> {
        let state = self.state();
        let task = self.find_task(&state, upid)?;
        if task.end.is_none() {
            task.abort.notify_one();
        }
        Ok(())
    }
}

/// What a worker gets: its log and its pace.
#[derive(Clone)]
pub(super) struct TaskCtx {
    sim: Arc<Sim>,
    upid: String,
    /// When the task's configured duration is over.
    deadline: tokio::time::Instant,
    abort: Arc<Notify>,
    paced: Arc<AtomicBool>,
}

impl TaskCtx {
    pub(super) fn log(&self, line: impl Into<String>) {
        self.sim.append_log(&self.upid, line.into());
    }

    /// Waits until the task's configured duration is over (at once if it
    /// is); a stop request (`DELETE /tasks/{upid}`) made since the task began
    /// interrupts it. Workers call it once, after their preparation and
    /// before their visible effects.
    pub(super) async fn pace(&self) -> Result<(), String> {
        self.paced.store(true, Ordering::Relaxed);
        tokio::select! {
            biased;
            () = self.abort.notified() => Err("interrupted by signal".to_string()),
            () = tokio::time::sleep_until(self.deadline) => Ok(()),
        }
    }
}

/// The filters of `GET /nodes/{node}/tasks`.
#[derive(Debug, Default)]
pub(crate) struct TaskFilter {
    pub(crate) vmid: Option<String>,
    pub(crate) typefilter: Option<String>,
    pub(crate) userfilter: Option<String>,
    pub(crate) source: String,
    pub(crate) errors_only: bool,
    pub(crate) statusfilter: Vec<String>,
    pub(crate) since: Option<i64>,
    pub(crate) until: Option<i64>,
    pub(crate) start: usize,
    pub(crate) limit: usize,
}

impl TaskFilter {
    fn matches(&self, task: &Task) -> bool {
        let status_kind = task.end.as_ref().map(|(_, s)| {
            if s == "OK" {
                "ok"
            } else if s.starts_with("WARNINGS") {
                "warning"
            } else {
                "error"
            }
        });
        let source_ok = match self.source.as_str() {
            "active" => task.end.is_none(),
            "all" => true,
            _ => task.end.is_some(),
        };
        source_ok
            && self.vmid.as_ref().is_none_or(|v| *v == task.upid.id)
            && self.typefilter.as_ref().is_none_or(|t| *t == task.upid.task_type)
            && self.userfilter.as_ref().is_none_or(|u| task.upid.user.contains(u.as_str()))
            && (!self.errors_only || status_kind == Some("error"))
            && (self.statusfilter.is_empty() || status_kind.is_some_and(|k| self.statusfilter.iter().any(|s| s == k)))
            && self.since.is_none_or(|s| task.upid.starttime >= s)
            && self.until.is_none_or(|u| task.upid.starttime <= u)
    }
}
