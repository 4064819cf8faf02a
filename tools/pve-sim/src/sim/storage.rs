//! Storage: the storages `local` and `local-lvm`, their content, and rootfs volumes and sizes.

use serde_json::{json, Value};

use super::{ApiError, ApiResult, Sim};

pub(super) const STORAGES: &[&str] = &["local", "local-lvm"];

/// `STORAGE:SIZE`, a bare size (default storage), or an existing volume name.
pub(super) fn parse_rootfs_volume(volume: &str, default_storage: &str) -> (String, Option<f64>) {
    if let Ok(size) = volume.parse::<f64>() {
        return (default_storage.to_string(), Some(size));
    }
    match volume.split_once(':') {
        Some((storage, rest)) => (storage.to_string(), rest.parse::<f64>().ok()),
        None => (default_storage.to_string(), None),
    }
}

/// `PVE::JSONSchema::parse_size`: `\d+(\.\d+)?[KMGT]?`, a bare number in bytes.
pub(super) fn size_bytes_exact(size: &str) -> Option<u64> {
    let (number, unit) = size.split_at(size.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(size.len()));
    let value: f64 = number.parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
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

/// `PVE::JSONSchema::format_size`: the largest unit that divides the size.
pub(super) fn print_size(bytes: u64) -> String {
    for (unit, factor) in [("T", 1u64 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

/// A config `size=` value (a bare number in GiB).
pub(super) fn size_bytes(size: &str) -> u64 {
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

impl Sim {
    pub(crate) fn storage_content(&self, storage: &str, content: Option<&str>, vmid: Option<u32>) -> ApiResult<Value> {
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
                        json!({"volid": volume, "content": "rootdir", "format": "raw", "size": ct.volume_bytes, "vmid": id}),
                    );
                }
            }
        }
        Ok(Value::Array(items))
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
        assert_eq!(size_bytes_exact("10G"), Some(10 << 30));
        assert_eq!(size_bytes_exact("1024"), Some(1024));
        assert_eq!(size_bytes_exact("1X"), None);
        assert_eq!(print_size(12 << 30), "12G");
        assert_eq!(print_size((4 << 30) + (512 << 20)), "4608M");
    }
}
