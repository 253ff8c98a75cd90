//! The whole service driven over HTTP, on SQLite and on PostgreSQL.

mod helpers;
mod signing;

mod alert_sinks;
mod aws_real;
mod cert_fetch;
mod cli;
mod durability;
mod feedback;
mod fixtures;
mod guard;
mod health;
mod retention;
mod sender_side;
mod ses_account;
mod ses_cli;
mod ses_stand_in;
mod ses_suppressions;
mod sns_endpoint;
mod subscriptions;
mod suppression_api;
