//! Child processes that cannot outlive the test binary that started them.
//!
//! Every server is spawned from one long-lived thread with
//! `PR_SET_PDEATHSIG`, so the kernel kills it if this process dies by any
//! means (the signal fires when the spawning *thread* exits, which is why no
//! short-lived test thread may spawn them). On an orderly exit an `atexit`
//! hook stops them gracefully and removes their working directories.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<std::io::Result<Child>>,
}

/// Processes started by this binary, by pid, with the directories to remove
/// once they are gone.
#[derive(Default)]
struct Registry {
    children: HashMap<u32, Child>,
    dirs: Vec<PathBuf>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        // SAFETY: registering a plain `extern "C"` function is always sound.
        unsafe { libc::atexit(stop_all_at_exit) };
        Mutex::new(Registry::default())
    })
}

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                for mut request in rx {
                    let _ = request.reply.send(request.command.spawn());
                }
                // The sender lives in a static, so the loop above only ends at
                // process exit; parking keeps the thread (and with it the
                // children's parent-death signal) alive regardless.
                loop {
                    thread::park();
                }
            })
            .expect("the testbed spawner thread starts");
        Mutex::new(tx)
    })
}

/// A started server process. Dropping it stops the process.
pub struct ManagedProcess {
    pid: u32,
    name: String,
    log: PathBuf,
}

impl ManagedProcess {
    /// Starts `command` with its stdout and stderr written to `log` (a new file).
    pub fn spawn(name: &str, command: Command, log: &Path) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
        Self::spawn_logging(name, command, log, out)
    }

    /// Starts `command` with its stdout and stderr appended to `log`.
    pub fn spawn_appending(name: &str, command: Command, log: &Path) -> Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        Self::spawn_logging(name, command, log, out)
    }

    fn spawn_logging(name: &str, mut command: Command, log: &Path, out: File) -> Result<Self> {
        let err = out.try_clone()?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        Self::spawn_configured(name, command, log).map(|(process, _)| process)
    }

    /// Starts a command whose stdio the caller has already set up, and hands
    /// back its stdout if that was piped.
    pub fn spawn_configured(name: &str, mut command: Command, log: &Path) -> Result<(Self, Option<ChildStdout>)> {
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let registry = registry();
        let (reply, answer) = mpsc::channel();
        spawner()
            .lock()
            .map_err(|_| anyhow::anyhow!("testbed spawner lock poisoned"))?
            .send(SpawnRequest { command, reply })
            .map_err(|_| anyhow::anyhow!("testbed spawner thread is gone"))?;
        let mut child =
            answer.recv().context("testbed spawner thread did not answer")?.with_context(|| format!("start {name}"))?;
        let stdout = child.stdout.take();
        let pid = child.id();
        registry.lock().map_err(|_| anyhow::anyhow!("testbed registry lock poisoned"))?.children.insert(pid, child);
        Ok((Self { pid, name: name.to_string(), log: log.to_path_buf() }, stdout))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether the process is still running (not yet reaped).
    pub fn is_running(&self) -> bool {
        let Ok(mut reg) = registry().lock() else { return false };
        match reg.children.get_mut(&self.pid) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits up to `timeout` for the process to exit by itself and returns
    /// how it ended; `None` if it still runs.
    pub fn wait_exit(&self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut reg) = registry().lock() {
                let status = reg.children.get_mut(&self.pid).and_then(|child| child.try_wait().ok().flatten());
                if let Some(status) = status {
                    reg.children.remove(&self.pid);
                    return Some(status);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the process log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Stops the process: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&self, grace: Duration) {
        let child = registry().lock().ok().and_then(|mut reg| reg.children.remove(&self.pid));
        if let Some(child) = child {
            terminate(child, grace);
        }
    }

    /// Kills the process at once with SIGKILL, as a crash would.
    pub fn kill(&self) {
        self.signal(libc::SIGKILL);
        self.stop(Duration::from_secs(5));
    }

    pub fn signal(&self, signal: libc::c_int) {
        if self.is_running() {
            // SAFETY: sending a signal to a child we own and have not reaped.
            unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// Removes `dir` when the test binary exits, after every process is stopped.
pub fn remove_at_exit(dir: PathBuf) {
    if let Ok(mut reg) = registry().lock() {
        reg.dirs.push(dir);
    }
}

fn terminate(mut child: Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    // SAFETY: the child is ours and not yet reaped, so the pid is still valid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

extern "C" fn stop_all_at_exit() {
    let Some(reg) = registry().lock().ok().map(|mut reg| std::mem::take(&mut *reg)) else {
        return;
    };
    // Signal everything first so the servers shut down in parallel.
    for child in reg.children.values() {
        // SAFETY: each child is ours and not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    }
    for (_, child) in reg.children {
        terminate(child, Duration::from_secs(10));
    }
    for dir in reg.dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The last `lines` lines of a log, without klog's informational lines
/// (`I1122 ...`), which would otherwise bury the error.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let is_klog_info =
        |line: &str| line.len() > 5 && line.starts_with('I') && line[1..5].bytes().all(|b| b.is_ascii_digit());
    let all: Vec<&str> = text.lines().filter(|line| !is_klog_info(line)).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a process with this pid exists (zombies count as gone).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A fresh working directory for one test binary's servers.
pub fn work_dir(prefix: &str) -> Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until `check` returns true, or fails with the process log tail.
pub fn wait_until(process: &ManagedProcess, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return Ok(());
        }
        if !process.is_running() {
            anyhow::bail!("{} exited during start-up:\n{}", process.name(), process.log_tail(30));
        }
        if Instant::now() > deadline {
            anyhow::bail!("{} not ready after {timeout:?}:\n{}", process.name(), process.log_tail(30));
        }
        thread::sleep(Duration::from_millis(50));
    }
}
