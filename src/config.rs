//! Settings: every knob of the service, read from the environment (and a
//! `.env` file, loaded by `main`) or from command-line flags.
//!
//! `bouncer --help` prints each one with its variable and default; the README
//! explains why each default is what it is.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Database: `sqlite:PATH` (embedded, created on first start) or
    /// `postgres://user@host/db`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite:bouncer.db")]
    pub database_url: String,

    /// Largest number of database connections this process opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub database_max_connections: u32,

    /// How long a request waits for a free database connection before the
    /// database counts as unavailable (and the message is spooled); on
    /// PostgreSQL also how long each statement waits for a lock held
    /// elsewhere (`lock_timeout`; not the writer's, not migrations').
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 3000,
          value_parser = millis())]
    pub database_acquire_timeout_ms: u64,

    /// Longest a batch of writes may take (PostgreSQL: also each statement's
    /// and lock wait's limit) before the database counts as down and the
    /// messages go to the spool instead.
    #[arg(long, env = "DATABASE_WRITE_TIMEOUT_MS", default_value_t = 5000,
          value_parser = millis())]
    pub database_write_timeout_ms: u64,

    /// How long a SQLite write waits for a lock held by another process
    /// before the message goes to the spool instead.
    #[arg(long, env = "SQLITE_BUSY_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub sqlite_busy_timeout_ms: u64,

    /// Address and port of the public listener: `POST /sns` (SNS must reach
    /// it), `/healthz` and `/readyz`, nothing else.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: String,

    /// Address and port of the admin listener: the page for people, `/v1` and `/metrics`. On any
    /// address other than loopback it requires API_TOKENS (start-up refuses
    /// without them).
    #[arg(long, env = "ADMIN_LISTEN_ADDR", default_value = "127.0.0.1:8081")]
    pub admin_listen_addr: String,

    /// PEM certificate chain: with TLS_KEY_FILE, serve HTTPS directly.
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key for TLS_CERT_FILE.
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// Comma-separated SNS topic ARNs whose messages are accepted. Empty:
    /// every SNS message is refused.
    #[arg(long, env = "SNS_TOPIC_ARNS", value_delimiter = ',')]
    pub sns_topic_arns: Vec<String>,

    /// Refuse SignatureVersion 1 (SHA1withRSA); accept only version 2.
    #[arg(long, env = "SNS_REQUIRE_SIGNATURE_V2", default_value = "false",
          action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub sns_require_signature_v2: bool,

    /// Largest accepted request body on POST /sns, in bytes (413 above).
    #[arg(long, env = "SNS_MAX_BODY_BYTES", default_value_t = 512 * 1024,
          value_parser = sized(1024..=16 * 1024 * 1024))]
    pub sns_max_body_bytes: usize,

    /// Oldest accepted message, by its signed Timestamp, in seconds.
    #[arg(long, env = "SNS_MAX_AGE_SECS", default_value_t = 7200,
          value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
    pub sns_max_age_secs: u64,

    /// How far in the future a message's Timestamp may be, in seconds.
    #[arg(long, env = "SNS_MAX_FUTURE_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub sns_max_future_secs: u64,

    /// Pinned signing certificates, comma-separated `URL=PEM_FILE` pairs; a
    /// pinned URL is never fetched, and must still pass the URL rule.
    #[arg(long, env = "SNS_CERT_PINS", value_delimiter = ',')]
    pub sns_cert_pins: Vec<String>,

    /// How a SubscriptionConfirmation is confirmed: `sdk` (the SNS
    /// ConfirmSubscription API, credentials from the standard AWS chain),
    /// `url` (GET the checked SubscribeURL), `off` (only record it), or
    /// `auto` (`sdk` when AWS credentials are found, else `url`).
    #[arg(long, env = "SNS_CONFIRM_MODE", default_value = "auto")]
    pub sns_confirm_mode: crate::sns::confirm::ConfirmMode,

    /// Endpoint for the SNS API instead of the region's (a VPC endpoint).
    #[arg(long, env = "SNS_API_ENDPOINT")]
    pub sns_api_endpoint: Option<String>,

    /// Time limit for fetching a signing certificate, in milliseconds.
    #[arg(long, env = "SNS_CERT_FETCH_TIMEOUT_MS", default_value_t = 3000,
          value_parser = millis())]
    pub sns_cert_fetch_timeout_ms: u64,

    /// Largest signing certificate accepted from the network, in bytes.
    #[arg(long, env = "SNS_CERT_MAX_BYTES", default_value_t = 16 * 1024,
          value_parser = sized(1024..=1024 * 1024))]
    pub sns_cert_max_bytes: usize,

    /// How many fetched signing certificates are kept in memory.
    #[arg(long, env = "SNS_CERT_CACHE_SIZE", default_value_t = 32,
          value_parser = sized(1..=100_000))]
    pub sns_cert_cache_size: usize,

    /// Soft bounces (transient or undetermined, not blaming the content)
    /// that suppress an address when they fall within SOFT_BOUNCE_WINDOW_DAYS.
    #[arg(long, env = "SOFT_BOUNCE_LIMIT", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub soft_bounce_limit: u32,

    /// The window, in days: SOFT_BOUNCE_LIMIT soft bounces within it of each
    /// other suppress; a later delivery, or a removal by hand, resets the
    /// count.
    #[arg(long, env = "SOFT_BOUNCE_WINDOW_DAYS", default_value_t = 14,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub soft_bounce_window_days: u32,

    /// Admin bearer tokens, comma-separated `name:token` pairs (the name is
    /// recorded as who made a change); with tokens, every request to the
    /// admin listener needs one. Empty: ADMIN_LISTEN_ADDR must be loopback,
    /// and serves whoever can connect to it.
    #[arg(
        long,
        env = "API_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_tokens: Vec<String>,

    /// The rate window: the most recent sends counted (like SES's
    /// representative volume).
    #[arg(long, env = "GUARD_WINDOW_SENDS", default_value_t = 10_000,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub guard_window_sends: i64,

    /// ...bounded by this age, in days: older events never count.
    #[arg(long, env = "GUARD_MAX_AGE_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub guard_max_age_days: u32,

    /// Fewer sends than this in the window: the guard neither warns nor
    /// pauses.
    #[arg(long, env = "GUARD_MIN_VOLUME", default_value_t = 1000,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub guard_min_volume: i64,

    /// Pause sending when the bounce rate is above this percentage.
    #[arg(long, env = "GUARD_BOUNCE_PAUSE_PERCENT", default_value = "5")]
    pub guard_bounce_pause_percent: String,

    /// Pause sending when the complaint rate is above this percentage.
    #[arg(long, env = "GUARD_COMPLAINT_PAUSE_PERCENT", default_value = "0.1")]
    pub guard_complaint_pause_percent: String,

    /// Warn (once per crossing) when the bounce rate is above this percentage.
    #[arg(long, env = "GUARD_BOUNCE_WARN_PERCENT", default_value = "2.5")]
    pub guard_bounce_warn_percent: String,

    /// Warn when the complaint rate is above this percentage.
    #[arg(long, env = "GUARD_COMPLAINT_WARN_PERCENT", default_value = "0.05")]
    pub guard_complaint_warn_percent: String,

    /// Early warnings on or off.
    #[arg(long, env = "GUARD_WARN", default_value = "true",
          action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub guard_warn: bool,

    /// Admin alerts as JSON (with a Slack-compatible `text`) to this URL.
    #[arg(long, env = "ALERT_WEBHOOK_URL", hide_env_values = true)]
    pub alert_webhook_url: Option<String>,

    /// Admin alerts by email to these comma-separated addresses (needs SMTP_HOST).
    #[arg(long, env = "ALERT_EMAILS", value_delimiter = ',')]
    pub alert_emails: Vec<String>,

    /// SMTP server for alert emails (the sender's own SMTP settings).
    #[arg(long, env = "SMTP_HOST")]
    pub smtp_host: Option<String>,

    #[arg(long, env = "SMTP_PORT", default_value_t = 587)]
    pub smtp_port: u16,

    #[arg(long, env = "SMTP_USER")]
    pub smtp_user: Option<String>,

    #[arg(long, env = "SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<String>,

    #[arg(long, env = "SMTP_FROM_EMAIL")]
    pub smtp_from_email: Option<String>,

    #[arg(long, env = "SMTP_FROM_NAME", default_value = "bouncer")]
    pub smtp_from_name: String,

    /// `auto` (implicit TLS on port 465, else STARTTLS required), `starttls`,
    /// `tls`, or `none` (plain text: a local relay only).
    #[arg(long, env = "SMTP_TLS", default_value = "auto")]
    pub smtp_tls: SmtpTls,

    /// First retry delay for a failed alert delivery, in milliseconds; it
    /// doubles per attempt up to an hour.
    #[arg(long, env = "ALERT_RETRY_MIN_MS", default_value_t = 5000,
          value_parser = millis())]
    pub alert_retry_min_ms: u64,

    /// Act at SES on every pause and resume (automatic or by hand): `off`,
    /// `account` (PutAccountSendingAttributes: the whole account in
    /// SES_REGION), or `configuration-sets` (PutConfigurationSetSendingOptions
    /// on each of SES_CONFIGURATION_SETS).
    #[arg(long, env = "SES_PAUSE_MODE", default_value = "off")]
    pub ses_pause_mode: SesPauseMode,

    /// Comma-separated configuration set names that SES_PAUSE_MODE=configuration-sets
    /// pauses and resumes.
    #[arg(long, env = "SES_CONFIGURATION_SETS", value_delimiter = ',')]
    pub ses_configuration_sets: Vec<String>,

    /// The AWS region of the SES account bouncer acts on (e.g. eu-west-1);
    /// required by SES_PAUSE_MODE, SES_PUSH_SUPPRESSIONS and `bouncer ses`.
    #[arg(long, env = "SES_REGION")]
    pub ses_region: Option<String>,

    /// Endpoint for the SESv2 API instead of the region's (a VPC endpoint).
    #[arg(long, env = "SES_API_ENDPOINT")]
    pub ses_api_endpoint: Option<String>,

    /// Put every suppression bouncer adds on the SES account-level
    /// suppression list, and delete what bouncer removes.
    #[arg(long, env = "SES_PUSH_SUPPRESSIONS", default_value = "false",
          action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub ses_push_suppressions: bool,

    /// The SES reason a manual suppression is pushed with: `bounce`,
    /// `complaint`, or `none` (manual rows stay in bouncer only).
    #[arg(long, env = "SES_PUSH_MANUAL_AS", default_value = "bounce")]
    pub ses_push_manual_as: ManualAs,

    /// Most suppression-list calls per second this process makes to SES.
    #[arg(long, env = "SES_PUSH_RATE_PER_SEC", default_value_t = 1.0)]
    pub ses_push_rate_per_sec: f64,

    /// First retry delay of a failed call to SES, in milliseconds; it
    /// doubles per attempt up to 5 minutes.
    #[arg(long, env = "SES_RETRY_MIN_MS", default_value_t = 1000,
          value_parser = millis())]
    pub ses_retry_min_ms: u64,

    /// How often the SES worker looks for work, in milliseconds.
    #[arg(long, env = "SES_POLL_MS", default_value_t = 1000,
          value_parser = millis())]
    pub ses_poll_ms: u64,

    /// Days SNS messages, SES events and alerts are kept (never less than
    /// GUARD_MAX_AGE_DAYS for what the guard counts, SNS_MAX_AGE_SECS for
    /// messages, SOFT_BOUNCE_WINDOW_DAYS for SES events). The suppression
    /// list and its removal audit are kept for ever. 0: never prune.
    #[arg(long, env = "RETENTION_DAYS", default_value_t = 180)]
    pub retention_days: u32,

    /// Local durable spool for verified messages while the database is
    /// unreachable (must be on persistent disk).
    #[arg(long, env = "SPOOL_PATH", default_value = "bouncer.spool")]
    pub spool_path: PathBuf,

    /// Most SNS messages committed together in one transaction.
    #[arg(long, env = "WRITE_BATCH_MAX", default_value_t = 512,
          value_parser = sized(1..=10_000))]
    pub write_batch_max: usize,

    /// Longest time a client may take to send a request body after its
    /// headers (a stalled body is answered 408 and its connection closed).
    #[arg(long, env = "HTTP_BODY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = millis())]
    pub http_body_timeout_ms: u64,

    /// Longest a client may take none of an answer's bytes while bouncer
    /// has more to send it (its connection is then closed): a client that
    /// reads nothing holds neither memory nor a connection for longer.
    #[arg(long, env = "HTTP_SEND_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = millis())]
    pub http_send_timeout_ms: u64,

    /// Most connections served at once; more wait in the listen backlog.
    /// Kept below the process's file descriptor limit, which `serve` raises
    /// to its hard limit. Each one held open costs about 32 KiB however
    /// little it sends: 1,024 keeps a flood of stalled clients within SPEC
    /// §9's 64 MiB (4,096 reached 118 MB), and is 16 times the 64 in
    /// flight at which throughput peaks. At least 64: the cap was raised
    /// to that silently before, and fewer would let a handful of slow
    /// clients hold every slot.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = sized(64..=1_000_000))]
    pub http_max_connections: usize,

    /// HTTP worker threads (0: one per CPU).
    #[arg(long, env = "HTTP_WORKERS", default_value_t = 0,
          value_parser = sized(0..=512))]
    pub http_workers: usize,

    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_timeout_secs: u64,

    /// Log filter: a level (`trace`, `debug`, `info`, `warn`, `error`,
    /// `off`), optionally with `target=level` pairs (e.g.
    /// `info,bouncer=debug`). The AWS SDK and sqlx log at `warn` unless named.
    #[arg(long, env = "LOG_LEVEL", default_value = "info",
          value_parser = crate::telemetry::parse_log_level)]
    pub log_level: String,

    /// Log format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// A time-out or interval in milliseconds: at least 1, at most a day
/// (libraries take some of them as C ints, and none is useful longer).
fn millis() -> clap::builder::RangedU64ValueParser<u64> {
    clap::builder::RangedU64ValueParser::new().range(1..=86_400_000)
}

/// A count or size within `range`, read as a `usize`.
fn sized(range: std::ops::RangeInclusive<u64>) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(range)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SmtpTls {
    Auto,
    Starttls,
    Tls,
    None,
}

/// Where a pause is enforced at SES (see `ses_account`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SesPauseMode {
    Off,
    Account,
    ConfigurationSets,
}

impl SesPauseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SesPauseMode::Off => "off",
            SesPauseMode::Account => "account",
            SesPauseMode::ConfigurationSets => "configuration-sets",
        }
    }
}

/// The SES reason a manual suppression is pushed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ManualAs {
    Bounce,
    Complaint,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Settings {
    /// The settings with every default, as `bouncer` would start with an
    /// empty environment. Tests start from here and change what they need.
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            settings: Settings,
        }
        // Parsing an empty command line only fails if a default is invalid,
        // which is a programming error caught by the unit test below.
        <Only as clap::Parser>::try_parse_from(["bouncer"])
            .map(|only| only.settings)
            .unwrap_or_else(|e| panic!("built-in defaults do not parse: {e}"))
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let s = Settings::defaults();
        assert_eq!(s.sns_max_body_bytes, 524_288);
        assert!(s.sns_topic_arns.is_empty());
    }
}
