//! The controller's SSH identity: an ed25519 key pair in the Secret
//! `infrahaus-ssh-key` of its own namespace, generated on first start.
//!
//! By default the Secret outlives the controller, as cert-manager's
//! certificate Secrets do: every guest trusts this key, and a controller
//! installed again (a new release, a moved Deployment) must still reach them.
//! With an owner (`--ssh-key-owner`, the chart's `sshKey.deleteWithRelease`)
//! the Secret carries an owner reference to the controller's Deployment and
//! is garbage-collected with it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};

use crate::k8s;
use crate::ssh::SshKeyPair;

pub(crate) const SECRET_NAME: &str = "infrahaus-ssh-key";
const PRIVATE_KEY: &str = "ssh-privatekey";
const PUBLIC_KEY: &str = "ssh-publickey";

#[derive(Debug, thiserror::Error)]
pub(crate) enum SshKeyError {
    #[error("reading or writing Secret {SECRET_NAME}: {0}")]
    Kube(#[from] kube::Error),
    #[error("Secret {SECRET_NAME} holds no usable {PRIVATE_KEY}: {0}")]
    Invalid(String),
    #[error("the SSH key's owner, Deployment {0}, does not exist in the controller's namespace")]
    NoOwner(String),
}

/// An owner reference to the Deployment `name`, which must exist.
async fn owner_reference(client: &kube::Client, namespace: &str, name: &str) -> Result<OwnerReference, SshKeyError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments.get_opt(name).await?.ok_or_else(|| SshKeyError::NoOwner(name.to_owned()))?;
    // Not the Secret's controller: the Deployment manages no Secrets.
    deployment.owner_ref(&()).ok_or_else(|| SshKeyError::NoOwner(name.to_owned()))
}

/// Loads the key pair, creating the Secret if it does not exist yet, owned
/// by the Deployment `owner` when one is named (an existing Secret gets the
/// reference added). Two replicas starting at once both end up with the one
/// that was stored first.
pub(crate) async fn ensure(
    client: kube::Client,
    namespace: &str,
    owner: Option<&str>,
) -> Result<SshKeyPair, SshKeyError> {
    let owner = match owner {
        Some(name) => Some(owner_reference(&client, namespace, name).await?),
        None => None,
    };
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    for _ in 0..2 {
        if let Some(secret) = secrets.get_opt(SECRET_NAME).await? {
            let owned = |o: &OwnerReference| secret.owner_references().iter().any(|r| r.uid == o.uid);
            if let Some(owner) = owner.as_ref().filter(|o| !owned(o)) {
                let mut references = secret.owner_references().to_vec();
                references.push(owner.clone());
                let patch = serde_json::json!({"metadata": {"ownerReferences": references}});
                secrets.patch(SECRET_NAME, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
            let pem = k8s::secret_key(&secret, PRIVATE_KEY)
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .ok_or_else(|| SshKeyError::Invalid("key missing".into()))?;
            return SshKeyPair::from_openssh_pem(&pem).map_err(|e| SshKeyError::Invalid(e.to_string()));
        }
        let pair = SshKeyPair::generate("infrahaus-operator");
        let private = pair.private_key_pem().map_err(|e| SshKeyError::Invalid(e.to_string()))?;
        let public = pair.public_key_line().map_err(|e| SshKeyError::Invalid(e.to_string()))?;
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(SECRET_NAME.into()),
                labels: Some(k8s::managed_labels()),
                owner_references: owner.clone().map(|o| vec![o]),
                ..Default::default()
            },
            type_: Some("kubernetes.io/ssh-auth".into()),
            string_data: Some(BTreeMap::from([(PRIVATE_KEY.to_string(), private), (PUBLIC_KEY.to_string(), public)])),
            ..Default::default()
        };
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(pair),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(SshKeyError::Invalid("Secret was created and removed concurrently".into()))
}
