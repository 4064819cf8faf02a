pub mod crd;
pub mod proxmox;
pub mod ssh;
pub mod layout;
pub mod discovery;
