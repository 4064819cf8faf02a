//! Sequencing: runs every stage that has not succeeded yet, in order, and
//! records each stage's start, success or failure in status, conditions,
//! Events, Redis and metrics.

use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;

use super::job::{event_percent, Job};
use super::plan;
use super::power;
use super::reconfigure;
use super::resolve;
use super::stages::{self, Stage, STAGES};
use crate::crd::conditions::{reasons, set_condition, types, DesiredCondition};
use crate::crd::{Phase, PowerState, StageName, StageState, StageStatus};
use crate::error::Error;
use crate::k8s;
use crate::progress::ProgressEvent;

/// Runs every stage that has not succeeded yet, in order, then marks the
/// Container Ready.
pub(crate) async fn run(job: &mut Job<'_>, decision: plan::Run) -> Result<(), Error> {
    // Hashed before Deploy reads the files: a source changed meanwhile makes
    // the recorded hash differ, and the next reconcile syncs again.
    if let Some((_, spec)) = &job.template {
        job.template_hash = resolve::template_hash(&job.ctx.client, &job.namespace, spec).await.ok();
    }
    let stopped = job.ct.spec.power_state == PowerState::Stopped;
    // Stopped once Ready: the configuration stays as deployed while the
    // guest is off; it is deployed again when the guest runs again.
    let ready_before = job.status.stage_succeeded(StageName::Finalizing);
    if stopped && ready_before {
        begin(job, &plan::Run { reset: Vec::new(), ..decision.clone() });
    } else {
        begin(job, &decision);
    }
    // A guest that already ran gets changed settings before the configuration
    // is deployed again (a new generation, a retry, a resumed run).
    if job.status.stage_succeeded(StageName::Starting) {
        if let Err(error) = reconfigure::run(job, decision.drift).await {
            reconfigure_failed(job, &error).await?;
            return Err(error);
        }
        if stopped && ready_before {
            power::stop(job).await?;
            return finish_ready(job).await;
        }
        if !stopped && !power::running(job).await? {
            if decision.drift {
                let vmid = job.vmid()?;
                let note =
                    format!("CT {vmid} was stopped outside the operator; starting it again (powerState Running)");
                job.event(EventType::Warning, reasons::DRIFT_CORRECTED, reconfigure::ACTION, note).await;
            }
            // Stopped (by powerState, or by hand): Start runs again, and
            // with it everything after it.
            reset(job, &[StageName::Starting, StageName::Deploying, StageName::Syncing, StageName::Finalizing]);
        }
    }
    // The stages are the long work (Proxmox tasks, SSH, scripts): at most
    // `--concurrency` Containers run them at once. The slot is tried, never
    // waited for (see `controller::slots`), and a reconcile that waits for
    // one ends: deletions, drift checks and the configuration changes above
    // go on at once while every slot is busy with long scripts.
    let _slot = if next_stage(job).is_some() { Some(pipeline_slot(job).await?) } else { None };
    for stage in &STAGES {
        if job.status.stage_succeeded(stage.name) {
            continue;
        }
        if deletion_requested(job).await? {
            // Cleanup runs in the next reconcile; no stage is started for
            // a Container that is going away.
            return Ok(());
        }
        run_stage(job, stage).await?;
    }
    if stopped {
        power::stop(job).await?;
    }
    finish_ready(job).await
}

/// The first stage that has not succeeded yet: where a run goes on.
fn next_stage(job: &Job<'_>) -> Option<&'static Stage> {
    STAGES.iter().find(|stage| !job.status.stage_succeeded(stage.name))
}

/// One of the controller's pipeline slots, or [`Error::Queued`] with the
/// wait recorded in the status message.
async fn pipeline_slot(job: &mut Job<'_>) -> Result<crate::controller::NodePermit, Error> {
    match job.pipeline_permit() {
        Ok(permit) => Ok(permit),
        Err(error) => {
            job.status.phase.get_or_insert(Phase::Pending);
            job.status.message = Some(error.to_string());
            job.save().await?;
            Err(error)
        }
    }
}

async fn deletion_requested(job: &Job<'_>) -> Result<bool, Error> {
    let current = job.api.get_opt(&job.name).await?;
    Ok(current.is_none_or(|ct| ct.metadata.deletion_timestamp.is_some()))
}

/// Marks `stages` to run again.
fn reset(job: &mut Job<'_>, stages: &[StageName]) {
    for stage in stages {
        if let Some(entry) = job.status.stage_mut(*stage) {
            entry.state = StageState::Pending;
            entry.finished_at = None;
            entry.message = None;
        }
    }
}

fn begin(job: &mut Job<'_>, decision: &plan::Run) {
    reset(job, &decision.reset);
    job.status.last_applied_retry = decision.retry.clone();
    if job.status.stages.is_empty() {
        job.status.stages = StageName::ALL
            .iter()
            .map(|name| StageStatus {
                name: *name,
                state: StageState::Pending,
                started_at: None,
                finished_at: None,
                message: None,
            })
            .collect();
    }
    // A run out of Error is underway from here: the phase names the first
    // stage it runs, so no status written before that stage starts (a
    // reconfiguration, progress) shows Error next to the retry it acts on.
    if job.status.phase == Some(Phase::Error) {
        job.status.phase = Some(next_stage(job).map_or(Phase::Finalizing, |stage| stage.phase));
        job.status.message = None;
    }
}

async fn run_stage(job: &mut Job<'_>, stage: &Stage) -> Result<(), Error> {
    let name = stage.name;
    let started = Instant::now();
    let resumed = job.status.stage(name).is_some_and(|s| s.state == StageState::Running);
    // A stage resumed after a transient failure keeps its "(retrying)"
    // message: a repeated failure then writes nothing, and its backoff holds.
    let retrying = resumed && job.status.stage(name).is_some_and(|s| s.message.is_some());
    if let Some(entry) = job.status.stage_mut(name) {
        entry.state = StageState::Running;
        if !resumed {
            entry.started_at = Some(now());
        }
        entry.message = None;
    }
    job.status.phase = Some(stage.phase);
    job.status.node = Some(job.node.clone());
    if !resumed {
        job.event(EventType::Normal, "StageStarted", stage.action, format!("{name} started")).await;
    }
    job.enter_span(stage.percent);
    if !retrying {
        job.progress(0, stage.start_message).await?;
    }

    let result = stage.run(job).await.map_err(|error| ssh_lost_too_long(job, name, error));
    job.ctx.metrics.stage_duration(name.as_str(), started.elapsed().as_secs_f64());
    // Create keeps its node slot for Start; every other end gives it back.
    if result.is_err() || name != StageName::Creating {
        job.release_node_slot();
    }
    match result {
        Ok(()) => {
            let message = job.status.message.clone().unwrap_or_default();
            if let Some(entry) = job.status.stage_mut(name) {
                entry.state = StageState::Succeeded;
                entry.finished_at = Some(now());
                entry.message = Some(message.clone());
            }
            if let Some(condition) = stage.condition {
                set_condition(
                    &mut job.status.conditions,
                    DesiredCondition::truthy(
                        condition,
                        reasons::SUCCEEDED,
                        message.clone(),
                        job.ct.metadata.generation,
                    ),
                    &now(),
                );
            }
            job.save().await?;
            job.event(EventType::Normal, "StageSucceeded", stage.action, format!("{name} succeeded: {message}")).await;
            Ok(())
        }
        Err(error) if error.is_transient() => {
            if let Some(entry) = job.status.stage_mut(name) {
                entry.message = Some(error.to_string());
            }
            record_retry(job, name.as_str(), stage.action, "StageRetrying", &error).await?;
            Err(error)
        }
        Err(error) => {
            fail(job, stage, &error).await?;
            Err(error)
        }
    }
}

/// An SSH connection lost again and again: once the stage has been running
/// for longer than the boot timeout (counted from its first start, across
/// retries and controller restarts) it fails, reason SshUnreachable.
fn ssh_lost_too_long(job: &Job<'_>, stage: StageName, error: Error) -> Error {
    let Error::SshLost { message } = &error else { return error };
    let started = job.status.stage(stage).and_then(|s| s.started_at.as_ref()).map(|t| t.0);
    let running: Option<std::time::Duration> = started.and_then(|t| Timestamp::now().duration_since(t).try_into().ok());
    match running {
        Some(running) if running > job.ctx.timings.boot_timeout => Error::permanent(
            reasons::SSH_UNREACHABLE,
            format!(
                "the SSH connection to the guest kept failing for {}s (boot timeout {}s): {message}",
                running.as_secs(),
                job.ctx.timings.boot_timeout.as_secs()
            ),
        ),
        _ => error,
    }
}

/// A transient failure of `step`: shown in the status message and, unless it
/// is a wait for a node slot, as a Warning; the reconcile is retried.
async fn record_retry(job: &mut Job<'_>, step: &str, action: &str, reason: &str, error: &Error) -> Result<(), Error> {
    let message = format!("{step}: {error} (retrying)");
    job.status.message = Some(message.clone());
    job.save().await?;
    // Waiting for a node slot is no fault worth a Warning each time.
    if !matches!(error, Error::Queued { .. }) {
        job.event(EventType::Warning, reason, action, message).await;
    }
    Ok(())
}

async fn fail(job: &mut Job<'_>, stage: &Stage, error: &Error) -> Result<(), Error> {
    if let Some(entry) = job.status.stage_mut(stage.name) {
        entry.state = StageState::Failed;
        entry.finished_at = Some(now());
        entry.message = Some(k8s::truncate(&error.to_string(), k8s::STATUS_MESSAGE_LIMIT));
    }
    record_failure(job, stage.name.as_str(), stage.action, "StageFailed", stage.condition, error).await
}

/// A permanent failure of `step`: phase Error for this generation, with
/// `condition` (if any) and Ready False saying why, a Warning, an `error`
/// event and the failure metric.
async fn record_failure(
    job: &mut Job<'_>,
    step: &str,
    action: &str,
    reason: &str,
    condition: Option<&'static str>,
    error: &Error,
) -> Result<(), Error> {
    let message = k8s::truncate(&format!("{step} failed: {error}"), k8s::STATUS_MESSAGE_LIMIT);
    job.status.phase = Some(Phase::Error);
    job.status.message = Some(message.clone());
    job.status.task_ref = None;
    job.status.observed_generation = job.ct.metadata.generation;
    let at = now();
    let generation = job.ct.metadata.generation;
    for condition in condition.into_iter().chain([types::READY]) {
        set_condition(
            &mut job.status.conditions,
            DesiredCondition::falsy(condition, error.reason(), message.clone(), generation),
            &at,
        );
    }
    job.save().await?;
    job.event(EventType::Warning, reason, action, message.clone()).await;
    job.publish(ProgressEvent::error(&job.identity(), step, event_percent(job.last_percent), &message)).await;
    job.ctx.metrics.reconcile_failure(error.reason());
    Ok(())
}

/// A failed reconfiguration: retried with backoff when transient; an Error
/// for this generation when permanent, with Ready False saying why.
async fn reconfigure_failed(job: &mut Job<'_>, error: &Error) -> Result<(), Error> {
    let (step, action) = (reconfigure::STEP, reconfigure::ACTION);
    if error.is_transient() {
        return record_retry(job, step, action, "ReconfigureRetrying", error).await;
    }
    if error.reason() == reasons::GUEST_MISSING {
        forget_guest(job);
    }
    record_failure(job, step, action, "ReconfigureFailed", None, error).await
}

/// The guest is gone: every stage runs again at the retry, Create first,
/// at `spec.vmid` or at a newly allocated one. Nothing of the old guest is
/// kept (address, host keys, task).
fn forget_guest(job: &mut Job<'_>) {
    reset(job, &StageName::ALL);
    if job.ct.spec.vmid.is_none() {
        job.status.vmid = None;
    }
    job.status.ip_address = None;
    job.status.ssh_host_key_fingerprints.clear();
    job.status.task_ref = None;
    job.status.template_hash = None;
    job.status.power_state = None;
}

async fn finish_ready(job: &mut Job<'_>) -> Result<(), Error> {
    let vmid = job.status.vmid.unwrap_or_default();
    let message = match job.ct.spec.power_state {
        PowerState::Running => "Container ready".to_string(),
        PowerState::Stopped => "Container ready, stopped (powerState Stopped)".to_string(),
    };
    job.last_percent = 100;
    job.status.phase = Some(Phase::Ready);
    job.status.progress = Some(100);
    job.status.message = Some(message.clone());
    job.status.task_ref = None;
    job.status.observed_generation = job.ct.metadata.generation;
    job.status.template_hash = match (&job.template, job.template_hash.take()) {
        (None, _) => None,
        (Some(_), Some(hash)) => Some(hash),
        (Some((_, spec)), None) => Some(resolve::template_hash(&job.ctx.client, &job.namespace, spec).await?),
    };
    if job.status.conditions.iter().any(|c| c.type_ == types::TEMPLATE_OUT_OF_SYNC) {
        set_condition(&mut job.status.conditions, super::in_sync(&job.ct), &now());
    }
    // Ready means the guest is as powerState asks: shut down, or running.
    job.status.power_state = Some(job.ct.spec.power_state);
    set_condition(
        &mut job.status.conditions,
        DesiredCondition::truthy(
            types::READY,
            reasons::SUCCEEDED,
            format!("CT {vmid} is ready"),
            job.ct.metadata.generation,
        ),
        &now(),
    );
    job.save().await?;
    let action = stages::stage(StageName::Finalizing).action;
    job.event(EventType::Normal, "Ready", action, format!("CT {vmid} is ready")).await;
    job.publish(ProgressEvent::complete(&job.identity(), &message)).await;
    Ok(())
}

pub(super) fn now() -> Time {
    Time(Timestamp::now())
}
