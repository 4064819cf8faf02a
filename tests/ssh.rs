//! The SSH client against a real OpenSSH server on loopback.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use infrahaus_operator::discovery::{self, Protocol};
use infrahaus_operator::layout::{self, LayoutInput};
use infrahaus_operator::ssh::{
    connect, connect_with_retry, shell_quote, ExitStatus, HostKeyCheck, SshError, SshKeyPair, SshSession, SshTarget,
    Stream,
};
use testbed::sshd::{Sshd, SshdSetup};
use tokio::time::Instant;

const TIMEOUT: Duration = Duration::from_secs(30);
const OTHER_FINGERPRINT: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";

/// A key and an sshd that accepts it.
fn server() -> (SshKeyPair, Sshd) {
    let key = SshKeyPair::generate("infrahaus-operator-test");
    let sshd = Sshd::start(&key.public_key_line().expect("public key")).expect("start sshd");
    (key, sshd)
}

fn target(sshd: &Sshd, key: &SshKeyPair, host_keys: HostKeyCheck) -> SshTarget {
    SshTarget::root(sshd.addr(), key.clone(), host_keys)
}

async fn session(sshd: &Sshd, key: &SshKeyPair) -> SshSession {
    let pinned = HostKeyCheck::Pinned(vec![sshd.host_key_fingerprint().to_owned()]);
    connect(&target(sshd, key, pinned), TIMEOUT).await.unwrap_or_else(|e| panic!("connect: {e}\n{}", sshd.log_tail(20)))
}

async fn capture(session: &SshSession, command: &str) -> String {
    let output = session.exec_capture(command, TIMEOUT).await.expect("exec_capture");
    assert!(output.status.success(), "{command}: {output:?}");
    output.stdout
}

#[tokio::test]
async fn trust_first_reports_the_fingerprint_ssh_keygen_prints() {
    let (key, sshd) = server();
    let session = connect(&target(&sshd, &key, HostKeyCheck::TrustFirst), TIMEOUT).await.expect("connect");
    assert_eq!(session.host_key_fingerprint(), sshd.host_key_fingerprint());
    assert_eq!(capture(&session, "whoami").await.trim(), "root");
    session.close().await.expect("close");
}

#[tokio::test]
async fn pinned_key_is_accepted_and_other_pins_are_a_permanent_mismatch() {
    let (key, sshd) = server();
    let right = HostKeyCheck::Pinned(vec![OTHER_FINGERPRINT.to_owned(), sshd.host_key_fingerprint().to_owned()]);
    let session = connect(&target(&sshd, &key, right), TIMEOUT).await.expect("pinned connect");
    assert_eq!(session.host_key_fingerprint(), sshd.host_key_fingerprint());

    let wrong = HostKeyCheck::Pinned(vec![OTHER_FINGERPRINT.to_owned()]);
    let started = Instant::now();
    let error = connect_with_retry(&target(&sshd, &key, wrong), Instant::now() + TIMEOUT)
        .await
        .expect_err("a wrong pin must fail");
    match &error {
        SshError::HostKeyMismatch { expected, got, .. } => {
            assert_eq!(expected, &vec![OTHER_FINGERPRINT.to_owned()]);
            assert_eq!(got, sshd.host_key_fingerprint());
        }
        other => panic!("expected HostKeyMismatch, got {other:?}"),
    }
    assert!(!error.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5), "a mismatch is not retried");
}

#[tokio::test]
async fn an_unknown_client_key_is_rejected() {
    let (_, sshd) = server();
    let stranger = SshKeyPair::generate("stranger");
    let error = connect(&target(&sshd, &stranger, HostKeyCheck::TrustFirst), TIMEOUT).await.expect_err("unknown key");
    assert!(matches!(error, SshError::AuthRejected { ref user, .. } if user == "root"), "{error:?}");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn connect_with_retry_waits_for_a_late_sshd() {
    let key = SshKeyPair::generate("late");
    let setup = SshdSetup::new(&key.public_key_line().expect("line")).expect("setup");
    let target =
        SshTarget::root(setup.addr(), key, HostKeyCheck::Pinned(vec![setup.host_key_fingerprint().to_owned()]));
    let connecting = tokio::spawn(async move {
        let started = Instant::now();
        let session = connect_with_retry(&target, Instant::now() + TIMEOUT).await;
        (session, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sshd = tokio::task::spawn_blocking(move || setup.start()).await.expect("join").expect("start sshd");
    let (session, waited) = connecting.await.expect("join");
    let session = session.unwrap_or_else(|e| panic!("{e}\n{}", sshd.log_tail(20)));
    assert!(waited >= Duration::from_millis(1400), "connected after {waited:?}");
    assert_eq!(capture(&session, "echo up").await, "up\n");
}

#[tokio::test]
async fn connect_with_retry_gives_up_at_the_deadline() {
    let key = SshKeyPair::generate("nobody-home");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
    let target = SshTarget::root(port, key, HostKeyCheck::TrustFirst);
    let started = Instant::now();
    let error =
        connect_with_retry(&target, Instant::now() + Duration::from_secs(2)).await.expect_err("nothing listens");
    let elapsed = started.elapsed();
    match &error {
        SshError::GaveUp { attempts, last, .. } => {
            assert!(*attempts >= 3, "{attempts} attempts");
            assert!(last.is_transient(), "{last}");
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
}

#[tokio::test]
async fn exec_streams_lines_in_order_and_returns_the_exit_code() {
    let (key, sshd) = server();
    let session = session(&sshd, &key).await;
    let mut lines = Vec::new();
    let status = session
        .exec(
            "echo one; sleep 0.2; echo two >&2; sleep 0.2; echo 'three four'; sleep 0.2; printf 'tail'; exit 3",
            TIMEOUT,
            |stream, line| lines.push((stream, line.to_owned())),
        )
        .await
        .expect("exec");
    assert_eq!(status, ExitStatus::Code(3));
    assert_eq!(
        lines,
        vec![
            (Stream::Stdout, "one".to_owned()),
            (Stream::Stderr, "two".to_owned()),
            (Stream::Stdout, "three four".to_owned()),
            (Stream::Stdout, "tail".to_owned()),
        ]
    );

    let status = session.exec("exit 0", TIMEOUT, |_, _| {}).await.expect("exec");
    assert!(status.success());
}

#[tokio::test]
async fn exec_reassembles_lines_split_across_packets() {
    let (key, sshd) = server();
    let session = session(&sshd, &key).await;
    let mut lines = Vec::new();
    let status = session
        .exec("seq 1 50000; seq 1 3 >&2", TIMEOUT, |stream, line| {
            if stream == Stream::Stdout {
                lines.push(line.to_owned())
            }
        })
        .await
        .expect("exec");
    assert!(status.success());
    let expected: Vec<String> = (1..=50000).map(|n| n.to_string()).collect();
    assert_eq!(lines.len(), expected.len());
    assert!(lines == expected, "lines differ");
}

#[tokio::test]
async fn exec_reports_a_signal() {
    let (key, sshd) = server();
    let session = session(&sshd, &key).await;
    let status = session.exec("kill -TERM $$", TIMEOUT, |_, _| {}).await.expect("exec");
    assert_eq!(status, ExitStatus::Signal { signal: "TERM".into(), core_dumped: false });
}

#[tokio::test]
async fn exec_times_out_and_the_session_stays_usable() {
    let (key, sshd) = server();
    let session = session(&sshd, &key).await;
    let mut lines = Vec::new();
    let started = Instant::now();
    let error = session
        .exec("echo started; sh -c 'sleep 31'; echo never", Duration::from_secs(1), |stream, line| {
            if stream == Stream::Stdout {
                lines.push(line.to_owned())
            }
        })
        .await
        .expect_err("must time out");
    assert!(matches!(error, SshError::CommandTimeout { .. }), "{error:?}");
    assert!(!error.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(lines, vec!["started"]);
    assert_eq!(capture(&session, "echo still here").await, "still here\n");
    let survivors = capture(&session, "pgrep -x -f 'sleep 31' || true").await;
    assert!(survivors.is_empty(), "the timed-out command still runs: {survivors}");
}

#[tokio::test]
async fn exec_ends_at_the_exit_status_when_a_background_process_keeps_the_output_open() {
    let (key, sshd) = server();
    let session = session(&sshd, &key).await;
    let mut lines = Vec::new();
    let status = session
        .exec("echo starting; sleep 41 & echo started", Duration::from_secs(20), |_, line| lines.push(line.to_owned()))
        .await
        .expect("the command exited; the background process is not waited for");
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(lines, vec!["starting", "started"]);
    let survivors = capture(&session, "pgrep -x -f 'sleep 41' || true").await;
    assert!(!survivors.is_empty(), "the background process was stopped");
    capture(&session, "pkill -x -f 'sleep 41' || true").await;
}

#[tokio::test]
async fn upload_creates_parents_and_sets_the_mode() {
    let (key, sshd) = server();
    let session = session(&sshd, &key).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8");

    let cases: [(&str, &[u8], u32, &str); 3] = [
        ("deep/er/app.conf", b"server { listen 80; }\n", 0o640, "640"),
        ("odd name $(x)/it's.sh", b"#!/bin/sh\necho hi\n", 0o755, "755"),
        ("deep/er/app.conf", b"\x00\x01binary\xff", 0o600, "600"),
    ];
    for (relative, content, mode, expected_mode) in cases {
        let path = format!("{root}/{relative}");
        session.upload(&path, content, mode).await.expect("upload");
        let stat = capture(&session, &format!("stat -c %a {}", shell_quote(&path))).await;
        assert_eq!(stat.trim(), expected_mode, "{relative}");
        assert_eq!(std::fs::read(&path).expect("read"), content, "{relative}");
    }

    let error = session.upload(root, b"x", 0o644).await.expect_err("a directory cannot be replaced");
    assert!(matches!(error, SshError::Upload { ref stderr, .. } if stderr.contains("is a directory")), "{error:?}");
}

#[tokio::test]
async fn layout_uploads_and_config_sync_runs_with_a_present_package() {
    let (key, sshd) = server();
    let session = session(&sshd, &key).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8");

    let plan = layout::render(&LayoutInput {
        namespace: "default".into(),
        name: "web-1".into(),
        uid: "0b7f4c1e-7d1a-4a39-9d6c-3f1b2a0c9e11".into(),
        hostname: "web-1; $(touch pwned)".into(),
        vmid: 120,
        template_name: Some("web".into()),
        packages: vec!["bash".into()],
    })
    .expect("render");
    // Rooted under a temp dir: the sshd runs on this machine, not in a container.
    for file in &plan.files {
        session
            .upload(&format!("{root}{}", file.path), file.content.as_bytes(), file.mode)
            .await
            .expect("upload layout file");
        let mode = std::fs::metadata(format!("{root}{}", file.path)).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, file.mode, "{}", file.path);
    }

    let command = format!(
        "CONFIG_MANAGER_ENV={} /bin/sh {}",
        shell_quote(&format!("{root}{}", layout::CONFIG_ENV_PATH)),
        shell_quote(&format!("{root}{}", layout::CONFIG_SYNC_PATH)),
    );
    for _ in 0..2 {
        let mut lines = Vec::new();
        let status = session
            .exec(&command, TIMEOUT, |stream, line| lines.push((stream, line.to_owned())))
            .await
            .expect("config-sync");
        assert!(status.success(), "{status}: {lines:?}");
        let stdout: Vec<&str> =
            lines.iter().filter(|(stream, _)| *stream == Stream::Stdout).map(|(_, line)| line.as_str()).collect();
        assert!(stdout.contains(&"config-sync: already installed: bash"), "{stdout:?}");
        assert_eq!(stdout.last(), Some(&"config-sync: all declared packages are installed"));
    }
    assert!(!dir.path().join("pwned").exists());
    let home_pwned = capture(&session, "ls pwned 2>/dev/null || true").await;
    assert!(home_pwned.is_empty(), "a value was executed: {home_pwned}");
}

#[tokio::test]
async fn discovery_commands_run_and_parse_on_this_host() {
    let (key, sshd) = server();
    let session = session(&sshd, &key).await;

    let services = session.exec_capture(discovery::SERVICES_COMMAND, TIMEOUT).await.expect("systemctl");
    let running = discovery::parse_running_services(&services);
    assert!(running.iter().all(|name| !discovery::is_system_service(name)), "{running:?}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let process = std::fs::read_to_string("/proc/self/comm").expect("comm");
    let tcp = capture(&session, discovery::TCP_PORTS_COMMAND).await;
    let udp = capture(&session, discovery::UDP_PORTS_COMMAND).await;
    let ports = discovery::parse_listening_ports(&tcp, &udp);
    assert!(
        ports.iter().any(|p| p.port == port && p.protocol == Protocol::Tcp && p.process == process.trim()),
        "{port} {process} not in {ports:?}\n{tcp}"
    );
    assert!(ports.iter().any(|p| p.port == sshd.addr().port() && p.process == "sshd"), "sshd not in {ports:?}");
    assert!(ports.windows(2).all(|w| w[0] <= w[1]), "sorted");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("db-password"), b"s3cr3t").expect("write");
    std::fs::write(dir.path().join("bad name"), b"x").expect("write");
    let listing = capture(&session, &discovery::credentials_command_for(dir.path().to_str().expect("utf-8"))).await;
    let credentials = discovery::parse_credentials(&listing);
    assert_eq!(credentials.files.len(), 1, "{credentials:?}");
    assert_eq!(credentials.files["db-password"], b"s3cr3t");
    assert_eq!(credentials.skipped.len(), 1);
    assert_eq!(credentials.skipped[0].name, "bad name");

    // A file larger than a Secret can hold is skipped in the container, never read.
    let huge = dir.path().join("huge");
    std::fs::File::create(&huge).and_then(|f| f.set_len(64 * 1024 * 1024)).expect("sparse file");
    let listing = capture(&session, &discovery::credentials_command_for(dir.path().to_str().expect("utf-8"))).await;
    assert!(listing.len() < 64 * 1024, "the listing read the huge file: {} bytes", listing.len());
    let credentials = discovery::parse_credentials(&listing);
    let skipped: Vec<_> = credentials.skipped.iter().map(|s| (s.name.as_str(), s.reason.as_str())).collect();
    assert!(skipped.contains(&("huge", "larger than 1 MiB")), "{skipped:?}");
    drop(listener);
}

#[tokio::test]
async fn output_without_newlines_arrives_in_bounded_lines_and_captures_are_capped() {
    let (key, sshd) = server();
    let session = session(&sshd, &key).await;
    let mut lines = Vec::new();
    let status = session
        .exec("head -c 1000000 /dev/zero | tr '\\0' x", TIMEOUT, |_, line| lines.push(line.len()))
        .await
        .expect("exec");
    assert!(status.success());
    assert_eq!(lines.iter().sum::<usize>(), 1_000_000, "nothing lost");
    assert!(lines.iter().all(|len| *len <= infrahaus_operator::ssh::MAX_LINE_BYTES), "{:?}", &lines[..3]);

    let limit = infrahaus_operator::ssh::CAPTURE_LIMIT;
    let error = session
        .exec_capture(&format!("head -c {} /dev/zero", limit + 1), TIMEOUT)
        .await
        .expect_err("more than the capture limit");
    assert!(matches!(error, SshError::OutputTooLarge { .. }), "{error:?}");
    assert_eq!(capture(&session, "echo still here").await, "still here\n");
}
