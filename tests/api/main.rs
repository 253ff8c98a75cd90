//! The whole service driven over HTTP, on SQLite and on PostgreSQL.

mod helpers;
mod signing;

mod admin_listener;
mod alert_sinks;
mod aws_real;
mod cert_fetch;
mod cli;
mod confirm_failures;
mod durability;
mod feedback;
mod fixtures;
mod guard;
mod health;
mod logs;
mod outage;
mod pg_faults;
mod poison;
mod regions;
mod retention;
mod sender_side;
mod sns_endpoint;
mod subscriptions;
mod suppression_api;
