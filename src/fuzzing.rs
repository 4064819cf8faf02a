//! Entry points for the fuzz targets (`tools/fuzz`) into parsers of outside
//! input that are not public otherwise. Each one runs the parser exactly as
//! the controller or `watch` does; none is an API, and all may change.

use crate::proxmox::client::{self, ApiPath};
use crate::proxmox::Error;
use crate::ssh::lines::LineSplitter;
use crate::watch::{render, stream};

/// The lines a script's output splits into when it arrives in `chunks`.
pub fn split_lines(chunks: &[&[u8]]) -> Vec<String> {
    let mut splitter = LineSplitter::default();
    let mut lines = Vec::new();
    for chunk in chunks {
        splitter.push(chunk, |line| lines.push(line.to_owned()));
    }
    splitter.finish(|line| lines.push(line.to_owned()));
    lines
}

/// The path the Proxmox entry points report answers under.
fn fuzz_path() -> ApiPath {
    ApiPath::new("/nodes/{node}/lxc/{vmid}/config", &["pve1", "100"])
}

/// The error a Proxmox answer with HTTP `status`, reason phrase `reason` and
/// body `body` becomes.
pub fn proxmox_api_error(status: u16, reason: &str, body: &[u8]) -> Error {
    client::api_error("GET", &fuzz_path(), status, reason, body)
}

/// The `data` and `total` of a successful Proxmox answer's body.
pub fn proxmox_answer<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<(T, Option<u64>), Error> {
    client::decode_answer("GET", &fuzz_path(), body).map(|answer| (answer.data, answer.total))
}

/// What `watch` shows for a replayed event stream.
#[derive(Debug)]
pub struct WatchReplay {
    /// The ids of the stream's entries, in order.
    pub ids: Vec<String>,
    /// The stream id the watch reads on from.
    pub last_id: String,
    /// The events shown, as plain lines (no terminal).
    pub lines: Vec<String>,
    /// The bar drawn after each of those events on a terminal.
    pub bars: Vec<String>,
    /// The exit code, when the replay already ends the watch.
    pub exit_code: Option<i32>,
}

/// The replay of an `XRANGE` answer as Redis sent it, or `None` when the
/// answer is not a stream range at all.
pub fn watch_replay(reply: redis::Value) -> Option<WatchReplay> {
    let reply: redis::streams::StreamRangeReply = redis::FromRedisValue::from_redis_value(reply).ok()?;
    let stream::Replay { last_id, shown, outcome } = stream::replay(&reply.ids);
    Some(WatchReplay {
        ids: reply.ids.iter().map(|entry| entry.id.clone()).collect(),
        last_id,
        lines: shown.iter().map(|event| render::event_line(event, false)).collect(),
        bars: shown.iter().map(render::event_bar).collect(),
        exit_code: outcome.map(crate::watch::Outcome::exit_code),
    })
}
