//! The guest settings a Container asks for, resolved from its spec and its
//! template's defaults: what Create sends and what a later change applies.

use crate::crd::{Container, ContainerTemplateSpec};
use crate::proxmox::{self, LxcConfig};

pub(crate) const DEFAULT_STORAGE: &str = "local-lvm";
pub(crate) const DEFAULT_DISK_GIB: i32 = 8;

/// The guest's hostname: `spec.hostname`, or the Container's name.
pub(crate) fn hostname(ct: &Container) -> String {
    ct.spec.hostname.clone().unwrap_or_else(|| kube::ResourceExt::name_any(ct))
}

/// The settings Proxmox keeps in the guest's config and the operator manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub hostname: String,
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    pub swap_mib: Option<u64>,
    pub disk_gib: u32,
    pub storage: String,
    /// Space-separated, as Proxmox stores them; `None` leaves them alone.
    pub nameserver: Option<String>,
    pub onboot: Option<bool>,
    /// `;`-separated, `infrahaus` first.
    pub tags: String,
}

impl Settings {
    pub fn resolve(ct: &Container, hostname: String, template: Option<&ContainerTemplateSpec>) -> Self {
        let defaults = template.and_then(|t| t.defaults.clone()).unwrap_or_default();
        let own = ct.spec.resources.clone().unwrap_or_default();
        let network = ct.spec.network.clone().unwrap_or_default();
        Self {
            hostname,
            cores: own.cores.or(defaults.cores).map(|v| v.max(1) as u32),
            memory_mib: own.memory_mib.or(defaults.memory_mib).map(|v| v.max(16) as u64),
            swap_mib: own.swap_mib.or(defaults.swap_mib).map(|v| v.max(0) as u64),
            disk_gib: own.disk_gib.or(defaults.disk_gib).unwrap_or(DEFAULT_DISK_GIB).max(1) as u32,
            storage: own.storage.or(defaults.storage).unwrap_or_else(|| DEFAULT_STORAGE.into()),
            nameserver: (!network.nameservers.is_empty()).then(|| network.nameservers.join(" ")),
            onboot: ct.spec.start_on_boot,
            tags: proxmox::render_tags(&ct.spec.tags),
        }
    }

    /// The config keys whose value differs from `config`, with the value to
    /// write. The disk is not among them: it grows through a resize.
    pub fn changes(&self, config: &LxcConfig) -> Vec<(&'static str, String)> {
        let mut changes = Vec::new();
        if config.hostname.as_deref() != Some(self.hostname.as_str()) {
            changes.push(("hostname", self.hostname.clone()));
        }
        if let Some(cores) = self.cores.filter(|c| config.cores != Some(*c)) {
            changes.push(("cores", cores.to_string()));
        }
        if let Some(memory) = self.memory_mib.filter(|m| config.memory != Some(*m)) {
            changes.push(("memory", memory.to_string()));
        }
        if let Some(swap) = self.swap_mib.filter(|s| config.swap != Some(*s)) {
            changes.push(("swap", swap.to_string()));
        }
        if let Some(nameserver) = self.nameserver.as_ref().filter(|n| config.nameserver.as_deref() != Some(n.as_str()))
        {
            changes.push(("nameserver", nameserver.clone()));
        }
        if let Some(onboot) = self.onboot.filter(|o| config.onboot.unwrap_or(false) != *o) {
            changes.push(("onboot", if onboot { "1" } else { "0" }.to_string()));
        }
        if !config.tags.as_deref().is_some_and(|tags| proxmox::same_tags(tags, &self.tags)) {
            changes.push(("tags", self.tags.clone()));
        }
        changes
    }

    /// The size to grow the rootfs to, when it is smaller than asked for.
    /// A disk larger than asked for stays: Proxmox cannot shrink one.
    pub fn disk_growth(&self, config: &LxcConfig) -> Option<String> {
        let wanted = u64::from(self.disk_gib) << 30;
        let current = config.rootfs_bytes()?;
        (current < wanted).then(|| format!("{}G", self.disk_gib))
    }

    /// The rootfs size in whole GiB when it is larger than asked for (a
    /// `diskGiB` set below the size the guest was created with).
    pub fn disk_kept_larger(&self, config: &LxcConfig) -> Option<u64> {
        let current = config.rootfs_bytes()?;
        (current > u64::from(self.disk_gib) << 30).then_some(current >> 30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ContainerSpec;

    fn container(spec: serde_json::Value) -> Container {
        Container::new("web", serde_json::from_value::<ContainerSpec>(spec).expect("spec"))
    }

    fn config(value: serde_json::Value) -> LxcConfig {
        serde_json::from_value(value).expect("config")
    }

    #[test]
    fn changes_name_only_what_differs() {
        let ct = container(serde_json::json!({
            "nodeRef": {"name": "pve1"},
            "resources": {"cores": 2, "memoryMiB": 1024, "diskGiB": 12},
            "network": {"nameservers": ["127.0.0.53"]},
            "tags": ["web"], "startOnBoot": true
        }));
        let settings = Settings::resolve(&ct, "web".into(), None);
        let same = config(serde_json::json!({
            "hostname": "web", "cores": 2, "memory": 1024, "nameserver": "127.0.0.53", "onboot": 1,
            "tags": "web;infrahaus", "rootfs": "local-lvm:vm-100-disk-0,size=12G"
        }));
        assert_eq!(settings.changes(&same), vec![]);
        assert_eq!(settings.disk_growth(&same), None);

        let old = config(serde_json::json!({
            "hostname": "old", "cores": 1, "memory": 512, "swap": 512, "nameserver": "127.0.0.1",
            "tags": "infrahaus", "rootfs": "local-lvm:vm-100-disk-0,size=8G"
        }));
        let keys: Vec<&str> = settings.changes(&old).iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["hostname", "cores", "memory", "nameserver", "onboot", "tags"], "swap is not asked for");
        assert_eq!(settings.disk_growth(&old), Some("12G".into()));

        let larger = config(serde_json::json!({"rootfs": "local-lvm:vm-100-disk-0,size=20G"}));
        assert_eq!(settings.disk_growth(&larger), None, "never shrinks");
        assert_eq!(settings.disk_kept_larger(&larger), Some(20));
        assert_eq!(settings.disk_kept_larger(&same), None);
    }
}
