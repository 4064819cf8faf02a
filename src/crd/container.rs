use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::container_template::Resources;
use super::refs::{KeyRef, ObjectRef};

/// One LXC container on one Proxmox VE node.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrahaus.io",
    version = "v1alpha1",
    kind = "Container",
    namespaced,
    status = "ContainerStatus",
    shortname = "ct",
    category = "infrahaus",
    doc = "One LXC container on one Proxmox VE node, created and configured through five stages.",
    printcolumn(name = "VMID", type_ = "integer", json_path = ".status.vmid"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeRef.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Power", type_ = "string", json_path = ".status.powerState"),
    printcolumn(name = "Progress", type_ = "integer", json_path = ".status.progress"),
    printcolumn(name = "IP", type_ = "string", json_path = ".status.ipAddress"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = kube::core::Rule::new(
        "has(self.spec.hostname) || (size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))"
    ).message("metadata.name is not a valid hostname (a DNS label of at most 63 characters); set spec.hostname")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.nodeRef.name == oldSelf.nodeRef.name", "message": "nodeRef is immutable", "fieldPath": ".nodeRef"},
    {"rule": "has(self.vmid) == has(oldSelf.vmid) && (!has(self.vmid) || self.vmid == oldSelf.vmid)",
     "message": "vmid is immutable", "fieldPath": ".vmid"},
    {"rule": "has(self.osTemplate) == has(oldSelf.osTemplate) && (!has(self.osTemplate) || self.osTemplate == oldSelf.osTemplate)",
     "message": "osTemplate is immutable", "fieldPath": ".osTemplate"},
    {"rule": "self.unprivileged == oldSelf.unprivileged", "message": "unprivileged is immutable", "fieldPath": ".unprivileged"},
    {"rule": "!has(oldSelf.resources) || !has(oldSelf.resources.diskGiB) || (has(self.resources) && has(self.resources.diskGiB) && self.resources.diskGiB >= oldSelf.resources.diskGiB)",
     "message": "resources.diskGiB can only grow: Proxmox cannot shrink a disk", "fieldPath": ".resources.diskGiB"}
]))]
pub struct ContainerSpec {
    /// The ProxmoxNode the container lives on. Immutable.
    pub node_ref: ObjectRef,

    /// The ContainerTemplate that provides OS template, defaults, packages, files and scripts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<ObjectRef>,

    /// Proxmox VMID (100..999999999). Immutable; when absent the next free id is allocated
    /// and reported in `status.vmid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 999_999_999))]
    pub vmid: Option<i32>,

    /// Hostname of the container, a DNS label. Defaults to `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
        "message": "hostname must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit"
    }]))]
    pub hostname: Option<String>,

    /// OS template volume; overrides the template's. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[A-Za-z][A-Za-z0-9_.-]*:vztmpl/[^\\\\s]+$')",
        "message": "osTemplate must be a template volume such as local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
    }]))]
    pub os_template: Option<String>,

    /// CPU, memory and disk; unset fields come from the template's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// The container's `eth0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ContainerNetwork>,

    /// Secret key holding the root password. When absent a password is generated
    /// into the Secret `<name>-root-password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_password_secret_ref: Option<KeyRef>,

    /// Additional SSH public keys authorised for root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 8192)))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(k, k.matches('^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\\\\.com) [A-Za-z0-9+/]+=*( [^\\\\n\\\\r]*)?$'))",
        "message": "sshPublicKeys must be single-line OpenSSH public keys such as 'ssh-ed25519 AAAA... comment'"
    }]))]
    pub ssh_public_keys: Vec<String>,

    /// Run the container unprivileged. Immutable.
    #[serde(default = "default_true")]
    pub unprivileged: bool,

    /// Container features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,

    /// Start the container when the node boots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_on_boot: Option<bool>,

    /// Proxmox tags, in addition to `infrahaus` which is always set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 64)))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(t, t.matches('^[a-z0-9_][a-z0-9_+.-]*$'))",
        "message": "tags must be Proxmox tags: lowercase letters, digits and _ + . -"
    }]))]
    pub tags: Vec<String>,

    /// What happens to the guest when the Container is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Whether the guest is restarted when a changed setting takes effect only
    /// at a restart (Proxmox keeps it pending; the condition RestartRequired
    /// says which).
    #[serde(default)]
    pub restart_policy: RestartPolicy,

    /// Whether the guest runs. `Stopped` shuts it down (after a first run
    /// has brought it to Ready); `Running` starts it again.
    #[serde(default)]
    pub power_state: PowerState,

    /// What a change of the template (or of a ConfigMap or Secret its files
    /// come from) does to a Ready Container: `OnChange` deploys and syncs
    /// again; `Manual` shows the condition TemplateOutOfSync until the retry
    /// annotation is set.
    #[serde(default)]
    pub template_sync: TemplateSync,
}

fn default_true() -> bool {
    true
}

/// The network of the container's `eth0`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.gateway) || (has(self.ipv4) && self.ipv4 != 'dhcp')",
    "message": "gateway is only allowed with a static ipv4 address",
    "fieldPath": ".gateway"
}]))]
pub struct ContainerNetwork {
    /// Bridge the interface is attached to. Defaults to `vmbr0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[A-Za-z][A-Za-z0-9_.-]*$')",
        "message": "bridge must be an interface name such as vmbr0"
    }]))]
    pub bridge: Option<String>,

    /// `dhcp` (the default) or a static address in CIDR form, e.g. `192.0.2.10/24`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 4, max = 18))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == 'dhcp' || self.matches('^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/([0-9]|[12][0-9]|3[0-2])$')",
        "message": "ipv4 must be 'dhcp' or an IPv4 address with prefix length, e.g. 192.0.2.10/24"
    }]))]
    pub ipv4: Option<String>,

    /// Default gateway; only with a static `ipv4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 7, max = 15))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$')",
        "message": "gateway must be an IPv4 address, e.g. 192.0.2.1"
    }]))]
    pub gateway: Option<String>,

    /// DNS servers for the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3), inner(length(min = 2, max = 45)))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(n, n.matches('^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$') || (n.matches('^[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}$') && n.matches('[0-9A-Fa-f]')))",
        "message": "nameservers must be IP addresses"
    }]))]
    pub nameservers: Vec<String>,
}

/// Optional LXC features.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    /// Allow nested containers (needed by systemd in recent distributions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nesting: Option<bool>,
    /// Allow the keyctl() system call (needed by Docker in unprivileged containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyctl: Option<bool>,
    /// Allow FUSE mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuse: Option<bool>,
}

/// What happens to the Proxmox guest when its Container is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Stop and destroy the guest, purging its disks.
    #[default]
    Delete,
    /// Leave the guest alone.
    Retain,
}

/// Whether the guest should run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PowerState {
    /// Running (started again when found stopped at a change).
    #[default]
    Running,
    /// Shut down (forced after a timeout).
    Stopped,
}

/// What a change that Proxmox can apply only at a restart does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestartPolicy {
    /// Leave the guest running; RestartRequired says what waits.
    #[default]
    Never,
    /// Reboot the guest once to apply it.
    OnPendingChange,
}

/// What a changed template does to a Ready Container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TemplateSync {
    /// Deploy and Sync run again (scripts are idempotent), then Finalize.
    #[default]
    OnChange,
    /// Nothing runs; the condition TemplateOutOfSync says so until the retry
    /// annotation is set.
    Manual,
}

/// Where a Container is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, no work started yet.
    #[default]
    Pending,
    /// Creating the guest.
    Creating,
    /// Starting the guest.
    Starting,
    /// Installing the config-manager layout and the template's files.
    Deploying,
    /// Installing packages and running scripts.
    Syncing,
    /// Discovering services, ports and credentials.
    Finalizing,
    /// Running and configured.
    Ready,
    /// A permanent failure; see `message` and `stages`.
    Error,
    /// Being deleted.
    Deleting,
}

/// The five stages, in order.
impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Pending,
        Phase::Creating,
        Phase::Starting,
        Phase::Deploying,
        Phase::Syncing,
        Phase::Finalizing,
        Phase::Ready,
        Phase::Error,
        Phase::Deleting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Creating => "Creating",
            Phase::Starting => "Starting",
            Phase::Deploying => "Deploying",
            Phase::Syncing => "Syncing",
            Phase::Finalizing => "Finalizing",
            Phase::Ready => "Ready",
            Phase::Error => "Error",
            Phase::Deleting => "Deleting",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StageName {
    /// Allocate a vmid and create the guest.
    Creating,
    /// Start the guest.
    Starting,
    /// Install the config-manager layout and the template's files.
    Deploying,
    /// Install packages and run scripts.
    Syncing,
    /// Discover services, ports and credentials.
    Finalizing,
}

impl StageName {
    /// All stages in the order they run.
    pub const ALL: [StageName; 5] =
        [StageName::Creating, StageName::Starting, StageName::Deploying, StageName::Syncing, StageName::Finalizing];

    /// The name used in status, events and Redis (`creating`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Creating => "creating",
            StageName::Starting => "starting",
            StageName::Deploying => "deploying",
            StageName::Syncing => "syncing",
            StageName::Finalizing => "finalizing",
        }
    }
}

impl std::fmt::Display for StageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StageState {
    /// Not started.
    #[default]
    Pending,
    /// In progress.
    Running,
    /// Done; never run again for this Container.
    Succeeded,
    /// Failed permanently; retried on a spec change or a new `infrahaus.io/retry` value.
    Failed,
}

/// The record of one stage, the audit trail of a Container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    /// Which stage.
    pub name: StageName,
    /// Its state.
    pub state: StageState,
    /// When it last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it last succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// What happened, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A port a process listens on inside the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListeningPort {
    /// Port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Transport protocol.
    pub protocol: PortProtocol,
    /// Name of the owning process, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
}

/// Transport protocol of a listening port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Observed state of a Container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// Where the Container is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Percent done, 0..100; the same numbers as the Redis progress events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub progress: Option<i32>,

    /// Human-readable summary of the current state or the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Proxmox VMID of the guest, once allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid: Option<i32>,

    /// Proxmox node name the guest lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,

    /// IPv4 address of `eth0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,

    /// UPID of the Proxmox task in flight, waited on after a restart instead of issued again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_ref: Option<String>,

    /// Pinned SSH host key fingerprints (`SHA256:...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_host_key_fingerprints: Vec<String>,

    /// One entry per stage that has started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageStatus>,

    /// Application services found running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,

    /// Ports found listening.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listening_ports: Vec<ListeningPort>,

    /// Secret holding the credential files found in `/etc/infrahaus/credentials/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<ObjectRef>,

    /// Secret key holding the root password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_password_secret_ref: Option<KeyRef>,

    /// The value of the `infrahaus.io/retry` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_retry: Option<String>,

    /// A hash of the ContainerTemplate spec the guest was last deployed and
    /// synced from; a template whose hash differs is deployed and synced again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_hash: Option<String>,

    /// What the guest is, as last seen: running or stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_state: Option<PowerState>,

    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Created`, `Started`, `Deployed`, `Synced` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl ContainerStatus {
    /// The record of a stage, if it has started.
    pub fn stage(&self, name: StageName) -> Option<&StageStatus> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The record of a stage, to update it.
    pub fn stage_mut(&mut self, name: StageName) -> Option<&mut StageStatus> {
        self.stages.iter_mut().find(|s| s.name == name)
    }

    /// Whether a stage has succeeded and must not run again.
    pub fn stage_succeeded(&self, name: StageName) -> bool {
        self.stage(name).is_some_and(|s| s.state == StageState::Succeeded)
    }
}

/// The annotation whose new value retries a Container in phase Error (and
/// re-applies a Ready one).
pub const RETRY_ANNOTATION: &str = "infrahaus.io/retry";
/// Accepts a changed SSH host key of the guest: its value is the new key's
/// fingerprint (`SHA256:...`), which then replaces the pinned one.
pub const ACCEPT_HOST_KEY_ANNOTATION: &str = "infrahaus.io/accept-host-key";

impl Container {
    /// The value of the retry annotation, if set.
    pub fn retry_annotation(&self) -> Option<&str> {
        self.metadata.annotations.as_ref()?.get(RETRY_ANNOTATION).map(String::as_str)
    }

    /// The new SSH host key an operator accepted with the annotation
    /// `infrahaus.io/accept-host-key=<fingerprint>`: only while the Container
    /// is in Error for a host key mismatch and the key is not pinned yet (an
    /// annotation left behind after that changes nothing).
    pub fn host_key_to_accept(&self) -> Option<&str> {
        let value = self.metadata.annotations.as_ref()?.get(ACCEPT_HOST_KEY_ANNOTATION)?.trim();
        let status = self.status.as_ref()?;
        let mismatch = status.conditions.iter().any(|c| {
            c.type_ == super::conditions::types::READY && c.reason == super::conditions::reasons::HOST_KEY_MISMATCH
        });
        let pinned = status.ssh_host_key_fingerprints.iter().any(|pin| pin.trim() == value);
        (!value.is_empty() && mismatch && !pinned).then_some(value)
    }

    /// The phase the controller has settled this Container in: Ready or
    /// Error for the current generation and retry value, so there is nothing
    /// more to do until the spec or the retry annotation changes (or a new
    /// host key is accepted). A Ready or Error of an older generation, or a
    /// Container being deleted, is not settled. The chart's Argo CD health
    /// check mirrors this rule.
    pub fn settled_phase(&self) -> Option<Phase> {
        if self.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let status = self.status.as_ref()?;
        let current = status.observed_generation.is_some() && status.observed_generation == self.metadata.generation;
        let retry = self.retry_annotation();
        let retry_acted_on = retry.is_none() || retry == status.last_applied_retry.as_deref();
        match status.phase {
            Some(phase @ (Phase::Ready | Phase::Error)) if current && retry_acted_on => {
                self.host_key_to_accept().is_none().then_some(phase)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::conditions::{reasons, set_condition, types, DesiredCondition};

    const NEW: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    const OLD: &str = "SHA256:1q5RZRl7XCOgQgfKKRB7j05grjHF/4zxMfflqk8sLng";

    fn container(phase: Phase, ready_reason: &'static str, annotation: Option<&str>) -> Container {
        let spec = serde_json::from_value::<ContainerSpec>(serde_json::json!({"nodeRef": {"name": "pve1"}}));
        let mut ct = Container::new("web", spec.expect("spec"));
        ct.metadata.generation = Some(1);
        if let Some(value) = annotation {
            ct.metadata.annotations = Some([(ACCEPT_HOST_KEY_ANNOTATION.to_string(), value.to_string())].into());
        }
        let mut status = ContainerStatus {
            phase: Some(phase),
            observed_generation: Some(1),
            ssh_host_key_fingerprints: vec![OLD.into()],
            ..Default::default()
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        set_condition(&mut status.conditions, DesiredCondition::falsy(types::READY, ready_reason, "m", Some(1)), &now);
        ct.status = Some(status);
        ct
    }

    #[test]
    fn an_accepted_host_key_unsettles_only_a_host_key_mismatch() {
        let mismatch = container(Phase::Error, reasons::HOST_KEY_MISMATCH, Some(NEW));
        assert_eq!(mismatch.host_key_to_accept(), Some(NEW));
        assert_eq!(mismatch.settled_phase(), None, "the accepted key runs the failed stages again");

        let cases = [
            ("no annotation", container(Phase::Error, reasons::HOST_KEY_MISMATCH, None)),
            ("an empty annotation", container(Phase::Error, reasons::HOST_KEY_MISMATCH, Some(" "))),
            ("the pinned key", container(Phase::Error, reasons::HOST_KEY_MISMATCH, Some(OLD))),
            ("another failure", container(Phase::Error, reasons::SCRIPT_FAILED, Some(NEW))),
        ];
        for (name, ct) in cases {
            assert_eq!(ct.host_key_to_accept(), None, "{name}");
            assert_eq!(ct.settled_phase(), Some(Phase::Error), "{name}");
        }
    }
}
