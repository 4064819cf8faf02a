//! `ss -tlnpH` and `ss -ulnpH` output from inside the container becomes
//! `status.ports`. Input: the TCP listing, a NUL, the UDP listing.
#![no_main]

use std::collections::BTreeSet;

use infrahaus_operator::discovery::{parse_listening_ports, ListeningPort, Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (tcp, udp) = text.split_once('\0').unwrap_or((&text, ""));
    let ports = parse_listening_ports(tcp, udp);
    // Sorted, one entry per port, protocol and process.
    assert!(ports.windows(2).all(|pair| pair[0] < pair[1]), "{ports:?}");
    for port in &ports {
        assert!(!port.process.is_empty());
        assert!(!port.process.contains("\",pid="), "{:?}", port.process);
    }
    // Each listing gives only its own protocol, and each line stands alone.
    let only = |protocol| ports.iter().filter(|p| p.protocol == protocol).cloned().collect::<Vec<_>>();
    assert_eq!(parse_listening_ports(tcp, ""), only(Protocol::Tcp));
    assert_eq!(parse_listening_ports("", udp), only(Protocol::Udp));
    let by_line: BTreeSet<ListeningPort> = tcp
        .lines()
        .flat_map(|line| parse_listening_ports(line, ""))
        .chain(udp.lines().flat_map(|line| parse_listening_ports("", line)))
        .collect();
    assert_eq!(by_line.into_iter().collect::<Vec<_>>(), ports);
});
