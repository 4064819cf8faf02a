//! The Container controller: resolves a Container's references, then hands it
//! to the pipeline (apply) or to cleanup (deletion) through the finalizer.

mod cleanup;
mod job;
mod pipeline;
mod plan;
mod power;
mod reconfigure;
mod resolve;
mod settings;
mod stages;

use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;
use tracing::{info_span, Instrument};

use super::{Context, RunOptions};
use crate::crd::{Container, ContainerTemplate, Phase};
use crate::error::Error;
use crate::k8s;

const FINALIZER: &str = "infrahaus.io/cleanup";

/// When a Container queued for a node slot is looked at again if no released
/// slot woke it first (with up to 50% jitter).
const QUEUED_FALLBACK: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the Container controller until `shutdown` resolves; reconciles in
/// flight then finish before this returns.
pub(crate) async fn run(
    ctx: Arc<Context>,
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let containers: Api<Container> = options.watched(ctx.client.clone());
    let config = kube::runtime::controller::Config::default().concurrency(options.concurrency.max(1));
    let mut controller = Controller::new(containers, watcher::Config::default()).with_config(config);
    if let Some(mut woken) = ctx.node_limits.woken() {
        controller = controller.reconcile_on(futures::stream::poll_fn(move |cx| woken.poll_recv(cx)));
    }
    let store = controller.store();
    // A changed ContainerTemplate wakes every Container that uses it; the
    // template hash decides whether one is deployed and synced again.
    let users = store.clone();
    let templates: Api<ContainerTemplate> = options.watched(ctx.client.clone());
    controller = controller.watches(templates, watcher::Config::default(), move |template: ContainerTemplate| {
        let (namespace, name) = (template.namespace(), template.name_any());
        users
            .state()
            .into_iter()
            .filter(|ct| ct.namespace() == namespace)
            .filter(|ct| ct.spec.template_ref.as_ref().is_some_and(|r| r.name == name))
            .map(|ct| ObjectRef::from_obj(ct.as_ref()))
            .collect::<Vec<_>>()
    });
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
fn phase_counts(phases: impl Iterator<Item = Option<Phase>>) -> Vec<(&'static str, i64)> {
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
    let ct_uid = ct.uid();
    let api: Api<Container> = Api::namespaced(ctx.client.clone(), &namespace);
    let inner = ctx.clone();
    let action = finalizer(&api, FINALIZER, ct, |event| async move {
        match event {
            FinalizerEvent::Apply(ct) => apply(ct, &inner).await,
            FinalizerEvent::Cleanup(ct) => cleanup::run(ct, &inner).await,
        }
    })
    .instrument(span)
    .await?;
    if let Some(uid) = ct_uid {
        ctx.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid);
    }
    Ok(action)
}

/// Requeues after a transient failure with a per-Container exponential
/// backoff. The wait holds because a repeated failure writes nothing: a
/// status write would be a change that reconciles again at once.
fn error_policy(ct: Arc<Container>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Error::Queued { .. } = error {
        // Woken when a slot is released; this only covers a lost wake.
        tracing::debug!(namespace = ?ct.namespace(), name = %ct.name_any(), %error, "queued for a node slot");
        return Action::requeue(QUEUED_FALLBACK.mul_f64(rand::random_range(1.0..=1.5)));
    }
    ctx.metrics.reconcile_failure(error.metric_label());
    let failures = {
        let mut all = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = all.entry(ct.uid().unwrap_or_default()).or_default();
        *count = count.saturating_add(1);
        *count
    };
    let delay = ctx.timings.backoff(failures);
    tracing::warn!(namespace = ?ct.namespace(), name = %ct.name_any(), %error, failures, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

async fn apply(ct: Arc<Container>, ctx: &Context) -> Result<Action, Error> {
    let decision = match plan::decide(&ct) {
        plan::Decision::Run(run) => run,
        plan::Decision::Idle => match template_changed(&ct, ctx).await? {
            Some(run) => run,
            None => return Ok(Action::await_change()),
        },
    };
    let inputs = match resolve::resolve(&ct, ctx).await {
        Ok(inputs) => inputs,
        Err(error) => {
            resolve::report_unresolved(&ct, ctx, &error).await;
            return Err(error);
        }
    };
    let mut job = job::Job::new(ctx, ct.clone(), inputs);
    match pipeline::run(&mut job, decision).await {
        Ok(()) => Ok(Action::await_change()),
        // The pipeline already recorded a permanent failure as phase Error.
        Err(error) if !error.is_transient() => Ok(Action::await_change()),
        Err(error) => Err(error),
    }
}

/// The first `bytes` bytes of the SHA-256 of `input`, in hex: a short,
/// stable name for what the controller needs to recognise later.
pub(crate) fn short_sha256(input: &[u8], bytes: usize) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(input).iter().take(bytes).map(|b| format!("{b:02x}")).collect()
}

/// For an idle Container: the run a changed template asks for. Only a Ready
/// Container made from a template is looked at, and only its template is
/// read (no node, token or Proxmox request) to compare hashes.
async fn template_changed(ct: &Container, ctx: &Context) -> Result<Option<plan::Run>, Error> {
    if ct.settled_phase() != Some(Phase::Ready) {
        return Ok(None);
    }
    let template = match resolve::template(ct, ctx).await {
        Ok(Some((_, spec))) => spec,
        Ok(None) => return Ok(None),
        Err(error) => {
            tracing::debug!(%error, "the template of a Ready Container cannot be read; nothing to re-sync");
            return Ok(None);
        }
    };
    let current = resolve::template_hash(&template);
    let Some(status) = ct.status.as_ref() else { return Ok(None) };
    match status.template_hash.as_deref() {
        Some(recorded) if recorded != current => Ok(Some(plan::template_changed(ct))),
        Some(_) => Ok(None),
        None => {
            // Ready before templates were hashed: record, re-run nothing.
            let mut recorded = status.clone();
            recorded.template_hash = Some(current);
            let api: Api<Container> = Api::namespaced(ctx.client.clone(), &ct.namespace().unwrap_or_default());
            k8s::apply_status(&api, &ct.name_any(), &recorded).await?;
            Ok(None)
        }
    }
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
}
