//! bouncer keeps an Amazon SES sender's reputation safe: it receives SES
//! feedback from SNS, proves each message genuine, turns it into rows of a
//! suppression list, and pauses sending when the rates pass their lines.
//!
//! # Layout
//!
//! A message walks left to right; each layer imports only those below it.
//!
//! - `routes`: the HTTP endpoints (`POST /sns`, health, `/v1`, metrics, and
//!   the page for people, whose files are `assets/page/`); `auth` and
//!   `cross_site`: the admin listener's two layers (who may call, and no
//!   change sent by another site's page);
//! - `sns`: the envelope, the certificate URL rule, certificates,
//!   signatures, and the verifier that makes a `VerifiedMessage`;
//! - `ses`: SES feedback parsed into events, and the suppression policy;
//! - `ingest`: the accepted message, the writer task that commits batches
//!   (group commit), and the spool that keeps messages while the database
//!   is away;
//! - `guard`: the rates over the send window, the pause, warning and
//!   resume transitions, and the rates hour by hour for people; `alerts`:
//!   delivering the alert outbox;
//! - `ses_account`: acting at SES itself (SPEC §10): the pause carried out
//!   at SES, suppressions pushed to the SES account-level list, and the
//!   list read back (`bouncer ses import|diff|check`);
//! - `store`: persistence only, small SQL functions over plain data on
//!   SQLite or PostgreSQL;
//! - at the root, what every layer shares: `time::Timestamp`,
//!   `address::EmailAddress`, `clock`, `config`, and `aws` (the SDK
//!   configuration every AWS client shares);
//! - on top, what starts it all: `app` (the service, `tls` its HTTPS),
//!   and `cli` with `cli_*` (the commands: suppressions and their CSV,
//!   the guard, replay, SES).

pub mod address;
pub mod alerts;
pub mod app;
pub mod auth;
pub mod aws;
pub mod cli;
pub mod cli_csv;
pub mod cli_guard;
pub mod cli_replay;
pub mod cli_ses;
pub mod cli_suppressions;
pub mod clock;
pub mod config;
pub mod cross_site;
pub mod error;
pub mod guard;
pub mod http_server;
pub mod ingest;
pub mod intake;
pub mod log_budget;
pub mod log_pipe;
pub mod memory;
pub mod metrics;
pub mod outbound;
pub mod routes;
pub mod ses;
pub mod ses_account;
pub mod sns;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod tls;
