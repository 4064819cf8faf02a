use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::error::Error;

/// Capped exponential backoff: `initial`, doubled per attempt up to `max_delay`, for
/// at most `max_elapsed` in total.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Upper bound of a single delay.
    pub max_delay: Duration,
    /// Give up once this much time has passed since the first attempt.
    pub max_elapsed: Duration,
}

impl Default for Backoff {
    /// Long enough to ride out a busy node's config lock (Proxmox itself waits 10 s
    /// for a flock before answering "got timeout").
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay after the `attempt`-th failure (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max_delay)
    }
}

/// The shortest wait of a poll.
pub const FIRST_POLL: Duration = Duration::from_millis(50);

/// The waits of a poll: a fortieth of the time waited so far, at least
/// [`FIRST_POLL`] and at most `longest`. Most Proxmox tasks of a container
/// end within seconds; a fixed 500 ms interval would add a quarter of a
/// second to each of them on average, this adds about 25 ms to a task of
/// two seconds (polled every 50 ms) and about 1 % to longer ones, and a long
/// task costs a request per `longest` as a fixed interval would. (A tenth
/// of the time so far cost a Container of a 2 s create and a 1 s start
/// about 0.2 s more from apply to Ready; `hack/bench`'s P1.)
#[derive(Clone, Copy, Debug)]
pub struct PollInterval {
    started: Instant,
    longest: Duration,
}

impl PollInterval {
    pub fn up_to(longest: Duration) -> Self {
        Self { started: Instant::now(), longest }
    }

    /// The wait before the next look.
    pub fn next_wait(&mut self) -> Duration {
        (self.started.elapsed() / 40).clamp(FIRST_POLL.min(self.longest), self.longest)
    }
}

/// Runs `op` until it succeeds, fails with an error `should_retry` rejects, or the
/// backoff's time is up; then returns the last result.
pub async fn retry<T, F, Fut>(backoff: &Backoff, should_retry: impl Fn(&Error) -> bool, mut op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(err) => {
                let delay = backoff.delay(attempt);
                if !should_retry(&err) || started.elapsed() + delay > backoff.max_elapsed {
                    return Err(err);
                }
                tracing::debug!(error = %err, attempt, ?delay, "retrying Proxmox request");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_elapsed: Duration::from_secs(10),
        }
    }

    fn api(status: u16, message: &str) -> Error {
        super::super::error::test_api_error(status, message, &[])
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_waits_a_fortieth_of_the_time_so_far_within_its_bounds() {
        let mut poll = PollInterval::up_to(Duration::from_millis(500));
        assert_eq!(poll.next_wait(), FIRST_POLL, "at least the first wait");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(poll.next_wait(), FIRST_POLL, "two seconds in, still the first wait");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(poll.next_wait(), Duration::from_millis(200), "a fortieth of eight seconds");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(poll.next_wait(), Duration::from_millis(500), "at most the longest");
        let mut short = PollInterval::up_to(Duration::from_millis(20));
        assert_eq!(short.next_wait(), Duration::from_millis(20), "never above the longest");
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let expected = [100, 200, 400, 800, 1000, 1000];
        for (attempt, ms) in expected.iter().enumerate() {
            assert_eq!(backoff().delay(attempt as u32), Duration::from_millis(*ms), "attempt {attempt}");
        }
        assert_eq!(backoff().delay(u32::MAX), Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_until_success() {
        let calls = AtomicU32::new(0);
        let result = retry(&backoff(), Error::is_transient, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(api(500, "can't lock file '/run/lock/lxc/pve-config-120.lock' - got timeout")),
                1 => Err(api(596, "Connection timed out")),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(result.expect("succeeds"), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_returned_at_once() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry(&backoff(), Error::is_transient, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(api(400, "Parameter verification failed."))
        })
        .await;
        assert!(matches!(result.expect_err("fails"), Error::Api { status: 400, .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_elapsed() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let result: Result<(), _> = retry(&backoff(), Error::is_transient, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(api(503, "Service Unavailable"))
        })
        .await;
        assert!(result.is_err());
        assert!(started.elapsed() <= Duration::from_secs(10));
        assert!(calls.load(Ordering::SeqCst) > 5);
    }
}
