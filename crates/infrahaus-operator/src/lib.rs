pub mod ssh;
pub mod layout;
pub mod discovery;
