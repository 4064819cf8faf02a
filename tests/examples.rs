//! The manifests in `examples/`: they parse into the operator's types, their
//! scripts are valid bash, their addresses obey the loopback rule, and the
//! API server accepts every one of them (server-side dry-run).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use infrahaus_operator::crd::{Container, ContainerTemplate, ProxmoxNode};
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use serde_json::{json, Value};

const FILES: [&str; 5] = [
    "proxmoxnode.yaml",
    "containertemplate-web.yaml",
    "container-dhcp.yaml",
    "container-static.yaml",
    "argocd-application.yaml",
];

fn examples_dir() -> PathBuf {
    testbed::repo_root().join("examples")
}

fn documents(file: &str) -> Vec<Value> {
    let path = examples_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap_or_else(|e| panic!("{file}: {e}")))
        .filter(|document| !document.is_null())
        .collect()
}

#[test]
fn every_example_is_listed() {
    let mut found: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("examples/")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    found.sort();
    let mut listed: Vec<String> = FILES.iter().map(|f| f.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed);
}

#[test]
fn examples_parse_into_the_operator_types() {
    let mut kinds = Vec::new();
    for file in FILES {
        for document in documents(file) {
            let kind = document["kind"].as_str().unwrap_or_default().to_string();
            match kind.as_str() {
                "Secret" => {
                    let secret: Secret = serde_json::from_value(document).expect(file);
                    let data = secret.string_data.expect("stringData");
                    assert!(data.contains_key("tokenId") && data.contains_key("secret"), "{file}");
                }
                "ProxmoxNode" => {
                    serde_json::from_value::<ProxmoxNode>(document).expect(file);
                }
                "ContainerTemplate" => {
                    serde_json::from_value::<ContainerTemplate>(document).expect(file);
                }
                "Container" => {
                    serde_json::from_value::<Container>(document).expect(file);
                }
                "Application" => {
                    assert_eq!(document["apiVersion"], "argoproj.io/v1alpha1", "{file}");
                    assert_eq!(document["spec"]["source"]["path"], "examples", "{file}");
                }
                other => panic!("{file}: unexpected kind {other}"),
            }
            kinds.push(kind);
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["Application", "Container", "Container", "ContainerTemplate", "ProxmoxNode", "Secret"]);
}

#[test]
fn template_scripts_are_valid_bash() {
    let template: ContainerTemplate =
        serde_json::from_value(documents("containertemplate-web.yaml").remove(0)).expect("template");
    assert!(!template.spec.scripts.is_empty());
    for script in &template.spec.scripts {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), &script.content).expect("write script");
        let out = Command::new("bash").arg("-n").arg(file.path()).output().expect("run bash -n");
        assert!(out.status.success(), "{}: {}", script.name, String::from_utf8_lossy(&out.stderr));
        assert!(!script.content.contains("0.0.0.0"), "{} binds every interface", script.name);
    }
}

#[test]
fn example_addresses_are_loopback() {
    for file in ["container-dhcp.yaml", "container-static.yaml"] {
        let container: Container = serde_json::from_value(documents(file).remove(0)).expect(file);
        let network = container.spec.network.expect("network");
        for address in [network.ipv4.as_deref(), network.gateway.as_deref()].into_iter().flatten() {
            if address == "dhcp" {
                continue;
            }
            let ip: std::net::Ipv4Addr = address.split('/').next().unwrap_or_default().parse().expect(file);
            assert!(ip.is_loopback(), "{file}: {address} is not a loopback address");
        }
    }
}

/// Argo CD's Application CRD reduced to what a dry-run needs: the kind, its
/// names and an open schema.
fn application_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "applications.argoproj.io"},
        "spec": {
            "group": "argoproj.io",
            "scope": "Namespaced",
            "names": {"kind": "Application", "plural": "applications", "singular": "application", "listKind": "ApplicationList"},
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    })
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    Command::new("kubectl").args(args).arg("--kubeconfig").arg(kubeconfig).output().expect("run kubectl")
}

#[tokio::test]
async fn the_api_server_accepts_every_example() {
    let kube = testbed::kube().await.expect("test bed");
    let client = kube.client().await.expect("client");
    support::install_crds(&client).await.expect("CRDs");
    let ns = testbed::unique_namespace(&client, "examples").await.expect("namespace");

    let crd = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(crd.path(), serde_json::to_vec(&application_crd()).expect("json")).expect("write CRD");
    let crd_path = crd.path().to_string_lossy().into_owned();
    let out = kubectl(&kube.kubeconfig, &["apply", "--server-side", "-f", &crd_path]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kubectl(
        &kube.kubeconfig,
        &["wait", "--for=condition=Established", "--timeout=30s", "crd/applications.argoproj.io"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kubectl(&kube.kubeconfig, &["create", "namespace", "argocd"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    for file in FILES {
        let path = examples_dir().join(file).to_string_lossy().into_owned();
        let namespace = if file == "argocd-application.yaml" { "argocd" } else { ns.as_str() };
        let out =
            kubectl(&kube.kubeconfig, &["apply", "--server-side", "--dry-run=server", "-n", namespace, "-f", &path]);
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let applied = String::from_utf8_lossy(&out.stdout);
        assert!(applied.contains("(server dry run)"), "{file}: {applied}");
    }
}
