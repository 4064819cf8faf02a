//! Create: allocate a vmid if the spec has none, `POST /nodes/{node}/lxc`,
//! persist the UPID, wait for the task, pin the host keys it printed.
//!
//! Resumable at every point: the vmid is persisted before the guest is
//! created and the UPID right after, so a restarted controller waits on the
//! task it already started instead of creating a second guest.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use rand::distr::{Alphanumeric, SampleString};

use super::super::job::{Job, CREATE_LOG_LINES};
use super::super::settings::Settings;
use crate::crd::{conditions::reasons, KeyRef};
use crate::error::Error;
use crate::k8s;
use crate::proxmox::{self, CreateLxcParams, Upid};

const GENERATED_PASSWORD_LEN: usize = 24;
/// Another client may create a guest at an allocated vmid first (nextid
/// reserves nothing); each such collision costs one more allocation.
const ALLOCATION_ATTEMPTS: usize = 20;

pub(super) async fn run(job: &mut Job<'_>) -> Result<(), Error> {
    if let Some(upid) = job.in_flight_task("vzcreate")? {
        job.progress(34, format!("Waiting for create task {upid}")).await?;
        return finish(job, &upid).await;
    }

    for _ in 0..ALLOCATION_ATTEMPTS {
        match attempt(job).await? {
            Attempt::Done => {
                // The guest exists: Proxmox skips its vmid from now on.
                job.ctx.vmids.release(&job.node_key, job.vmid()?);
                return Ok(());
            }
            Attempt::Taken(vmid) => {
                job.ctx.vmids.release(&job.node_key, vmid);
                tracing::info!(vmid, "vmid was taken by another guest meanwhile; allocating another");
                job.status.vmid = None;
                job.save().await?;
            }
        }
    }
    Err(Error::transient(format!(
        "every vmid allocated in {ALLOCATION_ATTEMPTS} attempts was taken by another guest first; trying again later"
    )))
}

/// The outcome of one try at creating the guest.
enum Attempt {
    Done,
    /// The allocated vmid was taken by someone else first.
    Taken(u32),
}

async fn attempt(job: &mut Job<'_>) -> Result<Attempt, Error> {
    let node = job.node.clone();
    let vmid = match job.status.vmid {
        Some(vmid) => vmid as u32,
        None => allocate_vmid(job).await?,
    };

    // A guest may already sit at this vmid: ours from an interrupted attempt
    // (its POST's answer lost), or someone else's.
    let timings = &job.ctx.timings;
    if let Some(config) = job.pve.lxc_config_settled(&node, vmid, timings.task_poll, timings.task_timeout).await? {
        let owned = proxmox::is_owned_by(config.description.as_deref(), config.tags.as_deref(), &job.uid);
        match existing_guest(owned, job.ct.spec.vmid.is_some()) {
            ExistingGuest::Ours => {}
            ExistingGuest::TakenMeanwhile => return Ok(Attempt::Taken(vmid)),
            ExistingGuest::Foreign => {
                return Err(Error::permanent(
                    reasons::FOREIGN_GUEST,
                    format!(
                        "vmid {vmid} on node {node} is held by a guest that infrahaus-operator did not create \
                         for this Container (no `infrahaus.io/uid={}` marker and `infrahaus` tag); it is left untouched. \
                         Choose another vmid or remove spec.vmid to have one allocated",
                        job.uid
                    ),
                ))
            }
        }
        // Proxmox writes the config before its create task has quite ended.
        if let Some(upid) = job.pve.running_create(&node, vmid).await? {
            job.set_task(&upid).await?;
            finish(job, &upid).await?;
            return Ok(Attempt::Done);
        }
        // The guest exists and is complete: the create task ended before the
        // controller could record its result.
        let pins = job.create_log_fingerprints(vmid).await?;
        job.status.ssh_host_key_fingerprints = pins;
        job.progress(100, format!("Container {vmid} created")).await?;
        return Ok(Attempt::Done);
    }

    let password = root_password(job).await?;
    let params = create_params(job, vmid, password)?;
    job.hold_node_slot()?;
    job.progress(20, format!("Creating container {vmid} on node {node}")).await?;
    let upid = match job.pve.create_lxc(&node, &params).await {
        Ok(upid) => upid,
        Err(error) if error.is_already_exists() && job.ct.spec.vmid.is_none() => return Ok(Attempt::Taken(vmid)),
        Err(error) => return Err(error.into()),
    };
    job.set_task(&upid).await?;
    finish(job, &upid).await?;
    Ok(Attempt::Done)
}

/// Waits for the create task and pins the host keys from its log.
async fn finish(job: &mut Job<'_>, upid: &Upid) -> Result<(), Error> {
    job.progress(47, format!("Create task running: {upid}")).await?;
    let outcome = job.wait_task(upid).await?;
    let log = job.pve.task_log_tail(upid, CREATE_LOG_LINES).await?;
    job.status.ssh_host_key_fingerprints = proxmox::host_key_fingerprints(log.iter().map(String::as_str));
    job.status.task_ref = None;
    let vmid = job.status.vmid.unwrap_or_default();
    let message = match outcome.warnings {
        0 => format!("Container {vmid} created"),
        n => format!("Container {vmid} created ({n} warnings)"),
    };
    job.progress(100, message).await?;
    Ok(())
}

/// What a guest that already sits at the Container's vmid means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExistingGuest {
    /// Ours, from an interrupted attempt: continue with it.
    Ours,
    /// Not ours, at a vmid this Container was allocated: another client
    /// (another Container, too) took the id between `/cluster/nextid` and our
    /// create. Nothing was created at it for us, so another id is allocated.
    TakenMeanwhile,
    /// Not ours, at the vmid the spec asks for: an Error, never an adoption.
    Foreign,
}

fn existing_guest(owned: bool, vmid_in_spec: bool) -> ExistingGuest {
    match (owned, vmid_in_spec) {
        (true, _) => ExistingGuest::Ours,
        (false, false) => ExistingGuest::TakenMeanwhile,
        (false, true) => ExistingGuest::Foreign,
    }
}

async fn allocate_vmid(job: &mut Job<'_>) -> Result<u32, Error> {
    let vmid = match job.ct.spec.vmid {
        Some(vmid) => vmid as u32,
        None => next_free_vmid(job).await?,
    };
    job.status.vmid = Some(vmid as i32);
    job.status.node = Some(job.node.clone());
    job.save().await?;
    tracing::Span::current().record("vmid", vmid);
    Ok(vmid)
}

/// The lowest vmid Proxmox has no guest at and this controller has not
/// handed out to another Container yet (see `controller::vmids`).
async fn next_free_vmid(job: &Job<'_>) -> Result<u32, Error> {
    let answered = job.pve.next_id().await?;
    let mut lowest = answered;
    for _ in 0..ALLOCATION_ATTEMPTS {
        let vmid = job.ctx.vmids.hold_from(&job.node_key, lowest);
        // What nextid answered is free; any other vmid is asked about.
        if vmid == answered || job.pve.vmid_is_free(vmid).await? {
            return Ok(vmid);
        }
        // Another client's guest sits there.
        job.ctx.vmids.release(&job.node_key, vmid);
        lowest = vmid + 1;
    }
    Err(Error::transient(format!("no free vmid found in {ALLOCATION_ATTEMPTS} tries; trying again later")))
}

fn create_params(job: &Job<'_>, vmid: u32, password: String) -> Result<CreateLxcParams, Error> {
    let spec = &job.ct.spec;
    let template = job.template.as_ref().map(|(_, t)| t);
    let ostemplate = spec.os_template.clone().or_else(|| template.map(|t| t.os_template.clone())).ok_or_else(|| {
        Error::permanent(
            reasons::INVALID_PARAMETERS,
            "no OS template: set spec.osTemplate or reference a ContainerTemplate with one",
        )
    })?;
    let settings = Settings::resolve(&job.ct, job.hostname(), template);
    let network = spec.network.clone().unwrap_or_default();

    let keys = job.authorized_keys();
    let description = format!("Managed by infrahaus-operator: Container {}/{}", job.namespace, job.name);

    Ok(CreateLxcParams {
        vmid,
        ostemplate,
        hostname: settings.hostname,
        cores: settings.cores,
        memory_mib: settings.memory_mib,
        swap_mib: settings.swap_mib,
        rootfs: Some(proxmox::rootfs(&settings.storage, settings.disk_gib)),
        net0: Some(proxmox::net0(&proxmox::Net0 {
            bridge: network.bridge.as_deref(),
            ipv4: network.ipv4.as_deref(),
            gateway: network.gateway.as_deref(),
        })),
        nameserver: settings.nameserver,
        password: Some(password.into()),
        ssh_public_keys: Some(keys.join("\n")),
        unprivileged: spec.unprivileged,
        features: spec.features.as_ref().and_then(features),
        onboot: settings.onboot,
        tags: Some(settings.tags),
        description: Some(proxmox::description_with_marker(&job.uid, Some(&description))),
        start: false,
    })
}

/// `nesting=1,keyctl=1`, or nothing when no feature is switched on.
fn features(features: &crate::crd::Features) -> Option<String> {
    let on: Vec<String> = [("nesting", features.nesting), ("keyctl", features.keyctl), ("fuse", features.fuse)]
        .into_iter()
        .filter(|(_, enabled)| *enabled == Some(true))
        .map(|(name, _)| format!("{name}=1"))
        .collect();
    (!on.is_empty()).then(|| on.join(","))
}

/// A generated `<name>-root-password` found in place must be this Container's
/// (or nobody's: created by hand). One owned by an earlier Container of the
/// same name is garbage-collected soon, and the password with it, so it is
/// waited out; one owned by another live Container is not this one's to use.
async fn check_generated_secret_owner(job: &Job<'_>, secret: &Secret) -> Result<(), Error> {
    let owners = secret.metadata.owner_references.as_deref().unwrap_or_default();
    let Some(owner) = owners.iter().find(|owner| owner.controller == Some(true)) else { return Ok(()) };
    if owner.uid == job.uid {
        return Ok(());
    }
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let alive = owner.kind == "Container"
        && job.api.get_opt(&owner.name).await?.is_some_and(|other| other.metadata.uid.as_deref() == Some(&owner.uid));
    if alive {
        return Err(Error::permanent(
            reasons::INVALID_REFERENCE,
            format!(
                "Secret {name} belongs to Container {}; delete it, or name a Secret in spec.rootPasswordSecretRef",
                owner.name
            ),
        ));
    }
    Err(Error::transient(format!(
        "Secret {name} is left from an earlier {} {}; waiting for it to be garbage-collected",
        owner.kind, owner.name
    )))
}

/// The root password: from the user's Secret, or generated once into
/// `<name>-root-password`, owned by the Container.
async fn root_password(job: &mut Job<'_>) -> Result<String, Error> {
    let secrets: Api<Secret> = Api::namespaced(job.ctx.client.clone(), &job.namespace);
    let key_ref = match &job.ct.spec.root_password_secret_ref {
        Some(r) => r.clone(),
        None => KeyRef { name: format!("{}-root-password", job.name), key: "password".into() },
    };
    if let Some(secret) = secrets.get_opt(&key_ref.name).await? {
        if job.ct.spec.root_password_secret_ref.is_none() {
            check_generated_secret_owner(job, &secret).await?;
        }
        let value = k8s::secret_key(&secret, &key_ref.key).map(|v| String::from_utf8_lossy(&v).into_owned());
        match value {
            Some(password) if !password.is_empty() => {
                job.status.root_password_secret_ref = Some(key_ref);
                return Ok(password);
            }
            _ => {
                return Err(Error::permanent(
                    reasons::INVALID_REFERENCE,
                    format!("Secret {} has no non-empty key {}", key_ref.name, key_ref.key),
                ))
            }
        }
    }
    if job.ct.spec.root_password_secret_ref.is_some() {
        return Err(Error::transient(format!(
            "waiting for Secret {} named in spec.rootPasswordSecretRef",
            key_ref.name
        )));
    }
    let password = Alphanumeric.sample_string(&mut rand::rng(), GENERATED_PASSWORD_LEN);
    let secret = Secret {
        metadata: job.owned_metadata(&key_ref.name),
        string_data: Some(BTreeMap::from([(key_ref.key.clone(), password.clone())])),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {
            return Err(Error::transient("root password Secret appeared concurrently; rereading"));
        }
        Err(error) => return Err(error.into()),
    }
    job.status.root_password_secret_ref = Some(key_ref);
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_at_the_vmid_is_resumed_reallocated_or_an_error() {
        let cases = [
            (true, false, ExistingGuest::Ours),
            (true, true, ExistingGuest::Ours),
            (false, false, ExistingGuest::TakenMeanwhile),
            (false, true, ExistingGuest::Foreign),
        ];
        for (owned, vmid_in_spec, expected) in cases {
            assert_eq!(existing_guest(owned, vmid_in_spec), expected, "owned {owned}, vmid in spec {vmid_in_spec}");
        }
    }
}
