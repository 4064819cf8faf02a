//! Without Redis: a Container's status followed through the Kubernetes API,
//! each change of phase, progress or message sent as a synthesized progress
//! event in the same JSON as the controller's (`complete` or `error` once the
//! controller has settled the generation), as `watch` does. The status holds
//! only the present, so there is no replay; an event's `id` is a digest of
//! what it says, and a client resuming with the id of the state it last saw
//! gets nothing until the status changes.

use futures::stream::StreamExt;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use sha2::{Digest, Sha256};

use super::events::SseStream;
use super::limits::StreamPermit;
use crate::crd::{Container, Phase, StageState};
use crate::progress::{ContainerRef, ProgressEvent};
use crate::watch::status::{status_view, StatusView};
use crate::watch::Outcome;
use axum::response::sse::Event;

/// The event a Container's status amounts to.
pub fn status_event(ct: &Container) -> ProgressEvent {
    let view = status_view(ct);
    let meta = &ct.metadata;
    let container = ContainerRef::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
        meta.uid.clone().unwrap_or_default(),
    );
    let percent = view.progress.unwrap_or(0).clamp(0, 100) as u8;
    let message = view.message.clone().unwrap_or_default();
    let event = match view.outcome {
        Some(Outcome::Ready) => ProgressEvent::complete(&container, message),
        Some(Outcome::Failed) => ProgressEvent::error(&container, failed_step(ct, &view), percent, message),
        _ => ProgressEvent::step(&container, step_name(view.phase), percent, message),
    };
    event.with_vmid(ct.status.as_ref().and_then(|s| s.vmid).map(i64::from))
}

/// The stage names of the Redis events for the stage phases (`syncing`),
/// the phase in lower case otherwise (`pending`, `deleting`).
fn step_name(phase: Phase) -> String {
    phase.as_str().to_ascii_lowercase()
}

/// The stage that failed, as an `error` event names it.
fn failed_step(ct: &Container, view: &StatusView) -> String {
    let stages = ct.status.as_ref().map(|s| s.stages.as_slice()).unwrap_or_default();
    stages
        .iter()
        .find(|stage| stage.state == StageState::Failed)
        .map_or_else(|| step_name(view.phase), |stage| stage.name.as_str().to_owned())
}

/// A digest of what an event says (not when): the same status, the same id.
pub fn event_id(event: &ProgressEvent) -> String {
    let mut hash = Sha256::new();
    for part in [&format!("{:?}", event.event_type), &event.step, &event.percent.to_string(), &event.message] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    format!("status-{}", &hex::encode(hash.finalize())[..16])
}

/// The status-backed stream of Container `name`; it ends when the
/// Container is deleted.
pub fn status_stream(api: Api<Container>, name: &str, after: Option<String>, permit: StreamPermit) -> SseStream {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut last_id = after;
    watcher(api, config)
        .default_backoff()
        .take_while(|event| std::future::ready(!matches!(event, Ok(watcher::Event::Delete(_)))))
        .filter_map(move |event| {
            let _held = &permit;
            let changed = match event {
                Ok(watcher::Event::Apply(ct) | watcher::Event::InitApply(ct)) => {
                    let event = status_event(&ct);
                    let id = event_id(&event);
                    (last_id.as_deref() != Some(id.as_str())).then(|| {
                        last_id = Some(id.clone());
                        Ok(Event::default().id(id).data(event.to_json()))
                    })
                }
                Err(error) => {
                    tracing::warn!(%error, "watching the Container failed; retrying");
                    None
                }
                _ => None,
            };
            std::future::ready(changed)
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ContainerStatus, StageName, StageStatus};
    use crate::progress::EventType;

    fn container(phase: Phase, observed: i64, stages: Vec<StageStatus>) -> Container {
        let spec = serde_json::from_value(serde_json::json!({"nodeRef": {"name": "pve1"}})).expect("spec");
        let mut ct = Container::new("web-1", spec);
        ct.metadata.namespace = Some("default".into());
        ct.metadata.uid = Some("uid-1".into());
        ct.metadata.generation = Some(2);
        ct.status = Some(ContainerStatus {
            phase: Some(phase),
            progress: Some(70),
            message: Some("Running 20-app.sh".into()),
            vmid: Some(120),
            observed_generation: Some(observed),
            stages,
            ..Default::default()
        });
        ct
    }

    fn failed_syncing() -> Vec<StageStatus> {
        vec![StageStatus {
            name: StageName::Syncing,
            state: StageState::Failed,
            started_at: None,
            finished_at: None,
            message: None,
        }]
    }

    #[test]
    fn statuses_become_the_events_the_controller_would_publish() {
        let cases = [
            (container(Phase::Syncing, 2, vec![]), EventType::Step, "syncing", 70),
            (container(Phase::Pending, 2, vec![]), EventType::Step, "pending", 70),
            (container(Phase::Ready, 2, vec![]), EventType::Complete, "finalizing", 100),
            (container(Phase::Ready, 1, vec![]), EventType::Step, "ready", 70),
            (container(Phase::Error, 2, failed_syncing()), EventType::Error, "syncing", 70),
        ];
        for (ct, event_type, step, percent) in cases {
            let event = status_event(&ct);
            assert_eq!((event.event_type, event.step.as_str(), event.percent), (event_type, step, percent), "{ct:?}");
            assert_eq!(event.container, ContainerRef::new("default", "web-1", "uid-1"));
            assert_eq!(event.vmid, Some(120));
        }
    }

    #[test]
    fn ids_name_what_an_event_says() {
        let first = status_event(&container(Phase::Syncing, 2, vec![]));
        let same_later = ProgressEvent { timestamp: first.timestamp + chrono::Duration::seconds(5), ..first.clone() };
        assert_eq!(event_id(&first), event_id(&same_later), "the timestamp is not part of the id");
        let moved = ProgressEvent { percent: 75, ..first.clone() };
        assert_ne!(event_id(&first), event_id(&moved));
    }
}
