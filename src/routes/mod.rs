//! HTTP endpoints, one file each; handlers are short and delegate.

pub mod alerts;
pub mod api;
pub mod health;
pub mod metrics;
pub mod page;
pub mod rates;
pub mod sns;
