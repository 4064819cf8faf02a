//! Following the Container's status through the Kubernetes API.

use anyhow::{bail, Context as _};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher;

use super::args::Target;
use super::render::Console;
use super::Outcome;
use crate::crd::{Container, Phase};

/// The Container's status, when the controller has settled it.
pub(super) async fn settled_status(statuses: Option<&Api<Container>>, name: &str) -> Option<StatusView> {
    let ct = statuses?.get_opt(name).await.ok()??;
    Some(status_view(&ct)).filter(|view| view.outcome.is_some())
}

/// What a status update means for the watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusView {
    pub phase: Phase,
    pub progress: Option<i32>,
    pub message: Option<String>,
    /// Set once the controller has settled this generation.
    pub outcome: Option<Outcome>,
}

/// The view of one Container: its phase, and an outcome only when the
/// controller has nothing more to do for the current generation and retry
/// value (a Ready or Error from an older generation is not the answer).
pub fn status_view(ct: &Container) -> StatusView {
    let status = ct.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let deleting = ct.metadata.deletion_timestamp.is_some();
    let outcome = match ct.settled_phase() {
        Some(Phase::Ready) => Some(Outcome::Ready),
        Some(Phase::Error) => Some(Outcome::Failed),
        _ => None,
    };
    StatusView {
        phase: if deleting { Phase::Deleting } else { phase },
        progress: status.progress,
        message: status.message,
        outcome,
    }
}

pub(super) async fn follow_status(target: &Target, console: &mut Console) -> anyhow::Result<Outcome> {
    let client = kube::Client::try_default().await.context("no Kubernetes configuration (kubeconfig or in-cluster)")?;
    let api: Api<Container> = Api::namespaced(client, &target.namespace);
    if api.get_opt(&target.name).await.with_context(|| format!("reading Container {target}"))?.is_none() {
        console.line(&format!("waiting for Container {target} to be created ..."));
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={}", target.name));
    let mut events = std::pin::pin!(watcher(api, config));
    let mut shown: Option<StatusView> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(ct) | watcher::Event::InitApply(ct)) => {
                let view = status_view(&ct);
                let changed = shown.as_ref().is_none_or(|old| {
                    (old.phase, old.progress, &old.message) != (view.phase, view.progress, &view.message)
                });
                if changed {
                    console.status(&view);
                }
                if let Some(outcome) = view.outcome {
                    return Ok(outcome);
                }
                shown = Some(view);
            }
            Ok(watcher::Event::Delete(_)) => bail!("Container {target} was deleted"),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(error) => console.warning(&format!("watching {target}: {error}")),
        }
    }
    bail!("the watch on Container {target} ended")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ContainerStatus;

    fn container(generation: i64, phase: Option<Phase>, observed: Option<i64>) -> Container {
        let spec = serde_json::from_value(serde_json::json!({"nodeRef": {"name": "pve1"}})).expect("spec");
        let mut ct = Container::new("web-1", spec);
        ct.metadata.generation = Some(generation);
        ct.status = Some(ContainerStatus {
            phase,
            progress: Some(40),
            message: Some("Deploying".into()),
            observed_generation: observed,
            ..Default::default()
        });
        ct
    }

    #[test]
    fn status_settles_only_for_the_current_generation() {
        let deleting = {
            let mut ct = container(1, Some(Phase::Ready), Some(1));
            ct.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
            ct
        };
        let retried = {
            let mut ct = container(1, Some(Phase::Error), Some(1));
            ct.metadata.annotations = Some([(crate::crd::RETRY_ANNOTATION.to_owned(), "1".to_owned())].into());
            ct
        };
        let cases = [
            ("no status yet", container(1, None, None), Phase::Pending, None),
            ("in flight", container(1, Some(Phase::Deploying), Some(1)), Phase::Deploying, None),
            ("ready", container(1, Some(Phase::Ready), Some(1)), Phase::Ready, Some(Outcome::Ready)),
            ("error", container(1, Some(Phase::Error), Some(1)), Phase::Error, Some(Outcome::Failed)),
            ("ready, older generation", container(2, Some(Phase::Ready), Some(1)), Phase::Ready, None),
            ("error, older generation", container(2, Some(Phase::Error), Some(1)), Phase::Error, None),
            ("error with a new retry value", retried, Phase::Error, None),
            ("being deleted", deleting, Phase::Deleting, None),
        ];
        for (case, ct, phase, outcome) in cases {
            let view = status_view(&ct);
            assert_eq!((view.phase, view.outcome), (phase, outcome), "{case}");
        }
    }
}
