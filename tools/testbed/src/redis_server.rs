//! Debian's `redis-server` on a free loopback port.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{free_port, wait_until, ManagedProcess};

pub struct RedisServer {
    /// `redis://127.0.0.1:PORT`
    pub url: String,
    pub port: u16,
    pub process: ManagedProcess,
}

impl RedisServer {
    pub fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let bin = which("redis-server")
            .context("redis-server is not installed; `apt-get install -y redis-server` (.ci/run does this)")?;
        let mut cmd = Command::new(bin);
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ])
        .arg("--dir")
        .arg(dir);
        let process = ManagedProcess::spawn("redis-server", cmd, &dir.join("redis.log"))?;
        let addr = format!("127.0.0.1:{port}");
        wait_until(&process, Duration::from_secs(30), || ping(&addr))?;
        Ok(Self { url: format!("redis://127.0.0.1:{port}"), port, process })
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
