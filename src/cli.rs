//! The command line: `serve`, `migrate`, `replay`, the suppression list,
//! the sending state. Every setting is a flag before the subcommand, backed
//! by its environment variable; `bouncer --help` lists them, and each
//! subcommand's own help only its arguments.
//!
//! Only `serve` and `migrate` create or migrate the database; every other
//! command opens the one that exists (see `store::Access`). Exit status: 0
//! done, 1 a negative answer (`suppressions check`: some suppressed), 2 an
//! error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::app::{Application, Hooks};
use crate::config::Settings;
use crate::ingest::recorded::{Compared, RecordedPolicy, service_rules};
use crate::store::{Access, DbError, Store};
use crate::telemetry;

/// Prints a line of a command's answer. A closed pipe (`bouncer ... |
/// head`) ends the command quietly, as it ends other Unix tools, instead of
/// a panic.
macro_rules! say {
    ($($arg:tt)*) => { $crate::cli::say_line(format_args!($($arg)*)) };
}
pub(crate) use say;

pub(crate) fn say_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // What a process killed by SIGPIPE reports.
            std::process::exit(141);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(2);
    }
}

#[derive(Parser)]
#[command(
    name = "bouncer",
    version,
    about = "Keeps an Amazon SES sender's reputation safe: verifies SNS feedback and stores it.",
    after_help = "Every setting can also be given as the environment variable shown, or in a .env file in the working directory. Flags go before the subcommand: bouncer --database-url URL status."
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the HTTP(S) service.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Read and change the suppression list.
    Suppressions {
        #[command(subcommand)]
        command: SuppressionsCommand,
    },
    /// Print the sending state, both rates, the counts and the window.
    Status,
    /// Pause sending by hand.
    Pause {
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
    /// Resume sending; the events behind the last pause no longer count.
    Resume {
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
    /// Admin alerts.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Delete what RETENTION_DAYS no longer keeps (`serve` does it hourly).
    Prune,
    /// List the SNS subscriptions feeding bouncer and their state.
    Subscriptions,
    /// The SES account itself: its suppression list and what the
    /// credentials allow (needs SES_REGION).
    Ses {
        #[command(subcommand)]
        command: crate::cli_ses::SesCommand,
    },
    /// Verify stored SNS messages and apply them to the database, or POST
    /// them to a running endpoint (--url).
    ///
    /// Directly, replay works beside a running service (it does not use
    /// the spool) and records subscription confirmations without
    /// confirming them. Prints one line per message: file, MessageId, what
    /// became of it.
    Replay {
        /// Files holding one SNS envelope each, or one per line (a
        /// dead-letter queue dump, or the lines bouncer set aside:
        /// `{"body": "<envelope>", ...}`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// POST each message to this URL (e.g. http://127.0.0.1:8080/sns)
        /// instead of applying it directly; the endpoint then checks ages
        /// and confirms subscriptions as usual.
        #[arg(long)]
        url: Option<String>,
        /// Accept messages older than SNS_MAX_AGE_SECS (an incident replay;
        /// signatures are still checked). Not with --url.
        #[arg(long)]
        ignore_age: bool,
    },
}

#[derive(Subcommand)]
pub enum AlertsCommand {
    /// Send a test alert through every configured channel now.
    Test,
}

#[derive(Subcommand)]
pub enum SuppressionsCommand {
    /// List suppressed addresses (tab-separated: email, reason, type,
    /// subtype, last seen, events, source).
    List {
        /// Only this reason: bounce, complaint or manual.
        #[arg(long)]
        reason: Option<String>,
        /// Only rows last seen at or after this date or time (ISO 8601).
        #[arg(long)]
        since: Option<String>,
        /// Most rows to print (0: all); stderr says when more rows match.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Tell, for each address, whether it is suppressed and why.
    ///
    /// Exits 0 if none is, 1 if any is, 2 on an error (an invalid address
    /// is reported on stderr and the others are still checked).
    Check {
        #[arg(required = true)]
        addresses: Vec<String>,
    },
    /// Suppress an address by hand (reason `manual`).
    Add {
        address: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Remove an address from the list; recorded with who and why.
    Remove {
        address: String,
        /// Who removes it.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Write the whole list as CSV, every column of the table.
    Export {
        /// File to write (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Merge a CSV file into the list (an export, or any CSV with `email`).
    ///
    /// The header names `email` and any of the table's other columns; other
    /// columns are ignored. New addresses
    /// get the whole row; an address already listed keeps what it knows
    /// (empty columns are filled, first/last seen widened, the larger
    /// event count kept; reason and source never change). A bad line
    /// imports nothing.
    Import { file: PathBuf },
}

impl SuppressionsCommand {
    /// What the command needs of the database.
    fn access(&self) -> Access {
        match self {
            SuppressionsCommand::List { .. }
            | SuppressionsCommand::Check { .. }
            | SuppressionsCommand::Export { .. } => Access::Read,
            SuppressionsCommand::Add { .. }
            | SuppressionsCommand::Remove { .. }
            | SuppressionsCommand::Import { .. } => Access::Write,
        }
    }
}

/// Under each subcommand's help instead of every setting.
const SETTINGS_NOTE: &str = "Settings (DATABASE_URL and the others) come from the environment, a .env file in the working directory, or flags before the subcommand; `bouncer --help` lists them all.";

/// The command line, with the settings note under every subcommand.
fn command() -> clap::Command {
    fn noted(cmd: clap::Command) -> clap::Command {
        let names: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect();
        names
            .into_iter()
            .fold(cmd.after_help(SETTINGS_NOTE), |cmd, name| {
                cmd.mut_subcommand(name, noted)
            })
    }
    let top = Cli::command();
    let names: Vec<String> = top
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    names
        .into_iter()
        .fold(top, |cmd, name| cmd.mut_subcommand(name, noted))
}

/// An error in one line: each cause once (sqlx and anyhow repeat the
/// wrapped error's text), and a database error without the driver's chain.
fn one_line(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        if cause.downcast_ref::<DbError>().is_some() {
            break;
        }
    }
    out
}

pub fn main() -> ExitCode {
    // The working directory's `.env` only, as the README says: dotenvy's
    // `dotenv()` would also take one from any folder above it (`/.env` in
    // a container, `/tmp/.env` under a test's folder).
    match dotenvy::from_path(".env") {
        Ok(()) => {}
        Err(e) if e.not_found() => {}
        Err(e) => {
            eprintln!("error: cannot read .env: {e}");
            return ExitCode::from(2);
        }
    }
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let log_to = match cli.command {
        Command::Serve => telemetry::LogTo::Stdout,
        _ => telemetry::LogTo::Stderr,
    };
    // Held to the end: dropping it writes the lines still waiting.
    let _log = telemetry::init_to(&cli.settings.log_level, cli.settings.log_format, log_to);
    // The writer, the drain and the background tasks run on this runtime
    // (HTTP has threads of its own, HTTP_WORKERS). One worker thread: each
    // statement's answer then wakes the thread the writer waits on, not a
    // second one that has to be woken and steal it; measured side by side,
    // more messages a second in 16 of 20 pairs and 3-14% less CPU a
    // message at a steady 1,000 msg/s (BENCHMARKS.md, "One runtime
    // thread"). Tokio's own TOKIO_WORKER_THREADS still sets another number.
    let workers = match runtime_workers() {
        Ok(n) => n,
        Err(why) => {
            eprintln!("error: {why}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// `TOKIO_WORKER_THREADS`, read here rather than by tokio, which panics
/// on a value it cannot use (an empty line in `.env` included) instead of
/// saying which setting is wrong.
fn runtime_workers() -> Result<usize, String> {
    const MAX: usize = 1024;
    match std::env::var("TOKIO_WORKER_THREADS") {
        Err(std::env::VarError::NotPresent) => Ok(1),
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=MAX).contains(&n) => Ok(n),
            _ => Err(format!(
                "TOKIO_WORKER_THREADS must be a whole number from 1 to {MAX}, not `{text}`"
            )),
        },
        Err(std::env::VarError::NotUnicode(_)) => {
            Err("TOKIO_WORKER_THREADS is not valid UTF-8".to_owned())
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = cli.settings;
    match cli.command {
        Command::Serve => {
            let app = Application::build(settings, Hooks::default()).await?;
            app.run_until_stopped().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let store = Store::open(&settings, Access::Create).await?;
            let migrated = store.migrate().await?;
            say!("{}", migrated.told(store.location()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Suppressions { command } => {
            let store = Store::open(&settings, command.access()).await?;
            crate::cli_suppressions::run(&store, command).await
        }
        Command::Status => {
            let store = Store::open(&settings, Access::Read).await?;
            let own = crate::app::apply_policy(&settings)?;
            let recorded = store.recorded_apply_settings().await?;
            let (policy, whose) = service_rules(&own, recorded, Compared::Guard);
            let report = crate::routes::api::sending_report(&store, &policy.guard).await?;
            crate::cli_guard::print_status(&report);
            if let Some(whose) = whose {
                say!("settings:       {whose}");
            }
            crate::cli_ses::print_status(&report["ses"]);
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause { by, reason } | Command::Resume { by, reason }
            if by.trim().is_empty() || reason.trim().is_empty() =>
        {
            anyhow::bail!("--by and --reason must not be empty")
        }
        Command::Pause { by, reason } => {
            crate::cli_guard::set_sending(&settings, true, &by, &reason).await
        }
        Command::Resume { by, reason } => {
            crate::cli_guard::set_sending(&settings, false, &by, &reason).await
        }
        Command::Alerts {
            command: AlertsCommand::Test,
        } => crate::cli_guard::alerts_test(&settings).await,
        Command::Prune => {
            if settings.retention_days == 0 {
                say!("RETENTION_DAYS is 0: nothing is pruned");
                return Ok(ExitCode::SUCCESS);
            }
            let store = Store::open(&settings, Access::Write).await?;
            let now = crate::time::Timestamp::from_datetime(time::OffsetDateTime::now_utc());
            // Never less than the service keeps: this shell may lack its
            // GUARD_MAX_AGE_DAYS, SOFT_BOUNCE_WINDOW_DAYS or SNS_MAX_AGE_SECS.
            let mut retention = crate::app::Retention::from_settings(&settings);
            let recorded = store.recorded_apply_settings().await?;
            match recorded
                .as_ref()
                .map(|(json, at)| (RecordedPolicy::from_json(json), at))
            {
                Some((Some(service), at)) => {
                    retention = retention.at_least(&service);
                    say!(
                        "kept at least as long as the service keeps, as `bouncer serve` recorded it at {at}"
                    );
                }
                Some((None, at)) => say!(
                    "the service's settings recorded at {at} could not be read: this shell's are used"
                ),
                None => say!(
                    "no `bouncer serve` has recorded its settings in this database: this shell's are used"
                ),
            }
            say!("{}", retention.describe());
            let pruned = retention.prune(&store, now).await?;
            say!(
                "pruned: {} sns_messages, {} feedback_events, {} rate_volume, {} rate_buckets, {} alerts, {} ses_pushes, {} soft_bounces",
                pruned.sns_messages,
                pruned.feedback_events,
                pruned.rate_volume,
                pruned.rate_buckets,
                pruned.alerts,
                pruned.ses_pushes,
                pruned.soft_bounces
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Subscriptions => {
            let store = Store::open(&settings, Access::Read).await?;
            let rows = store.subscriptions().await?;
            if rows.is_empty() {
                say!("no subscription has been seen yet");
            }
            for s in rows {
                say!(
                    "{}\t{}\t{}\t{}\tupdated {}",
                    s.topic_arn,
                    s.state,
                    s.subscription_arn.as_deref().unwrap_or("-"),
                    s.confirm_mode.as_deref().unwrap_or("-"),
                    s.updated_at
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ses { command } => crate::cli_ses::run(&settings, command).await,
        Command::Replay {
            files,
            url,
            ignore_age,
        } => crate::cli_replay::run(&settings, &files, url.as_deref(), ignore_age).await,
    }
}
