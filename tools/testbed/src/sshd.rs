//! A throwaway OpenSSH server on 127.0.0.1 for SSH tests.
//!
//! Each [`Sshd`] has its own port, host key, `authorized_keys` and working
//! directory, so tests run in parallel without sharing state. Root logs in with a
//! key only, exactly as in a Proxmox container.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{self, ManagedProcess};

const SSHD: &str = "/usr/sbin/sshd";
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything an sshd needs, prepared but not yet listening: the address and host
/// key are known before the server starts, so a test can begin connecting first
/// and watch the client wait for it.
pub struct SshdSetup {
    dir: PathBuf,
    addr: SocketAddr,
    host_key_fingerprint: String,
    host_public_key: String,
}

impl SshdSetup {
    /// Writes the config, a fresh ed25519 host key and `authorized_keys`
    /// (one public key line per line) into a new working directory.
    pub fn new(authorized_keys: &str) -> Result<Self> {
        ensure_installed()?;
        let dir = process::work_dir("infrahaus-sshd")?;
        process::remove_at_exit(dir.clone());
        let addr = SocketAddr::from(([127, 0, 0, 1], process::free_port()?));

        let host_key = dir.join("ssh_host_ed25519_key");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "testbed-sshd", "-f"])
            .arg(&host_key))?;
        let fingerprint_line = run(Command::new("ssh-keygen").arg("-lf").arg(host_key.with_extension("pub")))?;
        let host_key_fingerprint = parse_fingerprint(&fingerprint_line)?;
        let host_public_key = std::fs::read_to_string(host_key.with_extension("pub"))
            .context("read the host public key")?
            .trim()
            .to_owned();

        let authorized = dir.join("authorized_keys");
        write_private(&authorized, authorized_keys)?;
        let config = format!(
            "ListenAddress {addr}\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile {authorized}\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             PidFile none\n\
             StrictModes no\n\
             LogLevel VERBOSE\n",
            host_key = host_key.display(),
            authorized = authorized.display(),
        );
        write_private(&dir.join("sshd_config"), &config)?;
        Ok(Self { dir, addr, host_key_fingerprint, host_public_key })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `SHA256:...` of the host key, as `ssh-keygen -lf` prints it.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.host_key_fingerprint
    }

    /// Starts sshd and waits until it accepts connections.
    pub fn start(self) -> Result<Sshd> {
        // sshd refuses to start without its privilege separation directory, which
        // only the distribution's service unit would otherwise create.
        std::fs::create_dir_all("/run/sshd").context("create /run/sshd")?;
        let mut command = Command::new(SSHD);
        command.arg("-D").arg("-e").arg("-f").arg(self.dir.join("sshd_config"));
        let process = ManagedProcess::spawn("sshd", command, &self.dir.join("sshd.log"))?;
        let addr = self.addr;
        process::wait_until(&process, START_TIMEOUT, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })?;
        Ok(Sshd { process, setup: self })
    }
}

/// A running sshd. Dropping it stops the server and removes its directory.
pub struct Sshd {
    process: ManagedProcess,
    setup: SshdSetup,
}

impl Sshd {
    /// An sshd on a free loopback port that lets root in with any key in
    /// `authorized_keys`.
    pub fn start(authorized_keys: &str) -> Result<Self> {
        SshdSetup::new(authorized_keys)?.start()
    }

    pub fn addr(&self) -> SocketAddr {
        self.setup.addr
    }

    /// `SHA256:...` of the host key, as `ssh-keygen -lf` prints it.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.setup.host_key_fingerprint
    }

    /// The host key as an `ssh-ed25519 AAAA... comment` line.
    pub fn host_public_key(&self) -> &str {
        &self.setup.host_public_key
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The server's log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.process.stop(Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&self.setup.dir);
    }
}

fn parse_fingerprint(ssh_keygen_l: &str) -> Result<String> {
    // `256 SHA256:abc... comment (ED25519)`
    match ssh_keygen_l.split_whitespace().nth(1) {
        Some(fingerprint) if fingerprint.starts_with("SHA256:") => Ok(fingerprint.to_owned()),
        _ => bail!("unexpected ssh-keygen -l output: {ssh_keygen_l:?}"),
    }
}

fn write_private(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(content.as_bytes()).with_context(|| format!("write {}", path.display()))
}

fn run(command: &mut Command) -> Result<String> {
    let output = command.output().with_context(|| format!("run {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed with {}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Installs OpenSSH's server when it is missing, once per test binary.
fn ensure_installed() -> Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| install_openssh_server().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn install_openssh_server() -> Result<()> {
    if Path::new(SSHD).exists() {
        return Ok(());
    }
    // policy-rc.d answering 101 keeps the package from starting a system-wide
    // sshd on port 22; it is removed again only if this function created it.
    let created_policy = !Path::new(POLICY_RC_D).exists();
    if created_policy {
        std::fs::write(POLICY_RC_D, "#!/bin/sh\nexit 101\n").context("write policy-rc.d")?;
        std::fs::set_permissions(POLICY_RC_D, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .context("make policy-rc.d executable")?;
    }
    let result = run(Command::new("apt-get").args(["-q", "update"])).and_then(|_| {
        run(Command::new("apt-get")
            .args(["-q", "-y", "-o", "DPkg::Lock::Timeout=300", "install", "openssh-server"])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    });
    if created_policy {
        let _ = std::fs::remove_file(POLICY_RC_D);
    }
    result.context("install openssh-server")?;
    if !Path::new(SSHD).exists() {
        bail!("openssh-server is installed but {SSHD} is missing");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_from_ssh_keygen_output() {
        let cases = [
            (
                "256 SHA256:1q5RZRl7XCOgQgfKKRB7j05grjHF/4zxMfflqk8sLng test (ED25519)\n",
                Some("SHA256:1q5RZRl7XCOgQgfKKRB7j05grjHF/4zxMfflqk8sLng"),
            ),
            ("256 MD5:aa:bb test (ED25519)", None),
            ("", None),
        ];
        for (output, expected) in cases {
            assert_eq!(parse_fingerprint(output).ok().as_deref(), expected, "{output:?}");
        }
    }
}
