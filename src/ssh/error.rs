use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything that can go wrong talking SSH to a container.
///
/// Whether a fault is worth retrying is decided here, in [`SshError::is_transient`],
/// and nowhere else.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("invalid SSH private key: {0}")]
    InvalidKey(#[source] russh::keys::ssh_key::Error),

    #[error("could not encode SSH key: {0}")]
    KeyEncoding(#[source] russh::keys::ssh_key::Error),

    #[error("TCP connection to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },

    #[error("SSH connection to {addr} did not complete within {after:?}")]
    ConnectTimeout { addr: SocketAddr, after: Duration },

    #[error("SSH handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: russh::Error,
    },

    #[error(
        "host key of {addr} is {got}, which is not among the pinned fingerprints {expected:?}; \
         the container was replaced or someone is intercepting the connection. If the new key is \
         expected, accept it with the annotation infrahaus.io/accept-host-key={got}"
    )]
    HostKeyMismatch { addr: SocketAddr, expected: Vec<String>, got: String },

    #[error(
        "{addr} rejected public key authentication for user {user}; is the controller's public key in authorized_keys?"
    )]
    AuthRejected { addr: SocketAddr, user: String },

    #[error("gave up connecting to {addr} after {attempts} attempts in {elapsed:?}: {last}")]
    GaveUp {
        addr: SocketAddr,
        attempts: u32,
        elapsed: Duration,
        #[source]
        last: Box<SshError>,
    },

    #[error("command `{command}` did not finish within {timeout:?}")]
    CommandTimeout { command: String, timeout: Duration },

    #[error("SSH channel for `{command}` failed: {source}")]
    Channel {
        command: String,
        #[source]
        source: russh::Error,
    },

    #[error("command `{command}` ended without reporting an exit status; the connection was probably lost")]
    NoExitStatus { command: String },

    #[error("command `{command}` printed more than {limit} bytes on one stream")]
    OutputTooLarge { command: String, limit: usize },

    #[error("invalid remote path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },

    #[error("invalid file mode {mode:#o}: only permission bits (at most 0o7777) are allowed")]
    InvalidMode { mode: u32 },

    #[error("upload of {path} failed with {status}: {stderr}")]
    Upload { path: String, status: super::ExitStatus, stderr: String },
}

impl SshError {
    /// True when the same operation may succeed later without anyone changing anything:
    /// sshd not up yet, a connection dropped, a timeout while connecting.
    ///
    /// A host key mismatch, a rejected key, a command timeout and exhausted retries
    /// are permanent: repeating them cannot help.
    pub fn is_transient(&self) -> bool {
        match self {
            SshError::Connect { source, .. } => io_error_is_transient(source),
            SshError::ConnectTimeout { .. } | SshError::NoExitStatus { .. } => true,
            SshError::Handshake { source, .. } | SshError::Channel { source, .. } => russh_error_is_transient(source),
            SshError::InvalidKey(_)
            | SshError::KeyEncoding(_)
            | SshError::HostKeyMismatch { .. }
            | SshError::AuthRejected { .. }
            | SshError::GaveUp { .. }
            | SshError::CommandTimeout { .. }
            | SshError::OutputTooLarge { .. }
            | SshError::InvalidPath { .. }
            | SshError::InvalidMode { .. }
            | SshError::Upload { .. } => false,
        }
    }
}

fn io_error_is_transient(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    // A booting container refuses connections until sshd listens, and is unreachable
    // until its interface is configured.
    matches!(
        error.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | TimedOut
            | UnexpectedEof
            | HostUnreachable
            | NetworkUnreachable
            | Interrupted
    )
}

fn russh_error_is_transient(error: &russh::Error) -> bool {
    match error {
        // sshd that is still generating host keys or restarting closes the connection
        // during the handshake.
        russh::Error::HUP
        | russh::Error::Disconnect
        | russh::Error::ConnectionTimeout
        | russh::Error::KeepaliveTimeout
        | russh::Error::InactivityTimeout
        | russh::Error::SendError => true,
        russh::Error::IO(io) => io_error_is_transient(io),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 22))
    }

    #[test]
    fn transient_versus_permanent() {
        let cases: Vec<(SshError, bool)> = vec![
            (SshError::Connect { addr: addr(), source: io::Error::from(io::ErrorKind::ConnectionRefused) }, true),
            (SshError::Connect { addr: addr(), source: io::Error::from(io::ErrorKind::PermissionDenied) }, false),
            (SshError::ConnectTimeout { addr: addr(), after: Duration::from_secs(1) }, true),
            (SshError::Handshake { addr: addr(), source: russh::Error::HUP }, true),
            (
                SshError::Handshake {
                    addr: addr(),
                    source: russh::Error::IO(io::Error::from(io::ErrorKind::ConnectionReset)),
                },
                true,
            ),
            (SshError::Handshake { addr: addr(), source: russh::Error::WrongServerSig }, false),
            (
                SshError::HostKeyMismatch { addr: addr(), expected: vec!["SHA256:a".into()], got: "SHA256:b".into() },
                false,
            ),
            (SshError::AuthRejected { addr: addr(), user: "root".into() }, false),
            (
                SshError::GaveUp {
                    addr: addr(),
                    attempts: 3,
                    elapsed: Duration::from_secs(3),
                    last: Box::new(SshError::ConnectTimeout { addr: addr(), after: Duration::from_secs(1) }),
                },
                false,
            ),
            (SshError::CommandTimeout { command: "sleep 9".into(), timeout: Duration::from_secs(1) }, false),
            (SshError::NoExitStatus { command: "true".into() }, true),
        ];
        for (error, transient) in cases {
            assert_eq!(error.is_transient(), transient, "{error}");
        }
    }
}
