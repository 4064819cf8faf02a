//! A real Kubernetes control plane: etcd and kube-apiserver (and optionally
//! kube-controller-manager, for garbage collection) from `kube-testenv`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::process::{free_port, wait_until, ManagedProcess};

/// The bearer token of the admin user (group `system:masters`). It exists only
/// inside this throwaway control plane.
const ADMIN_TOKEN_BYTES: usize = 24;

pub struct KubeEnv {
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// A kubeconfig for `kubectl`, `helm` and `kube::Client`.
    pub kubeconfig: PathBuf,
    /// PEM of the throwaway CA that signed the serving certificate.
    pub ca_pem: String,
    pub ca_file: PathBuf,
    /// The release the API server reports at `/version`.
    pub version: String,
    pub dir: PathBuf,
    /// How long the API server took from spawn to `/readyz` = ok.
    pub startup: Duration,
    pub etcd: ManagedProcess,
    /// The running kube-apiserver; replaced when it is started again.
    apiserver: std::sync::Mutex<ManagedProcess>,
    /// How kube-apiserver is started (binary and arguments), to start it
    /// again on the same etcd, port and certificates.
    apiserver_command: (PathBuf, Vec<String>),
    admin_token: String,
    pub controller_manager: Option<ManagedProcess>,
}

pub struct KubeEnvOptions {
    /// Also run kube-controller-manager with the garbage collector, so owned
    /// objects are deleted with their owners.
    pub controller_manager: bool,
}

impl Default for KubeEnvOptions {
    fn default() -> Self {
        Self { controller_manager: true }
    }
}

impl KubeEnv {
    /// Starts etcd, kube-apiserver and kube-controller-manager in `dir` and
    /// waits until the API server is ready.
    pub fn start(dir: &Path, options: KubeEnvOptions) -> Result<Self> {
        let bin = kube_testenv_bin()?;
        let version = binary_version(&bin)?;
        std::fs::create_dir_all(dir)?;

        let (etcd, etcd_url) = start_etcd(&bin, dir)?;

        let pki = Pki::write(dir)?;
        let port = free_port()?;
        let url = format!("https://127.0.0.1:{port}");
        let admin_token = random_token()?;
        let tokens = dir.join("tokens.csv");
        std::fs::write(&tokens, format!("{admin_token},admin,admin-uid,system:masters\n"))?;

        let args = vec![
            "kube-apiserver".to_string(),
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            format!("--token-auth-file={}", tokens.display()),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", pki.sa_pub.display()),
            format!("--service-account-signing-key-file={}", pki.sa_key.display()),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            "--enable-priority-and-fairness=false".into(),
            "--profiling=false".into(),
            "--endpoint-reconciler-type=none".into(),
            "--v=1".into(),
        ];
        let started = Instant::now();
        let apiserver_command = (bin.clone(), args);
        let apiserver = spawn_apiserver(&apiserver_command, dir)?;

        let ca_pem = std::fs::read_to_string(&pki.ca_cert)?;
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, render_kubeconfig(&url, &pki.ca_cert, &admin_token))?;

        let readyz = format!("{url}/readyz");
        let http = reqwest_client(&ca_pem)?;
        wait_until(&apiserver, Duration::from_secs(120), || http_get_ok(&http, &readyz, &admin_token))?;
        let startup = started.elapsed();

        let controller_manager =
            if options.controller_manager { Some(start_controller_manager(&bin, dir, &kubeconfig)?) } else { None };

        Ok(Self {
            url,
            kubeconfig,
            ca_pem,
            ca_file: pki.ca_cert,
            version,
            dir: dir.to_path_buf(),
            startup,
            etcd,
            apiserver: std::sync::Mutex::new(apiserver),
            apiserver_command,
            admin_token,
            controller_manager,
        })
    }

    /// The pid of the running kube-apiserver.
    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.lock().unwrap_or_else(|e| e.into_inner()).pid()
    }

    /// Stops kube-apiserver (SIGTERM, SIGKILL after 5 s); etcd keeps the
    /// state. For outage tests, on a control plane of their own.
    pub fn stop_apiserver(&self) {
        self.apiserver.lock().unwrap_or_else(|e| e.into_inner()).stop(Duration::from_secs(5));
    }

    /// Starts kube-apiserver again as before (same etcd, port, certificates
    /// and tokens) and waits until it is ready.
    pub fn start_apiserver(&self) -> Result<()> {
        let apiserver = spawn_apiserver(&self.apiserver_command, &self.dir)?;
        let http = reqwest_client(&self.ca_pem)?;
        let readyz = format!("{}/readyz", self.url);
        wait_until(&apiserver, Duration::from_secs(120), || http_get_ok(&http, &readyz, &self.admin_token))?;
        *self.apiserver.lock().unwrap_or_else(|e| e.into_inner()) = apiserver;
        Ok(())
    }

    /// A new client for the current async runtime (clients must not be shared
    /// across test runtimes, as their connection tasks die with the runtime).
    pub async fn client(&self) -> Result<kube::Client> {
        let config = self.config().await?;
        Ok(kube::Client::try_from(config)?)
    }

    pub async fn config(&self) -> Result<kube::Config> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        Ok(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }
}

fn start_etcd(bin: &Path, dir: &Path) -> Result<(ManagedProcess, String)> {
    let client_port = free_port()?;
    let peer_port = free_port()?;
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new(bin);
    cmd.arg("etcd").args([
        "--name=testbed".to_string(),
        format!("--data-dir={}", dir.join("etcd-data").display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=testbed={peer_url}"),
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ]);
    let etcd = ManagedProcess::spawn("etcd", cmd, &dir.join("etcd.log"))?;
    let health = format!("127.0.0.1:{client_port}");
    wait_until(&etcd, Duration::from_secs(60), || etcd_healthy(&health))?;
    Ok((etcd, client_url))
}

fn etcd_healthy(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

fn start_controller_manager(bin: &Path, dir: &Path, kubeconfig: &Path) -> Result<ManagedProcess> {
    let mut cmd = Command::new(bin);
    cmd.arg("kube-controller-manager").args([
        format!("--kubeconfig={}", kubeconfig.display()),
        "--controllers=garbagecollector,namespace,serviceaccount-token,serviceaccount".into(),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", free_port()?),
        format!("--cert-dir={}", dir.join("kcm-certs").display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        format!("--service-account-private-key-file={}", dir.join("pki/sa.key").display()),
        "--use-service-account-credentials=false".into(),
        "--v=1".into(),
    ]);
    ManagedProcess::spawn("kube-controller-manager", cmd, &dir.join("kube-controller-manager.log"))
}

fn reqwest_client(ca_pem: &str) -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
        .timeout(Duration::from_secs(5))
        .build()?)
}

fn spawn_apiserver((bin, args): &(PathBuf, Vec<String>), dir: &Path) -> Result<ManagedProcess> {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    // Appended to, so the log of an earlier run stays readable.
    ManagedProcess::spawn_appending("kube-apiserver", cmd, &dir.join("kube-apiserver.log"))
}

fn http_get_ok(http: &reqwest::blocking::Client, url: &str, token: &str) -> bool {
    http.get(url).bearer_auth(token).send().is_ok_and(|response| response.status().is_success())
}

/// The kube-testenv binary: `KUBE_TESTENV_BIN`, or built (or taken from the
/// cache) by `tools/kube-testenv/build.sh`.
pub fn kube_testenv_bin() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("KUBE_TESTENV_BIN") {
        return Ok(PathBuf::from(path));
    }
    let script = crate::repo_root().join("tools/kube-testenv/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let path = String::from_utf8(out.stdout)?.trim().to_string();
    if path.is_empty() {
        bail!("{} printed no binary path", script.display());
    }
    Ok(PathBuf::from(path))
}

/// The Kubernetes release the binary reports (`kube-apiserver --version`).
fn binary_version(bin: &Path) -> Result<String> {
    let out = Command::new(bin).args(["kube-apiserver", "--version"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .last()
        .map(str::to_string)
        .with_context(|| format!("{} kube-apiserver --version printed nothing", bin.display()))
}

fn render_kubeconfig(url: &str, ca_file: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: {url}
    certificate-authority: {ca}
users:
- name: testbed-user
  user:
    token: {token}
contexts:
- name: testbed
  context:
    cluster: testbed
    user: testbed-user
    namespace: default
current-context: testbed
",
        ca = ca_file.display()
    )
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; ADMIN_TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

struct Pki {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
}

impl Pki {
    /// A throwaway CA, a serving certificate for 127.0.0.1 and localhost, and
    /// the service-account signing key.
    fn write(dir: &Path) -> Result<Self> {
        let pki = dir.join("pki");
        let issued = crate::pki::issue(&pki, "apiserver")?;
        let sa_key = rcgen::KeyPair::generate()?;
        let paths = Self {
            ca_cert: issued.ca_cert,
            serving_cert: issued.cert,
            serving_key: issued.key,
            sa_key: pki.join("sa.key"),
            sa_pub: pki.join("sa.pub"),
        };
        std::fs::write(&paths.sa_key, sa_key.serialize_pem())?;
        std::fs::write(&paths.sa_pub, sa_key.public_key_pem())?;
        Ok(paths)
    }
}
