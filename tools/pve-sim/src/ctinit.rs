//! `pve-sim ct-init`: the inside of a running container.
//!
//! pve-sim spawns this in fresh mount and UTS namespaces. It enters a new PID
//! namespace and forks the container's init (PID 1), which mounts the
//! container's root filesystem, chroots into it, starts `sshd` and reaps
//! orphans. The mounts exist only in the container's mount namespace, so they
//! vanish with its last process; the kernel kills every process of the PID
//! namespace when its init exits. Both processes run single-threaded, except
//! for the threads of an SSH fault (a silent port, a relay that cuts uploads).

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::faults::SshFault;

/// Host key files generated at create, relative to the container's root.
pub(crate) const HOST_KEYS: &[(&str, &str)] = &[
    ("rsa", "etc/ssh/ssh_host_rsa_key"),
    ("ecdsa", "etc/ssh/ssh_host_ecdsa_key"),
    ("ed25519", "etc/ssh/ssh_host_ed25519_key"),
];

#[derive(Parser, Debug)]
#[command(name = "pve-sim ct-init")]
pub(crate) struct CtInitArgs {
    /// The container's directory (with `upper/`, `work/` and `merged/`).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    hostname: String,
    /// Address sshd listens on; without it the container runs no sshd.
    #[arg(long)]
    ip: Option<Ipv4Addr>,
    /// What answers on port 22 instead of a working sshd.
    #[arg(long)]
    ssh_fault: Option<SshFault>,
}

/// The port sshd listens on behind the relay of `close-after`.
const RELAYED_SSHD_PORT: u16 = 2222;

const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Blocks the signals the loop waits for; a handler is installed as well,
/// because a PID namespace's init never receives signals left at their default.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask syscalls on a local, initialised sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS.into_iter().chain([libc::SIGCHLD]) {
            libc::sigaddset(&mut set, sig);
            libc::signal(sig, ignore_signal as *const () as libc::sighandler_t);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> libc::c_int {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is a valid sigset and `sig` a valid out-pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

fn check(ret: libc::c_int, what: &str) -> Result<()> {
    if ret == -1 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn run(args: CtInitArgs) -> i32 {
    let set = block_signals();
    // SAFETY: unshare and fork in a single-threaded process.
    if let Err(e) = check(unsafe { libc::unshare(libc::CLONE_NEWPID) }, "unshare(CLONE_NEWPID)") {
        eprintln!("ct-init: {e:#}");
        return 1;
    }
    // SAFETY: the process is single-threaded, so the child may run Rust code.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        eprintln!("ct-init: fork: {}", std::io::Error::last_os_error());
        return 1;
    }
    if pid == 0 {
        // SAFETY: ties PID 1's life to this process's.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        let code = match container_init(&args, &set) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ct-init: {e:#}");
                1
            }
        };
        std::process::exit(code);
    }
    loop {
        let sig = wait_signal(&set);
        if STOP_SIGNALS.contains(&sig) {
            // SAFETY: signals our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            continue;
        }
        let mut status = 0;
        // SAFETY: reaps our own child without blocking.
        let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if reaped == pid {
            return if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 1 };
        }
    }
}

fn start_sshd(ip: Ipv4Addr, port: u16) -> Result<()> {
    let mut sshd = Command::new("/usr/sbin/sshd");
    sshd.args(["-D", "-e", "-o", &format!("ListenAddress={ip}:{port}")])
        .args(["-o", "PidFile=none", "-o", "UsePAM=no", "-o", "PermitRootLogin=yes", "-o", "UseDNS=no"])
        .args(HOST_KEYS.iter().flat_map(|(_, file)| ["-o".to_string(), format!("HostKey=/{file}")]))
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8");
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        sshd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    // The child is reaped by init's loop like any orphan.
    sshd.spawn().context("start /usr/sbin/sshd")?;
    Ok(())
}

/// The `silent` SSH fault: port 22 accepts connections and never answers
/// (a hung sshd, or a firewall that swallows the traffic). A thread of init
/// holds every connection open.
fn silent_listener(ip: Ipv4Addr) -> Result<()> {
    let listener = TcpListener::bind((ip, 22)).with_context(|| format!("listen on {ip}:22"))?;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    Ok(())
}

/// The `close-after` SSH fault: port 22 relays to sshd on
/// [`RELAYED_SSHD_PORT`] and cuts a connection once its client sent `limit`
/// bytes, as a network that drops a long upload would.
fn cutting_relay(ip: Ipv4Addr, limit: u64) -> Result<()> {
    let listener = TcpListener::bind((ip, 22)).with_context(|| format!("listen on {ip}:22"))?;
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || relay(client, (ip, RELAYED_SSHD_PORT), limit));
        }
    });
    Ok(())
}

fn relay(client: TcpStream, server: (Ipv4Addr, u16), limit: u64) {
    let Ok(server) = TcpStream::connect(server) else { return };
    let (Ok(mut from_client), Ok(mut to_client)) = (client.try_clone(), client.try_clone()) else { return };
    let (Ok(mut to_server), Ok(mut from_server)) = (server.try_clone(), server.try_clone()) else { return };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
    });
    let mut buffer = [0u8; 16 * 1024];
    let mut sent = 0u64;
    while let Ok(n) = from_client.read(&mut buffer) {
        if n == 0 || to_server.write_all(&buffer[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if sent >= limit {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).context("path contains a NUL byte")
}

fn mount(source: &str, target: &Path, fstype: &str, flags: libc::c_ulong, data: Option<&str>) -> Result<()> {
    let source_c = CString::new(source)?;
    let target_c = cstring(target)?;
    let fstype_c = CString::new(fstype)?;
    let data_c = data.map(CString::new).transpose()?;
    // SAFETY: all pointers are valid NUL-terminated strings or null.
    let ret = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            if fstype.is_empty() { std::ptr::null() } else { fstype_c.as_ptr() },
            flags,
            data_c.as_ref().map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    check(ret, &format!("mount {fstype} {source} on {}", target.display()))
}

fn container_init(args: &CtInitArgs, set: &libc::sigset_t) -> Result<()> {
    let merged = args.dir.join("merged");
    mount("none", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, None)?;
    let options =
        format!("lowerdir=/,upperdir={},workdir={}", args.dir.join("upper").display(), args.dir.join("work").display());
    mount("overlay", &merged, "overlay", 0, Some(&options))?;
    mount("proc", &merged.join("proc"), "proc", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None)?;
    mount("/dev", &merged.join("dev"), "", libc::MS_BIND | libc::MS_REC, None)?;
    mount("tmpfs", &merged.join("dev/shm"), "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, Some("mode=1777"))?;
    mount("tmpfs", &merged.join("run"), "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, Some("mode=0755"))?;
    mount("tmpfs", &merged.join("tmp"), "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, Some("mode=1777"))?;
    // SAFETY: the hostname buffer is valid for its length.
    check(unsafe { libc::sethostname(args.hostname.as_ptr().cast(), args.hostname.len()) }, "sethostname")?;
    let merged_c = cstring(&merged)?;
    // SAFETY: valid path strings.
    check(unsafe { libc::chroot(merged_c.as_ptr()) }, "chroot")?;
    std::env::set_current_dir("/").context("chdir /")?;
    std::fs::create_dir_all("/run/sshd").context("create /run/sshd")?;

    if let Some(ip) = args.ip {
        let sshd_port = match args.ssh_fault {
            None => 22,
            Some(SshFault::NoSshd) => 0,
            Some(SshFault::Silent) => {
                silent_listener(ip)?;
                0
            }
            Some(SshFault::CloseAfter(bytes)) => {
                cutting_relay(ip, bytes)?;
                RELAYED_SSHD_PORT
            }
        };
        if sshd_port != 0 {
            start_sshd(ip, sshd_port)?;
        }
    }

    loop {
        let sig = wait_signal(set);
        if STOP_SIGNALS.contains(&sig) {
            // SAFETY: inside its own PID namespace, -1 means every other process of the container.
            unsafe { libc::kill(-1, libc::SIGKILL) };
            let mut status = 0;
            // SAFETY: blocking reap of our children until none are left.
            while unsafe { libc::waitpid(-1, &mut status, 0) } > 0 {}
            return Ok(());
        }
        let mut status = 0;
        // SAFETY: non-blocking reap of any child.
        while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
    }
}
