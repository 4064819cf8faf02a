//! The Redis side: one follower per followed Container, fanned out to every
//! event stream of that Container.
//!
//! A follower owns one Redis connection and loops on a blocking XREAD of the
//! Container's stream, handing each entry to a broadcast channel; it ends
//! (and closes its connection) once no stream listens any more. Replays
//! (XRANGE) go over one multiplexed connection shared by the whole process.
//! So 500 browser tabs on one Container cost two Redis connections, not 500.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{broadcast, Mutex};

use crate::progress::EVENTS_STREAM_FIELD;

/// How long one blocking XREAD waits; also how long an unwatched follower
/// may linger before it notices and ends.
const READ_BLOCK: Duration = Duration::from_secs(5);
/// How long a non-blocking call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a follower waits before it reconnects after Redis failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// Entries one XREAD or XRANGE returns at most.
const BATCH: usize = 500;
/// Entries a slow stream may fall behind before it re-reads from Redis.
const CHANNEL_CAPACITY: usize = 1024;
/// The name the dashboard's connections carry in `CLIENT LIST`.
pub const CLIENT_NAME: &str = "infrahaus-dashboard";

/// A Redis stream entry id, `<milliseconds>-<sequence>`, ordered as Redis orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamId {
    millis: u64,
    seq: u64,
}

impl StreamId {
    /// Before every entry.
    pub const ZERO: StreamId = StreamId { millis: 0, seq: 0 };

    pub fn parse(text: &str) -> Option<Self> {
        let (millis, seq) = text.trim().split_once('-')?;
        Some(Self { millis: millis.parse().ok()?, seq: seq.parse().ok()? })
    }
}

impl Ord for StreamId {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.millis, self.seq).cmp(&(other.millis, other.seq))
    }
}

impl PartialOrd for StreamId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.millis, self.seq)
    }
}

/// One stream entry: its id and the event JSON as the controller wrote it
/// (`None` for an entry without the `event` field, which is skipped but
/// still moves the position on).
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: StreamId,
    pub json: Option<Arc<str>>,
}

fn entries(ids: &[redis::streams::StreamId]) -> Vec<Entry> {
    ids.iter()
        .filter_map(|entry| {
            let id = StreamId::parse(&entry.id)?;
            let json = entry.get::<String>(EVENTS_STREAM_FIELD).map(Arc::from);
            Some(Entry { id, json })
        })
        .collect()
}

type Followers = Arc<Mutex<HashMap<String, broadcast::Sender<Entry>>>>;

/// The followers and the shared replay connection.
pub struct Hub {
    client: redis::Client,
    replay: Mutex<Option<redis::aio::MultiplexedConnection>>,
    followers: Followers,
}

impl Hub {
    pub fn new(url: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        // The URL may hold a password: it is never echoed.
        let client = crate::redis_client::open(url, ca_file)?;
        Ok(Self { client, replay: Mutex::new(None), followers: Arc::default() })
    }

    /// Entries of `key` after `after` (from the start for `None`), oldest first.
    pub async fn replay(&self, key: &str, after: Option<StreamId>) -> anyhow::Result<Vec<Entry>> {
        let mut connection = self.replay_connection().await?;
        let mut all = Vec::new();
        let mut start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        loop {
            let command = redis::cmd("XRANGE").arg(key).arg(&start).arg("+").arg("COUNT").arg(BATCH).clone();
            let reply = self.call::<redis::streams::StreamRangeReply>(&mut connection, command).await?;
            let page = entries(&reply.ids);
            let full = page.len() >= BATCH;
            if let Some(last) = page.last() {
                start = format!("({}", last.id);
            }
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// A receiver of every entry of `key` added from now on, starting a
    /// follower for it if none runs.
    pub async fn subscribe(&self, key: &str) -> anyhow::Result<broadcast::Receiver<Entry>> {
        let mut followers = self.followers.lock().await;
        if let Some(sender) = followers.get(key) {
            return Ok(sender.subscribe());
        }
        // The follower starts after the newest entry there is now, before the
        // subscriber's replay reads: nothing falls between the two.
        let start = self.last_id(key).await?;
        let (sender, receiver) = broadcast::channel(CHANNEL_CAPACITY);
        followers.insert(key.to_owned(), sender.clone());
        let follower = Follower {
            client: self.client.clone(),
            key: key.to_owned(),
            last: start,
            sender,
            followers: self.followers.clone(),
        };
        tokio::spawn(follower.run());
        Ok(receiver)
    }

    /// The id of the newest entry of `key`, `ZERO` when there is none.
    async fn last_id(&self, key: &str) -> anyhow::Result<StreamId> {
        let mut connection = self.replay_connection().await?;
        let command = redis::cmd("XREVRANGE").arg(key).arg("+").arg("-").arg("COUNT").arg(1).clone();
        let reply = self.call::<redis::streams::StreamRangeReply>(&mut connection, command).await?;
        Ok(entries(&reply.ids).first().map_or(StreamId::ZERO, |entry| entry.id))
    }

    async fn replay_connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let mut slot = self.replay.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = connect(&self.client, Some(CALL_TIMEOUT)).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// One call on the replay connection; a failed one drops it, so the next
    /// call reconnects.
    async fn call<T: redis::FromRedisValue>(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
        command: redis::Cmd,
    ) -> anyhow::Result<T> {
        let result = tokio::time::timeout(CALL_TIMEOUT, command.query_async::<T>(connection)).await;
        match result {
            Ok(Ok(value)) => Ok(value),
            failed => {
                *self.replay.lock().await = None;
                match failed {
                    Ok(Err(error)) => Err(anyhow::Error::new(error).context("reading the event stream")),
                    _ => anyhow::bail!("Redis did not answer within {CALL_TIMEOUT:?}"),
                }
            }
        }
    }
}

/// A connection named [`CLIENT_NAME`]; `response_timeout` `None` for
/// blocking reads, which are bounded by their BLOCK argument instead.
async fn connect(
    client: &redis::Client,
    response_timeout: Option<Duration>,
) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CALL_TIMEOUT))
        .set_response_timeout(response_timeout);
    let mut connection =
        client.get_multiplexed_async_connection_with_config(&config).await.context("connecting to Redis")?;
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(CLIENT_NAME)
        .exec_async(&mut connection)
        .await
        .context("naming the connection")?;
    Ok(connection)
}

/// The task following one Container's stream.
struct Follower {
    client: redis::Client,
    key: String,
    last: StreamId,
    sender: broadcast::Sender<Entry>,
    followers: Followers,
}

impl Follower {
    async fn run(mut self) {
        let mut connection = None;
        while !self.unwatched().await {
            if connection.is_none() {
                match connect(&self.client, None).await {
                    Ok(fresh) => connection = Some(fresh),
                    Err(error) => {
                        self.failed(&error).await;
                        continue;
                    }
                }
            }
            let Some(live) = connection.as_mut() else { continue };
            match self.read(live).await {
                Ok(batch) => self.hand_on(batch),
                Err(error) => {
                    connection = None;
                    self.failed(&error).await;
                }
            }
        }
        tracing::debug!(key = %self.key, "no stream follows the Container any more");
    }

    /// Whether no stream listens any more; then the follower is removed, in
    /// the same lock a new subscriber takes, so none subscribes to a
    /// follower that is ending.
    async fn unwatched(&self) -> bool {
        let mut followers = self.followers.lock().await;
        if self.sender.receiver_count() > 0 {
            return false;
        }
        followers.remove(&self.key);
        true
    }

    async fn read(&self, connection: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<Vec<Entry>> {
        let mut command = redis::cmd("XREAD");
        command.arg("BLOCK").arg(READ_BLOCK.as_millis() as u64).arg("COUNT").arg(BATCH);
        command.arg("STREAMS").arg(&self.key).arg(self.last.to_string());
        let read = command.query_async::<Option<redis::streams::StreamReadReply>>(connection);
        let reply = tokio::time::timeout(READ_BLOCK + CALL_TIMEOUT, read)
            .await
            .context("Redis did not answer a blocking read")?
            .context("following the event stream")?;
        Ok(reply.map(|r| r.keys).unwrap_or_default().iter().flat_map(|stream| entries(&stream.ids)).collect())
    }

    fn hand_on(&mut self, batch: Vec<Entry>) {
        for entry in batch {
            self.last = entry.id;
            // No receiver is not an error: the loop notices and ends.
            let _ = self.sender.send(entry);
        }
    }

    async fn failed(&self, error: &anyhow::Error) {
        tracing::warn!(key = %self.key, error = format!("{error:#}"), "following the event stream failed; retrying");
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_parse_and_order_as_in_redis() {
        let ids: Vec<StreamId> = ["0-0", "1700000000000-0", "1700000000000-1", "1700000000000-10", "1700000000001-0"]
            .iter()
            .map(|text| StreamId::parse(text).expect(text))
            .collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
        assert_eq!(ids[3].to_string(), "1700000000000-10");
        assert_eq!(StreamId::parse("0-0"), Some(StreamId::ZERO));
        for bad in ["", "12", "a-1", "1-b", "-1", "1-", "1-2-3"] {
            assert_eq!(StreamId::parse(bad), None, "{bad:?}");
        }
    }
}
