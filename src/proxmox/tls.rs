//! How the Proxmox API server's certificate is verified.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::error::Error;

/// Certificate verification settings, as in `ProxmoxNode.spec.tls`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM CA certificates trusted instead of the built-in web PKI roots.
    pub ca_bundle: Option<String>,
    /// SHA-256 pin of the server certificate (`AB:CD:...`, case-insensitive, colons
    /// optional). With a CA bundle as well, both must hold.
    pub fingerprint: Option<String>,
    /// Accept any certificate. Handshake signatures are still checked.
    pub insecure_skip_verify: bool,
}

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Parses `AB:CD:...` or `abcd...`: 32 hex bytes, case-insensitive, colons optional.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let hex_digits: String = text.trim().chars().filter(|c| *c != ':').collect();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&hex_digits, &mut bytes).map_err(|_| {
            Error::Config(format!(
                "tls.fingerprint {text:?} is not a SHA-256 fingerprint (32 hex bytes, e.g. AB:CD:...)"
            ))
        })?;
        Ok(Self(bytes))
    }

    /// The fingerprint of a DER certificate.
    pub fn of_certificate(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        f.write_str(&parts.join(":"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The certificate's fingerprint is not the pinned one.
#[derive(thiserror::Error)]
#[error("server certificate has SHA-256 fingerprint {actual}, but {expected} is pinned")]
struct FingerprintMismatch {
    expected: Fingerprint,
    actual: Fingerprint,
}

// rustls renders the cause of a certificate error with Debug; make that the message.
impl fmt::Debug for FingerprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Checks the leaf certificate against a pinned fingerprint (and, if given, a CA
/// chain), and the handshake signatures against the certificate's key.
#[derive(Debug)]
struct PinnedVerifier {
    pin: Option<Fingerprint>,
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(expected) = self.pin {
            let actual = Fingerprint::of_certificate(end_entity.as_ref());
            if actual != expected {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                    FingerprintMismatch { expected, actual },
                )))));
            }
        }
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn ca_roots(pem: &str) -> Result<RootCertStore, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("tls.caBundle is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config("tls.caBundle holds no certificate".into()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| Error::Config(format!("tls.caBundle holds an unusable certificate: {e}")))?;
    }
    Ok(roots)
}

/// The rustls configuration for a Proxmox API client, with the ring provider chosen
/// explicitly so no process-wide default is needed.
pub(crate) fn client_config(options: &TlsOptions) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS protocol versions: {e}")))?;

    if options.insecure_skip_verify {
        if options.ca_bundle.is_some() || options.fingerprint.is_some() {
            return Err(Error::Config("insecureSkipVerify cannot be combined with caBundle or fingerprint".into()));
        }
        let verifier = PinnedVerifier { pin: None, chain: None, provider };
        return Ok(builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth());
    }

    let roots = match &options.ca_bundle {
        Some(pem) => ca_roots(pem)?,
        None => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
    };
    match &options.fingerprint {
        None => Ok(builder.with_root_certificates(roots).with_no_client_auth()),
        Some(text) => {
            let pin = Fingerprint::parse(text)?;
            let chain = match &options.ca_bundle {
                Some(_) => Some(
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| Error::Config(format!("tls.caBundle: {e}")))?,
                ),
                None => None,
            };
            let verifier = PinnedVerifier { pin: Some(pin), chain, provider };
            Ok(builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256_OF_ABC: &str =
        "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD";

    #[test]
    fn fingerprint_parsing_table() {
        let abc = Fingerprint::of_certificate(b"abc");
        let cases = [
            (SHA256_OF_ABC.to_string(), true),
            (SHA256_OF_ABC.to_lowercase(), true),
            (SHA256_OF_ABC.replace(':', ""), true),
            (format!("  {SHA256_OF_ABC}\n"), true),
            (SHA256_OF_ABC[3..].to_string(), false),
            (format!("{SHA256_OF_ABC}:00"), false),
            (SHA256_OF_ABC.replace("BA", "ZZ"), false),
            (String::new(), false),
        ];
        for (text, ok) in cases {
            match Fingerprint::parse(&text) {
                Ok(fp) => {
                    assert!(ok, "{text:?} should be rejected");
                    assert_eq!(fp, abc, "{text:?}");
                }
                Err(e) => assert!(!ok, "{text:?} should parse: {e}"),
            }
        }
        assert_eq!(abc.to_string(), SHA256_OF_ABC);
    }

    #[test]
    fn config_table() {
        let cases = [
            (TlsOptions::default(), true),
            (TlsOptions { fingerprint: Some(SHA256_OF_ABC.into()), ..Default::default() }, true),
            (TlsOptions { fingerprint: Some("nope".into()), ..Default::default() }, false),
            (TlsOptions { ca_bundle: Some("not pem".into()), ..Default::default() }, false),
            (TlsOptions { insecure_skip_verify: true, ..Default::default() }, true),
            (
                TlsOptions {
                    insecure_skip_verify: true,
                    fingerprint: Some(SHA256_OF_ABC.into()),
                    ..Default::default()
                },
                false,
            ),
        ];
        for (options, ok) in cases {
            assert_eq!(client_config(&options).is_ok(), ok, "{options:?}");
        }
    }
}
