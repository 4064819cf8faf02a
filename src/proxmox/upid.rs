//! Proxmox task identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Proxmox task id, e.g. `UPID:pve1:0000A1B2:0123ABCD:6553F0A1:vzcreate:120:root@pam!ci:`.
///
/// The node named in it is the node that runs the task and must be asked about it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    text: String,
    node: String,
    pid: u32,
    pstart: u64,
    starttime: i64,
    task_type: String,
    id: String,
    user: String,
}

/// Why a string is not a UPID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid UPID {text:?}: {reason}")]
pub struct UpidParseError {
    text: String,
    reason: &'static str,
}

impl Upid {
    /// Node that runs the task.
    pub fn node(&self) -> &str {
        &self.node
    }
    /// Process id of the task's worker.
    pub fn pid(&self) -> u32 {
        self.pid
    }
    /// Start time of the worker process in clock ticks since boot.
    pub fn pstart(&self) -> u64 {
        self.pstart
    }
    /// Start time of the task in seconds since the Unix epoch.
    pub fn starttime(&self) -> i64 {
        self.starttime
    }
    /// Task type, e.g. `vzcreate`, `vzstart`, `vzdestroy`.
    pub fn task_type(&self) -> &str {
        &self.task_type
    }
    /// Object the task works on, usually the vmid; may be empty.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// User or token that started the task.
    pub fn user(&self) -> &str {
        &self.user
    }
    /// The UPID exactly as Proxmox wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Upid {
    type Err = UpidParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| UpidParseError { text: text.to_string(), reason };
        let rest = text.strip_prefix("UPID:").ok_or_else(|| err("does not start with 'UPID:'"))?;
        let rest = rest.strip_suffix(':').ok_or_else(|| err("does not end with ':'"))?;
        let fields: Vec<&str> = rest.split(':').collect();
        let [node, pid, pstart, starttime, task_type, id, user] = fields[..] else {
            return Err(err("expected 7 fields: node, pid, pstart, starttime, type, id, user"));
        };
        let hex = |field: &str, what| {
            if field.len() < 8 || !field.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(what));
            }
            u64::from_str_radix(field, 16).map_err(|_| err(what))
        };
        if node.is_empty() || !node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(err("node is not a node name"));
        }
        let pid = u32::try_from(hex(pid, "pid is not hexadecimal")?).map_err(|_| err("pid out of range"))?;
        let pstart = hex(pstart, "pstart is not hexadecimal")?;
        let starttime = i64::try_from(hex(starttime, "starttime is not hexadecimal")?)
            .map_err(|_| err("starttime out of range"))?;
        if task_type.is_empty() || task_type.contains(char::is_whitespace) {
            return Err(err("type is empty"));
        }
        if id.contains(char::is_whitespace) {
            return Err(err("id contains whitespace"));
        }
        if user.is_empty() || user.contains(char::is_whitespace) {
            return Err(err("user is empty"));
        }
        Ok(Upid {
            text: text.to_string(),
            node: node.to_string(),
            pid,
            pstart,
            starttime,
            task_type: task_type.to_string(),
            id: id.to_string(),
            user: user.to_string(),
        })
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upid({})", self.text)
    }
}

impl Serialize for Upid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Upid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_upids() {
        let cases = [
            (
                "UPID:pve1:00001C3A:0001B5E2:6553F0A1:vzcreate:120:root@pam:",
                ("pve1", 0x1C3A, 0x1B5E2, 0x6553F0A1, "vzcreate", "120", "root@pam"),
            ),
            (
                "UPID:pve-02:000A1B2C:1234567AB:65A1B2C3:vzstart:100:root@pam!ci:",
                ("pve-02", 0xA1B2C, 0x1234567AB, 0x65A1B2C3, "vzstart", "100", "root@pam!ci"),
            ),
            (
                "UPID:node1:00003F10:00A2C1D4:66F0E1A2:aptupdate::root@pam:",
                ("node1", 0x3F10, 0xA2C1D4, 0x66F0E1A2, "aptupdate", "", "root@pam"),
            ),
            (
                "UPID:pve:0002D3E1:0F00BA12:671A0B3C:vzdestroy:999999999:automation@pve!infrahaus:",
                ("pve", 0x2D3E1, 0x0F00BA12, 0x671A0B3C, "vzdestroy", "999999999", "automation@pve!infrahaus"),
            ),
        ];
        for (text, (node, pid, pstart, starttime, task_type, id, user)) in cases {
            let upid: Upid = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(upid.node(), node, "{text}");
            assert_eq!(upid.pid(), pid, "{text}");
            assert_eq!(upid.pstart(), pstart, "{text}");
            assert_eq!(upid.starttime(), starttime, "{text}");
            assert_eq!(upid.task_type(), task_type, "{text}");
            assert_eq!(upid.id(), id, "{text}");
            assert_eq!(upid.user(), user, "{text}");
            assert_eq!(upid.to_string(), text, "{text}: display round-trips");
            let json = serde_json::to_string(&upid).expect("serialises");
            assert_eq!(serde_json::from_str::<Upid>(&json).expect("deserialises"), upid);
        }
    }

    #[test]
    fn rejects_malformed_upids() {
        let cases = [
            ("", "does not start"),
            ("UPID:pve1:00001C3A:0001B5E2:6553F0A1:vzcreate:120:root@pam", "does not end"),
            ("upid:pve1:00001C3A:0001B5E2:6553F0A1:vzcreate:120:root@pam:", "does not start"),
            ("UPID:pve1:00001C3A:0001B5E2:6553F0A1:vzcreate:root@pam:", "7 fields"),
            ("UPID:pve1:00001C3A:0001B5E2:6553F0A1:vzcreate:120:root@pam:extra:", "7 fields"),
            ("UPID:pve1:1C3A:0001B5E2:6553F0A1:vzcreate:120:root@pam:", "pid"),
            ("UPID:pve1:00001C3G:0001B5E2:6553F0A1:vzcreate:120:root@pam:", "pid"),
            ("UPID:pve1:00001C3A:0001B5E2:6553F0A1::120:root@pam:", "type"),
            ("UPID::00001C3A:0001B5E2:6553F0A1:vzcreate:120:root@pam:", "node"),
            ("UPID:pve1:00001C3A:0001B5E2:6553F0A1:vzcreate:120::", "user"),
        ];
        for (text, reason) in cases {
            let err = text.parse::<Upid>().expect_err(text);
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
    }
}
