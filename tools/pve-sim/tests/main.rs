//! The pve-sim integration tests, one test binary: the API endpoint by
//! endpoint, end to end with the stock OpenSSH client, fifty containers at
//! once, and the walk of the official API schema.

mod common;

mod api;
mod e2e_ssh;
mod scale;
mod schema_walk;
