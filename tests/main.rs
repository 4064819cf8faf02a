//! The operator's integration tests, one binary so that the control plane
//! (kube-apiserver and etcd), Redis and the CRDs are set up once for all of
//! them. One module per area; `cargo test --test integration <area>::` runs
//! one area.

mod support;

mod argocd_health;
mod bench;
mod chaos;
mod chart;
mod crds;
mod dashboard;
mod dashboard_page;
mod drift;
mod examples;
mod faults;
mod leader;
mod leaks;
mod nodes;
mod outages;
mod pipeline;
mod power;
mod process;
mod progress;
mod proxmox_client;
mod reconfigure;
mod redis_security;
mod replicas;
mod restarts;
mod resync;
mod scripts;
mod slots;
mod ssh;
mod watch;
