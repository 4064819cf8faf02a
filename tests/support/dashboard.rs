//! The dashboard as a real process, ServiceAccount tokens for its callers,
//! a small Server-Sent Events reader, and events written to a Container's
//! Redis stream as the controller writes them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use futures::stream::{BoxStream, StreamExt};
use infrahaus_operator::progress::{events_stream, ContainerRef, LogStream, ProgressEvent, EVENTS_STREAM_FIELD};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::json;
use testbed::ManagedProcess;

use super::World;

/// A running `infrahaus-operator dashboard`.
pub struct Dashboard {
    pub base: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    process: Option<ManagedProcess>,
}

impl Dashboard {
    /// Starts the dashboard on a free loopback port with the world's admin
    /// kubeconfig, Redis at `redis_url` (none: status mode) and `extra` flags.
    pub async fn start(world: &World, redis_url: Option<&str>, extra: &[&str]) -> Result<Self> {
        Self::start_with_kubeconfig(world, &world.kube.kubeconfig, redis_url, extra).await
    }

    pub async fn start_with_kubeconfig(
        world: &World,
        kubeconfig: &Path,
        redis_url: Option<&str>,
        extra: &[&str],
    ) -> Result<Self> {
        let port = testbed::process::free_port()?;
        let mut args = vec!["dashboard".to_owned(), format!("--listen=127.0.0.1:{port}")];
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut env = vec![
            ("KUBECONFIG".to_owned(), kubeconfig.display().to_string()),
            ("RUST_LOG".to_owned(), "info,infrahaus_operator=debug".to_owned()),
        ];
        if let Some(url) = redis_url {
            env.push(("REDIS_URL".to_owned(), url.to_owned()));
        }
        let log = world.dir.join(format!("dashboard-{port}.log"));
        let mut dashboard = Self { base: format!("http://127.0.0.1:{port}"), args, env, log, process: None };
        dashboard.spawn().await?;
        Ok(dashboard)
    }

    async fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_infrahaus-operator"));
        cmd.args(&self.args).env_remove("REDIS_URL").envs(self.env.iter().map(|(k, v)| (k, v)));
        // Appended to, so a restarted dashboard's log follows the first one's.
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        cmd.stdout(log.try_clone()?).stderr(log).stdin(std::process::Stdio::null());
        let (process, _) = ManagedProcess::spawn_configured("dashboard", cmd, &self.log)?;
        self.process = Some(process);
        self.wait_healthy().await
    }

    async fn wait_healthy(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = reqwest::get(format!("{}/healthz", self.base)).await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if !self.process.as_ref().is_some_and(|p| p.is_running()) || tokio::time::Instant::now() > deadline {
                bail!("the dashboard did not come up:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts the killed dashboard again, on the same port.
    pub async fn start_again(&mut self) -> Result<()> {
        self.spawn().await
    }

    /// Kills the process at once: every open stream drops.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// SIGTERM, then how the process ended within `grace` (`None`: still running).
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let process = self.process.take()?;
        process.signal(libc::SIGTERM);
        let status = process.wait_exit(grace);
        drop(process);
        status
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, ManagedProcess::pid)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A GET with an optional bearer token and headers.
    pub async fn get(&self, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Result<reqwest::Response> {
        let mut request = http().get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Ok(request.send().await?)
    }

    /// Opens the event stream of Container `name` in `namespace`.
    pub async fn events(
        &self,
        namespace: &str,
        name: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<SseReader> {
        let path = format!("/api/v1/namespaces/{namespace}/containers/{name}/events");
        let response = self.get(&path, token, headers).await?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            bail!("{path}: {status}: {}", response.text().await.unwrap_or_default());
        }
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !content_type.starts_with("text/event-stream") {
            bail!("{path}: content type {content_type:?}");
        }
        Ok(SseReader::new(response))
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("an HTTP client")
}

/// One SSE event with data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub data: String,
}

/// Reads events from a `text/event-stream` response.
pub struct SseReader {
    body: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
    /// Comment lines seen (the heartbeats).
    pub comments: Vec<String>,
    /// The last `retry:` value seen.
    pub retry: Option<String>,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: response.bytes_stream().map(|chunk| chunk.map(|bytes| bytes.to_vec())).boxed(),
            buffer: String::new(),
            comments: Vec::new(),
            retry: None,
        }
    }

    /// The next event with data, or `None` if none came within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<SseEvent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = self.parse_block(&block) {
                    return Ok(Some(event));
                }
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => bail!("the event stream ended"),
                Ok(Some(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk?)),
            }
        }
    }

    /// The next `count` events, failing if they do not all come in `timeout`.
    pub async fn take(&mut self, count: usize, timeout: Duration) -> Result<Vec<SseEvent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Some(event) => events.push(event),
                None => bail!("{} of {count} events within {timeout:?}: {events:?}", events.len()),
            }
        }
        Ok(events)
    }

    fn parse_block(&mut self, block: &str) -> Option<SseEvent> {
        let mut id = None;
        let mut data: Option<String> = None;
        for line in block.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "" => self.comments.push(value.to_owned()),
                "id" => id = Some(value.to_owned()),
                "retry" => self.retry = Some(value.to_owned()),
                "data" => match &mut data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
        data.map(|data| SseEvent { id, data })
    }
}

/// A ServiceAccount `name` in the world's namespace and a token for it;
/// with `may_view`, a Role that lets it get and list Containers there.
pub async fn service_account_token(world: &World, name: &str, may_view: bool) -> Result<String> {
    world.apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})).await?;
    if may_view {
        world
            .apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": format!("{name}-views-containers")},
                "rules": [{"apiGroups": ["infrahaus.io"], "resources": ["containers"], "verbs": ["get", "list"]}]
            }))
            .await?;
        world
            .apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": format!("{name}-views-containers")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{name}-views-containers")},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": world.ns}]
            }))
            .await?;
    }
    token_for(&world.client, &world.ns, name).await
}

/// A one-hour token of ServiceAccount `namespace/name` (TokenRequest API).
pub async fn token_for(client: &kube::Client, namespace: &str, name: &str) -> Result<String> {
    let request = TokenRequest {
        spec: TokenRequestSpec { audiences: Vec::new(), expiration_seconds: Some(3600), bound_object_ref: None },
        ..Default::default()
    };
    let response = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await?;
    Ok(response.status.context("TokenRequest without a token")?.token)
}

/// Writes `count` script output lines for Container `name` to its Redis
/// stream as the controller would, numbered from `first`; returns each
/// entry's id and JSON.
pub async fn add_log_events(
    world: &World,
    redis_url: &str,
    name: &str,
    first: usize,
    count: usize,
) -> Result<Vec<(String, String)>> {
    let container = ContainerRef::new(world.ns.clone(), name, "uid-test");
    let mut connection = redis::Client::open(redis_url)?.get_multiplexed_async_connection().await?;
    let mut added = Vec::with_capacity(count);
    for n in first..first + count {
        let event = ProgressEvent::log(&container, "syncing", 70, LogStream::Stdout, "10-test.sh", format!("line {n}"));
        let json = event.to_json();
        let id: String = redis::cmd("XADD")
            .arg(events_stream(&world.ns, name))
            .arg("*")
            .arg(EVENTS_STREAM_FIELD)
            .arg(&json)
            .query_async(&mut connection)
            .await?;
        added.push((id, json));
    }
    Ok(added)
}

/// The ids of a Container's Redis stream, oldest first.
pub async fn stream_ids(world: &World, redis_url: &str, name: &str) -> Result<Vec<String>> {
    let mut connection = redis::Client::open(redis_url)?.get_multiplexed_async_connection().await?;
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(events_stream(&world.ns, name)).arg("-").arg("+").query_async(&mut connection).await?;
    Ok(reply.ids.into_iter().map(|entry| entry.id).collect())
}

/// The connections of the dashboard in Redis's `CLIENT LIST`.
pub async fn dashboard_connections(redis_url: &str) -> Result<usize> {
    let mut connection = redis::Client::open(redis_url)?.get_multiplexed_async_connection().await?;
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut connection).await?;
    Ok(list.lines().filter(|line| line.split(' ').any(|field| field == "name=infrahaus-dashboard")).count())
}

/// The world's Container `name` without a controller: it stays Pending,
/// which is all the stream endpoints need.
pub async fn idle_container(world: &World, name: &str) -> Result<()> {
    world.apply(super::fixtures::container(name, "web", json!({"ipv4": "dhcp"}))).await
}
