//! Drawing events and status changes: lines, colours and the progress bar.

use std::io::Write;

use super::status::StatusView;
use crate::crd::Phase;
use crate::progress::{EventType, LogStream, ProgressEvent};

/// Width of the bar between its brackets.
const BAR_WIDTH: usize = 30;
/// Longest label shown after the bar.
const BAR_LABEL_CHARS: usize = 60;

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
        EventType::Error => ("error".to_owned(), format!("{} failed: {message}", printable(&event.step)), RED),
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

/// The bar drawn under the lines after `event`.
pub fn event_bar(event: &ProgressEvent) -> String {
    progress_bar(event.percent, &bar_label(event))
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
pub(super) struct Console {
    style: Style,
    /// The bar currently drawn, if any.
    bar: Option<String>,
}

impl Console {
    pub(super) fn new(style: Style) -> Self {
        Self { style, bar: None }
    }

    pub(super) fn event(&mut self, event: &ProgressEvent) {
        let color = matches!(self.style, Style::Terminal { color: true });
        self.line(&event_line(event, color));
        self.draw_bar(event_bar(event));
    }

    pub(super) fn status(&mut self, view: &StatusView) {
        let color = matches!(self.style, Style::Terminal { color: true });
        self.line(&status_line(view, color));
        let percent = view.progress.and_then(|p| u8::try_from(p).ok()).unwrap_or(0);
        self.draw_bar(progress_bar(percent, view.phase.as_str()));
    }

    pub(super) fn line(&mut self, text: &str) {
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

    pub(super) fn warning(&mut self, text: &str) {
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
    pub(super) fn finish(&mut self) {
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
    use crate::watch::tests::web;

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
    fn a_failed_step_with_control_characters_cannot_redraw_the_terminal() {
        let entry = b"{\"type\": \"error\", \"step\": \"\x7fn\", \"percent\": 77, \"message\": \"scr\", \
            \"timestamp\":\"226-01-01T0:0:00Z\", \"container\": {\"namespace\": \"d\", \"name\": \"w1\", \"uid\": \"1\"}}";
        let mut event: ProgressEvent = serde_json::from_slice(entry).expect("the stream entry is an event");
        assert_eq!(event_line(&event, false), "[ 77%] error      \u{fffd}n failed: scr");
        event.step = "\x1b[2Jsyncing".into();
        assert_eq!(event_line(&event, false), "[ 77%] error      \u{fffd}[2Jsyncing failed: scr");
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
