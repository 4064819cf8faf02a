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

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher;

use crate::crd::{Container, Phase};
use crate::progress::{self, EventType, LogStream, ProgressEvent};

/// How long one blocking XREAD waits before it is issued again.
const READ_BLOCK: Duration = Duration::from_secs(5);
/// How long to wait before reconnecting after Redis failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// Width of the bar between its brackets.
const BAR_WIDTH: usize = 30;
/// Longest label shown after the bar.
const BAR_LABEL_CHARS: usize = 60;

/// Options of `infrahaus-operator watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The Container to follow, as `<namespace>/<name>`.
    #[arg(value_parser = parse_target)]
    pub container: Target,
    /// Redis URL to read progress events from. Without it the Container's
    /// status is followed through the Kubernetes API.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Give up after this long, e.g. `90s`, `10m` or `1h` (default: no limit).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// A Container's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

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
            Some(url) => follow_redis(url, &args.container, console).await,
            None => follow_status(&args.container, console).await,
        }
    };
    match args.timeout {
        Some(limit) => Ok(tokio::time::timeout(limit, follow).await.unwrap_or(Ok(Outcome::TimedOut))?),
        None => follow.await,
    }
}

/// `<namespace>/<name>`, both non-empty.
pub fn parse_target(text: &str) -> Result<Target, String> {
    match text.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(Target { namespace: namespace.to_owned(), name: name.to_owned() })
        }
        _ => Err(format!("expected <namespace>/<name>, got {text:?}")),
    }
}

/// A duration: a number with an optional unit `s` (the default), `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, seconds_per_unit) = match text.char_indices().last() {
        Some((at, 's')) => (&text[..at], 1),
        Some((at, 'm')) => (&text[..at], 60),
        Some((at, 'h')) => (&text[..at], 3600),
        _ => (text, 1),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds_per_unit))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("expected a duration such as 90s, 10m or 1h, got {text:?}"))
}

// ---- Redis ----------------------------------------------------------------

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

async fn follow_redis(url: &str, target: &Target, console: &mut Console) -> anyhow::Result<Outcome> {
    // The URL may hold a password: it is never echoed.
    let client = redis::Client::open(url).map_err(|_| anyhow::anyhow!("the Redis URL is not valid"))?;
    let key = progress::events_stream(&target.namespace, &target.name);
    let mut connection = connect(&client).await.context("connecting to Redis")?;

    let replay: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .context("reading the event stream")?;
    let replay = entries(&replay.ids);
    let mut last_id = replay.last().map_or_else(|| "0-0".to_owned(), |e| e.id.clone());
    let events: Vec<ProgressEvent> = replay.into_iter().filter_map(|e| e.event).collect();
    if events.is_empty() {
        console.line(&format!("waiting for progress events of {target} ..."));
    }
    for event in &events[current_run_start(&events)..] {
        console.event(event);
    }
    if let Some(outcome) = events.last().and_then(event_outcome) {
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

/// The Container's status, when the controller has settled it.
async fn settled_status(statuses: Option<&Api<Container>>, name: &str) -> Option<StatusView> {
    let ct = statuses?.get_opt(name).await.ok()??;
    Some(status_view(&ct)).filter(|view| view.outcome.is_some())
}

// ---- Kubernetes -----------------------------------------------------------

/// What a status update means for the watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusView {
    pub phase: Phase,
    pub progress: Option<i32>,
    pub message: Option<String>,
    /// Set once the controller has settled this generation.
    pub outcome: Option<Outcome>,
}

/// The view of one Container: its phase, and an outcome only when the
/// controller has nothing more to do for the current generation and retry
/// value (a Ready or Error from an older generation is not the answer).
pub fn status_view(ct: &Container) -> StatusView {
    let status = ct.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let deleting = ct.metadata.deletion_timestamp.is_some();
    let outcome = match ct.settled_phase() {
        Some(Phase::Ready) => Some(Outcome::Ready),
        Some(Phase::Error) => Some(Outcome::Failed),
        _ => None,
    };
    StatusView {
        phase: if deleting { Phase::Deleting } else { phase },
        progress: status.progress,
        message: status.message,
        outcome,
    }
}

async fn follow_status(target: &Target, console: &mut Console) -> anyhow::Result<Outcome> {
    let client = kube::Client::try_default().await.context("no Kubernetes configuration (kubeconfig or in-cluster)")?;
    let api: Api<Container> = Api::namespaced(client, &target.namespace);
    if api.get_opt(&target.name).await.with_context(|| format!("reading Container {target}"))?.is_none() {
        console.line(&format!("waiting for Container {target} to be created ..."));
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={}", target.name));
    let mut events = std::pin::pin!(watcher(api, config));
    let mut shown: Option<StatusView> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(ct) | watcher::Event::InitApply(ct)) => {
                let view = status_view(&ct);
                let changed = shown.as_ref().is_none_or(|old| {
                    (old.phase, old.progress, &old.message) != (view.phase, view.progress, &view.message)
                });
                if changed {
                    console.status(&view);
                }
                if let Some(outcome) = view.outcome {
                    return Ok(outcome);
                }
                shown = Some(view);
            }
            Ok(watcher::Event::Delete(_)) => bail!("Container {target} was deleted"),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(error) => console.warning(&format!("watching {target}: {error}")),
        }
    }
    bail!("the watch on Container {target} ended")
}

// ---- Rendering ------------------------------------------------------------

/// How output is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// One line per event, no control characters: for pipes, files and CI logs.
    Plain,
    /// Lines above a progress bar redrawn in place; `color` adds ANSI colours.
    Terminal { color: bool },
}

/// Plain lines unless stdout is a terminal; colours unless `NO_COLOR` is set.
pub fn style_for(is_terminal: bool, no_color: bool) -> Style {
    if is_terminal {
        Style::Terminal { color: !no_color }
    } else {
        Style::Plain
    }
}

const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const CYAN: &str = "36";
const DIM: &str = "2";

fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// Script output and messages come from outside: control characters (escape
/// sequences included) are replaced so they cannot redraw the terminal.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() && c != '\t' { '\u{fffd}' } else { c }).collect()
}

/// Where the text of a line starts: after `[ 40%] deploying  `.
const TEXT_INDENT: usize = 18;

/// A message that may span lines (a failed script's last output), its
/// continuation lines indented under the first.
fn message_block(text: &str) -> String {
    text.lines().map(printable).collect::<Vec<_>>().join(&format!("\n{}", " ".repeat(TEXT_INDENT)))
}

/// The line kept on screen for one event.
pub fn event_line(event: &ProgressEvent, color: bool) -> String {
    let percent = format!("[{:>3}%]", event.percent);
    let message = message_block(&event.message);
    let (label, text, code) = match event.event_type {
        EventType::Step => (event.step.clone(), message, CYAN),
        EventType::Log => {
            let script = printable(event.script.as_deref().unwrap_or("script"));
            match event.stream {
                Some(LogStream::Stderr) => (event.step.clone(), format!("{script} (stderr): {message}"), YELLOW),
                _ => (event.step.clone(), format!("{script}: {message}"), DIM),
            }
        }
        EventType::Complete => ("complete".to_owned(), message, GREEN),
        EventType::Error => ("error".to_owned(), format!("{} failed: {message}", event.step), RED),
    };
    let label = printable(&label);
    match event.event_type {
        EventType::Log => format!("{percent} {label:<10} {}", paint(&text, code, color)),
        _ => format!("{percent} {} {text}", paint(&format!("{label:<10}"), code, color)),
    }
}

/// The line kept on screen for a status change.
pub fn status_line(view: &StatusView, color: bool) -> String {
    let percent = view.progress.map_or_else(|| "[  - ]".to_owned(), |p| format!("[{p:>3}%]"));
    let code = match view.phase {
        Phase::Ready => GREEN,
        Phase::Error => RED,
        _ => CYAN,
    };
    let phase = paint(&format!("{:<10}", view.phase.as_str()), code, color);
    let message = message_block(view.message.as_deref().unwrap_or_default());
    format!("{percent} {phase} {message}").trim_end().to_owned()
}

/// A bar such as `[#########.....................]  30% creating`.
pub fn progress_bar(percent: u8, label: &str) -> String {
    let percent = percent.min(100);
    let filled = usize::from(percent) * BAR_WIDTH / 100;
    let label: String = printable(label).chars().take(BAR_LABEL_CHARS).collect();
    format!("[{}{}] {percent:>3}% {label}", "#".repeat(filled), ".".repeat(BAR_WIDTH - filled)).trim_end().to_owned()
}

/// The label under the bar for an event: the step, and what is running.
fn bar_label(event: &ProgressEvent) -> String {
    match (event.event_type, &event.script) {
        (EventType::Log, Some(script)) => format!("{} {script}", event.step),
        (EventType::Complete, _) => "complete".to_owned(),
        (EventType::Error, _) => format!("{} failed", event.step),
        _ => format!("{} {}", event.step, event.message.lines().next().unwrap_or_default()),
    }
}

/// Writes lines to stdout, keeping the bar as the last line on a terminal.
struct Console {
    style: Style,
    /// The bar currently drawn, if any.
    bar: Option<String>,
}

impl Console {
    fn new(style: Style) -> Self {
        Self { style, bar: None }
    }

    fn event(&mut self, event: &ProgressEvent) {
        let color = matches!(self.style, Style::Terminal { color: true });
        self.line(&event_line(event, color));
        self.draw_bar(progress_bar(event.percent, &bar_label(event)));
    }

    fn status(&mut self, view: &StatusView) {
        let color = matches!(self.style, Style::Terminal { color: true });
        self.line(&status_line(view, color));
        let percent = view.progress.and_then(|p| u8::try_from(p).ok()).unwrap_or(0);
        self.draw_bar(progress_bar(percent, view.phase.as_str()));
    }

    fn line(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        let bar = self.bar.take();
        if let Some(bar) = &bar {
            Self::erase(&mut out, self.style, bar);
        }
        let _ = writeln!(out, "{text}");
        if let Some(bar) = bar {
            let _ = write!(out, "{bar}");
            self.bar = Some(bar);
        }
        let _ = out.flush();
    }

    fn warning(&mut self, text: &str) {
        self.line(&format!("warning: {}", printable(text)));
    }

    fn draw_bar(&mut self, bar: String) {
        if self.style == Style::Plain {
            return;
        }
        let mut out = std::io::stdout().lock();
        if let Some(old) = &self.bar {
            Self::erase(&mut out, self.style, old);
        }
        let _ = write!(out, "{bar}");
        let _ = out.flush();
        self.bar = Some(bar);
    }

    fn erase(out: &mut impl Write, style: Style, bar: &str) {
        let _ = match style {
            Style::Terminal { color: true } => write!(out, "\r\x1b[2K"),
            _ => write!(out, "\r{}\r", " ".repeat(bar.chars().count())),
        };
    }

    /// Leaves the last bar on screen and ends its line.
    fn finish(&mut self) {
        if self.bar.take().is_some() {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out);
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ContainerStatus;
    use crate::progress::ContainerRef;

    fn web() -> ContainerRef {
        ContainerRef::new("default", "web-1", "uid-1")
    }

    #[test]
    fn targets_are_namespace_slash_name() {
        let cases = [
            ("default/web-1", Ok(("default", "web-1"))),
            ("team-a/db", Ok(("team-a", "db"))),
            ("web-1", Err(())),
            ("/web-1", Err(())),
            ("default/", Err(())),
            ("a/b/c", Err(())),
            ("", Err(())),
        ];
        for (text, expected) in cases {
            let parsed = parse_target(text);
            match expected {
                Ok((namespace, name)) => {
                    assert_eq!(parsed, Ok(Target { namespace: namespace.into(), name: name.into() }), "{text}")
                }
                Err(()) => assert!(parsed.is_err(), "{text}"),
            }
        }
    }

    #[test]
    fn durations_take_an_optional_unit() {
        let cases = [
            ("90", Some(90)),
            ("90s", Some(90)),
            ("10m", Some(600)),
            ("1h", Some(3600)),
            (" 5s ", Some(5)),
            ("", None),
            ("s", None),
            ("-1s", None),
            ("1.5m", None),
            ("10d", None),
            ("99999999999999999999h", None),
        ];
        for (text, seconds) in cases {
            assert_eq!(parse_duration(text).ok(), seconds.map(Duration::from_secs), "{text:?}");
        }
    }

    #[test]
    fn exit_codes_tell_ready_from_error_and_timeout() {
        assert_eq!(Outcome::Ready.exit_code(), 0);
        assert_eq!(Outcome::Failed.exit_code(), 1);
        assert_eq!(Outcome::TimedOut.exit_code(), 2);
        assert_eq!(EXIT_WATCH_FAILED, 3);
    }

    #[test]
    fn output_style_follows_the_terminal_and_no_color() {
        let cases = [
            (false, false, Style::Plain),
            (false, true, Style::Plain),
            (true, false, Style::Terminal { color: true }),
            (true, true, Style::Terminal { color: false }),
        ];
        for (terminal, no_color, expected) in cases {
            assert_eq!(style_for(terminal, no_color), expected, "{terminal} {no_color}");
        }
    }

    #[test]
    fn events_render_as_lines() {
        let cases = [
            (
                ProgressEvent::step(&web(), "creating", 5, "Creating LXC container..."),
                "[  5%] creating   Creating LXC container...",
            ),
            (
                ProgressEvent::log(&web(), "syncing", 70, LogStream::Stdout, "10-setup.sh", "apt: done"),
                "[ 70%] syncing    10-setup.sh: apt: done",
            ),
            (
                ProgressEvent::log(&web(), "syncing", 70, LogStream::Stderr, "10-setup.sh", "warning"),
                "[ 70%] syncing    10-setup.sh (stderr): warning",
            ),
            (
                ProgressEvent::complete(&web(), "Container ready"),
                "[100%] complete   Container ready",
            ),
            (
                ProgressEvent::error(&web(), "syncing", 77, "script 20-app.sh exited 3"),
                "[ 77%] error      syncing failed: script 20-app.sh exited 3",
            ),
            (
                ProgressEvent::error(&web(), "syncing", 77, "script a.sh exited with code 3; last output:\nwriting\ndisk full"),
                "[ 77%] error      syncing failed: script a.sh exited with code 3; last output:\n                  writing\n                  disk full",
            ),
            (
                ProgressEvent::log(&web(), "syncing", 80, LogStream::Stdout, "a.sh", "\x1b[2Jred\r"),
                "[ 80%] syncing    a.sh: \u{fffd}[2Jred\u{fffd}",
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(event_line(&event, false), expected);
        }
    }

    #[test]
    fn colours_only_when_asked() {
        let event = ProgressEvent::error(&web(), "syncing", 77, "boom");
        assert_eq!(event_line(&event, true), "[ 77%] \x1b[31merror     \x1b[0m syncing failed: boom");
        let log = ProgressEvent::log(&web(), "syncing", 70, LogStream::Stderr, "a.sh", "oops");
        assert_eq!(event_line(&log, true), "[ 70%] syncing    \x1b[33ma.sh (stderr): oops\x1b[0m");
        assert!(!event_line(&event, false).contains('\x1b'));
    }

    #[test]
    fn bars_fill_with_the_percent() {
        let cases = [
            (0, "creating", "[..............................]   0% creating"),
            (50, "syncing 10-setup.sh", "[###############...............]  50% syncing 10-setup.sh"),
            (100, "complete", "[##############################] 100% complete"),
            (140, "", "[##############################] 100%"),
        ];
        for (percent, label, expected) in cases {
            assert_eq!(progress_bar(percent, label), expected);
        }
        let long = "x".repeat(200);
        assert_eq!(progress_bar(10, &long).chars().count(), 32 + 6 + BAR_LABEL_CHARS);
    }

    #[test]
    fn bar_labels_name_the_step_and_the_script() {
        let cases = [
            (ProgressEvent::step(&web(), "deploying", 40, "Uploading files"), "deploying Uploading files"),
            (ProgressEvent::log(&web(), "syncing", 70, LogStream::Stdout, "10-a.sh", "x"), "syncing 10-a.sh"),
            (ProgressEvent::complete(&web(), "Container ready"), "complete"),
            (ProgressEvent::error(&web(), "starting", 25, "boom"), "starting failed"),
        ];
        for (event, expected) in cases {
            assert_eq!(bar_label(&event), expected);
        }
    }

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

    fn container(generation: i64, phase: Option<Phase>, observed: Option<i64>) -> Container {
        let spec = serde_json::from_value(serde_json::json!({"nodeRef": {"name": "pve1"}})).expect("spec");
        let mut ct = Container::new("web-1", spec);
        ct.metadata.generation = Some(generation);
        ct.status = Some(ContainerStatus {
            phase,
            progress: Some(40),
            message: Some("Deploying".into()),
            observed_generation: observed,
            ..Default::default()
        });
        ct
    }

    #[test]
    fn status_settles_only_for_the_current_generation() {
        let deleting = {
            let mut ct = container(1, Some(Phase::Ready), Some(1));
            ct.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
            ct
        };
        let retried = {
            let mut ct = container(1, Some(Phase::Error), Some(1));
            ct.metadata.annotations = Some([(crate::crd::RETRY_ANNOTATION.to_owned(), "1".to_owned())].into());
            ct
        };
        let cases = [
            ("no status yet", container(1, None, None), Phase::Pending, None),
            ("in flight", container(1, Some(Phase::Deploying), Some(1)), Phase::Deploying, None),
            ("ready", container(1, Some(Phase::Ready), Some(1)), Phase::Ready, Some(Outcome::Ready)),
            ("error", container(1, Some(Phase::Error), Some(1)), Phase::Error, Some(Outcome::Failed)),
            ("ready, older generation", container(2, Some(Phase::Ready), Some(1)), Phase::Ready, None),
            ("error, older generation", container(2, Some(Phase::Error), Some(1)), Phase::Error, None),
            ("error with a new retry value", retried, Phase::Error, None),
            ("being deleted", deleting, Phase::Deleting, None),
        ];
        for (case, ct, phase, outcome) in cases {
            let view = status_view(&ct);
            assert_eq!((view.phase, view.outcome), (phase, outcome), "{case}");
        }
    }

    #[test]
    fn status_changes_render_as_lines() {
        let view = |phase, progress, message: Option<&str>| StatusView {
            phase,
            progress,
            message: message.map(str::to_owned),
            outcome: None,
        };
        let cases = [
            (view(Phase::Pending, None, None), "[  - ] Pending"),
            (view(Phase::Creating, Some(5), Some("Creating LXC container")), "[  5%] Creating   Creating LXC container"),
            (view(Phase::Ready, Some(100), Some("Container ready")), "[100%] Ready      Container ready"),
            (
                view(Phase::Error, Some(77), Some("syncing failed: script a.sh exited with code 3; last output:\ndisk full")),
                "[ 77%] Error      syncing failed: script a.sh exited with code 3; last output:\n                  disk full",
            ),
        ];
        for (view, expected) in cases {
            assert_eq!(status_line(&view, false), expected);
        }
    }
}
