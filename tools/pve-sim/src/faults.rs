//! Deterministic fault injection: latency, failing requests, failing or
//! warning tasks and task durations. Set by flags at start and through `/sim/*`.

use std::collections::HashMap;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Clone)]
pub(crate) struct LatencyRule {
    method: Option<String>,
    path: Regex,
    delay: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct FailRule {
    method: Option<String>,
    path: Regex,
    remaining: u32,
    status: u16,
    message: String,
}

/// A request that is carried out in full, after which the connection is
/// closed without an answer: what a client sees when a reply is lost to a
/// reset connection or its own request timeout.
#[derive(Debug, Clone)]
pub(crate) struct DropRule {
    method: Option<String>,
    path: Regex,
    remaining: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskOutcome {
    Fail(String),
    Warnings(u32),
}

#[derive(Debug, Clone)]
pub(crate) struct TaskRule {
    task_type: String,
    outcome: TaskOutcome,
    remaining: u32,
}

/// What answers on a container's SSH port instead of a working sshd, for
/// containers started while the fault is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SshFault {
    /// Nothing listens: sshd never starts.
    NoSshd,
    /// Connections are accepted and never answered.
    Silent,
    /// sshd answers through a relay that closes a connection once the client
    /// sent this many bytes (an upload cut off midway).
    CloseAfter(u64),
}

impl SshFault {
    /// The `ct-init --ssh-fault` argument.
    pub(crate) fn arg(self) -> String {
        match self {
            SshFault::NoSshd => "none".into(),
            SshFault::Silent => "silent".into(),
            SshFault::CloseAfter(bytes) => format!("close-after:{bytes}"),
        }
    }
}

impl std::str::FromStr for SshFault {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(SshFault::NoSshd),
            "silent" => Ok(SshFault::Silent),
            _ => text
                .strip_prefix("close-after:")
                .and_then(|n| n.parse().ok())
                .map(SshFault::CloseAfter)
                .ok_or_else(|| format!("unknown SSH fault '{text}': none, silent or close-after:BYTES")),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Applied to every container started while it is set.
    pub(crate) ssh: Option<SshFault>,
    pub(crate) latencies: Vec<LatencyRule>,
    pub(crate) failures: Vec<FailRule>,
    pub(crate) drops: Vec<DropRule>,
    pub(crate) task_rules: Vec<TaskRule>,
    pub(crate) durations: HashMap<String, Duration>,
    pub(crate) default_duration: Duration,
}

fn method_matches(rule: &Option<String>, method: &str) -> bool {
    rule.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
}

impl Faults {
    /// Total delay of all latency rules matching a request (path below `/api2/json`).
    pub(crate) fn latency(&self, method: &str, path: &str) -> Duration {
        self.latencies
            .iter()
            .filter(|r| method_matches(&r.method, method) && r.path.is_match(path))
            .map(|r| r.delay)
            .sum()
    }

    /// Consumes one use of the first failure rule matching a request.
    pub(crate) fn take_failure(&mut self, method: &str, path: &str) -> Option<(u16, String)> {
        let rule = self
            .failures
            .iter_mut()
            .find(|r| r.remaining > 0 && method_matches(&r.method, method) && r.path.is_match(path))?;
        rule.remaining -= 1;
        let result = (rule.status, rule.message.clone());
        self.failures.retain(|r| r.remaining > 0);
        Some(result)
    }

    /// Consumes one use of the first drop rule matching a request: whether its
    /// answer is to be lost.
    pub(crate) fn take_drop(&mut self, method: &str, path: &str) -> bool {
        let Some(rule) = self
            .drops
            .iter_mut()
            .find(|r| r.remaining > 0 && method_matches(&r.method, method) && r.path.is_match(path))
        else {
            return false;
        };
        rule.remaining -= 1;
        self.drops.retain(|r| r.remaining > 0);
        true
    }

    /// Consumes the outcome planned for the next task of this type, if any.
    pub(crate) fn take_task_outcome(&mut self, task_type: &str) -> Option<TaskOutcome> {
        let rule = self.task_rules.iter_mut().find(|r| r.remaining > 0 && r.task_type == task_type)?;
        rule.remaining -= 1;
        let outcome = rule.outcome.clone();
        self.task_rules.retain(|r| r.remaining > 0);
        Some(outcome)
    }

    pub(crate) fn duration(&self, task_type: &str) -> Duration {
        self.durations.get(task_type).copied().unwrap_or(self.default_duration)
    }

    /// Forgets latency, request failures and task outcomes; durations stay.
    pub(crate) fn reset(&mut self) {
        self.latencies.clear();
        self.failures.clear();
        self.drops.clear();
        self.task_rules.clear();
        self.ssh = None;
    }
}

fn compile(path: &str) -> Result<Regex, String> {
    Regex::new(path).map_err(|e| format!("invalid path regex '{path}': {e}"))
}

/// Splits an optional leading HTTP method off `"POST /nodes/.*/lxc"`.
fn method_and_path(spec: &str) -> (Option<String>, &str) {
    match spec.split_once(' ') {
        Some((method, path)) if method.chars().all(|c| c.is_ascii_uppercase()) => {
            (Some(method.to_string()), path.trim())
        }
        _ => (None, spec),
    }
}

/// `--latency '[METHOD ]PATH_REGEX=MS'`
pub(crate) fn parse_latency(spec: &str) -> Result<LatencyRule, String> {
    let (lhs, ms) = spec.rsplit_once('=').ok_or_else(|| format!("expected PATH_REGEX=MS, got '{spec}'"))?;
    let ms: u64 = ms.parse().map_err(|_| format!("invalid milliseconds in '{spec}'"))?;
    let (method, path) = method_and_path(lhs);
    Ok(LatencyRule { method, path: compile(path)?, delay: Duration::from_millis(ms) })
}

/// `--fail-request '[METHOD ]PATH_REGEX=COUNT:STATUS:MESSAGE'`
pub(crate) fn parse_fail_request(spec: &str) -> Result<FailRule, String> {
    let (lhs, rhs) =
        spec.split_once('=').ok_or_else(|| format!("expected PATH_REGEX=COUNT:STATUS:MESSAGE, got '{spec}'"))?;
    let mut parts = rhs.splitn(3, ':');
    let count = parts.next().and_then(|c| c.parse().ok()).ok_or_else(|| format!("invalid count in '{spec}'"))?;
    let status = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| format!("invalid status in '{spec}'"))?;
    let message = parts.next().filter(|m| !m.is_empty()).ok_or_else(|| format!("missing message in '{spec}'"))?;
    let (method, path) = method_and_path(lhs);
    fail_rule(method, path, count, status, message.to_string())
}

fn fail_rule(method: Option<String>, path: &str, count: u32, status: u16, message: String) -> Result<FailRule, String> {
    if !(400..=599).contains(&status) {
        return Err(format!("status {status} is not an HTTP error status"));
    }
    Ok(FailRule { method, path: compile(path)?, remaining: count, status, message })
}

/// `--drop-response '[METHOD ]PATH_REGEX=COUNT'`
pub(crate) fn parse_drop_response(spec: &str) -> Result<DropRule, String> {
    let (lhs, count) = spec.rsplit_once('=').ok_or_else(|| format!("expected PATH_REGEX=COUNT, got '{spec}'"))?;
    let count: u32 = count.parse().map_err(|_| format!("invalid count in '{spec}'"))?;
    let (method, path) = method_and_path(lhs);
    Ok(DropRule { method, path: compile(path)?, remaining: count })
}

/// `--fail-task 'TYPE=MESSAGE'`
pub(crate) fn parse_fail_task(spec: &str) -> Result<TaskRule, String> {
    let (task_type, message) = spec.split_once('=').ok_or_else(|| format!("expected TYPE=MESSAGE, got '{spec}'"))?;
    Ok(TaskRule { task_type: task_type.into(), outcome: TaskOutcome::Fail(message.into()), remaining: 1 })
}

/// `--warn-task 'TYPE=N'`
pub(crate) fn parse_warn_task(spec: &str) -> Result<TaskRule, String> {
    let (task_type, n) = spec.split_once('=').ok_or_else(|| format!("expected TYPE=N, got '{spec}'"))?;
    let n: u32 = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("invalid warning count in '{spec}'"))?;
    Ok(TaskRule { task_type: task_type.into(), outcome: TaskOutcome::Warnings(n), remaining: 1 })
}

/// `--task-duration 'TYPE=MS'`
pub(crate) fn parse_task_duration(spec: &str) -> Result<(String, Duration), String> {
    let (task_type, ms) = spec.split_once('=').ok_or_else(|| format!("expected TYPE=MS, got '{spec}'"))?;
    let ms: u64 = ms.parse().map_err(|_| format!("invalid milliseconds in '{spec}'"))?;
    Ok((task_type.into(), Duration::from_millis(ms)))
}

/// Bodies of the `/sim/*` admin endpoints.
#[derive(Debug, Deserialize)]
pub(crate) struct LatencyRequest {
    method: Option<String>,
    path: String,
    ms: u64,
}

/// `POST /sim/ssh-fault`: `{"mode": "none" | "silent" | "close-after",
/// "bytes": N}`, or `{"mode": "sshd"}` for a working sshd again.
#[derive(Debug, Deserialize)]
pub(crate) struct SshFaultRequest {
    mode: String,
    #[serde(default)]
    bytes: u64,
}

impl SshFaultRequest {
    pub(crate) fn into_fault(self) -> Result<Option<SshFault>, String> {
        match self.mode.as_str() {
            "sshd" => Ok(None),
            "close-after" if self.bytes > 0 => Ok(Some(SshFault::CloseAfter(self.bytes))),
            "close-after" => Err("close-after needs bytes > 0".into()),
            mode => mode.parse().map(Some),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct FailRequest {
    method: Option<String>,
    path: String,
    #[serde(default = "one")]
    count: u32,
    #[serde(default = "internal_error")]
    status: u16,
    message: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DropRequest {
    method: Option<String>,
    path: String,
    #[serde(default = "one")]
    count: u32,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TaskFaultRequest {
    #[serde(rename = "type")]
    task_type: String,
    error: Option<String>,
    warnings: Option<u32>,
    #[serde(default = "one")]
    count: u32,
}

#[derive(Debug, Deserialize)]
pub(crate) struct HoldLockRequest {
    pub(crate) vmid: u32,
    pub(crate) ms: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TaskDurationRequest {
    #[serde(rename = "type")]
    pub(crate) task_type: Option<String>,
    pub(crate) ms: u64,
}

fn one() -> u32 {
    1
}

fn internal_error() -> u16 {
    500
}

impl LatencyRequest {
    pub(crate) fn into_rule(self) -> Result<LatencyRule, String> {
        Ok(LatencyRule { method: self.method, path: compile(&self.path)?, delay: Duration::from_millis(self.ms) })
    }
}

impl FailRequest {
    pub(crate) fn into_rule(self) -> Result<FailRule, String> {
        fail_rule(self.method, &self.path, self.count, self.status, self.message)
    }
}

impl DropRequest {
    pub(crate) fn into_rule(self) -> Result<DropRule, String> {
        Ok(DropRule { method: self.method, path: compile(&self.path)?, remaining: self.count })
    }
}

impl TaskFaultRequest {
    pub(crate) fn into_rule(self) -> Result<TaskRule, String> {
        let outcome = match (self.error, self.warnings) {
            (Some(message), None) => TaskOutcome::Fail(message),
            (None, Some(n)) if n > 0 => TaskOutcome::Warnings(n),
            _ => return Err("give exactly one of 'error' (a message) or 'warnings' (a count > 0)".into()),
        };
        Ok(TaskRule { task_type: self.task_type, outcome, remaining: self.count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_specs() {
        let latency = parse_latency("GET /cluster/nextid=250").expect("valid");
        assert_eq!(latency.method.as_deref(), Some("GET"));
        assert_eq!(latency.delay, Duration::from_millis(250));
        assert!(parse_latency("/x=abc").is_err());

        let fail = parse_fail_request("POST ^/nodes/pve1/lxc$=2:500:can't lock file 'x' - got timeout").expect("valid");
        assert_eq!((fail.method.as_deref(), fail.remaining, fail.status), (Some("POST"), 2, 500));
        assert_eq!(fail.message, "can't lock file 'x' - got timeout");
        assert!(parse_fail_request("/x=1:200:fine").is_err());
        assert!(parse_fail_request("/x=1:500:").is_err());
        assert!(parse_fail_request("/x=one:500:m").is_err());

        assert_eq!(parse_fail_task("vzstart=boom").expect("valid").outcome, TaskOutcome::Fail("boom".into()));
        assert_eq!(parse_warn_task("vzcreate=2").expect("valid").outcome, TaskOutcome::Warnings(2));
        assert!(parse_warn_task("vzcreate=0").is_err());
        assert_eq!(parse_task_duration("vzstart=40").expect("valid"), ("vzstart".into(), Duration::from_millis(40)));
    }

    #[test]
    fn failures_are_consumed_in_order() {
        let mut faults = Faults::default();
        faults.failures.push(parse_fail_request("GET /version=2:596:Broken pipe").expect("valid"));
        assert_eq!(faults.take_failure("POST", "/version"), None);
        assert_eq!(faults.take_failure("GET", "/version"), Some((596, "Broken pipe".into())));
        assert_eq!(faults.take_failure("GET", "/version"), Some((596, "Broken pipe".into())));
        assert_eq!(faults.take_failure("GET", "/version"), None);

        faults.drops.push(parse_drop_response("POST ^/nodes/pve1/lxc$=1").expect("valid"));
        assert!(!faults.take_drop("GET", "/nodes/pve1/lxc"));
        assert!(faults.take_drop("POST", "/nodes/pve1/lxc"));
        assert!(!faults.take_drop("POST", "/nodes/pve1/lxc"));
        assert!(parse_drop_response("/x=many").is_err());
        assert!(faults.failures.is_empty());
    }

    #[test]
    fn task_outcomes_apply_to_the_next_task_of_a_type() {
        let mut faults = Faults::default();
        faults.task_rules.push(parse_fail_task("vzstart=boom").expect("valid"));
        assert_eq!(faults.take_task_outcome("vzcreate"), None);
        assert_eq!(faults.take_task_outcome("vzstart"), Some(TaskOutcome::Fail("boom".into())));
        assert_eq!(faults.take_task_outcome("vzstart"), None);
    }

    #[test]
    fn latency_and_durations() {
        let mut faults = Faults { default_duration: Duration::from_millis(10), ..Default::default() };
        faults.latencies.push(parse_latency("/nodes=100").expect("valid"));
        faults.latencies.push(parse_latency("GET /nodes/pve1/tasks=50").expect("valid"));
        assert_eq!(faults.latency("GET", "/nodes/pve1/tasks"), Duration::from_millis(150));
        assert_eq!(faults.latency("GET", "/version"), Duration::ZERO);
        faults.durations.insert("vzcreate".into(), Duration::from_millis(500));
        assert_eq!(faults.duration("vzcreate"), Duration::from_millis(500));
        assert_eq!(faults.duration("vzstop"), Duration::from_millis(10));
        faults.reset();
        assert!(faults.latencies.is_empty());
        assert_eq!(faults.duration("vzcreate"), Duration::from_millis(500));
    }
}
