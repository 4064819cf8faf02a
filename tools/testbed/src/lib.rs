//! The test bed: real etcd, kube-apiserver, Redis and pve-sim processes for
//! integration tests, benchmarks and the demo.
//!
//! One shared control plane and Redis per test binary ([`kube`], [`redis`]);
//! tests isolate themselves by namespace ([`unique_namespace`]). Everything
//! started here is stopped when the binary exits, even after a panic, and is
//! killed by the kernel if the binary itself is killed.

pub mod kube_env;
pub mod pki;
pub mod process;
pub mod pve_sim;
pub mod redis_server;
pub mod sshd;

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::Result;

pub use kube_env::{KubeEnv, KubeEnvOptions};
pub use process::ManagedProcess;
pub use pve_sim::{PveSim, PveSimOptions};
pub use redis_server::RedisServer;

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shared<T: Send + Sync + 'static>(
    cell: &'static OnceLock<std::result::Result<T, String>>,
    start: fn() -> Result<T>,
) -> Result<&'static T> {
    cell.get_or_init(|| on_plain_thread(start).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs `start` on a plain thread: the servers must not depend on any one
/// test's async runtime, and start-up uses blocking I/O.
fn on_plain_thread<T: Send + 'static>(start: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    std::thread::spawn(start).join().unwrap_or_else(|_| Err(anyhow::anyhow!("test bed start-up panicked")))
}

/// A control plane in a work directory removed at exit.
fn start_kube() -> Result<KubeEnv> {
    let dir = process::work_dir("infrahaus-kube")?;
    process::remove_at_exit(dir.clone());
    KubeEnv::start(&dir, KubeEnvOptions::default())
}

/// The shared Kubernetes control plane of this test binary, started on first use.
pub async fn kube() -> Result<&'static KubeEnv> {
    static KUBE: OnceLock<std::result::Result<KubeEnv, String>> = OnceLock::new();
    tokio::task::spawn_blocking(|| shared(&KUBE, start_kube)).await?
}

/// An API server of its own (etcd, kube-apiserver, kube-controller-manager)
/// for a test whose controller watches every namespace and so must not see
/// the other tests' objects on the shared one. It runs until the process exits.
pub async fn private_kube() -> Result<&'static KubeEnv> {
    tokio::task::spawn_blocking(|| on_plain_thread(|| start_kube().map(|env| &*Box::leak(Box::new(env))))).await?
}

/// The shared Redis server of this test binary, started on first use.
pub async fn redis() -> Result<&'static RedisServer> {
    static REDIS: OnceLock<std::result::Result<RedisServer, String>> = OnceLock::new();
    tokio::task::spawn_blocking(|| shared(&REDIS, start_redis)).await?
}

/// A Redis server of the caller's own, e.g. to stop it mid-test.
pub async fn dedicated_redis() -> Result<RedisServer> {
    tokio::task::spawn_blocking(start_redis).await?
}

/// A Redis server of the caller's own with a password or TLS.
pub async fn secured_redis(security: redis_server::RedisSecurity) -> Result<RedisServer> {
    tokio::task::spawn_blocking(move || start_secured_redis(&security)).await?
}

fn start_redis() -> Result<RedisServer> {
    start_secured_redis(&Default::default())
}

fn start_secured_redis(security: &redis_server::RedisSecurity) -> Result<RedisServer> {
    let dir = process::work_dir("infrahaus-redis")?;
    process::remove_at_exit(dir.clone());
    RedisServer::start_secured(&dir, security)
}

/// Creates a namespace with a unique name derived from `prefix`.
pub async fn unique_namespace(client: &kube::Client, prefix: &str) -> Result<String> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, PostParams};
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("{prefix}-{}-{n}", std::process::id());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta { name: Some(name.clone()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    Ok(name)
}
