//! Vmids this controller allocated and has not created a guest at yet.
//!
//! `GET /cluster/nextid` answers the lowest vmid without a guest and
//! reserves nothing (pve-manager's `nextid`), so Containers applied together
//! are all given the same one: all but one then find the vmid taken, some
//! only after waiting for another Container's create task to end before
//! they can tell whose guest it is. Remembering the vmids handed out on each
//! node lets the next allocation skip them; Proxmox confirms the vmid chosen
//! (`nextid` with `vmid`), so another client's guest is still never taken.
//! Collisions with other clients remain possible and are handled by the
//! create stage as before.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long a vmid stays held without its guest being created: covers a
/// Container that waits for a node slot for long, and frees the vmid of one
/// deleted before its guest was created.
const HOLD: Duration = Duration::from_secs(30 * 60);

#[derive(Default)]
pub(crate) struct Vmids {
    /// Per node key: vmid -> when it was handed out.
    held: Mutex<HashMap<String, BTreeMap<u32, Instant>>>,
}

impl Vmids {
    /// The lowest vmid from `lowest` (what `nextid` answered) that this
    /// controller has not handed out on `node`; held from now on.
    pub fn hold_from(&self, node: &str, lowest: u32) -> u32 {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let ids = held.entry(node.to_owned()).or_default();
        let now = Instant::now();
        ids.retain(|_, since| now.duration_since(*since) < HOLD);
        let vmid = (lowest..).find(|id| !ids.contains_key(id)).unwrap_or(lowest);
        ids.insert(vmid, now);
        vmid
    }

    /// Lets `vmid` on `node` go: its guest exists now (Proxmox skips it),
    /// or it was not used.
    pub fn release(&self, node: &str, vmid: u32) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = held.get_mut(node) {
            ids.remove(&vmid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allocations_together_get_distinct_vmids_and_released_ones_come_back() {
        let vmids = Vmids::default();
        assert_eq!(vmids.hold_from("pve1", 100), 100);
        assert_eq!(vmids.hold_from("pve1", 100), 101, "100 is held");
        assert_eq!(vmids.hold_from("pve1", 100), 102);
        assert_eq!(vmids.hold_from("pve2", 100), 100, "another node has its own");
        assert_eq!(vmids.hold_from("pve1", 105), 105, "from what Proxmox answered");
        vmids.release("pve1", 101);
        assert_eq!(vmids.hold_from("pve1", 100), 101, "released");
        tokio::time::advance(HOLD).await;
        assert_eq!(vmids.hold_from("pve1", 100), 100, "a hold ends");
    }
}
