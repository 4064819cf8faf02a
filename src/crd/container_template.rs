use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::refs::KeyRef;

/// What goes into a container: OS template, sizing defaults, packages, files and scripts.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrahaus.io",
    version = "v1alpha1",
    kind = "ContainerTemplate",
    namespaced,
    shortname = "ctt",
    category = "infrahaus",
    doc = "What goes into a container: OS template, sizing defaults, packages, files and scripts.",
    printcolumn(name = "OS Template", type_ = "string", json_path = ".spec.osTemplate"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ContainerTemplateSpec {
    /// Proxmox volume of the OS template, e.g. `local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`.
    #[schemars(length(min = 1, max = 255))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[A-Za-z][A-Za-z0-9_.-]*:vztmpl/[^\\\\s]+$')",
        "message": "osTemplate must be a template volume such as local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
    }]))]
    pub os_template: String,

    /// Sizing used by Containers that do not set their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<Resources>,

    /// Packages installed with the container's package manager during Sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 128)))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(p, p.matches('^[A-Za-z0-9][A-Za-z0-9+._:-]*$'))",
        "message": "packages must be plain package names (letters, digits and + . _ : -); version pins are not supported"
    }]))]
    pub packages: Vec<String>,

    /// Files written into the container during Deploy, parent directories created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["path"]))]
    pub files: Vec<TemplateFile>,

    /// Scripts run with bash during Sync, in list order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub scripts: Vec<TemplateScript>,
}

/// CPU, memory and disk of a container. Unset fields fall back to the template's
/// defaults, then to Proxmox's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Number of CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8192))]
    pub cores: Option<i32>,

    /// Memory in MiB; at least 16.
    #[serde(default, rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 16, max = 268435456))]
    pub memory_mib: Option<i64>,

    /// Swap in MiB.
    #[serde(default, rename = "swapMiB", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 268435456))]
    pub swap_mib: Option<i64>,

    /// Size of the root disk in GiB.
    #[serde(default, rename = "diskGiB", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 131072))]
    pub disk_gib: Option<i32>,

    /// Proxmox storage that holds the root disk, e.g. `local-lvm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[A-Za-z][A-Za-z0-9_.-]*$')",
        "message": "storage must be a Proxmox storage id such as local-lvm"
    }]))]
    pub storage: Option<String>,
}

/// A file written into the container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.content) != has(self.contentFrom)",
    "message": "a file needs exactly one of content or contentFrom"
}]))]
pub struct TemplateFile {
    /// Absolute path inside the container.
    #[schemars(length(min = 2, max = 4096))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.startsWith('/') && !self.endsWith('/') && !self.matches('(^|/)\\\\.\\\\.?(/|$)')",
        "message": "path must be an absolute file path without '.' or '..' components"
    }]))]
    pub path: String,

    /// The file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1048576))]
    pub content: Option<String>,

    /// Where to read the file's content from instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_from: Option<FileContentSource>,

    /// Octal permission bits, e.g. `0644` (the default) or `0600`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 4))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[0-7]{3,4}$')",
        "message": "mode must be an octal permission string such as 0644"
    }]))]
    pub mode: Option<String>,
}

/// The source of a file's content: one key of a ConfigMap or of a Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.configMapKeyRef) != has(self.secretKeyRef)",
    "message": "contentFrom needs exactly one of configMapKeyRef or secretKeyRef"
}]))]
pub struct FileContentSource {
    /// A key of a ConfigMap in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,

    /// A key of a Secret in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
}

/// A script run with bash during Sync.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateScript {
    /// File name of the script, also used in events and errors, e.g. `10-setup.sh`.
    #[schemars(length(min = 1, max = 128))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[A-Za-z0-9][A-Za-z0-9._-]*$')",
        "message": "script name must be a file name: letters, digits and . _ -"
    }]))]
    pub name: String,

    /// The script's source.
    #[schemars(length(min = 1, max = 1048576))]
    pub content: String,

    /// Disabled scripts are skipped.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// How long the script may run before it is a failure.
    #[serde(default = "default_script_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: i32,
}

fn default_true() -> bool {
    true
}

fn default_script_timeout() -> i32 {
    600
}
