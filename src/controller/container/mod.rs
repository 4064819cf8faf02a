//! The Container controller: resolves a Container's references, then hands it
//! to the pipeline (apply) or to cleanup (deletion) through the finalizer.

mod cleanup;
mod drift;
mod job;
mod pipeline;
mod plan;
mod power;
mod reconfigure;
mod resolve;
mod settings;
mod stages;
mod writer;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::{self, reflector, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use tracing::{info_span, Instrument};

use super::{Context, RunOptions};
use crate::crd::conditions::{reasons, set_condition, types, DesiredCondition};
use crate::crd::{Container, ContainerTemplate, ContainerTemplateSpec, Phase, TemplateSync, RETRY_ANNOTATION};
use crate::error::Error;
use crate::k8s;

const FINALIZER: &str = "infrahaus.io/cleanup";

/// Reconciles that may run beside the `--concurrency` ones in pipeline
/// stages.
const RECONCILES_BESIDE_THE_PIPELINE: u16 = 16;

/// Where `kubectl apply` (client-side) keeps the manifest it applied.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `ct` without what the controller never reads: its managed fields (a
/// server-side applied status lists each of its fields there) and kubectl's
/// copy of the last applied manifest.
fn leave_out_cache_extras(ct: &mut Container) {
    ct.managed_fields_mut().clear();
    ct.annotations_mut().remove(LAST_APPLIED_ANNOTATION);
}

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
    // `--concurrency` bounds the Containers in pipeline stages (a slot each,
    // taken in the pipeline); the reconciles beside them are short (waits
    // for a slot, cleanup, drift checks, configuration changes), so that
    // many more may run.
    let reconciles = options.concurrency.max(1).saturating_add(RECONCILES_BESIDE_THE_PIPELINE);
    let config = kube::runtime::controller::Config::default().concurrency(reconciles);
    // The cache holds every Container; what the controller never reads is
    // left out of it: the managed fields (a server-side applied status
    // lists each of its fields there) and kubectl's copy of the last
    // applied manifest.
    let (store, writer) = reflector::store::<Container>();
    let applied = watcher(containers, watcher::Config::default())
        .modify(leave_out_cache_extras)
        .reflect(writer)
        .applied_objects();
    let mut controller = Controller::for_stream(applied, store).with_config(config);
    if let Some(mut woken) = ctx.node_limits.woken() {
        controller = controller.reconcile_on(futures::stream::poll_fn(move |cx| woken.poll_recv(cx)));
    }
    let store = controller.store();
    // A changed ContainerTemplate, or a changed ConfigMap or Secret a
    // template's file comes from, wakes every Container that uses it; the
    // template hash decides whether one is deployed and synced again.
    let (templates, writer) = reflector::store::<ContainerTemplate>();
    let (users, woken) = (store.clone(), ctx.clone());
    let template_changes = triggers(
        reflector(
            writer,
            watcher(options.watched::<ContainerTemplate>(ctx.client.clone()), watcher::Config::default()),
        ),
        move |template: ContainerTemplate| {
            let name = template.name_any();
            let uses = |ct: &Container| ct.spec.template_ref.as_ref().is_some_and(|r| r.name == name);
            users_of(&users, &woken, template.namespace(), uses)
        },
    );
    let config_maps = metadata_only::<ConfigMap>(&options, &ctx.client);
    controller = controller
        .reconcile_on(template_changes)
        .reconcile_on(triggers(config_maps, source_users(&templates, &store, &ctx, false)));
    // Watching Secrets needs list and watch on every Secret; without it a
    // changed Secret is found at the next resync (the hash reads it).
    if options.watch_secrets {
        let secrets = metadata_only::<Secret>(&options, &ctx.client);
        controller = controller.reconcile_on(triggers(secrets, source_users(&templates, &store, &ctx, true)));
    }
    tokio::spawn(wake_when_a_node_answers(ctx.clone()));
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

/// Containers that failed because a Proxmox node did not answer wait out a
/// backoff of up to minutes; when a node answers again (its circuit breaker
/// closes), they are reconciled at once instead. Those waiting for another
/// node that is still down fail fast without a request.
async fn wake_when_a_node_answers(ctx: Arc<Context>) {
    loop {
        ctx.node_back.notified().await;
        let woken: Vec<ObjectRef<Container>> = {
            let mut all = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
            all.values_mut()
                .filter_map(|backoff| {
                    let who = backoff.node_down.take()?;
                    backoff.until = None;
                    Some(who)
                })
                .collect()
        };
        if !woken.is_empty() {
            tracing::info!(
                containers = woken.len(),
                "a Proxmox node answers again; waking the Containers that waited for it"
            );
        }
        for who in woken {
            ctx.node_limits.wake(who);
        }
    }
}

/// The metadata of the watched objects of kind `K`: a change is all that
/// matters, and no Secret's data is held in memory.
fn metadata_only<K>(
    options: &RunOptions,
    client: &kube::Client,
) -> impl futures::Stream<Item = Result<watcher::Event<PartialObjectMeta<K>>, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<PartialObjectMeta<K>> = match &options.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    watcher(api, watcher::Config::default())
}

/// Maps a changed ConfigMap (`secret` false) or Secret to the Containers made
/// from a template that takes a file from it.
fn source_users<K>(
    templates: &Store<ContainerTemplate>,
    users: &Store<Container>,
    ctx: &Arc<Context>,
    secret: bool,
) -> impl Fn(PartialObjectMeta<K>) -> Vec<ObjectRef<Container>> + Send + 'static {
    let (templates, users, ctx) = (templates.clone(), users.clone(), ctx.clone());
    move |meta| {
        let (namespace, name) = (meta.metadata.namespace, meta.metadata.name.unwrap_or_default());
        let using: Vec<String> = templates
            .state()
            .iter()
            .filter(|t| t.namespace() == namespace && resolve::uses_source(&t.spec, secret, &name))
            .map(|t| t.name_any())
            .collect();
        users_of(&users, &ctx, namespace, |ct| ct.spec.template_ref.as_ref().is_some_and(|r| using.contains(&r.name)))
    }
}

/// The Containers to reconcile for each object `events` reports changed,
/// added or deleted, as `map` names them. A failed watch is retried with
/// backoff (logged), as the controller's own watches are.
fn triggers<K, S>(
    events: S,
    map: impl Fn(K) -> Vec<ObjectRef<Container>> + Send + 'static,
) -> impl futures::Stream<Item = ObjectRef<Container>> + Send + 'static
where
    K: kube::Resource + Clone + Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    events
        .default_backoff()
        .touched_objects()
        .filter_map(|result| {
            futures::future::ready(match result {
                Ok(object) => Some(object),
                Err(error) => {
                    tracing::warn!(%error, "watch failed; retrying");
                    None
                }
            })
        })
        .flat_map(move |object| futures::stream::iter(map(object)))
}

/// The Containers of `namespace` in `store` that `uses` picks, each woken
/// at once even when in a backoff: what it uses changed.
fn users_of(
    store: &Store<Container>,
    ctx: &Context,
    namespace: Option<String>,
    uses: impl Fn(&Container) -> bool,
) -> Vec<ObjectRef<Container>> {
    store
        .state()
        .into_iter()
        .filter(|ct| ct.namespace() == namespace && uses(ct))
        .inspect(|ct| nudge(ct, ctx))
        .map(|ct| ObjectRef::from_obj(ct.as_ref()))
        .collect()
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
    if let Some(wait) = backoff_holds(&ct, &ctx) {
        // Woken by its own status write (or another change of status only)
        // while it waits out a backoff: nothing the user did; wait on.
        return Ok(Action::requeue(wait));
    }
    ctx.metrics.reconcile();
    let ct_uid = ct.uid();
    let api: Api<Container> = Api::namespaced(ctx.client.clone(), &namespace);
    let inner = ctx.clone();
    let action = finalizer(&api, FINALIZER, ct, |event| async move {
        match event {
            FinalizerEvent::Apply(ct) => apply(ct, &inner).await,
            FinalizerEvent::Cleanup(ct) => {
                drift::forget(&ct, &inner);
                cleanup::run(ct, &inner).await
            }
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
/// backoff. A stage that failed may have written progress first, and each
/// status write wakes the Container at once: [`backoff_holds`] lets such a
/// wake wait out the backoff, so it holds however much a failing attempt
/// wrote.
fn error_policy(ct: Arc<Container>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Error::Queued { .. } = error {
        // Woken when a slot is released; this only covers a lost wake.
        tracing::debug!(namespace = ?ct.namespace(), name = %ct.name_any(), %error, "queued for a slot");
        return Action::requeue(QUEUED_FALLBACK.mul_f64(rand::random_range(1.0..=1.5)));
    }
    ctx.metrics.reconcile_failure(error.metric_label());
    let (failures, delay) = {
        let mut all = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let backoff = all.entry(ct.uid().unwrap_or_default()).or_default();
        backoff.failures = backoff.failures.saturating_add(1);
        let delay = ctx.timings.backoff(backoff.failures);
        backoff.until = Some(tokio::time::Instant::now() + delay);
        backoff.wanted = wanted(&ct);
        backoff.node_down = matches!(error, Error::NodeDown { .. }).then(|| ObjectRef::from_obj(ct.as_ref()));
        (backoff.failures, delay)
    };
    tracing::warn!(namespace = ?ct.namespace(), name = %ct.name_any(), %error, failures, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// What a user changes to ask for something new: the spec (generation),
/// the annotations (retry, accepted host key) and a deletion. A wake with
/// all of these as they were at the last failure changed status only.
fn wanted(ct: &Container) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ct.metadata.generation.hash(&mut hasher);
    ct.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    ct.metadata.annotations.hash(&mut hasher);
    hasher.finish()
}

/// The rest of the backoff `ct` is in, when nothing it is wanted for changed
/// since the failure. A wake that brings news from elsewhere (a template or
/// ConfigMap change) ends the wait first, see [`nudge`].
fn backoff_holds(ct: &Container, ctx: &Context) -> Option<std::time::Duration> {
    let all = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    let backoff = all.get(&ct.uid()?)?;
    let left = backoff.until?.checked_duration_since(tokio::time::Instant::now())?;
    (backoff.wanted == wanted(ct)).then_some(left)
}

/// Ends the backoff wait of `ct` (its failure count stays): something it
/// depends on changed, so the next attempt runs at once.
fn nudge(ct: &Container, ctx: &Context) {
    if let Some(backoff) = ctx.failures.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&ct.uid().unwrap_or_default())
    {
        backoff.until = None;
    }
}

async fn apply(ct: Arc<Container>, ctx: &Context) -> Result<Action, Error> {
    let ct = match plan::decide(&ct) {
        plan::Decision::Idle => ct,
        // The cache may not have the controller's own last status write yet
        // (a wake that follows a run closely): a run is decided on the
        // Container as the API server has it.
        plan::Decision::Run(_) => {
            match Api::<Container>::namespaced(ctx.client.clone(), &ct.namespace().unwrap_or_default())
                .get_opt(&ct.name_any())
                .await?
            {
                Some(mut current) => {
                    leave_out_cache_extras(&mut current);
                    Arc::new(current)
                }
                None => return Ok(Action::await_change()),
            }
        }
    };
    let decision = match plan::decide(&ct) {
        plan::Decision::Run(run) => run,
        plan::Decision::Idle => match idle(&ct, ctx).await? {
            Some(run) => run,
            None => return Ok(settled(&ct, ctx)),
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
    let result = pipeline::run(&mut job, decision).await;
    job.close_ssh().await;
    // Progress written in the background lands before the next reconcile.
    let flushed = job.flush().await;
    let result = result.and(flushed);
    let ct = Container { status: Some(job.status.clone()), ..(*ct).clone() };
    match result {
        Ok(()) => {
            // The guest is as the spec asks now: the next check is due in
            // a resync interval, not at the wake this status write causes.
            drift::checked(&ct, ctx);
            Ok(settled(&ct, ctx))
        }
        // The pipeline already recorded a permanent failure as phase Error.
        Err(error) if !error.is_transient() => Ok(Action::await_change()),
        Err(error) => Err(error),
    }
}

/// When a settled Container is looked at again without a change: a Ready
/// one after a resync interval, to find drift; an Error only on a change.
fn settled(ct: &Container, ctx: &Context) -> Action {
    let ready = ct.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready);
    match ctx.timings.next_resync().filter(|_| ready) {
        Some(wait) => Action::requeue(wait),
        None => Action::await_change(),
    }
}

/// For an idle Container: the run its changed template or a drifted guest
/// asks for. Only a Ready Container is looked at: its template is read to
/// compare hashes, and once per resync interval its guest is compared with
/// the spec (one status and one config request, no SSH).
async fn idle(ct: &Container, ctx: &Context) -> Result<Option<plan::Run>, Error> {
    if ct.settled_phase() != Some(Phase::Ready) {
        return Ok(None);
    }
    let template = match resolve::template(ct, ctx).await {
        Ok(template) => template,
        Err(error) => {
            tracing::debug!(%error, "the template of a Ready Container cannot be read; nothing to re-sync");
            return Ok(None);
        }
    };
    if let Some((name, spec)) = &template {
        if let Some(run) = template_changed(ct, ctx, name, spec).await? {
            return Ok(Some(run));
        }
    }
    drift::check(ct, ctx, template.as_ref().map(|(_, spec)| spec)).await
}

/// The run a changed template asks for, or none when its hash is the one
/// recorded. With `templateSync: Manual` the change is shown in the
/// condition TemplateOutOfSync instead, and the retry annotation runs it.
async fn template_changed(
    ct: &Container,
    ctx: &Context,
    name: &str,
    template: &ContainerTemplateSpec,
) -> Result<Option<plan::Run>, Error> {
    let namespace = ct.namespace().unwrap_or_default();
    let current = match resolve::template_hash(&ctx.client, &namespace, template).await {
        Ok(hash) => hash,
        Err(error) => {
            tracing::debug!(%error, "the template of a Ready Container cannot be resolved; nothing to re-sync");
            return Ok(None);
        }
    };
    let Some(status) = ct.status.as_ref() else { return Ok(None) };
    let mut recorded = status.clone();
    let changed = match status.template_hash.as_deref() {
        Some(hash) => hash != current,
        None => {
            // Ready before templates were hashed: record, re-run nothing.
            recorded.template_hash = Some(current);
            false
        }
    };
    let manual = ct.spec.template_sync == TemplateSync::Manual;
    if changed && !manual {
        return Ok(Some(plan::template_changed(ct)));
    }
    if manual || changed {
        let desired = match changed {
            true => DesiredCondition::truthy(
                types::TEMPLATE_OUT_OF_SYNC,
                reasons::TEMPLATE_CHANGED,
                format!(
                    "ContainerTemplate {name} changed since the guest was synced from it; templateSync is Manual: \
                     set the annotation {RETRY_ANNOTATION} to deploy and sync it"
                ),
                ct.metadata.generation,
            ),
            false => in_sync(ct),
        };
        if changed || recorded.conditions.iter().any(|c| c.type_ == types::TEMPLATE_OUT_OF_SYNC) {
            set_condition(&mut recorded.conditions, desired, &pipeline::now());
        }
    }
    if &recorded != status {
        let api: Api<Container> = Api::namespaced(ctx.client.clone(), &namespace);
        k8s::apply_status(&api, &ct.name_any(), &recorded).await?;
    }
    Ok(None)
}

/// TemplateOutOfSync turned False: the guest is synced from the template as
/// it is now.
pub(super) fn in_sync(ct: &Container) -> DesiredCondition {
    DesiredCondition::falsy(
        types::TEMPLATE_OUT_OF_SYNC,
        reasons::IN_SYNC,
        "the guest is synced from the template as it is",
        ct.metadata.generation,
    )
}

/// The first `bytes` bytes of the SHA-256 of `input`, in hex: a short,
/// stable name for what the controller needs to recognise later.
pub(crate) fn short_sha256(input: &[u8], bytes: usize) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(input).iter().take(bytes).map(|b| format!("{b:02x}")).collect()
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
