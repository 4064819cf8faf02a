use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::refs::ObjectRef;

/// How to reach one Proxmox VE node through its API.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrahaus.io",
    version = "v1alpha1",
    kind = "ProxmoxNode",
    namespaced,
    status = "ProxmoxNodeStatus",
    shortname = "pxn",
    category = "infrahaus",
    doc = "A Proxmox VE node reached through its HTTPS API with an API token.",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpoint"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
// The lint mistakes the repeated `type_ = "string"` of the printer columns for duplicates.
#[allow(clippy::duplicated_attributes)]
pub struct ProxmoxNodeSpec {
    /// Base URL of the Proxmox VE API, e.g. `https://pve1.example.com:8006`. Must be https.
    #[schemars(length(min = 9, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^https://[^/?#\\\\s]+(/[^\\\\s]*)?$')",
        "message": "endpoint must be an https:// URL such as https://pve1.example.com:8006"
    }, {
        "rule": "!self.matches('^https://[^/?#]*@')",
        "message": "endpoint must not hold user info (user:password@); the token Secret authenticates"
    }]))]
    pub endpoint: String,

    /// Name of the node as Proxmox knows it; used in API paths (`/nodes/{nodeName}/...`).
    #[schemars(length(min = 1, max = 63))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$')",
        "message": "nodeName must be a Proxmox node name: letters, digits and '-'"
    }]))]
    pub node_name: String,

    /// Secret in the same namespace with the keys `tokenId` (`user@realm!name`) and `secret`.
    pub token_secret_ref: ObjectRef,

    /// How the server certificate is verified. Verification against the system
    /// roots is on by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,

    /// Maximum number of create, start and delete operations run on this node at once.
    #[serde(default = "default_max_concurrent_operations")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrent_operations: i32,
}

fn default_max_concurrent_operations() -> i32 {
    2
}

/// Verification of the Proxmox API server certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.insecureSkipVerify) && self.insecureSkipVerify) || (!has(self.caBundle) && !has(self.fingerprint))",
    "message": "insecureSkipVerify cannot be combined with caBundle or fingerprint"
}]))]
pub struct TlsConfig {
    /// PEM-encoded CA certificates trusted instead of the system roots
    /// (for example the cluster CA in `/etc/pve/pve-root-ca.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub ca_bundle: Option<String>,

    /// SHA-256 fingerprint of the server certificate, as shown by Proxmox
    /// (`AB:CD:...`, case-insensitive, colons optional). When set, the certificate
    /// must have this fingerprint instead of chaining to the system roots; with
    /// `caBundle` as well, both must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 95))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$')",
        "message": "fingerprint must be a SHA-256 fingerprint: 32 hex bytes, optionally separated by ':'"
    }]))]
    pub fingerprint: Option<String>,

    /// Accept any server certificate. Only for throwaway labs: the API token is
    /// sent to whoever answers.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Observed state of a ProxmoxNode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxmoxNodeStatus {
    /// `Ready` is True when the API is reachable and the token is accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Proxmox VE version reported by `GET /version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
