//! The node's HTTPS identity: a self-signed certificate like `pve-ssl.pem`, or one given on the command line.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

pub(crate) struct Identity {
    pub(crate) cert_pem: String,
    pub(crate) fingerprint: String,
    pub(crate) server_config: Arc<rustls::ServerConfig>,
}

/// Uppercase, colon-separated SHA-256 of the DER certificate, as the PVE GUI shows it.
fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

pub(crate) fn self_signed(node: &str) -> Result<(String, String)> {
    let names = vec![node.to_string(), "localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).context("generate self-signed certificate")?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

pub(crate) fn identity(cert_pem: String, key_pem: &str) -> Result<Identity> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("parse certificate PEM")?;
    let leaf = certs.first().context("no certificate in PEM")?;
    let fingerprint = fingerprint(leaf.as_ref());
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("parse private key PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS server certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Identity { cert_pem, fingerprint, server_config: Arc::new(config) })
}

pub(crate) fn load(cert: &Path, key: &Path) -> Result<Identity> {
    let cert_pem = std::fs::read_to_string(cert).with_context(|| format!("read {}", cert.display()))?;
    let key_pem = std::fs::read_to_string(key).with_context(|| format!("read {}", key.display()))?;
    identity(cert_pem, &key_pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_uppercase_colon_separated_sha256() {
        let fp = fingerprint(b"abc");
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.starts_with("BA:78:16:BF:8F:01:CF:EA"));
    }

    #[test]
    fn self_signed_identity_builds() {
        let (cert, key) = self_signed("pve1").expect("generates");
        let identity = identity(cert, &key).expect("loads");
        assert_eq!(identity.fingerprint.split(':').count(), 32);
    }
}
