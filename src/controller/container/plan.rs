//! Which work a Container needs, decided from its spec, annotations and status
//! alone, so the rules are plain table-tested logic.

use crate::crd::{Container, Phase, StageName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do: Ready for this generation, or Error for this
    /// generation and retry value.
    Idle,
    Run(Run),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Stages to run again although they succeeded or failed before.
    pub reset: Vec<StageName>,
    /// The retry annotation value this run acts on.
    pub retry: Option<String>,
    /// The guest drifted from the spec: what is set back is reported as
    /// DriftCorrected.
    pub drift: bool,
}

pub fn decide(ct: &Container) -> Decision {
    if ct.settled_phase().is_some() {
        return Decision::Idle;
    }
    let status = ct.status.clone().unwrap_or_default();
    let retry = ct.retry_annotation().map(str::to_string);
    match status.phase {
        // A new generation of a Ready container re-applies its configuration;
        // the guest itself stays.
        Some(Phase::Ready) => Decision::Run(Run {
            reset: vec![StageName::Deploying, StageName::Syncing, StageName::Finalizing],
            retry,
            drift: false,
        }),
        Some(Phase::Error) => Decision::Run(Run {
            reset: StageName::ALL.into_iter().filter(|s| !status.stage_succeeded(*s)).collect(),
            retry,
            drift: false,
        }),
        _ => Decision::Run(Run { reset: Vec::new(), retry: retry.or(status.last_applied_retry), drift: false }),
    }
}

/// A Ready Container whose template changed: Deploy, Sync and Finalize run
/// again (scripts are documented to be idempotent); the guest stays.
pub fn template_changed(ct: &Container) -> Run {
    Run {
        reset: vec![StageName::Deploying, StageName::Syncing, StageName::Finalizing],
        retry: ct.retry_annotation().map(str::to_string),
        drift: false,
    }
}

/// A Ready Container whose guest drifted: the reconfiguration sets its
/// settings back and the power state is restored; stages run again only
/// when the guest must be started again.
pub fn drifted(ct: &Container) -> Run {
    Run { reset: Vec::new(), retry: ct.retry_annotation().map(str::to_string), drift: true }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ContainerSpec, ContainerStatus, StageState, StageStatus, RETRY_ANNOTATION};

    fn container(generation: i64, retry: Option<&str>, status: Option<ContainerStatus>) -> Container {
        let mut ct = Container::new(
            "web",
            serde_json::from_value::<ContainerSpec>(serde_json::json!({"nodeRef": {"name": "pve1"}})).expect("spec"),
        );
        ct.metadata.generation = Some(generation);
        if let Some(r) = retry {
            ct.metadata.annotations = Some([(RETRY_ANNOTATION.to_string(), r.to_string())].into());
        }
        ct.status = status;
        ct
    }

    fn status(phase: Phase, observed: i64, retry: Option<&str>, succeeded: &[StageName]) -> ContainerStatus {
        ContainerStatus {
            phase: Some(phase),
            observed_generation: Some(observed),
            last_applied_retry: retry.map(str::to_string),
            stages: StageName::ALL
                .iter()
                .map(|name| StageStatus {
                    name: *name,
                    state: if succeeded.contains(name) { StageState::Succeeded } else { StageState::Failed },
                    started_at: None,
                    finished_at: None,
                    message: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    use StageName::*;

    #[test]
    fn decisions() {
        let all = StageName::ALL.to_vec();
        let run = |reset: Vec<StageName>, retry: Option<&str>| {
            Decision::Run(Run { reset, retry: retry.map(str::to_string), drift: false })
        };
        let cases: Vec<(&str, Container, Decision)> = vec![
            ("new container runs", container(1, None, None), run(vec![], None)),
            (
                "ready and current is idle",
                container(1, None, Some(status(Phase::Ready, 1, None, &all))),
                Decision::Idle,
            ),
            (
                "ready with a new generation re-applies configuration",
                container(2, None, Some(status(Phase::Ready, 1, None, &all))),
                run(vec![Deploying, Syncing, Finalizing], None),
            ),
            (
                "error is final for its generation",
                container(1, None, Some(status(Phase::Error, 1, None, &[Creating, Starting, Deploying]))),
                Decision::Idle,
            ),
            (
                "error with the same retry value stays final",
                container(1, Some("a"), Some(status(Phase::Error, 1, Some("a"), &[Creating]))),
                Decision::Idle,
            ),
            (
                "a new retry value resumes from the failed stage",
                container(1, Some("b"), Some(status(Phase::Error, 1, Some("a"), &[Creating, Starting, Deploying]))),
                run(vec![Syncing, Finalizing], Some("b")),
            ),
            (
                "a spec change retries an error",
                container(2, None, Some(status(Phase::Error, 1, None, &[Creating]))),
                run(vec![Starting, Deploying, Syncing, Finalizing], None),
            ),
            (
                "an interrupted run continues",
                container(1, Some("a"), Some(status(Phase::Syncing, 1, Some("a"), &[Creating, Starting, Deploying]))),
                run(vec![], Some("a")),
            ),
        ];
        for (name, ct, expected) in cases {
            assert_eq!(decide(&ct), expected, "{name}");
        }
    }
}
