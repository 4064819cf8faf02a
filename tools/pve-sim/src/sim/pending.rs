//! The pending section of a container config, as `PVE::LXC::Config` keeps it.
//!
//! `update_pct_config` writes every change into `[pve:pending]`; for a running
//! container `vmconfig_hotplug_pending` then moves into the config only what
//! can be changed live (the fast-plug options, memory and swap, the CPU limits,
//! `net[n]`, new mount points), and the rest waits for the next start, when
//! `vmconfig_apply_pending` moves everything. A stopped container gets
//! everything at once.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::schema::Params;

/// `$LXC_FASTPLUG_OPTIONS`: copied into the config of a running container.
const FASTPLUG: &[&str] =
    &["description", "onboot", "startup", "protection", "hostname", "hookscript", "cores", "tags", "lock"];

/// Options `vmconfig_hotplug_pending` applies to a running container through
/// its cgroup or network (mount points and devices only when new).
fn hotplugs(key: &str, config: &Params) -> bool {
    let numbered =
        |prefix: &str| key.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    FASTPLUG.contains(&key)
        || matches!(key, "memory" | "swap" | "cpulimit" | "cpuunits")
        || numbered("net")
        || ((numbered("mp") || numbered("dev")) && !config.contains_key(key))
}

/// Deleting these from a running container takes effect at once.
fn hot_deletes(key: &str) -> bool {
    let numbered =
        |prefix: &str| key.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    FASTPLUG.contains(&key) || matches!(key, "swap" | "cpulimit" | "cpuunits") || numbered("net") || numbered("unused")
}

/// Changes that are written but not in effect.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) values: Params,
    pub(crate) delete: BTreeSet<String>,
}

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.values.is_empty() && self.delete.is_empty()
    }

    /// `update_pct_config`: reverts, deletes and new values go into the
    /// pending section, then what the container can take now is applied.
    /// Fails with Proxmox's text for an option that may not be deleted.
    pub(crate) fn update(
        &mut self,
        config: &mut Params,
        params: Params,
        delete: &[String],
        revert: &[String],
        running: bool,
    ) -> Result<(), String> {
        for key in revert {
            self.values.remove(key);
            self.delete.remove(key);
        }
        for key in delete {
            if !config.contains_key(key) && !self.values.contains_key(key) {
                continue; // "cannot delete '$opt' - not set in current configuration!" (a warning)
            }
            if matches!(key.as_str(), "memory" | "rootfs" | "ostype") {
                return Err(format!("unable to delete required option '{key}'"));
            }
            if key == "unprivileged" {
                return Err(format!("unable to delete read-only option: '{key}'"));
            }
            self.delete.insert(key.clone());
        }
        for (key, value) in params {
            if key == "unprivileged" {
                return Err(format!("unable to modify read-only option: '{key}'"));
            }
            self.delete.remove(&key);
            self.values.insert(key, value);
        }
        self.cleanup(config);
        if running {
            self.hotplug(config);
        } else {
            self.apply(config);
        }
        Ok(())
    }

    /// `cleanup_pending`: a pending value equal to the config's, and a pending
    /// delete of an option that is not set, are dropped.
    fn cleanup(&mut self, config: &Params) {
        self.values.retain(|key, value| config.get(key) != Some(value));
        self.delete.retain(|key| config.contains_key(key));
    }

    /// `vmconfig_hotplug_pending`.
    fn hotplug(&mut self, config: &mut Params) {
        let deletes: Vec<String> = self.delete.iter().filter(|key| hot_deletes(key)).cloned().collect();
        for key in deletes {
            config.remove(&key);
            self.delete.remove(&key);
        }
        let values: Vec<String> = self.values.keys().filter(|key| hotplugs(key, config)).cloned().collect();
        for key in values {
            if let Some(value) = self.values.remove(&key) {
                config.insert(key, value);
            }
        }
    }

    /// `vmconfig_apply_pending`: everything, as at a start.
    pub(crate) fn apply(&mut self, config: &mut Params) {
        for key in std::mem::take(&mut self.delete) {
            config.remove(&key);
        }
        config.append(&mut self.values);
    }

    /// `load_current_config` without `current`: the config as it will be.
    pub(crate) fn overlay(&self, config: &Params) -> Params {
        let mut view = config.clone();
        view.extend(self.values.iter().map(|(k, v)| (k.clone(), v.clone())));
        view.retain(|key, _| !self.delete.contains(key));
        view
    }

    /// `config_with_pending_array`: one entry per option, with `value` (in
    /// effect), `pending` and `delete` as they apply.
    pub(crate) fn entries(&self, config: &Params, typed: impl Fn(&str, &str) -> Value) -> Value {
        let mut entries = Vec::new();
        for (key, value) in config {
            let mut entry = json!({"key": key, "value": typed(key, value)});
            if let Some(pending) = self.values.get(key) {
                entry["pending"] = typed(key, pending);
            }
            if self.delete.contains(key) {
                entry["delete"] = json!(1);
            }
            entries.push(entry);
        }
        for (key, pending) in self.values.iter().filter(|(key, _)| !config.contains_key(*key)) {
            entries.push(json!({"key": key, "pending": typed(key, pending)}));
        }
        Value::Array(entries)
    }

    /// The section as `write_config` prints it, for the digest.
    pub(crate) fn render(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        let mut text = String::from("\n[pve:pending]\n");
        for (key, value) in &self.values {
            text.push_str(&format!("{key}: {value}\n"));
        }
        if !self.delete.is_empty() {
            text.push_str(&format!("delete: {}\n", self.delete.iter().cloned().collect::<Vec<_>>().join(",")));
        }
        text
    }
}

/// `PVE::GuestHelpers::get_unique_tags` with the default tag style: split,
/// sorted without regard to case, lower-cased, de-duplicated, joined by `;`.
pub(crate) fn unique_tags(tags: &str) -> String {
    let mut list: Vec<String> =
        tags.split([';', ',', ' ', '\t', '\n']).filter(|t| !t.is_empty()).map(str::to_lowercase).collect();
    list.sort();
    list.dedup();
    list.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn base() -> Params {
        params(&[
            ("memory", "512"),
            ("swap", "512"),
            ("cores", "1"),
            ("hostname", "a"),
            ("nameserver", "127.0.0.53"),
            ("rootfs", "local:vm-100-disk-0,size=4G"),
        ])
    }

    #[test]
    fn a_running_container_takes_the_hotpluggable_options_and_keeps_the_rest_pending() {
        let mut config = base();
        let mut pending = Pending::default();
        let change = params(&[
            ("memory", "1024"),
            ("cores", "2"),
            ("hostname", "b"),
            ("nameserver", "127.0.0.54"),
            ("rootfs", "local:vm-100-disk-0,size=8G"),
        ]);
        pending.update(&mut config, change, &[], &[], true).expect("update");
        assert_eq!(config["memory"], "1024");
        assert_eq!(config["cores"], "2");
        assert_eq!(config["hostname"], "b");
        assert_eq!(config["nameserver"], "127.0.0.53", "nameserver waits for a restart");
        assert_eq!(config["rootfs"], "local:vm-100-disk-0,size=4G", "a size= through config resizes nothing");
        assert_eq!(pending.values.keys().collect::<Vec<_>>(), ["nameserver", "rootfs"]);
        assert_eq!(pending.overlay(&config)["nameserver"], "127.0.0.54");

        let entries = pending.entries(&config, |_, v| json!(v));
        let nameserver = entries.as_array().unwrap().iter().find(|e| e["key"] == "nameserver").unwrap();
        assert_eq!(nameserver, &json!({"key": "nameserver", "value": "127.0.0.53", "pending": "127.0.0.54"}));

        pending.apply(&mut config);
        assert!(pending.is_empty());
        assert_eq!(config["nameserver"], "127.0.0.54");
    }

    #[test]
    fn a_stopped_container_takes_everything_and_equal_values_are_no_change() {
        let mut config = base();
        let mut pending = Pending::default();
        pending.update(&mut config, params(&[("nameserver", "127.0.0.54")]), &["swap".into()], &[], false).unwrap();
        assert!(pending.is_empty());
        assert_eq!(config["nameserver"], "127.0.0.54");
        assert!(!config.contains_key("swap"));

        pending.update(&mut config, params(&[("memory", "512")]), &[], &[], true).unwrap();
        assert!(pending.is_empty(), "a value equal to the config is not pending");
    }

    #[test]
    fn deletes_and_reverts() {
        let mut config = base();
        let mut pending = Pending::default();
        pending.update(&mut config, params(&[("nameserver", "127.0.0.54")]), &[], &[], true).unwrap();
        pending.update(&mut config, Params::new(), &[], &["nameserver".into()], true).unwrap();
        assert!(pending.is_empty(), "revert drops the pending value");
        assert_eq!(
            pending.update(&mut config, Params::new(), &["memory".into()], &[], true),
            Err("unable to delete required option 'memory'".into())
        );
        pending.update(&mut config, Params::new(), &["nameserver".into(), "swap".into()], &[], true).unwrap();
        assert!(!config.contains_key("swap"), "swap is deleted live");
        assert_eq!(pending.delete.iter().collect::<Vec<_>>(), ["nameserver"]);
        assert!(!pending.overlay(&config).contains_key("nameserver"));
        assert!(pending.render().contains("[pve:pending]\ndelete: nameserver\n"));
    }

    #[test]
    fn tags_are_normalized() {
        assert_eq!(unique_tags("web;Infrahaus,web db"), "db;infrahaus;web");
        assert_eq!(unique_tags(""), "");
    }
}
