//! Proxmox tasks: status, log, listing and waiting.

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use tokio::time::Instant;

use super::client::{ApiPath, Client, Params};
use super::de;
use super::error::Error;
use super::retry::PollInterval;
use super::upid::{Upid, UpidParseError};

/// How long after dispatch a task may still be unknown to its node.
const NO_SUCH_TASK_GRACE: Duration = Duration::from_secs(15);

/// How many log lines a failed task's error carries.
const LOG_TAIL_LINES: u64 = 10;

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct TaskStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// Once stopped: `OK`, `WARNINGS: N`, or the error.
    #[serde(default)]
    pub exitstatus: Option<String>,
    /// Task type.
    #[serde(default, rename = "type")]
    pub task_type: Option<String>,
    /// Object id, usually the vmid.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub id: Option<String>,
    /// Who started it.
    #[serde(default)]
    pub user: Option<String>,
}

impl TaskStatus {
    /// Whether the task still runs.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// One line of a task log.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct TaskLogLine {
    /// Line number, from 1.
    #[serde(deserialize_with = "de::u32_any")]
    pub n: u32,
    /// The text.
    #[serde(default)]
    pub t: String,
}

/// A page of a task log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskLog {
    /// The lines of this page.
    pub lines: Vec<TaskLogLine>,
    /// Lines in the whole log, when Proxmox says.
    pub total: Option<u64>,
}

/// A task that ended well.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskOutcome {
    /// `OK` or `WARNINGS: N`.
    pub exitstatus: String,
    /// The N of `WARNINGS: N`; 0 for `OK`.
    pub warnings: u32,
}

/// One entry of `GET /nodes/{node}/tasks`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct TaskSummary {
    /// The task id as Proxmox wrote it.
    pub upid: String,
    /// Task type.
    #[serde(default, rename = "type")]
    pub task_type: Option<String>,
    /// Object id, usually the vmid.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub id: Option<String>,
    /// Exit status once finished; absent while running.
    #[serde(default)]
    pub status: Option<String>,
    /// Start, seconds since the epoch.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub starttime: Option<u64>,
    /// End, seconds since the epoch; absent while running.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub endtime: Option<u64>,
}

impl TaskSummary {
    /// Whether the task still runs.
    pub fn is_running(&self) -> bool {
        self.endtime.is_none()
    }

    /// The task's UPID, typed.
    pub fn upid(&self) -> Result<Upid, UpidParseError> {
        self.upid.parse()
    }
}

/// Whether an exit status means success: `OK`, or `WARNINGS: N` (the task did its
/// work and logged warnings). Returns the number of warnings.
pub fn successful_exit(exitstatus: &str) -> Option<u32> {
    let exitstatus = exitstatus.trim();
    if exitstatus == "OK" {
        return Some(0);
    }
    exitstatus.strip_prefix("WARNINGS:").and_then(|n| n.trim().parse().ok())
}

impl Client {
    /// `GET /nodes/{node}/tasks/{upid}/status`, asked of the node that runs the task.
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, Error> {
        let path = ApiPath::new("/nodes/{node}/tasks/{upid}/status", &[upid.node(), upid.as_str()]);
        self.data(Method::GET, path, vec![]).await
    }

    /// `GET /nodes/{node}/tasks/{upid}/log`: `limit` lines from line `start` (0-based).
    pub async fn task_log(&self, upid: &Upid, start: u64, limit: u64) -> Result<TaskLog, Error> {
        let path = ApiPath::new("/nodes/{node}/tasks/{upid}/log", &[upid.node(), upid.as_str()]);
        let params: Params = vec![("start", start.to_string()), ("limit", limit.to_string())];
        let answer = self.call::<Vec<TaskLogLine>>(Method::GET, path, params).await?;
        Ok(TaskLog { lines: answer.data, total: answer.total })
    }

    /// The last `lines` lines of a task log.
    pub async fn task_log_tail(&self, upid: &Upid, lines: u64) -> Result<Vec<String>, Error> {
        let first = self.task_log(upid, 0, lines).await?;
        let total = first.total.unwrap_or(first.lines.len() as u64);
        let page = if total > lines { self.task_log(upid, total - lines, lines).await? } else { first };
        Ok(page.lines.into_iter().map(|l| l.t).collect())
    }

    /// `GET /nodes/{node}/tasks`: recent and running tasks, optionally for one vmid and
    /// one task type (e.g. `vzcreate`).
    pub async fn list_tasks(
        &self,
        node: &str,
        vmid: Option<u32>,
        typefilter: Option<&str>,
    ) -> Result<Vec<TaskSummary>, Error> {
        let mut params: Params = vec![("source", "all".into()), ("limit", "1000".into())];
        if let Some(vmid) = vmid {
            params.push(("vmid", vmid.to_string()));
        }
        if let Some(typefilter) = typefilter {
            params.push(("typefilter", typefilter.to_string()));
        }
        self.data(Method::GET, ApiPath::new("/nodes/{node}/tasks", &[node]), params).await
    }

    /// Waits for a task to stop, polling its node: after a fortieth of the time
    /// waited so far, at least 50 ms and at most `poll` (see [`PollInterval`]).
    ///
    /// A task the node does not know yet is polled again for a short grace period.
    /// `OK` and `WARNINGS: N` are success; any other exit status is
    /// [`Error::TaskFailed`] with the last lines of the log. After `timeout`,
    /// [`Error::TaskTimeout`]; the task may still finish.
    pub async fn wait_task(&self, upid: &Upid, poll: Duration, timeout: Duration) -> Result<TaskOutcome, Error> {
        let started = Instant::now();
        let mut interval = PollInterval::up_to(poll);
        loop {
            match self.task_status(upid).await {
                Ok(status) if !status.is_running() => {
                    let exitstatus = status.exitstatus.unwrap_or_default();
                    if let Some(warnings) = successful_exit(&exitstatus) {
                        return Ok(TaskOutcome { exitstatus, warnings });
                    }
                    let log_tail = match self.task_log_tail(upid, LOG_TAIL_LINES).await {
                        Ok(lines) => lines,
                        Err(e) => {
                            tracing::warn!(error = %e, %upid, "could not read the log of a failed task");
                            Vec::new()
                        }
                    };
                    return Err(Error::TaskFailed { upid: Box::new(upid.clone()), exitstatus, log_tail });
                }
                Ok(_) => {}
                Err(e) if e.is_no_such_task() && started.elapsed() < NO_SUCH_TASK_GRACE => {
                    tracing::debug!(%upid, "task not known to its node yet");
                }
                Err(e) => return Err(e),
            }
            let wait = interval.next_wait();
            if started.elapsed() + wait > timeout {
                return Err(Error::TaskTimeout { upid: Box::new(upid.clone()), waited: started.elapsed() });
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_table() {
        let cases = [
            ("OK", Some(0)),
            ("WARNINGS: 3", Some(3)),
            ("WARNINGS:1", Some(1)),
            (" OK\n", Some(0)),
            ("unable to create CT 120 - no such template", None),
            ("command 'lxc-start -n 120' failed: exit code 1", None),
            ("WARNINGS: many", None),
            ("", None),
            ("ok", None),
        ];
        for (exitstatus, expected) in cases {
            assert_eq!(successful_exit(exitstatus), expected, "{exitstatus:?}");
        }
    }

    #[test]
    fn task_answers_parse() {
        let status: TaskStatus = serde_json::from_str(
            r#"{"status":"stopped","exitstatus":"WARNINGS: 2","type":"vzcreate","id":"120","user":"root@pam!ci",
                "node":"pve1","pid":7226,"pstart":111074,"starttime":1700000000,
                "upid":"UPID:pve1:00001C3A:0001B5E2:6553F0A1:vzcreate:120:root@pam!ci:"}"#,
        )
        .expect("parses");
        assert!(!status.is_running());
        assert_eq!(status.task_type.as_deref(), Some("vzcreate"));

        let log: Vec<TaskLogLine> =
            serde_json::from_str(r#"[{"n":1,"t":"extracting archive"},{"n":2,"t":"TASK OK"}]"#).expect("parses");
        assert_eq!(log[1].t, "TASK OK");

        let list: Vec<TaskSummary> = serde_json::from_str(
            r#"[{"upid":"UPID:pve1:00001C3A:0001B5E2:6553F0A1:vzcreate:120:root@pam:","type":"vzcreate","id":"120",
                 "starttime":1700000000,"endtime":1700000042,"status":"OK"},
                {"upid":"UPID:pve1:00001C3B:0001B5E3:6553F0A2:vzstart:120:root@pam:","type":"vzstart","id":120,
                 "starttime":1700000050}]"#,
        )
        .expect("parses");
        assert!(!list[0].is_running());
        assert!(list[1].is_running());
        assert_eq!(list[1].id.as_deref(), Some("120"));
    }
}
