//! Debian's `redis-server` on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{free_port, wait_until, ManagedProcess};

pub struct RedisServer {
    /// `redis://127.0.0.1:PORT`, or `rediss://` for TLS, with the password
    /// when one is required.
    pub url: String,
    pub port: u16,
    /// The CA that signed the server's certificate (TLS only).
    pub ca_file: Option<PathBuf>,
    pub process: ManagedProcess,
}

/// How a [`RedisServer`] is secured.
#[derive(Clone, Debug, Default)]
pub struct RedisSecurity {
    /// `requirepass`: clients must AUTH with it.
    pub password: Option<String>,
    /// TLS only (no plain port), with a certificate of a throwaway CA.
    pub tls: bool,
}

impl RedisServer {
    pub fn start(dir: &Path) -> Result<Self> {
        Self::start_secured(dir, &RedisSecurity::default())
    }

    pub fn start_secured(dir: &Path, security: &RedisSecurity) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let bin = which("redis-server")
            .context("redis-server is not installed; `apt-get install -y redis-server` (.ci/run does this)")?;
        let mut cmd = Command::new(bin);
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "yes"])
            .arg("--dir")
            .arg(dir);
        let mut ca_file = None;
        if security.tls {
            let issued = crate::pki::issue(&dir.join("tls"), "redis")?;
            cmd.args(["--port", "0", "--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(&issued.cert)
                .arg("--tls-key-file")
                .arg(&issued.key)
                .arg("--tls-ca-cert-file")
                .arg(&issued.ca_cert);
            ca_file = Some(issued.ca_cert);
        } else {
            cmd.args(["--port", &port.to_string()]);
        }
        if let Some(password) = &security.password {
            cmd.args(["--requirepass", password]);
        }
        let process = ManagedProcess::spawn("redis-server", cmd, &dir.join("redis.log"))?;
        let addr = format!("127.0.0.1:{port}");
        let plain = !security.tls && security.password.is_none();
        // A secured server answers PING only after TLS or AUTH: an open port
        // and the server's own word in its log stand for it.
        let log = dir.join("redis.log");
        wait_until(&process, Duration::from_secs(30), || {
            if plain {
                ping(&addr)
            } else {
                std::net::TcpStream::connect(&addr).is_ok()
                    && std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Ready to accept connections"))
            }
        })?;
        let scheme = if security.tls { "rediss" } else { "redis" };
        let auth = security.password.as_ref().map(|p| format!(":{p}@")).unwrap_or_default();
        Ok(Self { url: format!("{scheme}://{auth}127.0.0.1:{port}"), port, ca_file, process })
    }

    /// Stops the server (as an outage would); `restart` brings it back on
    /// the same port.
    pub fn stop(&self) {
        self.process.stop(Duration::from_secs(5));
    }
}

fn ping(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

pub(crate) fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}
