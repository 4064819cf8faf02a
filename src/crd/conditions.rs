//! Status conditions: the names of their types and reasons, and the one function
//! that updates a condition list.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types of a Container, one per stage, in order.
pub mod types {
    /// The guest exists on Proxmox.
    pub const CREATED: &str = "Created";
    /// The guest is running.
    pub const STARTED: &str = "Started";
    /// The config-manager layout and the template's files are installed.
    pub const DEPLOYED: &str = "Deployed";
    /// Packages are installed and scripts have run.
    pub const SYNCED: &str = "Synced";
    /// Everything is done (Container), or the API is reachable with the token (ProxmoxNode).
    pub const READY: &str = "Ready";
    /// Proxmox holds changes of the guest's config that take effect only
    /// when the guest restarts.
    pub const RESTART_REQUIRED: &str = "RestartRequired";
    /// The template changed since the guest was last synced from it, and
    /// `templateSync: Manual` waits for the retry annotation.
    pub const TEMPLATE_OUT_OF_SYNC: &str = "TemplateOutOfSync";
}

/// Reasons, in CamelCase as Kubernetes expects.
pub mod reasons {
    /// The stage has not started yet.
    pub const PENDING: &str = "Pending";
    /// The stage is running.
    pub const IN_PROGRESS: &str = "InProgress";
    /// The stage succeeded.
    pub const SUCCEEDED: &str = "Succeeded";
    /// The stage failed permanently.
    pub const FAILED: &str = "Failed";
    /// A Proxmox task ended in error.
    pub const TASK_FAILED: &str = "TaskFailed";
    /// A script exited non-zero or timed out.
    pub const SCRIPT_FAILED: &str = "ScriptFailed";
    /// sshd of the guest did not answer within the boot timeout.
    pub const SSH_UNREACHABLE: &str = "SshUnreachable";
    /// The SSH host key did not match the pinned one.
    pub const HOST_KEY_MISMATCH: &str = "HostKeyMismatch";
    /// The requested vmid belongs to a guest not created for this Container.
    pub const FOREIGN_GUEST: &str = "ForeignGuest";
    /// A referenced ProxmoxNode, ContainerTemplate or Secret is missing or invalid.
    pub const INVALID_REFERENCE: &str = "InvalidReference";
    /// Proxmox rejected a request's parameters.
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    /// The Proxmox API answered and accepted the token.
    pub const CONNECTED: &str = "Connected";
    /// The Proxmox API could not be reached.
    pub const UNREACHABLE: &str = "Unreachable";
    /// The Proxmox API rejected the token.
    pub const UNAUTHORIZED: &str = "Unauthorized";
    /// The TLS settings could not be used or the certificate did not verify.
    pub const TLS_ERROR: &str = "TlsError";
    /// The Container is being deleted.
    pub const DELETING: &str = "Deleting";
    /// Changed settings wait for the guest's next restart.
    pub const PENDING_CHANGES: &str = "PendingChanges";
    /// Every setting is in effect.
    pub const APPLIED: &str = "Applied";
    /// The guest lost the ownership marker or tag of this Container.
    pub const OWNERSHIP_LOST: &str = "OwnershipLost";
    /// A setting could not be changed on the guest.
    pub const RECONFIGURE_FAILED: &str = "ReconfigureFailed";
    /// A setting or the power state changed outside the operator was set back.
    pub const DRIFT_CORRECTED: &str = "DriftCorrected";
    /// The guest was destroyed outside the operator.
    pub const GUEST_MISSING: &str = "GuestMissing";
    /// The template changed since the last sync.
    pub const TEMPLATE_CHANGED: &str = "TemplateChanged";
    /// The guest is synced from the template as it is now.
    pub const IN_SYNC: &str = "InSync";
}

/// The desired state of one condition; `set_condition` supplies the transition time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    /// One of [`types`].
    pub type_: &'static str,
    /// Whether the condition holds.
    pub status: bool,
    /// One of [`reasons`].
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
    /// The `metadata.generation` the condition was computed for.
    pub observed_generation: Option<i64>,
}

impl DesiredCondition {
    /// A condition that holds.
    pub fn truthy(
        type_: &'static str,
        reason: &'static str,
        message: impl Into<String>,
        observed_generation: Option<i64>,
    ) -> Self {
        Self { type_, status: true, reason, message: message.into(), observed_generation }
    }

    /// A condition that does not hold.
    pub fn falsy(
        type_: &'static str,
        reason: &'static str,
        message: impl Into<String>,
        observed_generation: Option<i64>,
    ) -> Self {
        Self { type_, status: false, reason, message: message.into(), observed_generation }
    }
}

fn status_str(status: bool) -> &'static str {
    if status {
        "True"
    } else {
        "False"
    }
}

/// Puts `desired` into `conditions`, replacing any condition of the same type.
///
/// `lastTransitionTime` stays as it was unless the status changes (or the condition is
/// new), so it tells when the condition last flipped rather than when it was last
/// written. Returns whether anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, desired: DesiredCondition, now: &Time) -> bool {
    let status = status_str(desired.status);
    let existing = conditions.iter_mut().find(|c| c.type_ == desired.type_);
    let last_transition_time = match &existing {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => now.clone(),
    };
    let updated = Condition {
        type_: desired.type_.to_string(),
        status: status.to_string(),
        reason: desired.reason.to_string(),
        message: desired.message,
        observed_generation: desired.observed_generation,
        last_transition_time,
    };
    match existing {
        Some(old) if *old == updated => false,
        Some(old) => {
            *old = updated;
            true
        }
        None => {
            conditions.push(updated);
            true
        }
    }
}

/// The condition of a type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of a type is present and True.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    fn existing(type_: &str, status: &str, reason: &str, generation: i64, since: i64) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: "before".into(),
            observed_generation: Some(generation),
            last_transition_time: at(since),
        }
    }

    #[test]
    fn set_condition_table() {
        struct Case {
            name: &'static str,
            before: Vec<Condition>,
            desired: DesiredCondition,
            changed: bool,
            transition_at: i64,
            len: usize,
        }
        let cases = [
            Case {
                name: "new condition gets now",
                before: vec![],
                desired: DesiredCondition::falsy(types::CREATED, reasons::IN_PROGRESS, "creating", Some(1)),
                changed: true,
                transition_at: 100,
                len: 1,
            },
            Case {
                name: "same status keeps the transition time but takes the new reason",
                before: vec![existing("Created", "False", "Pending", 1, 10)],
                desired: DesiredCondition::falsy(types::CREATED, reasons::IN_PROGRESS, "creating", Some(1)),
                changed: true,
                transition_at: 10,
                len: 1,
            },
            Case {
                name: "status flip moves the transition time",
                before: vec![existing("Created", "False", "InProgress", 1, 10)],
                desired: DesiredCondition::truthy(types::CREATED, reasons::SUCCEEDED, "created", Some(1)),
                changed: true,
                transition_at: 100,
                len: 1,
            },
            Case {
                name: "identical condition is no change",
                before: vec![Condition {
                    message: "created".into(),
                    ..existing("Created", "True", "Succeeded", 1, 10)
                }],
                desired: DesiredCondition::truthy(types::CREATED, reasons::SUCCEEDED, "created", Some(1)),
                changed: false,
                transition_at: 10,
                len: 1,
            },
            Case {
                name: "new generation alone is a change without a transition",
                before: vec![Condition {
                    message: "created".into(),
                    ..existing("Created", "True", "Succeeded", 1, 10)
                }],
                desired: DesiredCondition::truthy(types::CREATED, reasons::SUCCEEDED, "created", Some(2)),
                changed: true,
                transition_at: 10,
                len: 1,
            },
            Case {
                name: "other types are left alone",
                before: vec![existing("Ready", "False", "Pending", 1, 10)],
                desired: DesiredCondition::truthy(types::CREATED, reasons::SUCCEEDED, "created", Some(1)),
                changed: true,
                transition_at: 100,
                len: 2,
            },
        ];
        for case in cases {
            let mut conditions = case.before.clone();
            let type_ = case.desired.type_;
            let desired = case.desired.clone();
            let changed = set_condition(&mut conditions, case.desired, &at(100));
            assert_eq!(changed, case.changed, "{}: changed", case.name);
            assert_eq!(conditions.len(), case.len, "{}: length", case.name);
            let c = find_condition(&conditions, type_).expect("condition present");
            assert_eq!(c.last_transition_time, at(case.transition_at), "{}: transition time", case.name);
            assert_eq!(c.status, status_str(desired.status), "{}: status", case.name);
            assert_eq!(c.reason, desired.reason, "{}: reason", case.name);
            assert_eq!(c.message, desired.message, "{}: message", case.name);
            assert_eq!(c.observed_generation, desired.observed_generation, "{}: generation", case.name);
        }
    }

    #[test]
    fn is_condition_true_table() {
        let conditions =
            vec![existing("Created", "True", "Succeeded", 1, 1), existing("Ready", "False", "Pending", 1, 1)];
        for (type_, expected) in [("Created", true), ("Ready", false), ("Synced", false)] {
            assert_eq!(is_condition_true(&conditions, type_), expected, "{type_}");
        }
    }
}
