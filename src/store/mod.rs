//! The database: SQLite (embedded default) or PostgreSQL, chosen by
//! `DATABASE_URL`. Persistence only: small named SQL functions over plain
//! data, with no idea of SNS, the writer or the guard's decisions above it.
//!
//! SQL that both databases understand is written once and run on either
//! backend through [`on_db!`]/[`on_tx!`]; where the dialects differ, the
//! code says so. See docs/decisions.md for why this and not `sqlx::Any`.

pub mod alerts;
mod conn;
pub mod error;
pub mod events;
pub mod guard;
pub mod history;
mod keyed;
pub mod messages;
mod open;
pub mod retention;
pub mod ses;
pub mod ses_push;
pub mod soft_bounces;
pub mod subscriptions;
pub mod suppression_writes;
pub mod suppressions;
pub(crate) mod text;

use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{PgPool, SqlitePool};

pub use self::conn::{Conn, Tx};
pub(crate) use self::error::sqlite_code;
pub use self::error::{DbError, DbErrorKind};
pub use self::open::Access;
pub(crate) use self::open::{FULL_BELOW, WAL_KEPT_BYTES};
use crate::config::Settings;

/// A store call's result: a failure carries its classification.
pub type DbResult<T> = Result<T, DbError>;

/// Runs `$body` with `$pool` bound to the backend's pool (same SQL on both).
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` with `$conn` bound to the transaction's connection.
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx.raw() {
            $crate::store::conn::Raw::Sqlite($conn) => $body,
            $crate::store::conn::Raw::Postgres($conn) => $body,
        }
    };
}
pub(crate) use {on_db, on_tx};

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// How the writer opens its own connection (see [`Store::connect_writer`]).
#[derive(Clone, Debug)]
enum WriterOptions {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: Db,
    writer: WriterOptions,
    /// SQLite: the write-ahead log that the writer's commits leave to be
    /// made durable (its connection runs at `synchronous=NORMAL`); `None`
    /// where a commit is durable when it returns.
    writer_wal: Option<std::path::PathBuf>,
    connect_timeout: Duration,
    /// PostgreSQL: how `migrate` opens its own connection, without the
    /// pool's `lock_timeout`; `None`: it migrates on a pooled one.
    migrate_options: Option<PgConnectOptions>,
    /// Where the database is, for messages (no password).
    location: String,
}

/// What [`Store::migrate`] did: how many migrations it applied now, and
/// the schema version the database is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub applied: usize,
    pub version: i64,
}

impl Migrated {
    /// The one line `bouncer migrate` prints and `serve` logs at start-up,
    /// for the database at `location`.
    pub fn told(&self, location: &str) -> String {
        match self.applied {
            0 => format!(
                "the {location} is up to date (schema version {}); nothing to apply",
                self.version
            ),
            n => format!(
                "applied {n} migration{} to the {location}; its schema is now version {}",
                if n == 1 { "" } else { "s" },
                self.version
            ),
        }
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Opens the pool for `serve` and `migrate`: a SQLite file is created on
    /// first start (the caller migrates). Other commands use [`Store::open`].
    pub async fn connect(settings: &Settings) -> anyhow::Result<Store> {
        Store::open(settings, Access::Create).await
    }

    /// Applies the migrations. On PostgreSQL one direct connection first,
    /// so that an unreachable server or a missing database is told in one
    /// line with its cause, not as a pool time-out.
    pub async fn migrate(&self) -> anyhow::Result<Migrated> {
        self.migrate_waiting(None).await
    }

    /// [`Store::migrate`], giving up on a lock held elsewhere after
    /// [`MIGRATION_LOCK_WAIT`] on PostgreSQL (SQLite: the same as
    /// `migrate`). `serve` migrates so at start-up, and its writer again
    /// until it succeeds: a migration queued behind a long transaction held
    /// every statement on its tables, on every replica, for as long as it
    /// waited, and the starting process answered no request meanwhile.
    /// Given up, the process starts and spools (as with a database that is
    /// down), and the queue behind it clears; short, so that each retry
    /// holds the others up briefly, for less than their own lock wait.
    pub async fn migrate_briefly(&self) -> anyhow::Result<Migrated> {
        self.migrate_waiting(Some(MIGRATION_LOCK_WAIT)).await
    }

    async fn migrate_waiting(&self, lock_wait: Option<Duration>) -> anyhow::Result<Migrated> {
        use sqlx::migrate::MigrateError;
        if !self.is_sqlite() {
            self.probe().await?;
        }
        let migrator = if self.is_sqlite() {
            &SQLITE_MIGRATIONS
        } else {
            &POSTGRES_MIGRATIONS
        };
        let _migrating = self.lock_sqlite_folder().await;
        let table = &*migrator.table_name;
        // What was applied before is read under the migrator's own lock
        // (a PostgreSQL advisory lock, which the same session may take
        // again inside `run`), so a replica migrating at the same moment
        // cannot make this one claim its migrations. The session ends with
        // this call, whatever happens in it: a failed run (or a dropped
        // future) returns with the lock still held, and a pooled connection
        // would keep it and hold every other replica's migrate.
        let migrating = async {
            match &self.migrate_options {
                Some(options) => {
                    self.migrate_alone(options, lock_wait, migrator, table)
                        .await
                }
                None => on_db!(&self.db, pool => async {
                    let mut conn = pool.acquire().await?;
                    conn.close_on_drop();
                    migrate_on(&mut *conn, migrator, table).await
                }
                .await),
            }
        };
        let before: Result<usize, MigrateError> = waiting_aloud(migrating, self.location()).await;
        let known = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration());
        let version = known.clone().map(|m| m.version).max().unwrap_or(0);
        // SQLite reports an error from the checkpoint that its commit
        // runs (a disk that fills while the log is copied into the file)
        // as the commit's, though the commit took: a migration that
        // rebuilt a large table was then told as failed while the schema
        // was new (found by an outside trial). Say which it is.
        let committed = match &before {
            Err(MigrateError::Execute(_) | MigrateError::ExecuteMigration(..))
                if self.is_sqlite() =>
            {
                let applied: Result<Vec<i64>, _> = on_db!(&self.db, pool => sqlx::query_scalar(
                    sqlx::AssertSqlSafe(format!("SELECT version FROM {table} WHERE success"))
                ).fetch_all(pool).await);
                applied.is_ok_and(|applied| known.clone().all(|m| applied.contains(&m.version)))
            }
            _ => false,
        };
        let before = before.map_err(|e| {
            let why = match &e {
                MigrateError::Execute(e) => error::describe(e),
                MigrateError::ExecuteMigration(e, version) => {
                    format!("migration {version} failed: {}", error::describe(e))
                }
                // In bouncer's words (a newer schema as `check_schema` says it).
                MigrateError::VersionMissing(version) => format!(
                    "it was migrated by a newer bouncer (migration {version} is unknown to this one): use that bouncer"
                ),
                MigrateError::Dirty(version) => format!(
                    "its migration {version} failed halfway; fix the cause, delete that row of _sqlx_migrations, and run `bouncer migrate` again"
                ),
                MigrateError::VersionMismatch(version) => format!(
                    "its migration {version} is not this bouncer's (another build applied it): use the bouncer that migrated it"
                ),
                other => other.to_string(),
            };
            if committed {
                anyhow::anyhow!(
                    "the {} is migrated (its schema is version {version}), but SQLite could not finish writing it from its log into the file: {why}",
                    self.location
                )
            } else {
                anyhow::anyhow!("cannot migrate the {}: {why}", self.location)
            }
        })?;
        Ok(Migrated {
            applied: known.count().saturating_sub(before),
            version,
        })
    }

    /// PostgreSQL: the migrations on a connection of their own, outside
    /// the pool, whose sessions give up on a lock after
    /// DATABASE_ACQUIRE_TIMEOUT_MS (`open_postgres`). Without `lock_wait`
    /// a migration waits for another replica's migration and for the
    /// readers its DDL must outlast, as long as the database's own
    /// `lock_timeout` lets it (none by default; an operator's `ALTER ROLE
    /// ... SET lock_timeout` holds here). Dropped, the connection closes
    /// its socket, and its session's advisory lock goes with it.
    async fn migrate_alone(
        &self,
        options: &PgConnectOptions,
        lock_wait: Option<Duration>,
        migrator: &sqlx::migrate::Migrator,
        table: &str,
    ) -> Result<usize, sqlx::migrate::MigrateError> {
        use sqlx::Connection;
        let options = match lock_wait {
            Some(wait) => options
                .clone()
                .options([("lock_timeout", wait.as_millis().max(1).to_string())]),
            None => options.clone(),
        };
        let mut conn = tokio::time::timeout(self.connect_timeout, options.connect())
            .await
            .map_err(|_| {
                sqlx::Error::Protocol(format!(
                    "no connection within {} ms",
                    self.connect_timeout.as_millis()
                ))
            })??;
        let before = migrate_on(&mut conn, migrator, table).await;
        let _ = conn.close().await;
        before
    }

    /// On SQLite, an exclusive lock on the database's folder for as long as
    /// the returned file is held. sqlx's migrator takes no lock on SQLite,
    /// so two processes migrating one new file at once (`bouncer migrate`
    /// beside a `serve` starting) both ran the first migrations and one
    /// failed ("table subscriptions already exists").
    async fn lock_sqlite_folder(&self) -> Option<std::fs::File> {
        let folder = self
            .writer_wal
            .as_deref()
            .and_then(std::path::Path::parent)?;
        open::lock_folder(folder, "migrating").await
    }

    /// Where the database is, for messages to the operator.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// One round trip: is the database answering?
    pub async fn ping(&self) -> DbResult<()> {
        on_db!(&self.db, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// A connection from the pool, closed instead of reused if a
    /// transaction on it does not commit.
    pub async fn conn(&self) -> DbResult<Conn> {
        Ok(match &self.db {
            Db::Sqlite(pool) => Conn::from(pool.acquire().await.map_err(DbError::connecting)?),
            Db::Postgres(pool) => Conn::from(pool.acquire().await.map_err(DbError::connecting)?),
        })
    }

    /// A connection of the writer's own, outside the pool: a refused
    /// connection fails at once (the pool would retry until its acquire
    /// time-out), and on PostgreSQL every statement has a time limit.
    pub async fn connect_writer(&self) -> DbResult<Conn> {
        let connect = async {
            Ok::<Conn, sqlx::Error>(match &self.writer {
                WriterOptions::Sqlite(o) => Conn::from(o.connect().await?),
                WriterOptions::Postgres(o) => Conn::from(o.connect().await?),
            })
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(result) => result.map_err(DbError::connecting),
            Err(_) => Err(DbError::unavailable(format!(
                "no connection to the {} within {} ms",
                self.location,
                self.connect_timeout.as_millis()
            ))),
        }
    }

    /// SQLite: the pool's connection settings, for the connection the
    /// checkpoints beside the writer run on (`ingest::checkpoint`). They
    /// sync at `synchronous=FULL`; any level but OFF would do, since OFF
    /// alone skips the checkpoint's syncs of the log and the database file.
    pub fn sqlite_options(&self) -> Option<SqliteConnectOptions> {
        match &self.db {
            Db::Sqlite(pool) => Some(pool.connect_options().as_ref().clone()),
            Db::Postgres(_) => None,
        }
    }

    /// The file to fdatasync after a commit on [`Store::connect_writer`]'s
    /// connection and before answering for it; `None`: the commit was
    /// durable when it returned (PostgreSQL, `synchronous_commit` on).
    pub fn writer_wal(&self) -> Option<&std::path::Path> {
        self.writer_wal.as_deref()
    }

    /// The bytes this process may still write on the disk under an SQLite
    /// database, where its log grows; `None` on PostgreSQL (its disk is
    /// its server's) or where it cannot be told.
    pub fn free_bytes(&self) -> Option<u64> {
        open::free_bytes(self.writer_wal.as_deref()?.parent()?)
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self.db, Db::Sqlite(_))
    }

    pub async fn close(&self) {
        on_db!(&self.db, pool => pool.close().await)
    }
}

/// sqlx's migrator on `conn`, under its lock: how many migrations were
/// applied before. `run` itself is not used: it takes an `Acquire`, whose
/// lifetime keeps the future from being `Send` for the writer's task.
async fn migrate_on<C>(
    conn: &mut C,
    migrator: &sqlx::migrate::Migrator,
    table: &str,
) -> Result<usize, sqlx::migrate::MigrateError>
where
    C: sqlx::migrate::Migrate + Send,
{
    conn.lock().await?;
    conn.ensure_migrations_table(table).await?;
    let before = conn.list_applied_migrations(table).await?.len();
    migrator.run_direct(None, conn, false).await?;
    conn.unlock().await?;
    Ok(before)
}

/// How long `serve`'s migrations wait for a lock (see
/// [`Store::migrate_briefly`]): our own transactions hold theirs for
/// milliseconds; a replica migrating at the same moment is waited for by
/// the retries.
pub const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(1);

/// How often a migration that waits says so.
const STILL_MIGRATING: Duration = Duration::from_secs(10);

/// Runs `migrating`, and logs while it waits: a migration may wait for a
/// lock as long as it is held, and a `serve` waiting in silence looked
/// hung to an outside trial (its listeners open, nothing answered).
async fn waiting_aloud<T>(migrating: impl Future<Output = T>, location: &str) -> T {
    tokio::pin!(migrating);
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            done = &mut migrating => return done,
            () = tokio::time::sleep(STILL_MIGRATING) => tracing::warn!(
                waited_s = started.elapsed().as_secs(),
                "still migrating the {location}: a migration runs, or waits for a lock held elsewhere (another replica migrating, a long transaction, an operator's LOCK TABLE)"
            ),
        }
    }
}
