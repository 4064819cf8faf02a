//! A throwaway CA and a serving certificate signed by it, for servers of the
//! test bed that speak TLS on loopback.

use std::path::{Path, PathBuf};

use anyhow::Result;

/// Files written by [`issue`].
pub struct Issued {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes a new CA (`ca.crt`) and a certificate for 127.0.0.1 and localhost
/// signed by it (`<name>.crt`, `<name>.key`) into `dir`.
pub fn issue(dir: &Path, name: &str) -> Result<Issued> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir)?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "infrahaus testbed CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, &issuer)?;

    let issued = Issued {
        ca_cert: dir.join("ca.crt"),
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&issued.ca_cert, ca_cert.pem())?;
    std::fs::write(&issued.cert, cert.pem())?;
    std::fs::write(&issued.key, key.serialize_pem())?;
    Ok(issued)
}
