//! The database: SQLite (embedded default) or PostgreSQL, chosen by
//! `DATABASE_URL`. SQL that both understand is written once and run on either
//! pool through [`on_db!`]/[`on_tx!`]; where the dialects differ, the code
//! says so. See docs/decisions.md for why this and not `sqlx::Any`.

pub mod alerts;
mod batch;
pub mod feedback;
pub mod guard;
mod messages;
pub mod retention;
pub mod subscriptions;
pub mod suppressions;
mod time;
pub mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use self::feedback::SoftBouncePolicy;
pub use self::messages::{Accepted, Applied, Content, StoreOutcome};
pub use self::time::Timestamp;
use crate::config::Settings;
use crate::guard::{GuardPolicy, Ppm};

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
        match $tx {
            $crate::store::Tx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::store::Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}
pub(crate) use {on_db, on_tx};

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

pub enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: Db,
    pub(crate) policy: Arc<StorePolicy>,
}

/// The settings the store applies while it writes.
#[derive(Debug)]
pub struct StorePolicy {
    pub soft_bounce: SoftBouncePolicy,
    pub guard: GuardPolicy,
    /// Where alerts go: `webhook` and/or `email`, as configured.
    pub alert_channels: Vec<&'static str>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl StorePolicy {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<StorePolicy> {
        let ppm = |name: &str, text: &str| {
            Ppm::parse_percent(text).map_err(|e| anyhow::anyhow!("{name}: {e}"))
        };
        let warn = |name: &str, text: &str| -> anyhow::Result<Option<Ppm>> {
            if settings.guard_warn {
                ppm(name, text).map(Some)
            } else {
                Ok(None)
            }
        };
        let mut alert_channels = Vec::new();
        if settings
            .alert_webhook_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty())
        {
            alert_channels.push("webhook");
        }
        if settings
            .smtp_host
            .as_deref()
            .is_some_and(|h| !h.trim().is_empty())
            && settings.alert_emails.iter().any(|e| !e.trim().is_empty())
        {
            alert_channels.push("email");
        }
        Ok(StorePolicy {
            soft_bounce: SoftBouncePolicy {
                limit: i64::from(settings.soft_bounce_limit.max(1)),
                window: ::time::Duration::days(i64::from(settings.soft_bounce_window_days)),
            },
            guard: GuardPolicy {
                window_sends: settings.guard_window_sends.max(1),
                max_age: ::time::Duration::days(i64::from(settings.guard_max_age_days.max(1))),
                min_volume: settings.guard_min_volume,
                bounce_pause: ppm(
                    "GUARD_BOUNCE_PAUSE_PERCENT",
                    &settings.guard_bounce_pause_percent,
                )?,
                complaint_pause: ppm(
                    "GUARD_COMPLAINT_PAUSE_PERCENT",
                    &settings.guard_complaint_pause_percent,
                )?,
                bounce_warn: warn(
                    "GUARD_BOUNCE_WARN_PERCENT",
                    &settings.guard_bounce_warn_percent,
                )?,
                complaint_warn: warn(
                    "GUARD_COMPLAINT_WARN_PERCENT",
                    &settings.guard_complaint_warn_percent,
                )?,
            },
            alert_channels,
        })
    }
}

impl Store {
    /// Opens the pool. A SQLite file is created on first start; WAL with
    /// `synchronous=FULL` makes every commit durable before its 2xx.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Store> {
        let url = settings.database_url.as_str();
        let db = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .with_context(|| format!("DATABASE_URL `{url}` is not a SQLite URL"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_millis(settings.sqlite_busy_timeout_ms));
            let pool = SqlitePoolOptions::new()
                .max_connections(settings.database_max_connections.max(2))
                .acquire_timeout(Duration::from_millis(settings.database_acquire_timeout_ms))
                .connect_with(options)
                .await
                .with_context(|| format!("cannot open SQLite database `{url}`"))?;
            Db::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)
                .with_context(|| "DATABASE_URL is not a PostgreSQL URL".to_string())?;
            // Lazy: a replica starts (and spools) while PostgreSQL is down.
            let pool = PgPoolOptions::new()
                .max_connections(settings.database_max_connections.max(2))
                .acquire_timeout(Duration::from_millis(settings.database_acquire_timeout_ms))
                .connect_lazy_with(options);
            Db::Postgres(pool)
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite: or postgres://");
        };
        Ok(Store {
            db,
            policy: Arc::new(StorePolicy::from_settings(settings)?),
        })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match &self.db {
            Db::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
        }
        .context("applying database migrations")
    }

    /// One round trip: is the database answering?
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_db!(&self.db, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// A write transaction. SQLite takes the write lock at once (`BEGIN
    /// IMMEDIATE`) so that two writers wait for each other instead of failing.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match &self.db {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// A read-only transaction (a consistent snapshot; on SQLite it takes
    /// no write lock).
    pub async fn begin_read(&self) -> Result<Tx, sqlx::Error> {
        Ok(match &self.db {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    pub fn policy(&self) -> &StorePolicy {
        &self.policy
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self.db, Db::Sqlite(_))
    }

    pub async fn close(&self) {
        on_db!(&self.db, pool => pool.close().await)
    }
}

/// Whether a database error means "the database cannot be reached or cannot
/// take writes now" (the message goes to the spool) rather than "this
/// message cannot be stored" (a bug, answered 500).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // PostgreSQL: connection exceptions (08), insufficient resources
            // (53), operator intervention (57), system errors (58).
            // SQLite: BUSY (5), LOCKED (6), NOMEM (7), READONLY (8), IOERR
            // (10), FULL (13), CANTOPEN (14), and their extended codes.
            let sqlite_primary = code.parse::<i64>().ok().map(|c| c & 0xff);
            // 42P01/42703: a table or column is missing, i.e. the schema is
            // not migrated yet (the writer migrates before it tries again).
            code.starts_with("08")
                || code == "42P01"
                || code == "42703"
                || code.starts_with("53")
                || code.starts_with("57")
                || code.starts_with("58")
                || matches!(sqlite_primary, Some(5 | 6 | 7 | 8 | 10 | 13 | 14))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}
