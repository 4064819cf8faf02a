//! The controller's SSH identity: an ed25519 key pair in the Secret
//! `infrahaus-ssh-key` of its own namespace, generated on first start.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

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
}

/// Loads the key pair, creating the Secret if it does not exist yet. Two
/// replicas starting at once both end up with the one that was stored first.
pub(crate) async fn ensure(client: kube::Client, namespace: &str) -> Result<SshKeyPair, SshKeyError> {
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    for _ in 0..2 {
        if let Some(secret) = secrets.get_opt(SECRET_NAME).await? {
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
