//! The five stages a Container goes through. Each stage does its work and
//! reports what happened; the driver (`controller::driver`) sequences them and
//! owns status, progress, Events and Redis.

pub mod create;
pub mod deploy;
pub mod finalize;
pub mod start;
pub mod sync;

use std::time::Duration;

use crate::crd::{conditions::reasons, StageName};
use crate::layout::LayoutError;
use crate::proxmox;
use crate::ssh::SshError;

/// Containers are reached over SSH on the standard port.
pub const SSH_PORT: u16 = 22;

/// The percent a stage starts at (the seed plan's numbers); each stage
/// reports its own steps up to where the next one starts.
pub fn start_percent(stage: StageName) -> i32 {
    match stage {
        StageName::Creating => 5,
        StageName::Starting => 25,
        StageName::Deploying => 40,
        StageName::Syncing => 65,
        StageName::Finalizing => 95,
    }
}

/// The message shown when a stage begins.
pub fn start_message(stage: StageName) -> &'static str {
    match stage {
        StageName::Creating => "Creating LXC container...",
        StageName::Starting => "Starting container...",
        StageName::Deploying => "Deploying configuration over SSH...",
        StageName::Syncing => "Running configuration scripts...",
        StageName::Finalizing => "Discovering services and credentials...",
    }
}

/// Why a stage stopped short. Transient failures are retried with backoff;
/// permanent ones end the generation in phase Error.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{message}")]
    Transient { message: String },
    #[error("{message}")]
    Permanent { reason: &'static str, message: String },
}

impl StageError {
    pub fn permanent(reason: &'static str, message: impl Into<String>) -> Self {
        StageError::Permanent { reason, message: message.into() }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        StageError::Transient { message: message.into() }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, StageError::Transient { .. })
    }

    pub fn reason(&self) -> &'static str {
        match self {
            StageError::Transient { .. } => reasons::IN_PROGRESS,
            StageError::Permanent { reason, .. } => reason,
        }
    }
}

impl From<proxmox::Error> for StageError {
    fn from(error: proxmox::Error) -> Self {
        let message = error.to_string();
        if error.is_transient() {
            StageError::Transient { message }
        } else if matches!(error, proxmox::Error::TaskFailed { .. }) {
            StageError::Permanent { reason: reasons::TASK_FAILED, message }
        } else {
            StageError::Permanent { reason: reasons::INVALID_PARAMETERS, message }
        }
    }
}

impl From<SshError> for StageError {
    fn from(error: SshError) -> Self {
        let message = error.to_string();
        match &error {
            SshError::HostKeyMismatch { .. } => StageError::Permanent { reason: reasons::HOST_KEY_MISMATCH, message },
            // Giving up on a container that never answered is worth another
            // attempt later rather than a final Error.
            SshError::GaveUp { .. } => StageError::Transient { message },
            _ if error.is_transient() => StageError::Transient { message },
            _ => StageError::Permanent { reason: reasons::FAILED, message },
        }
    }
}

/// A template that cannot be laid out (a bad script name, package or mode)
/// stays bad until the template changes.
impl From<LayoutError> for StageError {
    fn from(error: LayoutError) -> Self {
        StageError::Permanent { reason: reasons::INVALID_PARAMETERS, message: error.to_string() }
    }
}

impl From<kube::Error> for StageError {
    fn from(error: kube::Error) -> Self {
        StageError::Transient { message: format!("Kubernetes API: {error}") }
    }
}

/// Timings of the pipeline; tests shorten them.
#[derive(Clone, Debug)]
pub struct Timings {
    /// How often a Proxmox task is polled.
    pub task_poll: Duration,
    /// How long a Proxmox task may run.
    pub task_timeout: Duration,
    /// How long to wait for a DHCP address and for sshd to answer.
    pub boot_timeout: Duration,
    /// How long to wait before a reconcile that hit a transient fault runs again.
    pub retry_backoff: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            task_poll: Duration::from_millis(500),
            task_timeout: Duration::from_secs(600),
            boot_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_secs(5),
        }
    }
}
