//! The credentials listing printed inside the container becomes Secret
//! data. Input starting with `f`, `s` or a space is a listing as the
//! container may print it; any other input is a set of files (names and
//! contents separated by NUL) listed the way the shell script does.
#![no_main]

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use infrahaus_operator::discovery::{parse_credentials, Credentials, MAX_SECRET_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match data.first() {
        Some(b'f' | b's' | b' ') => listing(&String::from_utf8_lossy(data)),
        _ => files(data),
    }
});

/// Kubernetes' rule for Secret keys, restated.
fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && !key.starts_with("..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whatever the container prints, the Secret stays valid and within its limit,
/// and every line is accounted for.
fn listing(stdout: &str) {
    let credentials = parse_credentials(stdout);
    check_secret(&credentials);
    let lines = stdout.lines().filter(|line| !line.trim().is_empty()).count();
    assert!(credentials.files.len() + credentials.skipped.len() <= lines);
    assert!(credentials.skipped.len() <= lines);
}

fn check_secret(credentials: &Credentials) {
    for key in credentials.files.keys() {
        assert!(is_secret_key(key), "{key:?} is not a Secret key");
    }
    let total: usize = credentials.files.values().map(Vec::len).sum();
    assert!(total <= MAX_SECRET_BYTES);
}

/// Files listed the way the script lists them come back byte for byte, in
/// the order they fit the Secret; the others are skipped with a reason.
fn files(data: &[u8]) {
    let parts: Vec<&[u8]> = data.split(|b| *b == 0).collect();
    let mut listing = String::new();
    let mut expected = BTreeMap::new();
    let mut skipped = 0;
    let mut total = 0;
    for pair in parts.chunks(2) {
        let (name, content) = (pair[0], pair.get(1).copied().unwrap_or_default());
        listing.push_str(&format!("file {} {}\n", STANDARD.encode(name), STANDARD.encode(content)));
        match std::str::from_utf8(name) {
            Ok(key) if is_secret_key(key) && total + content.len() <= MAX_SECRET_BYTES => {
                total += content.len();
                expected.insert(key.to_owned(), content.to_vec());
            }
            _ => skipped += 1,
        }
    }
    let credentials = parse_credentials(&listing);
    check_secret(&credentials);
    assert_eq!(credentials.files, expected);
    assert_eq!(credentials.skipped.len(), skipped);
}
