//! The whole service driven over HTTP, on SQLite and on PostgreSQL.

mod helpers;
mod signing;

mod admin_listener;
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
mod readme;
mod regions;
mod retention;
mod sender_side;
mod ses_account;
mod ses_cli;
mod ses_stand_in;
mod ses_suppressions;
mod sns_endpoint;
mod subscriptions;
mod suppression_api;
