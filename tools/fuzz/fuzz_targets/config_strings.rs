//! Strings of a guest's config: the rootfs size, the ownership marker in
//! the description, the tags, and the `net0` the controller writes.
#![no_main]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use infrahaus_operator::proxmox::guest::{same_tags, uid_marker};
use infrahaus_operator::proxmox::{
    description_with_marker, has_managed_tag, is_owned_by, marker_uid, net0, parse_size, render_tags, Net0, MANAGED_TAG,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    sizes(data, &text);
    marker(&text);
    tags(&text);
    network(data);
});

/// `size=8G` is read back to decide whether the disk must grow: the sizes the
/// controller writes read back exactly, and nothing else reads as negative.
fn sizes(data: &[u8], text: &str) {
    if parse_size(text).is_some() {
        assert!(proxmox_size(text), "{text:?} is not a size Proxmox writes");
    }
    let seed = u32::from_le_bytes(std::array::from_fn(|i| data.get(i).copied().unwrap_or(0)));
    let gib = u64::from(seed % (1 << 23));
    assert_eq!(parse_size(&format!("{gib}G")), Some(gib << 30));
    assert_eq!(parse_size(&format!("{gib}M")), Some(gib << 20));
    assert_eq!(parse_size(&format!("{gib}K")), Some(gib << 10));
    assert_eq!(parse_size(&gib.to_string()), Some(gib));
    assert_eq!(parse_size(&format!("{}T", gib % (1 << 13))), Some((gib % (1 << 13)) << 40));
    assert_eq!(parse_size(&format!("-{gib}G")), None);
}

/// Proxmox's grammar of a size: `^\d+(\.\d+)?[KMGT]?$`.
fn proxmox_size(text: &str) -> bool {
    let number = text.strip_suffix(['K', 'M', 'G', 'T']).unwrap_or(text);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction)
}

/// The marker decides whether a guest may be touched: the one written reads
/// back, and a description that already names a Container keeps naming it.
fn marker(text: &str) {
    if let Some(uid) = marker_uid(text) {
        assert!(!uid.is_empty() && uid == uid.trim() && !uid.contains('\n'), "{uid:?}");
        assert!(text.lines().any(|line| line.contains(uid)));
    }
    let uid = text.lines().next().unwrap_or_default().trim();
    if uid.is_empty() {
        return;
    }
    assert_eq!(marker_uid(&uid_marker(uid)), Some(uid));
    assert_eq!(marker_uid(&description_with_marker(uid, None)), Some(uid));
    let described = description_with_marker(uid, Some(text));
    let expected = marker_uid(text).unwrap_or(uid);
    assert_eq!(marker_uid(&described), Some(expected), "{described:?}");
    assert_eq!(is_owned_by(Some(&described), Some(MANAGED_TAG), uid), expected == uid);
    assert!(!is_owned_by(Some(&described), None, uid));
}

/// Tags compare as Proxmox normalises them; the managed tag always leads.
fn tags(text: &str) {
    let user: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let rendered = render_tags(&user);
    assert!(rendered.starts_with(MANAGED_TAG));
    assert!(has_managed_tag(Some(&rendered)));
    let reversed: Vec<String> = user.iter().rev().cloned().collect();
    assert!(same_tags(&rendered, &render_tags(&reversed)), "{rendered:?}");
    assert!(same_tags(text, text));
    let half = text.char_indices().nth(text.chars().count() / 2).map_or(text.len(), |(i, _)| i);
    let (a, b) = text.split_at(half);
    assert_eq!(same_tags(a, b), same_tags(b, a));
}

/// `net0` from fields the CRD's schema admits: the string Proxmox gets
/// carries exactly those fields, nothing injected.
fn network(data: &[u8]) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    const BRIDGE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-";
    let bridge: String = std::iter::once(b'v')
        .chain((0..usize::from(byte(0) % 15)).map(|i| BRIDGE_CHARS[usize::from(byte(1 + i)) % BRIDGE_CHARS.len()]))
        .map(char::from)
        .collect();
    let address = Ipv4Addr::new(byte(16), byte(17), byte(18), byte(19));
    let cidr = format!("{address}/{}", byte(20) % 33);
    let gateway = Ipv4Addr::new(byte(21), byte(22), byte(23), byte(24)).to_string();
    let flags = byte(25);
    let spec = Net0 {
        bridge: (flags & 1 != 0).then_some(bridge.as_str()),
        ipv4: match flags >> 1 & 3 {
            0 => None,
            1 => Some("dhcp"),
            _ => Some(cidr.as_str()),
        },
        gateway: (flags & 8 != 0).then_some(gateway.as_str()),
    };
    let written = net0(&spec);
    let fields: Vec<(&str, &str)> = written.split(',').map(|field| field.split_once('=').expect("key=value")).collect();
    let keys: BTreeMap<&str, &str> = fields.iter().copied().collect();
    assert_eq!(keys.len(), fields.len(), "{written:?} repeats a key");
    assert_eq!(keys["name"], "eth0");
    assert_eq!(keys["bridge"], spec.bridge.unwrap_or("vmbr0"));
    assert_eq!(keys["ip"], spec.ipv4.unwrap_or("dhcp"));
    let static_ip = spec.ipv4.is_some_and(|ip| ip != "dhcp");
    let expected_gw = if static_ip { spec.gateway } else { None };
    assert_eq!(keys.get("gw").copied(), expected_gw, "{written:?}");
    assert_eq!(keys.len(), 3 + usize::from(expected_gw.is_some()), "{written:?}");
}
