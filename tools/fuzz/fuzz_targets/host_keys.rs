//! The host keys a create task printed are pinned for SSH: what is taken
//! from the log must be a fingerprint the log holds, once each, in log order.
#![no_main]

use infrahaus_operator::proxmox::host_key_fingerprints;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().collect();
    let found = host_key_fingerprints(lines.iter().copied());
    for (index, fingerprint) in found.iter().enumerate() {
        let hash = fingerprint.strip_prefix("SHA256:").expect("a SHA256 fingerprint");
        assert!(!hash.is_empty());
        assert!(hash.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')), "{fingerprint:?}");
        let printed =
            |line: &&str| line.split_once("done: ").is_some_and(|(_, rest)| rest.contains(fingerprint.as_str()));
        assert!(lines.iter().any(printed), "{fingerprint:?}");
        assert!(!found[..index].contains(fingerprint), "{fingerprint:?} twice");
    }
    // Log order: the keys of a longer log start with those of its beginning,
    // and reading the log twice finds nothing new.
    let half = lines.len() / 2;
    let first = host_key_fingerprints(lines[..half].iter().copied());
    assert_eq!(&found[..first.len()], &first[..]);
    assert_eq!(host_key_fingerprints(lines.iter().chain(lines.iter()).copied()), found);
});
