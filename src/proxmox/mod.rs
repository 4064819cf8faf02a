//! The Proxmox VE API client: the only code that talks to Proxmox.
//!
//! [`Client`] knows the `{"data": ...}` envelope, the error shapes ([`Error`]
//! decides what is transient) and the task model ([`Upid`], [`Client::wait_task`]).
//! The pure helpers around guests (`net0`, addresses, host keys, ownership marker,
//! tags) live in [`guest`].

mod breaker;
pub(crate) mod client;
mod de;
mod error;
pub mod guest;
mod lxc;
mod retry;
mod secret;
mod tasks;
mod tls;
mod upid;

pub use breaker::Breaker;
pub use client::{Client, ClientConfig, RequestObserver, RequestRecord};
pub use error::Error;
pub use guest::{
    description_with_marker, eth0_ipv4, has_managed_tag, host_key_fingerprints, is_owned_by, marker_uid, net0,
    render_tags, same_tags, uid_marker, Net0, MANAGED_TAG,
};
pub use lxc::{
    parse_size, rootfs, CreateLxcParams, DeleteLxcOptions, Iface, LxcConfig, LxcStatus, PendingEntry, VersionInfo,
};
pub use retry::{retry, Backoff, PollInterval};
pub use secret::{ApiToken, Secret};
pub use tasks::{successful_exit, TaskLog, TaskLogLine, TaskOutcome, TaskStatus, TaskSummary};
pub use tls::{Fingerprint, TlsOptions};
pub use upid::{Upid, UpidParseError};
