//! `bouncer suppressions ...`: the same operations as the `/v1` API, run
//! against the configured database.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::address::EmailAddress;
use crate::cli::SuppressionsCommand;
use crate::cli::say;
use crate::routes::api::{parse_reason, parse_since};
use crate::store::Store;
use crate::store::suppressions::{ListFilter, Suppression};
use crate::time::Timestamp;

fn now() -> Timestamp {
    Timestamp::from_datetime(time::OffsetDateTime::now_utc())
}

/// The operator's name for `source` and `changed_by` (the login, else
/// `cli`): an empty `USER` (as some service managers set it) names nobody.
pub(crate) fn operator() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .map(|login| login.trim().to_owned())
        .find(|login| !login.is_empty())
        .unwrap_or_else(|| "cli".into())
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
        } => list(store, reason, since, limit).await,
        SuppressionsCommand::Check { addresses } => check(store, &addresses).await,
        SuppressionsCommand::Add {
            address: text,
            note,
        } => {
            let email = address(&text)?;
            let source = format!("cli:{}", operator());
            let (row, created) = store
                .add_manual(&email, note.as_deref(), &source, now())
                .await?;
            say!(
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
            let removed = match store.remove(&email, &by, reason.trim(), now()).await {
                Err(e) if e.is_lock_timeout() => bail!(
                    "another transaction is writing the suppression list (a CSV import, say); nothing was changed: try again in a moment"
                ),
                other => other?,
            };
            match removed {
                Some(row) => {
                    say!("removed\t{}", line(&row));
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("{email} is not on the suppression list");
                    Ok(ExitCode::from(1))
                }
            }
        }
        SuppressionsCommand::Export { output } => {
            // `-` is standard output, as for most tools.
            match output.filter(|path| path.as_os_str() != "-") {
                None => {
                    let out = Box::new(std::io::stdout().lock());
                    written_to(
                        crate::cli_csv::export(store, out).await,
                        "the export to standard output",
                    )?;
                }
                Some(path) => {
                    let count = export_to_file(store, &path).await?;
                    eprintln!("exported {}", rows(count));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SuppressionsCommand::Import { file } => {
            let read = crate::cli_csv::read_import(&file)?;
            let new = store
                .import(&read, now())
                .await
                .map_err(|e| anyhow::anyhow!("{e}; nothing imported"))?;
            say!(
                "imported {}: {new} new, {} merged into rows already listed",
                rows(read.len()),
                read.len() - new
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn list(
    store: &Store,
    reason: Option<String>,
    since: Option<String>,
    limit: i64,
) -> anyhow::Result<ExitCode> {
    let mut filter = ListFilter {
        reason: reason
            .as_deref()
            .map(parse_reason)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--reason: {e}"))?,
        since: since
            .as_deref()
            .map(parse_since)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--since: {e}"))?,
        after: None,
        limit: 0,
        ..ListFilter::default()
    };
    let mut left = if limit <= 0 { i64::MAX } else { limit };
    loop {
        // One more than is left tells whether rows remain past the limit.
        filter.limit = left.min(1000).saturating_add(1);
        let mut page = store.list(&filter).await?;
        let more = page.len() as i64 >= filter.limit;
        page.truncate((filter.limit - 1) as usize);
        for row in &page {
            say!("{}", line(row));
        }
        left -= page.len() as i64;
        match page.last() {
            Some(last) if more && left > 0 => filter.after = Some(last.email.clone()),
            _ if more => {
                eprintln!("stopped at --limit {limit}: more rows match (--limit 0 lists them all)");
                break;
            }
            _ => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit 0: none suppressed; 1: some suppressed; 2: an address was invalid
/// (reported on stderr; the others are still checked).
async fn check(store: &Store, inputs: &[String]) -> anyhow::Result<ExitCode> {
    let mut valid = Vec::new();
    let mut invalid = false;
    for text in inputs {
        match EmailAddress::parse(text) {
            Ok(email) => valid.push(email),
            Err(e) => {
                invalid = true;
                eprintln!("error: {e}");
            }
        }
    }
    let rows = store.check(&valid).await?;
    let by_email: HashMap<&str, &Suppression> =
        rows.iter().map(|r| (r.email.as_str(), r)).collect();
    let mut any = false;
    for email in &valid {
        match by_email.get(email.as_str()) {
            Some(row) => {
                any = true;
                say!("{email}\tsuppressed\t{}", line(row));
            }
            None => say!("{email}\tnot suppressed"),
        }
    }
    Ok(ExitCode::from(match (invalid, any) {
        (true, _) => 2,
        (false, true) => 1,
        (false, false) => 0,
    }))
}

/// Writes the export beside `path` and puts it in place once whole and on
/// disk: an export that fails halfway (the database gone, a lock held
/// elsewhere, a full disk) leaves an earlier export at `path` as it was,
/// where writing `path` directly had left it cut to its header. An outside
/// trial then found the fixed name `FILE.partial` followed as a symlink,
/// and two exports at once taking each other's file: the file beside is
/// now created new under a name of its own (never through a link), and
/// readable by its owner only, the list being personal addresses; an
/// earlier export keeps its permission bits, and a `path` that is a
/// symlink to a file has its target replaced, not the link. Anything that
/// is not a file, nor a new name (a pipe, `/dev/stdout`, a dangling
/// link), is written directly, as before: there is nothing to replace.
async fn export_to_file(store: &Store, path: &std::path::Path) -> anyhow::Result<usize> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let cannot = || format!("cannot write {}", path.display());
    let target = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some((path.to_owned(), None)),
        Err(e) => return Err(e).with_context(cannot),
        Ok(_) => match std::fs::canonicalize(path).and_then(|t| Ok((std::fs::metadata(&t)?, t))) {
            Ok((meta, resolved)) if meta.is_file() => Some((resolved, Some(meta))),
            _ => None,
        },
    };
    let Some((target, earlier)) = target else {
        let file = std::fs::File::create(path).with_context(cannot)?;
        return with_file_named(crate::cli_csv::export(store, Box::new(file)).await, path);
    };
    let folder = match target.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let name = target.file_name().with_context(cannot)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let mut partial_name = std::ffi::OsString::from(".");
    partial_name.push(name);
    partial_name.push(format!(".{}-{nanos}.partial", std::process::id()));
    let partial = folder.join(partial_name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(cannot)?;
    let written = async {
        let sink = file.try_clone().with_context(cannot)?;
        let count = with_file_named(crate::cli_csv::export(store, Box::new(sink)).await, path)?;
        let mode = earlier.map(|m| std::fs::Permissions::from_mode(m.permissions().mode() & 0o777));
        mode.map_or(Ok(()), |mode| file.set_permissions(mode))
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&partial, &target))
            // The rename itself on disk.
            .and_then(|()| std::fs::File::open(&folder)?.sync_all())
            .with_context(cannot)?;
        Ok::<_, anyhow::Error>(count)
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// A write error (a full disk, say) named with the file it was for; the
/// database's errors say what they are.
fn with_file_named<T>(result: anyhow::Result<T>, path: &std::path::Path) -> anyhow::Result<T> {
    written_to(result, path.display())
}

/// Names where a write failed (a full disk, a closed pipe): the system's
/// reason alone does not say which of the command's files it was.
fn written_to<T>(result: anyhow::Result<T>, sink: impl std::fmt::Display) -> anyhow::Result<T> {
    result.map_err(|e| {
        if e.is::<csv::Error>() || e.is::<std::io::Error>() {
            e.context(format!("cannot write {sink}"))
        } else {
            e
        }
    })
}

/// `1 row`, `2 rows`: a count as a person would write it.
fn rows(n: usize) -> String {
    if n == 1 {
        "1 row".to_owned()
    } else {
        format!("{n} rows")
    }
}
