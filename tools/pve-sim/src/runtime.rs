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

use crate::hostkeys::{self, HostKey, HostKeyPool};

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

/// Creates the container's own layer over the host's root and writes its
/// identity into it. Its SSH host keys come from `pool` when it has a set
/// ready, else they are generated here.
pub(crate) fn prepare_rootfs(dir: &CtDir, setup: &RootfsSetup<'_>, pool: Option<&HostKeyPool>) -> Result<Vec<HostKey>> {
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
    let comment = hostkeys::comment_for(setup.hostname);
    if let Some(set) = pool.and_then(HostKeyPool::take) {
        match hostkeys::install(set, &upper, &comment) {
            Ok(keys) => return Ok(keys),
            Err(e) => {
                tracing::warn!(dir = %dir.0.display(), error = %format!("{e:#}"), "installing pooled host keys");
                hostkeys::remove_installed(&upper);
            }
        }
    }
    hostkeys::generate(&upper, &comment)
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
                stop_ct(&mut running).await;
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

/// Asks the container to stop (SIGTERM to its init) and waits at most
/// `timeout`; returns whether it stopped.
async fn shutdown_ct(running: &mut RunningCt, timeout: Duration) -> bool {
    if !running.has_exited() {
        // SAFETY: signals a child process this pve-sim spawned and has not reaped.
        unsafe { libc::kill(running.pid as libc::pid_t, libc::SIGTERM) };
    }
    tokio::time::timeout(timeout, running.wait_exit()).await.is_ok()
}

/// Stops a container: its init kills everything inside, then ct-init exits;
/// a stuck container is killed outright (its init follows by parent-death signal).
async fn stop_ct(running: &mut RunningCt) {
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

/// What a started guest runs as.
#[derive(Debug, Clone)]
pub(crate) enum Running {
    /// A container: its `ct-init` and everything inside.
    Container(RunningCt),
    /// A guest of `--api-only-guests`: running as far as the API shows, with
    /// no process, namespace or file behind it.
    ApiOnly { started: Instant },
}

impl Running {
    pub(crate) fn api_only() -> Self {
        Running::ApiOnly { started: Instant::now() }
    }

    pub(crate) fn has_exited(&self) -> bool {
        match self {
            Running::Container(ct) => ct.has_exited(),
            Running::ApiOnly { .. } => false,
        }
    }

    pub(crate) fn started(&self) -> Instant {
        match self {
            Running::Container(ct) => ct.started,
            Running::ApiOnly { started } => *started,
        }
    }

    /// The PID of the container's `ct-init`; none for an API-only guest.
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            Running::Container(ct) => Some(ct.pid),
            Running::ApiOnly { .. } => None,
        }
    }

    /// Every process of the guest (none for an API-only guest).
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.pid().map(tree_pids).unwrap_or_default()
    }

    /// Resident memory of the guest's processes in bytes.
    pub(crate) fn rss(&self) -> u64 {
        self.pid().map_or(0, tree_rss)
    }
}

/// Asks the guest to stop and waits at most `timeout`; returns whether it
/// stopped. An API-only guest stops at once.
pub(crate) async fn shutdown(running: &mut Running, timeout: Duration) -> bool {
    match running {
        Running::Container(ct) => shutdown_ct(ct, timeout).await,
        Running::ApiOnly { .. } => true,
    }
}

/// Stops the guest, killing it if it does not stop in time.
pub(crate) async fn stop(running: &mut Running) {
    if let Running::Container(ct) = running {
        stop_ct(ct).await;
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

/// Resident memory of one process in bytes (its `VmRSS`; 0 when it is gone).
pub(crate) fn process_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Resident memory of a process tree in bytes (the sum of each process's `VmRSS`).
pub(crate) fn tree_rss(root: u32) -> u64 {
    tree_pids(root).into_iter().map(process_rss).sum()
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
