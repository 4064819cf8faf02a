//! `systemctl list-units` output from inside the container becomes
//! `status.services`. Input: the exit code's byte, then stdout.
#![no_main]

use std::collections::BTreeSet;

use infrahaus_operator::discovery::{is_system_service, parse_running_services};
use infrahaus_operator::ssh::{ExitStatus, Output};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((code, stdout)) = data.split_first() else { return };
    let stdout = String::from_utf8_lossy(stdout).into_owned();
    let output = |code: u32, stdout: &str| Output {
        status: ExitStatus::Code(code),
        stdout: stdout.to_owned(),
        stderr: String::new(),
    };
    let services = parse_running_services(&output(u32::from(*code), &stdout));
    if *code != 0 {
        // A failed command (no systemd) reports nothing, whatever it printed.
        assert!(services.is_empty());
        return;
    }
    assert!(services.windows(2).all(|pair| pair[0] < pair[1]), "{services:?}");
    for name in &services {
        assert!(!name.is_empty() && !is_system_service(name), "{name:?}");
        assert!(!name.contains(char::is_whitespace), "{name:?}");
        assert!(stdout.contains(&format!("{name}.service")), "{name:?}");
    }
    let by_line: BTreeSet<String> = stdout.lines().flat_map(|line| parse_running_services(&output(0, line))).collect();
    assert_eq!(by_line.into_iter().collect::<Vec<_>>(), services);
});
