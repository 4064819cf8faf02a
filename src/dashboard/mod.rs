//! `infrahaus-operator dashboard`: an HTTP server for dashboards.
//!
//! It lists Containers from the Kubernetes API, streams each Container's
//! progress as Server-Sent Events (replayed from its Redis stream, then
//! followed live, resumable with `Last-Event-ID`; or synthesized from its
//! status without Redis), and serves a small web page on top of both.
//!
//! Every request carries a Kubernetes bearer token, checked with
//! TokenReview; SubjectAccessReview decides whether its user may `get` (or
//! `list`) Containers in the namespace. Only on a loopback address may the
//! server run with `--auth none`.

mod api;
mod args;
mod auth;
mod events;
mod hub;
mod limits;
mod page;
mod status;

use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

pub use args::{AuthMode, DashboardArgs};

use crate::shutdown::Shutdown;
use crate::telemetry;

/// Runs the dashboard until SIGTERM or SIGINT.
pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format)?;
    args::check_auth_mode(args.auth, args.listen)?;
    let shutdown = Shutdown::on_signals().context("installing signal handlers")?;
    let client = kube::Client::try_default().await.context("no Kubernetes configuration (kubeconfig or in-cluster)")?;
    let hub = match args.redis_url.as_deref().filter(|url| !url.is_empty()) {
        Some(url) => Some(Arc::new(hub::Hub::new(url, args.redis_ca_file.as_deref())?)),
        None => None,
    };
    let state = api::AppState::new(client, hub, &args, shutdown.clone());
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} for the dashboard; is --listen in use?", args.listen))?;
    tracing::info!(
        addr = %args.listen,
        auth = ?args.auth,
        redis = state.has_redis(),
        version = env!("CARGO_PKG_VERSION"),
        "serving the dashboard"
    );
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown.wait())
        .await
        .context("the dashboard server failed")?;
    tracing::info!("dashboard stopped");
    Ok(())
}
