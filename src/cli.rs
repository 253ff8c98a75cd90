//! The command line: `serve`, `migrate`, `replay`, with every setting as a
//! global flag backed by its environment variable.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::{Application, Hooks, Pipeline};
use crate::config::Settings;
use crate::guard::GuardPolicy;
use crate::ingest::writer::Written;
use crate::sns::envelope::Envelope;
use crate::store::Store;
use crate::telemetry;

#[derive(Parser)]
#[command(
    name = "bouncer",
    version,
    about = "Keeps an Amazon SES sender's reputation safe: verifies SNS feedback and stores it.",
    after_help = "Every setting can also be given as the environment variable shown, or in a .env file in the working directory."
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
    /// Send stored SNS messages (JSON files, or JSON lines) to a running
    /// endpoint, or through the pipeline directly into the database.
    Replay {
        /// Files holding one SNS envelope each, or one per line.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// POST each message to this URL (e.g. http://127.0.0.1:8080/sns)
        /// instead of applying it directly.
        #[arg(long)]
        url: Option<String>,
        /// Through the pipeline only: accept messages older than
        /// SNS_MAX_AGE_SECS (an incident replay); signatures are still checked.
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
        /// Most rows to print (0: all).
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Tell, for each address, whether it is suppressed and why. Exits 1 if
    /// any is.
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
    /// Write the whole list as CSV (header: the table's columns).
    Export {
        /// File to write (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Add addresses from a CSV file with a header naming at least `email`
    /// (optional `reason`: bounce, complaint or manual (default); `note`).
    Import { file: PathBuf },
}

pub fn main() -> ExitCode {
    match dotenvy::dotenv() {
        Ok(_) => {}
        Err(e) if e.not_found() => {}
        Err(e) => {
            eprintln!("error: cannot read .env: {e}");
            return ExitCode::from(2);
        }
    }
    let cli = Cli::parse();
    telemetry::init(&cli.settings.log_level, cli.settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
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
            let store = Store::connect(&settings).await?;
            store.migrate().await?;
            println!("migrations applied to {}", redact(&settings.database_url));
            Ok(ExitCode::SUCCESS)
        }
        Command::Suppressions { command } => {
            let store = Store::connect(&settings).await?;
            store.migrate().await?;
            crate::cli_suppressions::run(&store, command).await
        }
        Command::Status => {
            let store = Store::connect(&settings).await?;
            store.migrate().await?;
            let report =
                crate::routes::api::sending_report(&store, &GuardPolicy::from_settings(&settings)?)
                    .await?;
            print_status(&report);
            crate::cli_ses::print_status(&report["ses"]);
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause { by, reason } | Command::Resume { by, reason }
            if by.trim().is_empty() || reason.trim().is_empty() =>
        {
            anyhow::bail!("--by and --reason must not be empty")
        }
        Command::Pause { by, reason } => set_sending(&settings, true, &by, &reason).await,
        Command::Resume { by, reason } => set_sending(&settings, false, &by, &reason).await,
        Command::Alerts {
            command: AlertsCommand::Test,
        } => alerts_test(&settings).await,
        Command::Prune => {
            if settings.retention_days == 0 {
                anyhow::bail!("RETENTION_DAYS is 0: nothing is ever pruned");
            }
            let store = Store::connect(&settings).await?;
            store.migrate().await?;
            let now = crate::time::Timestamp::from_datetime(time::OffsetDateTime::now_utc());
            let pruned = crate::app::Retention::from_settings(&settings)
                .prune(&store, now)
                .await?;
            println!(
                "pruned: {} sns_messages, {} feedback_events, {} rate_volume, {} rate_buckets, {} alerts, {} ses_pushes",
                pruned.sns_messages,
                pruned.feedback_events,
                pruned.rate_volume,
                pruned.rate_buckets,
                pruned.alerts,
                pruned.ses_pushes
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Subscriptions => {
            let store = Store::connect(&settings).await?;
            store.migrate().await?;
            let rows = store.subscriptions().await?;
            if rows.is_empty() {
                println!("no subscription has been seen yet");
            }
            for s in rows {
                println!(
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
        } => replay(&settings, &files, url.as_deref(), ignore_age).await,
    }
}

fn print_status(report: &serde_json::Value) {
    let r = &report["rates"];
    let p = &report["policy"];
    let pct = |v: &serde_json::Value| format!("{:.3}%", v.as_f64().unwrap_or(0.0) * 100.0);
    println!(
        "sending:        {}",
        report["state"].as_str().unwrap_or("?")
    );
    println!(
        "since:          {} by {}: {}",
        report["changed_at"].as_str().unwrap_or("?"),
        report["changed_by"].as_str().unwrap_or("?"),
        report["reason"].as_str().unwrap_or("")
    );
    println!(
        "bounce rate:    {} ({} hard bounces; pauses above {}%)",
        pct(&r["bounce_rate"]),
        r["hard_bounces"],
        p["bounce_pause_percent"]
    );
    println!(
        "complaint rate: {} ({} complaints; pauses above {}%)",
        pct(&r["complaint_rate"]),
        r["complaints"],
        p["complaint_pause_percent"]
    );
    println!(
        "window:         {} sends (last {} sends, at most {} days; from {}; counting since {})",
        r["sends"],
        p["window_sends"],
        p["max_age_days"],
        r["window_start"].as_str().unwrap_or("-"),
        r["counting_since"].as_str().unwrap_or("-")
    );
    if r["enough_volume"] != serde_json::Value::Bool(true) {
        println!(
            "note:           fewer than {} sends in the window: the guard does not act yet",
            p["min_volume"]
        );
    }
    if r["volume_known"] != serde_json::Value::Bool(true) && r["sends"].as_i64().unwrap_or(0) > 0 {
        println!(
            "note:           no Delivery or Send events in the window: publish them to SNS, or the guard cannot know the volume"
        );
    }
}

async fn set_sending(
    settings: &Settings,
    paused: bool,
    by: &str,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    let store = Store::connect(settings).await?;
    store.migrate().await?;
    let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let by = format!("{} (cli:{user})", by.trim());
    let now = crate::time::Timestamp::from_datetime(time::OffsetDateTime::now_utc());
    let policy = GuardPolicy::from_settings(settings)?;
    let changed =
        crate::guard::set_sending(&store, &policy, paused, &by, reason.trim(), now).await?;
    let word = if paused { "paused" } else { "active" };
    if changed {
        println!("sending is now {word}");
    } else {
        println!("sending was already {word}: nothing changed");
    }
    Ok(ExitCode::SUCCESS)
}

async fn alerts_test(settings: &Settings) -> anyhow::Result<ExitCode> {
    crate::outbound::install_default_provider();
    let channels = crate::alerts::Channels::from_settings(settings, &Default::default())?;
    let names = channels.names();
    if names.is_empty() {
        eprintln!(
            "no alert channel is configured: set ALERT_WEBHOOK_URL, or SMTP_HOST, SMTP_FROM_EMAIL and ALERT_EMAILS"
        );
        return Ok(ExitCode::FAILURE);
    }
    let alert = crate::store::alerts::Alert {
        id: 0,
        kind: "test".into(),
        subject: "bouncer test alert".into(),
        text: ":test_tube: bouncer test alert: if you read this, admin alerts reach you.".into(),
        details_json: "{}".into(),
        created_at: crate::time::Timestamp::from_datetime(time::OffsetDateTime::now_utc()),
    };
    let mut failed = false;
    for name in names {
        match channels.send(name, &alert).await {
            Ok(()) => println!("{name}: sent"),
            Err(e) => {
                failed = true;
                println!("{name}: FAILED: {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Every SNS envelope in the files: a file is one JSON object, or JSON lines.
fn read_envelopes(files: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let whole = serde_json::from_str::<serde_json::Value>(&text).is_ok();
        let bodies: Vec<String> = if whole {
            vec![text]
        } else {
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect()
        };
        for (i, body) in bodies.into_iter().enumerate() {
            let value: serde_json::Value = serde_json::from_str(&body)
                .with_context(|| format!("{} (message {}) is not JSON", file.display(), i + 1))?;
            let message_type = value
                .get("Type")
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_owned();
            out.push((message_type, body));
        }
    }
    Ok(out)
}

async fn replay(
    settings: &Settings,
    files: &[PathBuf],
    url: Option<&str>,
    ignore_age: bool,
) -> anyhow::Result<ExitCode> {
    let envelopes = read_envelopes(files)?;
    let mut failures = 0usize;
    match url {
        Some(url) => {
            let client = reqwest::Client::builder()
                .tls_backend_preconfigured(crate::outbound::tls_client_config(&Default::default())?)
                .build()?;
            for (message_type, body) in envelopes {
                let response = client
                    .post(url)
                    .header("content-type", "text/plain; charset=UTF-8")
                    .header("x-amz-sns-message-type", &message_type)
                    .body(body)
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {url}"))?;
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                println!("{} {}", status.as_u16(), text.trim());
                failures += usize::from(!status.is_success());
            }
        }
        None => {
            let pipeline = Pipeline::build(settings, &Hooks::default()).await?;
            for (message_type, body) in envelopes {
                let outcome = async {
                    let envelope = Envelope::parse(body.as_bytes(), Some(&message_type))?;
                    let verified = pipeline
                        .state
                        .verifier
                        .verify_with(envelope, body.as_bytes(), !ignore_age)
                        .await?;
                    pipeline
                        .state
                        .writer
                        .write(crate::ingest::Accepted::new(verified, false))
                        .await
                        .map_err(|e| crate::error::SnsError::StoreUnavailable(e.to_string()))
                }
                .await;
                match outcome {
                    Ok(Written::Applied(applied)) => println!("{}", applied.outcome.as_str()),
                    Ok(Written::Spooled) => println!("spooled"),
                    Err(e) => {
                        failures += 1;
                        println!("refused {}: {e}", e.code());
                    }
                }
            }
            let Pipeline { state, writer_task } = pipeline;
            drop(state);
            let _ = writer_task.await;
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
