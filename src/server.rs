//! The HTTP endpoints of the process: `/metrics`, `/healthz` and `/readyz`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE};

/// Whether the process should receive work: set once the controller runs
/// (or stands by as a non-leader, which is a healthy replica too), cleared
/// again when shutdown begins so that nothing new is routed to it.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Starts not ready.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn set_not_ready(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} for /metrics, /healthz and /readyz; is --metrics-addr in use?")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the metrics and health server failed")]
    Serve(#[source] std::io::Error),
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    readiness: Readiness,
}

/// The routes, for serving or for tests.
pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, readiness })
}

/// Serves on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
    serve_listener(listener, metrics, readiness, shutdown).await
}

/// Serves on an already bound listener until `shutdown` resolves.
pub async fn serve_listener(
    listener: TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    axum::serve(listener, router(metrics, readiness)).with_graceful_shutdown(shutdown).await.map_err(ServerError::Serve)
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], state.metrics.encode())
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{Context, Result};

    struct Running {
        base: String,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), ServerError>>,
    }

    async fn start(metrics: Metrics, readiness: Readiness) -> Result<Running> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_listener(listener, metrics, readiness, async {
            let _ = stopped.await;
        }));
        Ok(Running { base, stop, task })
    }

    async fn get(url: &str) -> Result<(u16, String, String)> {
        let response = reqwest::get(url).await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((status, content_type, response.text().await?))
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness_until_shutdown() -> Result<()> {
        let metrics = Metrics::new();
        let readiness = Readiness::new();
        let server = start(metrics.clone(), readiness.clone()).await?;
        metrics.reconcile();

        let (status, content_type, body) = get(&format!("{}/metrics", server.base)).await?;
        assert_eq!(status, 200);
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        assert!(body.contains("infrahaus_reconciles_total 1"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");

        assert_eq!(get(&format!("{}/healthz", server.base)).await?.0, 200);
        assert_eq!(get(&format!("{}/readyz", server.base)).await?.0, 503);
        readiness.set_ready();
        assert_eq!(get(&format!("{}/readyz", server.base)).await?.0, 200);
        readiness.set_not_ready();
        assert_eq!(get(&format!("{}/readyz", server.base)).await?.0, 503);
        assert_eq!(get(&format!("{}/healthz", server.base)).await?.0, 200);
        assert_eq!(get(&format!("{}/nothing", server.base)).await?.0, 404);

        let _ = server.stop.send(());
        tokio::time::timeout(std::time::Duration::from_secs(5), server.task)
            .await
            .context("the server did not stop")???;
        assert!(reqwest::get(format!("{}/healthz", server.base)).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn an_address_in_use_is_a_bind_error() -> Result<()> {
        let taken = TcpListener::bind("127.0.0.1:0").await?;
        let addr = taken.local_addr()?;
        let error =
            serve(addr, Metrics::new(), Readiness::new(), std::future::pending()).await.expect_err("the port is taken");
        assert!(matches!(error, ServerError::Bind { .. }), "{error}");
        Ok(())
    }
}
