//! Ansible against the controller on the same pve-sim: the controller takes
//! 20 Containers of a template (one file, one script) from apply to Ready;
//! then `ansible-playbook` runs tests/ansible/containers.yml, which creates
//! and starts 20 containers with the community.proxmox.proxmox module (its
//! documented parameters, in a loop: one container after the other), waits
//! for their SSH, writes the same file and runs the same script in each over
//! the machine's OpenSSH client (with as many forks as containers). Both wall times and their ratio are figures;
//! the test asserts that both sides did the work.
//!
//! `ANSIBLE_PLAYBOOK_BIN` names the `ansible-playbook` to run; `hack/bench`
//! sets it from `tools/ansible.sh`, which installs Ansible into a venv under
//! `~/.cache/infrahaus/ansible/`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{all_ready, figure, p1_world, quick, P1_FILE, P1_SCRIPT};
use crate::support::World;

const CONTAINERS: usize = 20;
const PLAYBOOK_TIMEOUT: Duration = Duration::from_secs(900);

#[tokio::test]
#[ignore = "benchmark; run with hack/bench"]
async fn ansible_against_the_controller() {
    let playbook_bin = ansible_playbook_bin();
    let count = if quick() { 5 } else { CONTAINERS };
    let mut world = p1_world("bench-ansible", 2 * count as u64).await;

    // (a) The controller.
    world.start_controller(&[]).expect("controller");
    let started = Instant::now();
    let names = all_ready(&world, "ctl", count).await;
    let controller = started.elapsed().as_secs_f64();

    // (b) Ansible, with static addresses from the top of the network pve-sim
    // leases the controller's guests from (it leases from the bottom).
    let taken = controller_addresses(&world, &names).await;
    let (network, prefix) = taken[0].1;
    let first_vmid = next_vmid(&world).await;
    let guests: Vec<Guest> = (0..count)
        .map(|i| {
            let ip = top_address(network, prefix, i);
            assert!(ip.is_loopback(), "{ip} is outside 127.0.0.0/8");
            assert!(taken.iter().all(|(used, _)| *used != ip), "{ip} is a controller guest's address");
            Guest { vmid: first_vmid + i as u32, hostname: format!("ansible-{i}"), ip, prefix }
        })
        .collect();
    let run = AnsibleRun::prepare(&world, &playbook_bin, &guests);
    let started = Instant::now();
    run.playbook("containers.yml", count).await;
    let ansible = started.elapsed().as_secs_f64();

    for guest in &guests {
        let content = guest_file(&run.key, guest.ip, P1_FILE.0).await;
        assert_eq!(content, P1_FILE.1, "{} ({}): {} after the playbook", guest.hostname, guest.ip, P1_FILE.0);
    }

    let ratio = ansible / controller;
    println!(
        "bench: Ansible, {count} containers: ansible {ansible:.1} s, controller {controller:.1} s, ansible / controller {ratio:.2}"
    );
    figure(&format!("Ansible playbook, {count} containers"), ansible, "s", None);
    figure(&format!("controller apply to Ready, {count} containers"), controller, "s", None);
    figure(&format!("Ansible / controller, {count} containers"), ratio, "ratio", Some((">= 10", ratio >= 10.0)));

    run.playbook("remove.yml", count).await;
    for guest in &guests {
        let guest_state = world.sim_guest(guest.vmid as i32).await.expect("pve-sim state");
        assert!(guest_state.is_none(), "{} is still there after remove.yml", guest.hostname);
    }
}

/// `ANSIBLE_PLAYBOOK_BIN`, which must name an executable file; the failure
/// says how to get one. The message is printed as a `bench:` line too, since
/// `hack/bench` shows only those.
fn ansible_playbook_bin() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let fail = |why: String| -> ! {
        let message = format!(
            "Ansible is not installed: {why}; hack/bench sets ANSIBLE_PLAYBOOK_BIN to what tools/ansible.sh prints \
             (see its output for why the install failed)"
        );
        println!("bench: the comparison with Ansible did not run: {message}");
        panic!("{message}");
    };
    let Some(bin) = std::env::var_os("ANSIBLE_PLAYBOOK_BIN").filter(|bin| !bin.is_empty()) else {
        fail("ANSIBLE_PLAYBOOK_BIN is not set".into())
    };
    let bin = PathBuf::from(bin);
    match std::fs::metadata(&bin) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => bin,
        Ok(_) => fail(format!("{} is not an executable file", bin.display())),
        Err(error) => fail(format!("{}: {error}", bin.display())),
    }
}

/// One container of the playbook.
struct Guest {
    vmid: u32,
    hostname: String,
    ip: Ipv4Addr,
    prefix: u8,
}

/// The controller's guests' addresses, each with its network and prefix
/// length, as their interfaces report them.
async fn controller_addresses(world: &World, names: &[String]) -> Vec<(Ipv4Addr, (Ipv4Addr, u8))> {
    let mut addresses = Vec::new();
    for name in names {
        let vmid = world.container(name).await.expect("container").status.and_then(|s| s.vmid).expect("vmid");
        let path = format!("/nodes/{}/lxc/{vmid}/interfaces", world.sim.node);
        let interfaces = world.pve_get(&path).await.expect("interfaces");
        let inet = interfaces
            .as_array()
            .and_then(|list| list.iter().find(|i| i["name"] == "eth0"))
            .and_then(|eth0| eth0["inet"].as_str())
            .unwrap_or_else(|| panic!("{name}: no eth0 address in {interfaces}"));
        let (ip, prefix) = inet.split_once('/').expect("an address with its prefix length");
        let (ip, prefix): (Ipv4Addr, u8) = (ip.parse().expect("IPv4"), prefix.parse().expect("prefix length"));
        let network = Ipv4Addr::from(u32::from(ip) & (u32::MAX << (32 - u32::from(prefix))));
        addresses.push((ip, (network, prefix)));
    }
    addresses
}

/// The `i`-th address from the top of a network, below its broadcast address.
fn top_address(network: Ipv4Addr, prefix: u8, i: usize) -> Ipv4Addr {
    let hosts = (1u32 << (32 - u32::from(prefix))) - 1;
    assert!((i as u32) + 2 < hosts / 2, "the network {network}/{prefix} has too few addresses");
    Ipv4Addr::from(u32::from(network) + hosts - 1 - i as u32)
}

/// The next free VMID, as `/cluster/nextid` gives it.
async fn next_vmid(world: &World) -> u32 {
    let next = world.pve_get("/cluster/nextid").await.expect("nextid");
    next.as_u64()
        .map(|n| n as u32)
        .or_else(|| next.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("nextid: {next}"))
}

/// A file in a guest, read over SSH with the playbook's key.
async fn guest_file(key: &infrahaus_operator::ssh::SshKeyPair, ip: Ipv4Addr, path: &str) -> String {
    use infrahaus_operator::ssh;
    let target = ssh::SshTarget::root(SocketAddr::new(ip.into(), 22), key.clone(), ssh::HostKeyCheck::TrustFirst);
    let limit = Duration::from_secs(60);
    let session = ssh::connect_with_retry(&target, tokio::time::Instant::now() + limit).await.expect("ssh");
    let output = session.exec_capture(&format!("cat {path}"), limit).await.expect("cat");
    assert!(output.status.success(), "cat {path} in {ip}: {}", output.stderr);
    output.stdout
}

/// What a playbook run needs, in the World's dir: the extra vars, the key
/// pair (the private half 0600), the script, and Ansible's home.
struct AnsibleRun {
    bin: PathBuf,
    dir: PathBuf,
    vars: PathBuf,
    key: infrahaus_operator::ssh::SshKeyPair,
    token_secret: String,
    ca_file: PathBuf,
}

impl AnsibleRun {
    fn prepare(world: &World, bin: &Path, guests: &[Guest]) -> Self {
        let dir = world.dir.join("ansible");
        std::fs::create_dir_all(dir.join("home")).expect("ansible dir");
        let key = infrahaus_operator::ssh::SshKeyPair::generate("infrahaus-bench-ansible");
        let private_key_file = dir.join("id_ed25519");
        write_file(&private_key_file, key.private_key_pem().expect("private key").as_bytes(), 0o600);
        let script_file = dir.join(P1_SCRIPT.0);
        write_file(&script_file, P1_SCRIPT.1.as_bytes(), 0o755);

        let url = world.sim.url.strip_prefix("https://").expect("an https URL");
        let (host, port) = url.rsplit_once(':').expect("host:port");
        let (user, token) = world.sim.token_id.split_once('!').expect("user@realm!token");
        let vars = json!({
            "proxmox_host": host,
            "proxmox_port": port.parse::<u16>().expect("port"),
            "proxmox_node": world.sim.node,
            "proxmox_user": user,
            "proxmox_token_id": token,
            "guests": guests.iter().map(|g| json!({
                "vmid": g.vmid, "hostname": g.hostname, "ip": g.ip.to_string(), "prefix": g.prefix
            })).collect::<Vec<Value>>(),
            "pubkey": key.public_key_line().expect("public key"),
            "private_key_file": private_key_file,
            "file_path": P1_FILE.0,
            "file_content": P1_FILE.1,
            "script_file": script_file,
        });
        let vars_file = dir.join("vars.json");
        write_file(&vars_file, vars.to_string().as_bytes(), 0o600);
        Self {
            bin: bin.to_owned(),
            dir,
            vars: vars_file,
            key,
            token_secret: world.sim.token_secret.clone(),
            ca_file: world.sim.cert_file.clone(),
        }
    }

    /// Runs `tests/ansible/<playbook>` with `forks` forks; fails with the
    /// end of its output unless it exits 0 within the timeout. The token's
    /// secret goes in through the environment, never on a command line.
    async fn playbook(&self, playbook: &str, forks: usize) {
        let playbooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ansible");
        let log_path = self.dir.join(format!("{playbook}.log"));
        let log = std::fs::File::create(&log_path).expect("playbook log");
        let mut command = tokio::process::Command::new(&self.bin);
        command
            .arg("--forks")
            .arg(forks.to_string())
            .arg("--extra-vars")
            .arg(format!("@{}", self.vars.display()))
            .arg(playbooks.join(playbook))
            .current_dir(&self.dir)
            .env("ANSIBLE_CONFIG", playbooks.join("ansible.cfg"))
            // Ansible keeps its files under ~ (its home, the SSH control
            // sockets): the run's own directory stands in for it. Modules
            // run from a temporary directory under the user's home as the
            // passwd file has it, on localhost too: one in the run's
            // directory (in the guests, that path is in their own /tmp).
            .env("HOME", self.dir.join("home"))
            .env("ANSIBLE_REMOTE_TEMP", self.dir.join("remote-tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("PROXMOX_TOKEN_SECRET", &self.token_secret)
            .env("REQUESTS_CA_BUNDLE", &self.ca_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| panic!("run {}: {e}", self.bin.display()));
        let status = match tokio::time::timeout(PLAYBOOK_TIMEOUT, child.wait()).await {
            Ok(status) => status.expect("wait for ansible-playbook"),
            Err(_) => {
                if let Some(pid) = child.id() {
                    // SAFETY: signals the process group of the ansible-playbook started above.
                    unsafe { libc::killpg(pid as libc::pid_t, libc::SIGTERM) };
                }
                let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
                panic!("{playbook} did not finish in {} s:\n{}", PLAYBOOK_TIMEOUT.as_secs(), tail(&log_path, 60));
            }
        };
        assert!(status.success(), "{playbook} exited with {status}:\n{}", tail(&log_path, 60));
    }
}

fn write_file(path: &Path, content: &[u8], mode: u32) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The last `lines` lines of a file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
