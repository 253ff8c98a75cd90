//! HTTP endpoints, one file each; handlers are short and delegate.

pub mod api;
pub mod health;
pub mod metrics;
pub mod sns;
