use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use russh::client::Handle;
use russh::{ChannelMsg, Disconnect, Sig};

use super::lines::LineSplitter;
use super::{shell_quote, ClientHandler, SshError};

/// Uploads are small (config files, scripts); this only guards against a dead peer.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Exported to every command so that a timed-out command and its children can be
/// found and stopped.
const EXEC_ID_VARIABLE: &str = "INFRAHAUS_EXEC_ID";
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// The most output [`SshSession::exec_capture`] keeps per stream; more is an
/// error, not a growing buffer.
pub const CAPTURE_LIMIT: usize = 4 * 1024 * 1024;
/// How long output is still read after the exit status arrived. A process the
/// command left in the background (`server &`) may hold stdout open for as long
/// as it runs; the command has finished all the same.
const EXIT_DRAIN: Duration = Duration::from_secs(2);

/// SSH reports stderr as extended data of this type (RFC 4254, section 5.2).
const EXTENDED_DATA_STDERR: u32 = 1;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    Code(u32),
    Signal { signal: String, core_dumped: bool },
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }

    pub fn code(&self) -> Option<u32> {
        match self {
            ExitStatus::Code(code) => Some(*code),
            ExitStatus::Signal { .. } => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal { signal, core_dumped } => {
                write!(f, "signal {signal}")?;
                if *core_dumped {
                    write!(f, " (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// Collected result of [`SshSession::exec_capture`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// An authenticated SSH connection. Commands run on fresh channels, so one session
/// serves any number of sequential or concurrent commands.
pub struct SshSession {
    handle: Handle<ClientHandler>,
    addr: SocketAddr,
    host_key_fingerprint: String,
}

impl fmt::Debug for SshSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshSession")
            .field("addr", &self.addr)
            .field("host_key_fingerprint", &self.host_key_fingerprint)
            .finish_non_exhaustive()
    }
}

impl SshSession {
    pub(super) fn new(handle: Handle<ClientHandler>, addr: SocketAddr, host_key_fingerprint: String) -> Self {
        Self { handle, addr, host_key_fingerprint }
    }

    /// `SHA256:...` of the host key the server presented, to pin after a first contact.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.host_key_fingerprint
    }

    /// Runs `command` through the remote user's shell, calling `on_line` for every
    /// line of stdout and stderr as it arrives. A final line without a newline is
    /// delivered at the end. A non-zero exit is a normal result, not an error.
    pub async fn exec(
        &self,
        command: &str,
        timeout: Duration,
        on_line: impl FnMut(Stream, &str),
    ) -> Result<ExitStatus, SshError> {
        self.exec_marked(&random_exec_id(), false, command, timeout, on_line).await
    }

    /// [`exec`](Self::exec) with the marker `exec_id` (hex digits), whose
    /// process a later session can wait for ([`settle_exec`](Self::settle_exec)).
    pub async fn exec_as(
        &self,
        exec_id: &str,
        command: &str,
        timeout: Duration,
        on_line: impl FnMut(Stream, &str),
    ) -> Result<ExitStatus, SshError> {
        self.exec_marked(exec_id, true, command, timeout, on_line).await
    }

    async fn exec_marked(
        &self,
        exec_id: &str,
        record_pid: bool,
        command: &str,
        timeout: Duration,
        mut on_line: impl FnMut(Stream, &str),
    ) -> Result<ExitStatus, SshError> {
        let mut stdout = LineSplitter::default();
        let mut stderr = LineSplitter::default();
        let status = self
            .run(command, exec_id, record_pid, None, timeout, |stream, chunk| match stream {
                Stream::Stdout => stdout.push(chunk, |line| on_line(Stream::Stdout, line)),
                Stream::Stderr => stderr.push(chunk, |line| on_line(Stream::Stderr, line)),
            })
            .await;
        // Tails are delivered even when the command timed out: they are often the
        // most useful lines for explaining why.
        stdout.finish(|line| on_line(Stream::Stdout, line));
        stderr.finish(|line| on_line(Stream::Stderr, line));
        status
    }

    /// Runs `command` and collects its output (invalid UTF-8 replaced).
    pub async fn exec_capture(&self, command: &str, timeout: Duration) -> Result<Output, SshError> {
        self.exec_capture_with_stdin(command, None, timeout).await
    }

    /// Writes `content` to the absolute `path` with permission bits `mode`,
    /// creating parent directories. The file is written under a temporary name in
    /// the same directory and renamed, so readers never see a partial file.
    pub async fn upload(&self, path: &str, content: &[u8], mode: u32) -> Result<(), SshError> {
        let command = upload_command(path, mode)?;
        let output = self.exec_capture_with_stdin(&command, Some(content), UPLOAD_TIMEOUT).await?;
        if output.status.success() {
            Ok(())
        } else {
            Err(SshError::Upload {
                path: path.to_owned(),
                status: output.status,
                stderr: output.stderr.trim().to_owned(),
            })
        }
    }

    /// Ends the connection politely.
    pub async fn close(self) -> Result<(), SshError> {
        self.handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await
            .map_err(|source| SshError::Handshake { addr: self.addr, source })
    }

    /// Runs `command` with `stdin` written to it and collects its output.
    pub async fn exec_capture_with_stdin(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, SshError> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut too_large = false;
        let status = self
            .run(command, &random_exec_id(), false, stdin, timeout, |stream, chunk| {
                let buffer = match stream {
                    Stream::Stdout => &mut stdout,
                    Stream::Stderr => &mut stderr,
                };
                if buffer.len() + chunk.len() > CAPTURE_LIMIT {
                    too_large = true;
                } else {
                    buffer.extend_from_slice(chunk);
                }
            })
            .await?;
        if too_large {
            return Err(SshError::OutputTooLarge { command: command.to_owned(), limit: CAPTURE_LIMIT });
        }
        Ok(Output {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    async fn run(
        &self,
        command: &str,
        exec_id: &str,
        record_pid: bool,
        stdin: Option<&[u8]>,
        timeout: Duration,
        mut on_data: impl FnMut(Stream, &[u8]),
    ) -> Result<ExitStatus, SshError> {
        let channel_error = |source| SshError::Channel { command: command.to_owned(), source };
        let mut channel = self.handle.channel_open_session().await.map_err(channel_error)?;
        let exec_id: String = exec_id.chars().filter(char::is_ascii_hexdigit).collect();

        let conversation = async {
            let marked =
                if record_pid { recorded_command(command, &exec_id) } else { marked_command(command, &exec_id) };
            channel.exec(true, marked).await?;
            // A command may exit without reading all of its input; its exit status
            // then explains more than the failed write, so the write error is only
            // reported when no status arrives.
            let mut write_error = None;
            if let Some(bytes) = stdin {
                write_error = channel.data(bytes).await.err();
            }
            // Without EOF a command that reads stdin would wait forever.
            if write_error.is_none() {
                write_error = channel.eof().await.err();
            }
            let mut status = None;
            loop {
                let message = match status {
                    None => channel.wait().await,
                    Some(_) => tokio::time::timeout(EXIT_DRAIN, channel.wait()).await.unwrap_or(None),
                };
                let Some(message) = message else { break };
                match message {
                    ChannelMsg::Data { data } => on_data(Stream::Stdout, &data),
                    ChannelMsg::ExtendedData { data, ext } if ext == EXTENDED_DATA_STDERR => {
                        on_data(Stream::Stderr, &data)
                    }
                    ChannelMsg::ExitStatus { exit_status } => status = Some(ExitStatus::Code(exit_status)),
                    ChannelMsg::ExitSignal { signal_name, core_dumped, .. } => {
                        status = Some(ExitStatus::Signal { signal: signal_name_of(&signal_name), core_dumped })
                    }
                    ChannelMsg::Failure => return Err(russh::Error::RequestDenied),
                    _ => {}
                }
            }
            match (status, write_error) {
                (None, Some(error)) => Err(error),
                (status, _) => Ok(status),
            }
        };

        match tokio::time::timeout(timeout, conversation).await {
            Ok(Ok(Some(status))) => {
                // Still open when a background process holds the output.
                let _ = channel.close().await;
                Ok(status)
            }
            Ok(Ok(None)) => Err(SshError::NoExitStatus { command: command.to_owned() }),
            Ok(Err(source)) => Err(channel_error(source)),
            Err(_) => {
                let _ = channel.close().await;
                self.kill_exec(&exec_id).await;
                Err(SshError::CommandTimeout { command: command.to_owned(), timeout })
            }
        }
    }

    /// Waits, for at most `timeout`, until the command last run with the
    /// marker `exec_id` ([`exec_as`](Self::exec_as)) has ended, and stops its
    /// process group if it has not by then. A command whose controller went
    /// away (a process killed, a reconcile dropped) keeps running in the
    /// guest; started again beside it, a script would race its own earlier
    /// run. Only the command itself is waited for: a server it started in the
    /// background is meant to stay. Returns whether it was still running.
    pub async fn settle_exec(&self, exec_id: &str, timeout: Duration) -> Result<bool, SshError> {
        let exec_id: String = exec_id.chars().filter(char::is_ascii_hexdigit).collect();
        let command = settle_exec_command(&exec_id, timeout.as_secs().max(1));
        let output = self.exec_capture(&command, timeout + KILL_TIMEOUT).await?;
        Ok(output.stdout.contains("found"))
    }

    /// Kills every process that inherited the marker of a timed-out command.
    ///
    /// Closing the channel does not stop a command that produces no output, and
    /// OpenSSH refuses "signal" channel requests for root sessions ("session
    /// signalling requires privilege separation"). The marker also reaches the
    /// command's children, which a signal to the shell alone would miss.
    async fn kill_exec(&self, exec_id: &str) {
        let killer = kill_exec_command(exec_id);
        let killed = async {
            let mut channel = self.handle.channel_open_session().await?;
            channel.exec(true, killer).await?;
            while channel.wait().await.is_some() {}
            Ok::<(), russh::Error>(())
        };
        match tokio::time::timeout(KILL_TIMEOUT, killed).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(addr = %self.addr, %error, "could not stop a timed-out command")
            }
            Err(_) => tracing::warn!(addr = %self.addr, "stopping a timed-out command timed out"),
        }
    }
}

/// Runs `command` in a `/bin/sh` whose environment, and so that of everything it
/// starts, carries `exec_id`. The `exec` keeps the marked shell at the pid sshd
/// waits on, so exit codes and signals still come straight from the command.
fn marked_command(command: &str, exec_id: &str) -> String {
    format!("export {EXEC_ID_VARIABLE}={exec_id}; exec /bin/sh -c {}", shell_quote(command))
}

/// Where a recorded command's pid is kept in the guest.
fn pid_file(exec_id: &str) -> String {
    format!("/tmp/.infrahaus-exec-{exec_id}.pid")
}

/// [`marked_command`] that also records its pid (the shell `exec`s the
/// command, so the pid stays the command's).
fn recorded_command(command: &str, exec_id: &str) -> String {
    let pid_file = pid_file(exec_id);
    format!(
        "export {EXEC_ID_VARIABLE}={exec_id}; echo $$ > {pid_file} 2>/dev/null; exec /bin/sh -c {}",
        shell_quote(command)
    )
}

fn random_exec_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Prints `found` if the recorded command of `exec_id` still runs, then
/// polls every second until it ends (exit 0) or `seconds` pass; then its
/// process group is stopped (TERM, then KILL) and the exit is 3.
fn settle_exec_command(exec_id: &str, seconds: u64) -> String {
    let marker = format!("{EXEC_ID_VARIABLE}={exec_id}");
    let pid_file = pid_file(exec_id);
    format!(
        "pid=$(cat {pid_file} 2>/dev/null) || exit 0; \
         case \"$pid\" in ''|*[!0-9]*) exit 0;; esac; \
         running() {{ tr '\\0' '\\n' < /proc/$pid/environ 2>/dev/null | grep -qxF {marker}; }}; \
         running || exit 0; echo found; \
         end=$(( $(date +%s) + {seconds} )); \
         while running; do \
           if [ \"$(date +%s)\" -ge \"$end\" ]; then \
             kill -TERM -- -$pid 2>/dev/null || kill -TERM $pid 2>/dev/null; sleep 2; \
             kill -KILL -- -$pid 2>/dev/null || kill -KILL $pid 2>/dev/null; exit 3; \
           fi; sleep 1; \
         done; exit 0"
    )
}

/// Two passes catch children forked while the first pass ran.
fn kill_exec_command(exec_id: &str) -> String {
    let marker = format!("{EXEC_ID_VARIABLE}={exec_id}");
    format!(
        "for pass in 1 2; do for environ in /proc/[0-9]*/environ; do \
         if tr '\\0' '\\n' < \"$environ\" 2>/dev/null | grep -qxF {marker}; then \
         pid=${{environ%/environ}}; kill -KILL \"${{pid#/proc/}}\" 2>/dev/null; fi; done; done; true"
    )
}

fn signal_name_of(signal: &Sig) -> String {
    let name = match signal {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name,
    };
    name.to_owned()
}

/// The shell command behind [`SshSession::upload`]: reads the content from stdin.
///
/// Paths must be absolute, so no argument can start with `-`; that keeps the command
/// free of `--`, which busybox tools do not all accept.
pub fn upload_command(path: &str, mode: u32) -> Result<String, SshError> {
    let invalid = |reason| SshError::InvalidPath { path: path.to_owned(), reason };
    if !path.starts_with('/') {
        return Err(invalid("must be absolute"));
    }
    if path.ends_with('/') {
        return Err(invalid("must name a file, not a directory"));
    }
    if path.contains('\0') {
        return Err(invalid("must not contain NUL"));
    }
    if path.split('/').any(|part| part == "." || part == "..") {
        return Err(invalid("must not contain . or .. components"));
    }
    if mode > 0o7777 {
        return Err(SshError::InvalidMode { mode });
    }
    let parent = match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((parent, _)) => parent,
    };
    let target = shell_quote(path);
    let parent = shell_quote(parent);
    Ok(format!(
        "set -e; \
         if [ -d {target} ]; then echo {target}' is a directory' >&2; exit 1; fi; \
         mkdir -p {parent}; \
         tmp=$(mktemp {parent}/.infrahaus-upload.XXXXXX); \
         trap 'rm -f \"$tmp\"' EXIT; \
         cat > \"$tmp\"; \
         chmod {mode:04o} \"$tmp\"; \
         mv -f \"$tmp\" {target}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    #[test]
    fn upload_command_rejects_unsafe_paths_and_modes() {
        let cases: [(&str, u32, bool); 9] = [
            ("/etc/app.conf", 0o644, true),
            ("/top", 0o600, true),
            ("relative/file", 0o644, false),
            ("/etc/dir/", 0o644, false),
            ("/etc/../root/x", 0o644, false),
            ("/etc/./x", 0o644, false),
            ("/nul\0byte", 0o644, false),
            ("/etc/x", 0o10644, false),
            ("/etc/$(reboot)/x y", 0o755, true),
        ];
        for (path, mode, ok) in cases {
            assert_eq!(upload_command(path, mode).is_ok(), ok, "{path:?} {mode:o}");
        }
    }

    fn run_locally(command: &str, stdin: &[u8]) -> std::process::Output {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        // The command may exit before reading its input; its status tells.
        let _ = child.stdin.take().expect("stdin").write_all(stdin);
        child.wait_with_output().expect("wait")
    }

    #[test]
    fn upload_command_writes_atomically_with_parents_and_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: [(&str, &[u8], u32); 4] = [
            ("a/b/c.conf", b"hello\n", 0o640),
            ("it's $(odd)/x y.sh", b"#!/bin/sh\n", 0o755),
            ("empty", b"", 0o600),
            ("a/b/c.conf", b"replaced", 0o644),
        ];
        for (relative, content, mode) in cases {
            let path = dir.path().join(relative);
            let command = upload_command(path.to_str().expect("utf-8 path"), mode).expect("command");
            let output = run_locally(&command, content);
            assert!(output.status.success(), "{command}: {output:?}");
            assert_eq!(std::fs::read(&path).expect("read back"), content);
            let actual = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o7777;
            assert_eq!(actual, mode, "{relative}");
        }
        let leftovers: Vec<_> =
            walk(dir.path()).into_iter().filter(|p| p.to_string_lossy().contains(".infrahaus-upload.")).collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn upload_command_refuses_to_replace_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let command = upload_command(dir.path().to_str().expect("utf-8"), 0o644).expect("command");
        let output = run_locally(&command, b"x");
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("is a directory"));
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            }
            found.push(path);
        }
        found
    }

    #[test]
    fn settle_exec_command_waits_for_the_recorded_command_not_its_servers() {
        let run = |id: &str, seconds: u64| {
            Command::new("sh").arg("-c").arg(settle_exec_command(id, seconds)).output().expect("run settle")
        };
        // Its own process group, as sshd gives each session.
        let spawn = |command: &str, id: &str| {
            use std::os::unix::process::CommandExt;
            Command::new("sh").arg("-c").arg(recorded_command(command, id)).process_group(0).spawn().expect("spawn")
        };
        let marked_pids = |id: &str| -> Vec<u32> {
            let marker = format!("{EXEC_ID_VARIABLE}={id}");
            let entries = std::fs::read_dir("/proc").expect("proc");
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/environ"))
                        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
                })
                .collect()
        };
        let kill_marked = |id: &str| {
            let killer = Command::new("sh").arg("-c").arg(kill_exec_command(id)).output().expect("run killer");
            assert!(killer.status.success(), "{killer:?}");
        };
        let none = run("abcd02", 5);
        assert_eq!((none.status.code(), none.stdout.as_slice()), (Some(0), &b""[..]), "nothing to wait for");

        let mut short = spawn("sleep 2", "abcd01");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let waited = run("abcd01", 20);
        assert_eq!(waited.status.code(), Some(0), "{waited:?}");
        assert_eq!(String::from_utf8_lossy(&waited.stdout).trim(), "found");
        assert!(matches!(short.try_wait(), Ok(Some(_))), "returned only once the recorded command ended");

        // A script that leaves a server behind has ended: the server is not waited for.
        let mut launcher = spawn("setsid sleep 44 >/dev/null 2>&1 </dev/null & exit 0", "abcd04");
        let _ = launcher.wait();
        // The server may still be between fork and exec (setsid forks again).
        let mut server = marked_pids("abcd04");
        for _ in 0..50 {
            if server.len() == 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            server = marked_pids("abcd04");
        }
        assert_eq!(server.len(), 1, "the server runs with the marker");
        let done = run("abcd04", 20);
        assert_eq!((done.status.code(), done.stdout.as_slice()), (Some(0), &b""[..]), "{done:?}");
        assert!(std::path::Path::new(&format!("/proc/{}", server[0])).exists(), "the server is left running");
        kill_marked("abcd04");

        let mut long = spawn("sleep 43", "abcd03");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let gave_up = run("abcd03", 1);
        assert_eq!(gave_up.status.code(), Some(3), "{gave_up:?}");
        assert!(matches!(long.wait().map(|s| s.code()), Ok(None)), "stopped by a signal after the timeout");
        let _ = short.wait();
        for id in ["abcd01", "abcd03", "abcd04"] {
            let _ = std::fs::remove_file(pid_file(id));
        }
    }

    #[test]
    fn kill_exec_command_stops_marked_processes_and_their_children() {
        let marked = Command::new("sh")
            .arg("-c")
            .arg(marked_command("sleep 41 & sleep 41; echo not reached", "feedface"))
            .spawn()
            .expect("spawn marked");
        let mut unmarked =
            Command::new("sh").arg("-c").arg(marked_command("sleep 42", "other")).spawn().expect("spawn unmarked");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let marked_pid = marked.id();
        let killer = Command::new("sh").arg("-c").arg(kill_exec_command("feedface")).output().expect("run killer");
        assert!(killer.status.success(), "{killer:?}");
        let mut marked = marked;
        let status = marked.wait().expect("wait");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
        let survivors = Command::new("pgrep").args(["-f", "sleep 41"]).output().expect("pgrep");
        assert!(survivors.stdout.is_empty(), "pid {marked_pid}'s child survived");
        assert!(matches!(unmarked.try_wait(), Ok(None)), "unmarked process was killed");
        let _ = unmarked.kill();
        let _ = unmarked.wait();
    }

    #[test]
    fn exit_status_display_and_success() {
        let cases = [
            (ExitStatus::Code(0), "exit code 0", true),
            (ExitStatus::Code(3), "exit code 3", false),
            (ExitStatus::Signal { signal: "KILL".into(), core_dumped: false }, "signal KILL", false),
            (ExitStatus::Signal { signal: "SEGV".into(), core_dumped: true }, "signal SEGV (core dumped)", false),
        ];
        for (status, text, success) in cases {
            assert_eq!(status.to_string(), text);
            assert_eq!(status.success(), success);
        }
    }
}
