//! bouncer keeps an Amazon SES sender's reputation safe: it receives SES
//! feedback from SNS, proves each message genuine, and stores it.
//!
//! A request walks: `routes::sns` → `sns::envelope` → `sns::verify` →
//! `store::writer` (group commit, or the `spool` when the database is away).

pub mod alerts;
pub mod app;
pub mod auth;
pub mod cli;
pub mod cli_suppressions;
pub mod clock;
pub mod config;
pub mod error;
pub mod guard;
pub mod metrics;
pub mod outbound;
pub mod routes;
pub mod ses;
pub mod sns;
pub mod spool;
pub mod store;
pub mod telemetry;
