//! SSH to containers: key management, host-key pinning, connecting while sshd comes
//! up, running commands with streamed output, and uploading files.

mod error;
mod host_key;
mod keys;
pub(crate) mod lines;
mod quote;
mod session;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use error::SshError;
pub use host_key::HostKeyCheck;
pub use keys::{fingerprint, SshKeyPair};
pub use lines::MAX_LINE_BYTES;
pub use quote::shell_quote;
pub use session::{upload_command, ExitStatus, Output, SshSession, Stream, CAPTURE_LIMIT};

/// One attempt (TCP connect, handshake, authentication) may take at most this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Even with the deadline already near, an attempt gets at least this long.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub addr: SocketAddr,
    pub user: String,
    pub key: SshKeyPair,
    pub host_keys: HostKeyCheck,
}

impl SshTarget {
    /// The usual target: `root` on a container, authenticated with the controller's key.
    pub fn root(addr: SocketAddr, key: SshKeyPair, host_keys: HostKeyCheck) -> Self {
        Self { addr, user: "root".to_owned(), key, host_keys }
    }
}

/// Connects, retrying transient failures (sshd not listening yet, connection reset
/// during boot, timeouts) with exponential backoff until `deadline`.
///
/// Permanent failures (host key mismatch, rejected key) return at once. When the
/// deadline passes, the last failure is returned inside [`SshError::GaveUp`].
pub async fn connect_with_retry(target: &SshTarget, deadline: Instant) -> Result<SshSession, SshError> {
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let budget = deadline.saturating_duration_since(Instant::now()).min(ATTEMPT_TIMEOUT).max(MIN_ATTEMPT_TIMEOUT);
        let error = match connect(target, budget).await {
            Ok(session) => return Ok(session),
            Err(error) => error,
        };
        if !error.is_transient() {
            return Err(error);
        }
        let delay = retry_delay(attempts);
        if Instant::now() + delay >= deadline {
            return Err(SshError::GaveUp {
                addr: target.addr,
                attempts,
                elapsed: started.elapsed(),
                last: Box::new(error),
            });
        }
        tracing::debug!(addr = %target.addr, attempts, ?delay, %error, "SSH not reachable yet, retrying");
        tokio::time::sleep(delay).await;
    }
}

/// One attempt: TCP connect, handshake with host-key check, public key authentication.
pub async fn connect(target: &SshTarget, timeout: Duration) -> Result<SshSession, SshError> {
    match tokio::time::timeout(timeout, connect_once(target)).await {
        Ok(result) => result,
        Err(_) => Err(SshError::ConnectTimeout { addr: target.addr, after: timeout }),
    }
}

/// Delay before retry number `attempt` (1-based): 250 ms doubling up to 5 s.
fn retry_delay(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    FIRST_RETRY_DELAY.saturating_mul(factor).min(MAX_RETRY_DELAY)
}

async fn connect_once(target: &SshTarget) -> Result<SshSession, SshError> {
    let addr = target.addr;
    let stream = TcpStream::connect(addr).await.map_err(|source| SshError::Connect { addr, source })?;
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%addr, %error, "could not set TCP_NODELAY");
    }

    let seen = Arc::new(Mutex::new(None));
    let handler = ClientHandler { policy: target.host_keys.clone(), seen: Arc::clone(&seen) };
    let handshake = client::connect_stream(client_config(), stream, handler).await;
    let seen_fingerprint = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    if let Some(got) = &seen_fingerprint {
        if !target.host_keys.accepts(got) {
            return Err(SshError::HostKeyMismatch { addr, expected: target.host_keys.pins(), got: got.clone() });
        }
    }
    let mut handle = handshake.map_err(|source| SshError::Handshake { addr, source })?;
    let host_key_fingerprint =
        seen_fingerprint.ok_or(SshError::Handshake { addr, source: russh::Error::UnknownKey })?;

    let private_key = target.key.private_key();
    let hash_alg = if private_key.algorithm().is_rsa() {
        handle.best_supported_rsa_hash().await.map_err(|source| SshError::Handshake { addr, source })?.flatten()
    } else {
        None
    };
    let auth = handle
        .authenticate_publickey(target.user.clone(), PrivateKeyWithHashAlg::new(private_key, hash_alg))
        .await
        .map_err(|source| SshError::Handshake { addr, source })?;
    if !auth.success() {
        return Err(SshError::AuthRejected { addr, user: target.user.clone() });
    }
    Ok(SshSession::new(handle, addr, host_key_fingerprint))
}

fn client_config() -> Arc<client::Config> {
    Arc::new(client::Config {
        // Scripts may be silent for minutes, so no inactivity timeout; keepalives
        // detect a container that went away instead.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        ..Default::default()
    })
}

/// Records the fingerprint of the key the server presented and applies the policy.
struct ClientHandler {
    policy: HostKeyCheck,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(&mut self, server_public_key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let seen = fingerprint(&server_public_key.public_key());
        let accepted = self.policy.accepts(&seen);
        *self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(seen);
        Ok(accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_up_to_a_cap() {
        let cases = [(1, 250), (2, 500), (3, 1000), (4, 2000), (5, 4000), (6, 5000), (40, 5000), (u32::MAX, 5000)];
        for (attempt, millis) in cases {
            assert_eq!(retry_delay(attempt), Duration::from_millis(millis), "attempt {attempt}");
        }
    }
}
