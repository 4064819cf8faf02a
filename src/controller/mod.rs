//! The Container controller: resolves a Container's references, then hands it
//! to the driver (apply) or to cleanup (deletion) through the finalizer.

pub mod cleanup;
pub mod driver;
pub mod node;
pub mod plan;
pub mod sshkey;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::watcher;
use kube::ResourceExt;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tracing::{info_span, Instrument};

use crate::crd::{conditions::reasons, Container, ContainerTemplate, Phase, ProxmoxNode};
use crate::metrics::Metrics;
use crate::progress::ProgressSink;
use crate::proxmox::{self, ClientConfig};
use crate::ssh::SshKeyPair;
use crate::stages::{StageError, Timings};

pub const FINALIZER: &str = "infrahaus.io/cleanup";

/// Shared by every reconcile.
pub struct Context {
    pub client: kube::Client,
    pub metrics: Metrics,
    pub progress: Arc<dyn ProgressSink>,
    pub recorder: Recorder,
    pub ssh_key: SshKeyPair,
    pub ssh_public_key: String,
    pub node_limits: NodeLimits,
    pub timings: Timings,
}

/// One semaphore per ProxmoxNode, sized by its `maxConcurrentOperations`.
#[derive(Default)]
pub struct NodeLimits {
    semaphores: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
}

impl NodeLimits {
    pub async fn acquire(&self, key: &str, limit: usize) -> Option<OwnedSemaphorePermit> {
        let limit = limit.max(1);
        let semaphore = {
            let mut map = self.semaphores.lock().await;
            let entry = map.entry(key.to_string()).or_insert_with(|| (limit, Arc::new(Semaphore::new(limit))));
            if entry.0 != limit {
                *entry = (limit, Arc::new(Semaphore::new(limit)));
            }
            entry.1.clone()
        };
        semaphore.acquire_owned().await.ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Stage(e) if e.is_transient() => "transient",
            Error::Stage(e) => e.reason(),
            Error::Finalizer(_) => "finalizer",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub watch_namespace: Option<String>,
    pub concurrency: u16,
}

impl RunOptions {
    /// The objects of kind `K` this controller watches: in one namespace, or
    /// in all.
    pub fn watched<K>(&self, client: kube::Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match &self.watch_namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
}

/// Runs the Container and ProxmoxNode controllers until `shutdown` resolves;
/// reconciles in flight then finish before this returns.
pub async fn run(
    ctx: Arc<Context>,
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    tokio::join!(run_containers(ctx.clone(), options.clone(), shutdown.clone()), node::run(ctx, options, shutdown),);
}

async fn run_containers(
    ctx: Arc<Context>,
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let containers: Api<Container> = options.watched(ctx.client.clone());
    let config = kube::runtime::controller::Config::default().concurrency(options.concurrency.max(1));
    let controller = Controller::new(containers, watcher::Config::default()).with_config(config);
    let store = controller.store();
    let metrics = ctx.metrics.clone();
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile ended with an error");
            }
            for (phase, count) in phase_counts(store.state().iter().map(|ct| ct.status.as_ref().and_then(|s| s.phase)))
            {
                metrics.set_containers_in_phase(phase, count);
            }
            futures::future::ready(())
        })
        .await;
}

/// How many Containers are in each phase (every phase listed, zeros included,
/// so a gauge drops back when the last Container leaves a phase).
pub fn phase_counts(phases: impl Iterator<Item = Option<Phase>>) -> Vec<(&'static str, i64)> {
    let mut counts: Vec<(&'static str, i64)> = Phase::ALL.iter().map(|p| (p.as_str(), 0)).collect();
    for phase in phases {
        let name = phase.unwrap_or_default().as_str();
        if let Some(entry) = counts.iter_mut().find(|(p, _)| *p == name) {
            entry.1 += 1;
        }
    }
    counts
}

async fn reconcile(ct: Arc<Container>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = ct.namespace().unwrap_or_default();
    let name = ct.name_any();
    let vmid = ct.status.as_ref().and_then(|s| s.vmid).or(ct.spec.vmid);
    // `container`, not `name`: JSON logs list a span's own name under `name`.
    let span = info_span!("reconcile", namespace = %namespace, container = %name, vmid = tracing::field::Empty);
    if let Some(vmid) = vmid {
        span.record("vmid", vmid);
    }
    ctx.metrics.reconcile();
    let api: Api<Container> = Api::namespaced(ctx.client.clone(), &namespace);
    let inner = ctx.clone();
    finalizer(&api, FINALIZER, ct, |event| async move {
        match event {
            FinalizerEvent::Apply(ct) => apply(ct, &inner).await,
            FinalizerEvent::Cleanup(ct) => cleanup::run(ct, &inner).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(ct: Arc<Container>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failure(error.metric_label());
    tracing::warn!(namespace = ?ct.namespace(), name = %ct.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(ctx.timings.retry_backoff)
}

async fn apply(ct: Arc<Container>, ctx: &Context) -> Result<Action, Error> {
    let decision = match plan::decide(&ct) {
        plan::Decision::Idle => return Ok(Action::await_change()),
        plan::Decision::Run(run) => run,
    };
    let inputs = match resolve(&ct, ctx).await {
        Ok(inputs) => inputs,
        Err(error) => {
            report_unresolved(&ct, ctx, &error).await;
            return Err(error.into());
        }
    };
    let mut job = driver::Job::new(ctx, ct.clone(), inputs);
    match job.run(decision).await {
        Ok(()) => Ok(Action::await_change()),
        // The driver already recorded a permanent failure as phase Error.
        Err(error) if !error.is_transient() => Ok(Action::await_change()),
        Err(error) => Err(error.into()),
    }
}

/// Shows why a Container cannot start yet (a reference not there yet, an
/// unusable token Secret) in its status, keeping everything else.
async fn report_unresolved(ct: &Container, ctx: &Context, error: &StageError) {
    let mut status = ct.status.clone().unwrap_or_default();
    let message = error.to_string();
    if status.message.as_deref() == Some(message.as_str()) {
        return;
    }
    status.phase.get_or_insert(Phase::Pending);
    status.message = Some(message);
    let api: Api<Container> = Api::namespaced(ctx.client.clone(), &ct.namespace().unwrap_or_default());
    if let Err(error) = driver::apply_status(&api, &ct.name_any(), &status).await {
        tracing::warn!(%error, "could not record why the Container waits");
    }
}

pub struct Inputs {
    pub pve: proxmox::Client,
    pub node_name: String,
    pub node_key: String,
    pub max_operations: usize,
    pub template: Option<(String, crate::crd::ContainerTemplateSpec)>,
}

/// Reads the ProxmoxNode (and its token Secret) and the ContainerTemplate a
/// Container names. A missing reference is waited for, not an Error: it may
/// be applied a moment later by the same `kubectl apply`.
pub async fn resolve(ct: &Container, ctx: &Context) -> Result<Inputs, StageError> {
    let namespace = ct.namespace().unwrap_or_default();
    let nodes: Api<ProxmoxNode> = Api::namespaced(ctx.client.clone(), &namespace);
    let node_name = &ct.spec.node_ref.name;
    let node = nodes
        .get_opt(node_name)
        .await?
        .ok_or_else(|| StageError::transient(format!("waiting for ProxmoxNode {node_name}")))?;
    let pve = proxmox_client(&node, &namespace, ctx).await?;
    let template = match &ct.spec.template_ref {
        Some(r) => {
            let templates: Api<ContainerTemplate> = Api::namespaced(ctx.client.clone(), &namespace);
            let template = templates
                .get_opt(&r.name)
                .await?
                .ok_or_else(|| StageError::transient(format!("waiting for ContainerTemplate {}", r.name)))?;
            Some((r.name.clone(), template.spec))
        }
        None => None,
    };
    Ok(Inputs {
        pve,
        node_name: node.spec.node_name.clone(),
        node_key: format!("{namespace}/{node_name}"),
        max_operations: node.spec.max_concurrent_operations.max(1) as usize,
        template,
    })
}

/// A Proxmox client for a ProxmoxNode, with its token from the Secret it names.
pub async fn proxmox_client(node: &ProxmoxNode, namespace: &str, ctx: &Context) -> Result<proxmox::Client, StageError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret_name = &node.spec.token_secret_ref.name;
    let secret = secrets
        .get_opt(secret_name)
        .await?
        .ok_or_else(|| StageError::transient(format!("waiting for token Secret {secret_name}")))?;
    let value = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                StageError::permanent(
                    reasons::INVALID_REFERENCE,
                    format!("token Secret {secret_name} has no key {key:?} (expected keys tokenId and secret)"),
                )
            })
    };
    let tls = node.spec.tls.clone().unwrap_or_default();
    let token = proxmox::ApiToken::new(value("tokenId")?, value("secret")?);
    let tls = proxmox::TlsOptions {
        ca_bundle: tls.ca_bundle,
        fingerprint: tls.fingerprint,
        insecure_skip_verify: tls.insecure_skip_verify,
    };
    let mut config = ClientConfig::new(node.spec.endpoint.clone(), token, tls);
    let metrics = ctx.metrics.clone();
    config.observer = Some(Arc::new(move |record: &proxmox::RequestRecord| {
        metrics.proxmox_request(record.endpoint, record.status.unwrap_or(0));
    }));
    proxmox::Client::new(config).map_err(|e| {
        StageError::permanent(reasons::INVALID_PARAMETERS, format!("ProxmoxNode {}: {e}", node.name_any()))
    })
}

/// The reporter the controller's Events carry.
pub fn reporter() -> Reporter {
    Reporter { controller: "infrahaus-operator".into(), instance: std::env::var("POD_NAME").ok() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_counts_cover_every_phase() {
        let counts = phase_counts([Some(Phase::Ready), None, Some(Phase::Ready), Some(Phase::Error)].into_iter());
        let get = |name: &str| counts.iter().find(|(p, _)| *p == name).map(|(_, n)| *n);
        assert_eq!(get("Ready"), Some(2));
        assert_eq!(get("Pending"), Some(1), "no status yet counts as Pending");
        assert_eq!(get("Error"), Some(1));
        assert_eq!(get("Creating"), Some(0));
        assert_eq!(counts.len(), Phase::ALL.len());
    }

    #[tokio::test]
    async fn node_limits_cap_concurrent_operations_per_node() {
        let limits = NodeLimits::default();
        let first = limits.acquire("ns/pve1", 2).await;
        let second = limits.acquire("ns/pve1", 2).await;
        assert!(first.is_some() && second.is_some());
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), limits.acquire("ns/pve1", 2)).await;
        assert!(third.is_err(), "a third operation on the node waits");
        let other = tokio::time::timeout(std::time::Duration::from_millis(50), limits.acquire("ns/pve2", 2)).await;
        assert!(other.is_ok_and(|p| p.is_some()), "another node has its own limit");
        drop(first);
        let after = tokio::time::timeout(std::time::Duration::from_millis(50), limits.acquire("ns/pve1", 2)).await;
        assert!(after.is_ok_and(|p| p.is_some()), "a released permit is reused");
    }
}
