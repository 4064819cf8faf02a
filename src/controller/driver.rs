//! The driver: runs the stages in order and owns everything a stage's
//! progress touches: the status (server-side apply), conditions, Kubernetes
//! Events, Redis events and metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use super::plan;
use super::{Context, Inputs};
use crate::crd::conditions::{reasons, set_condition, types, DesiredCondition};
use crate::crd::{Container, ContainerStatus, ContainerTemplateSpec, Phase, StageName, StageState, StageStatus};
use crate::progress::{ContainerRef, LogStream, ProgressEvent};
use crate::proxmox::{self, TaskOutcome, Upid};
use crate::ssh::{self, HostKeyCheck, SshSession, SshTarget, Stream};
use crate::stages::{self, StageError};

pub const FIELD_MANAGER: &str = "infrahaus-operator";

/// Everything one reconcile of one Container works with.
pub struct Job<'a> {
    pub ctx: &'a Context,
    pub ct: Arc<Container>,
    pub api: Api<Container>,
    pub pve: proxmox::Client,
    pub node: String,
    /// Namespace-scoped key of the ProxmoxNode, for the per-node limit.
    pub node_key: String,
    pub max_node_operations: usize,
    pub template: Option<(String, ContainerTemplateSpec)>,
    pub status: ContainerStatus,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    last_percent: i32,
}

impl<'a> Job<'a> {
    pub fn new(ctx: &'a Context, ct: Arc<Container>, inputs: Inputs) -> Self {
        let Inputs { pve, node_name: node, node_key, max_operations: max_node_operations, template } = inputs;
        let namespace = ct.namespace().unwrap_or_default();
        let api = Api::namespaced(ctx.client.clone(), &namespace);
        let status = ct.status.clone().unwrap_or_default();
        let same_generation = status.observed_generation == ct.metadata.generation;
        Self {
            ctx,
            api,
            pve,
            node,
            node_key,
            max_node_operations,
            template,
            // Percent never decreases within a generation, also across restarts.
            last_percent: if same_generation { status.progress.unwrap_or(0) } else { 0 },
            status,
            namespace,
            name: ct.name_any(),
            uid: ct.uid().unwrap_or_default(),
            ct,
        }
    }

    pub fn hostname(&self) -> String {
        self.ct.spec.hostname.clone().unwrap_or_else(|| self.name.clone())
    }

    pub fn vmid(&self) -> Result<u32, StageError> {
        self.status
            .vmid
            .map(|v| v as u32)
            .ok_or_else(|| StageError::transient("no vmid recorded yet; Create must run first"))
    }

    fn vmid_for_events(&self) -> Option<i64> {
        self.status.vmid.map(i64::from)
    }

    /// Writes the whole status with server-side apply.
    pub async fn save(&mut self) -> Result<(), StageError> {
        apply_status(&self.api, &self.name, &self.status).await
    }

    /// Records progress in status and publishes it as a `step` event.
    pub async fn progress(&mut self, percent: i32, message: impl Into<String>) -> Result<(), StageError> {
        let message = message.into();
        let percent = percent.max(self.last_percent);
        self.last_percent = percent;
        self.status.progress = Some(percent);
        self.status.message = Some(message.clone());
        self.save().await?;
        if let Some(stage) = self.current_stage() {
            tracing::debug!(step = stage.as_str(), percent, "{message}");
            let event = ProgressEvent::step(&self.identity(), stage.as_str(), percent as u8, &message)
                .with_vmid(self.vmid_for_events());
            self.ctx.progress.publish(&event).await;
        }
        Ok(())
    }

    /// Publishes one line of script output.
    pub async fn log(&self, script: &str, stream: Stream, line: &str) {
        tracing::debug!(script, ?stream, line, "script output");
        let stream = match stream {
            Stream::Stdout => LogStream::Stdout,
            Stream::Stderr => LogStream::Stderr,
        };
        let event = ProgressEvent::log(
            &self.identity(),
            StageName::Syncing.as_str(),
            self.last_percent as u8,
            stream,
            script,
            line,
        )
        .with_vmid(self.vmid_for_events());
        self.ctx.progress.publish(&event).await;
    }

    fn identity(&self) -> ContainerRef {
        ContainerRef::new(&self.namespace, &self.name, &self.uid)
    }

    fn current_stage(&self) -> Option<StageName> {
        self.status.stages.iter().find(|s| s.state == StageState::Running).map(|s| s.name)
    }

    /// The task in `status.taskRef` if it is of `task_type`.
    pub fn in_flight_task(&self, task_type: &str) -> Result<Option<Upid>, StageError> {
        let Some(text) = &self.status.task_ref else { return Ok(None) };
        let upid: Upid =
            text.parse().map_err(|e| StageError::transient(format!("status.taskRef {text:?} is not a UPID: {e}")))?;
        Ok((upid.task_type() == task_type).then_some(upid))
    }

    /// Persists the task in flight before it is waited on, so a restarted
    /// controller waits on it instead of issuing it again.
    pub async fn set_task(&mut self, upid: &Upid) -> Result<(), StageError> {
        self.status.task_ref = Some(upid.to_string());
        self.save().await
    }

    pub async fn wait_task(&mut self, upid: &Upid) -> Result<TaskOutcome, StageError> {
        let outcome = self.pve.wait_task(upid, self.ctx.timings.task_poll, self.ctx.timings.task_timeout).await?;
        Ok(outcome)
    }

    /// Host-key fingerprints from the create task of `vmid`, found in the
    /// node's task list.
    pub async fn create_log_fingerprints(&self, vmid: u32) -> Result<Vec<String>, StageError> {
        let tasks = self.pve.list_tasks(&self.node, Some(vmid), Some("vzcreate")).await?;
        let Some(task) = tasks.into_iter().next() else { return Ok(Vec::new()) };
        let upid = task.upid().map_err(|e| StageError::transient(format!("task list holds a bad UPID: {e}")))?;
        let log = self.pve.task_log_tail(&upid, stages::create::CREATE_LOG_LINES).await?;
        Ok(proxmox::host_key_fingerprints(log.iter().map(String::as_str)))
    }

    /// A permit of the node's `maxConcurrentOperations`.
    pub async fn node_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.ctx.node_limits.acquire(&self.node_key, self.max_node_operations).await
    }

    /// Connects over SSH with the pinned host keys; pins the first key seen
    /// when the create log printed none.
    pub async fn ssh(&mut self, addr: SocketAddr) -> Result<SshSession, StageError> {
        let check = HostKeyCheck::from_pins(self.status.ssh_host_key_fingerprints.clone());
        let trust_first = matches!(check, HostKeyCheck::TrustFirst);
        let target = SshTarget::root(addr, self.ctx.ssh_key.clone(), check);
        let deadline = tokio::time::Instant::now() + self.ctx.timings.boot_timeout;
        let session = ssh::connect_with_retry(&target, deadline).await?;
        if trust_first {
            self.status.ssh_host_key_fingerprints = vec![session.host_key_fingerprint().to_string()];
            self.save().await?;
        }
        Ok(session)
    }

    /// SSH to the address Deploy recorded.
    pub async fn ssh_recorded(&mut self) -> Result<SshSession, StageError> {
        let ip = self
            .status
            .ip_address
            .clone()
            .ok_or_else(|| StageError::transient("no IP address recorded; Deploy must run first"))?;
        let ip: std::net::IpAddr = ip.parse().map_err(|_| {
            StageError::permanent(reasons::INVALID_PARAMETERS, format!("status.ipAddress {ip:?} is not an address"))
        })?;
        self.ssh(SocketAddr::new(ip, stages::SSH_PORT)).await
    }

    /// Metadata for an object the Container owns (garbage-collected with it).
    pub fn owned_metadata(&self, name: &str) -> kube::api::ObjectMeta {
        kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            owner_references: self.ct.controller_owner_ref(&()).map(|r| vec![r]),
            labels: Some(std::collections::BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "infrahaus-operator".to_string(),
            )])),
            ..Default::default()
        }
    }

    /// Runs every stage that has not succeeded yet, in order.
    pub async fn run(&mut self, decision: plan::Run) -> Result<(), StageError> {
        self.begin(&decision);
        for stage in StageName::ALL {
            if self.status.stage_succeeded(stage) {
                continue;
            }
            if self.deletion_requested().await? {
                // Cleanup runs in the next reconcile; no stage is started for
                // a Container that is going away.
                return Ok(());
            }
            self.run_stage(stage).await?;
        }
        self.finish_ready().await
    }

    async fn deletion_requested(&self) -> Result<bool, StageError> {
        let current = self.api.get_opt(&self.name).await?;
        Ok(current.is_none_or(|ct| ct.metadata.deletion_timestamp.is_some()))
    }

    fn begin(&mut self, decision: &plan::Run) {
        for stage in &decision.reset {
            if let Some(entry) = self.status.stage_mut(*stage) {
                entry.state = StageState::Pending;
                entry.finished_at = None;
                entry.message = None;
            }
        }
        self.status.last_applied_retry = decision.retry.clone();
        if self.status.stages.is_empty() {
            self.status.stages = StageName::ALL
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
    }

    async fn run_stage(&mut self, stage: StageName) -> Result<(), StageError> {
        let started = Instant::now();
        let resumed = self.status.stage(stage).is_some_and(|s| s.state == StageState::Running);
        if let Some(entry) = self.status.stage_mut(stage) {
            entry.state = StageState::Running;
            if !resumed {
                entry.started_at = Some(now());
            }
            entry.message = None;
        }
        self.status.phase = Some(stage.phase());
        self.status.node = Some(self.node.clone());
        if !resumed {
            self.event(EventType::Normal, "StageStarted", stage, format!("{stage} started")).await;
        }
        self.progress(stages::start_percent(stage), stages::start_message(stage)).await?;

        let result = match stage {
            StageName::Creating => stages::create::run(self).await,
            StageName::Starting => stages::start::run(self).await,
            StageName::Deploying => stages::deploy::run(self).await,
            StageName::Syncing => stages::sync::run(self).await,
            StageName::Finalizing => stages::finalize::run(self).await,
        };
        self.ctx.metrics.stage_duration(stage.as_str(), started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                let message = self.status.message.clone().unwrap_or_default();
                if let Some(entry) = self.status.stage_mut(stage) {
                    entry.state = StageState::Succeeded;
                    entry.finished_at = Some(now());
                    entry.message = Some(message.clone());
                }
                if let Some(condition) = stage_condition(stage) {
                    set_condition(
                        &mut self.status.conditions,
                        DesiredCondition::truthy(
                            condition,
                            reasons::SUCCEEDED,
                            message.clone(),
                            self.ct.metadata.generation,
                        ),
                        &now(),
                    );
                }
                self.save().await?;
                self.event(EventType::Normal, "StageSucceeded", stage, format!("{stage} succeeded: {message}")).await;
                Ok(())
            }
            Err(error) if error.is_transient() => {
                let message = format!("{stage}: {error} (retrying)");
                self.status.message = Some(message.clone());
                if let Some(entry) = self.status.stage_mut(stage) {
                    entry.message = Some(error.to_string());
                }
                self.save().await?;
                self.event(EventType::Warning, "StageRetrying", stage, message).await;
                Err(error)
            }
            Err(error) => {
                self.fail(stage, &error).await?;
                Err(error)
            }
        }
    }

    async fn fail(&mut self, stage: StageName, error: &StageError) -> Result<(), StageError> {
        let message = format!("{stage} failed: {error}");
        if let Some(entry) = self.status.stage_mut(stage) {
            entry.state = StageState::Failed;
            entry.finished_at = Some(now());
            entry.message = Some(error.to_string());
        }
        self.status.phase = Some(Phase::Error);
        self.status.message = Some(message.clone());
        self.status.task_ref = None;
        self.status.observed_generation = self.ct.metadata.generation;
        let at = now();
        if let Some(condition) = stage_condition(stage) {
            set_condition(
                &mut self.status.conditions,
                DesiredCondition::falsy(condition, error.reason(), message.clone(), self.ct.metadata.generation),
                &at,
            );
        }
        set_condition(
            &mut self.status.conditions,
            DesiredCondition::falsy(types::READY, error.reason(), message.clone(), self.ct.metadata.generation),
            &at,
        );
        self.save().await?;
        self.event(EventType::Warning, "StageFailed", stage, message.clone()).await;
        let event = ProgressEvent::error(&self.identity(), stage.as_str(), self.last_percent as u8, &message)
            .with_vmid(self.vmid_for_events());
        self.ctx.progress.publish(&event).await;
        self.ctx.metrics.reconcile_failure(error.reason());
        Ok(())
    }

    async fn finish_ready(&mut self) -> Result<(), StageError> {
        let vmid = self.status.vmid.unwrap_or_default();
        let message = "Container ready".to_string();
        self.last_percent = 100;
        self.status.phase = Some(Phase::Ready);
        self.status.progress = Some(100);
        self.status.message = Some(message.clone());
        self.status.task_ref = None;
        self.status.observed_generation = self.ct.metadata.generation;
        set_condition(
            &mut self.status.conditions,
            DesiredCondition::truthy(
                types::READY,
                reasons::SUCCEEDED,
                format!("CT {vmid} is ready"),
                self.ct.metadata.generation,
            ),
            &now(),
        );
        self.save().await?;
        self.event(EventType::Normal, "Ready", StageName::Finalizing, format!("CT {vmid} is ready")).await;
        let event = ProgressEvent::complete(&self.identity(), &message).with_vmid(self.vmid_for_events());
        self.ctx.progress.publish(&event).await;
        Ok(())
    }

    /// Logs and publishes a Kubernetes Event whose action is the stage.
    pub async fn event(&self, type_: EventType, reason: &str, stage: StageName, note: String) {
        publish_event(self.ctx, &self.ct, type_, reason, stage_action(stage), note).await;
    }
}

/// Logs and publishes a Kubernetes Event on a Container; failure to publish
/// is logged, not fatal.
pub async fn publish_event(ctx: &Context, ct: &Container, type_: EventType, reason: &str, action: &str, note: String) {
    match type_ {
        EventType::Normal => tracing::info!(reason, action, "{note}"),
        EventType::Warning => tracing::warn!(reason, action, "{note}"),
    }
    let event = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(error) = ctx.recorder.publish(&event, &ct.object_ref(&())).await {
        tracing::warn!(%error, "could not publish Kubernetes Event");
    }
}

/// Writes a Container's whole status with server-side apply. The controller
/// owns every status field, so it always applies all of them.
pub async fn apply_status(api: &Api<Container>, name: &str, status: &ContainerStatus) -> Result<(), StageError> {
    let patch = json!({
        "apiVersion": "infrahaus.io/v1alpha1",
        "kind": "Container",
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// The guest's config, or `None` when there is no guest at `vmid`.
pub async fn existing_config(
    pve: &proxmox::Client,
    node: &str,
    vmid: u32,
) -> Result<Option<proxmox::LxcConfig>, StageError> {
    match pve.lxc_config(node, vmid).await {
        Ok(config) => Ok(Some(config)),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The Event action of a stage (Events of one action and reason are
/// aggregated, so each stage gets its own).
fn stage_action(stage: StageName) -> &'static str {
    match stage {
        StageName::Creating => "Create",
        StageName::Starting => "Start",
        StageName::Deploying => "Deploy",
        StageName::Syncing => "Sync",
        StageName::Finalizing => "Finalize",
    }
}

fn stage_condition(stage: StageName) -> Option<&'static str> {
    match stage {
        StageName::Creating => Some(types::CREATED),
        StageName::Starting => Some(types::STARTED),
        StageName::Deploying => Some(types::DEPLOYED),
        StageName::Syncing => Some(types::SYNCED),
        StageName::Finalizing => None,
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}
