//! A node's operation slots (`maxConcurrentOperations`), taken without
//! waiting.
//!
//! A reconcile that waited for a slot would hold one of the controller's
//! `--concurrency` reconciles while doing nothing: a busy node would starve
//! Containers on other nodes, deletions and every other change. So a slot is
//! only ever tried: a Container that finds none is queued on the node and its
//! reconcile ends ([`Error::Queued`](crate::error::Error)). When a slot is
//! released, the Container first in the node's queue is reconciled again
//! through the controller's trigger stream, and resumes where it stopped
//! (the stages record how far they got). A fallback requeue covers a wake
//! that finds nothing to do.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::crd::Container;

/// One node's slots and the Containers waiting for one, first come first.
struct Node {
    limit: usize,
    semaphore: Arc<Semaphore>,
    waiting: VecDeque<ObjectRef<Container>>,
}

struct Shared {
    nodes: Mutex<HashMap<String, Node>>,
    wake: mpsc::UnboundedSender<ObjectRef<Container>>,
}

impl Shared {
    fn nodes(&self) -> MutexGuard<'_, HashMap<String, Node>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The slots of every ProxmoxNode, by namespace-scoped key.
pub(crate) struct NodeLimits {
    shared: Arc<Shared>,
    woken: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<Container>>>>,
}

impl Default for NodeLimits {
    fn default() -> Self {
        let (wake, woken) = mpsc::unbounded_channel();
        Self { shared: Arc::new(Shared { nodes: Mutex::new(HashMap::new()), wake }), woken: Mutex::new(Some(woken)) }
    }
}

/// A taken slot; dropping it frees the slot and wakes the next Container
/// queued on the node.
pub(crate) struct NodePermit {
    permit: Option<OwnedSemaphorePermit>,
    key: String,
    shared: Arc<Shared>,
}

impl Drop for NodePermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        let next = self.shared.nodes().get_mut(&self.key).and_then(|node| node.waiting.pop_front());
        if let Some(next) = next {
            let _ = self.shared.wake.send(next);
        }
    }
}

/// No slot was free; the Container is queued on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Busy {
    /// The node's slots in all.
    pub limit: usize,
}

impl NodeLimits {
    /// Takes one of the `limit` slots of node `key` for `who`, or queues
    /// `who` (once) to be woken when a slot is released.
    pub fn try_acquire(&self, key: &str, limit: usize, who: &ObjectRef<Container>) -> Result<NodePermit, Busy> {
        let limit = limit.max(1);
        let mut nodes = self.shared.nodes();
        let node = nodes.entry(key.to_string()).or_insert_with(|| Node {
            limit,
            semaphore: Arc::new(Semaphore::new(limit)),
            waiting: VecDeque::new(),
        });
        if node.limit != limit {
            resize(&node.semaphore, node.limit, limit);
            node.limit = limit;
        }
        match node.semaphore.clone().try_acquire_owned() {
            Ok(permit) => {
                node.waiting.retain(|queued| queued != who);
                Ok(NodePermit { permit: Some(permit), key: key.to_string(), shared: self.shared.clone() })
            }
            Err(_) => {
                if !node.waiting.contains(who) {
                    node.waiting.push_back(who.clone());
                }
                Err(Busy { limit })
            }
        }
    }

    /// Reconciles `who` through the same trigger stream, for other waits
    /// that end (a Proxmox node answering again).
    pub fn wake(&self, who: ObjectRef<Container>) {
        let _ = self.shared.wake.send(who);
    }

    /// The Containers to reconcile because a slot they wait for was
    /// released; for the controller's trigger stream, taken once.
    pub fn woken(&self) -> Option<mpsc::UnboundedReceiver<ObjectRef<Container>>> {
        self.woken.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Moves a node's semaphore from `old` to `new` permits in all. Permits held
/// under the old limit stay counted: a lower limit forgets free permits now
/// and absorbs the rest as they are released, ahead of anyone trying for one
/// (tokio's semaphore hands released permits to queued acquirers first), so
/// the cap holds while a limit changes.
fn resize(semaphore: &Arc<Semaphore>, old: usize, new: usize) {
    if new > old {
        semaphore.add_permits(new - old);
        return;
    }
    let excess = old - new;
    let owed = excess - semaphore.forget_permits(excess);
    let Ok(owed @ 1..) = u32::try_from(owed) else { return };
    let mut absorb = Box::pin(semaphore.clone().acquire_many_owned(owed));
    // The first poll queues it now, ahead of every later acquirer.
    match (&mut absorb).now_or_never() {
        Some(permits) => permits.into_iter().for_each(OwnedSemaphorePermit::forget),
        None => {
            tokio::spawn(async move {
                if let Ok(permits) = absorb.await {
                    permits.forget();
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(name: &str) -> ObjectRef<Container> {
        ObjectRef::new(name).within("ns")
    }

    #[tokio::test]
    async fn slots_cap_operations_per_node_and_never_wait() {
        let limits = NodeLimits::default();
        let first = limits.try_acquire("ns/pve1", 2, &ct("a"));
        let second = limits.try_acquire("ns/pve1", 2, &ct("b"));
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(limits.try_acquire("ns/pve1", 2, &ct("c")).err(), Some(Busy { limit: 2 }));
        assert!(limits.try_acquire("ns/pve2", 2, &ct("d")).is_ok(), "another node has its own slots");
        drop(first);
        assert!(limits.try_acquire("ns/pve1", 2, &ct("c")).is_ok(), "a released slot is reused");
    }

    #[tokio::test]
    async fn a_released_slot_wakes_the_first_queued_container_once() {
        let limits = NodeLimits::default();
        let mut woken = limits.woken().expect("the trigger stream");
        assert!(limits.woken().is_none(), "taken once");
        let held = limits.try_acquire("ns/pve1", 1, &ct("a")).expect("free");
        for name in ["b", "c", "b"] {
            assert!(limits.try_acquire("ns/pve1", 1, &ct(name)).is_err());
        }
        drop(held);
        assert_eq!(woken.try_recv().ok(), Some(ct("b")), "first come, first woken");
        assert!(woken.try_recv().is_err(), "one slot wakes one Container");
        let taken = limits.try_acquire("ns/pve1", 1, &ct("b")).expect("the woken one gets it");
        drop(taken);
        assert_eq!(woken.try_recv().ok(), Some(ct("c")), "b queued once, so c is next");
        assert!(woken.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_changed_limit_counts_the_slots_taken_under_the_old_one() {
        let limits = NodeLimits::default();
        let first = limits.try_acquire("ns/pve1", 2, &ct("a")).expect("free");
        let second = limits.try_acquire("ns/pve1", 2, &ct("b")).expect("free");
        assert!(limits.try_acquire("ns/pve1", 1, &ct("c")).is_err(), "two run, under a limit of 1");
        drop(first);
        tokio::task::yield_now().await;
        assert!(limits.try_acquire("ns/pve1", 1, &ct("c")).is_err(), "still one running under a limit of 1");
        drop(second);
        tokio::task::yield_now().await;
        let one = limits.try_acquire("ns/pve1", 1, &ct("c")).expect("one operation once the others ended");
        assert!(limits.try_acquire("ns/pve1", 1, &ct("d")).is_err(), "and only one");
        // Raising the limit again frees room at once.
        assert!(limits.try_acquire("ns/pve1", 3, &ct("d")).is_ok(), "a raised limit admits more");
        drop(one);
    }
}
