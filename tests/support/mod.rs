//! Fixtures for the controller's integration tests, on top of the shared
//! test bed: CRDs installed once, a namespace per test, pve-sim, a
//! ProxmoxNode pinned to its certificate, and the controller as a real
//! process (so tests can kill and restart it).

pub mod dashboard;
pub mod fixtures;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use infrahaus_operator::crd::{self, Container, Phase};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::{json, Value};
use testbed::{KubeEnv, ManagedProcess, PveSim, PveSimOptions};
use tokio::sync::OnceCell;

pub const MANAGER: &str = "infrahaus-tests";

/// One test's world: its namespace on the shared API server, its own pve-sim,
/// and the shared Redis.
pub struct World {
    pub kube: &'static KubeEnv,
    pub client: kube::Client,
    pub ns: String,
    pub sim: PveSim,
    pub redis_url: Option<String>,
    /// The CA of a TLS Redis (`rediss://`), passed on as `REDIS_CA_FILE`.
    pub redis_ca_file: Option<PathBuf>,
    /// Controller logs and other files of this world, removed at exit.
    pub dir: PathBuf,
    controllers: Vec<ManagedProcess>,
    /// Where each controller serves /metrics.
    metrics_ports: Vec<u16>,
}

impl World {
    pub async fn new(prefix: &str) -> Result<Self> {
        Self::with_sim(prefix, PveSimOptions::default()).await
    }

    pub async fn with_sim(prefix: &str, options: PveSimOptions) -> Result<Self> {
        let kube = testbed::kube().await?;
        let client = kube.client().await?;
        install_crds(&client).await?;
        Self::on(kube, client, prefix, options).await
    }

    /// A world on an API server of its own, for a controller that watches
    /// every namespace: on the shared one it would act on other tests'
    /// Containers as well.
    pub async fn isolated(prefix: &str) -> Result<Self> {
        let kube = testbed::private_kube().await?;
        let client = kube.client().await?;
        apply_crds(&client).await?;
        Self::on(kube, client, prefix, PveSimOptions::default()).await
    }

    async fn on(kube: &'static KubeEnv, client: kube::Client, prefix: &str, options: PveSimOptions) -> Result<Self> {
        let ns = testbed::unique_namespace(&client, prefix).await?;
        let sim = PveSim::start(options).await?;
        let redis_url = Some(testbed::redis().await?.url.clone());
        let dir = testbed::process::work_dir("infrahaus-world")?;
        testbed::process::remove_at_exit(dir.clone());
        let world = Self {
            kube,
            client,
            ns,
            sim,
            redis_url,
            redis_ca_file: None,
            dir,
            controllers: Vec::new(),
            metrics_ports: Vec::new(),
        };
        world.apply_node("pve1").await?;
        Ok(world)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// A ProxmoxNode named `name` for this world's pve-sim, with its token
    /// Secret, pinned by certificate fingerprint.
    pub async fn apply_node(&self, name: &str) -> Result<()> {
        self.apply_node_with_slots(name, 4).await
    }

    /// Waits until pve1 runs a task of `kind` (`vzcreate`, ...).
    pub async fn wait_active_task(&self, kind: &str, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let tasks = self.pve_get(&format!("/nodes/pve1/tasks?typefilter={kind}&source=active")).await?;
            if tasks.as_array().is_some_and(|t| !t.is_empty()) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no {kind} task started on pve1 within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Like [`World::apply_node`], with `slots` operation slots
    /// (`maxConcurrentOperations`).
    pub async fn apply_node_with_slots(&self, name: &str, slots: u32) -> Result<()> {
        self.apply(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{name}-token")},
            "stringData": {"tokenId": self.sim.token_id, "secret": self.sim.token_secret}
        }))
        .await?;
        self.apply(json!({
            "apiVersion": "infrahaus.io/v1alpha1", "kind": "ProxmoxNode",
            "metadata": {"name": name},
            "spec": {
                "endpoint": self.sim.url,
                "nodeName": self.sim.node,
                "tokenSecretRef": {"name": format!("{name}-token")},
                "tls": {"fingerprint": self.sim.fingerprint},
                "maxConcurrentOperations": slots
            }
        }))
        .await
    }

    /// Server-side applies any namespaced object into this world's namespace.
    pub async fn apply(&self, mut object: Value) -> Result<()> {
        object["metadata"]["namespace"] = Value::String(self.ns.clone());
        let path = std::env::temp_dir().join(format!("apply-{}-{}.json", self.ns, rand_suffix()));
        std::fs::write(&path, serde_json::to_vec(&object)?)?;
        let out = self.kubectl(&["apply", "--server-side", "--field-manager", MANAGER, "-f"], Some(&path))?;
        let _ = std::fs::remove_file(&path);
        if !out.status.success() {
            bail!("kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    pub fn kubectl(&self, args: &[&str], file: Option<&PathBuf>) -> Result<std::process::Output> {
        let mut cmd = Command::new("kubectl");
        cmd.args(args);
        if let Some(file) = file {
            cmd.arg(file);
        }
        cmd.args(["-n", &self.ns, "--kubeconfig"]).arg(&self.kube.kubeconfig);
        cmd.output().context("run kubectl")
    }

    /// Starts `infrahaus-operator run` for this namespace; its output goes to
    /// a log file that tests read back (for the no-leak checks).
    pub fn start_controller(&mut self, extra: &[&str]) -> Result<usize> {
        let mut args = vec!["run".to_string(), "--watch-namespace".to_string(), self.ns.clone()];
        args.extend(extra.iter().map(|a| a.to_string()));
        let kubeconfig = self.kube.kubeconfig.clone();
        let ns = self.ns.clone();
        self.start_controller_with_kubeconfig(&kubeconfig, &ns, &args)
    }

    pub fn controller(&self, index: usize) -> &ManagedProcess {
        &self.controllers[index]
    }

    /// Everything the controllers of this world printed.
    pub fn controller_logs(&self) -> String {
        self.controllers
            .iter()
            .map(|c| std::fs::read_to_string(c.log_path()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn container(&self, name: &str) -> Result<Container> {
        Ok(self.api::<Container>().get(name).await?)
    }

    /// Waits until the Container is in `phase`; fails early on an unexpected
    /// Error, with the controller's log tail.
    pub async fn wait_phase(&self, name: &str, phase: Phase, timeout: Duration) -> Result<Container> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ct = self.api::<Container>().get_opt(name).await?;
            let status = ct.as_ref().and_then(|c| c.status.clone()).unwrap_or_default();
            if status.phase == Some(phase) {
                return ct.context("container vanished");
            }
            if status.phase == Some(Phase::Error) && phase != Phase::Error {
                bail!("{name} went to Error: {:?}\n{}", status.message, self.log_tail());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{name} not {phase:?} after {timeout:?}; phase {:?}, message {:?}\n{}",
                    status.phase,
                    status.message,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `check` holds for the Container.
    pub async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Container) -> bool,
    ) -> Result<Container> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ct = self.api::<Container>().get_opt(name).await?;
            if let Some(ct) = &ct {
                if check(ct) {
                    return Ok(ct.clone());
                }
            }
            if tokio::time::Instant::now() > deadline {
                let status =
                    ct.map_or_else(|| "(the Container does not exist)".into(), |ct| format!("{:?}", ct.status));
                bail!("{name}: {what} not reached after {timeout:?}; status {status}\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        self.controllers.last().map(|c| c.log_tail(40)).unwrap_or_default()
    }

    /// Runs a pve-sim admin call (fault injection).
    pub async fn sim_admin(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        let http = sim_http(&self.sim)?;
        let response = http
            .request(method, format!("{}{path}", self.sim.url))
            .header("Authorization", self.sim.auth_header())
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("pve-sim admin {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET on the simulated Proxmox API; returns `data`.
    pub async fn pve_get(&self, path: &str) -> Result<Value> {
        let http = sim_http(&self.sim)?;
        let response = http.get(self.sim.api_url(path)).header("Authorization", self.sim.auth_header()).send().await?;
        let value: Value = response.json().await?;
        Ok(value["data"].clone())
    }

    /// PUT of a form on the simulated Proxmox API, as a user changing a guest
    /// by hand would; fails unless it succeeds.
    pub async fn pve_put(&self, path: &str, form: &[(&str, &str)]) -> Result<()> {
        self.pve_request(reqwest::Method::PUT, path, form).await.map(drop)
    }

    /// A request with a form on the simulated Proxmox API, as a user working
    /// on a guest by hand would; returns `data`, fails unless it succeeds.
    pub async fn pve_request(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Result<Value> {
        let http = sim_http(&self.sim)?;
        let request =
            http.request(method.clone(), self.sim.api_url(path)).header("Authorization", self.sim.auth_header());
        let response = request.form(form).send().await?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(serde_json::from_str::<Value>(&text)?["data"].clone())
    }

    /// Waits for a Proxmox task (a UPID a request returned) to end.
    pub async fn pve_wait_task(&self, upid: &Value) -> Result<()> {
        let upid = upid.as_str().context("no UPID")?;
        for _ in 0..600 {
            let status = self.pve_get(&format!("/nodes/pve1/tasks/{upid}/status")).await?;
            if status["status"] == "stopped" {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("task {upid} did not end")
    }

    /// The text of a controller's /metrics.
    pub async fn controller_metrics(&self, index: usize) -> Result<String> {
        let port = self.metrics_ports.get(index).context("no such controller")?;
        let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await?;
        Ok(response.error_for_status()?.text().await?)
    }

    /// The counter of a metric in a controller's /metrics (0 when absent).
    pub async fn controller_metric(&self, index: usize, metric: &str) -> Result<f64> {
        let text = self.controller_metrics(index).await?;
        Ok(text
            .lines()
            .filter(|line| line.split(['{', ' ']).next() == Some(metric))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// The secret values a test world handles, for the no-leak checks.
    /// The places (controller logs, Events, the Containers, the Redis
    /// streams of `names`) that hold any of `secrets`, each named with the
    /// first characters of the value found.
    pub async fn places_holding(&self, secrets: &[String], names: &[String]) -> Result<Vec<String>> {
        use k8s_openapi::api::core::v1::Event as CoreEvent;
        use k8s_openapi::api::events::v1::Event;
        let mut places = vec![
            ("controller logs".to_owned(), self.controller_logs()),
            ("Events".to_owned(), serde_json::to_string(&self.api::<Event>().list(&Default::default()).await?)?),
            (
                "core Events".to_owned(),
                serde_json::to_string(&self.api::<CoreEvent>().list(&Default::default()).await?)?,
            ),
            (
                "Containers".to_owned(),
                serde_json::to_string(&self.api::<Container>().list(&Default::default()).await?)?,
            ),
        ];
        if self.redis_url.is_some() {
            for name in names {
                places
                    .push((format!("Redis events of {name}"), serde_json::to_string(&self.redis_stream(name).await?)?));
            }
        }
        let mut found = Vec::new();
        for (place, text) in &places {
            for secret in secrets {
                if text.contains(secret.as_str()) {
                    let start: String = secret.chars().take(4).collect();
                    found.push(format!("{place} hold a secret value starting {start:?}"));
                }
            }
        }
        Ok(found)
    }

    pub async fn secret_values(&self) -> Result<Vec<String>> {
        let mut values = vec![self.sim.token_secret.clone()];
        for secret in self.api::<Secret>().list(&Default::default()).await? {
            let name = secret.metadata.name.clone().unwrap_or_default();
            let holds_secrets = name.ends_with("-root-password") || name.ends_with("-credentials");
            if holds_secrets || name == "infrahaus-ssh-key" || name.ends_with("-token") {
                for (key, value) in secret.data.unwrap_or_default() {
                    if key == "tokenId" || key == "ssh-publickey" {
                        continue;
                    }
                    let text = String::from_utf8_lossy(&value.0).into_owned();
                    for line in text.lines().filter(|l| l.len() >= 16 && !l.starts_with("-----")) {
                        values.push(line.to_string());
                    }
                }
            }
        }
        Ok(values)
    }
}

pub fn sim_http(sim: &PveSim) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(sim.cert_pem.as_bytes())?)
        .build()?)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Installs the CRDs on the shared API server (once per test binary).
pub async fn install_crds(client: &kube::Client) -> Result<()> {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_try_init(|| apply_crds(client)).await?;
    Ok(())
}

/// Applies the CRDs and waits until they are served.
async fn apply_crds(client: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crd::crds() {
        let name = crd.metadata.name.clone().context("CRD name")?;
        crds.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd)).await?;
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .context("CRD not established in time")??;
    }
    Ok(())
}

impl World {
    /// Every `vzcreate` task the simulated node knows for `vmid`, running or ended.
    pub async fn vzcreate_tasks(&self, vmid: i32) -> Result<Vec<Value>> {
        self.tasks(vmid, "vzcreate").await
    }

    /// Every task of `kind` (`vzstart`, `resize`, ...) the node knows for `vmid`.
    pub async fn tasks(&self, vmid: i32, kind: &str) -> Result<Vec<Value>> {
        let tasks =
            self.pve_get(&format!("/nodes/pve1/tasks?vmid={vmid}&typefilter={kind}&source=all&limit=1000")).await?;
        tasks.as_array().cloned().context("task list is not an array")
    }

    /// A guest as pve-sim holds it: its status, the limits in effect and its
    /// pending values (`GET /sim/state`); `None` when there is no guest.
    pub async fn sim_guest(&self, vmid: i32) -> Result<Option<Value>> {
        let state = self.sim_admin(reqwest::Method::GET, "/sim/state", Value::Null).await?;
        let containers = state["data"]["containers"].as_array().cloned().unwrap_or_default();
        Ok(containers.into_iter().find(|c| c["vmid"] == vmid))
    }

    /// The notes of the Events of `reason` on Container `name`.
    pub async fn event_notes(&self, name: &str, reason: &str) -> Result<Vec<String>> {
        let events = self.api::<k8s_openapi::api::core::v1::Event>().list(&Default::default()).await?;
        Ok(events
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.message)
            .collect())
    }

    /// pve-sim's counts of the Proxmox API requests it handled: `(reads,
    /// writes)`, writes without ticket logins.
    pub async fn sim_requests(&self) -> Result<(u64, u64)> {
        let state = self.sim_admin(reqwest::Method::GET, "/sim/state", Value::Null).await?;
        let requests = &state["data"]["requests"];
        let count = |key: &str| requests[key].as_u64().with_context(|| format!("no requests.{key} in {state}"));
        Ok((count("reads")?, count("writes")?))
    }

    /// Applies a changed `manifest` of Container `name` and waits until it is
    /// Ready for the new generation.
    pub async fn apply_and_wait_ready(&self, name: &str, manifest: Value) -> Result<Container> {
        let before = self.container(name).await?.metadata.generation.unwrap_or_default();
        self.apply(manifest).await?;
        self.wait_for(name, fixtures::READY_TIMEOUT, "Ready for the new generation", |ct| {
            let status = ct.status.as_ref();
            status.and_then(|s| s.phase) == Some(Phase::Ready)
                && ct.metadata.generation > Some(before)
                && status.and_then(|s| s.observed_generation) == ct.metadata.generation
        })
        .await
    }

    /// The Redis stream of `name` once it holds the `complete` event (what
    /// is queued for Redis may still be going out), or as it is after
    /// `timeout`.
    pub async fn redis_stream_until_complete(&self, name: &str, timeout: Duration) -> Result<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let events = self.redis_stream(name).await?;
            if events.iter().any(|e| e["type"] == "complete") || tokio::time::Instant::now() >= deadline {
                return Ok(events);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The events in a Container's Redis replay stream, oldest first.
    pub async fn redis_stream(&self, name: &str) -> Result<Vec<Value>> {
        let url = self.redis_url.as_deref().context("no Redis in this world")?;
        let key = format!("container:{}/{name}:events", self.ns);
        let client = infrahaus_operator::redis_client::open(url, self.redis_ca_file.as_deref())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        let reply: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query_async(&mut connection).await?;
        reply
            .ids
            .iter()
            .map(|entry| {
                let json: String = entry
                    .get(infrahaus_operator::progress::EVENTS_STREAM_FIELD)
                    .context("stream entry without an event field")?;
                Ok(serde_json::from_str(&json)?)
            })
            .collect()
    }
}

impl World {
    /// Starts `infrahaus-operator run` with exactly `args` and the Kubernetes
    /// credentials in `kubeconfig` (e.g. a ServiceAccount token alone), as a
    /// pod in `pod_namespace` would run; a metrics address of its own is added.
    pub fn start_controller_with_kubeconfig(
        &mut self,
        kubeconfig: &std::path::Path,
        pod_namespace: &str,
        args: &[String],
    ) -> Result<usize> {
        let log = self.dir.join(format!("controller-{}.log", self.controllers.len()));
        let port = testbed::process::free_port()?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_infrahaus-operator"));
        cmd.args(args)
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", pod_namespace)
            .env("RUST_LOG", "info,infrahaus_operator=debug")
            .env_remove("REDIS_URL")
            .env_remove("REDIS_CA_FILE");
        if let Some(url) = &self.redis_url {
            cmd.env("REDIS_URL", url);
        }
        if let Some(ca) = &self.redis_ca_file {
            cmd.env("REDIS_CA_FILE", ca);
        }
        let process = ManagedProcess::spawn("infrahaus-operator", cmd, &log)?;
        self.controllers.push(process);
        self.metrics_ports.push(port);
        Ok(self.controllers.len() - 1)
    }
}

/// The resident memory of process `pid`, in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A TCP proxy on loopback in front of `target` that holds every chunk the
/// client sends for `delay` before passing it on: a slow server, seen from
/// the client. Stops with the test's runtime.
pub async fn slow_proxy(target: std::net::SocketAddr, delay: Duration) -> Result<std::net::SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else { return };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let upstream = async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(n) = client_read.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        if server_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let downstream = async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                };
                tokio::join!(upstream, downstream);
            });
        }
    });
    Ok(address)
}
