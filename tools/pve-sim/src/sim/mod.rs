//! The simulated node: containers, their config and locks, and worker tasks,
//! with the behaviour and error texts of `PVE::API2::LXC`.
//!
//! `Sim` is split by concern, one `impl Sim` block per file: guests (create,
//! destroy, config, list and status), power actions, worker tasks, the
//! network (interfaces and leases) and storage.

mod guests;
mod network;
mod pending;
mod power;
mod storage;
mod tasks;

pub(crate) use tasks::TaskFilter;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::sync::OwnedMutexGuard;

use crate::ctconfig::Ipv4Pool;
use crate::faults::Faults;
use crate::hostkeys::HostKeyPool;
use crate::requests::RequestCounts;
use crate::runtime::{self, CtDir, Running, Spawner};
use crate::schema::{ApiSchema, ParamErrors, Params};
use storage::STORAGES;
use tasks::Task;

const CONFIG_PATH: &str = "/nodes/{node}/lxc/{vmid}/config";

/// An API error as pve-http-server sends it: status, message, and for 400 the per-parameter errors.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) message: String,
    pub(crate) errors: Option<ParamErrors>,
}

impl ApiError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), errors: None }
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
    pub(crate) fn params(errors: ParamErrors) -> Self {
        Self { status: 400, message: "Parameter verification failed.".into(), errors: Some(errors) }
    }
    pub(crate) fn param(name: &str, message: impl Into<String>) -> Self {
        Self::params(BTreeMap::from([(name.to_string(), message.into())]))
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Who made a request: a user (`root@pam`) or a user's API token (`root@pam!ci`).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) userid: String,
}

pub(crate) struct SimConfig {
    pub(crate) node: String,
    pub(crate) state_dir: PathBuf,
    pub(crate) pool: Ipv4Pool,
    pub(crate) pool_cidr: String,
    pub(crate) lock_timeout: Duration,
    pub(crate) templates: Vec<String>,
    pub(crate) fingerprint: String,
    /// Guests exist in the API and the task engine only: no root filesystem,
    /// no namespaces, no sshd.
    pub(crate) api_only_guests: bool,
    /// How many sets of SSH host keys to keep generated ahead of creates (0: none).
    pub(crate) host_key_pool: usize,
}

struct Ct {
    /// The config in effect (`GET config?current=1`).
    config: Params,
    /// Written but not in effect until the next start.
    pending: pending::Pending,
    /// The size of the rootfs volume, which only a resize changes.
    volume_bytes: u64,
    lease: Option<(Ipv4Addr, u8)>,
    running: Option<Running>,
    file_lock: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct State {
    cts: BTreeMap<u32, Ct>,
    tasks: Vec<Task>,
    /// Where each UPID is in `tasks` (tasks are never removed).
    task_index: HashMap<String, usize>,
    /// Every create accepted since start, destroyed guests included: what
    /// tests check "exactly one create per owner" against.
    creates: Vec<Create>,
}

/// One accepted `POST /nodes/{node}/lxc`.
struct Create {
    vmid: u32,
    upid: String,
    /// The description it was created with (an owner's marker, for example).
    description: Option<String>,
}

pub(crate) struct Sim {
    pub(crate) cfg: SimConfig,
    pub(crate) schema: ApiSchema,
    faults: Mutex<Faults>,
    spawner: Spawner,
    /// Host keys generated ahead of creates (`--host-key-pool`).
    host_keys: Option<HostKeyPool>,
    state: Mutex<State>,
    seq: AtomicU32,
    pub(crate) requests: RequestCounts,
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

impl Sim {
    /// The simulated node; with a host key pool configured, the pool starts
    /// filling in the background.
    pub(crate) fn new(cfg: SimConfig, faults: Faults) -> anyhow::Result<Arc<Self>> {
        let host_keys = if cfg.host_key_pool > 0 && !cfg.api_only_guests {
            Some(HostKeyPool::start(cfg.state_dir.join("host-key-pool"), cfg.host_key_pool)?)
        } else {
            None
        };
        Ok(Arc::new(Self {
            cfg,
            schema: ApiSchema::embedded()?,
            faults: Mutex::new(faults),
            spawner: Spawner::new()?,
            host_keys,
            state: Mutex::new(State::default()),
            seq: AtomicU32::new(0),
            requests: RequestCounts::default(),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, Faults> {
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

    pub(crate) fn version(&self) -> Value {
        json!({"version": "8.3.0", "release": "8.3", "repoid": "c1689ccb1065a83b", "console": "html5"})
    }

    pub(crate) fn nodes(&self) -> Value {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        json!([{
            "node": self.cfg.node, "status": "online", "type": "node", "id": format!("node/{}", self.cfg.node),
            "cpu": 0.01, "maxcpu": cpus, "mem": 2u64 << 30, "maxmem": 16u64 << 30,
            "disk": 10u64 << 30, "maxdisk": 100u64 << 30, "uptime": boot_ticks() / 100, "level": "",
            "ssl_fingerprint": self.cfg.fingerprint,
        }])
    }

    pub(crate) fn resources(&self, kind: Option<&str>) -> Value {
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
    pub(crate) fn hold_lock(self: &Arc<Self>, vmid: u32, hold: Duration) -> ApiResult<()> {
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

    // ---- admin -------------------------------------------------------------------

    pub(crate) fn admin_state(&self) -> Value {
        let state = self.state();
        let cts: Vec<Value> = state
            .cts
            .iter()
            .map(|(vmid, ct)| {
                let running = ct.running.as_ref().filter(|r| !r.has_exited());
                let dir = (!self.cfg.api_only_guests).then(|| self.ct_dir(*vmid).0);
                json!({
                    "vmid": vmid,
                    "status": if running.is_some() { "running" } else { "stopped" },
                    "lock": ct.config.get("lock"),
                    // What the running guest has: the config in effect, not what is pending.
                    "limits": {
                        "memory": ct.config.get("memory"), "swap": ct.config.get("swap"),
                        "cores": ct.config.get("cores"), "disk_bytes": ct.volume_bytes,
                    },
                    "pending": ct.pending.values, "pending_delete": ct.pending.delete,
                    "ip": ct.lease.map(|(a, _)| a.to_string()),
                    "pid": running.and_then(Running::pid),
                    "pids": running.map(Running::pids),
                    "rss_bytes": running.map(Running::rss),
                    "dir": dir,
                })
            })
            .collect();
        let running_tasks = state.tasks.iter().filter(|t| t.end.is_none()).count();
        let creates: Vec<Value> = state
            .creates
            .iter()
            .map(|c| json!({"vmid": c.vmid, "upid": c.upid, "description": c.description}))
            .collect();
        let pid = std::process::id();
        json!({
            "mode": if self.cfg.api_only_guests { "api-only" } else { "containers" },
            "containers": cts, "running_tasks": running_tasks, "requests": self.requests.to_json(),
            "creates": creates,
            "host_key_pool": self.host_keys.as_ref().map(HostKeyPool::to_json),
            "process": {"pid": pid, "rss_bytes": runtime::process_rss(pid)},
        })
    }

    /// Stops every running container and the host key pool (SIGTERM to pve-sim).
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        let all: Vec<Running> = self.state().cts.values_mut().filter_map(|ct| ct.running.take()).collect();
        let stops = all.into_iter().map(|mut running| async move { runtime::stop(&mut running).await });
        futures_join_all(stops).await;
        let sim = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(pool) = &sim.host_keys {
                pool.stop();
            }
        })
        .await;
    }
}

async fn futures_join_all<F: Future<Output = ()> + Send + 'static>(futures: impl Iterator<Item = F>) {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    for handle in handles {
        let _ = handle.await;
    }
}
