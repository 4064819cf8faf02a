//! The CRDs in a real API server: their CEL rules compile, bad manifests are
//! rejected at apply time with a readable message, and immutable fields stay put.

use std::time::Duration;

use anyhow::{Context as _, Result};
use infrahaus_operator::crd::{self, Container, ContainerTemplate, ProxmoxNode};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::Resource;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

const MANAGER: &str = "infrahaus-crd-tests";

async fn install_crds(client: &kube::Client) -> Result<()> {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_try_init(|| async {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in crd::crds() {
            let name = crd.metadata.name.clone().context("CRD without a name")?;
            crds.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd))
                .await
                .with_context(|| format!("installing CRD {name}"))?;
            tokio::time::timeout(
                Duration::from_secs(30),
                await_condition(crds.clone(), &name, conditions::is_crd_established()),
            )
            .await
            .with_context(|| format!("CRD {name} not established in time"))??;
        }
        anyhow::Ok(())
    })
    .await?;
    Ok(())
}

struct Cluster {
    client: kube::Client,
    ns: String,
}

impl Cluster {
    async fn new(prefix: &str) -> Result<Self> {
        let client = testbed::kube().await?.client().await?;
        install_crds(&client).await?;
        let ns = testbed::unique_namespace(&client, prefix).await?;
        Ok(Self { client, ns })
    }

    fn api<K: Resource<DynamicType = ()>>(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &ApiResource::erase::<K>(&()))
    }

    fn api_for(&self, kind: &str) -> Api<DynamicObject> {
        match kind {
            "ProxmoxNode" => self.api::<ProxmoxNode>(),
            "ContainerTemplate" => self.api::<ContainerTemplate>(),
            _ => self.api::<Container>(),
        }
    }

    async fn create(&self, manifest: Value) -> Result<DynamicObject, kube::Error> {
        let kind = manifest["kind"].as_str().unwrap_or_default().to_string();
        let object: DynamicObject = serde_json::from_value(manifest).expect("test manifest is an object");
        self.api_for(&kind).create(&PostParams::default(), &object).await
    }
}

fn container(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "infrahaus.io/v1alpha1", "kind": "Container", "metadata": {"name": name}, "spec": spec})
}

fn node(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "infrahaus.io/v1alpha1", "kind": "ProxmoxNode", "metadata": {"name": name}, "spec": spec})
}

fn template(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "infrahaus.io/v1alpha1", "kind": "ContainerTemplate", "metadata": {"name": name}, "spec": spec})
}

fn node_spec(extra: Value) -> Value {
    let mut spec =
        json!({"endpoint": "https://127.0.0.1:8006", "nodeName": "pve1", "tokenSecretRef": {"name": "pve1-token"}});
    merge(&mut spec, extra);
    spec
}

fn container_spec(extra: Value) -> Value {
    let mut spec = json!({"nodeRef": {"name": "pve1"}});
    merge(&mut spec, extra);
    spec
}

fn template_spec(extra: Value) -> Value {
    let mut spec = json!({"osTemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"});
    merge(&mut spec, extra);
    spec
}

fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
}

/// The API server's message for a rejected request, or a note that it was accepted.
fn rejection(result: Result<DynamicObject, kube::Error>) -> String {
    match result {
        Ok(_) => "<accepted>".to_string(),
        Err(kube::Error::Api(status)) => format!("{} ({})", status.message, status.code),
        Err(other) => format!("<unexpected error: {other}>"),
    }
}

#[tokio::test]
async fn valid_manifests_are_accepted() -> Result<()> {
    let cluster = Cluster::new("crd-valid").await?;
    let manifests = [
        node("pve1", node_spec(json!({}))),
        node(
            "pve2",
            node_spec(json!({
                "endpoint": "https://pve2.example.com:8006/",
                "tls": {"fingerprint": "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89",
                        "caBundle": "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"},
                "maxConcurrentOperations": 4
            })),
        ),
        node("pve3", node_spec(json!({"tls": {"insecureSkipVerify": true}}))),
        template(
            "web",
            template_spec(json!({
                "defaults": {"cores": 1, "memoryMiB": 512, "swapMiB": 512, "diskGiB": 8, "storage": "local-lvm"},
                "packages": ["nginx", "curl", "libc6:amd64", "g++"],
                "files": [
                    {"path": "/etc/nginx/conf.d/app.conf", "content": "server {}", "mode": "0644"},
                    {"path": "/etc/app/secret", "contentFrom": {"secretKeyRef": {"name": "app", "key": "token"}}, "mode": "600"},
                ],
                "scripts": [{"name": "10-setup.sh", "content": "#!/bin/bash\ntrue\n", "timeoutSeconds": 60}, {"name": "20-more.sh", "content": "true", "enabled": false}],
            })),
        ),
        container(
            "web-1",
            container_spec(json!({
                "templateRef": {"name": "web"}, "vmid": 120, "hostname": "web-1",
                "osTemplate": "local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz",
                "resources": {"cores": 2, "memoryMiB": 16, "diskGiB": 8},
                "network": {"bridge": "vmbr0", "ipv4": "192.0.2.10/24", "gateway": "192.0.2.1", "nameservers": ["192.0.2.53", "2001:db8::53"]},
                "rootPasswordSecretRef": {"name": "web-1-root", "key": "password"},
                "sshPublicKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0= user@host"],
                "unprivileged": true, "features": {"nesting": true}, "startOnBoot": true, "tags": ["web", "prod_1"],
                "deletionPolicy": "Retain",
            })),
        ),
        container("web-2", container_spec(json!({"network": {"ipv4": "dhcp"}}))),
        container("web.example.com", container_spec(json!({"hostname": "web-3", "vmid": 999999999}))),
    ];
    for manifest in manifests {
        let name = manifest["metadata"]["name"].clone();
        let outcome = rejection(cluster.create(manifest).await);
        assert_eq!(outcome, "<accepted>", "{name} should be accepted");
    }

    let api = cluster.api::<Container>();
    let defaulted = api.get("web-2").await?;
    assert_eq!(defaulted.data["spec"]["unprivileged"], json!(true), "unprivileged defaults to true");
    assert_eq!(defaulted.data["spec"]["deletionPolicy"], json!("Delete"), "deletionPolicy defaults to Delete");
    Ok(())
}

#[tokio::test]
async fn bad_manifests_are_rejected_with_readable_messages() -> Result<()> {
    let cluster = Cluster::new("crd-bad").await?;
    let cases = [
        ("bad hostname", container("c1", container_spec(json!({"hostname": "Web_1"}))), "hostname must be a DNS label"),
        ("hostname too long", container("c2", container_spec(json!({"hostname": "a".repeat(64)}))), "spec.hostname"),
        (
            "name not a hostname",
            container("web.example.com", container_spec(json!({}))),
            "metadata.name is not a valid hostname",
        ),
        ("vmid too small", container("c3", container_spec(json!({"vmid": 99}))), "greater than or equal to 100"),
        (
            "vmid too large",
            container("c4", container_spec(json!({"vmid": 1_000_000_000}))),
            "less than or equal to 999999999",
        ),
        (
            "memory under 16",
            container("c5", container_spec(json!({"resources": {"memoryMiB": 8}}))),
            "greater than or equal to 16",
        ),
        (
            "malformed CIDR",
            container("c6", container_spec(json!({"network": {"ipv4": "192.0.2.300/24"}}))),
            "ipv4 must be 'dhcp' or an IPv4 address",
        ),
        (
            "address without prefix",
            container("c7", container_spec(json!({"network": {"ipv4": "192.0.2.10"}}))),
            "ipv4 must be 'dhcp' or an IPv4 address",
        ),
        (
            "prefix too long",
            container("c8", container_spec(json!({"network": {"ipv4": "192.0.2.10/33"}}))),
            "ipv4 must be 'dhcp' or an IPv4 address",
        ),
        (
            "gateway with dhcp",
            container("c9", container_spec(json!({"network": {"ipv4": "dhcp", "gateway": "192.0.2.1"}}))),
            "gateway is only allowed with a static ipv4 address",
        ),
        (
            "gateway without ipv4",
            container("c10", container_spec(json!({"network": {"gateway": "192.0.2.1"}}))),
            "gateway is only allowed with a static ipv4 address",
        ),
        (
            "bad nameserver",
            container("c11", container_spec(json!({"network": {"nameservers": ["dns.example.com"]}}))),
            "nameservers must be IP addresses",
        ),
        (
            "unknown deletion policy",
            container("c12", container_spec(json!({"deletionPolicy": "Destroy"}))),
            "Unsupported value: \"Destroy\"",
        ),
        ("bad tag", container("c13", container_spec(json!({"tags": ["Web Server"]}))), "tags must be Proxmox tags"),
        (
            "bad ssh key",
            container("c14", container_spec(json!({"sshPublicKeys": ["not a key"]}))),
            "sshPublicKeys must be single-line OpenSSH public keys",
        ),
        ("missing nodeRef", container("c15", json!({})), "spec.nodeRef: Required value"),
        (
            "bad osTemplate",
            container("c16", container_spec(json!({"osTemplate": "debian-12.tar.zst"}))),
            "osTemplate must be a template volume",
        ),
        (
            "http endpoint",
            node("n1", node_spec(json!({"endpoint": "http://pve1.example.com:8006"}))),
            "endpoint must be an https:// URL",
        ),
        (
            "bad fingerprint",
            node("n2", node_spec(json!({"tls": {"fingerprint": "AB:CD"}}))),
            "fingerprint must be a SHA-256 fingerprint",
        ),
        (
            "insecure with pin",
            node("n3", node_spec(json!({"tls": {"insecureSkipVerify": true, "fingerprint": "ab".repeat(32)}}))),
            "insecureSkipVerify cannot be combined with caBundle or fingerprint",
        ),
        ("zero operations", node("n4", node_spec(json!({"maxConcurrentOperations": 0}))), "greater than or equal to 1"),
        (
            "relative file path",
            template("t1", template_spec(json!({"files": [{"path": "etc/app.conf", "content": "x"}]}))),
            "path must be an absolute file path",
        ),
        (
            "file path with ..",
            template(
                "t2",
                template_spec(json!({"files": [{"path": "/etc/../root/.ssh/authorized_keys", "content": "x"}]})),
            ),
            "path must be an absolute file path",
        ),
        (
            "file without content",
            template("t3", template_spec(json!({"files": [{"path": "/etc/app.conf"}]}))),
            "a file needs exactly one of content or contentFrom",
        ),
        (
            "file with both contents",
            template(
                "t4",
                template_spec(
                    json!({"files": [{"path": "/etc/app.conf", "content": "x", "contentFrom": {"configMapKeyRef": {"name": "a", "key": "b"}}}]}),
                ),
            ),
            "a file needs exactly one of content or contentFrom",
        ),
        (
            "non-octal mode",
            template(
                "t5",
                template_spec(json!({"files": [{"path": "/etc/app.conf", "content": "x", "mode": "0999"}]})),
            ),
            "mode must be an octal permission string",
        ),
        (
            "duplicate file path",
            template(
                "t6",
                template_spec(
                    json!({"files": [{"path": "/etc/a", "content": "x"}, {"path": "/etc/a", "content": "y"}]}),
                ),
            ),
            "Duplicate value",
        ),
        (
            "script timeout zero",
            template(
                "t7",
                template_spec(json!({"scripts": [{"name": "a.sh", "content": "true", "timeoutSeconds": 0}]})),
            ),
            "greater than or equal to 1",
        ),
        (
            "script timeout too long",
            template(
                "t8",
                template_spec(json!({"scripts": [{"name": "a.sh", "content": "true", "timeoutSeconds": 86401}]})),
            ),
            "less than or equal to 86400",
        ),
        (
            "script name with slash",
            template("t9", template_spec(json!({"scripts": [{"name": "../a.sh", "content": "true"}]}))),
            "script name must be a file name",
        ),
        (
            "endpoint with user info",
            node("n5", node_spec(json!({"endpoint": "https://root:hunter2@pve1.example.com:8006"}))),
            "endpoint must not hold user info",
        ),
        (
            "nameserver of two colons",
            container("c20", container_spec(json!({"network": {"nameservers": ["::"]}}))),
            "nameservers must be IP addresses",
        ),
        (
            "nameserver of three colons",
            container("c21", container_spec(json!({"network": {"nameservers": [":::"]}}))),
            "nameservers must be IP addresses",
        ),
        (
            "file path with a . component",
            template("t11", template_spec(json!({"files": [{"path": "/etc/./app.conf", "content": "x"}]}))),
            "without '.' or '..' components",
        ),
        (
            "package with a version pin",
            template("t12", template_spec(json!({"packages": ["nginx=1.22.1-9"]}))),
            "version pins are not supported",
        ),
        (
            "package with a tilde pin",
            template("t13", template_spec(json!({"packages": ["musl~1.2"]}))),
            "packages must be plain package names",
        ),
        (
            "package with shell",
            template("t10", template_spec(json!({"packages": ["nginx; rm -rf /"]}))),
            "packages must be plain package names",
        ),
    ];
    let mut failures = Vec::new();
    for (case, manifest, expected) in cases {
        let outcome = rejection(cluster.create(manifest).await);
        if !outcome.contains(expected) {
            failures.push(format!("{case}: expected a rejection containing {expected:?}, got {outcome}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    Ok(())
}

#[tokio::test]
async fn immutable_fields_cannot_change() -> Result<()> {
    let cluster = Cluster::new("crd-immutable").await?;
    let api = cluster.api::<Container>();
    let pinned = container_spec(json!({
        "vmid": 150, "osTemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", "resources": {"cores": 1},
    }));
    cluster.create(container("pinned", pinned)).await?;
    cluster.create(container("allocated", container_spec(json!({})))).await?;

    let cases = [
        ("pinned", "nodeRef", json!({"spec": {"nodeRef": {"name": "pve2"}}}), "nodeRef is immutable"),
        ("pinned", "vmid", json!({"spec": {"vmid": 151}}), "vmid is immutable"),
        ("pinned", "vmid removed", json!({"spec": {"vmid": null}}), "vmid is immutable"),
        ("allocated", "vmid added", json!({"spec": {"vmid": 152}}), "vmid is immutable"),
        (
            "pinned",
            "osTemplate",
            json!({"spec": {"osTemplate": "local:vztmpl/alpine.tar.xz"}}),
            "osTemplate is immutable",
        ),
        (
            "allocated",
            "osTemplate added",
            json!({"spec": {"osTemplate": "local:vztmpl/alpine.tar.xz"}}),
            "osTemplate is immutable",
        ),
        ("pinned", "unprivileged", json!({"spec": {"unprivileged": false}}), "unprivileged is immutable"),
        ("pinned", "mutable resources", json!({"spec": {"resources": {"cores": 4}}}), "<accepted>"),
        ("pinned", "mutable tags", json!({"spec": {"tags": ["web"]}}), "<accepted>"),
    ];
    let mut failures = Vec::new();
    for (name, case, patch, expected) in cases {
        let outcome = rejection(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await);
        if !outcome.contains(expected) {
            failures.push(format!("{case}: expected {expected:?}, got {outcome}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    Ok(())
}
