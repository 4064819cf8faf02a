//! Prometheus metrics of the controller, served on `/metrics`.
//!
//! One [`Metrics`] value is created at start-up and cloned into every part
//! that counts something; clones share the same registry.

use std::sync::Arc;

use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Stage durations range from a second (start) to many minutes (sync with
/// package installs), so the buckets grow geometrically up to an hour.
const STAGE_DURATION_BUCKETS: [f64; 12] = [0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxmoxRequestLabels {
    endpoint: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

type HistogramConstructor = fn() -> Histogram;

struct Inner {
    registry: Registry,
    reconciles: Counter,
    reconcile_failures: Family<ReasonLabels, Counter>,
    stage_duration: Family<StageLabels, Histogram, HistogramConstructor>,
    proxmox_requests: Family<ProxmoxRequestLabels, Counter>,
    redis_publish_failures: Counter,
    progress_events_dropped: Counter,
    containers: Family<PhaseLabels, Gauge>,
    ssh_sessions: Counter,
}

/// The controller's metrics. Cheap to clone; clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("infrahaus");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        let reconcile_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Reconciliations that ended in an error, by reason",
            reconcile_failures.clone(),
        );
        let stage_duration: Family<StageLabels, Histogram, HistogramConstructor> =
            Family::new_with_constructor(|| Histogram::new(STAGE_DURATION_BUCKETS));
        registry.register_with_unit(
            "stage_duration",
            "Time spent in one run of a pipeline stage",
            Unit::Seconds,
            stage_duration.clone(),
        );
        let proxmox_requests = Family::<ProxmoxRequestLabels, Counter>::default();
        registry.register(
            "proxmox_requests",
            "Requests to the Proxmox VE API, by endpoint and HTTP status (0: no response)",
            proxmox_requests.clone(),
        );
        let redis_publish_failures = Counter::default();
        registry.register(
            "redis_publish_failures",
            "Progress events that could not be published to Redis",
            redis_publish_failures.clone(),
        );
        let progress_events_dropped = Counter::default();
        registry.register(
            "progress_events_dropped",
            "Progress events dropped because the queue to the Redis publisher was full",
            progress_events_dropped.clone(),
        );
        let containers = Family::<PhaseLabels, Gauge>::default();
        registry.register("containers", "Containers known to the controller, by phase", containers.clone());
        // Every phase is listed from the first scrape on, at zero until the
        // controller has counted the Containers it watches.
        for phase in crate::crd::Phase::ALL {
            containers.get_or_create(&PhaseLabels { phase: phase.as_str().to_owned() }).set(0);
        }
        let ssh_sessions = Counter::default();
        registry.register("ssh_sessions", "SSH sessions opened to guests", ssh_sessions.clone());
        Self {
            inner: Arc::new(Inner {
                registry,
                reconciles,
                reconcile_failures,
                stage_duration,
                proxmox_requests,
                redis_publish_failures,
                progress_events_dropped,
                containers,
                ssh_sessions,
            }),
        }
    }

    /// Counts one SSH session opened to a guest.
    pub fn ssh_session(&self) {
        self.inner.ssh_sessions.inc();
    }

    /// Counts one reconciliation.
    pub fn reconcile(&self) {
        self.inner.reconciles.inc();
    }

    /// Counts one failed reconciliation; `reason` is a stable, low-cardinality
    /// label such as an error's metric label, never a free-form message.
    pub fn reconcile_failure(&self, reason: &str) {
        self.inner.reconcile_failures.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }

    /// Records how long one run of `stage` took.
    pub fn stage_duration(&self, stage: &str, secs: f64) {
        self.inner.stage_duration.get_or_create(&StageLabels { stage: stage.to_owned() }).observe(secs);
    }

    /// Counts one Proxmox API request. `endpoint` must be a path template
    /// (`/nodes/{node}/lxc`), not a concrete path, to keep cardinality low;
    /// `status` is the HTTP status, or 0 when no response arrived.
    pub fn proxmox_request(&self, endpoint: &str, status: u16) {
        self.inner
            .proxmox_requests
            .get_or_create(&ProxmoxRequestLabels { endpoint: endpoint.to_owned(), status })
            .inc();
    }

    /// Counts one progress event that did not reach Redis.
    pub fn redis_publish_failure(&self) {
        self.inner.redis_publish_failures.inc();
    }

    /// Counts `count` progress events that did not reach Redis.
    pub fn redis_publish_failures_add(&self, count: u64) {
        self.inner.redis_publish_failures.inc_by(count);
    }

    /// Counts one progress event dropped because the publisher's queue was full.
    pub fn progress_event_dropped(&self) {
        self.inner.progress_events_dropped.inc();
    }

    /// The number of progress events dropped at the full queue so far.
    pub fn progress_events_dropped(&self) -> u64 {
        self.inner.progress_events_dropped.get()
    }

    /// The number of progress events that did not reach Redis so far.
    pub fn redis_publish_failures(&self) -> u64 {
        self.inner.redis_publish_failures.get()
    }

    /// Sets how many containers are currently in `phase`.
    pub fn set_containers_in_phase(&self, phase: &str, count: i64) {
        self.inner.containers.get_or_create(&PhaseLabels { phase: phase.to_owned() }).set(count);
    }

    /// The registry in the OpenMetrics text format
    /// (content type [`OPENMETRICS_CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and the registry holds only
        // metrics whose encoders never fail.
        if text::encode(&mut out, &self.inner.registry).is_err() {
            tracing::error!("encoding the metrics registry failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(encoded: &str, prefix: &str) -> Option<f64> {
        encoded
            .lines()
            .find(|line| line.starts_with(prefix) && line[prefix.len()..].starts_with(' '))
            .and_then(|line| line[prefix.len()..].trim().parse().ok())
    }

    #[test]
    fn counters_appear_with_their_published_names() {
        let metrics = Metrics::new();
        metrics.reconcile();
        metrics.reconcile();
        metrics.reconcile_failure("proxmox");
        metrics.redis_publish_failure();
        let encoded = metrics.encode();
        assert_eq!(line_value(&encoded, "infrahaus_reconciles_total"), Some(2.0), "{encoded}");
        assert_eq!(
            line_value(&encoded, r#"infrahaus_reconcile_failures_total{reason="proxmox"}"#),
            Some(1.0),
            "{encoded}"
        );
        assert_eq!(line_value(&encoded, "infrahaus_redis_publish_failures_total"), Some(1.0));
        assert_eq!(metrics.redis_publish_failures(), 1);
        assert!(encoded.ends_with("# EOF\n"), "{encoded}");
    }

    #[test]
    fn proxmox_requests_are_labelled_by_endpoint_and_status() {
        let metrics = Metrics::new();
        let cases = [("/nodes/{node}/lxc", 200, 2), ("/nodes/{node}/lxc", 500, 1), ("/version", 0, 1)];
        for (endpoint, status, times) in cases {
            for _ in 0..times {
                metrics.proxmox_request(endpoint, status);
            }
        }
        let encoded = metrics.encode();
        for (endpoint, status, times) in cases {
            let series = format!(r#"infrahaus_proxmox_requests_total{{endpoint="{endpoint}",status="{status}"}}"#);
            assert_eq!(line_value(&encoded, &series), Some(f64::from(times)), "{series} in {encoded}");
        }
    }

    #[test]
    fn stage_durations_form_a_histogram_in_seconds() {
        let metrics = Metrics::new();
        metrics.stage_duration("creating", 3.0);
        metrics.stage_duration("creating", 0.2);
        metrics.stage_duration("syncing", 700.0);
        let encoded = metrics.encode();
        assert!(encoded.contains("# TYPE infrahaus_stage_duration_seconds histogram"), "{encoded}");
        assert!(encoded.contains("# UNIT infrahaus_stage_duration_seconds seconds"), "{encoded}");
        assert_eq!(line_value(&encoded, r#"infrahaus_stage_duration_seconds_count{stage="creating"}"#), Some(2.0));
        assert_eq!(line_value(&encoded, r#"infrahaus_stage_duration_seconds_sum{stage="creating"}"#), Some(3.2));
        assert_eq!(
            line_value(&encoded, r#"infrahaus_stage_duration_seconds_bucket{le="600.0",stage="syncing"}"#),
            Some(0.0),
            "{encoded}"
        );
        assert_eq!(
            line_value(&encoded, r#"infrahaus_stage_duration_seconds_bucket{le="1800.0",stage="syncing"}"#),
            Some(1.0),
            "{encoded}"
        );
    }

    #[test]
    fn containers_gauge_is_set_per_phase() {
        let metrics = Metrics::new();
        let fresh = metrics.encode();
        assert_eq!(line_value(&fresh, r#"infrahaus_containers{phase="Pending"}"#), Some(0.0), "{fresh}");
        assert_eq!(line_value(&fresh, r#"infrahaus_containers{phase="Ready"}"#), Some(0.0), "{fresh}");
        metrics.set_containers_in_phase("Ready", 3);
        metrics.set_containers_in_phase("Ready", 2);
        metrics.set_containers_in_phase("Error", 1);
        let encoded = metrics.encode();
        assert_eq!(line_value(&encoded, r#"infrahaus_containers{phase="Ready"}"#), Some(2.0));
        assert_eq!(line_value(&encoded, r#"infrahaus_containers{phase="Error"}"#), Some(1.0));
    }

    #[test]
    fn clones_share_one_registry() {
        let metrics = Metrics::new();
        metrics.clone().reconcile();
        assert_eq!(line_value(&metrics.encode(), "infrahaus_reconciles_total"), Some(1.0));
    }
}
