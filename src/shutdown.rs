//! Graceful shutdown on SIGTERM and SIGINT.
//!
//! One [`Shutdown`] handle is created at start-up and cloned into every part
//! that must stop: the HTTP server, the leader elector and the controller
//! (which finishes or hands back in-flight work before its future ends).

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Resolves on the first SIGTERM or SIGINT.
///
/// The handlers are installed by this call, not on first poll, so a signal
/// that arrives between the call and the first poll is not lost (and does
/// not kill the process with the default action). Needs a Tokio runtime.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
    })
}

/// A cloneable shutdown trigger that any number of tasks can wait on.
#[derive(Clone, Debug)]
pub struct Shutdown {
    sender: std::sync::Arc<watch::Sender<bool>>,
    receiver: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A handle that is triggered only by [`Shutdown::trigger`].
    pub fn new() -> Self {
        let (sender, receiver) = watch::channel(false);
        Self { sender: std::sync::Arc::new(sender), receiver }
    }

    /// A handle triggered by SIGTERM or SIGINT (or [`Shutdown::trigger`]).
    pub fn on_signals() -> std::io::Result<Self> {
        let shutdown = Self::new();
        let signal = shutdown_signal()?;
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            signal.await;
            trigger.trigger();
        });
        Ok(shutdown)
    }

    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Resolves once shutdown is triggered (at once if it already was).
    /// `Send + Sync + 'static`, as kube-runtime's `graceful_shutdown_on` needs.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut receiver = self.receiver.clone();
        async move {
            // The sender lives as long as any handle; if all are gone nobody
            // can trigger shutdown any more, so waiting forever is correct.
            if receiver.wait_for(|triggered| *triggered).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_clone_sees_the_trigger() {
        let shutdown = Shutdown::new();
        let waiter = tokio::spawn(shutdown.clone().wait());
        let late = shutdown.clone();
        assert!(!*late.receiver.borrow());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes up")
            .expect("the waiter does not panic");
        assert!(*late.receiver.borrow());
        tokio::time::timeout(Duration::from_secs(1), late.wait())
            .await
            .expect("waiting after the trigger returns at once");
    }

    #[tokio::test]
    async fn sigterm_triggers_shutdown() {
        let shutdown = Shutdown::on_signals().expect("signal handlers install");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), shutdown.wait()).await.expect("SIGTERM triggers shutdown");
    }
}
