//! `bouncer suppressions ...`: the same operations as the `/v1` API, run
//! against the configured database.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::address::EmailAddress;
use crate::cli::SuppressionsCommand;
use crate::routes::api::{parse_reason, parse_since};
use crate::store::Store;
use crate::store::suppressions::{ImportRow, ListFilter, Suppression, columns};
use crate::time::Timestamp;

fn now() -> Timestamp {
    Timestamp::from_datetime(time::OffsetDateTime::now_utc())
}

/// The operator's name for `source` (the login, else `cli`).
fn operator() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "cli".into())
}

fn address(text: &str) -> anyhow::Result<EmailAddress> {
    Ok(EmailAddress::parse(text)?)
}

fn line(row: &Suppression) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
        row.email,
        row.reason,
        opt(&row.bounce_type),
        opt(&row.bounce_subtype),
        row.last_seen_at,
        row.event_count,
        row.source
    )
}

pub async fn run(store: &Store, command: SuppressionsCommand) -> anyhow::Result<ExitCode> {
    match command {
        SuppressionsCommand::List {
            reason,
            since,
            limit,
        } => {
            let mut filter = ListFilter {
                reason: reason
                    .as_deref()
                    .map(parse_reason)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                since: since
                    .as_deref()
                    .map(parse_since)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                after: None,
                limit: 0,
            };
            let mut left = if limit <= 0 { i64::MAX } else { limit };
            while left > 0 {
                filter.limit = left.min(1000);
                let page = store.list(&filter).await?;
                for row in &page {
                    println!("{}", line(row));
                }
                left -= page.len() as i64;
                match page.last() {
                    Some(last) if page.len() as i64 == filter.limit => {
                        filter.after = Some(last.email.clone())
                    }
                    _ => break,
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SuppressionsCommand::Check { addresses } => {
            let mut any = false;
            for text in addresses {
                let email = address(&text)?;
                match store.suppression(&email).await? {
                    Some(row) => {
                        any = true;
                        println!("{email}\tsuppressed\t{}", line(&row));
                    }
                    None => println!("{email}\tnot suppressed"),
                }
            }
            Ok(if any {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        SuppressionsCommand::Add {
            address: text,
            note,
        } => {
            let email = address(&text)?;
            let source = format!("cli:{}", operator());
            let (row, created) = store
                .add_manual(&email, note.as_deref(), &source, now())
                .await?;
            println!(
                "{}\t{}",
                if created {
                    "added"
                } else {
                    "already suppressed"
                },
                line(&row)
            );
            Ok(ExitCode::SUCCESS)
        }
        SuppressionsCommand::Remove {
            address: text,
            by,
            reason,
        } => {
            let email = address(&text)?;
            if by.trim().is_empty() || reason.trim().is_empty() {
                bail!("--by and --reason must not be empty");
            }
            let by = format!("{} (cli:{})", by.trim(), operator());
            match store.remove(&email, &by, reason.trim(), now()).await? {
                Some(row) => {
                    println!("removed\t{}", line(&row));
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("{email} is not on the suppression list");
                    Ok(ExitCode::from(1))
                }
            }
        }
        SuppressionsCommand::Export { output } => {
            let sink: Box<dyn Write> = match &output {
                Some(path) => Box::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot write {}", path.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut csv = csv::Writer::from_writer(sink);
            csv.write_record(columns())?;
            let mut filter = ListFilter {
                limit: 1000,
                ..ListFilter::default()
            };
            let mut count = 0usize;
            loop {
                let page = store.list(&filter).await?;
                for r in &page {
                    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
                    csv.write_record([
                        r.email.clone(),
                        r.reason.clone(),
                        opt(&r.bounce_type),
                        opt(&r.bounce_subtype),
                        opt(&r.complaint_feedback_type),
                        opt(&r.diagnostic_code),
                        r.first_seen_at.to_text(),
                        r.last_seen_at.to_text(),
                        r.event_count.to_string(),
                        opt(&r.last_ses_message_id),
                        opt(&r.last_sns_message_id),
                        r.source.clone(),
                        opt(&r.note),
                    ])?;
                }
                count += page.len();
                match page.last() {
                    Some(last) if page.len() == 1000 => filter.after = Some(last.email.clone()),
                    _ => break,
                }
            }
            csv.flush()?;
            if output.is_some() {
                eprintln!("exported {count} rows");
            }
            Ok(ExitCode::SUCCESS)
        }
        SuppressionsCommand::Import { file } => {
            let mut reader = csv::Reader::from_path(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let headers = reader.headers()?.clone();
            let col = |name: &str| {
                headers
                    .iter()
                    .position(|h| h.trim().eq_ignore_ascii_case(name))
            };
            let email_col = col("email").context("the CSV header has no `email` column")?;
            let (reason_col, note_col) = (col("reason"), col("note"));
            let mut rows = Vec::new();
            for (i, record) in reader.records().enumerate() {
                let record = record?;
                let line_no = i + 2;
                let field = |c: Option<usize>| {
                    c.and_then(|c| record.get(c))
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                };
                let text =
                    field(Some(email_col)).with_context(|| format!("line {line_no}: no email"))?;
                let email = address(text).with_context(|| format!("line {line_no}"))?;
                let reason = match field(reason_col) {
                    Some(r) => {
                        parse_reason(r).map_err(|e| anyhow::anyhow!("line {line_no}: {e}"))?
                    }
                    None => "manual".to_owned(),
                };
                rows.push(ImportRow {
                    email,
                    reason,
                    note: field(note_col).map(str::to_owned),
                });
            }
            let source = format!("import:{}", file.display());
            let n = store.import(&rows, &source, now()).await?;
            println!("imported {n} rows");
            Ok(ExitCode::SUCCESS)
        }
    }
}
