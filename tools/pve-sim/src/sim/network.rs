//! The network: a container's interfaces, its primary `net[n]`, address
//! leases from the pool, and generated hardware addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::{no_such_ct, ApiError, ApiResult, Sim, State};
use crate::ctconfig::{self, Ipv4Config};
use crate::schema::{parse_property_string, Params};

pub(super) fn random_hwaddr() -> String {
    let bytes: [u8; 3] = rand::random();
    format!("BC:24:11:{:02X}:{:02X}:{:02X}", bytes[0], bytes[1], bytes[2])
}

impl Sim {
    pub(crate) fn interfaces(&self, vmid: u32) -> ApiResult<Value> {
        let state = self.state();
        let ct = state.cts.get(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid))?;
        if ct.running.as_ref().is_none_or(|r| r.has_exited()) {
            return Ok(Value::Null);
        }
        let iface = |name: &str, hwaddr: &str, addr: Ipv4Addr, prefix: u8| {
            json!({
                "name": name, "hwaddr": hwaddr, "hardware-address": hwaddr,
                "inet": format!("{addr}/{prefix}"),
                "ip-addresses": [{"ip-address": addr.to_string(), "ip-address-type": "inet", "prefix": prefix}],
            })
        };
        let mut list = vec![iface("lo", "00:00:00:00:00:00", Ipv4Addr::LOCALHOST, 8)];
        if let (Some((addr, prefix)), Some(net)) = (ct.lease, self.primary_net(&ct.config)) {
            list.push(iface(&net.name, net.hwaddr.as_deref().unwrap_or("00:00:00:00:00:00"), addr, prefix));
        }
        Ok(Value::Array(list))
    }

    /// The lowest-numbered `net[n]` that carries an IPv4 configuration.
    fn primary_net(&self, config: &Params) -> Option<ctconfig::NetConfig> {
        let format = self.format_of("net0")?;
        let mut nets: Vec<(u32, &String)> = config
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("net").and_then(|n| n.parse().ok()).map(|n| (n, v)))
            .collect();
        nets.sort();
        nets.into_iter()
            .filter_map(|(_, v)| parse_property_string(format, v).ok())
            .map(|p| ctconfig::net_config(&p))
            .find(|n| n.ip.is_some())
    }

    // ---- leases ------------------------------------------------------------

    /// Resolves the address a config gives its container, leasing from the pool for dhcp.
    pub(super) fn resolve_lease(
        &self,
        state: &State,
        vmid: u32,
        config: &Params,
        current: Option<(Ipv4Addr, u8)>,
    ) -> ApiResult<Option<(Ipv4Addr, u8)>> {
        let Some(net) = self.primary_net(config) else { return Ok(None) };
        let used: BTreeMap<Ipv4Addr, u32> = state
            .cts
            .iter()
            .filter(|(id, _)| **id != vmid)
            .filter_map(|(id, ct)| ct.lease.map(|(a, _)| (a, *id)))
            .collect();
        match net.ip {
            Some(Ipv4Config::Static { addr, prefix }) => {
                if let Some(owner) = used.get(&addr) {
                    return Err(ApiError::param("net0", format!("address {addr} is already used by CT {owner}")));
                }
                Ok(Some((addr, prefix)))
            }
            Some(Ipv4Config::Dhcp) => {
                if let Some(lease) = current.filter(|(a, _)| !used.contains_key(a)) {
                    return Ok(Some(lease));
                }
                let taken: BTreeSet<Ipv4Addr> = used.keys().copied().collect();
                let addr = self.cfg.pool.next_free(&taken).ok_or_else(|| {
                    ApiError::internal(format!("no free address left in pool {}", self.cfg.pool_cidr))
                })?;
                Ok(Some((addr, self.cfg.pool.prefix)))
            }
            _ => Ok(None),
        }
    }
}
