//! Opening the database the way each command may. `serve` and `migrate`
//! create and migrate it; every other command opens the database that
//! exists (read-only where it only reads) and refuses, in one line naming
//! `DATABASE_URL`, one that is missing or not migrated: a look-up must never
//! answer "not suppressed" from an empty file it has just made.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

use super::error::describe;
use super::{Db, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, Store, WriterOptions, on_db};
use crate::config::Settings;

/// What a command may do to the database it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `serve` and `migrate`: a SQLite file is created if missing, and the
    /// caller migrates.
    Create,
    /// Commands that change rows: the database must exist and be migrated.
    Write,
    /// Commands that only read: the database must exist and be migrated,
    /// and is opened read-only (a SQLite file opened read-only, PostgreSQL
    /// sessions in read-only transactions), so a read-only role will do.
    Read,
}

/// What to do about a database that is missing or behind.
const SET_UP: &str = "run `bouncer migrate` (or start `bouncer serve` once) with this DATABASE_URL, or point DATABASE_URL at the service's database";

impl Store {
    /// Opens the database at `DATABASE_URL` for `access` (see [`Access`]).
    pub async fn open(settings: &Settings, access: Access) -> anyhow::Result<Store> {
        let url = settings.database_url.as_str();
        let store = if url.starts_with("sqlite:") {
            open_sqlite(settings, access).await?
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            open_postgres(settings, access).await?
        } else {
            bail!(
                "DATABASE_URL must start with sqlite: (a file) or postgres:// (a server); it starts with `{}`",
                url.split(':').next().unwrap_or_default()
            );
        };
        if access != Access::Create {
            store.check_schema().await?;
        }
        Ok(store)
    }

    /// One direct connection, closed at once: `Ok` if the database answers,
    /// else one line with where it is and why not.
    pub async fn probe(&self) -> anyhow::Result<()> {
        let connect = async {
            match &self.writer {
                WriterOptions::Sqlite(o) => o.connect().await?.close().await,
                WriterOptions::Postgres(o) => o.connect().await?.close().await,
            }
        };
        let why = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => describe(&e),
            Err(_) => format!(
                "no answer within {} ms (DATABASE_ACQUIRE_TIMEOUT_MS)",
                self.connect_timeout.as_millis()
            ),
        };
        Err(anyhow!(
            "cannot connect to the {} (DATABASE_URL): {why}",
            self.location
        ))
    }

    /// Checks, without writing, that every migration this bouncer knows is
    /// applied and none it does not know.
    pub async fn check_schema(&self) -> anyhow::Result<()> {
        const SQL: &str = "SELECT version, success FROM _sqlx_migrations ORDER BY version";
        let rows: Result<Vec<(i64, bool)>, sqlx::Error> =
            on_db!(&self.db, pool => sqlx::query_as(SQL).fetch_all(pool).await);
        let applied = match rows {
            Ok(rows) => rows,
            Err(e) if is_missing_table(&e) => bail!(
                "the {} has no bouncer tables: it is not set up; {SET_UP}",
                self.location
            ),
            Err(e) => bail!(
                "cannot read the schema version of the {} (table _sqlx_migrations, DATABASE_URL): {}",
                self.location,
                describe(&e)
            ),
        };
        let migrator = match &self.db {
            Db::Sqlite(_) => &SQLITE_MIGRATIONS,
            Db::Postgres(_) => &POSTGRES_MIGRATIONS,
        };
        let known: Vec<i64> = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
            .collect();
        if let Some((version, _)) = applied.iter().find(|(_, success)| !success) {
            bail!(
                "migration {version} of the {} failed halfway; fix the cause, delete that row of _sqlx_migrations, and run `bouncer migrate` again",
                self.location
            );
        }
        if let Some((version, _)) = applied.iter().find(|(v, _)| !known.contains(v)) {
            bail!(
                "the {} was migrated by a newer bouncer (migration {version} is unknown to this one): use that bouncer",
                self.location
            );
        }
        let missing: Vec<String> = known
            .iter()
            .filter(|v| !applied.iter().any(|(a, _)| a == *v))
            .map(i64::to_string)
            .collect();
        if !missing.is_empty() {
            bail!(
                "the {} is not migrated to this bouncer's schema (missing migrations {}); {SET_UP}",
                self.location,
                missing.join(", ")
            );
        }
        Ok(())
    }
}

/// The size SQLite cuts its write-ahead log back to after a checkpoint
/// that emptied it (`journal_size_limit`). A bounce storm's log between
/// two automatic checkpoints (`WAL_CHECKPOINT_PAGES` of 4 KiB) stays well
/// under it.
pub(crate) const WAL_KEPT_BYTES: u64 = 64 << 20;

/// The log's length, in pages, past which a connection's own commit runs
/// an automatic checkpoint (`wal_autocheckpoint`; SQLite's default is
/// 1,000). A serving bouncer checkpoints beside its writer long before
/// (`ingest::checkpoint`), so this is the bound on the log when those
/// checkpoints fall behind or fail; every connection that writes has it,
/// or an API write would run the checkpoint inside its own request.
const WAL_CHECKPOINT_PAGES: u32 = 4_000;

async fn open_sqlite(settings: &Settings, access: Access) -> anyhow::Result<Store> {
    let url = settings.database_url.as_str();
    let connect_timeout = Duration::from_millis(settings.database_acquire_timeout_ms);
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| anyhow!("DATABASE_URL `{url}` is not a SQLite URL: {e}"))?
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_millis(settings.sqlite_busy_timeout_ms))
        .log_slow_statements(log::LevelFilter::Off, Duration::ZERO);
    let path = absolute(options.get_filename());
    let location = format!("SQLite database {}", path.display());
    // WAL with `synchronous=FULL` makes every commit durable before it
    // returns (the writer's connection differs, below). A read-only
    // connection leaves the journal mode as it is.
    // A reader that held a transaction open lets the log grow past what
    // checkpoints can reclaim, and SQLite keeps a log file at its largest
    // size for reuse: cut back to this once a checkpoint has emptied it.
    let options = match access {
        Access::Create | Access::Write => options
            .create_if_missing(access == Access::Create)
            .journal_mode(SqliteJournalMode::Wal)
            .pragma("journal_size_limit", WAL_KEPT_BYTES.to_string())
            .pragma("wal_autocheckpoint", WAL_CHECKPOINT_PAGES.to_string()),
        Access::Read => options.create_if_missing(false).read_only(true),
    };
    if access != Access::Create && !path.exists() {
        bail!(
            "there is no database at {} (DATABASE_URL={url}, from the working directory {}); {SET_UP}",
            path.display(),
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| "?".into())
        );
    }
    // The pool's first connection turns a new file to WAL. Two processes
    // doing that at once both hold a shared lock and want an exclusive
    // one, and SQLite answers one of them "database is locked" at once,
    // without waiting out the busy timeout: so a process that may switch
    // the file opens it under the folder's lock, the one `migrate` takes
    // (a command that writes also waits out a migration running now).
    let folder = folder_of(&path);
    let opening = match &folder {
        Some(folder) if access != Access::Read => lock_folder(folder, "opening").await,
        _ => None,
    };
    let pool = SqlitePoolOptions::new()
        .max_connections(settings.database_max_connections.max(2))
        .acquire_timeout(connect_timeout)
        .connect_with(options.clone())
        .await
        .map_err(|e| {
            // SQLite says "disk I/O error" when it cannot make its -wal or
            // -shm file on a full disk: name the cause an operator can fix.
            let full = folder
                .as_deref()
                .filter(|_| is_io_or_full(&e))
                .and_then(free_bytes)
                .filter(|free| *free < FULL_BELOW)
                .map(|free| {
                    format!(
                        "; the file system holding it is full ({free} bytes free): free some space"
                    )
                })
                .unwrap_or_default();
            anyhow!(
                "cannot open the {location} (DATABASE_URL): {}{full}",
                describe(&e)
            )
        })?;
    drop(opening);
    // The writer's own connection commits at `synchronous=NORMAL`: its
    // COMMIT writes the WAL without waiting for the disk, and the writer
    // makes the WAL durable itself (one fdatasync for every batch committed
    // since the last) before any of those messages is answered
    // (`ingest::durable`), so that the next batch runs during the fsync.
    // SQLite names the log after the resolved path of the database file.
    // Its statement journals stay in memory (`temp_store=MEMORY`): a
    // statement inside a transaction keeps the pages it changes there, in
    // case it must be undone alone, and past 64 KiB (a batch of a dozen
    // messages) SQLite moved them to a temporary file, opened, written and
    // deleted on the writer's serial path, so that a full temporary
    // directory (or none that SQLite could write to) stopped the writer
    // while the database's own disk had room. The writer's statements are
    // bounded in rows and text (`messages::statements`), so are their
    // journals; the pool's statements are not (a sort of a whole list),
    // and keep SQLite's default.
    let (writer, writer_wal) = match std::fs::canonicalize(&path) {
        Ok(resolved) if access != Access::Read => {
            let mut wal = resolved.into_os_string();
            wal.push("-wal");
            (
                options
                    .clone()
                    .synchronous(SqliteSynchronous::Normal)
                    .pragma("temp_store", "MEMORY"),
                Some(PathBuf::from(wal)),
            )
        }
        _ => (options, None),
    };
    Ok(Store {
        db: Db::Sqlite(pool),
        location,
        writer: WriterOptions::Sqlite(writer),
        writer_wal,
        connect_timeout,
        migrate_options: None,
    })
}

async fn open_postgres(settings: &Settings, access: Access) -> anyhow::Result<Store> {
    // Named, so that an operator tells bouncer's sessions apart in
    // pg_stat_activity (the writer's from the rest).
    let options = PgConnectOptions::from_str(&settings.database_url)
        .map_err(|e| anyhow!("DATABASE_URL is not a PostgreSQL URL: {e}"))?
        .application_name("bouncer")
        // sqlx's slow-statement warning spans lines (it quotes the SQL);
        // slow writes show in bouncer_write_batch_seconds instead.
        .log_slow_statements(log::LevelFilter::Off, Duration::ZERO);
    let location = format!(
        "PostgreSQL database `{}` on {}:{}",
        options.get_database().unwrap_or("postgres"),
        options.get_host(),
        options.get_port()
    );
    // The writer's statements may not wait on a lock or a hung server for
    // ever: past this, the database counts as down and messages go to the
    // spool.
    let limit = settings.database_write_timeout_ms.max(1).to_string();
    let writer = options.clone().application_name("bouncer-writer").options([
        ("statement_timeout", limit.as_str()),
        ("lock_timeout", limit.as_str()),
        ("idle_in_transaction_session_timeout", "60000"),
    ]);
    // Every other statement waits for a lock as long as for a connection.
    // A lock that keeps readers out (an operator's `LOCK TABLE`, a `VACUUM
    // FULL`, another replica's migration) otherwise held every look-up,
    // check and page for as long as it was held, and with them the pool's
    // connections: an outside trial saw a check wait 270 s. Migrations run
    // on a connection of their own without it (`Store::migrate`).
    let lock_wait = settings.database_acquire_timeout_ms.max(1).to_string();
    let migrate_options = options.clone();
    let pool_options = match access {
        Access::Read => options.options([
            ("default_transaction_read_only", "on"),
            ("lock_timeout", lock_wait.as_str()),
        ]),
        Access::Create | Access::Write => options.options([("lock_timeout", lock_wait.as_str())]),
    };
    let connect_timeout = Duration::from_millis(settings.database_acquire_timeout_ms);
    // Lazy: a replica starts (and spools) while PostgreSQL is down.
    let pool = PgPoolOptions::new()
        .max_connections(settings.database_max_connections.max(2))
        .acquire_timeout(connect_timeout)
        .connect_lazy_with(pool_options);
    let store = Store {
        db: Db::Postgres(pool),
        location,
        writer: WriterOptions::Postgres(writer),
        writer_wal: None,
        connect_timeout,
        migrate_options: Some(migrate_options),
    };
    if access != Access::Create {
        store.probe().await?;
    }
    Ok(store)
}

/// Less free space than this, beside a failure to open, is the cause.
pub(crate) const FULL_BELOW: u64 = 1 << 20;

/// SQLite's "disk I/O error" or "database or disk is full" (its primary
/// codes 10 and 13, under any extended code).
fn is_io_or_full(e: &sqlx::Error) -> bool {
    super::sqlite_code(e).is_some_and(|code| matches!(code & 0xff, 10 | 13))
}

/// The bytes this process may still write on the file system holding
/// `folder` (root may use the blocks kept for it).
#[cfg(unix)]
// The fields are u64 on 64-bit Linux, narrower elsewhere.
#[allow(clippy::useless_conversion)]
pub(super) fn free_bytes(folder: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(folder.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes only into the zeroed struct given, and reads
    // the NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    let blocks = if unsafe { libc::geteuid() } == 0 {
        stat.f_bfree
    } else {
        stat.f_bavail
    };
    Some(u64::from(blocks).saturating_mul(u64::from(stat.f_frsize)))
}

#[cfg(not(unix))]
pub(super) fn free_bytes(_folder: &Path) -> Option<u64> {
    None
}

/// The folder whose lock serializes opening and migrating the SQLite file
/// at `path`: the resolved file's folder, as `Store::migrate` finds it
/// through the WAL's path, or the resolved parent of a file not made yet.
fn folder_of(path: &Path) -> Option<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(file) => file.parent().map(Path::to_path_buf),
        Err(_) => std::fs::canonicalize(path.parent()?).ok(),
    }
}

/// An exclusive `flock` on `folder` for as long as the returned file is
/// held, waited for (and the wait logged) if another process holds it. The
/// folder, not the database file: closing any descriptor of the database
/// file would drop the POSIX locks SQLite's own connections hold in this
/// process.
///
/// A folder that cannot be locked (a file system without `flock`) gives
/// `None` with a warning and the caller goes on as before: that is rare,
/// and refusing to start would be worse than the race it guards.
pub(super) async fn lock_folder(folder: &Path, doing: &'static str) -> Option<std::fs::File> {
    let shown = folder.display().to_string();
    let folder = folder.to_owned();
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&folder)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::info!(folder = %folder.display(), "waiting for another process opening or migrating this database");
                file.lock()?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        Ok::<_, std::io::Error>(file)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match locked {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!(folder = %shown, error = %e, "cannot lock the database's folder: {doing} without it, so a second process {doing} it now could fail");
            None
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::env::current_dir()
        .map(|dir| dir.join(path))
        .unwrap_or_else(|_| path.to_owned())
}

fn is_missing_table(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|db| {
        db.code().as_deref() == Some("42P01") || db.message().starts_with("no such table")
    })
}
