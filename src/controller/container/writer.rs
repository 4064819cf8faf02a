//! The status of a running Container, written without holding up its run.
//!
//! A stage reports progress many times (a step, a task's UPID, a script
//! started); each report is a status write to the API server, and waiting
//! for each one made a Container's pipeline a round trip slower per step.
//! Progress is handed to a writer that writes in the background, the latest
//! status only (a newer report replaces one not written yet), so a stage
//! goes on at once and the status still shows each step soon after it
//! happened. What must be durable before the run goes on (a stage's state,
//! a task's UPID, a failure) is written in place, after the background
//! write in flight and in place of any queued one, so writes never land out
//! of order; and a run ends with [`StatusWriter::flush`].

use std::sync::{Arc, Mutex, MutexGuard};

use kube::api::Api;

use crate::crd::{Container, ContainerStatus};
use crate::error::Error;
use crate::k8s;

#[derive(Default)]
struct Queue {
    status: Option<ContainerStatus>,
    /// Whether a background task is writing (or about to write) the queue.
    writing: bool,
}

struct Shared {
    api: Api<Container>,
    name: String,
    queue: Mutex<Queue>,
    /// Held for each write, so two never overlap.
    write: tokio::sync::Mutex<()>,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) struct StatusWriter {
    shared: Arc<Shared>,
}

impl StatusWriter {
    pub fn new(api: Api<Container>, name: String) -> Self {
        let queue = Mutex::new(Queue::default());
        Self { shared: Arc::new(Shared { api, name, queue, write: tokio::sync::Mutex::new(()) }) }
    }

    /// Writes `status` in the background, replacing a status queued but not
    /// written yet.
    pub fn write_soon(&self, status: ContainerStatus) {
        let mut queue = self.shared.queue();
        queue.status = Some(status);
        if queue.writing {
            return;
        }
        queue.writing = true;
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                let _write = shared.write.lock().await;
                let Some(status) = ({
                    let mut queue = shared.queue();
                    let next = queue.status.take();
                    queue.writing = next.is_some();
                    next
                }) else {
                    return;
                };
                if let Err(error) = k8s::apply_status(&shared.api, &shared.name, &status).await {
                    tracing::warn!(%error, "could not write the Container's progress to its status");
                }
            }
        });
    }

    /// Writes `status` now, after the write in flight and instead of the one
    /// queued.
    pub async fn write(&self, status: &ContainerStatus) -> Result<(), Error> {
        let _write = self.shared.write.lock().await;
        self.shared.queue().status = None;
        k8s::apply_status(&self.shared.api, &self.shared.name, status).await?;
        Ok(())
    }

    /// Writes the queued status, if any, and waits for it.
    pub async fn flush(&self) -> Result<(), Error> {
        let _write = self.shared.write.lock().await;
        let queued = self.shared.queue().status.take();
        if let Some(status) = queued {
            k8s::apply_status(&self.shared.api, &self.shared.name, &status).await?;
        }
        Ok(())
    }
}
