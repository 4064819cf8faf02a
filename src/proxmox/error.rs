use std::collections::BTreeMap;
use std::time::Duration;

use super::upid::Upid;

/// Everything that can go wrong talking to Proxmox.
///
/// Whether a fault is worth retrying is decided here, in [`Error::is_transient`], and
/// nowhere else.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client settings cannot be used (endpoint, token id, CA bundle, fingerprint).
    #[error("invalid Proxmox client settings: {0}")]
    Config(String),

    /// The HTTP client could not be built.
    #[error("building the Proxmox HTTP client failed")]
    Build(#[source] reqwest::Error),

    /// The server's certificate was not accepted, or the TLS handshake failed.
    #[error("{method} {endpoint}: TLS handshake with the Proxmox API failed (check tls.caBundle / tls.fingerprint)")]
    Tls {
        /// HTTP method.
        method: &'static str,
        /// Path template of the request.
        endpoint: &'static str,
        /// The underlying error; its chain names the certificate problem.
        #[source]
        source: reqwest::Error,
    },

    /// The request did not get an answer: connection refused or reset, or a timeout.
    #[error("{method} {endpoint}: no answer from the Proxmox API")]
    Connection {
        /// HTTP method.
        method: &'static str,
        /// Path template of the request.
        endpoint: &'static str,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },

    /// The API answered with an HTTP error.
    #[error("{method} {path}: HTTP {status}: {}", render_api_message(message, errors))]
    Api {
        /// HTTP method.
        method: &'static str,
        /// Path template of the request.
        endpoint: &'static str,
        /// The concrete path.
        path: String,
        /// HTTP status code.
        status: u16,
        /// The `message` of the response, or its reason phrase.
        message: String,
        /// Per-parameter errors of a 400 answer.
        errors: BTreeMap<String, String>,
    },

    /// The API answered with something that is not what this client expects.
    #[error("{method} {path}: unexpected response from the Proxmox API: {detail}")]
    Decode {
        /// HTTP method.
        method: &'static str,
        /// Path template of the request.
        endpoint: &'static str,
        /// The concrete path.
        path: String,
        /// What did not fit.
        detail: String,
    },

    /// A Proxmox task ended in error.
    #[error("Proxmox task {} {} on {} failed: {exitstatus}{}", upid.task_type(), upid.id(), upid.node(), render_log_tail(log_tail))]
    TaskFailed {
        /// The task.
        upid: Box<Upid>,
        /// Its exit status, e.g. `unable to create CT 120 - ...`.
        exitstatus: String,
        /// The last lines of its log.
        log_tail: Vec<String>,
    },

    /// A task did not finish in time; it may still be running.
    #[error("Proxmox task {upid} still running after {waited:?}")]
    TaskTimeout {
        /// The task.
        upid: Box<Upid>,
        /// How long it was waited on.
        waited: Duration,
    },

    /// A guest holds the create lock, but no create task runs for it: the
    /// moment before Proxmox lists the task, or a create that died.
    #[error("CT {vmid} on {node} is locked by a create that is not running (yet); it is judged once the lock is gone")]
    CreateLocked {
        /// Node name.
        node: String,
        /// Guest id.
        vmid: u32,
    },

    /// The node did not answer the last requests, so this one was not sent
    /// (see [`Breaker`](super::breaker::Breaker)).
    #[error("{method} {endpoint}: not sent, the Proxmox node is not answering (next try in {}s; last: {last})", retry_in.as_secs_f64().ceil())]
    NodeUnavailable {
        /// HTTP method.
        method: &'static str,
        /// Path template of the request.
        endpoint: &'static str,
        /// When a probe goes out.
        retry_in: Duration,
        /// The last failure seen.
        last: String,
    },

    /// A guest stayed locked longer than waited for.
    #[error("CT {vmid} on {node} is still locked ({lock}) after {waited:?}")]
    StillLocked {
        /// Node name.
        node: String,
        /// Guest id.
        vmid: u32,
        /// The lock, e.g. `create`, `backup`.
        lock: String,
        /// How long it was waited on.
        waited: Duration,
    },
}

fn render_api_message(message: &str, errors: &BTreeMap<String, String>) -> String {
    let mut out = message.trim_end().to_string();
    for (param, err) in errors {
        out.push_str(&format!("; {param}: {}", err.trim_end()));
    }
    out
}

fn render_log_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    format!("\n--- last task log lines ---\n{}", lines.join("\n"))
}

impl Error {
    /// Whether retrying the same request later can succeed.
    ///
    /// Transient: no answer or a timeout, HTTP 5xx (including Proxmox's 595/596 proxy
    /// errors), 408/429, `can't lock file ... got timeout`, `CT is locked (...)`, a task
    /// or lock that did not finish in time. Permanent: settings and TLS errors, HTTP 4xx
    /// (parameter errors, 401/403), "already exists" and "does not exist" answers even
    /// when sent as 500, failed tasks, and answers this client cannot read.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connection { .. }
            | Error::NodeUnavailable { .. }
            | Error::TaskTimeout { .. }
            | Error::StillLocked { .. }
            | Error::CreateLocked { .. } => true,
            Error::Api { status, .. } => {
                if self.is_lock_contention() {
                    true
                } else if self.is_already_exists() || self.is_not_found() {
                    false
                } else {
                    *status >= 500 || *status == 408 || *status == 429
                }
            }
            Error::Config(_)
            | Error::Build(_)
            | Error::Tls { .. }
            | Error::Decode { .. }
            | Error::TaskFailed { .. } => false,
        }
    }

    /// The node itself did not answer: no connection or a timeout, or a
    /// proxy in front of it (502, 503, 504, Proxmox's 596) saying so; or the
    /// request was not sent because the node's breaker is open for that.
    pub fn is_node_down(&self) -> bool {
        match self {
            Error::Connection { .. } | Error::NodeUnavailable { .. } => true,
            Error::Api { status, .. } => matches!(status, 502..=504 | 596),
            _ => false,
        }
    }

    /// Proxmox refused because a config lock is held: the request was not applied and
    /// can be sent again as it is, even if it is not idempotent.
    pub fn is_lock_contention(&self) -> bool {
        self.api_text_contains(|text| {
            (text.contains("can't lock file") && text.contains("got timeout"))
                || text.contains("ct is locked")
                || text.contains("vm is locked")
        })
    }

    /// The vmid is taken (`VM 120 already exists`, `CT 120 already exists on node ...`).
    pub fn is_already_exists(&self) -> bool {
        self.api_text_contains(|text| text.contains("already exists"))
    }

    /// The guest or task does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api { status: 404, .. })
            || self.api_text_contains(|text| text.contains("does not exist") || text.contains("no such"))
    }

    /// The node has no config for the guest: `Configuration file
    /// 'nodes/<node>/lxc/<vmid>.conf' does not exist`. Narrower than
    /// [`Error::is_not_found`]: an unknown node, storage or task is not a
    /// missing guest.
    pub fn is_no_such_guest(&self) -> bool {
        matches!(self, Error::Api { status: 500, .. })
            && self.api_text_contains(|text| text.contains("configuration file") && text.contains("does not exist"))
    }

    /// The task is not (yet) known to the node: just after dispatch Proxmox may not
    /// have written it to its task index.
    pub fn is_no_such_task(&self) -> bool {
        matches!(self, Error::Api { status: 400 | 500, .. })
            && self.api_text_contains(|text| text.contains("no such task"))
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Build(_) => "build",
            Error::Tls { .. } => "tls",
            Error::Connection { source, .. } if source.is_timeout() => "timeout",
            Error::Connection { .. } => "connection",
            Error::NodeUnavailable { .. } => "node_unavailable",
            Error::Api { status, .. } => {
                if self.is_lock_contention() {
                    "locked"
                } else if self.is_already_exists() {
                    "already_exists"
                } else if self.is_not_found() {
                    "not_found"
                } else {
                    match status {
                        400 => "bad_request",
                        401 => "unauthorized",
                        403 => "forbidden",
                        500..=599 => "server_error",
                        _ => "http_error",
                    }
                }
            }
            Error::Decode { .. } => "decode",
            Error::TaskFailed { .. } => "task_failed",
            Error::TaskTimeout { .. } => "task_timeout",
            Error::StillLocked { .. } | Error::CreateLocked { .. } => "locked",
        }
    }

    fn api_text_contains(&self, pred: impl Fn(&str) -> bool) -> bool {
        match self {
            Error::Api { message, errors, .. } => {
                pred(&message.to_lowercase()) || errors.values().any(|e| pred(&e.to_lowercase()))
            }
            _ => false,
        }
    }
}

/// An API error of `POST /nodes/pve1/lxc`, for the tests of this module's
/// users.
#[cfg(test)]
pub(crate) fn test_api_error(status: u16, message: &str, errors: &[(&str, &str)]) -> Error {
    Error::Api {
        method: "POST",
        endpoint: "/nodes/{node}/lxc",
        path: "/nodes/pve1/lxc".into(),
        status,
        message: message.into(),
        errors: errors.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, message: &str, errors: &[(&str, &str)]) -> Error {
        test_api_error(status, message, errors)
    }

    #[test]
    fn classification_table() {
        let upid: Upid = "UPID:pve1:00001C3A:0001B5E2:6553F0A1:vzcreate:120:root@pam:".parse().expect("upid");
        // (error, transient, already exists, not found, lock contention, label)
        let cases = [
            (
                api(500, "can't lock file '/run/lock/lxc/pve-config-120.lock' - got timeout", &[]),
                true,
                false,
                false,
                true,
                "locked",
            ),
            (api(500, "CT is locked (create)", &[]), true, false, false, true, "locked"),
            (api(500, "Internal Server Error", &[]), true, false, false, false, "server_error"),
            (api(596, "Connection timed out", &[]), true, false, false, false, "server_error"),
            (api(595, "No route to host", &[]), true, false, false, false, "server_error"),
            (api(503, "Service Unavailable", &[]), true, false, false, false, "server_error"),
            (api(429, "Too Many Requests", &[]), true, false, false, false, "http_error"),
            (
                api(400, "Parameter verification failed.", &[("memory", "value must have a minimum value of 16")]),
                false,
                false,
                false,
                false,
                "bad_request",
            ),
            (
                api(400, "Parameter verification failed.", &[("vmid", "VM 120 already exists")]),
                false,
                true,
                false,
                false,
                "already_exists",
            ),
            (api(500, "CT 120 already exists on node 'pve1'", &[]), false, true, false, false, "already_exists"),
            (
                api(500, "Configuration file 'nodes/pve1/lxc/120.conf' does not exist", &[]),
                false,
                false,
                true,
                false,
                "not_found",
            ),
            (api(401, "authentication failure", &[]), false, false, false, false, "unauthorized"),
            (api(403, "Permission check failed (/vms/120, VM.Allocate)", &[]), false, false, false, false, "forbidden"),
            (
                Error::TaskFailed {
                    upid: Box::new(upid.clone()),
                    exitstatus: "unable to create CT 120".into(),
                    log_tail: vec![],
                },
                false,
                false,
                false,
                false,
                "task_failed",
            ),
            (
                Error::TaskTimeout { upid: Box::new(upid), waited: Duration::from_secs(1) },
                true,
                false,
                false,
                false,
                "task_timeout",
            ),
            (Error::Config("bad".into()), false, false, false, false, "config"),
        ];
        for (err, transient, exists, not_found, locked, label) in cases {
            assert_eq!(err.is_transient(), transient, "transient: {err}");
            assert_eq!(err.is_already_exists(), exists, "already exists: {err}");
            assert_eq!(err.is_not_found(), not_found, "not found: {err}");
            assert_eq!(err.is_lock_contention(), locked, "locked: {err}");
            assert_eq!(err.metric_label(), label, "label: {err}");
        }
    }

    #[test]
    fn no_such_task_table() {
        for (err, expected) in [
            (api(500, "no such task", &[]), true),
            (api(400, "Parameter verification failed.", &[("upid", "no such task")]), true),
            (api(404, "no such task", &[]), false),
            (api(500, "got timeout", &[]), false),
        ] {
            assert_eq!(err.is_no_such_task(), expected, "{err}");
        }
    }

    #[test]
    fn no_such_guest_table() {
        for (err, expected) in [
            (api(500, "Configuration file 'nodes/pve1/lxc/130.conf' does not exist", &[]), true),
            (api(500, "no such cluster node 'pve9'", &[]), false),
            (api(500, "storage 'fast' does not exist", &[]), false),
            (api(500, "no such task", &[]), false),
            (api(595, "hostname lookup 'pve9' failed", &[]), false),
        ] {
            assert_eq!(err.is_no_such_guest(), expected, "{err}");
        }
    }

    #[test]
    fn messages_name_the_request_and_the_parameter_errors() {
        let err =
            api(400, "Parameter verification failed.\n", &[("memory", "value must have a minimum value of 16\n")]);
        assert_eq!(
            err.to_string(),
            "POST /nodes/pve1/lxc: HTTP 400: Parameter verification failed.; memory: value must have a minimum value of 16"
        );
        let upid: Upid = "UPID:pve1:00001C3A:0001B5E2:6553F0A1:vzcreate:120:root@pam:".parse().expect("upid");
        let err = Error::TaskFailed {
            upid: Box::new(upid),
            exitstatus: "unable to create CT 120 - no such template".into(),
            log_tail: vec![
                "extracting archive".into(),
                "TASK ERROR: unable to create CT 120 - no such template".into(),
            ],
        };
        assert_eq!(
            err.to_string(),
            "Proxmox task vzcreate 120 on pve1 failed: unable to create CT 120 - no such template\n--- last task log lines ---\nextracting archive\nTASK ERROR: unable to create CT 120 - no such template"
        );
    }
}
