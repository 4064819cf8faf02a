//! `GET .../interfaces`: the address SSH connects to is taken from it.
#![no_main]

use std::net::Ipv4Addr;

use infrahaus_operator::fuzzing::proxmox_answer;
use infrahaus_operator::proxmox::{eth0_ipv4, Iface};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((Some(interfaces), _)) = proxmox_answer::<Option<Vec<Iface>>>(data) else { return };
    let address = |iface: &Iface| -> Option<Ipv4Addr> {
        let inet = iface.inet.as_deref()?;
        inet.split('/').next()?.trim().parse().ok()
    };
    let found = eth0_ipv4(&interfaces);
    match interfaces.iter().find(|i| i.name == "eth0").and_then(address) {
        // eth0's own address wins over any other interface's.
        Some(eth0) => assert_eq!(found, Some(eth0)),
        // Else the first other interface with one; never loopback's.
        None => assert_eq!(found, interfaces.iter().filter(|i| i.name != "lo").find_map(address)),
    }
    if let Some(found) = found {
        assert!(interfaces.iter().any(|i| i.name != "lo" && address(i) == Some(found)));
    }
});
