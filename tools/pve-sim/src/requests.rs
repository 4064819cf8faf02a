//! Counts of the Proxmox API requests pve-sim received, for `GET /sim/state`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

/// Requests under `/api2/json` since start, counted on arrival whatever their
/// answer (a refused or failed request was still sent); `/sim/*` calls are
/// not counted. `writes` leaves out the ticket login (`POST /access/ticket`),
/// which changes nothing on the node, so a test can assert that a client that
/// logged in wrote nothing; `logins` counts those, and `by_method` counts them
/// as POSTs. Methods other than these four count in `total` alone.
#[derive(Default)]
pub(crate) struct RequestCounts {
    get: AtomicU64,
    post: AtomicU64,
    put: AtomicU64,
    delete: AtomicU64,
    other: AtomicU64,
    logins: AtomicU64,
}

impl RequestCounts {
    pub(crate) fn record(&self, method: &str, login: bool) {
        let counter = match method {
            "GET" => &self.get,
            "POST" => &self.post,
            "PUT" => &self.put,
            "DELETE" => &self.delete,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if login {
            self.logins.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (get, post, put, delete) = (load(&self.get), load(&self.post), load(&self.put), load(&self.delete));
        let logins = load(&self.logins);
        json!({
            "total": get + post + put + delete + load(&self.other),
            "reads": get,
            "writes": (post + put + delete).saturating_sub(logins),
            "logins": logins,
            "by_method": {"GET": get, "POST": post, "PUT": put, "DELETE": delete},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_logins() {
        let counts = RequestCounts::default();
        assert_eq!(counts.to_json()["total"], 0);
        for (method, login) in [("GET", false), ("GET", false), ("PUT", false), ("POST", true), ("DELETE", false)] {
            counts.record(method, login);
        }
        counts.record("OPTIONS", false);
        assert_eq!(
            counts.to_json(),
            json!({
                "total": 6, "reads": 2, "writes": 2, "logins": 1,
                "by_method": {"GET": 2, "POST": 1, "PUT": 1, "DELETE": 1},
            })
        );
    }
}
