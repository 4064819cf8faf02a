//! UPIDs come from Proxmox answers and from `status.taskRef`, which anyone
//! who may edit the status can write.
#![no_main]

use infrahaus_operator::proxmox::Upid;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(upid) = text.parse::<Upid>() else { return };
    // Written back to status.taskRef and sent to Proxmox exactly as read.
    assert_eq!(upid.to_string(), text);
    assert_eq!(upid.as_str(), text);
    // The node is asked about the task: it must be a node name, not a path.
    assert!(!upid.node().is_empty());
    assert!(upid.node().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    assert!(upid.starttime() >= 0);

    // The fields alone make the same task, whatever the case and width of the hex.
    let rebuilt = format!(
        "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
        upid.node(),
        upid.pid(),
        upid.pstart(),
        upid.starttime(),
        upid.task_type(),
        upid.id(),
        upid.user()
    );
    let again: Upid = rebuilt.parse().unwrap_or_else(|e| panic!("{rebuilt:?} does not parse: {e}"));
    assert_eq!(
        (again.node(), again.pid(), again.pstart(), again.starttime(), again.task_type(), again.id(), again.user()),
        (upid.node(), upid.pid(), upid.pstart(), upid.starttime(), upid.task_type(), upid.id(), upid.user())
    );

    let json = serde_json::to_string(&upid).expect("a UPID serialises");
    assert_eq!(serde_json::from_str::<Upid>(&json).expect("and deserialises"), upid);
});
