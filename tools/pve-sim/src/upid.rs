//! Unique process ids of Proxmox worker tasks, as pve-common's `PVE::Tools::upid_encode` writes them.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upid {
    pub(crate) node: String,
    pub(crate) pid: u32,
    pub(crate) pstart: u64,
    pub(crate) starttime: i64,
    pub(crate) task_type: String,
    pub(crate) id: String,
    pub(crate) user: String,
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node, self.pid, self.pstart, self.starttime, self.task_type, self.id, self.user
        )
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UpidParseError;

impl fmt::Display for UpidParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unable to parse worker upid")
    }
}

impl FromStr for Upid {
    type Err = UpidParseError;

    /// Accepts exactly what `Display` writes; the user field may hold the `!` of a token id.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("UPID:").ok_or(UpidParseError)?;
        let rest = rest.strip_suffix(':').ok_or(UpidParseError)?;
        let parts: Vec<&str> = rest.splitn(7, ':').collect();
        let [node, pid, pstart, starttime, task_type, id, user] = parts[..] else {
            return Err(UpidParseError);
        };
        let hex = |v: &str, min: usize| {
            if v.len() < min || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(UpidParseError);
            }
            u64::from_str_radix(v, 16).map_err(|_| UpidParseError)
        };
        if node.is_empty() || task_type.is_empty() || user.is_empty() {
            return Err(UpidParseError);
        }
        Ok(Upid {
            node: node.to_string(),
            pid: u32::try_from(hex(pid, 8)?).map_err(|_| UpidParseError)?,
            pstart: hex(pstart, 8)?,
            starttime: i64::try_from(hex(starttime, 8)?).map_err(|_| UpidParseError)?,
            task_type: task_type.to_string(),
            id: id.to_string(),
            user: user.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Upid {
        Upid {
            node: "pve1".into(),
            pid: 0x1A2B,
            pstart: 0x3C4D5E,
            starttime: 0x6740_0000,
            task_type: "vzcreate".into(),
            id: "100".into(),
            user: "root@pam!ci".into(),
        }
    }

    #[test]
    fn formats_like_proxmox() {
        assert_eq!(sample().to_string(), "UPID:pve1:00001A2B:003C4D5E:67400000:vzcreate:100:root@pam!ci:");
    }

    #[test]
    fn parses_what_it_formats_and_rejects_the_rest() {
        let cases: &[(&str, bool)] = &[
            ("UPID:pve1:00001A2B:003C4D5E:67400000:vzcreate:100:root@pam!ci:", true),
            ("UPID:pve1:00001A2B:003C4D5E:67400000:vzstart::root@pam:", true),
            ("UPID:pve1:00001A2B:003C4D5E:67400000:vzcreate:100:root@pam!ci", false),
            ("pve1:00001A2B:003C4D5E:67400000:vzcreate:100:root@pam:", false),
            ("UPID:pve1:1A2B:003C4D5E:67400000:vzcreate:100:root@pam:", false),
            ("UPID:pve1:0000XYZW:003C4D5E:67400000:vzcreate:100:root@pam:", false),
            ("UPID:pve1:00001A2B:003C4D5E:67400000:vzcreate:100::", false),
            ("", false),
        ];
        for (text, ok) in cases {
            assert_eq!(text.parse::<Upid>().is_ok(), *ok, "{text}");
        }
        assert_eq!(sample().to_string().parse::<Upid>(), Ok(sample()));
    }
}
