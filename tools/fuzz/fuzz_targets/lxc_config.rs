//! A guest's config, status and pending changes, as Proxmox answers them,
//! with its loose typing (numbers as strings, booleans as 0/1).
#![no_main]

use infrahaus_operator::fuzzing::proxmox_answer;
use infrahaus_operator::proxmox::{
    has_managed_tag, is_owned_by, marker_uid, parse_size, LxcConfig, LxcStatus, PendingEntry,
};
use libfuzzer_sys::fuzz_target;

/// The keys LxcConfig reads itself; every other key lands in `other`.
const KNOWN: &[&str] = &[
    "hostname",
    "description",
    "tags",
    "lock",
    "digest",
    "cores",
    "memory",
    "swap",
    "rootfs",
    "net0",
    "nameserver",
    "onboot",
    "unprivileged",
    "features",
    "ostype",
    "arch",
];

fuzz_target!(|data: &[u8]| {
    if let Ok((config, _)) = proxmox_answer::<LxcConfig>(data) {
        check_config(&config);
    }
    if let Ok((status, _)) = proxmox_answer::<LxcStatus>(data) {
        assert_eq!(status.is_running(), status.status == "running");
    }
    if let Ok((pending, _)) = proxmox_answer::<Vec<PendingEntry>>(data) {
        for entry in &pending {
            assert_eq!(entry.is_pending(), entry.pending.is_some() || entry.delete.is_some_and(|d| d > 0));
        }
    }
});

fn check_config(config: &LxcConfig) {
    for key in KNOWN {
        assert!(!config.other.contains_key(*key), "{key} read into other");
    }
    let size = config.rootfs.as_deref().and_then(|r| r.split(',').find_map(|p| p.strip_prefix("size=")));
    assert_eq!(config.rootfs_bytes(), size.and_then(parse_size));
    // Owned by the Container the marker names exactly when the managed tag is there.
    if let Some(uid) = config.description.as_deref().and_then(marker_uid) {
        let owned = is_owned_by(config.description.as_deref(), config.tags.as_deref(), uid);
        assert_eq!(owned, has_managed_tag(config.tags.as_deref()));
    } else {
        assert!(!is_owned_by(config.description.as_deref(), config.tags.as_deref(), ""));
    }
}
