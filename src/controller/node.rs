//! The ProxmoxNode controller: checks that the API is reachable and the token
//! accepted (`GET /version`) and reports it in the node's Ready condition and
//! `status.version`. Checked again periodically and on every change.
//!
//! A ProxmoxNode carries the finalizer `infrahaus.io/containers` while any
//! Container of its namespace refers to it: deleting a Container destroys
//! its guest through the node, so the node must outlive its Containers (as
//! with `kubectl delete ns`, or an Argo CD prune deleting everything at once).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;

use super::{Context, RunOptions};
use crate::crd::conditions::{reasons, set_condition, types, DesiredCondition};
use crate::crd::{Container, ProxmoxNode, ProxmoxNodeStatus};
use crate::error::Error;
use crate::{k8s, proxmox};

/// How often a reachable node is checked again.
const RECHECK: Duration = Duration::from_secs(300);
/// How soon an unreachable node is checked again.
const RECHECK_FAILED: Duration = Duration::from_secs(30);
/// Held while Containers refer to the node.
const FINALIZER: &str = "infrahaus.io/containers";

/// What a `GET /version` told about a node.
#[derive(Debug, PartialEq, Eq)]
enum Health {
    Connected { version: String },
    Failed { reason: &'static str, message: String },
}

/// The condition reason for a failed check.
fn failure_reason(error: &proxmox::Error) -> &'static str {
    match error {
        proxmox::Error::Tls { .. } => reasons::TLS_ERROR,
        proxmox::Error::Api { status: 401 | 403, .. } => reasons::UNAUTHORIZED,
        _ => reasons::UNREACHABLE,
    }
}

/// The status for a check result, keeping `lastTransitionTime` when the
/// outcome did not change.
fn status_for(
    previous: Option<&ProxmoxNodeStatus>,
    health: &Health,
    generation: Option<i64>,
    now: &Time,
) -> ProxmoxNodeStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let condition = match health {
        Health::Connected { version } => {
            status.version = Some(version.clone());
            DesiredCondition::truthy(
                types::READY,
                reasons::CONNECTED,
                format!("Proxmox VE {version} answers and accepts the token"),
                generation,
            )
        }
        Health::Failed { reason, message } => {
            DesiredCondition::falsy(types::READY, reason, message.clone(), generation)
        }
    };
    set_condition(&mut status.conditions, condition, now);
    status.observed_generation = generation;
    status
}

pub async fn run(
    ctx: Arc<Context>,
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let nodes: Api<ProxmoxNode> = options.watched(ctx.client.clone());
    let containers: Api<Container> = options.watched(ctx.client.clone());
    Controller::new(nodes, watcher::Config::default())
        // A Container that comes or goes may be what a node's deletion waits for.
        .watches(containers, watcher::Config::default(), |ct: Container| {
            let namespace = ct.namespace()?;
            Some(ObjectRef::<ProxmoxNode>::new(&ct.spec.node_ref.name).within(&namespace))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, |_, _, _| Action::requeue(RECHECK_FAILED), ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(node: Arc<ProxmoxNode>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = node.namespace().unwrap_or_default();
    let api: Api<ProxmoxNode> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&api, FINALIZER, node, |event| async {
        match event {
            FinalizerEvent::Apply(node) => check(node, &ctx).await,
            FinalizerEvent::Cleanup(node) => release(node, &ctx).await,
        }
    })
    .await?;
    Ok(action)
}

/// Lets the node go once no Container of its namespace refers to it.
async fn release(node: Arc<ProxmoxNode>, ctx: &Context) -> Result<Action, Error> {
    let namespace = node.namespace().unwrap_or_default();
    let containers: Api<Container> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = node.name_any();
    let mut users: Vec<String> = containers
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|ct| ct.spec.node_ref.name == name)
        .map(|ct| ct.name_any())
        .collect();
    if users.is_empty() {
        return Ok(Action::await_change());
    }
    users.sort();
    let note = format!(
        "ProxmoxNode {name} is deleted once no Container uses it; still used by {}",
        k8s::truncate(&users.join(", "), 512)
    );
    k8s::publish_event(&ctx.recorder, node.as_ref(), EventType::Normal, "InUse", "Delete", note.clone()).await;
    Err(Error::transient(note))
}

async fn check(node: Arc<ProxmoxNode>, ctx: &Context) -> Result<Action, Error> {
    let namespace = node.namespace().unwrap_or_default();
    let uid = node.uid().unwrap_or_default();
    let generation = node.metadata.generation;
    let last = ctx.node_checks.lock().unwrap_or_else(|e| e.into_inner()).get(&uid).copied();
    let ready = node
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == types::READY && c.status == "True"));
    if let Some((_, at)) = last.filter(|(checked, _)| *checked == generation) {
        let due = at + if ready { RECHECK } else { RECHECK_FAILED };
        let now = tokio::time::Instant::now();
        if now < due {
            return Ok(Action::requeue(due - now));
        }
    }
    let health = match proxmox_client(&node, &namespace, ctx).await {
        Ok(client) => match client.version().await {
            Ok(info) => Health::Connected { version: info.version },
            Err(error) => Health::Failed { reason: failure_reason(&error), message: error.to_string() },
        },
        Err(error) => Health::Failed { reason: reasons::INVALID_REFERENCE, message: error.to_string() },
    };
    let status = status_for(node.status.as_ref(), &health, generation, &Time(Timestamp::now()));
    if node.status.as_ref() != Some(&status) {
        let api: Api<ProxmoxNode> = Api::namespaced(ctx.client.clone(), &namespace);
        k8s::apply_status(&api, &node.name_any(), &status).await?;
    }
    ctx.node_checks.lock().unwrap_or_else(|e| e.into_inner()).insert(uid, (generation, tokio::time::Instant::now()));
    Ok(Action::requeue(match health {
        Health::Connected { .. } => RECHECK,
        Health::Failed { .. } => RECHECK_FAILED,
    }))
}

/// A Proxmox client for a ProxmoxNode, with its token from the Secret it names.
pub(crate) async fn proxmox_client(
    node: &ProxmoxNode,
    namespace: &str,
    ctx: &Context,
) -> Result<proxmox::Client, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret_name = &node.spec.token_secret_ref.name;
    let secret = secrets
        .get_opt(secret_name)
        .await?
        .ok_or_else(|| Error::transient(format!("waiting for token Secret {secret_name}")))?;
    let value = |key: &str| {
        k8s::secret_key(&secret, key)
            .map(|v| String::from_utf8_lossy(&v).trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Error::permanent(
                    reasons::INVALID_REFERENCE,
                    format!("token Secret {secret_name} has no key {key:?} (expected keys tokenId and secret)"),
                )
            })
    };
    let tls = node.spec.tls.clone().unwrap_or_default();
    let token = proxmox::ApiToken::new(value("tokenId")?, value("secret")?);
    let tls = proxmox::TlsOptions {
        ca_bundle: tls.ca_bundle,
        fingerprint: tls.fingerprint,
        insecure_skip_verify: tls.insecure_skip_verify,
    };
    let mut config = proxmox::ClientConfig::new(node.spec.endpoint.clone(), token, tls);
    let metrics = ctx.metrics.clone();
    config.observer = Some(Arc::new(move |record: &proxmox::RequestRecord| {
        metrics.proxmox_request(record.endpoint, record.status.unwrap_or(0));
    }));
    config.breaker = Some(ctx.breaker(&node.spec.endpoint));
    proxmox::Client::new(config)
        .map_err(|e| Error::permanent(reasons::INVALID_PARAMETERS, format!("ProxmoxNode {}: {e}", node.name_any())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("timestamp"))
    }

    #[test]
    fn status_follows_health_and_keeps_transition_times() {
        let up = Health::Connected { version: "8.3.0".into() };
        let down = Health::Failed { reason: reasons::UNAUTHORIZED, message: "401 authentication failure".into() };

        let first = status_for(None, &up, Some(1), &at(100));
        assert_eq!(first.version.as_deref(), Some("8.3.0"));
        assert_eq!(first.observed_generation, Some(1));
        let ready = &first.conditions[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str(), ready.reason.as_str()),
            ("Ready", "True", "Connected")
        );
        assert_eq!(ready.last_transition_time, at(100));

        let again = status_for(Some(&first), &up, Some(1), &at(200));
        assert_eq!(again.conditions[0].last_transition_time, at(100), "no transition, no new time");

        let failed = status_for(Some(&again), &down, Some(2), &at(300));
        let ready = &failed.conditions[0];
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Unauthorized"));
        assert_eq!(ready.last_transition_time, at(300));
        assert_eq!(failed.version.as_deref(), Some("8.3.0"), "the last known version stays");
        assert_eq!(failed.observed_generation, Some(2));
    }
}
