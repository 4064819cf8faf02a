//! Reads what a Container refers to: its ProxmoxNode (and the node's token
//! Secret) and its ContainerTemplate. A missing reference is waited for, not
//! an Error: it may be applied a moment later by the same `kubectl apply`.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::ResourceExt;

use crate::controller::node::proxmox_client;
use crate::controller::Context;
use crate::crd::conditions::reasons;
use crate::crd::{Container, ContainerTemplate, ContainerTemplateSpec, Phase, ProxmoxNode, TemplateFile};
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
/// from: `sha256:` and the first 16 bytes, in hex, of the SHA-256 of the
/// template resolved: its spec as JSON (packages, scripts, files) and the
/// content of every file taken from a ConfigMap or Secret (of a Secret only
/// this hash is recorded, never a value).
pub(crate) async fn template_hash(
    client: &kube::Client,
    namespace: &str,
    spec: &ContainerTemplateSpec,
) -> Result<String, Error> {
    let mut input = serde_json::to_vec(spec).unwrap_or_default();
    for file in spec.files.iter().filter(|f| f.content.is_none()) {
        let content = file_content(client, namespace, file).await?;
        input.extend_from_slice(format!("\0{}\0{}\0", file.path, content.len()).as_bytes());
        input.extend_from_slice(&content);
    }
    Ok(format!("sha256:{}", super::short_sha256(&input, 16)))
}

/// A template file's content: its own, or the ConfigMap or Secret key it
/// names. A source not there yet is waited for.
pub(crate) async fn file_content(
    client: &kube::Client,
    namespace: &str,
    file: &TemplateFile,
) -> Result<Vec<u8>, Error> {
    if let Some(content) = &file.content {
        return Ok(content.clone().into_bytes());
    }
    let missing = |what: String| Error::transient(format!("file {}: waiting for {what}", file.path));
    let source = file.content_from.as_ref().ok_or_else(|| {
        Error::permanent(reasons::INVALID_PARAMETERS, format!("file {} has neither content nor contentFrom", file.path))
    })?;
    if let Some(r) = &source.config_map_key_ref {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let cm = api.get_opt(&r.name).await?.ok_or_else(|| missing(format!("ConfigMap {}", r.name)))?;
        let data = cm.data.and_then(|mut d| d.remove(&r.key)).map(String::into_bytes);
        let binary = || cm.binary_data.as_ref().and_then(|d| d.get(&r.key)).map(|b| b.0.clone());
        return data.or_else(binary).ok_or_else(|| missing(format!("key {} in ConfigMap {}", r.key, r.name)));
    }
    if let Some(r) = &source.secret_key_ref {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let secret = api.get_opt(&r.name).await?.ok_or_else(|| missing(format!("Secret {}", r.name)))?;
        return k8s::secret_key(&secret, &r.key).ok_or_else(|| missing(format!("key {} in Secret {}", r.key, r.name)));
    }
    Err(Error::permanent(reasons::INVALID_PARAMETERS, format!("file {}: contentFrom names no source", file.path)))
}

/// Whether `spec` takes a file from the ConfigMap (`secret` false) or the
/// Secret (`secret` true) called `name`.
pub(crate) fn uses_source(spec: &ContainerTemplateSpec, secret: bool, name: &str) -> bool {
    spec.files.iter().filter_map(|f| f.content_from.as_ref()).any(|source| {
        let key_ref = if secret { &source.secret_key_ref } else { &source.config_map_key_ref };
        key_ref.as_ref().is_some_and(|r| r.name == name)
    })
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
