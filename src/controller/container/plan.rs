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

    mod properties {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        use proptest::prelude::*;

        use super::super::*;
        use crate::crd::conditions::{reasons, set_condition, types, DesiredCondition};
        use crate::crd::{
            ContainerSpec, ContainerStatus, StageState, StageStatus, ACCEPT_HOST_KEY_ANNOTATION, RETRY_ANNOTATION,
        };

        const PINNED: &str = "SHA256:1q5RZRl7XCOgQgfKKRB7j05grjHF/4zxMfflqk8sLng";

        /// What a Container can be in when a reconcile looks at it: few
        /// generations and retry values, so that they often coincide.
        #[derive(Clone, Debug)]
        struct Shape {
            generation: Option<i64>,
            retry: Option<&'static str>,
            deleting: bool,
            /// The accept-host-key annotation: none, the pinned key, or a new one.
            accept: Option<&'static str>,
            status: Option<StatusShape>,
        }

        #[derive(Clone, Debug)]
        struct StatusShape {
            phase: Option<Phase>,
            observed: Option<i64>,
            last_retry: Option<&'static str>,
            stages: Vec<(StageName, StageState)>,
            host_key_mismatch: bool,
        }

        fn small_generation() -> impl Strategy<Value = Option<i64>> {
            proptest::option::of(1..=3i64)
        }

        fn retry_value() -> impl Strategy<Value = Option<&'static str>> {
            proptest::option::of(prop_oneof![Just("a"), Just("b"), Just("")])
        }

        fn stage_state() -> impl Strategy<Value = StageState> {
            prop_oneof![
                Just(StageState::Pending),
                Just(StageState::Running),
                Just(StageState::Succeeded),
                Just(StageState::Failed),
            ]
        }

        fn status_shape() -> impl Strategy<Value = StatusShape> {
            (
                proptest::option::of(proptest::sample::select(Phase::ALL.to_vec())),
                small_generation(),
                retry_value(),
                proptest::sample::subsequence(StageName::ALL.to_vec(), 0..=StageName::ALL.len()),
                proptest::collection::vec(stage_state(), StageName::ALL.len()),
                any::<bool>(),
            )
                .prop_map(|(phase, observed, last_retry, names, states, host_key_mismatch)| StatusShape {
                    phase,
                    observed,
                    last_retry,
                    stages: names.into_iter().zip(states).collect(),
                    host_key_mismatch,
                })
        }

        fn shape() -> impl Strategy<Value = Shape> {
            (
                small_generation(),
                retry_value(),
                proptest::bool::weighted(0.1),
                proptest::option::of(prop_oneof![Just(PINNED), Just("SHA256:new")]),
                proptest::option::of(status_shape()),
            )
                .prop_map(|(generation, retry, deleting, accept, status)| Shape {
                    generation,
                    retry,
                    deleting,
                    accept,
                    status,
                })
        }

        fn build(shape: &Shape) -> Container {
            let spec = serde_json::json!({"nodeRef": {"name": "pve1"}});
            let mut ct = Container::new("web", serde_json::from_value::<ContainerSpec>(spec).expect("spec"));
            ct.metadata.generation = shape.generation;
            let annotations: std::collections::BTreeMap<String, String> = [
                shape.retry.map(|r| (RETRY_ANNOTATION.to_string(), r.to_string())),
                shape.accept.map(|a| (ACCEPT_HOST_KEY_ANNOTATION.to_string(), a.to_string())),
            ]
            .into_iter()
            .flatten()
            .collect();
            ct.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
            let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
            if shape.deleting {
                ct.metadata.deletion_timestamp = Some(now.clone());
            }
            ct.status = shape.status.as_ref().map(|s| {
                let mut status = ContainerStatus {
                    phase: s.phase,
                    observed_generation: s.observed,
                    last_applied_retry: s.last_retry.map(str::to_string),
                    ssh_host_key_fingerprints: vec![PINNED.to_string()],
                    stages: s
                        .stages
                        .iter()
                        .map(|(name, state)| StageStatus {
                            name: *name,
                            state: *state,
                            started_at: None,
                            finished_at: None,
                            message: None,
                        })
                        .collect(),
                    ..Default::default()
                };
                if s.host_key_mismatch {
                    let condition = DesiredCondition::falsy(types::READY, reasons::HOST_KEY_MISMATCH, "m", s.observed);
                    set_condition(&mut status.conditions, condition, &now);
                }
                status
            });
            ct
        }

        fn succeeded(ct: &Container) -> Vec<StageName> {
            let status = ct.status.clone().unwrap_or_default();
            StageName::ALL.into_iter().filter(|s| status.stage_succeeded(*s)).collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

            /// Nothing to do exactly when the controller settled the Container.
            #[test]
            fn idle_exactly_when_settled(shape in shape()) {
                let ct = build(&shape);
                prop_assert_eq!(decide(&ct) == Decision::Idle, ct.settled_phase().is_some());
            }

            /// A Ready Container at its generation, with its retry acted on and
            /// no new host key to accept, is left alone.
            #[test]
            fn ready_and_current_is_idle(mut shape in shape(), status in status_shape()) {
                let mut status = status;
                status.phase = Some(Phase::Ready);
                status.observed = shape.generation.or(Some(1));
                shape.generation = status.observed;
                status.last_retry = shape.retry.or(status.last_retry);
                shape.deleting = false;
                shape.accept = None;
                shape.status = Some(status);
                prop_assert_eq!(decide(&build(&shape)), Decision::Idle);
            }

            /// A retry value not acted on yet always runs, and the run acts on it.
            #[test]
            fn a_new_retry_value_always_runs(mut shape in shape(), retry in prop_oneof![Just("x"), Just("y")]) {
                shape.retry = Some(retry);
                if let Some(status) = &mut shape.status {
                    status.last_retry = status.last_retry.filter(|r| *r != retry);
                }
                match decide(&build(&shape)) {
                    Decision::Run(run) => prop_assert_eq!(run.retry.as_deref(), Some(retry)),
                    Decision::Idle => prop_assert!(false, "a new retry value was ignored"),
                }
            }

            /// A generation the status has not observed always runs, and so
            /// does a Container being deleted.
            #[test]
            fn a_new_generation_or_a_deletion_runs(shape in shape()) {
                let ct = build(&shape);
                let observed = ct.status.as_ref().and_then(|s| s.observed_generation);
                if shape.deleting || observed.is_none() || observed != shape.generation {
                    prop_assert_ne!(decide(&ct), Decision::Idle);
                }
            }

            /// What runs again: a stage that succeeded only when a Ready
            /// Container re-applies its configuration (the guest stays, so never
            /// Create or Start); after an Error every stage that did not succeed;
            /// a run in flight resets nothing. Always in stage order, each once,
            /// and never as a drift run.
            #[test]
            fn reset_never_repeats_a_success_unless_ready_reapplies(shape in shape()) {
                let ct = build(&shape);
                let Decision::Run(run) = decide(&ct) else { return Ok(()) };
                prop_assert!(!run.drift);
                let order: Vec<usize> =
                    run.reset.iter().map(|s| StageName::ALL.iter().position(|x| x == s).expect("a stage")).collect();
                prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "{:?}", run.reset);
                let succeeded = succeeded(&ct);
                match ct.status.as_ref().and_then(|s| s.phase) {
                    Some(Phase::Ready) => {
                        prop_assert!(!run.reset.contains(&StageName::Creating));
                        prop_assert!(!run.reset.contains(&StageName::Starting));
                    }
                    Some(Phase::Error) => {
                        for stage in StageName::ALL {
                            prop_assert_eq!(run.reset.contains(&stage), !succeeded.contains(&stage), "{:?}", stage);
                        }
                    }
                    _ => prop_assert!(run.reset.is_empty()),
                }
            }

            /// The retry a run acts on: the annotation's value; without one, a
            /// run in flight keeps the value it started with.
            #[test]
            fn a_run_acts_on_the_annotation(shape in shape()) {
                let ct = build(&shape);
                let Decision::Run(run) = decide(&ct) else { return Ok(()) };
                let status = ct.status.clone().unwrap_or_default();
                let expected = match (shape.retry, status.phase) {
                    (Some(retry), _) => Some(retry.to_string()),
                    (None, Some(Phase::Ready | Phase::Error)) => None,
                    (None, _) => status.last_applied_retry,
                };
                prop_assert_eq!(run.retry, expected);
            }
        }
    }
}
