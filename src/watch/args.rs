//! The command line of `watch`: the Container to follow and the options.

use std::time::Duration;

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
    /// The PEM file of the CA that signed the certificate of a TLS Redis
    /// (`rediss://`), when the system's roots do not cover it.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
