//! The command line of `dashboard`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::telemetry::LogFormat;

/// How requests are authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// A Kubernetes bearer token, checked with TokenReview and
    /// SubjectAccessReview.
    Kubernetes,
    /// No checks: everyone sees every Container the dashboard can read.
    /// Refused unless the dashboard listens on a loopback address.
    None,
}

/// Options of `infrahaus-operator dashboard`; each is also an environment variable.
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Where the page, the API and /healthz are served.
    #[arg(long, env = "DASHBOARD_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Redis URL to read progress events from. Without it each Container's
    /// status is followed through the Kubernetes API instead.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// The PEM file of the CA that signed the certificate of a TLS Redis
    /// (`rediss://`), when the system's roots do not cover it.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// `kubernetes` (bearer tokens) or `none` (only on a loopback address).
    #[arg(long, env = "DASHBOARD_AUTH", value_enum, default_value_t = AuthMode::Kubernetes)]
    pub auth: AuthMode,
    /// Event streams open at once, in all.
    #[arg(long, env = "DASHBOARD_MAX_STREAMS", default_value_t = 1000)]
    pub max_streams: usize,
    /// Event streams one user may hold open at once.
    #[arg(long, env = "DASHBOARD_MAX_STREAMS_PER_USER", default_value_t = 20)]
    pub max_streams_per_user: usize,
    /// How often an idle event stream carries a heartbeat comment, so that
    /// proxies do not close it.
    #[arg(long, env = "DASHBOARD_HEARTBEAT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
    /// An event stream is ended after this long; the browser reconnects with
    /// `Last-Event-ID`, so a revoked token stops being served.
    #[arg(long, env = "DASHBOARD_STREAM_MAX_AGE", default_value = "15m", value_parser = humantime::parse_duration)]
    pub stream_max_age: Duration,
    /// How long a TokenReview or SubjectAccessReview answer is reused.
    #[arg(long, env = "DASHBOARD_AUTH_CACHE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub auth_cache_ttl: Duration,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
#[error("--auth none serves every Container without a check; it is allowed only on a loopback address, not on {0}")]
pub struct AuthNoneOffLoopback(SocketAddr);

/// `--auth none` only where nobody else can connect.
pub fn check_auth_mode(auth: AuthMode, listen: SocketAddr) -> Result<(), AuthNoneOffLoopback> {
    if auth == AuthMode::None && !listen.ip().is_loopback() {
        return Err(AuthNoneOffLoopback(listen));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_none_is_only_for_loopback() {
        let cases = [
            (AuthMode::None, "127.0.0.1:8090", true),
            (AuthMode::None, "127.0.0.9:8090", true),
            (AuthMode::None, "[::1]:8090", true),
            (AuthMode::None, "0.0.0.0:8090", false),
            (AuthMode::None, "[::]:8090", false),
            (AuthMode::None, "192.0.2.1:8090", false),
            (AuthMode::Kubernetes, "0.0.0.0:8090", true),
        ];
        for (auth, listen, allowed) in cases {
            let listen: SocketAddr = listen.parse().expect("address");
            assert_eq!(check_auth_mode(auth, listen).is_ok(), allowed, "{auth:?} on {listen}");
        }
    }
}
