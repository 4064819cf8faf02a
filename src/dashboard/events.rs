//! The event stream of one Container as Server-Sent Events.
//!
//! With Redis: every entry of the Container's stream after the position the
//! client names (`Last-Event-ID`, or `lastEventId` in the query for a page
//! that opens a new `EventSource` itself), then every new entry as it comes.
//! Each SSE event's `id` is the entry id and its data the event JSON as in
//! Redis. The subscription to the follower is taken before the replay is
//! read, and entries at or before the last one sent are dropped, so the hand
//! over from replay to live loses and repeats nothing; a stream that falls
//! behind the broadcast reads the gap from Redis again.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::Event;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::broadcast;

use super::hub::{Entry, Hub, StreamId};
use super::limits::StreamPermit;

/// How long the browser waits before it reconnects a dropped stream.
pub const RECONNECT_HINT: Duration = Duration::from_secs(1);
/// How long a stream waits before it tries Redis again after a failure.
const RETRY_DELAY: Duration = Duration::from_secs(1);

pub type SseStream = BoxStream<'static, Result<Event, Infallible>>;

/// Where the client left off: the `Last-Event-ID` header, else the
/// `lastEventId` query parameter; `None` (replay everything) when absent.
pub fn resume_position<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .or(query)
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

/// The SSE event of one stream entry.
fn sse_event(id: StreamId, json: &str) -> Event {
    Event::default().id(id.to_string()).data(json)
}

/// The first event of every stream: how soon to reconnect.
pub fn reconnect_hint() -> Event {
    Event::default().retry(RECONNECT_HINT)
}

/// The Redis-backed stream of `key`, after `after`.
pub fn redis_stream(hub: Arc<Hub>, key: String, after: Option<StreamId>, permit: StreamPermit) -> SseStream {
    let follow = RedisFollow { hub, key, last: after, pending: VecDeque::new(), live: None, _permit: permit };
    futures::stream::unfold(follow, |mut follow| async move {
        let event = follow.next_event().await;
        Some((Ok(event), follow))
    })
    .boxed()
}

/// The state of one Redis-backed stream.
struct RedisFollow {
    hub: Arc<Hub>,
    key: String,
    /// The last entry sent (or the client's resume position).
    last: Option<StreamId>,
    /// Entries read but not sent yet.
    pending: VecDeque<Entry>,
    /// The follower's broadcast, once subscribed.
    live: Option<broadcast::Receiver<Entry>>,
    /// Held for as long as the stream is open.
    _permit: StreamPermit,
}

impl RedisFollow {
    async fn next_event(&mut self) -> Event {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                self.last = Some(entry.id);
                if let Some(json) = &entry.json {
                    return sse_event(entry.id, json);
                }
                continue;
            }
            match self.live.as_mut() {
                None => self.start().await,
                Some(live) => match live.recv().await {
                    Ok(entry) => self.take_live(entry),
                    // Fell behind the broadcast: read what was missed again.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                    Err(broadcast::error::RecvError::Closed) => self.live = None,
                },
            }
        }
    }

    /// Subscribes, then replays what is in the stream after `last`.
    async fn start(&mut self) {
        match self.hub.subscribe(&self.key).await {
            Ok(live) => {
                self.live = Some(live);
                self.catch_up().await;
            }
            Err(error) => self.failed(&error).await,
        }
    }

    async fn catch_up(&mut self) {
        match self.hub.replay(&self.key, self.last).await {
            Ok(entries) => {
                for entry in entries {
                    self.take_live(entry);
                }
            }
            Err(error) => {
                // Re-subscribing reads the gap again.
                self.live = None;
                self.failed(&error).await;
            }
        }
    }

    /// Queues an entry unless it was sent (or queued) already.
    fn take_live(&mut self, entry: Entry) {
        let newest = self.pending.back().map(|queued| queued.id).or(self.last);
        if newest.is_none_or(|newest| entry.id > newest) {
            self.pending.push_back(entry);
        }
    }

    async fn failed(&self, error: &anyhow::Error) {
        tracing::warn!(key = %self.key, error = format!("{error:#}"), "reading the event stream failed; retrying");
        tokio::time::sleep(RETRY_DELAY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::limits::StreamLimits;
    use super::*;
    use axum::http::HeaderValue;

    fn entry(seq: u64) -> Entry {
        Entry { id: StreamId::parse(&format!("1700000000000-{seq}")).expect("an id"), json: Some(Arc::from("{}")) }
    }

    #[test]
    fn entries_sent_or_queued_already_are_dropped() {
        let hub = Arc::new(Hub::new("redis://127.0.0.1:1", None).expect("a URL"));
        let permit = StreamLimits::new(1, 1).acquire("alice").expect("a place");
        let mut follow = RedisFollow {
            hub,
            key: "k".into(),
            last: Some(entry(2).id),
            pending: VecDeque::new(),
            live: None,
            _permit: permit,
        };
        for seq in [1, 2, 3, 3, 2, 4] {
            follow.take_live(entry(seq));
        }
        let queued: Vec<StreamId> = follow.pending.iter().map(|e| e.id).collect();
        assert_eq!(queued, vec![entry(3).id, entry(4).id], "after the last sent, each once, in order");
    }

    #[test]
    fn the_resume_position_comes_from_the_header_or_the_query() {
        let mut with_header = HeaderMap::new();
        with_header.insert("last-event-id", HeaderValue::from_static("1700000000000-3"));
        let mut blank = HeaderMap::new();
        blank.insert("last-event-id", HeaderValue::from_static(" "));
        let cases = [
            (HeaderMap::new(), None, None),
            (with_header.clone(), None, Some("1700000000000-3")),
            (HeaderMap::new(), Some("1700000000000-1"), Some("1700000000000-1")),
            (with_header, Some("1700000000000-1"), Some("1700000000000-3")),
            (blank, None, None),
        ];
        for (headers, query, expected) in cases {
            assert_eq!(resume_position(&headers, query), expected, "{headers:?} {query:?}");
        }
    }
}
