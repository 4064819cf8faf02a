//! Progress events mirrored to Redis: Pub/Sub for live watchers and a capped
//! stream for late subscribers.
//!
//! Redis is optional and never on the critical path: stages hand events to a
//! bounded queue ([`QueuedPublisher`]) and one task publishes them, so a slow
//! or hung Redis never holds a stage (nor the SSH channel a script's output
//! arrives on). That task waits at most a short timeout per batch, and after
//! a failure skips publishing for a growing back-off period instead of
//! waiting on a dead server for every event.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// The stream entry field holding the event JSON.
pub const EVENTS_STREAM_FIELD: &str = "event";

/// Approximate length cap of each container's replay stream.
pub const EVENTS_STREAM_MAXLEN: usize = 1000;

/// The Pub/Sub channel of one container's progress events.
pub fn progress_channel(namespace: &str, name: &str) -> String {
    format!("container:{namespace}/{name}:progress")
}

/// The Redis stream replaying one container's progress events.
pub fn events_stream(namespace: &str, name: &str) -> String {
    format!("container:{namespace}/{name}:events")
}

/// Which container an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl ContainerRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, uid: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into(), uid: uid.into() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Step,
    Log,
    Complete,
    Error,
}

/// The output stream a `log` line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One progress event, serialised as the JSON object dashboards read from
/// Pub/Sub and the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressEvent {
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The stage: creating, starting, deploying, syncing or finalizing.
    pub step: String,
    pub percent: u8,
    pub message: String,
    #[serde(serialize_with = "serialize_millis")]
    pub timestamp: DateTime<Utc>,
    pub container: ContainerRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<LogStream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

/// Timestamps are RFC 3339 in UTC with milliseconds and a `Z`, as
/// JavaScript's `toISOString` prints them, so dashboards parse them as is.
fn serialize_millis<S: Serializer>(timestamp: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&timestamp.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// The stage a `complete` event is reported under.
const FINAL_STEP: &str = "finalizing";

impl ProgressEvent {
    fn new(
        event_type: EventType,
        container: &ContainerRef,
        step: impl Into<String>,
        percent: u8,
        message: impl Into<String>,
    ) -> Self {
        Self {
            event_type,
            step: step.into(),
            percent: percent.min(100),
            message: message.into(),
            timestamp: Utc::now(),
            container: container.clone(),
            vmid: None,
            stream: None,
            script: None,
        }
    }

    /// A stage reached `percent`.
    pub fn step(container: &ContainerRef, step: impl Into<String>, percent: u8, message: impl Into<String>) -> Self {
        Self::new(EventType::Step, container, step, percent, message)
    }

    /// One output line of `script`, published at the stage's current `percent`.
    pub fn log(
        container: &ContainerRef,
        step: impl Into<String>,
        percent: u8,
        stream: LogStream,
        script: impl Into<String>,
        line: impl Into<String>,
    ) -> Self {
        let mut event = Self::new(EventType::Log, container, step, percent, line);
        event.stream = Some(stream);
        event.script = Some(script.into());
        event
    }

    /// The container is Ready (percent 100).
    pub fn complete(container: &ContainerRef, message: impl Into<String>) -> Self {
        Self::new(EventType::Complete, container, FINAL_STEP, 100, message)
    }

    /// `step` failed; `percent` is the last one reported, so that percent
    /// never decreases within a generation.
    pub fn error(container: &ContainerRef, step: impl Into<String>, percent: u8, message: impl Into<String>) -> Self {
        Self::new(EventType::Error, container, step, percent, message)
    }

    pub fn with_vmid(mut self, vmid: Option<i64>) -> Self {
        self.vmid = vmid;
        self
    }

    pub fn channel(&self) -> String {
        progress_channel(&self.container.namespace, &self.container.name)
    }

    pub fn stream_key(&self) -> String {
        events_stream(&self.container.namespace, &self.container.name)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings, integers and enums always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Where progress events go. Publishing never fails from the caller's point
/// of view; a sink reports its own trouble in logs and metrics.
#[async_trait]
pub trait ProgressSink: Send + Sync {
    async fn publish(&self, event: &ProgressEvent);

    /// Publishes several events in order; sinks that can send them in one
    /// round trip do.
    async fn publish_all(&self, events: &[ProgressEvent]) {
        for event in events {
            self.publish(event).await;
        }
    }

    /// Waits until the events handed over so far are published (or dropped),
    /// for at most `timeout`.
    async fn flush(&self, _timeout: Duration) {}

    /// Whether the sink is keeping up: its last publish went through. A
    /// queue in front of it waits for room only while it is.
    fn keeps_up(&self) -> bool {
        true
    }
}

/// The sink used without a Redis URL.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopPublisher;

#[async_trait]
impl ProgressSink for NoopPublisher {
    async fn publish(&self, _event: &ProgressEvent) {}
}

#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error(transparent)]
    Redis(#[from] crate::redis_client::RedisUrlError),
}

/// Timeouts and back-off of [`RedisPublisher`].
#[derive(Clone, Copy, Debug)]
pub struct PublisherSettings {
    /// Upper bound on one publish (one batch), connecting included.
    pub call_timeout: Duration,
    /// How long publishing is skipped after the first failure.
    pub min_backoff: Duration,
    /// The longest skip; the skip doubles on each failure up to this.
    pub max_backoff: Duration,
    /// At most one warning per interval while Redis keeps failing.
    pub warn_interval: Duration,
}

impl Default for PublisherSettings {
    fn default() -> Self {
        Self {
            // Off the stages' path (behind the queue), so a slow Redis may
            // take its time; a dead one costs this once per back-off period.
            call_timeout: Duration::from_secs(2),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            warn_interval: Duration::from_secs(30),
        }
    }
}

struct State {
    connection: Option<redis::aio::MultiplexedConnection>,
    /// While set and in the future, events are dropped without trying.
    skip_until: Option<Instant>,
    backoff: Duration,
    last_warning: Option<Instant>,
    dropped_since_warning: u64,
}

/// Publishes each event with PUBLISH and XADD, a batch of events in one
/// pipeline.
///
/// The connection is opened on first use and again after any failure.
/// Ordering: one multiplexed connection delivers commands in the order they
/// are sent, and the caller awaits each publish before the next one, so
/// events arrive in order.
pub struct RedisPublisher {
    client: redis::Client,
    /// `host:port` only, for log messages.
    address: String,
    settings: PublisherSettings,
    metrics: Metrics,
    state: Mutex<State>,
    /// Set by a failed publish, cleared by one that went through.
    failing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for RedisPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPublisher").field("address", &self.address).finish_non_exhaustive()
    }
}

impl RedisPublisher {
    /// Validates `url`; no connection is made until the first publish.
    pub fn new(
        url: &str,
        ca_file: Option<&std::path::Path>,
        metrics: Metrics,
        settings: PublisherSettings,
    ) -> Result<Self, ProgressError> {
        let client = crate::redis_client::open(url, ca_file)?;
        Ok(Self {
            client,
            address: redacted_address(url),
            settings,
            metrics,
            failing: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(State {
                connection: None,
                skip_until: None,
                backoff: settings.min_backoff,
                last_warning: None,
                dropped_since_warning: 0,
            }),
        })
    }

    /// The connection to use, opening one if needed; `None` while skipping.
    async fn connection(&self) -> Result<Option<redis::aio::MultiplexedConnection>, redis::RedisError> {
        let mut state = self.state.lock().await;
        if state.skip_until.is_some_and(|until| Instant::now() < until) {
            return Ok(None);
        }
        if let Some(connection) = &state.connection {
            return Ok(Some(connection.clone()));
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.call_timeout))
            .set_response_timeout(Some(self.settings.call_timeout));
        let connection = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        state.connection = Some(connection.clone());
        Ok(Some(connection))
    }

    async fn try_publish(&self, events: &[ProgressEvent]) -> Result<Published, PublishFailure> {
        let Some(mut connection) = self.connection().await.map_err(PublishFailure::Redis)? else {
            return Ok(Published::Skipped);
        };
        let mut pipe = redis::pipe();
        for event in events {
            let json = event.to_json();
            pipe.cmd("PUBLISH")
                .arg(event.channel())
                .arg(&json)
                .ignore()
                .cmd("XADD")
                .arg(event.stream_key())
                .arg("MAXLEN")
                .arg("~")
                .arg(EVENTS_STREAM_MAXLEN)
                .arg("*")
                .arg(EVENTS_STREAM_FIELD)
                .arg(&json)
                .ignore();
        }
        pipe.exec_async(&mut connection).await.map_err(PublishFailure::Redis)?;
        Ok(Published::Sent)
    }

    async fn record_success(&self) {
        self.failing.store(false, std::sync::atomic::Ordering::Relaxed);
        let mut state = self.state.lock().await;
        if state.skip_until.take().is_some() || state.dropped_since_warning > 0 {
            tracing::info!(
                redis = %self.address,
                dropped = state.dropped_since_warning,
                "publishing progress to Redis again"
            );
        }
        state.backoff = self.settings.min_backoff;
        state.dropped_since_warning = 0;
        state.last_warning = None;
    }

    async fn record_drop(&self, count: usize, failure: Option<PublishFailure>) {
        self.metrics.redis_publish_failures_add(count as u64);
        let mut state = self.state.lock().await;
        state.dropped_since_warning += count as u64;
        let now = Instant::now();
        if let Some(failure) = failure {
            self.failing.store(true, std::sync::atomic::Ordering::Relaxed);
            // A fresh connection is opened after the skip period: the old
            // one may be broken or hold a late reply to the timed-out call.
            state.connection = None;
            state.skip_until = Some(now + state.backoff);
            let skip = state.backoff;
            state.backoff = (state.backoff * 2).min(self.settings.max_backoff);
            let warn_due =
                state.last_warning.is_none_or(|last| now.duration_since(last) >= self.settings.warn_interval);
            if warn_due {
                tracing::warn!(
                    redis = %self.address,
                    error = %failure,
                    dropped = state.dropped_since_warning,
                    skip_seconds = skip.as_secs_f64(),
                    "progress events are not reaching Redis; stages continue without them"
                );
                state.last_warning = Some(now);
                state.dropped_since_warning = 0;
            }
        }
    }
}

enum Published {
    Sent,
    Skipped,
}

#[derive(Debug, thiserror::Error)]
enum PublishFailure {
    #[error("{0}")]
    Redis(#[source] redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

#[async_trait]
impl ProgressSink for RedisPublisher {
    async fn publish(&self, event: &ProgressEvent) {
        self.publish_all(std::slice::from_ref(event)).await;
    }

    fn keeps_up(&self) -> bool {
        !self.failing.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn publish_all(&self, events: &[ProgressEvent]) {
        if events.is_empty() {
            return;
        }
        let timeout = self.settings.call_timeout;
        let outcome = tokio::time::timeout(timeout, self.try_publish(events))
            .await
            .unwrap_or(Err(PublishFailure::Timeout(timeout)));
        match outcome {
            Ok(Published::Sent) => self.record_success().await,
            Ok(Published::Skipped) => self.record_drop(events.len(), None).await,
            Err(failure) => self.record_drop(events.len(), Some(failure)).await,
        }
    }
}

/// Events waiting for the publisher task.
pub const QUEUE_CAPACITY: usize = 8192;

/// How long an event waits at most for room in a full queue while Redis
/// keeps up; then the oldest queued output line makes room.
pub const FULL_WAIT: Duration = Duration::from_secs(2);

/// Events published in one round trip at most.
const BATCH: usize = 512;

enum Queued {
    Event(Box<ProgressEvent>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Output lines of one container left out at the full queue, reported where
/// they were by one `log` event.
struct Gap {
    last: ProgressEvent,
    lines: u64,
}

impl Gap {
    fn event(&self) -> ProgressEvent {
        let last = &self.last;
        let lines = self.lines;
        let noun = if lines == 1 { "line" } else { "lines" };
        ProgressEvent::log(
            &last.container,
            last.step.clone(),
            last.percent,
            last.stream.unwrap_or(LogStream::Stdout),
            last.script.clone().unwrap_or_default(),
            format!("[{lines} {noun} of output left out: the progress publisher could not keep up]"),
        )
        .with_vmid(last.vmid)
    }
}

#[derive(Default)]
struct Queue {
    items: std::collections::VecDeque<Queued>,
    /// Events in `items` (flush markers are not counted).
    events: usize,
    /// By stream key.
    gaps: std::collections::HashMap<String, Gap>,
    closed: bool,
}

impl Queue {
    /// Puts `event` at the back; when `capacity` events are queued, the
    /// oldest output line goes (or, with none queued, the oldest event).
    /// Returns whether an event was dropped.
    fn push(&mut self, event: ProgressEvent, capacity: usize) -> bool {
        let mut dropped = false;
        if self.events >= capacity {
            let is_event = |item: &Queued| matches!(item, Queued::Event(_));
            let is_log = |item: &Queued| matches!(item, Queued::Event(e) if e.event_type == EventType::Log);
            let oldest = self.items.iter().position(is_log).or_else(|| self.items.iter().position(is_event));
            if let Some(Queued::Event(old)) = oldest.and_then(|index| self.items.remove(index)) {
                self.events -= 1;
                self.left_out(*old);
                dropped = true;
            }
        }
        self.items.push_back(Queued::Event(Box::new(event)));
        self.events += 1;
        dropped
    }

    fn left_out(&mut self, event: ProgressEvent) {
        if event.event_type != EventType::Log {
            return;
        }
        let gap = self.gaps.entry(event.stream_key()).or_insert_with(|| Gap { last: event.clone(), lines: 0 });
        gap.lines += 1;
        gap.last = event;
    }

    /// The next batch: up to [`BATCH`] events from the front, ending at a
    /// flush marker, whose sender is returned to be answered once the batch
    /// is out. Each gap is reported before the first output line of its
    /// container in the batch (the lines left out were older than every
    /// line still queued), or at the end.
    fn take(&mut self) -> (Vec<ProgressEvent>, Option<tokio::sync::oneshot::Sender<()>>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut flush = None;
        while batch.len() < BATCH {
            match self.items.pop_front() {
                Some(Queued::Event(event)) => {
                    self.events -= 1;
                    batch.push(*event);
                }
                Some(Queued::Flush(done)) => {
                    flush = Some(done);
                    break;
                }
                None => break,
            }
        }
        for (key, gap) in self.gaps.drain() {
            let at = batch
                .iter()
                .position(|e| e.event_type == EventType::Log && e.stream_key() == key)
                .unwrap_or(batch.len());
            batch.insert(at, gap.event());
        }
        (batch, flush)
    }
}

struct Shared {
    queue: std::sync::Mutex<Queue>,
    capacity: usize,
    /// Told when events were queued.
    ready: tokio::sync::Notify,
    /// Told when the publisher task took events from the queue.
    room: tokio::sync::Notify,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The lock is never held across a panic point that could poison it;
        // a poisoned queue is still a consistent queue.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A sink in front of another: `publish` puts the event in a bounded queue,
/// and one task publishes the queue in order, in batches, so Redis is never
/// waited on for an event while there is room.
///
/// A full queue means a script prints faster than Redis takes it. While
/// Redis keeps up (its last publish went through), `publish` waits for room,
/// at most [`FULL_WAIT`]: the SSH channel is then read more slowly and the
/// script is held back by its own output, so nothing is lost. While Redis
/// fails, or after that wait, the oldest queued output line makes room
/// (counted in `infrahaus_progress_events_dropped_total`): a flood keeps its
/// newest lines, which tell how a script ended, step, complete and error
/// events are not given up for output, and a `log` event says how many lines
/// were left out where they were. One queue and one task keep every
/// container's events in the order they were handed over.
pub struct QueuedPublisher {
    shared: Arc<Shared>,
    inner: Arc<dyn ProgressSink>,
    metrics: Metrics,
}

impl QueuedPublisher {
    /// Starts the publisher task on the current runtime; it ends when the
    /// queue's handle is dropped, after publishing what is queued.
    pub fn spawn(inner: Arc<dyn ProgressSink>, capacity: usize, metrics: Metrics) -> Self {
        let shared = Arc::new(Shared {
            queue: Default::default(),
            capacity: capacity.max(1),
            ready: tokio::sync::Notify::new(),
            room: tokio::sync::Notify::new(),
        });
        let (task, publisher) = (shared.clone(), inner.clone());
        tokio::spawn(async move {
            loop {
                let (batch, flush, closed) = {
                    let mut queue = task.queue();
                    let (batch, flush) = queue.take();
                    (batch, flush, queue.closed)
                };
                task.room.notify_waiters();
                if batch.is_empty() && flush.is_none() {
                    if closed {
                        break;
                    }
                    task.ready.notified().await;
                    continue;
                }
                publisher.publish_all(&batch).await;
                if let Some(done) = flush {
                    let _ = done.send(());
                }
            }
        });
        Self { shared, inner, metrics }
    }
}

impl Drop for QueuedPublisher {
    fn drop(&mut self) {
        self.shared.queue().closed = true;
        self.shared.ready.notify_one();
    }
}

#[async_trait]
impl ProgressSink for QueuedPublisher {
    async fn publish(&self, event: &ProgressEvent) {
        let deadline = tokio::time::Instant::now() + FULL_WAIT;
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut queue = self.shared.queue();
                let full = queue.events >= self.shared.capacity;
                if !full || !self.inner.keeps_up() || tokio::time::Instant::now() >= deadline {
                    if queue.push(event.clone(), self.shared.capacity) {
                        self.metrics.progress_event_dropped();
                    }
                    break;
                }
            }
            let _ = tokio::time::timeout_at(deadline, room).await;
        }
        self.shared.ready.notify_one();
    }

    async fn flush(&self, timeout: Duration) {
        let (done, flushed) = tokio::sync::oneshot::channel();
        self.shared.queue().items.push_back(Queued::Flush(done));
        self.shared.ready.notify_one();
        let _ = tokio::time::timeout(timeout, flushed).await;
    }
}

/// The sink for an optional Redis URL: Redis when given, otherwise nothing.
pub fn progress_sink(
    redis_url: Option<&str>,
    ca_file: Option<&std::path::Path>,
    metrics: Metrics,
) -> Result<Arc<dyn ProgressSink>, ProgressError> {
    match redis_url.filter(|url| !url.is_empty()) {
        Some(url) => {
            let redis = Arc::new(RedisPublisher::new(url, ca_file, metrics.clone(), PublisherSettings::default())?);
            Ok(Arc::new(QueuedPublisher::spawn(redis, QUEUE_CAPACITY, metrics)))
        }
        None => Ok(Arc::new(NoopPublisher)),
    }
}

/// `host:port` of a Redis URL, so that logs never carry its credentials.
fn redacted_address(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => parsed.scheme().to_owned(),
        },
        Err(_) => "redis".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn web_1() -> ContainerRef {
        ContainerRef::new("default", "web-1", "6f1c")
    }

    fn at_ten() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).single().expect("a valid date")
    }

    #[test]
    fn channel_and_stream_names() {
        assert_eq!(progress_channel("default", "web-1"), "container:default/web-1:progress");
        assert_eq!(events_stream("team-a", "db"), "container:team-a/db:events");
        let event = ProgressEvent::step(&web_1(), "creating", 5, "");
        assert_eq!(event.channel(), "container:default/web-1:progress");
        assert_eq!(event.stream_key(), "container:default/web-1:events");
    }

    #[test]
    fn events_serialise_to_the_published_shape() {
        let container = json!({"namespace": "default", "name": "web-1", "uid": "6f1c"});
        let cases = [
            (
                ProgressEvent::step(&web_1(), "creating", 5, "Creating LXC container...").with_vmid(Some(120)),
                json!({"type": "step", "step": "creating", "percent": 5,
                       "message": "Creating LXC container...", "timestamp": "2026-11-22T10:00:00.000Z",
                       "container": container, "vmid": 120}),
            ),
            (
                ProgressEvent::step(&web_1(), "creating", 5, "Allocating a vmid"),
                json!({"type": "step", "step": "creating", "percent": 5, "message": "Allocating a vmid",
                       "timestamp": "2026-11-22T10:00:00.000Z", "container": container}),
            ),
            (
                ProgressEvent::log(&web_1(), "syncing", 70, LogStream::Stderr, "10-setup.sh", "apt: done")
                    .with_vmid(Some(120)),
                json!({"type": "log", "step": "syncing", "percent": 70, "message": "apt: done",
                       "timestamp": "2026-11-22T10:00:00.000Z", "container": container, "vmid": 120,
                       "stream": "stderr", "script": "10-setup.sh"}),
            ),
            (
                ProgressEvent::complete(&web_1(), "Container ready").with_vmid(Some(120)),
                json!({"type": "complete", "step": "finalizing", "percent": 100, "message": "Container ready",
                       "timestamp": "2026-11-22T10:00:00.000Z", "container": container, "vmid": 120}),
            ),
            (
                ProgressEvent::error(&web_1(), "syncing", 77, "script 20-app.sh exited 3"),
                json!({"type": "error", "step": "syncing", "percent": 77,
                       "message": "script 20-app.sh exited 3", "timestamp": "2026-11-22T10:00:00.000Z",
                       "container": container}),
            ),
        ];
        for (event, expected) in cases {
            let json: serde_json::Value =
                serde_json::from_str(&ProgressEvent { timestamp: at_ten(), ..event }.to_json()).expect("valid JSON");
            assert_eq!(json, expected);
        }
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let timestamp = at_ten() + chrono::Duration::microseconds(123_456);
        let event = ProgressEvent { timestamp, ..ProgressEvent::step(&web_1(), "starting", 25, "") };
        assert!(event.to_json().contains(r#""timestamp":"2026-11-22T10:00:00.123Z""#), "{}", event.to_json());
    }

    #[test]
    fn events_read_back_unchanged() {
        let event = ProgressEvent {
            timestamp: at_ten(),
            ..ProgressEvent::log(&web_1(), "syncing", 80, LogStream::Stdout, "a.sh", "line").with_vmid(Some(7))
        };
        let read: ProgressEvent = serde_json::from_str(&event.to_json()).expect("parses");
        assert_eq!(read, event);
    }

    #[test]
    fn percent_is_capped_at_100() {
        assert_eq!(ProgressEvent::step(&web_1(), "finalizing", 140, "").percent, 100);
    }

    #[test]
    fn addresses_in_logs_carry_no_credentials() {
        let cases = [
            ("redis://127.0.0.1:6379", "127.0.0.1:6379"),
            ("redis://:s3cret@127.0.0.1:6380/0", "127.0.0.1:6380"),
            ("redis://user:s3cret@cache.local", "cache.local"),
            ("unix:///run/redis.sock", "unix"),
            ("not a url s3cret", "redis"),
        ];
        for (url, expected) in cases {
            assert_eq!(redacted_address(url), expected, "{url}");
        }
    }

    #[test]
    fn invalid_urls_are_rejected_without_echoing_them() {
        let error = RedisPublisher::new("http://:s3cret@x", None, Metrics::new(), PublisherSettings::default())
            .expect_err("not a redis URL");
        assert!(!error.to_string().contains("s3cret"));
    }

    #[tokio::test]
    async fn without_a_url_events_go_nowhere() {
        let sink = progress_sink(None, None, Metrics::new()).expect("no URL is fine");
        sink.publish(&ProgressEvent::step(&web_1(), "creating", 5, "")).await;
        let sink = progress_sink(Some(""), None, Metrics::new()).expect("an empty URL is fine");
        sink.publish(&ProgressEvent::step(&web_1(), "creating", 5, "")).await;
    }

    /// Records what reaches it; holds every batch until the gate opens.
    /// `keeps_up` is what it says of itself (a failing Redis says false).
    struct Gated {
        gate: tokio::sync::Semaphore,
        picked_up: tokio::sync::Notify,
        seen: std::sync::Mutex<Vec<String>>,
        keeps_up: bool,
    }

    #[async_trait]
    impl ProgressSink for Gated {
        async fn publish(&self, event: &ProgressEvent) {
            self.publish_all(std::slice::from_ref(event)).await;
        }

        async fn publish_all(&self, events: &[ProgressEvent]) {
            self.picked_up.notify_one();
            let _open = self.gate.acquire().await;
            self.seen.lock().expect("lock").extend(events.iter().map(|e| e.message.clone()));
        }

        fn keeps_up(&self) -> bool {
            self.keeps_up
        }
    }

    /// A sink that is failing: a full queue in front of it drops at once.
    fn gated() -> Arc<Gated> {
        gated_keeping_up(false)
    }

    fn gated_keeping_up(keeps_up: bool) -> Arc<Gated> {
        Arc::new(Gated {
            gate: tokio::sync::Semaphore::new(0),
            picked_up: tokio::sync::Notify::new(),
            seen: Default::default(),
            keeps_up,
        })
    }

    fn line(n: usize) -> ProgressEvent {
        ProgressEvent::log(&web_1(), "syncing", 65, LogStream::Stdout, "10-a.sh", n.to_string())
    }

    #[tokio::test]
    async fn a_stuck_sink_holds_no_caller_and_a_full_queue_keeps_the_newest_lines() {
        let inner = gated();
        let metrics = Metrics::new();
        let queue = QueuedPublisher::spawn(inner.clone(), 10, metrics.clone());

        queue.publish(&line(0)).await;
        inner.picked_up.notified().await;
        // The publisher task is stuck on line 0: ten more fit, and each
        // line after them pushes out the oldest one queued.
        for n in 1..=100 {
            queue.publish(&line(n)).await;
        }
        assert_eq!(metrics.progress_events_dropped(), 90);

        inner.gate.add_permits(1000);
        queue.flush(Duration::from_secs(10)).await;
        let seen = inner.seen.lock().expect("lock").clone();
        let mut expected = vec!["0".to_string()];
        expected.push("[90 lines of output left out: the progress publisher could not keep up]".into());
        expected.extend((91..=100).map(|n| n.to_string()));
        assert_eq!(seen, expected, "the newest lines arrive in order, after a note of the gap");
    }

    #[tokio::test]
    async fn a_full_queue_gives_up_output_lines_before_steps() {
        let inner = gated();
        let metrics = Metrics::new();
        let queue = QueuedPublisher::spawn(inner.clone(), 4, metrics.clone());
        let step = |message: &str| ProgressEvent::step(&web_1(), "syncing", 70, message);

        queue.publish(&step("held")).await;
        inner.picked_up.notified().await;
        queue.publish(&step("a")).await;
        for n in 1..=5 {
            queue.publish(&line(n)).await;
        }
        queue.publish(&step("b")).await;
        queue.publish(&ProgressEvent::complete(&web_1(), "done")).await;
        assert_eq!(metrics.progress_events_dropped(), 4);

        inner.gate.add_permits(1000);
        queue.flush(Duration::from_secs(10)).await;
        let seen = inner.seen.lock().expect("lock").clone();
        assert_eq!(
            seen,
            ["held", "a", "[4 lines of output left out: the progress publisher could not keep up]", "5", "b", "done"]
        );
    }

    #[tokio::test]
    async fn while_the_sink_keeps_up_a_full_queue_holds_the_caller_and_loses_nothing() {
        let inner = gated_keeping_up(true);
        let metrics = Metrics::new();
        let queue = Arc::new(QueuedPublisher::spawn(inner.clone(), 4, metrics.clone()));
        queue.publish(&line(0)).await;
        inner.picked_up.notified().await;
        for n in 1..=4 {
            queue.publish(&line(n)).await;
        }
        // The queue is full: the next line waits for room.
        let caller = queue.clone();
        let fifth = tokio::spawn(async move { caller.publish(&line(5)).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!fifth.is_finished(), "the caller waits for room while the sink keeps up");
        inner.gate.add_permits(1000);
        fifth.await.expect("published");
        queue.flush(Duration::from_secs(10)).await;
        assert_eq!(metrics.progress_events_dropped(), 0);
        let seen = inner.seen.lock().expect("lock").clone();
        assert_eq!(seen, (0..=5).map(|n| n.to_string()).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sink_that_never_takes_the_next_batch_holds_a_caller_at_most_the_full_wait() {
        let inner = gated_keeping_up(true);
        let metrics = Metrics::new();
        let queue = QueuedPublisher::spawn(inner.clone(), 2, metrics.clone());
        queue.publish(&line(0)).await;
        inner.picked_up.notified().await;
        queue.publish(&line(1)).await;
        queue.publish(&line(2)).await;
        let started = tokio::time::Instant::now();
        queue.publish(&line(3)).await;
        assert_eq!(started.elapsed(), FULL_WAIT, "waited the full wait, then made room");
        assert_eq!(metrics.progress_events_dropped(), 1);
    }

    #[tokio::test]
    async fn a_dropped_queue_publishes_what_it_held() {
        let inner = gated();
        inner.gate.add_permits(1000);
        let queue = QueuedPublisher::spawn(inner.clone(), 100, Metrics::new());
        for n in 0..3 {
            queue.publish(&line(n)).await;
        }
        drop(queue);
        for _ in 0..100 {
            if inner.seen.lock().expect("lock").len() == 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the queue was not published: {:?}", inner.seen.lock().expect("lock"));
    }
}
