//! The whole service driven over HTTP, on SQLite and on PostgreSQL.

mod helpers;
mod signing;

mod alert_sinks;
mod aws_real;
mod cert_fetch;
mod cli;
mod cli_database;
mod cli_replay;
mod cli_suppressions;
mod durability;
mod feedback;
mod fixtures;
mod guard;
mod health;
mod retention;
mod sender_side;
mod sns_endpoint;
mod subscriptions;
mod suppression_api;
