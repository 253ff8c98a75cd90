//! bouncer keeps an Amazon SES sender's reputation safe: it receives SES
//! feedback from SNS, proves each message genuine, turns it into rows of a
//! suppression list, and pauses sending when the rates pass their lines.
//!
//! # Layout
//!
//! A message walks left to right; each layer imports only those below it.
//!
//! - `routes`: the HTTP endpoints (`POST /sns`, health, `/v1`, metrics);
//! - `sns`: the envelope, the certificate URL rule, certificates,
//!   signatures, and the verifier that makes a `VerifiedMessage`;
//! - `ses`: SES feedback parsed into events, and the suppression policy;
//! - `ingest`: the accepted message, the writer task that commits batches
//!   (group commit), and the spool that keeps messages while the database
//!   is away;
//! - `guard`: the rates over the send window and the pause, warning and
//!   resume transitions; `alerts`: delivering the alert outbox;
//! - `store`: persistence only, small SQL functions over plain data on
//!   SQLite or PostgreSQL;
//! - at the root, what every layer shares: `time::Timestamp`,
//!   `address::EmailAddress`, `clock`, `config`;
//! - on top, what starts it all: `app` (the service, `tls` its HTTPS),
//!   and `cli` with `cli_*` (the commands: suppressions and their CSV,
//!   the guard, replay).

pub mod address;
pub mod alerts;
pub mod app;
pub mod auth;
pub mod cli;
pub mod cli_csv;
pub mod cli_guard;
pub mod cli_replay;
pub mod cli_suppressions;
pub mod clock;
pub mod config;
pub mod error;
pub mod guard;
pub mod ingest;
pub mod intake;
pub mod metrics;
pub mod outbound;
pub mod routes;
pub mod ses;
pub mod sns;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod tls;
