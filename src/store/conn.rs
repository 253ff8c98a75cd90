//! Connections and transactions that cannot poison a pool.
//!
//! sqlx's own `Transaction` keeps a depth counter on the connection; when a
//! COMMIT fails (SQLite with its disk full) the counter stays up, the
//! connection goes back to the pool, and every later transaction on it fails
//! with "begin_with at non-zero transaction depth" until a restart. Here a
//! transaction is plain `BEGIN`/`COMMIT` on a [`Conn`] that remembers it is
//! inside one: a `Conn` dropped while a transaction is open (an error left
//! it, or its COMMIT failed) is closed, never reused.

use sqlx::pool::PoolConnection;
use sqlx::{Executor, PgConnection, Postgres, Sqlite, SqliteConnection};

use super::DbResult;

enum Owned {
    SqlitePooled(PoolConnection<Sqlite>),
    PostgresPooled(PoolConnection<Postgres>),
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

/// A database connection, from the pool or the writer's own.
pub struct Conn {
    owned: Owned,
    in_transaction: bool,
}

/// The connection of a transaction, for the SQL functions (see `on_tx!`).
pub(crate) enum Raw<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

/// An open transaction. Commit it; anything else (dropping it on an error)
/// leaves its connection to be closed.
pub struct Tx<'c> {
    conn: &'c mut Conn,
}

impl From<PoolConnection<Sqlite>> for Conn {
    fn from(c: PoolConnection<Sqlite>) -> Self {
        Conn::new(Owned::SqlitePooled(c))
    }
}

impl From<PoolConnection<Postgres>> for Conn {
    fn from(c: PoolConnection<Postgres>) -> Self {
        Conn::new(Owned::PostgresPooled(c))
    }
}

impl From<SqliteConnection> for Conn {
    fn from(c: SqliteConnection) -> Self {
        Conn::new(Owned::Sqlite(c))
    }
}

impl From<PgConnection> for Conn {
    fn from(c: PgConnection) -> Self {
        Conn::new(Owned::Postgres(c))
    }
}

impl Conn {
    fn new(owned: Owned) -> Conn {
        Conn {
            owned,
            in_transaction: false,
        }
    }

    pub(crate) fn raw(&mut self) -> Raw<'_> {
        match &mut self.owned {
            Owned::SqlitePooled(c) => Raw::Sqlite(c),
            Owned::PostgresPooled(c) => Raw::Postgres(c),
            Owned::Sqlite(c) => Raw::Sqlite(c),
            Owned::Postgres(c) => Raw::Postgres(c),
        }
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self.owned, Owned::SqlitePooled(_) | Owned::Sqlite(_))
    }

    /// Whether a transaction failed on this connection: then it must go.
    pub fn is_broken(&self) -> bool {
        self.in_transaction
    }

    async fn execute(&mut self, sql: &'static str) -> DbResult<()> {
        match self.raw() {
            Raw::Sqlite(c) => c.execute(sql).await.map(|_| ())?,
            Raw::Postgres(c) => c.execute(sql).await.map(|_| ())?,
        }
        Ok(())
    }

    /// A write transaction. SQLite takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so that writers wait for each other instead of failing
    /// halfway. PostgreSQL's runs at the server's default isolation
    /// (READ COMMITTED unless an operator chose stricter; a serialization
    /// failure then is retried like a deadlock).
    pub async fn begin(&mut self) -> DbResult<Tx<'_>> {
        let sql = if self.is_sqlite() {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        };
        self.start(sql).await
    }

    /// A read-only snapshot: every statement in it sees the database as
    /// of its first. SQLite's deferred `BEGIN` takes no write lock and reads
    /// one snapshot of the WAL; PostgreSQL's default (READ COMMITTED) would
    /// give each statement a snapshot of its own, so a state row and the
    /// counts read after it could straddle a concurrent resume.
    pub async fn begin_read(&mut self) -> DbResult<Tx<'_>> {
        let sql = if self.is_sqlite() {
            "BEGIN"
        } else {
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        };
        self.start(sql).await
    }

    /// [`Conn::begin_read`], whose statements PostgreSQL plans once per
    /// connection (generic plans, in the same round trip as `BEGIN`)
    /// instead of again at every run. For the rates: their statements'
    /// plans are the same whatever the values (ranges on primary keys),
    /// and PostgreSQL kept planning them afresh (it judged the generic plan
    /// dearer), which cost ~0.3 ms a statement, more than running them. Not
    /// for a list whose `LIKE` prefix or filters need the values to plan.
    /// PostgreSQL before 12 has no `plan_cache_mode`: a plain snapshot there.
    pub async fn begin_read_planned_once(&mut self) -> DbResult<Tx<'_>> {
        let planned_once = match self.raw() {
            Raw::Postgres(c) => c.server_version_num().is_some_and(|v| v >= 120_000),
            Raw::Sqlite(_) => false,
        };
        if !planned_once {
            return self.begin_read().await;
        }
        self.start(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET LOCAL plan_cache_mode = force_generic_plan",
        )
        .await
    }

    async fn start(&mut self, sql: &'static str) -> DbResult<Tx<'_>> {
        if self.in_transaction {
            return Err(super::DbError::unavailable(
                "the connection is still inside a failed transaction",
            ));
        }
        // Marked first: a BEGIN whose answer is lost may have begun.
        self.in_transaction = true;
        self.execute(sql).await?;
        Ok(Tx { conn: self })
    }
}

impl Tx<'_> {
    pub(crate) fn raw(&mut self) -> Raw<'_> {
        self.conn.raw()
    }

    pub fn is_sqlite(&self) -> bool {
        self.conn.is_sqlite()
    }

    pub async fn commit(self) -> DbResult<()> {
        self.conn.execute("COMMIT").await?;
        self.conn.in_transaction = false;
        Ok(())
    }

    /// Ends a transaction that changed nothing worth keeping.
    pub async fn rollback(self) -> DbResult<()> {
        self.conn.execute("ROLLBACK").await?;
        self.conn.in_transaction = false;
        Ok(())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.in_transaction {
            return;
        }
        // A pooled connection would go back with a transaction open (or a
        // driver state that thinks so): close it instead. An owned one
        // closes when dropped anyway.
        match &mut self.owned {
            Owned::SqlitePooled(c) => c.close_on_drop(),
            Owned::PostgresPooled(c) => c.close_on_drop(),
            Owned::Sqlite(_) | Owned::Postgres(_) => {}
        }
    }
}
