//! Answers about tasks: a page of the log, the status, the node's task list.
#![no_main]

use infrahaus_operator::fuzzing::proxmox_answer;
use infrahaus_operator::proxmox::{successful_exit, TaskLogLine, TaskStatus, TaskSummary};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((lines, _total)) = proxmox_answer::<Vec<TaskLogLine>>(data) {
        let texts: Vec<&str> = lines.iter().map(|line| line.t.as_str()).collect();
        for fingerprint in infrahaus_operator::proxmox::host_key_fingerprints(texts.iter().copied()) {
            assert!(texts.iter().any(|t| t.contains(&fingerprint)), "{fingerprint} is not in the log");
        }
    }
    if let Ok((status, _)) = proxmox_answer::<TaskStatus>(data) {
        assert_eq!(status.is_running(), status.status == "running");
        if let Some(exitstatus) = &status.exitstatus {
            check_exit(exitstatus);
        }
    }
    if let Ok((tasks, _)) = proxmox_answer::<Vec<TaskSummary>>(data) {
        for task in &tasks {
            assert_eq!(task.is_running(), task.endtime.is_none());
            if let Ok(upid) = task.upid() {
                assert_eq!(upid.as_str(), task.upid);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        check_exit(text);
    }
});

/// Only `OK` and `WARNINGS: N` are success; anything else fails the task.
fn check_exit(exitstatus: &str) {
    let trimmed = exitstatus.trim();
    match successful_exit(exitstatus) {
        Some(0) if trimmed == "OK" => {}
        Some(n) => {
            let count = trimmed.strip_prefix("WARNINGS:").expect("success is OK or WARNINGS: N").trim();
            assert_eq!(count.parse::<u32>().ok(), Some(n), "{exitstatus:?}");
        }
        None => assert_ne!(trimmed, "OK"),
    }
}
