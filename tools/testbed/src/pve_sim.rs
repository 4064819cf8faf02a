//! The `pve-sim` binary on a free loopback port, with its own state dir.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{work_dir, ManagedProcess};

pub struct PveSimOptions {
    pub node: String,
    pub token_id: String,
    pub token_secret: String,
    /// Further `pve-sim` flags (fault injection, task durations, ...).
    pub extra_args: Vec<String>,
}

impl Default for PveSimOptions {
    fn default() -> Self {
        Self {
            node: "pve1".into(),
            token_id: "root@pam!ci".into(),
            token_secret: "4d7e0c63-1f5a-4b2e-9c3d-0a8f6e2b7c91".into(),
            extra_args: Vec::new(),
        }
    }
}

pub struct PveSim {
    /// `https://127.0.0.1:PORT` (the API is under `/api2/json`).
    pub url: String,
    /// Uppercase, colon-separated SHA-256 of the server certificate.
    pub fingerprint: String,
    pub cert_pem: String,
    pub cert_file: PathBuf,
    pub node: String,
    pub token_id: String,
    pub token_secret: String,
    pub state_dir: PathBuf,
    pub process: ManagedProcess,
}

impl PveSim {
    pub async fn start(options: PveSimOptions) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::start_blocking(options)).await?
    }

    pub fn start_blocking(options: PveSimOptions) -> Result<Self> {
        let bin = pve_sim_bin()?;
        let state_dir = work_dir("pve-sim")?;
        let log = state_dir.join("pve-sim.log");
        let mut extra_args = options.extra_args.clone();
        if !extra_args.iter().any(|a| a == "--ip-pool") {
            extra_args.extend(["--ip-pool".to_string(), next_ip_pool()]);
        }
        let mut cmd = Command::new(&bin);
        cmd.args(["--listen", "127.0.0.1:0", "--node", &options.node])
            .arg("--token")
            .arg(format!("{}={}", options.token_id, options.token_secret))
            .arg("--state-dir")
            .arg(&state_dir)
            .args(&extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        let (process, stdout) = ManagedProcess::spawn_configured("pve-sim", cmd, &log)?;
        let stdout = stdout.context("pve-sim stdout was not piped")?;

        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so pve-sim never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(Ok(line))) => line,
            _ => bail!("pve-sim did not report ready:\n{}", process.log_tail(30)),
        };
        let ready = parse_ready_line(&line).with_context(|| format!("unexpected pve-sim ready line: {line}"))?;
        let cert_pem = std::fs::read_to_string(&ready.cert)
            .with_context(|| format!("read pve-sim certificate {}", ready.cert.display()))?;
        Ok(Self {
            url: ready.url,
            fingerprint: ready.fingerprint,
            cert_pem,
            cert_file: ready.cert,
            node: options.node,
            token_id: options.token_id,
            token_secret: options.token_secret,
            state_dir,
            process,
        })
    }

    /// The `Authorization` header value for the configured API token.
    pub fn auth_header(&self) -> String {
        format!("PVEAPIToken={}={}", self.token_id, self.token_secret)
    }

    /// `https://127.0.0.1:PORT/api2/json{path}`
    pub fn api_url(&self, path: &str) -> String {
        format!("{}/api2/json{path}", self.url)
    }

    /// Stops pve-sim with SIGTERM, which stops all of its containers.
    pub fn stop(&self) {
        self.process.stop(Duration::from_secs(30));
    }
}

impl Drop for PveSim {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// A loopback /24 of its own for each pve-sim, so simulators running at the
/// same time (tests in parallel, several test binaries) never hand out the
/// same container address.
fn next_ip_pool() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 256;
    format!("127.{}.{n}.0/24", 150 + std::process::id() % 100)
}

struct ReadyLine {
    url: String,
    fingerprint: String,
    cert: PathBuf,
}

/// Parses `pve-sim ready url=... fingerprint=... cert=...`.
fn parse_ready_line(line: &str) -> Option<ReadyLine> {
    let rest = line.strip_prefix("pve-sim ready ")?;
    let field =
        |key: &str| rest.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')).map(str::to_string);
    Some(ReadyLine { url: field("url")?, fingerprint: field("fingerprint")?, cert: PathBuf::from(field("cert")?) })
}

/// `PVE_SIM_BIN`, or `pve-sim` next to the running test binary
/// (`target/<profile>/pve-sim`), built with cargo if it is not there.
pub fn pve_sim_bin() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("PVE_SIM_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let candidates = exe.ancestors().skip(1).take(3).map(|dir| dir.join("pve-sim")).collect::<Vec<_>>();
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-p", "pve-sim", "--bin", "pve-sim"])
        .current_dir(crate::repo_root())
        .status()
        .context("build pve-sim")?;
    if !status.success() {
        bail!("cargo build -p pve-sim failed");
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("pve-sim binary not found next to the test binary after building it")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        let line = "pve-sim ready url=https://127.0.0.1:40123 fingerprint=AB:CD cert=/tmp/x/pve-ssl.pem";
        let ready = parse_ready_line(line).expect("parses");
        assert_eq!(ready.url, "https://127.0.0.1:40123");
        assert_eq!(ready.fingerprint, "AB:CD");
        assert_eq!(ready.cert, PathBuf::from("/tmp/x/pve-ssl.pem"));
        assert!(parse_ready_line("listening on 8006").is_none());
        assert!(parse_ready_line("pve-sim ready url=https://x").is_none());
    }
}
