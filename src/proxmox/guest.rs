//! Pure helpers around guests: the `net0` string, the address of `eth0`, host keys
//! in the create log, the ownership marker and tags.

use std::net::Ipv4Addr;

use super::lxc::Iface;

/// Bridge used when the spec names none.
pub const DEFAULT_BRIDGE: &str = "vmbr0";

/// Tag carried by every guest the controller creates.
pub const MANAGED_TAG: &str = "infrahaus";

/// Key of the ownership line in a guest's description.
pub const UID_MARKER_KEY: &str = "infrahaus.io/uid";

/// What `net0` says about `eth0`; absent values take Proxmox's usual ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Net0<'a> {
    /// The bridge; `vmbr0` when absent.
    pub bridge: Option<&'a str>,
    /// `dhcp` (when absent, too) or a CIDR.
    pub ipv4: Option<&'a str>,
    /// The gateway, used with a static address only.
    pub gateway: Option<&'a str>,
}

/// The `net0` parameter: `name=eth0,bridge=vmbr0,ip=dhcp`, or with a static
/// address `ip=192.0.2.10/24,gw=192.0.2.1`.
pub fn net0(network: &Net0<'_>) -> String {
    let bridge = network.bridge.unwrap_or(DEFAULT_BRIDGE);
    let ipv4 = network.ipv4.unwrap_or("dhcp");
    let mut out = format!("name=eth0,bridge={bridge},ip={ipv4}");
    if ipv4 != "dhcp" {
        if let Some(gateway) = network.gateway {
            out.push_str(",gw=");
            out.push_str(gateway);
        }
    }
    out
}

/// The IPv4 address of `eth0` (or else of the first interface other than `lo` that
/// has one), without its prefix length.
pub fn eth0_ipv4(interfaces: &[Iface]) -> Option<Ipv4Addr> {
    let address = |iface: &Iface| {
        let inet = iface.inet.as_deref()?;
        let host = inet.split_once('/').map_or(inet, |(host, _)| host);
        host.trim().parse::<Ipv4Addr>().ok()
    };
    interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .and_then(address)
        .or_else(|| interfaces.iter().filter(|i| i.name != "lo").find_map(address))
}

/// The SSH host key fingerprints a create task printed
/// (`Creating SSH host key '...' - this may take some time ...` followed by
/// `done: SHA256:<fp> root@<host>`), in log order without duplicates.
pub fn host_key_fingerprints<'a>(log_lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for line in log_lines {
        let Some((_, rest)) = line.split_once("done: ") else {
            continue;
        };
        let Some(fingerprint) = rest.split_whitespace().next() else {
            continue;
        };
        let Some(hash) = fingerprint.strip_prefix("SHA256:") else {
            continue;
        };
        let well_formed =
            !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        if well_formed && !found.iter().any(|f| f == fingerprint) {
            found.push(fingerprint.to_string());
        }
    }
    found
}

/// The description line that marks a guest as belonging to a Container.
pub fn uid_marker(uid: &str) -> String {
    format!("{UID_MARKER_KEY}={uid}")
}

/// A description with the ownership marker on its own line, after `text` if any.
pub fn description_with_marker(uid: &str, text: Option<&str>) -> String {
    match text.map(str::trim_end).filter(|t| !t.is_empty()) {
        Some(text) => format!("{text}\n{}\n", uid_marker(uid)),
        None => format!("{}\n", uid_marker(uid)),
    }
}

/// The Container uid a guest's description names, if any.
pub fn marker_uid(description: &str) -> Option<&str> {
    description.lines().find_map(|line| {
        let (key, value) = line.trim().split_once('=')?;
        (key.trim() == UID_MARKER_KEY).then(|| value.trim()).filter(|v| !v.is_empty())
    })
}

/// Whether a guest's tags (separated by `;`, `,` or spaces, as Proxmox
/// splits them) include [`MANAGED_TAG`].
pub fn has_managed_tag(tags: Option<&str>) -> bool {
    tags.unwrap_or_default().split([';', ',', ' ']).any(|tag| tag.trim() == MANAGED_TAG)
}

/// Whether a guest belongs to the Container `uid`: its description carries
/// the Container's marker and its tags the managed tag. A guest missing
/// either was not made by the controller for this Container, or was changed
/// by hand since; it is not touched.
pub fn is_owned_by(description: Option<&str>, tags: Option<&str>, uid: &str) -> bool {
    description.and_then(marker_uid) == Some(uid) && has_managed_tag(tags)
}

/// The `tags` parameter: [`MANAGED_TAG`] first, then the user's tags in order,
/// without duplicates.
pub fn render_tags(user_tags: &[String]) -> String {
    let mut tags: Vec<&str> = vec![MANAGED_TAG];
    for tag in user_tags.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    tags.join(";")
}

/// Whether two tag lists are the same set the way Proxmox compares them
/// (`get_unique_tags`: split on `;`, `,` or space, lower-cased, de-duplicated).
pub fn same_tags(a: &str, b: &str) -> bool {
    let set = |tags: &str| -> std::collections::BTreeSet<String> {
        tags.split([';', ',', ' ']).filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
    };
    set(a) == set(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_compare_as_proxmox_normalizes_them() {
        assert!(same_tags("infrahaus;web", "web;infrahaus"));
        assert!(same_tags("infrahaus;Web;web", "infrahaus,web"));
        assert!(!same_tags("infrahaus;web", "infrahaus"));
    }

    fn network<'a>(bridge: Option<&'a str>, ipv4: Option<&'a str>, gateway: Option<&'a str>) -> Net0<'a> {
        Net0 { bridge, ipv4, gateway }
    }

    #[test]
    fn net0_table() {
        let cases = [
            (None, "name=eth0,bridge=vmbr0,ip=dhcp"),
            (Some(network(None, None, None)), "name=eth0,bridge=vmbr0,ip=dhcp"),
            (Some(network(Some("vmbr1"), Some("dhcp"), None)), "name=eth0,bridge=vmbr1,ip=dhcp"),
            (
                Some(network(None, Some("192.0.2.10/24"), Some("192.0.2.1"))),
                "name=eth0,bridge=vmbr0,ip=192.0.2.10/24,gw=192.0.2.1",
            ),
            (Some(network(None, Some("127.0.5.9/16"), None)), "name=eth0,bridge=vmbr0,ip=127.0.5.9/16"),
            (Some(network(None, Some("dhcp"), Some("192.0.2.1"))), "name=eth0,bridge=vmbr0,ip=dhcp"),
        ];
        for (network, expected) in cases {
            assert_eq!(net0(&network.unwrap_or_default()), expected, "{network:?}");
        }
    }

    #[test]
    fn eth0_ipv4_table() {
        let cases = [
            (
                r#"[{"name":"lo","inet":"127.0.0.1/8"},{"name":"eth0","hwaddr":"BC:24:11:00:00:01","inet":"192.0.2.10/24","inet6":"fe80::1/64"}]"#,
                Some("192.0.2.10"),
            ),
            (r#"[{"name":"lo","inet":"127.0.0.1/8"},{"name":"eth0","inet":"127.0.5.9/16"}]"#, Some("127.0.5.9")),
            (r#"[{"name":"lo","inet":"127.0.0.1/8"},{"name":"eth0","inet6":"fe80::1/64"}]"#, None),
            (r#"[{"name":"lo","inet":"127.0.0.1/8"}]"#, None),
            (r#"[{"name":"lo","inet":"127.0.0.1/8"},{"name":"net1","inet":"198.51.100.7/24"}]"#, Some("198.51.100.7")),
            (r#"[{"name":"eth0","inet":"192.0.2.10"}]"#, Some("192.0.2.10")),
            (r#"[{"name":"eth0","inet":"not an ip/24"}]"#, None),
            (r#"[]"#, None),
        ];
        for (json, expected) in cases {
            let interfaces: Vec<Iface> = serde_json::from_str(json).expect("fixture parses");
            assert_eq!(eth0_ipv4(&interfaces).map(|a| a.to_string()).as_deref(), expected, "{json}");
        }
    }

    #[test]
    fn host_key_fingerprints_table() {
        let log = "extracting archive '/var/lib/vz/template/cache/debian-12-standard_12.7-1_amd64.tar.zst'\n\
                   Total bytes read: 521902080 (498MiB, 160MiB/s)\n\
                   Detected container architecture: amd64\n\
                   Creating SSH host key 'ssh_host_rsa_key' - this may take some time ...\n\
                   done: SHA256:uXn5Kc0r1ZvO3bq0s2m3kQJ6nq2f0k3G8Yd2jv6m9sE root@web-1\n\
                   Creating SSH host key 'ssh_host_ecdsa_key' - this may take some time ...\n\
                   done: SHA256:0Wq7m5P+Xb2k1t8Jr9zL4vC3nHf6sD2aE1yU0iO9pQ8 root@web-1\n\
                   Creating SSH host key 'ssh_host_ed25519_key' - this may take some time ...\n\
                   done: SHA256:Zk3/9d8c7b6a5Z4Y3X2W1V0U9T8S7R6Q5P4O3N2M1L0 root@web-1\n\
                   TASK OK";
        let cases: [(&str, Vec<&str>); 4] = [
            (
                log,
                vec![
                    "SHA256:uXn5Kc0r1ZvO3bq0s2m3kQJ6nq2f0k3G8Yd2jv6m9sE",
                    "SHA256:0Wq7m5P+Xb2k1t8Jr9zL4vC3nHf6sD2aE1yU0iO9pQ8",
                    "SHA256:Zk3/9d8c7b6a5Z4Y3X2W1V0U9T8S7R6Q5P4O3N2M1L0",
                ],
            ),
            ("extracting archive\nTASK OK", vec![]),
            ("done: SHA256:abc root@a\ndone: SHA256:abc root@a", vec!["SHA256:abc"]),
            ("done: MD5:ab:cd root@a\ndone: SHA256: root@a\ndone: SHA256:a;rm root@a", vec![]),
        ];
        for (log, expected) in cases {
            assert_eq!(host_key_fingerprints(log.lines()), expected, "{log}");
        }
    }

    #[test]
    fn marker_table() {
        let uid = "6f1c2a8e-0b1d-4c3e-9f7a-2d5e8b1c0a94";
        assert_eq!(description_with_marker(uid, None), format!("infrahaus.io/uid={uid}\n"));
        assert_eq!(description_with_marker(uid, Some("web server\n")), format!("web server\ninfrahaus.io/uid={uid}\n"));
        let cases = [
            (format!("infrahaus.io/uid={uid}\n"), Some(uid)),
            (format!("web server\n  infrahaus.io/uid={uid}  \nmore"), Some(uid)),
            ("infrahaus.io/uid=\n".to_string(), None),
            ("created by hand".to_string(), None),
            (format!("other.io/uid={uid}"), None),
            (String::new(), None),
        ];
        for (description, expected) in cases {
            assert_eq!(marker_uid(&description), expected, "{description:?}");
            assert_eq!(is_owned_by(Some(&description), Some(MANAGED_TAG), uid), expected.is_some(), "{description:?}");
        }
        assert!(!is_owned_by(None, Some(MANAGED_TAG), uid));
        assert!(!is_owned_by(Some("infrahaus.io/uid=someone-else"), Some(MANAGED_TAG), uid));
        let marked = uid_marker(uid);
        for (tags, owned) in [
            (Some("infrahaus;web"), true),
            (Some("web,infrahaus"), true),
            (Some("web infrahaus"), true),
            (Some("web"), false),
            (Some("infrahaus-old"), false),
            (None, false),
        ] {
            assert_eq!(is_owned_by(Some(&marked), tags, uid), owned, "{tags:?}");
        }
    }

    #[test]
    fn tags_table() {
        let cases: [(&[&str], &str); 4] = [
            (&[], "infrahaus"),
            (&["web"], "infrahaus;web"),
            (&["web", "infrahaus", "web", " db "], "infrahaus;web;db"),
            (&["", "x"], "infrahaus;x"),
        ];
        for (user, expected) in cases {
            let user: Vec<String> = user.iter().map(|s| s.to_string()).collect();
            assert_eq!(render_tags(&user), expected, "{user:?}");
        }
    }
}
