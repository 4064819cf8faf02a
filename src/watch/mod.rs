//! `infrahaus-operator watch <namespace>/<name>`: follows one Container's
//! progress in a terminal.
//!
//! With a Redis URL it replays the Container's event stream (XRANGE from the
//! start), then follows it with blocking XREAD from the last id it showed, so
//! no event is missed or shown twice. When the stream stays quiet and
//! Kubernetes is reachable, the Container's status is checked, so a run whose
//! events never reached Redis still ends the watch. Without Redis it follows
//! the Container's status through the Kubernetes API instead.
//!
//! Exit codes: 0 when the Container is Ready, 1 when it is in Error, 2 on
//! `--timeout`, 3 when watching itself failed (Redis or Kubernetes unreachable,
//! the Container deleted).

mod args;
pub(crate) mod render;
pub(crate) mod status;
pub(crate) mod stream;

use std::io::IsTerminal;

pub use args::WatchArgs;
use render::{style_for, Console};

/// How a watch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    Failed,
    TimedOut,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Ready => 0,
            Outcome::Failed => 1,
            Outcome::TimedOut => 2,
        }
    }
}

/// Exit code when watching itself failed.
const EXIT_WATCH_FAILED: i32 = 3;

/// Runs the command and returns the process exit code.
pub fn main(args: WatchArgs) -> i32 {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return EXIT_WATCH_FAILED;
        }
    };
    let mut console = Console::new(style_for(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    ));
    let outcome = runtime.block_on(watch(&args, &mut console));
    console.finish();
    match outcome {
        Ok(outcome) => {
            if outcome == Outcome::TimedOut {
                eprintln!("error: {} did not finish within {:?}", args.container, args.timeout.unwrap_or_default());
            }
            outcome.exit_code()
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            EXIT_WATCH_FAILED
        }
    }
}

async fn watch(args: &WatchArgs, console: &mut Console) -> anyhow::Result<Outcome> {
    let follow = async {
        match args.redis_url.as_deref().filter(|url| !url.is_empty()) {
            Some(url) => stream::follow_redis(url, args.redis_ca_file.as_deref(), &args.container, console).await,
            None => status::follow_status(&args.container, console).await,
        }
    };
    match args.timeout {
        Some(limit) => Ok(tokio::time::timeout(limit, follow).await.unwrap_or(Ok(Outcome::TimedOut))?),
        None => follow.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::ContainerRef;

    /// The Container the watch tests' events are about.
    pub(super) fn web() -> ContainerRef {
        ContainerRef::new("default", "web-1", "uid-1")
    }

    #[test]
    fn exit_codes_tell_ready_from_error_and_timeout() {
        assert_eq!(Outcome::Ready.exit_code(), 0);
        assert_eq!(Outcome::Failed.exit_code(), 1);
        assert_eq!(Outcome::TimedOut.exit_code(), 2);
        assert_eq!(EXIT_WATCH_FAILED, 3);
    }
}
