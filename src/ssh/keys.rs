use std::fmt;
use std::sync::Arc;

use rand::RngCore;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey};

use super::SshError;

/// The controller's SSH identity.
///
/// Cloning is cheap and shares the key. `Debug` shows the public fingerprint only,
/// so the private key cannot leak through logs or error messages.
#[derive(Clone)]
pub struct SshKeyPair {
    private: Arc<PrivateKey>,
}

impl SshKeyPair {
    /// A fresh ed25519 key pair whose public half carries `comment`.
    pub fn generate(comment: &str) -> Self {
        let mut seed = [0u8; 32];
        // rand's thread RNG is a CSPRNG seeded from the OS; ssh-key wants a newer
        // rand_core than the one this crate uses, so the seed is drawn here.
        rand::rng().fill_bytes(&mut seed);
        let mut private = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        seed.fill(0);
        private.set_comment(comment);
        Self { private: Arc::new(private) }
    }

    /// Loads an unencrypted private key in OpenSSH PEM format
    /// (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub fn from_openssh_pem(pem: &str) -> Result<Self, SshError> {
        let private = PrivateKey::from_openssh(pem.trim()).map_err(SshError::InvalidKey)?;
        if private.is_encrypted() {
            return Err(SshError::InvalidKey(russh::keys::ssh_key::Error::Encrypted));
        }
        Ok(Self { private: Arc::new(private) })
    }

    /// The private key in OpenSSH PEM format, for storing in a Secret.
    pub fn private_key_pem(&self) -> Result<String, SshError> {
        let pem = self.private.to_openssh(LineEnding::LF).map_err(SshError::KeyEncoding)?;
        Ok(pem.as_str().to_owned())
    }

    /// The `authorized_keys` line: `ssh-ed25519 AAAA... comment`.
    pub fn public_key_line(&self) -> Result<String, SshError> {
        self.private.public_key().to_openssh().map_err(SshError::KeyEncoding)
    }

    /// `SHA256:<base64>` of the public key, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.private.public_key())
    }

    pub(crate) fn private_key(&self) -> Arc<PrivateKey> {
        Arc::clone(&self.private)
    }
}

impl fmt::Debug for SshKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshKeyPair")
            .field("algorithm", &self.private.algorithm().as_str())
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// `SHA256:<base64 without padding>`, exactly as OpenSSH prints fingerprints.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_through_pem() {
        let pair = SshKeyPair::generate("infrahaus-operator");
        let pem = pair.private_key_pem().expect("encode");
        assert!(pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        assert!(pem.trim_end().ends_with("-----END OPENSSH PRIVATE KEY-----"));

        let loaded = SshKeyPair::from_openssh_pem(&pem).expect("load");
        assert_eq!(loaded.fingerprint(), pair.fingerprint());
        assert_eq!(loaded.public_key_line().expect("line"), pair.public_key_line().expect("line"));
    }

    /// The fingerprint of an `authorized_keys`-style line.
    fn fingerprint_of_line(line: &str) -> String {
        fingerprint(&PublicKey::from_openssh(line.trim()).expect("parse"))
    }

    #[test]
    fn public_key_line_has_type_key_and_comment() {
        let pair = SshKeyPair::generate("infrahaus-operator@cluster");
        let line = pair.public_key_line().expect("line");
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 3, "{line}");
        assert_eq!(fields[0], "ssh-ed25519");
        assert!(fields[1].starts_with("AAAAC3NzaC1lZDI1NTE5"), "{line}");
        assert_eq!(fields[2], "infrahaus-operator@cluster");
        assert_eq!(fingerprint_of_line(&line), pair.fingerprint());
    }

    #[test]
    fn two_generated_keys_differ() {
        let a = SshKeyPair::generate("a");
        let b = SshKeyPair::generate("a");
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        // Expected values printed by `ssh-keygen -lf` for these keys.
        let cases = [
            (
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDKovpCCgJzDZcMuWVEyl3U9W1hgjTyQYBdebKsyvfNK test",
                "SHA256:1q5RZRl7XCOgQgfKKRB7j05grjHF/4zxMfflqk8sLng",
            ),
            (
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDKovpCCgJzDZcMuWVEyl3U9W1hgjTyQYBdebKsyvfNK",
                "SHA256:1q5RZRl7XCOgQgfKKRB7j05grjHF/4zxMfflqk8sLng",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(fingerprint_of_line(line), expected);
        }
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let pair = SshKeyPair::generate("x");
        let pem = pair.private_key_pem().expect("encode");
        let debug = format!("{pair:?}");
        assert!(debug.contains(&pair.fingerprint()), "{debug}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
        let body: String = pem.lines().nth(1).unwrap_or_default().chars().take(20).collect();
        assert!(!debug.contains(&body), "{debug}");
    }

    #[test]
    fn garbage_is_rejected_with_invalid_key() {
        for input in ["", "not a key", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"] {
            let result = SshKeyPair::from_openssh_pem(input);
            assert!(matches!(result, Err(SshError::InvalidKey(_))), "{input:?}");
        }
    }
}
