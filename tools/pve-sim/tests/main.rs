//! The pve-sim integration tests, one test binary: the API endpoint by
//! endpoint, end to end with the stock OpenSSH client, fifty containers at
//! once, two hundred API-only guests, the host key pool and task durations,
//! and the walk of the official API schema.

mod common;

mod api;
mod api_only;
mod e2e_ssh;
mod host_keys;
mod scale;
mod schema_walk;
