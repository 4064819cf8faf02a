//! LXC guests: typed parameters and answers, and the client calls for them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use tokio::time::Instant;

use super::client::{ApiPath, Client, Params};
use super::de;
use super::error::Error;
use super::retry::PollInterval;
use super::secret::Secret;
use super::upid::Upid;

/// `GET /version`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct VersionInfo {
    /// e.g. `8.3.0`.
    pub version: String,
    /// e.g. `8.3`.
    #[serde(default)]
    pub release: Option<String>,
    /// Git revision of the manager package.
    #[serde(default)]
    pub repoid: Option<String>,
}

/// Parameters of `POST /nodes/{node}/lxc`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct CreateLxcParams {
    /// Guest id.
    pub vmid: u32,
    /// Template volume, e.g. `local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`.
    pub ostemplate: String,
    /// Hostname.
    pub hostname: String,
    /// CPU cores.
    pub cores: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    /// Swap in MiB.
    pub swap_mib: Option<u64>,
    /// Root disk, `storage:sizeGiB` (see [`rootfs`]).
    pub rootfs: Option<String>,
    /// First network interface (see [`super::net0`]).
    pub net0: Option<String>,
    /// DNS servers, space-separated.
    pub nameserver: Option<String>,
    /// Root password.
    pub password: Option<Secret>,
    /// Authorised keys for root, one per line.
    pub ssh_public_keys: Option<String>,
    /// Unprivileged container.
    pub unprivileged: bool,
    /// Features, e.g. `nesting=1,keyctl=1`.
    pub features: Option<String>,
    /// Start at node boot.
    pub onboot: Option<bool>,
    /// Tags, `;`-separated (see [`super::render_tags`]).
    pub tags: Option<String>,
    /// Description; carries the ownership marker.
    pub description: Option<String>,
    /// Start right after creation. The pipeline starts in its own stage, so usually false.
    pub start: bool,
}

impl fmt::Debug for CreateLxcParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateLxcParams")
            .field("vmid", &self.vmid)
            .field("ostemplate", &self.ostemplate)
            .field("hostname", &self.hostname)
            .field("cores", &self.cores)
            .field("memory_mib", &self.memory_mib)
            .field("swap_mib", &self.swap_mib)
            .field("rootfs", &self.rootfs)
            .field("net0", &self.net0)
            .field("nameserver", &self.nameserver)
            .field("password", &self.password)
            .field("ssh_public_keys", &self.ssh_public_keys)
            .field("unprivileged", &self.unprivileged)
            .field("features", &self.features)
            .field("onboot", &self.onboot)
            .field("tags", &self.tags)
            .field("description", &self.description)
            .field("start", &self.start)
            .finish()
    }
}

fn flag(value: bool) -> String {
    if value { "1" } else { "0" }.to_string()
}

impl CreateLxcParams {
    /// The form Proxmox expects; the only place the password leaves its wrapper.
    pub(crate) fn form(&self) -> Params {
        let mut form: Params = vec![
            ("vmid", self.vmid.to_string()),
            ("ostemplate", self.ostemplate.clone()),
            ("hostname", self.hostname.clone()),
            ("unprivileged", flag(self.unprivileged)),
            ("start", flag(self.start)),
        ];
        let optional = [
            ("cores", self.cores.map(|v| v.to_string())),
            ("memory", self.memory_mib.map(|v| v.to_string())),
            ("swap", self.swap_mib.map(|v| v.to_string())),
            ("rootfs", self.rootfs.clone()),
            ("net0", self.net0.clone()),
            ("nameserver", self.nameserver.clone()),
            ("password", self.password.as_ref().map(|p| p.expose().to_string())),
            ("ssh-public-keys", self.ssh_public_keys.clone()),
            ("features", self.features.clone()),
            ("onboot", self.onboot.map(flag)),
            ("tags", self.tags.clone()),
            ("description", self.description.clone()),
        ];
        form.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        form
    }
}

/// A root disk spec: `storage:sizeGiB`.
pub fn rootfs(storage: &str, size_gib: u32) -> String {
    format!("{storage}:{size_gib}")
}

/// `GET /nodes/{node}/lxc/{vmid}/config`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct LxcConfig {
    /// Hostname.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub hostname: Option<String>,
    /// Description, where the ownership marker lives.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub description: Option<String>,
    /// Tags, `;`-separated.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub tags: Option<String>,
    /// Lock held on the guest (`create`, `backup`, `destroyed`, ...).
    #[serde(default)]
    pub lock: Option<String>,
    /// Digest of the current config, for conditional updates.
    #[serde(default)]
    pub digest: Option<String>,
    /// CPU cores.
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub cores: Option<u32>,
    /// Memory in MiB.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub memory: Option<u64>,
    /// Swap in MiB.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub swap: Option<u64>,
    /// Root disk.
    #[serde(default)]
    pub rootfs: Option<String>,
    /// First network interface.
    #[serde(default)]
    pub net0: Option<String>,
    /// DNS servers.
    #[serde(default)]
    pub nameserver: Option<String>,
    /// Start at boot.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub onboot: Option<bool>,
    /// Unprivileged container.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub unprivileged: Option<bool>,
    /// Features string.
    #[serde(default)]
    pub features: Option<String>,
    /// OS type detected from the template.
    #[serde(default)]
    pub ostype: Option<String>,
    /// Architecture.
    #[serde(default)]
    pub arch: Option<String>,
    /// Every other key, as Proxmox sent it.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl LxcConfig {
    /// The rootfs size in bytes, from its `size=` (`8G`, `512M`, ...).
    pub fn rootfs_bytes(&self) -> Option<u64> {
        let size = self.rootfs.as_deref()?.split(',').find_map(|part| part.strip_prefix("size="))?;
        parse_size(size)
    }
}

/// `PVE::JSONSchema::parse_size`: a number with an optional `K`, `M`, `G` or
/// `T`; a bare number is bytes. The number is digits with an optional
/// fraction, as Proxmox writes and accepts it (`8`, `0.5`): no sign, no
/// exponent, no bare dot.
pub fn parse_size(size: &str) -> Option<u64> {
    let split = size.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(size.len());
    let (number, unit) = size.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) {
        return None;
    }
    let value: f64 = number.parse().ok().filter(|v: &f64| v.is_finite())?;
    let factor: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    Some((value * factor as f64) as u64)
}

/// One entry of `GET /nodes/{node}/lxc/{vmid}/pending`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct PendingEntry {
    /// The option.
    pub key: String,
    /// The value in effect.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// The value written but not in effect until the guest restarts.
    #[serde(default)]
    pub pending: Option<serde_json::Value>,
    /// A pending delete (1, or 2 when forced).
    #[serde(default)]
    pub delete: Option<u8>,
}

impl PendingEntry {
    /// Whether the entry waits for a restart.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some() || self.delete.is_some_and(|d| d > 0)
    }
}

/// `GET /nodes/{node}/lxc/{vmid}/status/current`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct LxcStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// Lock held on the guest, if any.
    #[serde(default)]
    pub lock: Option<String>,
    /// Hostname.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub name: Option<String>,
    /// Guest id.
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub vmid: Option<u32>,
    /// Seconds since start.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub uptime: Option<u64>,
    /// Tags, `;`-separated.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub tags: Option<String>,
}

impl LxcStatus {
    /// Whether the guest runs.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// One interface of `GET /nodes/{node}/lxc/{vmid}/interfaces`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Iface {
    /// Interface name inside the guest (`lo`, `eth0`).
    pub name: String,
    /// MAC address.
    #[serde(default)]
    pub hwaddr: Option<String>,
    /// IPv4 address with prefix, e.g. `192.0.2.10/24`.
    #[serde(default)]
    pub inet: Option<String>,
    /// IPv6 address with prefix.
    #[serde(default)]
    pub inet6: Option<String>,
}

/// Options of `DELETE /nodes/{node}/lxc/{vmid}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteLxcOptions {
    /// Also remove the guest from backup jobs, replication and HA.
    pub purge: bool,
    /// Also destroy disks that are not referenced in the config.
    pub destroy_unreferenced_disks: bool,
    /// Destroy even if running.
    pub force: bool,
}

impl Client {
    /// `GET /version`; also proves that the token is accepted.
    pub async fn version(&self) -> Result<VersionInfo, Error> {
        self.data(Method::GET, ApiPath::new("/version", &[]), vec![]).await
    }

    /// `GET /cluster/nextid`: the lowest free vmid at this moment.
    /// Whether no guest holds `vmid` (`GET /cluster/nextid` with `vmid`).
    pub async fn vmid_is_free(&self, vmid: u32) -> Result<bool, Error> {
        let path = ApiPath::new("/cluster/nextid", &[]);
        match self.data::<serde_json::Value>(Method::GET, path, vec![("vmid", vmid.to_string())]).await {
            Ok(_) => Ok(true),
            Err(error) if error.is_already_exists() => Ok(false),
            Err(error) => Err(error),
        }
    }

    pub async fn next_id(&self) -> Result<u32, Error> {
        let path = ApiPath::new("/cluster/nextid", &[]);
        let value: serde_json::Value = self.data(Method::GET, path.clone(), vec![]).await?;
        let parsed = match &value {
            serde_json::Value::String(s) => s.trim().parse().ok(),
            serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        };
        parsed.ok_or_else(|| Error::Decode {
            method: "GET",
            endpoint: path.template,
            path: path.render(),
            detail: format!("expected a vmid, got {value}"),
        })
    }

    /// `POST /nodes/{node}/lxc`: starts the create task.
    pub async fn create_lxc(&self, node: &str, params: &CreateLxcParams) -> Result<Upid, Error> {
        self.data(Method::POST, ApiPath::new("/nodes/{node}/lxc", &[node]), params.form()).await
    }

    /// `GET /nodes/{node}/lxc/{vmid}/config`.
    pub async fn lxc_config(&self, node: &str, vmid: u32) -> Result<LxcConfig, Error> {
        let vmid = vmid.to_string();
        self.data(Method::GET, ApiPath::new("/nodes/{node}/lxc/{vmid}/config", &[node, &vmid]), vec![]).await
    }

    /// The guest's config, or `None` when there is no guest at `vmid`.
    pub async fn lxc_config_opt(&self, node: &str, vmid: u32) -> Result<Option<LxcConfig>, Error> {
        match self.lxc_config(node, vmid).await {
            Ok(config) => Ok(Some(config)),
            Err(error) if error.is_no_such_guest() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `GET /nodes/{node}/lxc/{vmid}/config?current=1`: the values in
    /// effect, without pending changes.
    pub async fn lxc_config_current(&self, node: &str, vmid: u32) -> Result<LxcConfig, Error> {
        let vmid = vmid.to_string();
        let path = ApiPath::new("/nodes/{node}/lxc/{vmid}/config", &[node, &vmid]);
        self.data(Method::GET, path, vec![("current", flag(true))]).await
    }

    /// `PUT /nodes/{node}/lxc/{vmid}/config`: a running guest takes what it
    /// can at once and Proxmox keeps the rest pending until the next start
    /// (see [`lxc_pending`](Self::lxc_pending)). With `digest`, Proxmox
    /// refuses the update if the config changed since it was read.
    pub async fn update_lxc_config(
        &self,
        node: &str,
        vmid: u32,
        changes: &[(&'static str, String)],
        digest: Option<&str>,
    ) -> Result<(), Error> {
        let vmid = vmid.to_string();
        let path = ApiPath::new("/nodes/{node}/lxc/{vmid}/config", &[node, &vmid]);
        let mut params: Params = changes.to_vec();
        if let Some(digest) = digest {
            params.push(("digest", digest.to_string()));
        }
        let _: Option<serde_json::Value> = self.data(Method::PUT, path, params).await?;
        Ok(())
    }

    /// `GET /nodes/{node}/lxc/{vmid}/pending`.
    pub async fn lxc_pending(&self, node: &str, vmid: u32) -> Result<Vec<PendingEntry>, Error> {
        let vmid = vmid.to_string();
        let path = ApiPath::new("/nodes/{node}/lxc/{vmid}/pending", &[node, &vmid]);
        self.data(Method::GET, path, vec![]).await
    }

    /// `PUT /nodes/{node}/lxc/{vmid}/resize`: grows a volume (Proxmox cannot
    /// shrink one) in a task.
    pub async fn resize_lxc(&self, node: &str, vmid: u32, disk: &str, size: &str) -> Result<Upid, Error> {
        let vmid = vmid.to_string();
        let path = ApiPath::new("/nodes/{node}/lxc/{vmid}/resize", &[node, &vmid]);
        self.data(Method::PUT, path, vec![("disk", disk.to_string()), ("size", size.to_string())]).await
    }

    /// `POST /nodes/{node}/lxc/{vmid}/status/shutdown`: asks the guest to
    /// stop; after `timeout_secs` it is stopped hard when `force`, else the
    /// task fails.
    pub async fn shutdown_lxc(&self, node: &str, vmid: u32, timeout_secs: u32, force: bool) -> Result<Upid, Error> {
        let vmid = vmid.to_string();
        let path = ApiPath::new("/nodes/{node}/lxc/{vmid}/status/shutdown", &[node, &vmid]);
        self.data(Method::POST, path, vec![("timeout", timeout_secs.to_string()), ("forceStop", flag(force))]).await
    }

    /// `POST /nodes/{node}/lxc/{vmid}/status/reboot`: a shutdown, then a
    /// start that applies pending changes.
    pub async fn reboot_lxc(&self, node: &str, vmid: u32) -> Result<Upid, Error> {
        let vmid = vmid.to_string();
        let path = ApiPath::new("/nodes/{node}/lxc/{vmid}/status/reboot", &[node, &vmid]);
        self.data(Method::POST, path, vec![]).await
    }

    /// `GET /nodes/{node}/lxc/{vmid}/status/current`.
    pub async fn lxc_status(&self, node: &str, vmid: u32) -> Result<LxcStatus, Error> {
        let vmid = vmid.to_string();
        let path = ApiPath::new("/nodes/{node}/lxc/{vmid}/status/current", &[node, &vmid]);
        self.data(Method::GET, path, vec![]).await
    }

    /// `POST /nodes/{node}/lxc/{vmid}/status/start`.
    pub async fn start_lxc(&self, node: &str, vmid: u32) -> Result<Upid, Error> {
        let vmid = vmid.to_string();
        let path = ApiPath::new("/nodes/{node}/lxc/{vmid}/status/start", &[node, &vmid]);
        self.data(Method::POST, path, vec![]).await
    }

    /// `POST /nodes/{node}/lxc/{vmid}/status/stop`: immediate stop.
    pub async fn stop_lxc(&self, node: &str, vmid: u32) -> Result<Upid, Error> {
        let vmid = vmid.to_string();
        let path = ApiPath::new("/nodes/{node}/lxc/{vmid}/status/stop", &[node, &vmid]);
        self.data(Method::POST, path, vec![]).await
    }

    /// `GET /nodes/{node}/lxc/{vmid}/interfaces`; `None` while the guest is not running.
    pub async fn lxc_interfaces(&self, node: &str, vmid: u32) -> Result<Option<Vec<Iface>>, Error> {
        let vmid = vmid.to_string();
        let path = ApiPath::new("/nodes/{node}/lxc/{vmid}/interfaces", &[node, &vmid]);
        self.data(Method::GET, path, vec![]).await
    }

    /// `DELETE /nodes/{node}/lxc/{vmid}`: starts the destroy task.
    pub async fn delete_lxc(&self, node: &str, vmid: u32, options: DeleteLxcOptions) -> Result<Upid, Error> {
        let vmid = vmid.to_string();
        let path = ApiPath::new("/nodes/{node}/lxc/{vmid}", &[node, &vmid]);
        let mut params: Params = Vec::new();
        if options.purge {
            params.push(("purge", flag(true)));
        }
        if options.destroy_unreferenced_disks {
            params.push(("destroy-unreferenced-disks", flag(true)));
        }
        if options.force {
            params.push(("force", flag(true)));
        }
        self.data(Method::DELETE, path, params).await
    }

    /// The `vzcreate` task running for `vmid`, if any.
    pub async fn running_create(&self, node: &str, vmid: u32) -> Result<Option<Upid>, Error> {
        let tasks = self.list_tasks(node, Some(vmid), Some("vzcreate")).await?;
        let Some(task) = tasks.into_iter().find(|t| t.is_running()) else { return Ok(None) };
        task.upid().map(Some).map_err(|e| Error::Decode {
            method: "GET",
            endpoint: "/nodes/{node}/tasks",
            path: format!("/nodes/{node}/tasks"),
            detail: format!("bad UPID {:?}: {e}", task.upid),
        })
    }

    /// The config of `vmid` once no create is running there, or `None` when
    /// there is no guest (any more).
    ///
    /// Proxmox's `create_and_lock_config` first writes a config that holds
    /// only `lock: create`; the rest, the description with its ownership
    /// marker too, is written when the create task ends. A guest being created
    /// cannot be judged anyone's, so its task is waited for first (a failed
    /// create leaves no guest). A create lock with no create running is
    /// [`Error::CreateLocked`]: Proxmox lists the task a moment after it takes
    /// the lock, and a lock left by a create that died stays until someone
    /// unlocks the guest.
    pub async fn lxc_config_settled(
        &self,
        node: &str,
        vmid: u32,
        poll: Duration,
        timeout: Duration,
    ) -> Result<Option<LxcConfig>, Error> {
        let creating = |config: &LxcConfig| config.lock.as_deref() == Some("create");
        let Some(config) = self.lxc_config_opt(node, vmid).await? else { return Ok(None) };
        if !creating(&config) {
            return Ok(Some(config));
        }
        if let Some(upid) = self.running_create(node, vmid).await? {
            tracing::info!(vmid, %upid, "waiting for the create task running at this vmid before judging the guest");
            match self.wait_task(&upid, poll, timeout).await {
                Ok(_) | Err(Error::TaskFailed { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        match self.lxc_config_opt(node, vmid).await? {
            Some(config) if creating(&config) => Err(Error::CreateLocked { node: node.to_string(), vmid }),
            config => Ok(config),
        }
    }

    /// Polls `status/current` until the guest holds no lock, and returns that
    /// status; the waits grow with the time waited, from 50 ms to `poll`.
    pub async fn wait_unlocked(
        &self,
        node: &str,
        vmid: u32,
        poll: Duration,
        timeout: Duration,
    ) -> Result<LxcStatus, Error> {
        let started = Instant::now();
        let mut interval = PollInterval::up_to(poll);
        loop {
            let status = self.lxc_status(node, vmid).await?;
            match &status.lock {
                None => return Ok(status),
                Some(lock) if lock.is_empty() => return Ok(status),
                Some(lock) if started.elapsed() + poll > timeout => {
                    return Err(Error::StillLocked {
                        node: node.to_string(),
                        vmid,
                        lock: lock.clone(),
                        waited: started.elapsed(),
                    });
                }
                Some(_) => tokio::time::sleep(interval.next_wait()).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_form_table() {
        let full = CreateLxcParams {
            vmid: 120,
            ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
            hostname: "web-1".into(),
            cores: Some(2),
            memory_mib: Some(1024),
            swap_mib: Some(512),
            rootfs: Some(rootfs("local-lvm", 8)),
            net0: Some("name=eth0,bridge=vmbr0,ip=dhcp".into()),
            nameserver: Some("192.0.2.53".into()),
            password: Some(Secret::new("hunter2")),
            ssh_public_keys: Some("ssh-ed25519 AAAA a\nssh-ed25519 BBBB b".into()),
            unprivileged: true,
            features: Some("nesting=1".into()),
            onboot: Some(true),
            tags: Some("infrahaus;web".into()),
            description: Some("infrahaus.io/uid=abc".into()),
            start: false,
        };
        let minimal = CreateLxcParams {
            vmid: 100,
            ostemplate: "local:vztmpl/alpine.tar.xz".into(),
            hostname: "a".into(),
            ..Default::default()
        };
        let cases: [(&CreateLxcParams, &[(&str, &str)]); 2] = [
            (
                &full,
                &[
                    ("vmid", "120"),
                    ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
                    ("hostname", "web-1"),
                    ("unprivileged", "1"),
                    ("start", "0"),
                    ("cores", "2"),
                    ("memory", "1024"),
                    ("swap", "512"),
                    ("rootfs", "local-lvm:8"),
                    ("net0", "name=eth0,bridge=vmbr0,ip=dhcp"),
                    ("nameserver", "192.0.2.53"),
                    ("password", "hunter2"),
                    ("ssh-public-keys", "ssh-ed25519 AAAA a\nssh-ed25519 BBBB b"),
                    ("features", "nesting=1"),
                    ("onboot", "1"),
                    ("tags", "infrahaus;web"),
                    ("description", "infrahaus.io/uid=abc"),
                ],
            ),
            (
                &minimal,
                &[
                    ("vmid", "100"),
                    ("ostemplate", "local:vztmpl/alpine.tar.xz"),
                    ("hostname", "a"),
                    ("unprivileged", "0"),
                    ("start", "0"),
                ],
            ),
        ];
        for (params, expected) in cases {
            let form = params.form();
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(form, expected, "{params:?}");
        }
        assert!(!format!("{full:?}").contains("hunter2"));
    }

    #[test]
    fn size_table() {
        let cases = [
            ("8G", Some(8 << 30)),
            ("512M", Some(512 << 20)),
            ("1T", Some(1 << 40)),
            ("4096", Some(4096)),
            ("0.5G", Some(1 << 29)),
            ("100K", Some(100 << 10)),
            ("8g", None),
            ("8GB", None),
            ("", None),
            ("G", None),
            // Proxmox's grammar has no sign, exponent or bare dot; `-0G` read as 0 bytes.
            ("-0G", None),
            ("-1G", None),
            ("+1G", None),
            (".5G", None),
            ("1.G", None),
            ("1e3", None),
            (" 8G", None),
        ];
        for (size, expected) in cases {
            assert_eq!(parse_size(size), expected, "{size:?}");
        }
    }

    #[test]
    fn config_parses_real_answers() {
        let json = r#"{
            "arch": "amd64", "cores": 2, "memory": 1024, "swap": "512", "hostname": "web-1",
            "description": "infrahaus.io/uid=6f1c\n", "tags": "infrahaus;web", "onboot": 1,
            "unprivileged": 1, "features": "nesting=1", "ostype": "debian",
            "net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth",
            "rootfs": "local-lvm:vm-120-disk-0,size=8G", "lock": "create",
            "digest": "0f3a9c", "lxc": [["lxc.apparmor.profile", "unconfined"]]
        }"#;
        let config: LxcConfig = serde_json::from_str(json).expect("parses");
        assert_eq!(config.cores, Some(2));
        assert_eq!(config.swap, Some(512));
        assert_eq!(config.onboot, Some(true));
        assert_eq!(config.unprivileged, Some(true));
        assert_eq!(config.lock.as_deref(), Some("create"));
        assert_eq!(config.digest.as_deref(), Some("0f3a9c"));
        assert!(config.other.contains_key("lxc"));

        let status: LxcStatus =
            serde_json::from_str(r#"{"status":"running","name":"web-1","vmid":"120","uptime":42,"lock":"backup"}"#)
                .expect("parses");
        assert!(status.is_running());
        assert_eq!(status.vmid, Some(120));
        assert_eq!(status.lock.as_deref(), Some("backup"));
    }
}
