//! Finalize-stage discovery: which application services run, which ports listen,
//! and which credentials the scripts left behind. Commands to run in the container
//! and pure parsers for their output.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::layout::CREDENTIALS_DIR;
use crate::ssh::Output;

pub const SERVICES_COMMAND: &str = "systemctl list-units --type=service --state=running --no-legend --no-pager --plain";
pub const TCP_PORTS_COMMAND: &str = "ss -tlnpH";
pub const UDP_PORTS_COMMAND: &str = "ss -ulnpH";

/// Services that come with the distribution and say nothing about what the
/// container is for. An entry ending in `*` matches by prefix; `getty@*` covers
/// every `getty@ttyN` instance.
pub const SYSTEM_SERVICES: &[&str] = &[
    "systemd-*",
    "dbus",
    "dbus-broker",
    "ssh",
    "sshd",
    "cron",
    "crond",
    "anacron",
    "atd",
    "rsyslog",
    "syslog-ng",
    "getty@*",
    "serial-getty@*",
    "console-getty",
    "container-getty@*",
    "user@*",
    "user-runtime-dir@*",
    "networking",
    "ifupdown-*",
    "ifup@*",
    "NetworkManager",
    "networkd-dispatcher",
    "wpa_supplicant",
    "dhcpcd",
    "resolvconf",
    "polkit",
    "udisks2",
    "accounts-daemon",
    "unattended-upgrades",
    "apt-daily*",
    "chrony",
    "chronyd",
    "ntp",
    "ntpsec",
    "qemu-guest-agent",
    "lxcfs",
    "cloud-init*",
    "snapd",
    "irqbalance",
    "rc-local",
    "kmod-static-nodes",
    "lvm2-*",
    "plymouth*",
    "auditd",
    "apparmor",
    "firewalld",
    "ufw",
];

/// The command that lists the credentials directory, one line per entry:
/// `file <base64 name> <base64 content>` for regular files and
/// `skip <base64 name> not-a-regular-file` for anything else (symlinks included,
/// so a link cannot smuggle another file into the Secret), and
/// `skip <base64 name> larger-than-1-MiB` for a file no Secret can hold, which is
/// never read. Base64 keeps any name
/// and any content on one line; a missing directory prints nothing.
pub fn credentials_command() -> String {
    credentials_command_for(CREDENTIALS_DIR)
}

/// [`credentials_command`] for another directory.
pub fn credentials_command_for(dir: &str) -> String {
    format!(
        r#"dir={dir}
[ -d "$dir" ] || exit 0
command -v base64 >/dev/null 2>&1 || {{ echo 'base64 is not installed' >&2; exit 127; }}
b64() {{ base64 | tr -d '\n'; }}
for path in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
    [ -e "$path" ] || [ -L "$path" ] || continue
    name=$(printf '%s' "${{path##*/}}" | b64)
    if [ -L "$path" ] || [ ! -f "$path" ]; then
        printf 'skip %s not-a-regular-file\n' "$name"
        continue
    fi
    if [ "$(wc -c < "$path")" -gt {max} ]; then
        printf 'skip %s larger-than-1-MiB\n' "$name"
        continue
    fi
    printf 'file %s %s\n' "$name" "$(b64 < "$path")"
done"#,
        dir = crate::ssh::shell_quote(dir),
        max = MAX_SECRET_BYTES,
    )
}

/// Application services running in the container, sorted, without `.service`.
///
/// A container without systemd (the command fails, or is missing) has no
/// services to report, which is not an error.
pub fn parse_running_services(output: &Output) -> Vec<String> {
    if !output.status.success() {
        return Vec::new();
    }
    let services: BTreeSet<String> = output
        .stdout
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                // Without --plain, systemctl marks failed units with a bullet.
                .find(|field| !matches!(*field, "●" | "*"))
        })
        .filter_map(|unit| unit.strip_suffix(".service"))
        .filter(|name| !name.is_empty() && !is_system_service(name))
        .map(str::to_owned)
        .collect();
    services.into_iter().collect()
}

pub fn is_system_service(name: &str) -> bool {
    SYSTEM_SERVICES.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *pattern,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ListeningPort {
    pub port: u16,
    pub protocol: Protocol,
    pub process: String,
}

/// Listening ports from the output of [`TCP_PORTS_COMMAND`] and [`UDP_PORTS_COMMAND`],
/// sorted by port, one entry per port, protocol and process however many
/// addresses (IPv4, IPv6, loopback) it is bound to.
///
/// Sockets without a `users:` field belong to processes outside the container's
/// PID namespace and are left out.
pub fn parse_listening_ports(tcp: &str, udp: &str) -> Vec<ListeningPort> {
    let tcp = tcp.lines().filter_map(|line| parse_ss_line(Protocol::Tcp, line));
    let udp = udp.lines().filter_map(|line| parse_ss_line(Protocol::Udp, line));
    let ports: BTreeSet<ListeningPort> = tcp.chain(udp).collect();
    ports.into_iter().collect()
}

/// One `ss -lnpH` line: `State Recv-Q Send-Q Local:Port Peer:Port users:(("name",pid=1,fd=3))`.
fn parse_ss_line(protocol: Protocol, line: &str) -> Option<ListeningPort> {
    let local = line.split_whitespace().nth(3)?;
    let (_, port) = local.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let process = first_process_name(line)?;
    Some(ListeningPort { port, protocol, process })
}

/// The first name in `users:(("nginx",pid=12,fd=6),("nginx",pid=13,fd=6))`.
/// Searched in the whole line because a process name may contain spaces.
fn first_process_name(line: &str) -> Option<String> {
    let (_, users) = line.split_once("users:((\"")?;
    let (name, _) = users.split_once("\",pid=")?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// Credentials found in the container, ready to become Secret data.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub files: BTreeMap<String, Vec<u8>>,
    pub skipped: Vec<SkippedCredential>,
}

/// A directory entry that did not become a Secret key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedCredential {
    /// The name as found, with anything unprintable escaped.
    pub name: String,
    pub reason: String,
}

/// Kubernetes refuses a Secret larger than this.
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;
const MAX_SECRET_KEY_LENGTH: usize = 253;

/// Parses the output of [`credentials_command`]. Entries whose name cannot be a
/// Secret key, or whose content would push the Secret past its size limit, are
/// skipped with a reason instead of failing the whole listing.
pub fn parse_credentials(stdout: &str) -> Credentials {
    let mut credentials = Credentials::default();
    let mut total = 0usize;
    for (index, line) in stdout.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut skip = |name: String, reason: String| {
            credentials.skipped.push(SkippedCredential { name, reason });
        };
        let mut fields = line.splitn(3, ' ');
        let (kind, encoded_name, rest) = (fields.next(), fields.next(), fields.next());
        let Some(name_bytes) = encoded_name.and_then(|n| STANDARD.decode(n).ok()) else {
            skip(format!("line {}", index + 1), "malformed listing line".to_owned());
            continue;
        };
        let name = String::from_utf8_lossy(&name_bytes).escape_debug().to_string();
        match (kind, rest) {
            (Some("file"), Some(encoded_content)) => {
                let Ok(content) = STANDARD.decode(encoded_content.trim()) else {
                    skip(name, "content is not valid base64".to_owned());
                    continue;
                };
                let key = match std::str::from_utf8(&name_bytes) {
                    Ok(key) if is_secret_key(key) => key.to_owned(),
                    _ => {
                        skip(
                            name,
                            "name is not a valid Secret key: use letters, digits, '-', '_' and '.' (at most 253)"
                                .to_owned(),
                        );
                        continue;
                    }
                };
                if total + content.len() > MAX_SECRET_BYTES {
                    skip(name, format!("{} bytes would exceed the 1 MiB Secret limit", content.len()));
                    continue;
                }
                total += content.len();
                credentials.files.insert(key, content);
            }
            (Some("skip"), reason) => {
                skip(name, reason.unwrap_or("skipped").replace('-', " "));
            }
            _ => skip(name, "malformed listing line".to_owned()),
        }
    }
    credentials
}

/// Kubernetes' rule for Secret and ConfigMap keys.
fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_SECRET_KEY_LENGTH
        && key != "."
        && !key.starts_with("..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::ExitStatus;

    fn output(code: u32, stdout: &str, stderr: &str) -> Output {
        Output { status: ExitStatus::Code(code), stdout: stdout.to_owned(), stderr: stderr.to_owned() }
    }

    // A Debian 12 container (Proxmox standard template) with nginx and postfix.
    const DEBIAN_SERVICES: &str = "\
console-getty.service    loaded active running Console Getty
container-getty@1.service loaded active running Container Getty on /dev/tty1
container-getty@2.service loaded active running Container Getty on /dev/tty2
cron.service             loaded active running Regular background program processing daemon
dbus.service             loaded active running D-Bus System Message Bus
ifupdown-pre.service     loaded active running Helper to synchronize boot up for ifupdown
nginx.service            loaded active running A high performance web server and a reverse proxy server
postfix@-.service        loaded active running Postfix Mail Transport Agent (instance -)
rsyslog.service          loaded active running System Logging Service
ssh.service              loaded active running OpenBSD Secure Shell server
systemd-journald.service loaded active running Journal Service
systemd-logind.service   loaded active running User Login Management
systemd-networkd.service loaded active running Network Configuration
systemd-udevd.service    loaded active running Rule-based Manager for Device Events and Files
user@0.service           loaded active running User Manager for UID 0
";

    #[test]
    fn services_without_system_services() {
        let cases = [
            (output(0, DEBIAN_SERVICES, ""), vec!["nginx", "postfix@-"]),
            (output(0, "", ""), vec![]),
            (
                output(
                    0,
                    "redis-server.service loaded active running Advanced key-value store\n\
                           myapp.service loaded active running My App\n\
                           getty@tty1.service loaded active running Getty on tty1\n",
                    "",
                ),
                vec!["myapp", "redis-server"],
            ),
            (output(0, "● crashy.service loaded active running Crashy\n", ""), vec!["crashy"]),
            (
                output(0, "nginx.service loaded active running nginx\nnginx.service loaded active running nginx\n", ""),
                vec!["nginx"],
            ),
            (output(0, "docker.socket loaded active running Docker Socket\n", ""), vec![]),
            // Captured on a host without systemd as PID 1.
            (
                output(
                    1,
                    "",
                    "System has not been booted with systemd as init system (PID 1). Can't operate.\n\
                     Failed to connect to bus: Host is down\n",
                ),
                vec![],
            ),
            (output(127, "", "sh: 1: systemctl: not found\n"), vec![]),
            (
                Output {
                    status: ExitStatus::Signal { signal: "KILL".into(), core_dumped: false },
                    stdout: "nginx.service loaded active running x\n".into(),
                    stderr: String::new(),
                },
                vec![],
            ),
        ];
        for (output, expected) in cases {
            assert_eq!(parse_running_services(&output), expected, "{output:?}");
        }
    }

    #[test]
    fn system_service_patterns() {
        let cases = [
            ("systemd-journald", true),
            ("getty@tty1", true),
            ("container-getty@1", true),
            ("console-getty", true),
            ("user@0", true),
            ("ssh", true),
            ("sshd", true),
            ("cron", true),
            ("dbus", true),
            ("networking", true),
            ("rsyslog", true),
            ("ifupdown-pre", true),
            ("postfix", false),
            ("postfix@-", false),
            ("nginx", false),
            ("sshguard", false),
            ("systemd", false),
            ("crontab-ui", false),
        ];
        for (name, system) in cases {
            assert_eq!(is_system_service(name), system, "{name}");
        }
    }

    // Captured with `ss -tlnpH` / `ss -ulnpH` on a Debian 12 host: port 2024 belongs
    // to a process outside this PID namespace, so it has no users field.
    const TCP_CAPTURED: &str = "\
LISTEN 0      128         0.0.0.0:2024  0.0.0.0:*
LISTEN 0      5      127.0.0.1:18081 0.0.0.0:* users:((\"python3\",pid=15229,fd=3))
LISTEN 0      5          [::1]:18081    [::]:* users:((\"python3\",pid=15231,fd=3))
LISTEN 0      128    127.0.0.1%lo:18082 0.0.0.0:* users:((\"python3\",pid=15471,fd=5))
";
    const UDP_CAPTURED: &str = "\
UNCONN 0      0      127.0.0.1:15353 0.0.0.0:* users:((\"python3\",pid=15471,fd=3))
UNCONN 0      0           [::]:15353    [::]:* users:((\"python3\",pid=15471,fd=4))
";

    fn port(port: u16, protocol: Protocol, process: &str) -> ListeningPort {
        ListeningPort { port, protocol, process: process.into() }
    }

    #[test]
    fn listening_ports_from_ss() {
        use Protocol::{Tcp, Udp};
        let cases = [
            (
                TCP_CAPTURED,
                UDP_CAPTURED,
                vec![port(15353, Udp, "python3"), port(18081, Tcp, "python3"), port(18082, Tcp, "python3")],
            ),
            ("", "", vec![]),
            (
                "LISTEN 0 511 0.0.0.0:80 0.0.0.0:* users:((\"nginx\",pid=120,fd=6),(\"nginx\",pid=119,fd=6))\n\
                 LISTEN 0 511 [::]:80 [::]:* users:((\"nginx\",pid=120,fd=7),(\"nginx\",pid=119,fd=7))\n\
                 LISTEN 0 128 *:22 *:* users:((\"sshd\",pid=90,fd=3))\n\
                 LISTEN 0 100 127.0.0.1:25 0.0.0.0:* users:((\"master\",pid=300,fd=13))\n\
                 LISTEN 0 4096 [fe80::1%eth0]:8080 [::]:* users:((\"my app\",pid=7,fd=3))\n",
                "UNCONN 0 0 0.0.0.0:68 0.0.0.0:* users:((\"dhclient\",pid=80,fd=7))\n\
                 UNCONN 0 0 0.0.0.0:80 0.0.0.0:* users:((\"quic\",pid=81,fd=3))\n",
                vec![
                    port(22, Tcp, "sshd"),
                    port(25, Tcp, "master"),
                    port(68, Udp, "dhclient"),
                    port(80, Tcp, "nginx"),
                    port(80, Udp, "quic"),
                    port(8080, Tcp, "my app"),
                ],
            ),
            (
                "garbage\nLISTEN 0 5 127.0.0.1:notaport 0.0.0.0:* users:((\"x\",pid=1,fd=1))\n\
                 LISTEN 0 5 127.0.0.1:99999 0.0.0.0:* users:((\"x\",pid=1,fd=1))\n",
                "",
                vec![],
            ),
        ];
        for (tcp, udp, expected) in cases {
            assert_eq!(parse_listening_ports(tcp, udp), expected, "{tcp}{udp}");
        }
    }

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    #[test]
    fn credentials_listing_becomes_secret_data() {
        let big = vec![b'x'; MAX_SECRET_BYTES];
        type Files = Vec<(&'static str, Vec<u8>)>;
        type Skipped = Vec<(&'static str, &'static str)>;
        let cases: Vec<(String, Files, Skipped)> = vec![
            (String::new(), vec![], vec![]),
            (
                format!(
                    "file {} {}\nfile {} {}\nfile {} \n",
                    b64(b"db-password"),
                    b64(b"s3cr3t\n"),
                    b64(b".env"),
                    b64(&[0, 159, 255]),
                    b64(b"empty")
                ),
                vec![(".env", vec![0, 159, 255]), ("db-password", b"s3cr3t\n".to_vec()), ("empty", vec![])],
                vec![],
            ),
            (
                format!(
                    "file {} {}\nfile {} {}\nskip {} not-a-regular-file\nfile {} {}\n",
                    b64(b"has space"),
                    b64(b"x"),
                    b64(b"new\nline"),
                    b64(b"x"),
                    b64(b"link"),
                    b64(b"..hidden"),
                    b64(b"x")
                ),
                vec![],
                vec![
                    (
                        "has space",
                        "name is not a valid Secret key: use letters, digits, '-', '_' and '.' (at most 253)",
                    ),
                    (
                        "new\\nline",
                        "name is not a valid Secret key: use letters, digits, '-', '_' and '.' (at most 253)",
                    ),
                    ("link", "not a regular file"),
                    ("..hidden", "name is not a valid Secret key: use letters, digits, '-', '_' and '.' (at most 253)"),
                ],
            ),
            (
                format!("file {} {}\nfile {} {}\n", b64(b"a"), b64(b"1"), b64(b"b"), b64(&big)),
                vec![("a", b"1".to_vec())],
                vec![("b", "1048576 bytes would exceed the 1 MiB Secret limit")],
            ),
            (
                format!("nonsense\nfile {} !!!\n", b64(b"bad")),
                vec![],
                vec![("line 1", "malformed listing line"), ("bad", "content is not valid base64")],
            ),
        ];
        for (listing, files, skipped) in cases {
            let parsed = parse_credentials(&listing);
            let expected_files: BTreeMap<String, Vec<u8>> = files.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let expected_skipped: Vec<SkippedCredential> = skipped
                .into_iter()
                .map(|(name, reason)| SkippedCredential { name: name.to_owned(), reason: reason.to_owned() })
                .collect();
            assert_eq!(parsed.files, expected_files, "{listing:.200}");
            assert_eq!(parsed.skipped, expected_skipped, "{listing:.200}");
        }
    }

    #[test]
    fn credentials_command_lists_a_real_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("api-token"), b"tok\n").expect("write");
        std::fs::write(root.join(".hidden"), b"h").expect("write");
        std::fs::write(root.join("with space"), b"w").expect("write");
        std::fs::write(root.join("empty"), b"").expect("write");
        std::fs::create_dir(root.join("subdir")).expect("mkdir");
        std::os::unix::fs::symlink("/etc/hostname", root.join("link")).expect("symlink");

        let command = credentials_command_for(root.to_str().expect("utf-8"));
        let output = std::process::Command::new("sh").arg("-c").arg(&command).output().expect("run sh");
        assert!(output.status.success(), "{output:?}");
        let parsed = parse_credentials(&String::from_utf8_lossy(&output.stdout));

        let keys: Vec<&str> = parsed.files.keys().map(String::as_str).collect();
        assert_eq!(keys, vec![".hidden", "api-token", "empty"]);
        assert_eq!(parsed.files["api-token"], b"tok\n");
        let mut skipped: Vec<(&str, &str)> =
            parsed.skipped.iter().map(|s| (s.name.as_str(), s.reason.as_str())).collect();
        skipped.sort();
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert_eq!(skipped[0], ("link", "not a regular file"));
        assert_eq!(skipped[1], ("subdir", "not a regular file"));
        assert_eq!(skipped[2].0, "with space");
    }

    #[test]
    fn credentials_command_tolerates_a_missing_directory() {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(credentials_command_for("/nonexistent/credentials"))
            .output()
            .expect("run sh");
        assert!(output.status.success());
        assert!(output.stdout.is_empty());
    }
}
