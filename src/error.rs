//! The controller's one error type. Whether a failure is worth another
//! attempt (transient) or ends the generation in phase Error (permanent) is
//! decided here, once, for every edge: Proxmox, SSH, the layout, Kubernetes.

use kube::runtime::finalizer;

use crate::crd::conditions::reasons;
use crate::layout::LayoutError;
use crate::proxmox;
use crate::ssh::SshError;

/// Why a reconcile stopped short. Transient failures are retried with
/// backoff; permanent ones end the generation in phase Error with `reason`
/// as the condition reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Transient { message: String },
    /// The SSH connection to the guest failed after it was established (a
    /// channel closed, no exit status). Retried like a transient failure,
    /// but a stage that keeps losing it for longer than the boot timeout
    /// fails (reason SshUnreachable) instead of retrying for ever.
    #[error("{message}")]
    SshLost { message: String },
    /// The Proxmox node did not answer, or the request was not sent while
    /// its circuit breaker is open. Retried like a transient failure, and
    /// the Container is woken as soon as the node answers again.
    #[error("{message}")]
    NodeDown { message: String },
    /// No slot was free (one of a node's `maxConcurrentOperations`, or one
    /// of the controller's `--concurrency` pipeline slots): the Container is
    /// queued and reconciled again when one is released. Not a failure, no
    /// backoff.
    #[error("waiting for one of the {limit} {slots}")]
    Queued { slots: String, limit: usize },
    #[error("{message}")]
    Permanent { reason: &'static str, message: String },
}

impl Error {
    pub fn permanent(reason: &'static str, message: impl Into<String>) -> Self {
        Error::Permanent { reason, message: message.into() }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Error::Transient { message: message.into() }
    }

    /// Queued for one of the `limit` operation slots of `node`.
    pub fn queued_on_node(node: &str, limit: usize) -> Self {
        Error::Queued { slots: format!("operation slots of node {node} (maxConcurrentOperations)"), limit }
    }

    /// Queued for one of the controller's `limit` pipeline slots.
    pub fn queued_for_pipeline(limit: usize) -> Self {
        Error::Queued { slots: "pipeline slots of the controller (--concurrency)".to_owned(), limit }
    }

    /// Worth another attempt: a transient failure, or a wait for a slot.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient { .. } | Error::SshLost { .. } | Error::NodeDown { .. } | Error::Queued { .. })
    }

    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Transient { .. } | Error::SshLost { .. } | Error::NodeDown { .. } | Error::Queued { .. } => {
                reasons::IN_PROGRESS
            }
            Error::Permanent { reason, .. } => reason,
        }
    }

    /// The `reason` label of `infrahaus_reconcile_failures_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Transient { .. } | Error::SshLost { .. } | Error::NodeDown { .. } => "transient",
            Error::Queued { .. } => "queued",
            Error::Permanent { reason, .. } => reason,
        }
    }
}

impl From<proxmox::Error> for Error {
    fn from(error: proxmox::Error) -> Self {
        let message = error.to_string();
        if error.is_node_down() {
            Error::NodeDown { message }
        } else if error.is_transient() {
            Error::Transient { message }
        } else if matches!(error, proxmox::Error::TaskFailed { .. }) {
            Error::Permanent { reason: reasons::TASK_FAILED, message }
        } else {
            Error::Permanent { reason: reasons::INVALID_PARAMETERS, message }
        }
    }
}

impl From<SshError> for Error {
    fn from(error: SshError) -> Self {
        let message = error.to_string();
        match &error {
            SshError::HostKeyMismatch { .. } => Error::Permanent { reason: reasons::HOST_KEY_MISMATCH, message },
            // A container whose sshd never answered within the boot timeout
            // (none started, a hung one) is an Error that says so; the retry
            // annotation tries again.
            SshError::GaveUp { .. } => Error::Permanent { reason: reasons::SSH_UNREACHABLE, message },
            _ if error.is_transient() => Error::SshLost { message },
            _ => Error::Permanent { reason: reasons::FAILED, message },
        }
    }
}

/// A template that cannot be laid out (a bad script name, package or mode)
/// stays bad until the template changes.
impl From<LayoutError> for Error {
    fn from(error: LayoutError) -> Self {
        Error::Permanent { reason: reasons::INVALID_PARAMETERS, message: error.to_string() }
    }
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Transient { message: format!("Kubernetes API: {error}") }
    }
}

/// The finalizer helper's own failures (adding or removing the finalizer)
/// are API calls worth repeating; the failures of apply and cleanup are
/// passed through as they are.
impl From<finalizer::Error<Error>> for Error {
    fn from(error: finalizer::Error<Error>) -> Self {
        match error {
            finalizer::Error::ApplyFailed(error) | finalizer::Error::CleanupFailed(error) => error,
            other => Error::Transient { message: format!("finalizer: {other}") },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_and_permanent_errors_have_their_labels() {
        let cases = [
            (Error::transient("node busy"), true, reasons::IN_PROGRESS, "transient"),
            (
                Error::permanent(reasons::SCRIPT_FAILED, "script failed"),
                false,
                reasons::SCRIPT_FAILED,
                reasons::SCRIPT_FAILED,
            ),
            (
                Error::from(LayoutError::InvalidMode("9".into())),
                false,
                reasons::INVALID_PARAMETERS,
                "InvalidParameters",
            ),
        ];
        for (error, transient, reason, label) in cases {
            assert_eq!(error.is_transient(), transient, "{error}");
            assert_eq!(error.reason(), reason, "{error}");
            assert_eq!(error.metric_label(), label, "{error}");
        }
    }
}
