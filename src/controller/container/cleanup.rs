//! Deletion: with `deletionPolicy: Delete` the guest is stopped and destroyed
//! (`purge=1`, `destroy-unreferenced-disks=1`) and the task waited on; with
//! `Retain` it is left alone. A guest without this Container's marker is never
//! touched.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::resolve::{report_waiting, resolve_node};
use crate::controller::Context;
use crate::crd::{Container, DeletionPolicy, Phase};
use crate::error::Error;
use crate::k8s;
use crate::proxmox::{self, DeleteLxcOptions, Upid};

const DELETE_ACTION: &str = "Delete";

pub(super) async fn run(ct: Arc<Container>, ctx: &Context) -> Result<Action, Error> {
    if ct.spec.deletion_policy == DeletionPolicy::Retain {
        let kept = keep_secrets(&ct, ctx).await?;
        let note = match kept.as_slice() {
            [] => "deletionPolicy is Retain; the guest is left in place".to_owned(),
            names => format!(
                "deletionPolicy is Retain; the guest is left in place, and so are the Secrets {}",
                names.join(", ")
            ),
        };
        k8s::publish_event(&ctx.recorder, ct.as_ref(), EventType::Normal, "Retained", DELETE_ACTION, note).await;
        return Ok(Action::await_change());
    }
    let status = ct.status.clone().unwrap_or_default();
    let Some(vmid) = status.vmid.or(ct.spec.vmid).map(|v| v as u32) else {
        return Ok(Action::await_change());
    };
    let inputs = match resolve_node(&ct, ctx).await {
        Ok(inputs) => inputs,
        Err(error) => {
            // The finalizer holds, so the guest is not leaked; the status says why.
            let message = format!("deleting CT {vmid} waits: {error}");
            report_waiting(&ct, ctx, message, |_| Phase::Deleting).await;
            return Err(error);
        }
    };
    let pve = &inputs.pve;
    let node = &inputs.node_name;
    // The guest was created on `status.node`. When the ProxmoxNode now names
    // another node, "no such guest" there says nothing about the guest, so
    // the finalizer holds until they agree again.
    if let Some(created_on) = status.node.as_deref().filter(|created_on| created_on != node) {
        let error = Error::transient(format!(
            "deleting CT {vmid} waits: it was created on node {created_on}, but ProxmoxNode {} now names node {node}; \
             restore spec.nodeName, or remove the finalizer by hand once the guest is dealt with",
            ct.spec.node_ref.name
        ));
        report_waiting(&ct, ctx, error.to_string(), |_| Phase::Deleting).await;
        return Err(error);
    }
    let uid = ct.uid().unwrap_or_default();
    let timings = &ctx.timings;

    // A task still running holds the config lock; let it finish first.
    if let Some(upid) = status.task_ref.as_deref().and_then(|t| t.parse::<Upid>().ok()) {
        let _ = pve.wait_task(&upid, timings.task_poll, timings.task_timeout).await;
    }
    // A create whose answer was lost carries no marker until it ends: judged
    // before that, our own guest would look foreign and be left behind.
    let config = match pve.lxc_config_settled(node, vmid, timings.task_poll, timings.task_timeout).await {
        Ok(Some(config)) => config,
        Ok(None) => return Ok(Action::await_change()),
        Err(error) => {
            let error = Error::from(error);
            report_waiting(&ct, ctx, format!("deleting CT {vmid} waits: {error}"), |_| Phase::Deleting).await;
            return Err(error);
        }
    };
    if !proxmox::is_owned_by(config.description.as_deref(), config.tags.as_deref(), &uid) {
        k8s::publish_event(
            &ctx.recorder,
            ct.as_ref(),
            EventType::Warning,
            "ForeignGuestKept",
            DELETE_ACTION,
            format!("CT {vmid} does not carry this Container's marker and tag; it is left untouched"),
        )
        .await;
        return Ok(Action::await_change());
    }
    if config.lock.is_some() {
        pve.wait_unlocked(node, vmid, timings.task_poll, timings.task_timeout).await?;
    }
    let mut deleting = status.clone();
    deleting.phase = Some(Phase::Deleting);
    deleting.message = Some(format!("Stopping and destroying CT {vmid}"));
    let api: Api<Container> = Api::namespaced(ctx.client.clone(), &ct.namespace().unwrap_or_default());
    k8s::apply_status(&api, &ct.name_any(), &deleting).await?;
    let who = kube::runtime::reflector::ObjectRef::from_obj(ct.as_ref());
    let _permit = match ctx.node_limits.try_acquire(&inputs.node_key, inputs.max_operations, &who) {
        Ok(permit) => permit,
        Err(busy) => {
            let error = Error::queued_on_node(node, busy.limit);
            report_waiting(&ct, ctx, format!("deleting CT {vmid} is {error}"), |_| Phase::Deleting).await;
            return Err(error);
        }
    };
    let current = pve.lxc_status(node, vmid).await?;
    if current.is_running() {
        let upid = pve.stop_lxc(node, vmid).await?;
        pve.wait_task(&upid, timings.task_poll, timings.task_timeout).await?;
    }
    let options = DeleteLxcOptions { purge: true, destroy_unreferenced_disks: true, force: false };
    let upid = pve.delete_lxc(node, vmid, options).await?;
    pve.wait_task(&upid, timings.task_poll, timings.task_timeout).await?;
    k8s::publish_event(
        &ctx.recorder,
        ct.as_ref(),
        EventType::Normal,
        "Destroyed",
        DELETE_ACTION,
        format!("CT {vmid} stopped and destroyed"),
    )
    .await;
    Ok(Action::await_change())
}

/// With Retain the guest stays, so its root password and credentials must
/// too: the Secrets the Container owns lose their owner reference to it, and
/// garbage collection leaves them. Returns the names of the Secrets kept.
async fn keep_secrets(ct: &Container, ctx: &Context) -> Result<Vec<String>, Error> {
    let uid = ct.uid().unwrap_or_default();
    let status = ct.status.clone().unwrap_or_default();
    let names = [status.root_password_secret_ref.map(|r| r.name), status.credentials_secret_ref.map(|r| r.name)];
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ct.namespace().unwrap_or_default());
    let mut kept = Vec::new();
    for name in names.into_iter().flatten() {
        let Some(secret) = secrets.get_opt(&name).await? else { continue };
        let owners = secret.metadata.owner_references.unwrap_or_default();
        if !owners.iter().any(|owner| owner.uid == uid) {
            continue;
        }
        let others: Vec<_> = owners.into_iter().filter(|owner| owner.uid != uid).collect();
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": secret.metadata.resource_version,
                "ownerReferences": if others.is_empty() { serde_json::Value::Null } else { serde_json::json!(others) },
            }
        });
        secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        kept.push(name);
    }
    Ok(kept)
}
