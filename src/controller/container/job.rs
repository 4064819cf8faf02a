//! One reconcile of one Container: what it works with (the Proxmox client,
//! the node, the template) and everything a stage's progress touches: the
//! status (server-side apply), Kubernetes Events, Redis events. It knows no
//! stage; the pipeline tells it which stage runs and which span of the
//! percent that stage owns.

use std::net::SocketAddr;
use std::sync::Arc;

use kube::api::{Api, ObjectMeta};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use super::resolve::Inputs;
use super::writer::StatusWriter;
use crate::controller::{Context, NodePermit};
use crate::crd::conditions::reasons;
use crate::crd::{
    Container, ContainerStatus, ContainerTemplateSpec, Phase, StageName, StageState, ACCEPT_HOST_KEY_ANNOTATION,
};
use crate::error::Error;
use crate::k8s;
use crate::progress::{ContainerRef, LogStream, ProgressEvent};
use crate::proxmox::{self, TaskOutcome, Upid};
use crate::ssh::{self, HostKeyCheck, SshSession, SshTarget, Stream};

/// Containers are reached over SSH on the standard port.
const SSH_PORT: u16 = 22;
/// The key of the controller's pipeline slots among the node keys
/// (`namespace/name`, which never start with `*`).
const PIPELINE_SLOTS: &str = "*pipeline";
/// A create log is a few dozen lines; this reads all of it.
pub(crate) const CREATE_LOG_LINES: u64 = 500;

/// Everything one reconcile of one Container works with.
pub(crate) struct Job<'a> {
    pub ctx: &'a Context,
    pub ct: Arc<Container>,
    pub api: Api<Container>,
    pub pve: proxmox::Client,
    pub node: String,
    /// Namespace-scoped key of the ProxmoxNode, for the per-node limit.
    pub node_key: String,
    pub max_node_operations: usize,
    pub template: Option<(String, ContainerTemplateSpec)>,
    /// The hash of the template as resolved when the run began (before
    /// Deploy read its files), recorded at Ready.
    pub template_hash: Option<String>,
    pub status: ContainerStatus,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub(super) last_percent: i32,
    /// The percent span of the stage that runs.
    span: (i32, i32),
    /// The status as last read or written, so unchanged status is not written.
    saved: ContainerStatus,
    writer: StatusWriter,
    /// The SSH session of this run, opened by the first stage that needs
    /// one and used by the next (Deploy, Sync and Finalize of one run share
    /// one); forgotten when a task may have restarted the guest.
    session: Option<(std::net::IpAddr, Arc<SshSession>)>,
    /// The node slot this run holds: taken by Create and kept through
    /// Start, so a Container's two tasks follow each other without giving
    /// the slot up (and waking another Container that would find it taken
    /// again) in between.
    node_slot: Option<NodePermit>,
}

/// The percent a run starts from. Percent never decreases within a
/// generation, also across restarts: the recorded percent belongs to this
/// generation unless the status settled an earlier one, so a run in flight
/// (resumed after a restart or a transient failure) and a retry of this
/// generation continue from it.
pub(super) fn resumed_percent(status: &ContainerStatus, generation: Option<i64>) -> i32 {
    let settled = matches!(status.phase, Some(Phase::Ready | Phase::Error));
    let same_generation = !settled || status.observed_generation == generation;
    if same_generation {
        status.progress.unwrap_or(0)
    } else {
        0
    }
}

/// The absolute percent of `step` (0 to 100, clamped) of a stage that owns
/// the percent `span`.
pub(super) fn span_percent(span: (i32, i32), step: i32) -> i32 {
    let (start, end) = span;
    start + (end - start) * step.clamp(0, 100) / 100
}

/// The percent to report after `last`: never below it, so a stage that
/// runs again, or reports out of order, does not move the bar back.
pub(super) fn next_percent(last: i32, percent: i32) -> i32 {
    percent.max(last)
}

/// The percent a progress event carries for the run's `percent`: 0 to 100,
/// like `status.progress` (a value outside that range, written by hand,
/// would otherwise wrap around).
pub(super) fn event_percent(percent: i32) -> u8 {
    percent.clamp(0, 100) as u8
}

impl<'a> Job<'a> {
    pub fn new(ctx: &'a Context, ct: Arc<Container>, inputs: Inputs) -> Self {
        let Inputs { pve, node_name: node, node_key, max_operations: max_node_operations, template } = inputs;
        let namespace = ct.namespace().unwrap_or_default();
        let api = Api::namespaced(ctx.client.clone(), &namespace);
        let status = ct.status.clone().unwrap_or_default();
        let last_percent = resumed_percent(&status, ct.metadata.generation);
        let writer = StatusWriter::new(api.clone(), ct.name_any());
        Self {
            ctx,
            api,
            writer,
            session: None,
            node_slot: None,
            pve,
            node,
            node_key,
            max_node_operations,
            template,
            template_hash: None,
            last_percent,
            span: (0, 100),
            saved: status.clone(),
            status,
            namespace,
            name: ct.name_any(),
            uid: ct.uid().unwrap_or_default(),
            ct,
        }
    }

    pub fn hostname(&self) -> String {
        super::settings::hostname(&self.ct)
    }

    /// The keys root's `authorized_keys` holds for the operator: its own and
    /// `spec.sshPublicKeys`.
    pub fn authorized_keys(&self) -> Vec<String> {
        std::iter::once(self.ctx.ssh_public_key.clone()).chain(self.ct.spec.ssh_public_keys.iter().cloned()).collect()
    }

    pub fn vmid(&self) -> Result<u32, Error> {
        self.status
            .vmid
            .map(|v| v as u32)
            .ok_or_else(|| Error::transient("no vmid recorded yet; Create must run first"))
    }

    fn vmid_for_events(&self) -> Option<i64> {
        self.status.vmid.map(i64::from)
    }

    /// Writes the whole status with server-side apply, when it differs from
    /// what was last read or written, and waits for the write.
    pub async fn save(&mut self) -> Result<(), Error> {
        if self.status == self.saved {
            return Ok(());
        }
        self.writer.write(&self.status).await?;
        self.saved = self.status.clone();
        Ok(())
    }

    /// Like [`Job::save`], in the background: for progress, which the run
    /// need not wait for (see `writer`).
    fn save_soon(&mut self) {
        if self.status != self.saved {
            self.writer.write_soon(self.status.clone());
            self.saved = self.status.clone();
        }
    }

    /// Waits for the status written in the background.
    pub async fn flush(&self) -> Result<(), Error> {
        self.writer.flush().await
    }

    /// Sets the percent span the running stage reports progress in.
    pub(super) fn enter_span(&mut self, span: (i32, i32)) {
        self.span = span;
    }

    /// Records progress in status and publishes it as a `step` event.
    /// `step` is how far the running stage is, 0 to 100 of its own span.
    pub async fn progress(&mut self, step: i32, message: impl Into<String>) -> Result<(), Error> {
        self.report(span_percent(self.span, step), message.into()).await
    }

    /// Records an absolute percent (never below the last one) in status and
    /// publishes it as a `step` event of the running stage.
    async fn report(&mut self, percent: i32, message: String) -> Result<(), Error> {
        let percent = next_percent(self.last_percent, percent);
        self.last_percent = percent;
        self.status.progress = Some(percent);
        self.status.message = Some(message.clone());
        self.save_soon();
        if let Some(stage) = self.current_stage() {
            tracing::debug!(step = stage.as_str(), percent, "{message}");
            let event = ProgressEvent::step(&self.identity(), stage.as_str(), event_percent(percent), &message)
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
        let step = self.current_stage().unwrap_or(StageName::Syncing);
        let event =
            ProgressEvent::log(&self.identity(), step.as_str(), event_percent(self.last_percent), stream, script, line)
                .with_vmid(self.vmid_for_events());
        self.ctx.progress.publish(&event).await;
    }

    /// Publishes a progress event as it is, with the guest's vmid.
    pub(super) async fn publish(&self, event: ProgressEvent) {
        self.ctx.progress.publish(&event.with_vmid(self.vmid_for_events())).await;
    }

    pub(super) fn identity(&self) -> ContainerRef {
        ContainerRef::new(&self.namespace, &self.name, &self.uid)
    }

    fn current_stage(&self) -> Option<StageName> {
        self.status.stages.iter().find(|s| s.state == StageState::Running).map(|s| s.name)
    }

    /// The task in `status.taskRef` if it is of `task_type`.
    pub fn in_flight_task(&self, task_type: &str) -> Result<Option<Upid>, Error> {
        let Some(text) = &self.status.task_ref else { return Ok(None) };
        let upid: Upid =
            text.parse().map_err(|e| Error::transient(format!("status.taskRef {text:?} is not a UPID: {e}")))?;
        Ok((upid.task_type() == task_type).then_some(upid))
    }

    /// Persists the task in flight before it is waited on, so a restarted
    /// controller waits on it instead of issuing it again.
    pub async fn set_task(&mut self, upid: &Upid) -> Result<(), Error> {
        self.status.task_ref = Some(upid.to_string());
        self.save().await
    }

    /// Records `upid` in `status.taskRef`, waits for it, and clears the
    /// record once the task succeeded (a failed or unfinished wait keeps it,
    /// so a retry waits on the same task instead of issuing another).
    pub async fn follow_task(&mut self, upid: &Upid) -> Result<TaskOutcome, Error> {
        // A reboot or a shutdown ends the guest's sessions.
        self.session = None;
        self.set_task(upid).await?;
        let outcome = self.wait_task(upid).await?;
        self.status.task_ref = None;
        Ok(outcome)
    }

    /// Waits for the task of `task_type` recorded in `status.taskRef` by an
    /// earlier reconcile, if there is one, and clears the record.
    pub async fn finish_in_flight(&mut self, task_type: &str) -> Result<(), Error> {
        if let Some(upid) = self.in_flight_task(task_type)? {
            self.wait_task(&upid).await?;
            self.status.task_ref = None;
        }
        Ok(())
    }

    pub async fn wait_task(&mut self, upid: &Upid) -> Result<TaskOutcome, Error> {
        let outcome = self.pve.wait_task(upid, self.ctx.timings.task_poll, self.ctx.timings.task_timeout).await?;
        Ok(outcome)
    }

    /// Host-key fingerprints from the create task of `vmid`, found in the
    /// node's task list.
    pub async fn create_log_fingerprints(&self, vmid: u32) -> Result<Vec<String>, Error> {
        let tasks = self.pve.list_tasks(&self.node, Some(vmid), Some("vzcreate")).await?;
        let Some(task) = tasks.into_iter().next() else { return Ok(Vec::new()) };
        let upid = task.upid().map_err(|e| Error::transient(format!("task list holds a bad UPID: {e}")))?;
        let log = self.pve.task_log_tail(&upid, CREATE_LOG_LINES).await?;
        Ok(proxmox::host_key_fingerprints(log.iter().map(String::as_str)))
    }

    /// One of the node's `maxConcurrentOperations` slots, or
    /// [`Error::Queued`]: the reconcile ends and the Container is woken when
    /// a slot is free (see `controller::slots`).
    fn node_permit(&self) -> Result<NodePermit, Error> {
        let who = ObjectRef::from_obj(self.ct.as_ref());
        self.ctx
            .node_limits
            .try_acquire(&self.node_key, self.max_node_operations, &who)
            .map_err(|busy| Error::queued_on_node(&self.node, busy.limit))
    }

    /// Holds one of the node's slots for the rest of the stage (and through
    /// Start, when Create takes it), or [`Error::Queued`].
    pub fn hold_node_slot(&mut self) -> Result<(), Error> {
        if self.node_slot.is_none() {
            self.node_slot = Some(self.node_permit()?);
        }
        Ok(())
    }

    /// Gives the node slot back, if this run holds one.
    pub fn release_node_slot(&mut self) {
        self.node_slot = None;
    }

    /// One of the controller's `--concurrency` pipeline slots, or
    /// [`Error::Queued`] like [`Job::node_permit`].
    pub fn pipeline_permit(&self) -> Result<NodePermit, Error> {
        let who = ObjectRef::from_obj(self.ct.as_ref());
        let limit = self.ctx.pipeline_slots;
        self.ctx
            .node_limits
            .try_acquire(PIPELINE_SLOTS, limit, &who)
            .map_err(|busy| Error::queued_for_pipeline(busy.limit))
    }

    /// Connects over SSH with the pinned host keys; pins the first key seen
    /// when the create log printed none. A key accepted with the annotation
    /// `infrahaus.io/accept-host-key=<fingerprint>` replaces the pins: the
    /// guest must present exactly that key, and an Event records it.
    /// The session is kept for the rest of the run.
    pub async fn ssh(&mut self, ip: std::net::IpAddr) -> Result<Arc<SshSession>, Error> {
        if let Some((open_to, session)) = &self.session {
            if *open_to == ip {
                return Ok(session.clone());
            }
        }
        let session = Arc::new(self.connect(ip).await?);
        self.session = Some((ip, session.clone()));
        Ok(session)
    }

    /// Closes the run's SSH session, if one is open.
    pub async fn close_ssh(&mut self) {
        if let Some(session) = self.session.take().and_then(|(_, session)| Arc::into_inner(session)) {
            let _ = session.close().await;
        }
    }

    async fn connect(&mut self, ip: std::net::IpAddr) -> Result<SshSession, Error> {
        let accepted = self.accepted_host_key();
        let pins = match &accepted {
            Some(fingerprint) => vec![fingerprint.clone()],
            None => self.status.ssh_host_key_fingerprints.clone(),
        };
        let check = HostKeyCheck::from_pins(pins);
        let trust_first = matches!(check, HostKeyCheck::TrustFirst);
        let target = SshTarget::root(SocketAddr::new(ip, SSH_PORT), self.ctx.ssh_key.clone(), check);
        let deadline = tokio::time::Instant::now() + self.ctx.timings.boot_timeout;
        let session = ssh::connect_with_retry(&target, deadline).await?;
        self.ctx.metrics.ssh_session();
        if trust_first || accepted.is_some() {
            let replaced = std::mem::replace(
                &mut self.status.ssh_host_key_fingerprints,
                vec![session.host_key_fingerprint().to_string()],
            );
            self.save().await?;
            if let Some(fingerprint) = accepted {
                let note = format!(
                    "accepted the new SSH host key {fingerprint} of {ip} ({ACCEPT_HOST_KEY_ANNOTATION}); it replaces {}",
                    replaced.join(", ")
                );
                self.event(EventType::Normal, "HostKeyAccepted", "Connect", note).await;
            }
        }
        Ok(session)
    }

    /// The fingerprint the accept annotation names, when it is to be pinned.
    fn accepted_host_key(&self) -> Option<String> {
        let value = self.ct.host_key_to_accept()?;
        let pinned = self.status.ssh_host_key_fingerprints.iter().any(|pin| pin.trim() == value);
        (!pinned).then(|| value.to_string())
    }

    /// SSH to the address Deploy recorded.
    pub async fn ssh_recorded(&mut self) -> Result<Arc<SshSession>, Error> {
        let ip = self
            .status
            .ip_address
            .clone()
            .ok_or_else(|| Error::transient("no IP address recorded; Deploy must run first"))?;
        let ip: std::net::IpAddr = ip.parse().map_err(|_| {
            Error::permanent(reasons::INVALID_PARAMETERS, format!("status.ipAddress {ip:?} is not an address"))
        })?;
        self.ssh(ip).await
    }

    /// Metadata for an object the Container owns (garbage-collected with it).
    pub fn owned_metadata(&self, name: &str) -> ObjectMeta {
        k8s::owned_metadata(self.ct.as_ref(), name)
    }

    /// Logs and publishes a Kubernetes Event on the Container.
    pub async fn event(&self, type_: EventType, reason: &str, action: &str, note: String) {
        k8s::publish_event(&self.ctx.recorder, self.ct.as_ref(), type_, reason, action, note).await;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::controller::container::reconfigure;
    use crate::controller::container::stages::STAGES;

    /// What a run does that touches the percent.
    #[derive(Clone, Debug)]
    enum Act {
        /// The stage at this index of the table begins (the pipeline sets
        /// its phase and span before the stage reports anything).
        Enter(usize),
        /// The running stage reports a step, 0 to 100 of its span (or out of
        /// range).
        Step(i32),
        /// A reconfiguration step is published (day-2 change, drift).
        Reconfigure,
        /// A script prints a line.
        Log,
        /// The run fails and publishes an `error` event.
        Fail,
        /// The controller restarts: the next reconcile of the same generation
        /// picks the run up from the status as it was written.
        Restart,
    }

    fn act() -> impl Strategy<Value = Act> {
        prop_oneof![
            (0..STAGES.len()).prop_map(Act::Enter),
            (0..=100i32).prop_map(Act::Step),
            any::<i32>().prop_map(Act::Step),
            Just(Act::Reconfigure),
            Just(Act::Log),
            Just(Act::Fail),
            Just(Act::Restart),
        ]
    }

    /// What a run of `acts` writes and publishes, from `status`.
    #[derive(Debug, Default)]
    struct Trace {
        /// The percent each reconcile started from.
        starts: Vec<i32>,
        /// Every `status.progress` written.
        written: Vec<i32>,
        /// The percents of the events each reconcile published.
        events: Vec<Vec<u8>>,
    }

    fn run(mut status: ContainerStatus, generation: Option<i64>, acts: &[Act]) -> Trace {
        let mut last = resumed_percent(&status, generation);
        let mut trace = Trace { starts: vec![last], events: vec![Vec::new()], ..Trace::default() };
        let mut span = None;
        for act in acts {
            let events = trace.events.last_mut().expect("a reconcile");
            match act {
                Act::Enter(index) => {
                    span = Some(STAGES[*index].percent);
                    status.phase = Some(STAGES[*index].phase);
                }
                Act::Step(step) => {
                    let Some(span) = span else { continue };
                    last = next_percent(last, span_percent(span, *step));
                    status.progress = Some(last);
                    trace.written.push(last);
                    events.push(event_percent(last));
                }
                Act::Reconfigure => {
                    let (after, percent) = reconfigure::step_percent(last);
                    last = after;
                    events.push(percent);
                }
                Act::Log | Act::Fail => events.push(event_percent(last)),
                Act::Restart => {
                    last = resumed_percent(&status, generation);
                    span = None;
                    trace.starts.push(last);
                    trace.events.push(Vec::new());
                }
            }
        }
        trace
    }

    fn rising<T: PartialOrd>(values: &[T]) -> bool {
        values.windows(2).all(|w| w[0] <= w[1])
    }

    /// A day-2 change of a Ready Container starts its new generation at 0,
    /// and reconfiguring publishes 38%: what comes next must not go back.
    #[test]
    fn a_failure_after_reconfiguring_stays_at_its_percent() {
        let ready = ContainerStatus {
            phase: Some(Phase::Ready),
            progress: Some(100),
            observed_generation: Some(1),
            ..Default::default()
        };
        let trace = run(ready, Some(2), &[Act::Reconfigure, Act::Log, Act::Fail]);
        assert_eq!(trace.starts, [0]);
        assert_eq!(trace.events, [vec![38, 38, 38]]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Percent never decreases within a generation: whatever the stages
        /// report, in whatever order, and across controller restarts; and
        /// the events one reconcile publishes (steps, script lines,
        /// reconfiguration, the failure) never go back either.
        #[test]
        fn percent_never_decreases(
            phase in proptest::option::of(proptest::sample::select(Phase::ALL.to_vec())),
            progress in proptest::option::of(0..=100i32),
            observed in proptest::option::of(1..=2i64),
            acts in proptest::collection::vec(act(), 0..64),
        ) {
            let status = ContainerStatus { phase, progress, observed_generation: observed, ..Default::default() };
            let trace = run(status, Some(2), &acts);
            prop_assert!(rising(&trace.written), "status.progress: {:?}", trace.written);
            prop_assert!(trace.written.iter().all(|p| (0..=100).contains(p)), "{:?}", trace.written);
            for (start, events) in trace.starts.iter().zip(&trace.events) {
                prop_assert!(rising(events), "events of one reconcile: {:?}", events);
                prop_assert!(events.iter().all(|p| i32::from(*p) >= *start && *p <= 100), "{:?}", events);
            }
        }

        /// A step lands in the span of its stage, and a later step of the same
        /// stage never lands before an earlier one.
        #[test]
        fn a_step_lands_in_its_span(index in 0..STAGES.len(), a in any::<i32>(), b in any::<i32>()) {
            let span = STAGES[index].percent;
            let (pa, pb) = (span_percent(span, a), span_percent(span, b));
            prop_assert!(span.0 <= pa && pa <= span.1);
            if a <= b {
                prop_assert!(pa <= pb);
            }
            prop_assert_eq!(span_percent(span, 0), span.0);
            prop_assert_eq!(span_percent(span, 100), span.1);
        }

        /// A new generation after Ready or Error starts again from 0; anything
        /// else resumes from the recorded percent.
        #[test]
        fn a_run_resumes_only_its_own_generation(
            phase in proptest::option::of(proptest::sample::select(Phase::ALL.to_vec())),
            progress in proptest::option::of(0..=100i32),
            observed in proptest::option::of(1..=3i64),
            generation in proptest::option::of(1..=3i64),
        ) {
            let status = ContainerStatus { phase, progress, observed_generation: observed, ..Default::default() };
            let settled = matches!(phase, Some(Phase::Ready | Phase::Error));
            let expected = if settled && observed != generation { 0 } else { progress.unwrap_or(0) };
            prop_assert_eq!(resumed_percent(&status, generation), expected);
        }
    }
}
