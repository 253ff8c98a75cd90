//! Database errors, classified once. Every caller asks [`DbError::kind`]
//! what a failure means instead of guessing from a code number: SQLite's
//! numeric result codes and PostgreSQL's SQLSTATEs are different namespaces
//! (PostgreSQL's `22021`, a NUL in text, once read as SQLite's "busy"), so
//! each is read only for the backend that produced it.

use std::fmt;

use sqlx::postgres::PgDatabaseError;
use sqlx::sqlite::SqliteError;

/// What a database failure means for the message that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// The database cannot be reached or cannot take writes now: connection
    /// lost or refused, time-outs, locks held elsewhere, a full disk, a
    /// read-only fail-over standby, an administrator's shutdown, a schema
    /// not migrated yet. Keep the message (spool) and try again later.
    Unavailable,
    /// A conflict with a concurrent transaction (serialization failure,
    /// deadlock): the same work succeeds when tried again now.
    Transient,
    /// The statement's data was refused (a data exception, a constraint, a
    /// size limit): caused by one message's content, not by the database.
    Content,
    /// Anything else: a defect to fix, not a state of the database.
    Other,
}

/// A database failure with its meaning; the driver's error stays the source
/// for the log.
#[derive(Debug)]
pub struct DbError {
    kind: DbErrorKind,
    source: sqlx::Error,
}

impl DbError {
    pub fn kind(&self) -> DbErrorKind {
        self.kind
    }

    /// A failure that is not the driver's: a time-out of our own, say.
    pub fn unavailable(why: impl Into<String>) -> DbError {
        DbError {
            kind: DbErrorKind::Unavailable,
            source: sqlx::Error::Protocol(why.into()),
        }
    }

    /// A failure to get a connection at all: whatever the server said
    /// ("not currently accepting connections", "does not exist", a role it
    /// refuses), no message's content was involved, so the database counts
    /// as unavailable and messages wait in the spool.
    pub fn connecting(source: sqlx::Error) -> DbError {
        DbError {
            kind: DbErrorKind::Unavailable,
            source,
        }
    }

    pub fn source_error(&self) -> &sqlx::Error {
        &self.source
    }

    /// PostgreSQL's `lock_timeout` ran out (55P03): a lock held by another
    /// transaction, not a database that is down.
    pub fn is_lock_timeout(&self) -> bool {
        matches!(&self.source, sqlx::Error::Database(db)
            if db.try_downcast_ref::<PgDatabaseError>().is_some_and(|pg| pg.code() == "55P03"))
    }

    /// SQLite's "database or disk is full" (`SQLITE_FULL`, under any
    /// extended code): the disk under the database has no room.
    pub fn is_disk_full(&self) -> bool {
        sqlite_code(&self.source).is_some_and(|c| c & 0xff == 13)
    }

    /// Whether the same call may well succeed in a moment: a conflict with
    /// a concurrent transaction, or a lock held elsewhere past the wait
    /// (PostgreSQL's `lock_timeout`, SQLite's busy time-out). Not a
    /// database that is down, refuses bouncer's role or lacks its schema:
    /// asking again every second changes nothing there.
    pub fn passes_soon(&self) -> bool {
        let sqlite_busy = sqlite_code(&self.source).is_some_and(|c| c & 0xff == 5);
        self.kind == DbErrorKind::Transient || self.is_lock_timeout() || sqlite_busy
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DbErrorKind::Unavailable => "database unavailable",
            DbErrorKind::Transient => "transient database conflict",
            DbErrorKind::Content => "the database refused the data",
            DbErrorKind::Other => "database error",
        };
        write!(f, "{kind}: {}", describe(&self.source))
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<sqlx::Error> for DbError {
    fn from(source: sqlx::Error) -> Self {
        DbError {
            kind: classify(&source),
            source,
        }
    }
}

/// SQLite's result code (extended codes included), for an error SQLite
/// gave; `None` for any other.
pub(crate) fn sqlite_code(error: &sqlx::Error) -> Option<i64> {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<SqliteError>()
            .and_then(sqlx::error::DatabaseError::code)
            .and_then(|c| c.parse().ok()),
        _ => None,
    }
}

/// The one place a driver error gets its meaning.
pub fn classify(error: &sqlx::Error) -> DbErrorKind {
    use DbErrorKind::*;
    match error {
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
                postgres(pg.code())
            } else if db.try_downcast_ref::<SqliteError>().is_some() {
                sqlite_code(error).map_or(Other, sqlite)
            } else {
                Other
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        // A connection left inside a failed transaction: it is discarded
        // and a new one taken.
        | sqlx::Error::BeginFailed
        | sqlx::Error::Migrate(_) => Unavailable,
        _ => Other,
    }
}

/// What to do about a table or column the database lacks: a database
/// made again under a running `serve`, or a newer bouncer on an older
/// schema.
const NOT_MIGRATED: &str =
    "the database's schema is missing or older than this bouncer; run `bouncer migrate`";

/// A driver error in a few words an operator can act on: the cause, once,
/// without the driver's wrapping ("error returned from database: ...") or
/// the server's source position.
pub fn describe(e: &sqlx::Error) -> String {
    use std::io::ErrorKind;
    match e {
        sqlx::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => {
                "connection refused: is the server running and listening there?".into()
            }
            ErrorKind::TimedOut => "the connection timed out".into(),
            _ => io.to_string(),
        },
        sqlx::Error::Database(db) => {
            let message = db.message();
            match db.code().as_deref() {
                Some("3D000") => format!(
                    "{message}: create it first (`createdb NAME`, or CREATE DATABASE in psql); `bouncer migrate` then sets it up"
                ),
                Some("28P01" | "28000") => {
                    format!("{message}: check the user and password in DATABASE_URL")
                }
                Some("42501") => format!(
                    "{message}: the role in DATABASE_URL lacks this privilege (a read-only role suits only the reading commands)"
                ),
                Some("55P03") => format!(
                    "{message}: a lock held elsewhere (an import, a migration, an operator's LOCK TABLE or VACUUM FULL) was not released in time; try again once it is"
                ),
                // PostgreSQL's undefined table and column; SQLite says "no
                // such table" with a generic code.
                Some("42P01" | "42703") => format!("{message}: {NOT_MIGRATED}"),
                _ if message.starts_with("no such table")
                    || message.starts_with("no such column") =>
                {
                    format!("{message}: {NOT_MIGRATED}")
                }
                Some("25006") => format!(
                    "{message}: the role or server only reads (a read-only role suits only the reading commands)"
                ),
                // SQLITE_FULL (PostgreSQL's codes have five characters).
                // SQLite says the same when its temporary folder is full,
                // where a large statement or sort keeps what does not fit
                // in memory: a full database disk is not the only cause.
                Some("13") => format!(
                    "{message}: the disk holding the database, or SQLite's temporary folder (SQLITE_TMPDIR, else TMPDIR, /var/tmp, /usr/tmp, /tmp), has no room; free some, or set SQLITE_TMPDIR to a folder that has"
                ),
                _ => message.to_owned(),
            }
        }
        sqlx::Error::Tls(tls) => format!("TLS: {tls}"),
        sqlx::Error::PoolTimedOut => {
            "no connection became free in time (the pool's connections were all busy, or none could be made: the database may be down)".into()
        }
        // Our own time-outs travel as protocol errors: their text is ours.
        sqlx::Error::Protocol(text) => text.clone(),
        other => other.to_string(),
    }
}

/// PostgreSQL SQLSTATE (appendix A of its manual).
fn postgres(code: &str) -> DbErrorKind {
    use DbErrorKind::*;
    let class = code.get(..2).unwrap_or_default();
    match (class, code) {
        // Serialization failure, deadlock.
        (_, "40001" | "40P01") => Transient,
        // A read-only transaction: a standby after a fail-over.
        (_, "25006") => Unavailable,
        // Lock not available (lock_timeout): a lock held elsewhere.
        (_, "55P03") => Unavailable,
        // Object in use.
        (_, "55006") => Transient,
        // Object not in prerequisite state (a database not accepting
        // connections), a database that does not exist (renamed, dropped),
        // a missing schema, a role refused: the operator must act, and the
        // messages wait for it.
        ("55" | "3D" | "3F" | "28", _) => Unavailable,
        // The schema is not migrated yet (the writer migrates first).
        (_, "42P01" | "42703") => Unavailable,
        // Permission denied: the operator must grant it; nothing in the
        // message can cure it.
        (_, "42501") => Unavailable,
        // Connection exceptions; insufficient resources (disk full, out of
        // memory, too many connections); operator intervention (query
        // cancelled by statement_timeout, admin shutdown, crash shutdown,
        // cannot connect now); system errors; internal errors.
        ("08" | "53" | "57" | "58" | "XX", _) => Unavailable,
        // Data exceptions (a NUL in text, a value out of range),
        // cardinality, integrity constraints, program limits (an index row
        // too large, a statement too complex): the batch's data.
        ("21" | "22" | "23" | "54", _) => Content,
        _ => Other,
    }
}

/// SQLite extended result code; the primary code is its low byte.
fn sqlite(code: i64) -> DbErrorKind {
    use DbErrorKind::*;
    match code & 0xff {
        // BUSY (a lock held by another process past the busy time-out),
        // PERM, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL,
        // NOLFS, AUTH, NOTADB.
        3 | 5 | 7 | 8 | 10 | 11 | 13 | 14 | 15 | 22 | 23 | 26 => Unavailable,
        // ABORT, LOCKED (within this process), INTERRUPT, SCHEMA changed.
        4 | 6 | 9 | 17 => Transient,
        // TOOBIG, CONSTRAINT, MISMATCH.
        18..=20 => Content,
        _ => Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn in_memory() -> sqlx::SqliteConnection {
        use sqlx::Connection;
        sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("an in-memory database")
    }

    /// A database without bouncer's tables (made again under a running
    /// `serve`) says what to run, in the words the log and the CLI show.
    #[tokio::test]
    async fn a_missing_table_says_to_migrate() {
        let mut conn = in_memory().await;
        let missing = sqlx::query("SELECT message_id FROM sns_messages")
            .fetch_all(&mut conn)
            .await
            .expect_err("no such table");
        let told = DbError::from(missing).to_string();
        assert!(told.contains("no such table: sns_messages"), "{told}");
        assert!(told.ends_with("run `bouncer migrate`"), "{told}");
    }

    /// Found by an outside trial: an import on a full temporary folder
    /// said only "database or disk is full", with the database's disk
    /// far from full.
    #[tokio::test]
    async fn a_full_sqlite_names_its_temporary_folder_too() {
        use sqlx::Executor;
        let mut conn = in_memory().await;
        conn.execute("CREATE TABLE t (x BLOB); PRAGMA max_page_count = 4")
            .await
            .expect("a small database");
        let full = sqlx::query("INSERT INTO t VALUES (zeroblob(100000))")
            .execute(&mut conn)
            .await
            .expect_err("no room");
        let told = DbError::from(full).to_string();
        assert!(told.contains("database or disk is full: "), "{told}");
        assert!(told.contains("SQLITE_TMPDIR"), "{told}");
    }

    #[test]
    fn postgres_codes_are_not_read_as_sqlite_codes() {
        // 22021 & 0xff == 5 (SQLite BUSY): the misreading that let a NUL
        // stop the pipeline.
        assert_eq!(postgres("22021"), DbErrorKind::Content);
        for code in [
            "21000", "22022", "22023", "22024", "22026", "22030", "54023",
        ] {
            assert_eq!(postgres(code), DbErrorKind::Content, "{code}");
        }
        for code in [
            "25006", "57P01", "57014", "08006", "53100", "55P03", "42501", "55000", "3D000",
            "28P01",
        ] {
            assert_eq!(postgres(code), DbErrorKind::Unavailable, "{code}");
        }
        for code in ["40001", "40P01"] {
            assert_eq!(postgres(code), DbErrorKind::Transient, "{code}");
        }
        assert_eq!(postgres("42601"), DbErrorKind::Other);
    }

    #[test]
    fn a_refused_connection_is_said_plainly() {
        let e = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(describe(&e).starts_with("connection refused"));
    }

    #[test]
    fn sqlite_extended_codes_use_their_primary_code() {
        // SQLITE_IOERR_WRITE (778), SQLITE_BUSY_SNAPSHOT (517), SQLITE_FULL.
        assert_eq!(sqlite(778), DbErrorKind::Unavailable);
        assert_eq!(sqlite(517), DbErrorKind::Unavailable);
        assert_eq!(sqlite(13), DbErrorKind::Unavailable);
        // SQLITE_CONSTRAINT_UNIQUE (2067), SQLITE_TOOBIG.
        assert_eq!(sqlite(2067), DbErrorKind::Content);
        assert_eq!(sqlite(18), DbErrorKind::Content);
        assert_eq!(sqlite(1), DbErrorKind::Other);
    }
}
