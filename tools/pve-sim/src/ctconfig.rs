//! Meaning of container config values: network, features, SSH keys, addresses.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use base64::Engine;

use crate::schema::{parse_boolean, parse_ipv4_cidr, Params};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ipv4Config {
    Dhcp,
    Manual,
    Static { addr: Ipv4Addr, prefix: u8 },
}

/// The parts of a `net[n]` value pve-sim acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NetConfig {
    pub(crate) name: String,
    pub(crate) hwaddr: Option<String>,
    pub(crate) ip: Option<Ipv4Config>,
}

/// Reads an already schema-checked `net[n]` property map.
pub(crate) fn net_config(parsed: &Params) -> NetConfig {
    let ip = parsed.get("ip").and_then(|ip| match ip.as_str() {
        "dhcp" => Some(Ipv4Config::Dhcp),
        "manual" => Some(Ipv4Config::Manual),
        cidr => parse_ipv4_cidr(cidr).map(|(addr, prefix)| Ipv4Config::Static { addr, prefix }),
    });
    NetConfig {
        name: parsed.get("name").cloned().unwrap_or_else(|| "eth0".into()),
        hwaddr: parsed.get("hwaddr").cloned(),
        ip,
    }
}

/// pve-sim containers share the host's network namespace, so only loopback
/// addresses keep their traffic on this machine.
pub(crate) fn check_loopback_ip(config: &NetConfig) -> Result<(), String> {
    match &config.ip {
        Some(Ipv4Config::Static { addr, prefix }) if !addr.is_loopback() => Err(format!(
            "ip '{addr}/{prefix}' is outside 127.0.0.0/8: pve-sim only gives containers loopback addresses"
        )),
        _ => Ok(()),
    }
}

/// Renders a property map the way PVE prints `net[n]` (name first, then sorted keys).
pub(crate) fn render_property_string(parsed: &Params, first: &str) -> String {
    let head = parsed.get(first).map(|v| format!("{first}={v}"));
    head.into_iter()
        .chain(parsed.iter().filter(|(k, _)| k.as_str() != first).map(|(k, v)| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Feature flags an API token may not set: through a token, PVE allows only
/// `nesting` (`PVE::LXC::check_ct_modify_config_perm`).
pub(crate) fn features_reserved_for_root(features: &Params) -> Vec<String> {
    features
        .iter()
        .filter(|(key, value)| {
            key.as_str() != "nesting" && value.as_str() != "0" && parse_boolean(value) != Some(false)
        })
        .map(|(key, _)| key.clone())
        .collect()
}

const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Checks each non-empty, non-comment line is an OpenSSH public key whose
/// encoded blob names the same key type (what `ssh-keygen -l` checks for PVE).
pub(crate) fn validate_ssh_public_keys(keys: &str) -> Result<(), String> {
    for line in keys.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut fields = line.split_whitespace();
        let key_type = fields.next().unwrap_or_default();
        let blob = fields.next().unwrap_or_default();
        let bad = || format!("unable to parse ssh public key '{}'", line.chars().take(40).collect::<String>());
        if !SSH_KEY_TYPES.contains(&key_type) {
            return Err(bad());
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(blob).map_err(|_| bad())?;
        let name_len =
            decoded.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).ok_or_else(bad)?;
        if decoded.get(4..4 + name_len) != Some(key_type.as_bytes()) {
            return Err(bad());
        }
    }
    Ok(())
}

/// A loopback network handing out addresses for `ip=dhcp`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ipv4Pool {
    network: u32,
    pub(crate) prefix: u8,
}

impl Ipv4Pool {
    pub(crate) fn parse(cidr: &str) -> Result<Self, String> {
        let (addr, prefix) = parse_ipv4_cidr(cidr).ok_or_else(|| format!("'{cidr}' is not an IPv4 CIDR"))?;
        if !addr.is_loopback() || !(8..=30).contains(&prefix) {
            return Err(format!("ip pool '{cidr}' must be a /8../30 network inside 127.0.0.0/8"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Self { network: u32::from(addr) & mask, prefix })
    }

    /// Leases start at the second host address; the first is left as the network's gateway.
    pub(crate) fn next_free(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let hosts = (1u32 << (32 - self.prefix)) - 1;
        (2..hosts).map(|i| Ipv4Addr::from(self.network + i)).find(|a| !used.contains(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn net_configs() {
        let cases = [
            (vec![("name", "eth0"), ("ip", "dhcp")], Some(Ipv4Config::Dhcp), true),
            (vec![("name", "eth0"), ("ip", "manual")], Some(Ipv4Config::Manual), true),
            (
                vec![("name", "eth0"), ("ip", "127.0.5.9/16")],
                Some(Ipv4Config::Static { addr: Ipv4Addr::new(127, 0, 5, 9), prefix: 16 }),
                true,
            ),
            (
                vec![("name", "eth0"), ("ip", "192.0.2.10/24")],
                Some(Ipv4Config::Static { addr: Ipv4Addr::new(192, 0, 2, 10), prefix: 24 }),
                false,
            ),
            (vec![("name", "eth1")], None, true),
        ];
        for (pairs, ip, loopback_ok) in cases {
            let config = net_config(&params(&pairs));
            assert_eq!(config.ip, ip, "{pairs:?}");
            assert_eq!(check_loopback_ip(&config).is_ok(), loopback_ok, "{pairs:?}");
        }
    }

    #[test]
    fn rendering_puts_the_name_first() {
        let p = params(&[("bridge", "vmbr0"), ("name", "eth0"), ("ip", "dhcp")]);
        assert_eq!(render_property_string(&p, "name"), "name=eth0,bridge=vmbr0,ip=dhcp");
    }

    #[test]
    fn only_nesting_is_open_to_tokens() {
        let cases = [
            (vec![("nesting", "1")], Vec::<&str>::new()),
            (vec![("nesting", "1"), ("keyctl", "1")], vec!["keyctl"]),
            (vec![("fuse", "0"), ("mount", "nfs")], vec!["mount"]),
        ];
        for (pairs, refused) in cases {
            assert_eq!(features_reserved_for_root(&params(&pairs)), refused, "{pairs:?}");
        }
    }

    #[test]
    fn ssh_keys() {
        let ed25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMTe/4vtEJGGZ7YrB9M2kkM1aW1YdVc2Qm8Jvhm9vlHS user@host";
        let cases = [
            (ed25519.to_string(), true),
            (format!("# comment\n\n{ed25519}\n"), true),
            ("ssh-ed25519 AAAA".to_string(), false),
            ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIMTe/4vtEJGGZ7YrB9M2kkM1aW1YdVc2Qm8Jvhm9vlHS".to_string(), false),
            ("not a key".to_string(), false),
            (format!("{ed25519}\ngarbage"), false),
        ];
        for (keys, ok) in cases {
            assert_eq!(validate_ssh_public_keys(&keys).is_ok(), ok, "{keys}");
        }
    }

    #[test]
    fn pool_leases_skip_used_addresses() {
        let pool = Ipv4Pool::parse("127.0.100.0/24").expect("valid");
        let mut used = BTreeSet::new();
        assert_eq!(pool.next_free(&used), Some(Ipv4Addr::new(127, 0, 100, 2)));
        used.insert(Ipv4Addr::new(127, 0, 100, 2));
        assert_eq!(pool.next_free(&used), Some(Ipv4Addr::new(127, 0, 100, 3)));
        let tiny = Ipv4Pool::parse("127.1.0.0/30").expect("valid");
        let full: BTreeSet<_> = [Ipv4Addr::new(127, 1, 0, 2)].into();
        assert_eq!(tiny.next_free(&full), None);
        assert!(Ipv4Pool::parse("10.0.0.0/24").is_err());
        assert!(Ipv4Pool::parse("127.0.0.0/31").is_err());
    }
}
