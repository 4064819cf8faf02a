//! The simulated node: containers, their config and locks, and worker tasks,
//! with the behaviour and error texts of `PVE::API2::LXC`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, OwnedMutexGuard};

use crate::ctconfig::{self, Ipv4Config, Ipv4Pool};
use crate::faults::{Faults, TaskOutcome};
use crate::runtime::{self, CtDir, RootfsSetup, RunningCt, Spawner};
use crate::schema::{parse_boolean, parse_property_string, typed_json, ApiSchema, ParamErrors, Params};
use crate::upid::Upid;

pub const CONFIG_PATH: &str = "/nodes/{node}/lxc/{vmid}/config";

/// An API error as pve-http-server sends it: status, message, and for 400 the per-parameter errors.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub errors: Option<ParamErrors>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), errors: None }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
    pub fn params(errors: ParamErrors) -> Self {
        Self { status: 400, message: "Parameter verification failed.".into(), errors: Some(errors) }
    }
    pub fn param(name: &str, message: impl Into<String>) -> Self {
        Self::params(BTreeMap::from([(name.to_string(), message.into())]))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Who made a request: a user (`root@pam`) or a user's API token (`root@pam!ci`).
#[derive(Debug, Clone)]
pub struct Caller {
    pub userid: String,
}

pub struct SimConfig {
    pub node: String,
    pub state_dir: PathBuf,
    pub pool: Ipv4Pool,
    pub pool_cidr: String,
    pub lock_timeout: Duration,
    pub templates: Vec<String>,
    pub fingerprint: String,
}

struct Ct {
    config: Params,
    lease: Option<(Ipv4Addr, u8)>,
    running: Option<RunningCt>,
    file_lock: Arc<tokio::sync::Mutex<()>>,
}

struct Task {
    upid: Upid,
    text: String,
    log: Vec<String>,
    end: Option<(i64, String)>,
    abort: Arc<Notify>,
}

#[derive(Default)]
struct State {
    cts: BTreeMap<u32, Ct>,
    tasks: Vec<Task>,
}

pub struct Sim {
    pub cfg: SimConfig,
    pub schema: ApiSchema,
    pub faults: Mutex<Faults>,
    spawner: Spawner,
    state: Mutex<State>,
    seq: AtomicU32,
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Ticks since boot, as the `pstart` of a UPID counts them.
fn boot_ticks() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|u| u.parse::<f64>().ok()))
        .map_or(0, |secs| (secs * 100.0) as u64)
}

fn no_such_ct(node: &str, vmid: u32) -> ApiError {
    ApiError::internal(format!("Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist"))
}

fn lock_timeout_error(vmid: u32) -> String {
    format!("can't lock file '/run/lock/lxc/pve-config-{vmid}.lock' - got timeout")
}

fn random_hwaddr() -> String {
    let bytes: [u8; 3] = rand::random();
    format!("BC:24:11:{:02X}:{:02X}:{:02X}", bytes[0], bytes[1], bytes[2])
}

/// `STORAGE:SIZE`, a bare size (default storage), or an existing volume name.
fn parse_rootfs_volume(volume: &str, default_storage: &str) -> (String, Option<f64>) {
    if let Ok(size) = volume.parse::<f64>() {
        return (default_storage.to_string(), Some(size));
    }
    match volume.split_once(':') {
        Some((storage, rest)) => (storage.to_string(), rest.parse::<f64>().ok()),
        None => (default_storage.to_string(), None),
    }
}

fn size_bytes(size: &str) -> u64 {
    let (number, unit) = size.split_at(size.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(size.len()));
    let value: f64 = number.parse().unwrap_or(0.0);
    let factor = match unit {
        "K" => 1u64 << 10,
        "M" => 1 << 20,
        "G" | "" => 1 << 30,
        "T" => 1 << 40,
        _ => 1,
    };
    (value * factor as f64) as u64
}

/// What a create request keeps out of the stored config.
const CREATE_ONLY: &[&str] = &[
    "node",
    "vmid",
    "ostemplate",
    "password",
    "ssh-public-keys",
    "storage",
    "start",
    "force",
    "restore",
    "pool",
    "ignore-unpack-errors",
    "unique",
    "bwlimit",
    "ha-managed",
    "unprivileged",
];

const STORAGES: &[&str] = &["local", "local-lvm"];

impl Sim {
    pub fn new(cfg: SimConfig, faults: Faults) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            cfg,
            schema: ApiSchema::embedded()?,
            faults: Mutex::new(faults),
            spawner: Spawner::new()?,
            state: Mutex::new(State::default()),
            seq: AtomicU32::new(0),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn ct_dir(&self, vmid: u32) -> CtDir {
        CtDir::new(&self.cfg.state_dir, vmid)
    }

    fn config_schema(&self, key: &str) -> Option<&Value> {
        self.schema.property(CONFIG_PATH, "PUT", key)
    }

    fn format_of(&self, key: &str) -> Option<&Map<String, Value>> {
        self.config_schema(key)?.get("format")?.as_object()
    }

    // ---- read-only views -------------------------------------------------

    pub fn version(&self) -> Value {
        json!({"version": "8.3.0", "release": "8.3", "repoid": "c1689ccb1065a83b", "console": "html5"})
    }

    pub fn nodes(&self) -> Value {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        json!([{
            "node": self.cfg.node, "status": "online", "type": "node", "id": format!("node/{}", self.cfg.node),
            "cpu": 0.01, "maxcpu": cpus, "mem": 2u64 << 30, "maxmem": 16u64 << 30,
            "disk": 10u64 << 30, "maxdisk": 100u64 << 30, "uptime": boot_ticks() / 100, "level": "",
            "ssl_fingerprint": self.cfg.fingerprint,
        }])
    }

    fn ct_status(&self, vmid: u32, ct: &Ct) -> Value {
        let config = &ct.config;
        let memory: u64 = config.get("memory").and_then(|m| m.parse().ok()).unwrap_or(512);
        let swap: u64 = config.get("swap").and_then(|m| m.parse().ok()).unwrap_or(512);
        let cores: u64 = config.get("cores").and_then(|c| c.parse().ok()).unwrap_or(1);
        let disk = config
            .get("rootfs")
            .and_then(|r| self.format_of("rootfs").and_then(|f| parse_property_string(f, r).ok()))
            .and_then(|p| p.get("size").map(|s| size_bytes(s)))
            .unwrap_or(0);
        let running = ct.running.as_ref().filter(|r| !r.has_exited());
        let mut status = json!({
            "vmid": vmid,
            "name": config.get("hostname").cloned().unwrap_or_else(|| format!("CT{vmid}")),
            "type": "lxc",
            "status": if running.is_some() { "running" } else { "stopped" },
            "maxmem": memory << 20, "maxswap": swap << 20, "maxdisk": disk, "cpus": cores,
            "cpu": 0, "disk": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
            "uptime": running.map_or(0, |r| r.started.elapsed().as_secs()),
            "mem": running.map_or(0, |r| runtime::tree_rss(r.pid)),
            "template": 0,
        });
        if let Some(obj) = status.as_object_mut() {
            if let Some(lock) = config.get("lock") {
                obj.insert("lock".into(), json!(lock));
            }
            if let Some(tags) = config.get("tags") {
                obj.insert("tags".into(), json!(tags));
            }
            if let Some(r) = running {
                obj.insert("pid".into(), json!(r.pid));
            }
        }
        status
    }

    pub fn list(&self) -> Value {
        let state = self.state();
        Value::Array(state.cts.iter().map(|(vmid, ct)| self.ct_status(*vmid, ct)).collect())
    }

    pub fn status_current(&self, vmid: u32) -> ApiResult<Value> {
        let state = self.state();
        let ct = state.cts.get(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid))?;
        let mut status = self.ct_status(vmid, ct);
        if let Some(obj) = status.as_object_mut() {
            obj.insert("ha".into(), json!({"managed": 0}));
        }
        Ok(status)
    }

    pub fn resources(&self, kind: Option<&str>) -> Value {
        let mut out = Vec::new();
        if kind.is_none_or(|k| k == "vm") {
            let state = self.state();
            for (vmid, ct) in &state.cts {
                let mut entry = self.ct_status(*vmid, ct);
                if let Some(obj) = entry.as_object_mut() {
                    obj.insert("id".into(), json!(format!("lxc/{vmid}")));
                    obj.insert("node".into(), json!(self.cfg.node));
                    obj.insert("maxcpu".into(), obj.get("cpus").cloned().unwrap_or(json!(1)));
                    obj.remove("cpus");
                    obj.remove("pid");
                }
                out.push(entry);
            }
        }
        if kind.is_none_or(|k| k == "node") {
            if let Some(node) = self.nodes().as_array().and_then(|n| n.first()).cloned() {
                out.push(node);
            }
        }
        if kind.is_none_or(|k| k == "storage") {
            for storage in STORAGES {
                out.push(json!({
                    "id": format!("storage/{}/{storage}", self.cfg.node), "type": "storage",
                    "storage": storage, "node": self.cfg.node, "status": "available", "shared": 0,
                    "content": if *storage == "local" { "vztmpl,iso,backup" } else { "rootdir,images" },
                    "plugintype": if *storage == "local" { "dir" } else { "lvmthin" },
                    "disk": 0, "maxdisk": 100u64 << 30,
                }));
            }
        }
        Value::Array(out)
    }

    pub fn next_id(&self, wanted: Option<u32>) -> ApiResult<Value> {
        let state = self.state();
        if let Some(vmid) = wanted {
            if state.cts.contains_key(&vmid) {
                return Err(ApiError::param("vmid", format!("VM {vmid} already exists")));
            }
            return Ok(json!(vmid.to_string()));
        }
        let free = (100u32..).find(|id| !state.cts.contains_key(id)).unwrap_or(100);
        Ok(json!(free.to_string()))
    }

    pub fn storage_content(&self, storage: &str, content: Option<&str>, vmid: Option<u32>) -> ApiResult<Value> {
        if !STORAGES.contains(&storage) {
            return Err(ApiError::internal(format!("storage '{storage}' does not exist")));
        }
        let mut items = Vec::new();
        if storage == "local" && content.is_none_or(|c| c == "vztmpl") && vmid.is_none() {
            for volid in &self.cfg.templates {
                let file = volid.rsplit('/').next().unwrap_or(volid);
                let format = if file.ends_with(".tar.zst") {
                    "tzst"
                } else if file.ends_with(".tar.xz") {
                    "txz"
                } else {
                    "tgz"
                };
                items.push(json!({"volid": volid, "content": "vztmpl", "format": format, "size": 126_000_000u64, "ctime": 1_726_000_000u64}));
            }
        }
        if storage != "local" || content.is_some_and(|c| c == "rootdir" || c == "images") {
            let state = self.state();
            for (id, ct) in &state.cts {
                if vmid.is_some_and(|v| v != *id) {
                    continue;
                }
                let Some(rootfs) = ct.config.get("rootfs") else { continue };
                let volume = rootfs.split(',').next().unwrap_or_default();
                if volume.starts_with(&format!("{storage}:")) {
                    items.push(
                        json!({"volid": volume, "content": "rootdir", "format": "raw", "size": 8u64 << 30, "vmid": id}),
                    );
                }
            }
        }
        Ok(Value::Array(items))
    }

    pub fn config_get(&self, vmid: u32) -> ApiResult<Value> {
        let state = self.state();
        let ct = state.cts.get(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid))?;
        let mut out = Map::new();
        for (key, value) in &ct.config {
            out.insert(key.clone(), typed_json(self.config_schema(key), value));
        }
        out.insert("digest".into(), json!(config_digest(&ct.config)));
        Ok(Value::Object(out))
    }

    pub fn interfaces(&self, vmid: u32) -> ApiResult<Value> {
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
    fn resolve_lease(
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

    /// Checks `net[n]` values and completes them the way PVE stores them (hwaddr, type).
    fn normalize_nets(&self, params: &mut Params) -> ApiResult<()> {
        let Some(format) = self.format_of("net0").cloned() else { return Ok(()) };
        let mut errors = ParamErrors::new();
        for (key, value) in params.iter_mut().filter(|(k, _)| k.starts_with("net")) {
            let Ok(mut parsed) = parse_property_string(&format, value) else { continue };
            if let Err(e) = ctconfig::check_loopback_ip(&ctconfig::net_config(&parsed)) {
                errors.insert(key.clone(), e);
                continue;
            }
            parsed.entry("hwaddr".into()).or_insert_with(random_hwaddr);
            parsed.entry("type".into()).or_insert_with(|| "veth".into());
            *value = ctconfig::render_property_string(&parsed, "name");
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::params(errors))
        }
    }

    // ---- locks -------------------------------------------------------------

    /// Takes the config's file lock, waiting at most the lock timeout like `lock_config`.
    async fn lock_config(&self, vmid: u32) -> Result<OwnedMutexGuard<()>, String> {
        let lock = {
            let state = self.state();
            state
                .cts
                .get(&vmid)
                .map(|ct| ct.file_lock.clone())
                .ok_or_else(|| no_such_ct(&self.cfg.node, vmid).message)?
        };
        tokio::time::timeout(self.cfg.lock_timeout, lock.lock_owned()).await.map_err(|_| lock_timeout_error(vmid))
    }

    /// Holds a container's file lock for a while (fault injection).
    pub fn hold_lock(self: &Arc<Self>, vmid: u32, hold: Duration) -> ApiResult<()> {
        let lock = {
            let state = self.state();
            state.cts.get(&vmid).map(|ct| ct.file_lock.clone()).ok_or_else(|| no_such_ct(&self.cfg.node, vmid))?
        };
        tokio::spawn(async move {
            let _guard = lock.lock_owned().await;
            tokio::time::sleep(hold).await;
        });
        Ok(())
    }

    fn check_lock(ct: &Ct) -> ApiResult<()> {
        match ct.config.get("lock") {
            Some(lock) => Err(ApiError::internal(format!("CT is locked ({lock})"))),
            None => Ok(()),
        }
    }

    fn is_running(ct: &Ct) -> bool {
        ct.running.as_ref().is_some_and(|r| !r.has_exited())
    }

    // ---- create --------------------------------------------------------------

    pub fn create(self: &Arc<Self>, mut params: Params, caller: &Caller) -> ApiResult<String> {
        let vmid: u32 =
            params.get("vmid").and_then(|v| v.parse().ok()).ok_or_else(|| ApiError::param("vmid", "invalid"))?;
        if let Some(keys) = params.get("ssh-public-keys") {
            ctconfig::validate_ssh_public_keys(keys).map_err(|e| ApiError::param("ssh-public-keys", e))?;
        }
        if let Some(features) = params.get("features") {
            let parsed =
                self.format_of("features").and_then(|f| parse_property_string(f, features).ok()).unwrap_or_default();
            if caller.userid != "root@pam" && !ctconfig::features_reserved_for_root(&parsed).is_empty() {
                return Err(ApiError::new(
                    403,
                    "Permission check failed (changing feature flags (except nesting) is only allowed for root@pam)",
                ));
            }
        }
        let ostemplate = params.get("ostemplate").cloned().unwrap_or_default();
        if !self.cfg.templates.contains(&ostemplate) {
            return Err(ApiError::internal(format!("volume '{ostemplate}' does not exist")));
        }
        let default_storage = params.get("storage").cloned().unwrap_or_else(|| "local".into());
        let rootfs_value = params.get("rootfs").cloned().unwrap_or_else(|| format!("{default_storage}:4"));
        let rootfs =
            self.format_of("rootfs").and_then(|f| parse_property_string(f, &rootfs_value).ok()).unwrap_or_default();
        let (storage, size) = parse_rootfs_volume(rootfs.get("volume").map_or("", String::as_str), &default_storage);
        if !STORAGES.contains(&storage.as_str()) {
            return Err(ApiError::internal(format!("storage '{storage}' does not exist")));
        }
        self.normalize_nets(&mut params)?;

        let file = ostemplate.rsplit('/').next().unwrap_or_default().to_string();
        let ostype = ["debian", "ubuntu", "alpine", "centos", "fedora", "archlinux"]
            .into_iter()
            .find(|os| file.starts_with(os))
            .unwrap_or("unmanaged");
        let size_gib = size.unwrap_or(4.0);
        let mut config: Params = params
            .iter()
            .filter(|(k, _)| !CREATE_ONLY.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut rootfs_out = rootfs.clone();
        rootfs_out.insert("volume".into(), format!("{storage}:vm-{vmid}-disk-0"));
        rootfs_out.insert("size".into(), format!("{size_gib}G"));
        config.insert(
            "rootfs".into(),
            ctconfig::render_property_string(&rootfs_out, "volume").replacen("volume=", "", 1),
        );
        config.entry("hostname".into()).or_insert_with(|| format!("CT{vmid}"));
        config.entry("memory".into()).or_insert_with(|| "512".into());
        config.entry("swap".into()).or_insert_with(|| "512".into());
        config.entry("arch".into()).or_insert_with(|| "amd64".into());
        config.entry("ostype".into()).or_insert_with(|| ostype.into());
        if params.get("unprivileged").and_then(|u| parse_boolean(u)) == Some(true) {
            config.insert("unprivileged".into(), "1".into());
        }
        config.insert("lock".into(), "create".into());

        {
            let mut state = self.state();
            if state.cts.contains_key(&vmid) {
                return Err(ApiError::internal(format!("CT {vmid} already exists on node '{}'", self.cfg.node)));
            }
            let lease = self.resolve_lease(&state, vmid, &config, None)?;
            state.cts.insert(
                vmid,
                Ct { config: config.clone(), lease, running: None, file_lock: Arc::new(tokio::sync::Mutex::new(())) },
            );
        }

        let start_after = params.get("start").and_then(|s| parse_boolean(s)) == Some(true);
        let password = params.get("password").cloned();
        let keys = params.get("ssh-public-keys").cloned();
        let sim = self.clone();
        let cleanup_sim = self.clone();
        Ok(self.spawn_task(
            "vzcreate",
            vmid,
            caller,
            move |ctx| async move {
                let hostname = config.get("hostname").cloned().unwrap_or_default();
                if storage == "local-lvm" {
                    ctx.log(format!("  Logical volume \"vm-{vmid}-disk-0\" created."));
                    let blocks = (size_gib * 262_144.0) as u64;
                    ctx.log(format!("Creating filesystem with {blocks} 4k blocks and {} inodes", blocks / 4));
                }
                ctx.log(format!("extracting archive '/var/lib/vz/template/cache/{file}'"));
                ctx.log("Total bytes read: 524001280 (500MiB, 183MiB/s)");
                ctx.log("Detected container architecture: amd64");
                let lease = sim.state().cts.get(&vmid).and_then(|ct| ct.lease);
                let dir = sim.ct_dir(vmid);
                let nameserver = config.get("nameserver").cloned();
                let searchdomain = config.get("searchdomain").cloned();
                let host = hostname.clone();
                let keys = tokio::task::spawn_blocking(move || {
                    runtime::prepare_rootfs(
                        &dir,
                        &RootfsSetup {
                            hostname: &host,
                            ip: lease.map(|(a, _)| a),
                            password: password.as_deref(),
                            ssh_public_keys: keys.as_deref(),
                            nameserver: nameserver.as_deref(),
                            searchdomain: searchdomain.as_deref(),
                        },
                    )
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{e:#}"))?;
                for key in keys {
                    ctx.log(format!("Creating SSH host key '{}' - this may take some time ...", key.file_name));
                    ctx.log(format!("done: {} root@{hostname}", key.fingerprint));
                }
                if let Some(ct) = sim.state().cts.get_mut(&vmid) {
                    ct.config.remove("lock");
                }
                if start_after {
                    sim.start_container(vmid).await?;
                }
                Ok(())
            },
            move || {
                let removed = cleanup_sim.state().cts.remove(&vmid);
                if let Some(mut ct) = removed {
                    if let Some(mut running) = ct.running.take() {
                        tokio::spawn(async move { runtime::stop(&mut running).await });
                    }
                }
                if let Err(e) = runtime::destroy_files(&cleanup_sim.ct_dir(vmid)) {
                    tracing::warn!(vmid, error = %e, "removing files of failed create");
                }
            },
        ))
    }

    // ---- power -----------------------------------------------------------------

    async fn start_container(&self, vmid: u32) -> Result<(), String> {
        let (hostname, ip) = {
            let state = self.state();
            let ct = state.cts.get(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid).message)?;
            if Self::is_running(ct) {
                return Err(format!("CT {vmid} already running"));
            }
            (ct.config.get("hostname").cloned().unwrap_or_else(|| format!("CT{vmid}")), ct.lease.map(|(a, _)| a))
        };
        let running = self
            .spawner
            .start(&self.ct_dir(vmid), &hostname, ip)
            .await
            .map_err(|e| format!("startup for container '{vmid}' failed: {e:#}"))?;
        let mut leftover = None;
        {
            let mut state = self.state();
            match state.cts.get_mut(&vmid) {
                Some(ct) => ct.running = Some(running),
                None => leftover = Some(running),
            }
        }
        if let Some(mut running) = leftover {
            runtime::stop(&mut running).await;
        }
        Ok(())
    }

    async fn stop_container(&self, vmid: u32) {
        let running = self.state().cts.get_mut(&vmid).and_then(|ct| ct.running.take());
        if let Some(mut running) = running {
            runtime::stop(&mut running).await;
        }
    }

    /// Checks shared by the power operations; returns whether the CT runs.
    fn power_precheck(&self, vmid: u32) -> ApiResult<bool> {
        let state = self.state();
        let ct = state.cts.get(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid))?;
        Self::check_lock(ct)?;
        Ok(Self::is_running(ct))
    }

    pub fn power(self: &Arc<Self>, vmid: u32, action: &str, caller: &Caller) -> ApiResult<String> {
        let running = self.power_precheck(vmid)?;
        let sim = self.clone();
        match action {
            "start" => {
                if running {
                    return Err(ApiError::internal(format!("CT {vmid} already running")));
                }
                Ok(self.spawn_task(
                    "vzstart",
                    vmid,
                    caller,
                    move |_| async move { sim.start_container(vmid).await },
                    || {},
                ))
            }
            "stop" | "shutdown" => {
                if !running {
                    return Err(ApiError::internal(format!("CT {vmid} not running")));
                }
                let task_type = if action == "stop" { "vzstop" } else { "vzshutdown" };
                Ok(self.spawn_task(
                    task_type,
                    vmid,
                    caller,
                    move |_| async move {
                        sim.stop_container(vmid).await;
                        Ok(())
                    },
                    || {},
                ))
            }
            "reboot" => {
                if !running {
                    return Err(ApiError::internal(format!("CT {vmid} not running")));
                }
                Ok(self.spawn_task(
                    "vzreboot",
                    vmid,
                    caller,
                    move |_| async move {
                        sim.stop_container(vmid).await;
                        sim.start_container(vmid).await
                    },
                    || {},
                ))
            }
            other => Err(ApiError::new(
                501,
                format!("Method 'POST /nodes/{}/lxc/{vmid}/status/{other}' not implemented", self.cfg.node),
            )),
        }
    }

    // ---- destroy -----------------------------------------------------------------

    pub fn destroy(self: &Arc<Self>, vmid: u32, params: &Params, caller: &Caller) -> ApiResult<String> {
        let force = params.get("force").and_then(|f| parse_boolean(f)) == Some(true);
        let purge = params.get("purge").and_then(|f| parse_boolean(f)) == Some(true);
        let running = self.power_precheck(vmid)?;
        if running && !force {
            return Err(ApiError::internal(format!("unable to destroy CT {vmid} - container is running")));
        }
        let sim = self.clone();
        Ok(self.spawn_task(
            "vzdestroy",
            vmid,
            caller,
            move |ctx| async move {
                sim.stop_container(vmid).await;
                let rootfs = sim.state().cts.get(&vmid).and_then(|ct| ct.config.get("rootfs").cloned());
                let dir = sim.ct_dir(vmid);
                tokio::task::spawn_blocking(move || runtime::destroy_files(&dir))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{e:#}"))?;
                if let Some(volume) = rootfs.as_deref().and_then(|r| r.split(',').next()) {
                    if volume.starts_with("local-lvm:") {
                        ctx.log(format!("  Logical volume \"vm-{vmid}-disk-0\" successfully removed."));
                    }
                }
                if purge {
                    ctx.log(format!("purging CT {vmid} from related configurations.."));
                }
                sim.state().cts.remove(&vmid);
                Ok(())
            },
            || {},
        ))
    }

    // ---- config update ---------------------------------------------------------

    pub async fn config_put(&self, vmid: u32, mut params: Params) -> ApiResult<()> {
        {
            let state = self.state();
            let ct = state.cts.get(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid))?;
            if !params.contains_key("skiplock") {
                Self::check_lock(ct)?;
            }
        }
        let _guard = self.lock_config(vmid).await.map_err(ApiError::internal)?;
        for key in ["node", "vmid", "skiplock"] {
            params.remove(key);
        }
        let digest = params.remove("digest");
        let deletes: Vec<String> = params
            .remove("delete")
            .map(|d| d.split([',', ';', ' ']).filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        params.remove("revert");
        self.normalize_nets(&mut params)?;
        let mut errors = ParamErrors::new();
        for key in &deletes {
            if self.config_schema(key).is_none() {
                errors.insert("delete".into(), format!("unable to delete unknown option '{key}'"));
            } else if params.contains_key(key) {
                errors.insert(key.clone(), "can't set and delete the same option".into());
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::params(errors));
        }
        let mut state = self.state();
        let current = state.cts.get(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid))?;
        if let Some(digest) = digest {
            if digest != config_digest(&current.config) {
                return Err(ApiError::internal(
                    "detected modified configuration - file changed by other user? Try again.",
                ));
            }
        }
        let mut config = current.config.clone();
        for key in &deletes {
            config.remove(key);
        }
        config.extend(params);
        let lease = self.resolve_lease(&state, vmid, &config, current.lease)?;
        if let Some(ct) = state.cts.get_mut(&vmid) {
            ct.config = config;
            ct.lease = lease;
        }
        Ok(())
    }

    // ---- tasks -------------------------------------------------------------------

    /// Starts a worker like `fork_worker`: takes the config lock, waits the task's
    /// duration (abortable), then does the work; `on_failure` undoes what a failed task leaves.
    fn spawn_task<W, F>(
        self: &Arc<Self>,
        task_type: &str,
        vmid: u32,
        caller: &Caller,
        work: W,
        on_failure: impl FnOnce() + Send + 'static,
    ) -> String
    where
        W: FnOnce(TaskCtx) -> F + Send + 'static,
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let upid = Upid {
            node: self.cfg.node.clone(),
            pid: std::process::id().wrapping_add(seq + 1),
            pstart: boot_ticks() + u64::from(seq),
            starttime: now(),
            task_type: task_type.to_string(),
            id: vmid.to_string(),
            user: caller.userid.clone(),
        };
        let text = upid.to_string();
        let abort = Arc::new(Notify::new());
        self.state().tasks.push(Task { upid, text: text.clone(), log: Vec::new(), end: None, abort: abort.clone() });
        let (outcome, duration) = {
            let mut faults = self.faults();
            (faults.take_task_outcome(task_type), faults.duration(task_type))
        };
        let ctx = TaskCtx { sim: self.clone(), upid: text.clone() };
        let sim = self.clone();
        tokio::spawn(async move {
            let result: Result<u32, String> = async {
                let _guard = sim.lock_config(vmid).await?;
                tokio::select! {
                    () = tokio::time::sleep(duration) => {}
                    () = abort.notified() => return Err("interrupted by signal".to_string()),
                }
                match outcome {
                    Some(TaskOutcome::Fail(message)) => Err(message),
                    Some(TaskOutcome::Warnings(n)) => {
                        work(ctx.clone()).await?;
                        for i in 1..=n {
                            ctx.log(format!("WARN: simulated warning {i} of {n}"));
                        }
                        Ok(n)
                    }
                    None => work(ctx.clone()).await.map(|()| 0),
                }
            }
            .await;
            let status = match &result {
                Ok(0) => "OK".to_string(),
                Ok(n) => format!("WARNINGS: {n}"),
                Err(message) => message.clone(),
            };
            if result.is_err() {
                on_failure();
            }
            let last = match &result {
                Err(message) => format!("TASK ERROR: {message}"),
                Ok(_) => format!("TASK {status}"),
            };
            ctx.log(last);
            sim.finish_task(&ctx.upid, status);
        });
        text
    }

    fn finish_task(&self, upid: &str, status: String) {
        let mut state = self.state();
        if let Some(task) = state.tasks.iter_mut().find(|t| t.text == upid) {
            task.end = Some((now(), status));
        }
    }

    fn append_log(&self, upid: &str, line: String) {
        let mut state = self.state();
        if let Some(task) = state.tasks.iter_mut().find(|t| t.text == upid) {
            task.log.push(line);
        }
    }

    fn task_entry(task: &Task) -> Value {
        let mut entry = json!({
            "upid": task.text, "node": task.upid.node, "pid": task.upid.pid, "pstart": task.upid.pstart,
            "starttime": task.upid.starttime, "type": task.upid.task_type, "id": task.upid.id, "user": task.upid.user,
        });
        if let (Some(obj), Some((endtime, status))) = (entry.as_object_mut(), &task.end) {
            obj.insert("endtime".into(), json!(endtime));
            obj.insert("status".into(), json!(status));
        }
        entry
    }

    pub fn task_list(&self, filter: &TaskFilter) -> (Value, usize) {
        let state = self.state();
        let mut matching: Vec<&Task> = state.tasks.iter().filter(|t| filter.matches(t)).collect();
        matching.sort_by(|a, b| b.upid.starttime.cmp(&a.upid.starttime).then(b.upid.pstart.cmp(&a.upid.pstart)));
        let total = matching.len();
        let page = matching.into_iter().skip(filter.start).take(filter.limit).map(Self::task_entry).collect();
        (Value::Array(page), total)
    }

    fn find_task<'a>(&self, state: &'a State, upid: &str) -> ApiResult<&'a Task> {
        upid.parse::<Upid>().map_err(|e| ApiError::param("upid", format!("{e} '{upid}'")))?;
        state.tasks.iter().find(|t| t.text == upid).ok_or_else(|| ApiError::internal("no such task"))
    }

    pub fn task_status(&self, upid: &str) -> ApiResult<Value> {
        let state = self.state();
        let task = self.find_task(&state, upid)?;
        let mut status = json!({
            "upid": task.text, "node": task.upid.node, "pid": task.upid.pid, "pstart": task.upid.pstart,
            "starttime": task.upid.starttime, "type": task.upid.task_type, "id": task.upid.id,
            "user": task.upid.user, "status": if task.end.is_some() { "stopped" } else { "running" },
        });
        if let (Some(obj), Some((_, exit))) = (status.as_object_mut(), &task.end) {
            obj.insert("exitstatus".into(), json!(exit));
        }
        Ok(status)
    }

    pub fn task_log(&self, upid: &str, start: usize, limit: usize) -> ApiResult<(Value, usize)> {
        let state = self.state();
        let task = self.find_task(&state, upid)?;
        let lines = task
            .log
            .iter()
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(i, line)| json!({"n": i + 1, "t": line}))
            .collect();
        Ok((Value::Array(lines), task.log.len()))
    }

    pub fn task_stop(&self, upid: &str) -> ApiResult<()> {
        let state = self.state();
        let task = self.find_task(&state, upid)?;
        if task.end.is_none() {
            task.abort.notify_one();
        }
        Ok(())
    }

    // ---- admin -------------------------------------------------------------------

    pub fn admin_state(&self) -> Value {
        let state = self.state();
        let cts: Vec<Value> = state
            .cts
            .iter()
            .map(|(vmid, ct)| {
                let running = ct.running.as_ref().filter(|r| !r.has_exited());
                json!({
                    "vmid": vmid,
                    "status": if running.is_some() { "running" } else { "stopped" },
                    "lock": ct.config.get("lock"),
                    "ip": ct.lease.map(|(a, _)| a.to_string()),
                    "pid": running.map(|r| r.pid),
                    "pids": running.map(|r| runtime::tree_pids(r.pid)),
                    "rss_bytes": running.map(|r| runtime::tree_rss(r.pid)),
                    "dir": self.ct_dir(*vmid).0,
                })
            })
            .collect();
        let running_tasks = state.tasks.iter().filter(|t| t.end.is_none()).count();
        json!({"containers": cts, "running_tasks": running_tasks})
    }

    /// Stops every running container (SIGTERM to pve-sim).
    pub async fn shutdown(&self) {
        let all: Vec<RunningCt> = self.state().cts.values_mut().filter_map(|ct| ct.running.take()).collect();
        let stops = all.into_iter().map(|mut running| async move { runtime::stop(&mut running).await });
        futures_join_all(stops).await;
    }
}

async fn futures_join_all<F: Future<Output = ()> + Send + 'static>(futures: impl Iterator<Item = F>) {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    for handle in handles {
        let _ = handle.await;
    }
}

/// The digest PUT's `digest` is compared with: a hash of the config as PVE writes it.
pub fn config_digest(config: &Params) -> String {
    let text: String = config.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    let hex: String = Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    hex[..40].to_string()
}

#[derive(Clone)]
pub struct TaskCtx {
    sim: Arc<Sim>,
    upid: String,
}

impl TaskCtx {
    pub fn log(&self, line: impl Into<String>) {
        self.sim.append_log(&self.upid, line.into());
    }
}

/// The filters of `GET /nodes/{node}/tasks`.
#[derive(Debug, Default)]
pub struct TaskFilter {
    pub vmid: Option<String>,
    pub typefilter: Option<String>,
    pub userfilter: Option<String>,
    pub source: String,
    pub errors_only: bool,
    pub statusfilter: Vec<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub start: usize,
    pub limit: usize,
}

impl TaskFilter {
    fn matches(&self, task: &Task) -> bool {
        let status_kind = task.end.as_ref().map(|(_, s)| {
            if s == "OK" {
                "ok"
            } else if s.starts_with("WARNINGS") {
                "warning"
            } else {
                "error"
            }
        });
        let source_ok = match self.source.as_str() {
            "active" => task.end.is_none(),
            "all" => true,
            _ => task.end.is_some(),
        };
        source_ok
            && self.vmid.as_ref().is_none_or(|v| *v == task.upid.id)
            && self.typefilter.as_ref().is_none_or(|t| *t == task.upid.task_type)
            && self.userfilter.as_ref().is_none_or(|u| task.upid.user.contains(u.as_str()))
            && (!self.errors_only || status_kind == Some("error"))
            && (self.statusfilter.is_empty() || status_kind.is_some_and(|k| self.statusfilter.iter().any(|s| s == k)))
            && self.since.is_none_or(|s| task.upid.starttime >= s)
            && self.until.is_none_or(|u| task.upid.starttime <= u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_volumes() {
        let cases = [
            ("local-lvm:8", ("local-lvm", Some(8.0))),
            ("8", ("local", Some(8.0))),
            ("local-lvm:vm-100-disk-0", ("local-lvm", None)),
            ("zfs:0.5", ("zfs", Some(0.5))),
        ];
        for (volume, (storage, size)) in cases {
            assert_eq!(parse_rootfs_volume(volume, "local"), (storage.to_string(), size), "{volume}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(size_bytes("8G"), 8 << 30);
        assert_eq!(size_bytes("512M"), 512 << 20);
        assert_eq!(size_bytes("4"), 4 << 30);
    }

    #[test]
    fn digest_follows_content() {
        let a: Params = [("hostname".to_string(), "a".to_string())].into();
        let b: Params = [("hostname".to_string(), "b".to_string())].into();
        assert_eq!(config_digest(&a).len(), 40);
        assert_ne!(config_digest(&a), config_digest(&b));
        assert_eq!(config_digest(&a), config_digest(&a.clone()));
    }
}
