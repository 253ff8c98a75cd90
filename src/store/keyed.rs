//! Keyed multi-row inserts (`INSERT ... ON CONFLICT DO NOTHING`) and which
//! of their rows were new: the dedupe of messages, events and counted
//! sends.
//!
//! PostgreSQL says so with `RETURNING`; its rows arrive in the statement's
//! answer. sqlx's SQLite driver runs statements on a thread of its own and
//! hands each returned row to the writer separately, a wake-up of each
//! thread per row: under load the two threads then spent more of their CPU
//! switching than in SQLite. So on SQLite the insert returns nothing; the
//! count of rows it changed says whether every row was new (the common
//! case), and only when some were not are the new ones read back, by their
//! rowids. The writer holds SQLite's write lock from `BEGIN IMMEDIATE`, so
//! the rows one statement inserts have consecutive rowids ending at the
//! connection's last one.

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, PgConnection, Postgres, QueryBuilder, Sqlite, SqliteConnection};

/// Which rows of a keyed insert were new.
pub(crate) enum Inserted<R> {
    /// Every row the statement carried.
    Every,
    /// The keys of these rows only (in no particular order).
    These(Vec<R>),
}

pub(crate) trait KeyedInsert {
    type Db: sqlx::Database;

    /// Runs `qb`, an insert into `table` of `rows` rows with distinct keys
    /// ending in `ON CONFLICT (...) DO NOTHING`; `key` lists the key's
    /// columns, as `R` reads them.
    async fn keyed_insert<R>(
        self,
        qb: QueryBuilder<Self::Db>,
        table: &str,
        key: &str,
        rows: usize,
    ) -> Result<Inserted<R>, sqlx::Error>
    where
        R: for<'r> FromRow<'r, <Self::Db as sqlx::Database>::Row> + Send + Unpin;
}

impl KeyedInsert for &mut PgConnection {
    type Db = Postgres;

    async fn keyed_insert<R>(
        self,
        mut qb: QueryBuilder<Postgres>,
        _table: &str,
        key: &str,
        _rows: usize,
    ) -> Result<Inserted<R>, sqlx::Error>
    where
        R: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        qb.push(" RETURNING ").push(key);
        Ok(Inserted::These(qb.build_query_as().fetch_all(self).await?))
    }
}

impl KeyedInsert for &mut SqliteConnection {
    type Db = Sqlite;

    async fn keyed_insert<R>(
        self,
        mut qb: QueryBuilder<Sqlite>,
        table: &str,
        key: &str,
        rows: usize,
    ) -> Result<Inserted<R>, sqlx::Error>
    where
        R: for<'r> FromRow<'r, SqliteRow> + Send + Unpin,
    {
        let done = qb.build().execute(&mut *self).await?;
        let inserted = done.rows_affected();
        if inserted == rows as u64 {
            return Ok(Inserted::Every);
        }
        if inserted == 0 {
            return Ok(Inserted::These(Vec::new()));
        }
        let last = done.last_insert_rowid();
        let first = last.saturating_sub(inserted as i64 - 1);
        let mut read: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {key} FROM {table} WHERE rowid BETWEEN "));
        read.push_bind(first).push(" AND ").push_bind(last);
        let found: Vec<R> = read.build_query_as().fetch_all(&mut *self).await?;
        // Only a table whose rowids ran out (2^63) takes random ones; then
        // refuse rather than take new rows for duplicates.
        if found.len() as u64 != inserted {
            return Err(sqlx::Error::Protocol(format!(
                "{table}: {inserted} rows inserted, but {} found by their rowids",
                found.len()
            )));
        }
        Ok(Inserted::These(found))
    }
}

impl<R> Inserted<R> {
    /// The keys inserted, given the statement's keys and how to read `R`'s.
    pub(crate) fn keys<'k>(
        self,
        carried: impl Iterator<Item = &'k str>,
        key_of: impl Fn(R) -> String,
    ) -> Vec<String> {
        match self {
            Inserted::Every => carried.map(str::to_owned).collect(),
            Inserted::These(found) => found.into_iter().map(key_of).collect(),
        }
    }
}
