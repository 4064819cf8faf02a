//! The custom resources of `infrahaus.io/v1alpha1`: their Rust types, the
//! condition helpers, and the generated CRD manifests.

pub mod conditions;
mod container;
mod container_template;
mod proxmox_node;
mod refs;

pub use container::{
    Container, ContainerNetwork, ContainerSpec, ContainerStatus, DeletionPolicy, Features, ListeningPort, Phase,
    PortProtocol, PowerState, RestartPolicy, StageName, StageState, StageStatus, TemplateSync,
    ACCEPT_HOST_KEY_ANNOTATION, RETRY_ANNOTATION,
};
pub use container_template::{
    ContainerTemplate, ContainerTemplateSpec, FileContentSource, Resources, TemplateFile, TemplateScript,
};
pub use proxmox_node::{ProxmoxNode, ProxmoxNodeSpec, ProxmoxNodeStatus, TlsConfig};
pub use refs::{KeyRef, ObjectRef};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every kind defined here.
pub const GROUP: &str = "infrahaus.io";

/// The CRDs in a stable order: referenced kinds first.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![ProxmoxNode::crd(), ContainerTemplate::crd(), Container::crd()]
}

/// The file under `crds/` that holds a CRD, named after its resource name.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.spec.names.plural)
}

/// One CRD as YAML, exactly as committed under `crds/`.
pub fn crd_document(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(crd)
}

/// All CRDs as one multi-document YAML stream, as printed by `infrahaus-operator crds`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&crd_document(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const REGENERATE: &str = "cargo run -p infrahaus-operator -- crds --output-dir crds";

    #[test]
    fn crds_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        for crd in crds() {
            let name = crd_file_name(&crd);
            let generated = crd_document(&crd).expect("CRD serialises to YAML");
            let committed = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            assert!(committed == generated, "crds/{name} is stale or missing; regenerate with `{REGENERATE}`");
        }
    }

    #[test]
    fn schemas_have_no_unsigned_integer_formats() {
        let yaml = crd_yaml().expect("CRDs serialise to YAML");
        for bad in ["uint8", "uint16", "uint32", "uint64", "uint"] {
            assert!(!yaml.contains(&format!("format: {bad}\n")), "the API server rejects format {bad}");
        }
    }

    #[test]
    fn every_kind_is_namespaced_in_the_group_with_its_short_name() {
        let expected = [
            ("proxmoxnodes", "ProxmoxNode", "pxn"),
            ("containertemplates", "ContainerTemplate", "ctt"),
            ("containers", "Container", "ct"),
        ];
        let crds = crds();
        assert_eq!(crds.len(), expected.len());
        for (crd, (plural, kind, short)) in crds.iter().zip(expected) {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(crd.spec.names.plural, plural);
            assert_eq!(crd.spec.names.kind, kind);
            assert_eq!(crd.spec.names.short_names.as_deref(), Some(&[short.to_string()][..]));
            assert_eq!(crd.spec.versions.len(), 1);
            assert_eq!(crd.spec.versions[0].name, "v1alpha1");
        }
    }
}
