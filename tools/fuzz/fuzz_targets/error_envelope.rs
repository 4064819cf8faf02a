//! What Proxmox (or a proxy in front of it) answers: the error envelope of a
//! failed request, and the `{"data": ...}` envelope of a successful one.
//!
//! Input: two bytes of HTTP status, one byte of reason-phrase length, the
//! reason phrase, then the body.
#![no_main]

use infrahaus_operator::fuzzing::{proxmox_answer, proxmox_api_error};
use infrahaus_operator::proxmox::{Error, Upid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [high, low, reason_len, rest @ ..] = data else { return };
    let status = 100 + u16::from_be_bytes([*high, *low]) % 500;
    let (reason, body) = rest.split_at(usize::from(*reason_len).min(rest.len()));
    let reason = String::from_utf8_lossy(reason);
    check_error(&proxmox_api_error(status, &reason, body), status, &reason);
    check_answer(body);
});

fn check_error(error: &Error, status: u16, reason: &str) {
    let Error::Api { status: got, message, errors, .. } = error else { panic!("not an API error: {error:?}") };
    assert_eq!(*got, status);
    assert_eq!(message.trim_end(), message, "the message is trimmed");
    assert!(!message.is_empty() || reason.trim_end().is_empty(), "an empty message hides the reason {reason:?}");
    for text in errors.values() {
        assert_eq!(text.trim_end(), text);
    }
    let shown = error.to_string();
    assert!(shown.contains(&format!("HTTP {status}")), "{shown}");
    // One classification, however it is asked.
    assert_eq!(error.status(), Some(status));
    assert_eq!(error.metric_label() == "locked", error.is_lock_contention());
    if error.is_lock_contention() {
        assert!(error.is_transient());
    } else if error.is_already_exists() || error.is_not_found() {
        assert!(!error.is_transient());
    } else {
        assert_eq!(error.is_transient(), status >= 500 || status == 408 || status == 429);
    }
    if error.is_no_such_guest() || error.is_no_such_task() {
        assert!(error.is_not_found());
    }
}

fn check_answer(body: &[u8]) {
    // Read as a whole only when all of it is valid JSON: the envelope skips
    // keys it does not know without checking their strings.
    let answer = proxmox_answer::<serde_json::Value>(body);
    if let (Ok((data, total)), Ok(whole)) = (answer, serde_json::from_slice::<serde_json::Value>(body)) {
        assert_eq!(whole.get("data"), Some(&data));
        assert_eq!(whole.get("total").and_then(serde_json::Value::as_u64), total);
    }
    if let Ok((upid, _)) = proxmox_answer::<Upid>(body) {
        assert_eq!(upid.to_string().parse::<Upid>().as_ref(), Ok(&upid));
    }
}
