//! The whole service driven over HTTP, on SQLite and on PostgreSQL.

mod helpers;
mod signing;

mod alert_sinks;
mod api_leniency;
mod aws_real;
mod cert_fetch;
mod cli;
mod cli_database;
mod cli_guard;
mod cli_replay;
mod cli_settings;
mod cli_suppressions;
mod durability;
mod feedback;
mod fixtures;
mod guard;
mod health;
mod readme;
mod retention;
mod sender_side;
mod sns_endpoint;
mod subscriptions;
mod suppression_api;
