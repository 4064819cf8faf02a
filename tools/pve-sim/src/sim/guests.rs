//! Guests: create, destroy, config get and put, and list and status of containers.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::network::random_hwaddr;
use super::pending::{unique_tags, Pending};
use super::storage::{parse_rootfs_volume, print_size, size_bytes, size_bytes_exact, STORAGES};
use super::{no_such_ct, ApiError, ApiResult, Caller, Ct, Sim};
use crate::ctconfig;
use crate::hostkeys::HostKey;
use crate::runtime::{self, RootfsSetup, Running};
use crate::schema::{parse_boolean, parse_property_string, typed_json, ParamErrors, Params};

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

/// The digest PUT's `digest` is compared with: a hash of the config file as
/// PVE writes it, its pending section included.
fn config_digest(config: &Params, pending: &Pending) -> String {
    let mut text: String = config.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    text.push_str(&pending.render());
    let hex: String = Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    hex[..40].to_string()
}

/// `PVE::Tools::assert_if_modified`: a given digest must be the config's.
fn check_digest(ct: &Ct, digest: Option<&str>) -> ApiResult<()> {
    match digest {
        Some(digest) if digest != config_digest(&ct.config, &ct.pending) => {
            Err(ApiError::internal("detected modified configuration - file changed by other user? Try again."))
        }
        _ => Ok(()),
    }
}

impl Sim {
    // ---- list and status -------------------------------------------------

    pub(super) fn ct_status(&self, vmid: u32, ct: &Ct) -> Value {
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
            "uptime": running.map_or(0, |r| r.started().elapsed().as_secs()),
            "mem": running.map_or(0, Running::rss),
            "template": 0,
        });
        if let Some(obj) = status.as_object_mut() {
            if let Some(lock) = config.get("lock") {
                obj.insert("lock".into(), json!(lock));
            }
            if let Some(tags) = config.get("tags") {
                obj.insert("tags".into(), json!(tags));
            }
            if let Some(pid) = running.and_then(Running::pid) {
                obj.insert("pid".into(), json!(pid));
            }
        }
        status
    }

    pub(crate) fn list(&self) -> Value {
        let state = self.state();
        Value::Array(state.cts.iter().map(|(vmid, ct)| self.ct_status(*vmid, ct)).collect())
    }

    pub(crate) fn status_current(&self, vmid: u32) -> ApiResult<Value> {
        let state = self.state();
        let ct = state.cts.get(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid))?;
        let mut status = self.ct_status(vmid, ct);
        if let Some(obj) = status.as_object_mut() {
            obj.insert("ha".into(), json!({"managed": 0}));
        }
        Ok(status)
    }

    pub(crate) fn next_id(&self, wanted: Option<u32>) -> ApiResult<Value> {
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

    // ---- config ------------------------------------------------------------

    /// `GET config`: with pending values taken in, or with `current` the
    /// values in effect.
    pub(crate) fn config_get(&self, vmid: u32, current: bool) -> ApiResult<Value> {
        let state = self.state();
        let ct = state.cts.get(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid))?;
        let view = if current { ct.config.clone() } else { ct.pending.overlay(&ct.config) };
        let mut out = Map::new();
        for (key, value) in &view {
            out.insert(key.clone(), typed_json(self.config_schema(key), value));
        }
        out.insert("digest".into(), json!(config_digest(&ct.config, &ct.pending)));
        Ok(Value::Object(out))
    }

    /// `GET pending`: each option with its value in effect, its pending value
    /// and a pending delete.
    pub(crate) fn pending_get(&self, vmid: u32) -> ApiResult<Value> {
        let state = self.state();
        let ct = state.cts.get(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid))?;
        let mut entries = ct.pending.entries(&ct.config, |key, value| typed_json(self.config_schema(key), value));
        if let Some(list) = entries.as_array_mut() {
            list.push(json!({"key": "digest", "value": config_digest(&ct.config, &ct.pending)}));
        }
        Ok(entries)
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

    /// `PUT config` (`update_vm`): changes go through the pending section;
    /// a running container takes what can be hot-plugged, the rest waits for
    /// its next start.
    pub(crate) async fn config_put(&self, vmid: u32, mut params: Params) -> ApiResult<()> {
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
        if params.is_empty() {
            return Err(ApiError::internal("no options specified"));
        }
        let list = |value: Option<String>| -> Vec<String> {
            value
                .map(|d| d.split([',', ';', ' ']).filter(|s| !s.is_empty()).map(String::from).collect())
                .unwrap_or_default()
        };
        let deletes = list(params.remove("delete"));
        let reverts = list(params.remove("revert"));
        self.normalize_nets(&mut params)?;
        if let Some(tags) = params.get_mut("tags") {
            *tags = unique_tags(tags);
        }
        let mut errors = ParamErrors::new();
        for key in &reverts {
            if self.config_schema(key).is_none() {
                errors.insert("revert".into(), format!("unknown option '{key}'"));
            } else if params.contains_key(key) {
                errors.insert("revert".into(), format!("you can't use '-{key}' and '-revert {key}' at the same time"));
            }
        }
        for key in &deletes {
            if self.config_schema(key).is_none() {
                errors.insert("delete".into(), format!("unknown option '{key}'"));
            } else if params.contains_key(key) {
                errors.insert("delete".into(), format!("you can't use '-{key}' and -delete {key}' at the same time"));
            } else if reverts.contains(key) {
                errors.insert(
                    "delete".into(),
                    format!("you can't use '-delete {key}' and '-revert {key}' at the same time"),
                );
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::params(errors));
        }
        let mut state = self.state();
        let current = state.cts.get(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid))?;
        check_digest(current, digest.as_deref())?;
        let running = Self::is_running(current);
        let mut config = current.config.clone();
        let mut pending = current.pending.clone();
        pending.update(&mut config, params, &deletes, &reverts, running).map_err(ApiError::internal)?;
        let lease = self.resolve_lease(&state, vmid, &config, current.lease)?;
        if let Some(ct) = state.cts.get_mut(&vmid) {
            ct.config = config;
            ct.pending = pending;
            ct.lease = lease;
        }
        Ok(())
    }

    /// `PUT resize` (`resize_vm`): grows a volume, checked before the worker
    /// starts, and records the new size in the config.
    pub(crate) fn resize(self: &Arc<Self>, vmid: u32, params: &Params, caller: &Caller) -> ApiResult<String> {
        let disk = params.get("disk").cloned().unwrap_or_default();
        let size = params.get("size").cloned().unwrap_or_default();
        let (grow, number) = match size.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, size.as_str()),
        };
        let requested = size_bytes_exact(number).ok_or_else(|| ApiError::internal("invalid size string"))?;
        let new_bytes = {
            let state = self.state();
            let ct = state.cts.get(&vmid).ok_or_else(|| no_such_ct(&self.cfg.node, vmid))?;
            Self::check_lock(ct)?;
            check_digest(ct, params.get("digest").map(String::as_str))?;
            if disk != "rootfs" || !ct.config.contains_key("rootfs") {
                return Err(ApiError::internal(format!(
                    "unable to parse volume ID '{}'",
                    ct.config.get(&disk).cloned().unwrap_or_default()
                )));
            }
            let new_bytes = if grow { ct.volume_bytes + requested } else { requested };
            if new_bytes < ct.volume_bytes {
                return Err(ApiError::internal("unable to shrink disk size"));
            }
            if new_bytes == ct.volume_bytes {
                return Err(ApiError::internal("disk is already at specified size"));
            }
            new_bytes
        };
        let sim = self.clone();
        Ok(self.spawn_task(
            "resize",
            vmid,
            caller,
            move |ctx| async move {
                ctx.pace().await?;
                let mut state = sim.state();
                let ct = state.cts.get_mut(&vmid).ok_or_else(|| no_such_ct(&sim.cfg.node, vmid).message)?;
                ct.volume_bytes = new_bytes;
                if let Some(rootfs) = ct.config.get("rootfs").cloned() {
                    let mut parts: Vec<String> =
                        rootfs.split(',').filter(|p| !p.starts_with("size=")).map(String::from).collect();
                    parts.push(format!("size={}", print_size(new_bytes)));
                    ct.config.insert("rootfs".into(), parts.join(","));
                }
                drop(state);
                ctx.log(format!("Resizing image: {} bytes", new_bytes));
                Ok(())
            },
            || {},
        ))
    }

    // ---- create --------------------------------------------------------------

    pub(crate) fn create(self: &Arc<Self>, mut params: Params, caller: &Caller) -> ApiResult<String> {
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
        if let Some(tags) = params.get_mut("tags") {
            *tags = unique_tags(tags);
        }

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

        {
            let mut state = self.state();
            if state.cts.contains_key(&vmid) {
                return Err(ApiError::internal(format!("CT {vmid} already exists on node '{}'", self.cfg.node)));
            }
            let lease = self.resolve_lease(&state, vmid, &config, None)?;
            // `create_and_lock_config`: until the worker writes the real config
            // at its end, the guest's config holds the create lock alone (no
            // description, no tags).
            let locked = Params::from([("lock".to_string(), "create".to_string())]);
            state.cts.insert(
                vmid,
                Ct {
                    config: locked,
                    pending: Pending::default(),
                    volume_bytes: (size_gib * f64::from(1u32 << 30)) as u64,
                    lease,
                    running: None,
                    file_lock: Arc::new(tokio::sync::Mutex::new(())),
                },
            );
        }

        let start_after = params.get("start").and_then(|s| parse_boolean(s)) == Some(true);
        let description = config.get("description").cloned();
        let password = params.get("password").cloned();
        let keys = params.get("ssh-public-keys").cloned();
        let sim = self.clone();
        let cleanup_sim = self.clone();
        let upid = self.spawn_task(
            "vzcreate",
            vmid,
            caller,
            move |ctx| async move {
                let hostname = config.get("hostname").cloned().unwrap_or_default();
                let keys = if sim.cfg.api_only_guests {
                    // No root filesystem, so no host keys and no fingerprints in the log.
                    Vec::new()
                } else {
                    sim.prepare_rootfs(vmid, &hostname, &config, password, keys).await?
                };
                ctx.pace().await?;
                if storage == "local-lvm" {
                    ctx.log(format!("  Logical volume \"vm-{vmid}-disk-0\" created."));
                    let blocks = (size_gib * 262_144.0) as u64;
                    ctx.log(format!("Creating filesystem with {blocks} 4k blocks and {} inodes", blocks / 4));
                }
                ctx.log(format!("extracting archive '/var/lib/vz/template/cache/{file}'"));
                ctx.log("Total bytes read: 524001280 (500MiB, 183MiB/s)");
                ctx.log("Detected container architecture: amd64");
                for key in keys {
                    ctx.log(format!("Creating SSH host key '{}' - this may take some time ...", key.file_name));
                    ctx.log(format!("done: {} root@{hostname}", key.fingerprint));
                }
                // The worker's final `write_config`: the full config, which
                // carries no lock, so writing it releases the create lock.
                if let Some(ct) = sim.state().cts.get_mut(&vmid) {
                    ct.config = config;
                }
                if start_after {
                    sim.start_container(vmid, None).await?;
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
                if !cleanup_sim.cfg.api_only_guests {
                    if let Err(e) = runtime::destroy_files(&cleanup_sim.ct_dir(vmid)) {
                        tracing::warn!(vmid, error = %e, "removing files of failed create");
                    }
                }
            },
        );
        self.state().creates.push(super::Create { vmid, upid: upid.clone(), description });
        Ok(upid)
    }

    /// A new container's own layer and identity, its host keys from the
    /// pool when one is ready; runs off the async threads.
    async fn prepare_rootfs(
        self: &Arc<Self>,
        vmid: u32,
        hostname: &str,
        config: &Params,
        password: Option<String>,
        ssh_public_keys: Option<String>,
    ) -> Result<Vec<HostKey>, String> {
        let lease = self.state().cts.get(&vmid).and_then(|ct| ct.lease);
        let dir = self.ct_dir(vmid);
        let nameserver = config.get("nameserver").cloned();
        let searchdomain = config.get("searchdomain").cloned();
        let hostname = hostname.to_string();
        let sim = self.clone();
        tokio::task::spawn_blocking(move || {
            runtime::prepare_rootfs(
                &dir,
                &RootfsSetup {
                    hostname: &hostname,
                    ip: lease.map(|(a, _)| a),
                    password: password.as_deref(),
                    ssh_public_keys: ssh_public_keys.as_deref(),
                    nameserver: nameserver.as_deref(),
                    searchdomain: searchdomain.as_deref(),
                },
                sim.host_keys.as_ref(),
            )
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{e:#}"))
    }

    // ---- destroy -----------------------------------------------------------------

    pub(crate) fn destroy(self: &Arc<Self>, vmid: u32, params: &Params, caller: &Caller) -> ApiResult<String> {
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
                ctx.pace().await?;
                sim.stop_container(vmid).await;
                let rootfs = sim.state().cts.get(&vmid).and_then(|ct| ct.config.get("rootfs").cloned());
                if !sim.cfg.api_only_guests {
                    let dir = sim.ct_dir(vmid);
                    tokio::task::spawn_blocking(move || runtime::destroy_files(&dir))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("{e:#}"))?;
                }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_follows_content() {
        let a: Params = [("hostname".to_string(), "a".to_string())].into();
        let b: Params = [("hostname".to_string(), "b".to_string())].into();
        let none = Pending::default();
        let mut some = Pending::default();
        some.values.insert("nameserver".into(), "127.0.0.53".into());
        assert_eq!(config_digest(&a, &none).len(), 40);
        assert_ne!(config_digest(&a, &none), config_digest(&b, &none));
        assert_ne!(config_digest(&a, &none), config_digest(&a, &some), "the pending section counts");
        assert_eq!(config_digest(&a, &none), config_digest(&a.clone(), &none));
    }
}
