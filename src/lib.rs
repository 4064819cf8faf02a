//! infrahaus-operator: a Kubernetes operator that creates and configures
//! Proxmox VE LXC containers. The modules the binary and the integration
//! tests use are public; the controllers and their helpers are not.

pub mod crd;
pub mod dashboard;
pub mod discovery;
#[doc(hidden)]
pub mod fuzzing;
pub mod layout;
pub mod leader;
pub mod metrics;
pub mod progress;
pub mod proxmox;
pub mod redis_client;
pub mod run;
pub mod shutdown;
pub mod ssh;
pub mod watch;

mod controller;
mod error;
mod k8s;
mod server;
mod telemetry;
