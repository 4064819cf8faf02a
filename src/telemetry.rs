//! Logging: text for people, JSON for log pipelines; `RUST_LOG` filters.

use std::io::IsTerminal;

use tracing_subscriber::filter::{EnvFilter, FromEnvError, LevelFilter};

/// The value of `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line; the enclosing spans, with their fields
    /// (namespace, name, vmid), are listed under `spans`.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("RUST_LOG is not a valid log filter")]
    InvalidFilter(#[source] FromEnvError),
    #[error("a global log subscriber is already installed")]
    AlreadyInitialised(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// The filter from `RUST_LOG`, `info` when it is unset or empty.
pub fn env_filter() -> Result<EnvFilter, TelemetryError> {
    EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env()
        .map_err(TelemetryError::InvalidFilter)
}

/// Installs the global subscriber; call once, first thing in `main`.
pub fn init(format: LogFormat) -> Result<(), TelemetryError> {
    let filter = env_filter()?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a terminal; a pod's log or a file gets plain text.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(true).try_init(),
    }
    .map_err(TelemetryError::AlreadyInitialised)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn log_formats_parse_from_their_flag_values() {
        let cases = [("text", Some(LogFormat::Text)), ("json", Some(LogFormat::Json)), ("yaml", None)];
        for (value, expected) in cases {
            assert_eq!(LogFormat::from_str(value, false).ok(), expected, "{value}");
        }
    }
}
