//! The five stages a Container goes through, and the one table that says
//! what each stage is: its phase, Event action, condition and percent span.
//! A stage does its work and reports progress within its own span (0 to 100
//! of it); the pipeline sequences them and owns status, Events and Redis.

mod create;
mod deploy;
mod finalize;
mod start;
mod sync;

use super::job::Job;
use crate::crd::conditions::types;
use crate::crd::{Phase, StageName};
use crate::error::Error;

/// What a stage is, in one place.
#[derive(Debug)]
pub(crate) struct Stage {
    pub name: StageName,
    /// The Container's phase while the stage runs.
    pub phase: Phase,
    /// The action of the stage's Kubernetes Events (Events of one action and
    /// reason are aggregated, so each stage gets its own).
    pub action: &'static str,
    /// The condition set when the stage succeeds or fails.
    pub condition: Option<&'static str>,
    /// The percent the stage starts at and the one the next stage starts at
    /// (the numbers of `status.progress` and of the Redis events).
    pub percent: (i32, i32),
    /// The message shown when the stage begins.
    pub start_message: &'static str,
}

/// Every stage, in the order they run.
pub(crate) const STAGES: [Stage; 5] = [
    Stage {
        name: StageName::Creating,
        phase: Phase::Creating,
        action: "Create",
        condition: Some(types::CREATED),
        percent: (5, 20),
        start_message: "Creating LXC container...",
    },
    Stage {
        name: StageName::Starting,
        phase: Phase::Starting,
        action: "Start",
        condition: Some(types::STARTED),
        percent: (25, 35),
        start_message: "Starting container...",
    },
    Stage {
        name: StageName::Deploying,
        phase: Phase::Deploying,
        action: "Deploy",
        condition: Some(types::DEPLOYED),
        percent: (40, 60),
        start_message: "Deploying configuration over SSH...",
    },
    Stage {
        name: StageName::Syncing,
        phase: Phase::Syncing,
        action: "Sync",
        condition: Some(types::SYNCED),
        percent: (65, 90),
        start_message: "Running configuration scripts...",
    },
    Stage {
        name: StageName::Finalizing,
        phase: Phase::Finalizing,
        action: "Finalize",
        condition: None,
        percent: (95, 100),
        start_message: "Discovering services and credentials...",
    },
];

/// The table entry of a stage.
pub(crate) fn stage(name: StageName) -> &'static Stage {
    STAGES.iter().find(|s| s.name == name).expect("every StageName has a row in STAGES")
}

impl Stage {
    /// Does the stage's work.
    pub async fn run(&self, job: &mut Job<'_>) -> Result<(), Error> {
        match self.name {
            StageName::Creating => create::run(job).await,
            StageName::Starting => start::run(job).await,
            StageName::Deploying => deploy::run(job).await,
            StageName::Syncing => sync::run(job).await,
            StageName::Finalizing => finalize::run(job).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_stage_once_in_order_with_rising_spans() {
        let names: Vec<StageName> = STAGES.iter().map(|s| s.name).collect();
        assert_eq!(names, StageName::ALL.to_vec());
        for pair in STAGES.windows(2) {
            assert!(pair[0].percent.0 < pair[0].percent.1, "{:?} has an empty span", pair[0].name);
            assert!(pair[0].percent.1 <= pair[1].percent.0, "{:?} overlaps the next stage", pair[0].name);
        }
        assert_eq!(STAGES[4].percent.1, 100);
        for name in StageName::ALL {
            assert_eq!(stage(name).name, name);
        }
    }
}
