pub mod crd;
pub mod proxmox;
