//! Following the Container's Redis event stream: replay from the start,
//! then blocking reads from the last id shown.

use std::time::Duration;

use anyhow::Context as _;
use kube::api::Api;

use super::args::Target;
use super::render::Console;
use super::status::settled_status;
use super::Outcome;
use crate::crd::Container;
use crate::progress::{self, EventType, ProgressEvent};

/// How long one blocking XREAD waits before it is issued again.
const READ_BLOCK: Duration = Duration::from_secs(5);
/// How long to wait before reconnecting after Redis failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// One stream entry: its id and the event, if the entry held a valid one.
struct Entry {
    id: String,
    event: Option<ProgressEvent>,
}

fn entries(ids: &[redis::streams::StreamId]) -> Vec<Entry> {
    ids.iter()
        .map(|entry| Entry {
            id: entry.id.clone(),
            event: entry.get::<String>(progress::EVENTS_STREAM_FIELD).and_then(|json| serde_json::from_str(&json).ok()),
        })
        .collect()
}

/// Where the current run starts in a replayed stream: after the last
/// `complete` or `error` that is not the stream's final event (an earlier
/// run, before a retry or a spec change), and after the last change of the
/// Container's uid (a deleted and re-created Container). A stream that ends
/// with `complete` or `error` thus shows its last run and its result.
pub fn current_run_start(events: &[ProgressEvent]) -> usize {
    let mut start = 0;
    for (index, pair) in events.windows(2).enumerate() {
        let (previous, next) = (&pair[0], &pair[1]);
        let ended = matches!(previous.event_type, EventType::Complete | EventType::Error);
        if ended || previous.container.uid != next.container.uid {
            start = index + 1;
        }
    }
    start
}

/// What the replay of a stream shows.
pub(crate) struct Replay {
    /// The id to read on from: the stream's last entry, or `0-0`.
    pub(crate) last_id: String,
    /// The valid events of the current run, in stream order.
    pub(crate) shown: Vec<ProgressEvent>,
    /// The result, when the stream's last valid event already ends the run.
    pub(crate) outcome: Option<Outcome>,
}

/// The replay of the entries an `XRANGE - +` returned. Entries without a
/// valid event are skipped, but still move the id to read on from.
pub(crate) fn replay(ids: &[redis::streams::StreamId]) -> Replay {
    let entries = entries(ids);
    let last_id = entries.last().map_or_else(|| "0-0".to_owned(), |e| e.id.clone());
    let mut events: Vec<ProgressEvent> = entries.into_iter().filter_map(|e| e.event).collect();
    let outcome = events.last().and_then(event_outcome);
    let shown = events.split_off(current_run_start(&events));
    Replay { last_id, shown, outcome }
}

/// The result an event announces, if it ends the run.
fn event_outcome(event: &ProgressEvent) -> Option<Outcome> {
    match event.event_type {
        EventType::Complete => Some(Outcome::Ready),
        EventType::Error => Some(Outcome::Failed),
        EventType::Step | EventType::Log => None,
    }
}

async fn connect(client: &redis::Client) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    // Blocking reads outlive the default response timeout; they are bounded
    // by the BLOCK argument and the timeout around each call instead.
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(None);
    client.get_multiplexed_async_connection_with_config(&config).await
}

pub(super) async fn follow_redis(
    url: &str,
    ca_file: Option<&std::path::Path>,
    target: &Target,
    console: &mut Console,
) -> anyhow::Result<Outcome> {
    // The URL may hold a password: it is never echoed.
    let client = crate::redis_client::open(url, ca_file)?;
    let key = progress::events_stream(&target.namespace, &target.name);
    let mut connection = connect(&client).await.context("connecting to Redis")?;

    let range: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .context("reading the event stream")?;
    let Replay { mut last_id, shown, outcome } = replay(&range.ids);
    if shown.is_empty() {
        console.line(&format!("waiting for progress events of {target} ..."));
    }
    for event in &shown {
        console.event(event);
    }
    if let Some(outcome) = outcome {
        return Ok(outcome);
    }

    // Consulted when the stream stays quiet: a run whose events never reached
    // Redis (an outage, or a controller without Redis) still ends the watch.
    let statuses = match kube::Client::try_default().await {
        Ok(client) => Some(Api::<Container>::namespaced(client, &target.namespace)),
        Err(_) => None,
    };
    loop {
        let entries = match read_after(&mut connection, &key, &last_id, Some(READ_BLOCK)).await {
            Ok(entries) => entries,
            Err(reason) => {
                console.warning(&format!("Redis: {reason}; reconnecting"));
                tokio::time::sleep(RECONNECT_DELAY).await;
                if let Ok(fresh) = connect(&client).await {
                    connection = fresh;
                }
                continue;
            }
        };
        if entries.is_empty() {
            let Some(view) = settled_status(statuses.as_ref(), &target.name).await else {
                continue;
            };
            // Events that arrived since the last read still come first.
            let late = read_after(&mut connection, &key, &last_id, None).await.unwrap_or_default();
            for event in late.into_iter().filter_map(|e| e.event) {
                console.event(&event);
                if let Some(outcome) = event_outcome(&event) {
                    return Ok(outcome);
                }
            }
            console.status(&view);
            return Ok(view.outcome.unwrap_or(Outcome::Failed));
        }
        for entry in entries {
            last_id = entry.id;
            let Some(event) = entry.event else { continue };
            console.event(&event);
            if let Some(outcome) = event_outcome(&event) {
                return Ok(outcome);
            }
        }
    }
}

/// The stream entries after `last_id`, waiting up to `block` for the first.
async fn read_after(
    connection: &mut redis::aio::MultiplexedConnection,
    key: &str,
    last_id: &str,
    block: Option<Duration>,
) -> Result<Vec<Entry>, String> {
    let mut command = redis::cmd("XREAD");
    if let Some(block) = block {
        command.arg("BLOCK").arg(block.as_millis() as u64);
    }
    command.arg("COUNT").arg(100).arg("STREAMS").arg(key).arg(last_id);
    let read = command.query_async::<Option<redis::streams::StreamReadReply>>(connection);
    match tokio::time::timeout(block.unwrap_or_default() + READ_BLOCK, read).await {
        Ok(Ok(reply)) => {
            Ok(reply.map(|r| r.keys).unwrap_or_default().iter().flat_map(|stream| entries(&stream.ids)).collect())
        }
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no answer".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::ContainerRef;
    use crate::watch::tests::web;

    #[test]
    fn replay_starts_at_the_current_run() {
        use EventType::*;
        let other = ContainerRef::new("default", "web-1", "uid-0");
        let event = |event_type: EventType, container: &ContainerRef| ProgressEvent {
            event_type,
            ..ProgressEvent::step(container, "creating", 5, "")
        };
        let cases: Vec<(&str, Vec<ProgressEvent>, usize)> = vec![
            ("empty", vec![], 0),
            ("one run in flight", vec![event(Step, &web()), event(Log, &web())], 0),
            ("one run done", vec![event(Step, &web()), event(Complete, &web())], 0),
            ("one run failed", vec![event(Step, &web()), event(Error, &web())], 0),
            (
                "a retry in flight",
                vec![event(Step, &web()), event(Error, &web()), event(Step, &web()), event(Log, &web())],
                2,
            ),
            (
                "a retry done",
                vec![event(Step, &web()), event(Error, &web()), event(Step, &web()), event(Complete, &web())],
                2,
            ),
            (
                "re-created after a deletion mid-run",
                vec![event(Step, &other), event(Log, &other), event(Step, &web())],
                2,
            ),
        ];
        for (case, events, expected) in cases {
            assert_eq!(current_run_start(&events), expected, "{case}");
        }
    }
}
