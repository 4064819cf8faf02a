//! Host side of real containers: the root filesystem's own layer, the
//! processes that run a container, and their removal.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::faults::SshFault;
use anyhow::{bail, Context, Result};
use tokio::sync::{oneshot, watch};

use crate::ctinit::HOST_KEYS;

/// Where one container's files live: `<state-dir>/lxc/<vmid>`.
#[derive(Debug, Clone)]
pub(crate) struct CtDir(pub(crate) PathBuf);

impl CtDir {
    pub(crate) fn new(state_dir: &Path, vmid: u32) -> Self {
        Self(state_dir.join("lxc").join(vmid.to_string()))
    }
    fn upper(&self) -> PathBuf {
        self.0.join("upper")
    }
    fn console_log(&self) -> PathBuf {
        self.0.join("console.log")
    }
}

/// What `post_create_hook` of PVE's container setup writes into the new root.
pub(crate) struct RootfsSetup<'a> {
    pub(crate) hostname: &'a str,
    pub(crate) ip: Option<Ipv4Addr>,
    pub(crate) password: Option<&'a str>,
    pub(crate) ssh_public_keys: Option<&'a str>,
    pub(crate) nameserver: Option<&'a str>,
    pub(crate) searchdomain: Option<&'a str>,
}

/// A generated SSH host key, as the create log reports it.
pub(crate) struct HostKey {
    pub(crate) file_name: String,
    pub(crate) fingerprint: String,
}

fn write_file(path: &Path, content: &str, mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    std::fs::write(path, content).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn make_dir(path: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Marks a directory of the upper layer opaque, so the host's copy stays hidden.
fn make_opaque(path: &Path) -> Result<()> {
    let path_c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: valid NUL-terminated strings and a one-byte value buffer.
    let ret = unsafe { libc::setxattr(path_c.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if ret != 0 {
        bail!("mark {} opaque: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String> {
    let mut child = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run openssl passwd")?;
    child.stdin.take().context("openssl stdin")?.write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("openssl passwd failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The host's shadow file with root's password replaced; without a password
/// root gets none, so only keys let it in.
fn shadow_with_root(host_shadow: &str, root_hash: &str, days: u64) -> String {
    let root = format!("root:{root_hash}:{days}:0:99999:7:::");
    let mut replaced = false;
    let mut lines: Vec<String> = host_shadow
        .lines()
        .map(|line| {
            if line.starts_with("root:") {
                replaced = true;
                root.clone()
            } else {
                line.to_string()
            }
        })
        .collect();
    if !replaced {
        lines.insert(0, root);
    }
    lines.join("\n") + "\n"
}

fn generate_host_key(upper: &Path, key_type: &str, file: &str, hostname: &str) -> Result<HostKey> {
    let path = upper.join(file);
    let comment = format!("root@{hostname}");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", key_type, "-N", "", "-C", &comment, "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .context("run ssh-keygen")?;
    if !status.success() {
        bail!("ssh-keygen -t {key_type} failed");
    }
    let out = Command::new("ssh-keygen").args(["-l", "-E", "sha256", "-f"]).arg(path.with_extension("pub")).output()?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let fingerprint = listing
        .split_whitespace()
        .nth(1)
        .filter(|f| f.starts_with("SHA256:"))
        .with_context(|| format!("unexpected ssh-keygen -l output: {listing}"))?;
    Ok(HostKey { file_name: file.rsplit('/').next().unwrap_or(file).to_string(), fingerprint: fingerprint.to_string() })
}

/// Creates the container's own layer over the host's root and writes its identity into it.
pub(crate) fn prepare_rootfs(dir: &CtDir, setup: &RootfsSetup<'_>) -> Result<Vec<HostKey>> {
    let upper = dir.upper();
    make_dir(&dir.0, 0o700)?;
    make_dir(&upper, 0o755)?;
    make_dir(&dir.0.join("work"), 0o700)?;
    make_dir(&dir.0.join("merged"), 0o755)?;

    write_file(&upper.join("etc/hostname"), &format!("{}\n", setup.hostname), 0o644)?;
    let own_line = match setup.ip {
        Some(ip) => format!("{ip} {}", setup.hostname),
        None => format!("127.0.1.1 {}", setup.hostname),
    };
    write_file(&upper.join("etc/hosts"), &format!("127.0.0.1 localhost.localdomain localhost\n{own_line}\n"), 0o644)?;
    if setup.nameserver.is_some() || setup.searchdomain.is_some() {
        let mut resolv = String::new();
        if let Some(domain) = setup.searchdomain {
            resolv.push_str(&format!("search {domain}\n"));
        }
        for server in setup.nameserver.unwrap_or_default().split_whitespace() {
            resolv.push_str(&format!("nameserver {server}\n"));
        }
        write_file(&upper.join("etc/resolv.conf"), &resolv, 0o644)?;
    }

    let host_shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let root_hash = match setup.password {
        Some(password) => hash_password(password)?,
        None => "*".to_string(),
    };
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
    let shadow_path = upper.join("etc/shadow");
    write_file(&shadow_path, &shadow_with_root(&host_shadow, &root_hash, days), 0o640)?;
    if let Ok(meta) = std::fs::metadata("/etc/shadow") {
        std::os::unix::fs::chown(&shadow_path, Some(meta.uid()), Some(meta.gid()))?;
    }

    let root_home = upper.join("root");
    make_dir(&root_home, 0o700)?;
    make_opaque(&root_home)?;
    for skel in [".bashrc", ".profile"] {
        if let Ok(content) = std::fs::read_to_string(Path::new("/etc/skel").join(skel)) {
            write_file(&root_home.join(skel), &content, 0o644)?;
        }
    }
    if let Some(keys) = setup.ssh_public_keys {
        make_dir(&root_home.join(".ssh"), 0o700)?;
        let mut content = keys.trim_end().to_string();
        content.push('\n');
        write_file(&root_home.join(".ssh/authorized_keys"), &content, 0o600)?;
    }

    make_dir(&upper.join("etc/ssh"), 0o755)?;
    HOST_KEYS.iter().map(|(key_type, file)| generate_host_key(&upper, key_type, file, setup.hostname)).collect()
}

/// Removes a container's files; retries briefly while the kernel releases its last mount.
pub(crate) fn destroy_files(dir: &CtDir) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir_all(&dir.0) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(dir = %dir.0.display(), error = %e, "retrying removal");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e).with_context(|| format!("remove {}", dir.0.display())),
        }
    }
}

struct SpawnRequest {
    command: Command,
    reply: oneshot::Sender<std::io::Result<Child>>,
}

/// Spawns container processes from one thread that lives as long as pve-sim:
/// their parent-death signal fires when the *spawning thread* exits.
#[derive(Clone)]
pub(crate) struct Spawner {
    requests: mpsc::Sender<SpawnRequest>,
}

/// A running container: the `ct-init` process outside its PID namespace.
#[derive(Debug, Clone)]
pub(crate) struct RunningCt {
    pub(crate) pid: u32,
    pub(crate) started: Instant,
    exit: watch::Receiver<Option<i32>>,
}

impl RunningCt {
    pub(crate) fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    async fn wait_exit(&mut self) -> i32 {
        loop {
            if let Some(code) = *self.exit.borrow_and_update() {
                return code;
            }
            if self.exit.changed().await.is_err() {
                return -1;
            }
        }
    }
}

impl Spawner {
    pub(crate) fn new() -> Result<Self> {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new().name("ct-spawner".into()).spawn(move || {
            for mut request in incoming {
                let _ = request.reply.send(request.command.spawn());
            }
        })?;
        Ok(Self { requests })
    }

    /// Starts the container and waits until its sshd accepts connections.
    /// With `ssh_fault` the port answers as the fault says; without sshd
    /// nothing is waited for (Proxmox does not wait for sshd either).
    pub(crate) async fn start(
        &self,
        dir: &CtDir,
        hostname: &str,
        ip: Option<Ipv4Addr>,
        ssh_fault: Option<SshFault>,
    ) -> Result<RunningCt> {
        // The running image itself, even if the file on disk was replaced
        // (a rebuild while pve-sim runs) since it started.
        let exe = "/proc/self/exe";
        let console = std::fs::OpenOptions::new().create(true).append(true).open(dir.console_log())?;
        let mut command = Command::new(exe);
        command.arg("ct-init").arg("--dir").arg(&dir.0).arg("--hostname").arg(hostname);
        if let Some(ip) = ip {
            command.arg("--ip").arg(ip.to_string());
        }
        if let Some(fault) = ssh_fault {
            command.arg("--ssh-fault").arg(fault.arg());
        }
        command.stdin(Stdio::null()).stdout(console.try_clone()?).stderr(console).env_clear();
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let (reply, response) = oneshot::channel();
        self.requests
            .send(SpawnRequest { command, reply })
            .map_err(|_| anyhow::anyhow!("container spawner thread is gone"))?;
        let mut child = response.await.context("container spawner dropped the request")??;
        let pid = child.id();
        let (exit_tx, exit) = watch::channel(None);
        std::thread::spawn(move || {
            let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
            let _ = exit_tx.send(Some(code));
        });
        let mut running = RunningCt { pid, started: Instant::now(), exit };

        let Some(ip) = ip.filter(|_| ssh_fault != Some(SshFault::NoSshd)) else { return Ok(running) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if running.has_exited() {
                bail!("container init exited: {}", console_tail(dir));
            }
            let addr = SocketAddr::from((ip, 22));
            let reachable = tokio::task::spawn_blocking(move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .await
            .unwrap_or(false);
            if reachable {
                return Ok(running);
            }
            if Instant::now() > deadline {
                stop(&mut running).await;
                bail!("sshd did not listen on {ip}:22 in time: {}", console_tail(dir));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn console_tail(dir: &CtDir) -> String {
    let text = std::fs::read_to_string(dir.console_log()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Stops a container: its init kills everything inside, then ct-init exits;
/// a stuck container is killed outright (its init follows by parent-death signal).
/// Asks the container to stop (SIGTERM to its init) and waits at most
/// `timeout`; returns whether it stopped.
pub(crate) async fn shutdown(running: &mut RunningCt, timeout: Duration) -> bool {
    if !running.has_exited() {
        // SAFETY: signals a child process this pve-sim spawned and has not reaped.
        unsafe { libc::kill(running.pid as libc::pid_t, libc::SIGTERM) };
    }
    tokio::time::timeout(timeout, running.wait_exit()).await.is_ok()
}

pub(crate) async fn stop(running: &mut RunningCt) {
    let pid = running.pid as libc::pid_t;
    if !running.has_exited() {
        // SAFETY: signals a child process this pve-sim spawned and has not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if tokio::time::timeout(Duration::from_secs(10), running.wait_exit()).await.is_err() {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        running.wait_exit().await;
    }
}

/// A process and all its descendants, found through `/proc/PID/task/TID/children`.
pub(crate) fn tree_pids(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    let mut i = 0;
    while i < pids.len() {
        let pid = pids[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                pids.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
        i += 1;
    }
    pids
}

/// Resident memory of a process tree in bytes (the sum of each process's `VmRSS`).
pub(crate) fn tree_rss(root: u32) -> u64 {
    tree_pids(root)
        .into_iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum::<u64>()
        * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_root_line_is_replaced_or_added() {
        let cases = [
            (
                "root:$y$old:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n",
                "root:*:20000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n",
            ),
            ("bin:*:19000:0:99999:7:::", "root:*:20000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n"),
        ];
        for (host, expected) in cases {
            assert_eq!(shadow_with_root(host, "*", 20000), expected);
        }
    }
}
