//! A circuit breaker shared by every client of one Proxmox node.
//!
//! Each Container retries on its own backoff, so a dead node behind a
//! thousand Containers would still see a thousand retries every few minutes,
//! and each of them would sit in the client's own retries first. The breaker
//! counts requests that found the node not answering (no connection, a
//! timeout, a proxy's 502/503/504 or Proxmox's 596). After [`THRESHOLD`]
//! such failures in a row it opens: requests fail at once with
//! [`Error::NodeUnavailable`] (transient, not retried inside the client) and
//! never leave the controller. When the open period is over, one request is
//! let through as a probe while the others still fail fast; its answer closes
//! the breaker (any answer from the node) or opens it again for twice as
//! long, up to [`MAX_OPEN`]. So the node sees about one request per open
//! period however many Containers wait for it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::error::Error;

/// Failures in a row that open the breaker: a single lost connection is
/// left to the client's retries.
pub const THRESHOLD: u32 = 3;
/// The first open period; it doubles with each failed probe.
pub const MIN_OPEN: Duration = Duration::from_secs(1);
/// The longest open period, so a node that comes back is used again soon.
pub const MAX_OPEN: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct State {
    /// Failures in a row.
    failures: u32,
    /// Requests fail fast until then.
    open_until: Option<Instant>,
    /// What the last failure said, for the fast failures' message.
    last: String,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<State>,
    /// Told when the node answers again after the breaker was open.
    on_close: Option<Arc<tokio::sync::Notify>>,
}

impl Breaker {
    /// A breaker that tells `on_close` when its node answers again.
    pub fn notifying(on_close: Arc<tokio::sync::Notify>) -> Self {
        Self { state: Mutex::default(), on_close: Some(on_close) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn open_for(failures: u32) -> Duration {
        let doublings = failures.saturating_sub(THRESHOLD).min(16);
        MIN_OPEN.saturating_mul(1 << doublings).min(MAX_OPEN)
    }

    /// Whether a request may go out now. A request let through after an
    /// open period is the probe: the period starts again for everyone else
    /// until its answer is recorded.
    pub fn admit(&self, method: &'static str, endpoint: &'static str) -> Result<(), Error> {
        let mut state = self.state();
        let Some(until) = state.open_until else { return Ok(()) };
        let now = Instant::now();
        if now < until {
            return Err(Error::NodeUnavailable { method, endpoint, retry_in: until - now, last: state.last.clone() });
        }
        state.open_until = Some(now + Self::open_for(state.failures));
        Ok(())
    }

    /// Records how a request that went out ended.
    pub fn record(&self, outcome: Result<(), &Error>) {
        let mut state = self.state();
        match outcome {
            Err(error) if error.is_node_down() => {
                state.failures = state.failures.saturating_add(1);
                state.last = error.to_string();
                if state.failures >= THRESHOLD {
                    state.open_until = Some(Instant::now() + Self::open_for(state.failures));
                }
            }
            _ => {
                let was_open = state.open_until.is_some();
                *state = State::default();
                if let Some(notify) = self.on_close.as_ref().filter(|_| was_open) {
                    notify.notify_one();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Error {
        super::super::error::test_api_error(596, "Connection timed out", &[])
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_in_a_row_lets_one_probe_through_and_closes_on_an_answer() {
        let breaker = Breaker::default();
        for _ in 0..THRESHOLD - 1 {
            breaker.admit("GET", "/version").expect("closed");
            breaker.record(Err(&down()));
        }
        breaker.admit("GET", "/version").expect("still closed below the threshold");
        breaker.record(Err(&down()));
        let error = breaker.admit("GET", "/version").expect_err("open");
        assert!(matches!(error, Error::NodeUnavailable { .. }) && error.is_transient(), "{error}");
        assert!(error.to_string().contains("596"), "says what the node last answered: {error}");

        tokio::time::advance(MIN_OPEN).await;
        breaker.admit("GET", "/version").expect("the probe");
        breaker.admit("GET", "/version").expect_err("one probe at a time");
        breaker.record(Err(&down()));
        tokio::time::advance(MIN_OPEN).await;
        breaker.admit("GET", "/version").expect_err("a failed probe doubles the period");
        tokio::time::advance(MIN_OPEN).await;
        breaker.admit("GET", "/version").expect("the next probe");
        // A 404 is an answer: the node is there.
        breaker.record(Err(&super::super::error::test_api_error(404, "no such CT", &[])));
        breaker.admit("GET", "/version").expect("closed again");
        breaker.admit("GET", "/version").expect("closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn the_open_period_is_capped() {
        let breaker = Breaker::default();
        for _ in 0..40 {
            breaker.record(Err(&down()));
        }
        tokio::time::advance(MAX_OPEN).await;
        breaker.admit("GET", "/version").expect("a probe after the longest period");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_after_the_breaker_opened_is_told() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let breaker = Breaker::notifying(notify.clone());
        breaker.record(Ok(()));
        for _ in 0..THRESHOLD {
            breaker.record(Err(&down()));
        }
        tokio::time::advance(MIN_OPEN).await;
        breaker.admit("GET", "/version").expect("the probe");
        breaker.record(Ok(()));
        tokio::time::timeout(Duration::from_secs(1), notify.notified()).await.expect("told once it closed");
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = Breaker::default();
        for _ in 0..THRESHOLD - 1 {
            breaker.record(Err(&down()));
        }
        breaker.record(Ok(()));
        breaker.record(Err(&down()));
        breaker.admit("GET", "/version").expect("one failure after a success keeps it closed");
    }
}
