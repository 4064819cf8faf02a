pub mod crd;
pub mod proxmox;
pub mod ssh;
pub mod layout;
pub mod discovery;
pub mod progress;
pub mod metrics;
