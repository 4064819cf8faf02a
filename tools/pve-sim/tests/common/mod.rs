//! Helpers shared by the pve-sim integration tests: a client for one pve-sim
//! started through the shared test bed, task waiting, and the stock `ssh` client.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use testbed::{PveSim, PveSimOptions};

pub const DEBIAN: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

/// A response as a Proxmox client sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub reason: String,
    pub body: Value,
}

impl Reply {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    pub fn error(&self, key: &str) -> &str {
        self.body["errors"][key].as_str().unwrap_or_default()
    }
}

pub struct Sim {
    pub sim: PveSim,
    pub client: reqwest::Client,
    /// The loopback /24 this instance leases container addresses from.
    pub pool_prefix: String,
}

/// Each pve-sim of a test binary gets its own loopback /24, so concurrent
/// tests never hand out the same container address.
fn next_pool() -> String {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let offset = NEXT.fetch_add(1, Ordering::Relaxed);
    let binary_salt = (std::process::id() % 8) as u8 * 16;
    format!("127.0.{}", 100u8.wrapping_add(binary_salt).wrapping_add(offset))
}

impl Sim {
    pub async fn start(extra_args: &[&str]) -> Result<Self> {
        let pool_prefix = next_pool();
        let mut args: Vec<String> = vec!["--ip-pool".into(), format!("{pool_prefix}.0/24")];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let sim = PveSim::start(PveSimOptions { extra_args: args, ..Default::default() }).await?;
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(sim.cert_pem.as_bytes())?)
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { sim, client, pool_prefix })
    }

    pub fn url(&self, path: &str) -> String {
        self.sim.api_url(path)
    }

    pub fn node_path(&self, rest: &str) -> String {
        format!("/nodes/{}{rest}", self.sim.node)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Reply> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .unwrap_or_else(|| response.status().canonical_reason().unwrap_or_default().to_string());
        let text = response.text().await?;
        let body = serde_json::from_str(&text).with_context(|| format!("non-JSON reply: {text}"))?;
        Ok(Reply { status, reason, body })
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.header("Authorization", self.sim.auth_header())
    }

    pub async fn get(&self, path: &str) -> Result<Reply> {
        self.send(self.authed(self.client.get(self.url(path)))).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<Reply> {
        self.send(self.authed(self.client.post(self.url(path))).form(form)).await
    }

    pub async fn put(&self, path: &str, form: &[(&str, &str)]) -> Result<Reply> {
        self.send(self.authed(self.client.put(self.url(path))).form(form)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Reply> {
        self.send(self.authed(self.client.delete(self.url(path)))).await
    }

    /// A call to the `/sim/*` admin API.
    pub async fn admin(&self, path: &str, body: Value) -> Result<Reply> {
        let url = format!("{}/sim/{path}", self.sim.url);
        self.send(self.authed(self.client.post(url)).json(&body)).await
    }

    pub async fn admin_state(&self) -> Result<Value> {
        let url = format!("{}/sim/state", self.sim.url);
        Ok(self.send(self.authed(self.client.get(url))).await?.body["data"].clone())
    }

    /// The data of a reply that must be a success.
    pub fn ok(reply: Reply) -> Result<Value> {
        if reply.status != 200 {
            bail!("expected success, got {} {}: {}", reply.status, reply.reason, reply.body);
        }
        Ok(reply.data().clone())
    }

    /// Waits for a task to stop; returns its status object.
    pub async fn wait_task(&self, upid: &str) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let path = self.node_path(&format!("/tasks/{upid}/status"));
        loop {
            let status = Self::ok(self.get(&path).await?)?;
            if status["status"] == "stopped" {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("task {upid} still running");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn task_log(&self, upid: &str) -> Result<Vec<String>> {
        let data = Self::ok(self.get(&self.node_path(&format!("/tasks/{upid}/log?limit=1000"))).await?)?;
        Ok(data
            .as_array()
            .map(|lines| lines.iter().filter_map(|l| l["t"].as_str().map(String::from)).collect())
            .unwrap_or_default())
    }

    /// Runs a task-returning request to completion; fails unless it ends OK.
    pub async fn run_task(&self, reply: Reply) -> Result<Vec<String>> {
        let upid = Self::ok(reply)?;
        let upid = upid.as_str().context("UPID string")?.to_string();
        let status = self.wait_task(&upid).await?;
        let log = self.task_log(&upid).await?;
        if status["exitstatus"] != "OK" {
            bail!("task {upid} ended {}: {log:?}", status["exitstatus"]);
        }
        Ok(log)
    }

    pub async fn create(&self, vmid: u32, extra: &[(&str, &str)]) -> Result<Vec<String>> {
        let vmid = vmid.to_string();
        let mut form = vec![("vmid", vmid.as_str()), ("ostemplate", DEBIAN)];
        form.extend_from_slice(extra);
        self.run_task(self.post(&self.node_path("/lxc"), &form).await?).await
    }

    pub async fn start_ct(&self, vmid: u32) -> Result<Vec<String>> {
        self.run_task(self.post(&self.node_path(&format!("/lxc/{vmid}/status/start")), &[]).await?).await
    }
}

/// An ed25519 key pair made with the stock `ssh-keygen`.
pub struct SshKey {
    pub dir: tempdir::Dir,
    pub private: PathBuf,
    pub public: String,
}

pub mod tempdir {
    use std::path::{Path, PathBuf};

    /// A directory removed on drop.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> std::io::Result<Self> {
            static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path)?;
            Ok(Self(path))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl SshKey {
    pub fn generate() -> Result<Self> {
        let dir = tempdir::Dir::new("pve-sim-test-key")?;
        let private = dir.path().join("id_ed25519");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "pve-sim-test", "-f"])
            .arg(&private)
            .status()?;
        if !status.success() {
            bail!("ssh-keygen failed");
        }
        let public = std::fs::read_to_string(private.with_extension("pub"))?.trim().to_string();
        Ok(Self { dir, private, public })
    }

    /// Runs a command in a container through the stock OpenSSH client.
    pub async fn ssh(&self, ip: &str, command: &str) -> Result<std::process::Output> {
        let known_hosts = self.known_hosts(ip);
        let output = tokio::process::Command::new("ssh")
            .arg("-i")
            .arg(&self.private)
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=10"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "LogLevel=ERROR", "-o", "HostKeyAlgorithms=ssh-ed25519"])
            .arg(format!("root@{ip}"))
            .arg(command)
            .stdin(std::process::Stdio::null())
            .output()
            .await?;
        Ok(output)
    }

    pub fn known_hosts(&self, ip: &str) -> PathBuf {
        self.dir.path().join(format!("known_hosts-{ip}"))
    }
}

/// Host processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Mount table lines, in any process's mount namespace, that mention `path`.
pub fn mounts_mentioning(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<u32>().is_ok()))
        .filter_map(|e| std::fs::read_to_string(e.path().join("mountinfo")).ok())
        .flat_map(|m| m.lines().filter(|l| l.contains(&needle)).map(String::from).collect::<Vec<_>>())
        .collect();
    found.sort();
    found.dedup();
    found
}
