//! Reads what a Container refers to: its ProxmoxNode (and the node's token
//! Secret) and its ContainerTemplate. A missing reference is waited for, not
//! an Error: it may be applied a moment later by the same `kubectl apply`.

use kube::api::Api;
use kube::ResourceExt;

use crate::controller::node::proxmox_client;
use crate::controller::Context;
use crate::crd::{Container, ContainerTemplate, ContainerTemplateSpec, Phase, ProxmoxNode};
use crate::error::Error;
use crate::{k8s, proxmox};

/// What a Container's references resolve to.
pub(crate) struct Inputs {
    pub pve: proxmox::Client,
    /// The node's name in Proxmox API paths.
    pub node_name: String,
    /// Namespace-scoped key of the ProxmoxNode, for the per-node limit.
    pub node_key: String,
    pub max_operations: usize,
    pub template: Option<(String, ContainerTemplateSpec)>,
}

/// What a Ready Container records of the template it was deployed and synced
/// from: `sha256:` and the first 16 bytes of the SHA-256 of its spec as
/// JSON, in hex.
pub(crate) fn template_hash(spec: &ContainerTemplateSpec) -> String {
    format!("sha256:{}", super::short_sha256(&serde_json::to_vec(spec).unwrap_or_default(), 16))
}

pub(crate) async fn resolve(ct: &Container, ctx: &Context) -> Result<Inputs, Error> {
    let mut inputs = resolve_node(ct, ctx).await?;
    inputs.template = template(ct, ctx).await?;
    Ok(inputs)
}

/// The Container's ContainerTemplate (its name and spec), if it names one.
pub(crate) async fn template(ct: &Container, ctx: &Context) -> Result<Option<(String, ContainerTemplateSpec)>, Error> {
    let Some(r) = &ct.spec.template_ref else { return Ok(None) };
    let templates: Api<ContainerTemplate> = Api::namespaced(ctx.client.clone(), &ct.namespace().unwrap_or_default());
    let template = templates
        .get_opt(&r.name)
        .await?
        .ok_or_else(|| Error::transient(format!("waiting for ContainerTemplate {}", r.name)))?;
    Ok(Some((r.name.clone(), template.spec)))
}

/// The node and its token only, all that deleting a guest needs: a template
/// deleted first (`kubectl delete ns`, an Argo CD Application going away)
/// must not hold the Container's deletion.
pub(crate) async fn resolve_node(ct: &Container, ctx: &Context) -> Result<Inputs, Error> {
    let namespace = ct.namespace().unwrap_or_default();
    let nodes: Api<ProxmoxNode> = Api::namespaced(ctx.client.clone(), &namespace);
    let node_name = &ct.spec.node_ref.name;
    let node = nodes
        .get_opt(node_name)
        .await?
        .ok_or_else(|| Error::transient(format!("waiting for ProxmoxNode {node_name}")))?;
    let pve = proxmox_client(&node, &namespace, ctx).await?;
    Ok(Inputs {
        pve,
        node_name: node.spec.node_name.clone(),
        node_key: format!("{namespace}/{node_name}"),
        max_operations: node.spec.max_concurrent_operations.max(1) as usize,
        template: None,
    })
}

/// Shows why a Container cannot start yet (a reference not there yet, an
/// unusable token Secret) in its status, keeping everything else.
pub(crate) async fn report_unresolved(ct: &Container, ctx: &Context, error: &Error) {
    report_waiting(ct, ctx, error.to_string(), |phase| phase.unwrap_or(Phase::Pending)).await;
}

/// Shows `message` (why the Container waits) in its status with the phase
/// `phase` makes of the current one, keeping everything else; writes nothing
/// when the message is already shown.
pub(crate) async fn report_waiting(
    ct: &Container,
    ctx: &Context,
    message: String,
    phase: impl FnOnce(Option<Phase>) -> Phase,
) {
    let mut status = ct.status.clone().unwrap_or_default();
    if status.message.as_deref() == Some(message.as_str()) {
        return;
    }
    status.phase = Some(phase(status.phase));
    status.message = Some(message);
    let api: Api<Container> = Api::namespaced(ctx.client.clone(), &ct.namespace().unwrap_or_default());
    if let Err(error) = k8s::apply_status(&api, &ct.name_any(), &status).await {
        tracing::warn!(%error, "could not record why the Container waits");
    }
}
