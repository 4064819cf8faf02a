//! Redis clients for `redis://` and `rediss://` (TLS) URLs, shared by the
//! controller, `watch` and the dashboard.
//!
//! A password belongs in the URL (`redis://:PASSWORD@host:6379`,
//! `rediss://user:PASSWORD@host:6380`) and is never printed: errors name
//! neither the URL nor its parts. A TLS server whose certificate a private CA
//! signed is trusted through that CA's PEM file (`--redis-ca-file`,
//! `REDIS_CA_FILE`); without one, the system's trusted roots are used.

use std::path::{Path, PathBuf};

use redis::{ConnectionAddr, IntoConnectionInfo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum RedisUrlError {
    /// The message leaves the URL out: it may hold a password.
    #[error("the Redis URL is not valid")]
    InvalidUrl(#[source] redis::RedisError),
    #[error("the Redis CA file {path} could not be read")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Redis CA file {path} holds no usable PEM certificate")]
    CaCertificate { path: PathBuf },
    #[error("a Redis CA file is only used with a rediss:// URL (TLS)")]
    CaWithoutTls,
}

/// A client for `url`; no connection is made until it is used.
pub fn open(url: &str, ca_file: Option<&Path>) -> Result<redis::Client, RedisUrlError> {
    let info = url.into_connection_info().map_err(RedisUrlError::InvalidUrl)?;
    let Some(path) = ca_file else {
        return redis::Client::open(info).map_err(RedisUrlError::InvalidUrl);
    };
    if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        return Err(RedisUrlError::CaWithoutTls);
    }
    let pem = std::fs::read(path).map_err(|source| RedisUrlError::CaFile { path: path.to_owned(), source })?;
    let no_certificate = || RedisUrlError::CaCertificate { path: path.to_owned() };
    let certificates: Vec<_> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|_| no_certificate())?;
    if certificates.is_empty() {
        return Err(no_certificate());
    }
    let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
    redis::Client::build_with_tls(info, certificates).map_err(|_| no_certificate())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_tls_urls_open_and_errors_never_echo_the_url() {
        assert!(open("redis://:s3cret@127.0.0.1:6379", None).is_ok());
        assert!(open("rediss://user:s3cret@127.0.0.1:6380/0", None).is_ok());
        let error = open("http://user:s3cret@127.0.0.1:6379", None).expect_err("not a Redis URL");
        assert!(!format!("{error:#}").contains("s3cret"), "{error:#}");
        assert!(!format!("{error:?}").contains("s3cret"), "{error:?}");
    }

    #[test]
    fn a_ca_file_is_for_tls_and_must_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").expect("write");
        let error = open("redis://127.0.0.1:6379", Some(&ca)).expect_err("plain URL");
        assert!(matches!(error, RedisUrlError::CaWithoutTls), "{error}");
        let error = open("rediss://127.0.0.1:6380", Some(&ca)).expect_err("no certificate");
        assert!(matches!(error, RedisUrlError::CaCertificate { .. }), "{error}");
        let missing = dir.path().join("missing.pem");
        let error = open("rediss://127.0.0.1:6380", Some(&missing)).expect_err("missing");
        assert!(error.to_string().contains("missing.pem"), "{error}");
    }
}
