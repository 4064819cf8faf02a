//! The config-manager layout installed in every container during Deploy and used
//! during Sync: what is written where, and which commands activate it.
//!
//! Everything here is pure rendering; the deploy and sync stages carry it out over SSH.

use crate::ssh::shell_quote;

pub const CONFIG_ENV_PATH: &str = "/etc/config-manager/config.env";
pub const CONFIG_SYNC_PATH: &str = "/usr/local/bin/config-sync.sh";
pub const UNIT_PATH: &str = "/etc/systemd/system/config-manager.service";
pub const CREDENTIALS_DIR: &str = "/etc/infrahaus/credentials";
pub const SCRIPT_DIR: &str = "/tmp/infrahaus";
pub const SCRIPT_MODE: u32 = 0o755;

/// Runs config-sync during Sync. `sh`, not `bash`: the script is POSIX so that
/// containers without bash (Alpine) can run it too.
pub const SYNC_COMMAND: &str = "/bin/sh /usr/local/bin/config-sync.sh";

/// Creates the directories the layout needs that no uploaded file creates, with
/// modes that keep credentials and staged scripts private to root.
pub const PREPARE_COMMAND: &str = include_str!("layout/prepare.sh").trim_ascii_end();

/// Enables the boot-time unit where systemd runs; elsewhere config-sync only runs
/// when the controller invokes it.
pub const ACTIVATE_COMMAND: &str = include_str!("layout/activate.sh").trim_ascii_end();

/// Makes root's `authorized_keys` hold the keys on stdin (the operator's and
/// `spec.sshPublicKeys`): Proxmox injects keys only at create, so a key
/// added to the spec later is appended, and a key the operator put there
/// before (recorded in `authorized_keys.infrahaus`) and no longer in the spec
/// is removed. Keys added in the guest by hand stay.
pub const AUTHORIZED_KEYS_COMMAND: &str = include_str!("layout/authorized-keys.sh").trim_ascii_end();

/// Installs the declared packages that are missing. It reads everything it needs
/// from config.env, so the script itself never changes between containers.
pub const CONFIG_SYNC_SCRIPT: &str = include_str!("layout/config-sync.sh");

/// Runs config-sync.sh once at boot.
pub const UNIT_FILE: &str = include_str!("layout/config-manager.service");

/// What the layout needs to know about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutInput {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub hostname: String,
    pub vmid: u32,
    pub template_name: Option<String>,
    pub packages: Vec<String>,
}

/// A file to write into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutFile {
    pub path: &'static str,
    pub content: String,
    pub mode: u32,
}

/// The Deploy work for the layout, in order: run `prepare_command`, upload `files`,
/// run `activate_command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutPlan {
    pub prepare_command: &'static str,
    pub files: Vec<LayoutFile>,
    pub activate_command: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "package name {0:?} is not valid: use letters, digits and + . _ : - only, starting with a letter or digit"
    )]
    InvalidPackage(String),

    #[error("script name {name:?} is not valid: {reason}")]
    InvalidScriptName { name: String, reason: &'static str },

    #[error("file mode {0:?} is not valid: expected octal permission bits such as \"0644\"")]
    InvalidMode(String),
}

/// Renders the layout for one container.
pub fn render(input: &LayoutInput) -> Result<LayoutPlan, LayoutError> {
    Ok(LayoutPlan {
        prepare_command: PREPARE_COMMAND,
        files: vec![
            LayoutFile { path: CONFIG_ENV_PATH, content: render_config_env(input)?, mode: 0o644 },
            LayoutFile { path: CONFIG_SYNC_PATH, content: CONFIG_SYNC_SCRIPT.to_owned(), mode: 0o755 },
            LayoutFile { path: UNIT_PATH, content: UNIT_FILE.to_owned(), mode: 0o644 },
        ],
        activate_command: ACTIVATE_COMMAND,
    })
}

/// `config.env`: shell assignments sourced by config-sync.sh. Every value is
/// shell-quoted, so whatever a user puts in a name cannot run as code.
pub fn render_config_env(input: &LayoutInput) -> Result<String, LayoutError> {
    for package in &input.packages {
        validate_package(package)?;
    }
    let vmid = input.vmid.to_string();
    let template = input.template_name.clone().unwrap_or_default();
    let packages = input.packages.join(" ");
    let assignments = [
        ("CONTAINER_NAMESPACE", input.namespace.as_str()),
        ("CONTAINER_NAME", input.name.as_str()),
        ("CONTAINER_UID", input.uid.as_str()),
        ("CONTAINER_HOSTNAME", input.hostname.as_str()),
        ("CONTAINER_VMID", vmid.as_str()),
        ("TEMPLATE_NAME", template.as_str()),
        ("PACKAGES", packages.as_str()),
    ];
    let mut env = String::from("# Written by infrahaus-operator during Deploy; read by config-sync.sh.\n");
    for (key, value) in assignments {
        env.push_str(key);
        env.push('=');
        env.push_str(&shell_quote(value));
        env.push('\n');
    }
    Ok(env)
}

/// Package names end up as separate words on a package manager's command line, so
/// anything that is not part of a real package name is refused.
fn validate_package(package: &str) -> Result<(), LayoutError> {
    let mut bytes = package.bytes();
    let valid = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'_' | b':' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(LayoutError::InvalidPackage(package.to_owned()))
    }
}

/// Where a template script is staged: `/tmp/infrahaus/<name>`.
pub fn script_path(name: &str) -> Result<String, LayoutError> {
    validate_script_name(name)?;
    Ok(format!("{SCRIPT_DIR}/{name}"))
}

/// How a staged script is run: with bash, whatever its shebang says.
pub fn script_command(name: &str) -> Result<String, LayoutError> {
    Ok(format!("bash {}", shell_quote(&script_path(name)?)))
}

fn validate_script_name(name: &str) -> Result<(), LayoutError> {
    let invalid = |reason| LayoutError::InvalidScriptName { name: name.to_owned(), reason };
    if name.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if name.len() > 255 {
        return Err(invalid("must be at most 255 bytes"));
    }
    if name == "." || name == ".." {
        return Err(invalid("must not be . or .."));
    }
    if name.contains('/') || name.contains('\\') {
        return Err(invalid("must not contain path separators"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(invalid("use letters, digits, '.', '_' and '-' only"));
    }
    Ok(())
}

/// Parses a file mode written as octal text: `"0644"`, `"644"`, `"0o600"`.
pub fn parse_file_mode(text: &str) -> Result<u32, LayoutError> {
    let invalid = || LayoutError::InvalidMode(text.to_owned());
    let digits = text.trim();
    let digits = digits.strip_prefix("0o").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(invalid());
    }
    u32::from_str_radix(digits, 8).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn input() -> LayoutInput {
        LayoutInput {
            namespace: "default".into(),
            name: "web-1".into(),
            uid: "0b7f4c1e-7d1a-4a39-9d6c-3f1b2a0c9e11".into(),
            hostname: "web-1".into(),
            vmid: 120,
            template_name: Some("web".into()),
            packages: vec!["nginx".into(), "curl".into()],
        }
    }

    #[test]
    fn config_env_holds_identity_template_and_packages() {
        let cases = [
            (
                input(),
                "# Written by infrahaus-operator during Deploy; read by config-sync.sh.\n\
                 CONTAINER_NAMESPACE=default\n\
                 CONTAINER_NAME=web-1\n\
                 CONTAINER_UID=0b7f4c1e-7d1a-4a39-9d6c-3f1b2a0c9e11\n\
                 CONTAINER_HOSTNAME=web-1\n\
                 CONTAINER_VMID=120\n\
                 TEMPLATE_NAME=web\n\
                 PACKAGES='nginx curl'\n",
            ),
            (
                LayoutInput { template_name: None, packages: vec![], ..input() },
                "# Written by infrahaus-operator during Deploy; read by config-sync.sh.\n\
                 CONTAINER_NAMESPACE=default\n\
                 CONTAINER_NAME=web-1\n\
                 CONTAINER_UID=0b7f4c1e-7d1a-4a39-9d6c-3f1b2a0c9e11\n\
                 CONTAINER_HOSTNAME=web-1\n\
                 CONTAINER_VMID=120\n\
                 TEMPLATE_NAME=''\n\
                 PACKAGES=''\n",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(render_config_env(&input).expect("render"), expected);
        }
    }

    /// Sources the rendered config.env in a clean shell and prints the variables
    /// NUL-separated, so any value can be compared exactly.
    fn source_config_env(shell: &str, env: &str) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.env");
        std::fs::write(&path, env).expect("write");
        let script = format!(
            "set -eu; . {}; printf '%s\\0' \"$CONTAINER_NAMESPACE\" \"$CONTAINER_NAME\" \"$CONTAINER_UID\" \
             \"$CONTAINER_HOSTNAME\" \"$CONTAINER_VMID\" \"$TEMPLATE_NAME\" \"$PACKAGES\"",
            shell_quote(path.to_str().expect("utf-8 path"))
        );
        let output = Command::new(shell).arg("-c").arg(script).env_clear().output().expect("run shell");
        assert!(output.status.success(), "{output:?}");
        assert!(!dir.path().join("pwned").exists(), "a value was executed as code");
        String::from_utf8(output.stdout).expect("utf-8").split_terminator('\0').map(str::to_owned).collect()
    }

    #[test]
    fn hostile_values_survive_sourcing_unchanged() {
        let hostile = [
            "$(rm -rf /)",
            "`touch pwned`",
            "it's \"quoted\"",
            "first\nsecond\n",
            "'; touch pwned; '",
            "$HOME ${PATH} \\n",
            "",
        ];
        for value in hostile {
            let layout = LayoutInput {
                namespace: value.into(),
                name: value.into(),
                uid: value.into(),
                hostname: value.into(),
                vmid: 4_294_967_295,
                template_name: Some(value.into()),
                packages: vec!["bash".into(), "libc6:amd64".into(), "g++".into()],
            };
            let env = render_config_env(&layout).expect("render");
            for shell in ["bash", "sh"] {
                let values = source_config_env(shell, &env);
                assert_eq!(
                    values,
                    vec![value, value, value, value, "4294967295", value, "bash libc6:amd64 g++"],
                    "{shell}: {value:?}"
                );
            }
        }
    }

    #[test]
    fn package_names_are_validated() {
        let cases = [
            ("nginx", true),
            ("g++", true),
            ("python3.11", true),
            ("libc6:amd64", true),
            ("Mesa_Libs-2", true),
            ("", false),
            ("-y", false),
            (".hidden", false),
            ("nginx curl", false),
            ("$(reboot)", false),
            ("a;b", false),
            ("pkg*", false),
            ("pkg\n", false),
            ("nginx=1.2", false),
        ];
        for (package, valid) in cases {
            let layout = LayoutInput { packages: vec![package.into()], ..input() };
            let result = render(&layout);
            assert_eq!(result.is_ok(), valid, "{package:?}");
            if !valid {
                assert_eq!(result, Err(LayoutError::InvalidPackage(package.into())));
            }
        }
    }

    #[test]
    fn plan_lists_the_three_files_with_modes() {
        let plan = render(&input()).expect("render");
        let summary: Vec<(&str, u32)> = plan.files.iter().map(|f| (f.path, f.mode)).collect();
        assert_eq!(
            summary,
            vec![
                ("/etc/config-manager/config.env", 0o644),
                ("/usr/local/bin/config-sync.sh", 0o755),
                ("/etc/systemd/system/config-manager.service", 0o644),
            ]
        );
        assert!(plan.prepare_command.contains("chmod 0700 /etc/infrahaus/credentials"));
        assert!(plan.activate_command.starts_with("if [ -d /run/systemd/system ]"));
        assert!(plan.activate_command.contains("systemctl enable config-manager.service"));
    }

    #[test]
    fn unit_runs_config_sync_once_at_boot() {
        for line in [
            "Type=oneshot",
            "ExecStart=/bin/sh /usr/local/bin/config-sync.sh",
            "WantedBy=multi-user.target",
            "After=network-online.target",
        ] {
            assert!(UNIT_FILE.lines().any(|l| l == line), "missing {line}");
        }
    }

    #[test]
    fn rendered_shell_parses() {
        let snippets = [
            ("config-sync.sh", CONFIG_SYNC_SCRIPT.to_owned()),
            ("prepare", PREPARE_COMMAND.to_owned()),
            ("activate", ACTIVATE_COMMAND.to_owned()),
            ("config.env", render_config_env(&input()).expect("render")),
            ("script", script_command("10-setup.sh").expect("command")),
        ];
        for shell in ["bash", "sh"] {
            for (what, text) in &snippets {
                let output = Command::new(shell).arg("-n").arg("-c").arg(text).output().expect("run shell");
                assert!(output.status.success(), "{shell} -n {what}: {output:?}");
            }
        }
    }

    /// Every shell file of the layout passes shellcheck as POSIX sh (hack/deps
    /// installs shellcheck).
    #[test]
    fn layout_shell_passes_shellcheck() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/layout");
        let files: Vec<_> = std::fs::read_dir(dir)
            .expect("read the layout directory")
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "sh"))
            .collect();
        assert_eq!(files.len(), 4, "{files:?}");
        let output = Command::new("shellcheck")
            .args(["--shell=sh", "--severity=style"])
            .args(&files)
            .output()
            .expect("run shellcheck (installed by hack/deps)");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    }

    /// Runs config-sync.sh on this machine against a config.env in a temp dir.
    fn run_config_sync(packages: &[&str]) -> std::process::Output {
        let dir = tempfile::tempdir().expect("tempdir");
        let env_path = dir.path().join("config.env");
        let script_path = dir.path().join("config-sync.sh");
        let layout = LayoutInput { packages: packages.iter().map(|p| (*p).to_owned()).collect(), ..input() };
        std::fs::write(&env_path, render_config_env(&layout).expect("render")).expect("write");
        std::fs::write(&script_path, CONFIG_SYNC_SCRIPT).expect("write");
        Command::new("sh").arg(&script_path).env("CONFIG_MANAGER_ENV", &env_path).output().expect("run config-sync")
    }

    #[test]
    fn config_sync_needs_nothing_when_packages_are_present() {
        let cases: [(&[&str], &str); 2] = [
            (&[], "config-sync: no packages declared"),
            (&["bash", "coreutils"], "config-sync: all declared packages are installed"),
        ];
        for (packages, last_line) in cases {
            let output = run_config_sync(packages);
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "{packages:?}: {output:?}");
            assert_eq!(stdout.lines().last(), Some(last_line), "{stdout}");
            for package in packages {
                assert!(stdout.contains(&format!("already installed: {package}")), "{stdout}");
            }
        }
    }

    #[test]
    fn config_sync_fails_without_its_config() {
        let output = Command::new("sh")
            .arg("-c")
            .arg(CONFIG_SYNC_SCRIPT)
            .env("CONFIG_MANAGER_ENV", "/nonexistent/config.env")
            .output()
            .expect("run");
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stdout).contains("cannot read /nonexistent/config.env"));
    }

    #[test]
    fn script_names_are_validated() {
        let cases = [
            ("10-setup.sh", Some("/tmp/infrahaus/10-setup.sh")),
            ("install_app", Some("/tmp/infrahaus/install_app")),
            ("-dash.sh", Some("/tmp/infrahaus/-dash.sh")),
            ("", None),
            (".", None),
            ("..", None),
            ("../etc/passwd", None),
            ("a/b.sh", None),
            ("a\\b.sh", None),
            ("setup script.sh", None),
            ("$(reboot).sh", None),
            ("new\nline", None),
        ];
        for (name, expected) in cases {
            assert_eq!(script_path(name).ok().as_deref(), expected, "{name:?}");
        }
        assert_eq!(script_command("10-setup.sh").expect("command"), "bash /tmp/infrahaus/10-setup.sh");
        assert!(script_path(&"a".repeat(256)).is_err());
    }

    #[test]
    fn file_modes_parse_from_octal_text() {
        let cases = [
            ("0644", Some(0o644)),
            ("644", Some(0o644)),
            ("0o600", Some(0o600)),
            ("0755", Some(0o755)),
            ("4755", Some(0o4755)),
            (" 0640 ", Some(0o640)),
            ("", None),
            ("0888", None),
            ("07777", None),
            ("rw-r--r--", None),
            ("-644", None),
            ("0x1ff", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_file_mode(text).ok(), expected, "{text:?}");
        }
    }
}
