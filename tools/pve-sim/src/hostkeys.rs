//! SSH host keys of containers: generated with `ssh-keygen` while a create
//! runs, or taken from a pool of sets that pve-sim generates in the
//! background (`--host-key-pool N`). Every container gets keys of its own:
//! a set from the pool is moved into one container's layer and never used again.

use std::collections::VecDeque;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

use crate::ctinit::HOST_KEYS;

/// A container's SSH host key, as the create log reports it.
pub(crate) struct HostKey {
    pub(crate) file_name: String,
    pub(crate) fingerprint: String,
}

/// The comment `ssh-keygen -C` gives a container's host keys, as PVE's setup does.
pub(crate) fn comment_for(hostname: &str) -> String {
    format!("root@{hostname}")
}

fn base_name(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

/// Runs `ssh-keygen` for one key pair at `path` (and `path.pub`) and returns
/// its SHA256 fingerprint. `background` runs it at the lowest CPU priority.
fn keygen(path: &Path, key_type: &str, comment: &str, background: bool) -> Result<String> {
    let mut command = Command::new("ssh-keygen");
    command.args(["-q", "-t", key_type, "-N", "", "-C", comment, "-f"]).arg(path).stdin(Stdio::null());
    if background {
        // SAFETY: setpriority is async-signal-safe; it lowers only the child's own priority.
        unsafe {
            command.pre_exec(|| {
                libc::setpriority(libc::PRIO_PROCESS, 0, 19);
                Ok(())
            });
        }
    }
    let status = command.status().context("run ssh-keygen")?;
    if !status.success() {
        bail!("ssh-keygen -t {key_type} failed");
    }
    fingerprint(&path.with_extension("pub"))
}

/// The SHA256 fingerprint of a public key file, as `ssh-keygen -l` prints it.
fn fingerprint(public: &Path) -> Result<String> {
    let out = Command::new("ssh-keygen").args(["-l", "-E", "sha256", "-f"]).arg(public).output()?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let fingerprint = listing
        .split_whitespace()
        .nth(1)
        .filter(|f| f.starts_with("SHA256:"))
        .with_context(|| format!("unexpected ssh-keygen -l output: {listing}"))?;
    Ok(fingerprint.to_string())
}

/// Generates every host key of [`HOST_KEYS`] below `root` (a container's
/// upper layer), with the container's comment.
pub(crate) fn generate(root: &Path, comment: &str) -> Result<Vec<HostKey>> {
    HOST_KEYS
        .iter()
        .map(|(key_type, file)| {
            let fingerprint = keygen(&root.join(file), key_type, comment, false)?;
            Ok(HostKey { file_name: base_name(file).to_string(), fingerprint })
        })
        .collect()
}

/// One pre-generated set: a key pair per entry of [`HOST_KEYS`] in `dir`,
/// with their fingerprints in the same order.
pub(crate) struct KeySet {
    dir: PathBuf,
    fingerprints: Vec<String>,
}

/// The comment pool keys carry until a container takes them.
const POOL_COMMENT: &str = "root@pve-sim-pool";

fn generate_set(dir: &Path) -> Result<KeySet> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let fingerprints = HOST_KEYS
        .iter()
        .map(|(key_type, file)| keygen(&dir.join(base_name(file)), key_type, POOL_COMMENT, true))
        .collect::<Result<Vec<_>>>()?;
    Ok(KeySet { dir: dir.to_path_buf(), fingerprints })
}

/// Moves a file, copying it when the target is on another file system.
fn move_file(from: &Path, to: &Path) -> Result<()> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    std::fs::remove_file(from).with_context(|| format!("remove {}", from.display()))?;
    Ok(())
}

/// Moves a pool set into a container's upper layer `root` and gives its keys
/// the container's comment; the set's directory is removed.
pub(crate) fn install(set: KeySet, root: &Path, comment: &str) -> Result<Vec<HostKey>> {
    let mut keys = Vec::with_capacity(HOST_KEYS.len());
    for ((_, file), fingerprint) in HOST_KEYS.iter().zip(&set.fingerprints) {
        let name = base_name(file);
        let private = root.join(file);
        let public = private.with_extension("pub");
        move_file(&set.dir.join(name), &private)?;
        move_file(&set.dir.join(format!("{name}.pub")), &public)?;
        let text = std::fs::read_to_string(&private).with_context(|| format!("read {}", private.display()))?;
        std::fs::write(&private, with_private_comment(&text, comment)?)?;
        let text = std::fs::read_to_string(&public).with_context(|| format!("read {}", public.display()))?;
        std::fs::write(&public, with_public_comment(&text, comment)?)?;
        keys.push(HostKey { file_name: name.to_string(), fingerprint: fingerprint.clone() });
    }
    let _ = std::fs::remove_dir_all(&set.dir);
    Ok(keys)
}

/// Removes what a failed [`install`] may have left below `root`, so the
/// keys can be generated there instead.
pub(crate) fn remove_installed(root: &Path) {
    for (_, file) in HOST_KEYS {
        let private = root.join(file);
        let _ = std::fs::remove_file(private.with_extension("pub"));
        let _ = std::fs::remove_file(private);
    }
}

/// A `.pub` line (`TYPE BASE64 COMMENT`) with another comment.
fn with_public_comment(text: &str, comment: &str) -> Result<String> {
    let mut fields = text.split_whitespace();
    let (Some(key_type), Some(blob)) = (fields.next(), fields.next()) else {
        bail!("not an OpenSSH public key line");
    };
    Ok(format!("{key_type} {blob} {comment}\n"))
}

const PRIVATE_BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const PRIVATE_END: &str = "-----END OPENSSH PRIVATE KEY-----";
const PRIVATE_MAGIC: &[u8] = b"openssh-key-v1\0";

/// Reads the `string`s and `uint32`s of the SSH wire format.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32> {
        let bytes = self.data.get(self.pos..self.pos + 4).context("truncated key")?;
        self.pos += 4;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn string(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        let bytes = self.data.get(self.pos..self.pos + len).context("truncated key")?;
        self.pos += len;
        Ok(bytes)
    }
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// How many wire fields follow the key type in the private section
/// (OpenSSH's `sshkey_private_serialize`).
fn private_fields(key_type: &[u8]) -> Option<usize> {
    match key_type {
        b"ssh-ed25519" => Some(2),
        b"ecdsa-sha2-nistp256" | b"ecdsa-sha2-nistp384" | b"ecdsa-sha2-nistp521" => Some(3),
        b"ssh-rsa" => Some(6),
        _ => None,
    }
}

/// An unencrypted OpenSSH private key (`openssh-key-v1`) with another
/// comment: the comment, the last field of the private section, is replaced
/// and the section padded again to the cipher's block size of 8.
fn with_private_comment(text: &str, comment: &str) -> Result<String> {
    let body: String = text
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != PRIVATE_BEGIN)
        .skip(1)
        .take_while(|l| *l != PRIVATE_END)
        .collect();
    let blob = base64::engine::general_purpose::STANDARD.decode(body.as_bytes()).context("key is not base64")?;
    ensure!(blob.starts_with(PRIVATE_MAGIC), "not an openssh-key-v1 private key");
    let mut reader = Reader { data: &blob, pos: PRIVATE_MAGIC.len() };
    let cipher = reader.string()?;
    let kdf = reader.string()?;
    let kdf_options = reader.string()?;
    ensure!(cipher == b"none" && kdf == b"none", "the key is encrypted");
    ensure!(reader.u32()? == 1, "more than one key in the file");
    let public = reader.string()?;
    let private = reader.string()?;

    let mut section = Reader { data: private, pos: 0 };
    let check = (section.u32()?, section.u32()?);
    ensure!(check.0 == check.1, "check bytes differ");
    let key_type = section.string()?;
    let fields =
        private_fields(key_type).with_context(|| format!("unknown key type {}", String::from_utf8_lossy(key_type)))?;
    for _ in 0..fields {
        section.string()?;
    }
    let fields_end = section.pos;
    section.string()?;

    let mut new_private = Vec::with_capacity(private.len() + comment.len());
    new_private.extend_from_slice(&private[..fields_end]);
    put_string(&mut new_private, comment.as_bytes());
    let mut pad = 1u8;
    while !new_private.len().is_multiple_of(8) {
        new_private.push(pad);
        pad += 1;
    }

    let mut out = PRIVATE_MAGIC.to_vec();
    put_string(&mut out, cipher);
    put_string(&mut out, kdf);
    put_string(&mut out, kdf_options);
    out.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut out, public);
    put_string(&mut out, &new_private);
    let encoded = base64::engine::general_purpose::STANDARD.encode(&out);
    let mut pem = String::with_capacity(encoded.len() + 100);
    pem.push_str(PRIVATE_BEGIN);
    pem.push('\n');
    for line in encoded.as_bytes().chunks(70) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(PRIVATE_END);
    pem.push('\n');
    Ok(pem)
}

#[derive(Default)]
struct PoolState {
    ready: VecDeque<KeySet>,
    next_set: u64,
    stopping: bool,
    /// Sets creates took from the pool.
    taken: u64,
    /// Creates that found the pool empty and generated their keys themselves.
    generated_at_create: u64,
    /// Sets the background generated.
    generated: u64,
    last_error: Option<String>,
}

struct PoolInner {
    dir: PathBuf,
    size: usize,
    state: Mutex<PoolState>,
    wake: Condvar,
}

impl PoolInner {
    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Sets of host keys generated ahead of the creates that take them. One
/// background thread keeps `size` sets ready, generating one set at a time
/// at the lowest CPU priority, in `dir`.
pub(crate) struct HostKeyPool {
    inner: Arc<PoolInner>,
    filler: Mutex<Option<JoinHandle<()>>>,
}

impl HostKeyPool {
    /// Starts filling the pool in the background; returns at once.
    pub(crate) fn start(dir: PathBuf, size: usize) -> Result<Self> {
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("remove {}", dir.display()))
            }
            _ => {}
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let inner = Arc::new(PoolInner { dir, size, state: Mutex::new(PoolState::default()), wake: Condvar::new() });
        let filler_inner = inner.clone();
        let filler = std::thread::Builder::new().name("host-key-pool".into()).spawn(move || fill(&filler_inner))?;
        Ok(Self { inner, filler: Mutex::new(Some(filler)) })
    }

    /// A ready set, or `None` when the pool is empty (the caller then
    /// generates keys itself); taking a set makes the background refill.
    pub(crate) fn take(&self) -> Option<KeySet> {
        let mut state = self.inner.state();
        let set = state.ready.pop_front();
        if set.is_some() {
            state.taken += 1;
        } else {
            state.generated_at_create += 1;
        }
        self.inner.wake.notify_all();
        set
    }

    pub(crate) fn to_json(&self) -> Value {
        let state = self.inner.state();
        json!({
            "size": self.inner.size, "ready": state.ready.len(), "taken": state.taken,
            "generated": state.generated, "generated_at_create": state.generated_at_create,
            "last_error": state.last_error,
        })
    }

    /// Stops the background (after the set it is generating) and removes
    /// the pool's directory.
    pub(crate) fn stop(&self) {
        self.inner.state().stopping = true;
        self.inner.wake.notify_all();
        let filler = self.filler.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(filler) = filler {
            let _ = filler.join();
        }
        self.inner.state().ready.clear();
        let _ = std::fs::remove_dir_all(&self.inner.dir);
    }
}

/// The background of a pool: generates sets until `size` are ready, then
/// sleeps until a create takes one or the pool stops.
fn fill(inner: &PoolInner) {
    loop {
        let id = {
            let mut state = inner.state();
            while !state.stopping && state.ready.len() >= inner.size {
                state = inner.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.stopping {
                return;
            }
            state.next_set += 1;
            state.next_set
        };
        let dir = inner.dir.join(id.to_string());
        match generate_set(&dir) {
            Ok(set) => {
                let mut state = inner.state();
                state.generated += 1;
                if state.stopping {
                    return;
                }
                state.ready.push_back(set);
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                tracing::warn!(error = %format!("{e:#}"), "generating a host key set for the pool");
                let mut state = inner.state();
                state.last_error = Some(format!("{e:#}"));
                // Not in a tight loop when ssh-keygen cannot run at all.
                if !state.stopping {
                    let _ = inner.wake.wait_timeout(state, std::time::Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pve-sim-hostkeys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn ssh_keygen(args: &[&str], file: &Path) -> String {
        let out = Command::new("ssh-keygen").args(args).arg(file).output().expect("ssh-keygen");
        assert!(out.status.success(), "ssh-keygen {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn a_comment_is_rewritten_in_both_files_and_the_key_stays_valid() {
        let dir = temp_dir("comment");
        for (key_type, _) in HOST_KEYS {
            let private = dir.join(format!("key_{key_type}"));
            keygen(&private, key_type, POOL_COMMENT, false).expect("keygen");
            let before = ssh_keygen(&["-y", "-f"], &private);
            for comment in ["root@web-1", "root@a-much-longer-host-name-than-the-pool-had.example.com", ""] {
                let text = std::fs::read_to_string(&private).expect("read");
                std::fs::write(&private, with_private_comment(&text, comment).expect("rewrite")).expect("write");
                // `-y` reads the private key only and prints its comment.
                let after = ssh_keygen(&["-y", "-f"], &private);
                let blob = |line: &str| line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
                assert_eq!(blob(&after), blob(&before), "{key_type}: the key itself is unchanged");
                assert_eq!(after.split_whitespace().nth(2).unwrap_or(""), comment, "{key_type}");
                let text = std::fs::read_to_string(&private).expect("read");
                assert!(text.lines().all(|l| l.len() <= 70), "{key_type}: lines of 70 characters");
            }
            let public = private.with_extension("pub");
            let line = std::fs::read_to_string(&public).expect("read pub");
            let rewritten = with_public_comment(&line, "root@web-1").expect("pub");
            assert!(
                rewritten.ends_with(" root@web-1\n") && rewritten.starts_with(line.split(' ').next().unwrap_or(""))
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn foreign_text_is_refused_without_panicking() {
        for text in ["", "garbage", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"] {
            assert!(with_private_comment(text, "root@x").is_err(), "{text:?}");
        }
        assert!(with_public_comment("ssh-ed25519", "root@x").is_err());
    }

    #[test]
    fn a_pool_fills_in_the_background_and_hands_out_each_set_once() {
        let dir = temp_dir("pool");
        let pool = HostKeyPool::start(dir.join("pool"), 2).expect("pool");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while pool.to_json()["ready"] != 2 {
            assert!(std::time::Instant::now() < deadline, "pool not filled: {}", pool.to_json());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let mut fingerprints = Vec::new();
        for n in 0..3 {
            let root = dir.join(format!("ct{n}"));
            std::fs::create_dir_all(root.join("etc/ssh")).expect("etc/ssh");
            let comment = format!("root@ct{n}");
            let keys = match pool.take() {
                Some(set) => install(set, &root, &comment).expect("install"),
                None => generate(&root, &comment).expect("generate"),
            };
            for (key, (_, file)) in keys.iter().zip(HOST_KEYS) {
                let public = root.join(file).with_extension("pub");
                let listed = ssh_keygen(&["-l", "-E", "sha256", "-f"], &public);
                assert!(listed.contains(&key.fingerprint) && listed.contains(&comment), "{listed}");
                fingerprints.push(key.fingerprint.clone());
            }
        }
        let state = pool.to_json();
        assert_eq!(state["taken"].as_u64().unwrap_or(0) + state["generated_at_create"].as_u64().unwrap_or(0), 3);
        assert!(state["taken"].as_u64().unwrap_or(0) >= 2, "{state}");
        let mut unique = fingerprints.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), fingerprints.len(), "every container has keys of its own");
        pool.stop();
        assert!(!dir.join("pool").exists(), "the pool's directory is removed when it stops");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
