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
//! rowids: a new row's rowid is larger than any the table held before
//! (`AUTOINCREMENT` promises it; a plain rowid table takes one more than
//! its largest), and the writer holds SQLite's write lock from `BEGIN
//! IMMEDIATE`, so the statement's new rows are the `n` with the largest
//! rowids up to the connection's last one. Not a range of `n` rowids:
//! with `AUTOINCREMENT` a row skipped by `DO NOTHING` still uses up a
//! number.

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
        let mut read: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {key} FROM {table} WHERE rowid <= "));
        read.push_bind(done.last_insert_rowid())
            .push(" ORDER BY rowid DESC LIMIT ")
            .push_bind(inserted as i64);
        let found: Vec<R> = read.build_query_as().fetch_all(&mut *self).await?;
        if found.len() as u64 != inserted {
            // Cannot happen while the rowids hold what the module comment
            // says. Not a database outage (which would spool the batch and
            // try it again for ever): the batch is split and the message
            // set aside for `bouncer replay`, and the rest go on.
            return Err(sqlx::Error::Decode(
                format!(
                    "{table}: {inserted} rows inserted, but {} found by their rowids",
                    found.len()
                )
                .into(),
            ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Connection, Executor};

    /// Inserts `keys` into `t` as the writer does, under the write lock.
    async fn insert(conn: &mut SqliteConnection, keys: &[&str]) -> Option<Vec<String>> {
        conn.execute("BEGIN IMMEDIATE").await.expect("begin");
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("INSERT INTO t (k) ");
        qb.push_values(keys, |mut row, k| {
            row.push_bind(k.to_string());
        });
        qb.push(" ON CONFLICT (k) DO NOTHING");
        let inserted = (&mut *conn)
            .keyed_insert(qb, "t", "k", keys.len())
            .await
            .expect("insert");
        conn.execute("COMMIT").await.expect("commit");
        match inserted {
            Inserted::Every => None,
            Inserted::These(found) => {
                let mut keys: Vec<String> = found.into_iter().map(|(k,): (String,)| k).collect();
                keys.sort();
                Some(keys)
            }
        }
    }

    /// The new rows are found whether skipped rows use up rowids
    /// (`AUTOINCREMENT`, as `feedback_events`) or not (as `sns_messages`),
    /// with stored keys between the new ones, and after the newest rows
    /// were deleted.
    #[tokio::test]
    async fn a_statement_that_inserts_some_of_its_rows_names_exactly_those() {
        for table in [
            "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT NOT NULL UNIQUE)",
            "CREATE TABLE t (k TEXT NOT NULL PRIMARY KEY)",
        ] {
            let mut conn = SqliteConnection::connect("sqlite::memory:")
                .await
                .expect("connect");
            conn.execute(table).await.expect("create");
            assert_eq!(insert(&mut conn, &["b", "d"]).await, None, "{table}");
            assert_eq!(
                insert(&mut conn, &["a", "b", "c", "d", "e"]).await,
                Some(vec!["a".into(), "c".into(), "e".into()]),
                "{table}"
            );
            assert_eq!(
                insert(&mut conn, &["a", "f", "e"]).await,
                Some(vec!["f".into()]),
                "the last row a duplicate: {table}"
            );
            assert_eq!(
                insert(&mut conn, &["a", "b"]).await,
                Some(vec![]),
                "{table}"
            );
            conn.execute("DELETE FROM t WHERE k IN ('e', 'f')")
                .await
                .expect("delete");
            assert_eq!(
                insert(&mut conn, &["e", "a", "g"]).await,
                Some(vec!["e".into(), "g".into()]),
                "rows deleted are new again: {table}"
            );
            assert_eq!(
                insert(&mut conn, &["c", "h", "g", "i"]).await,
                Some(vec!["h".into(), "i".into()]),
                "{table}"
            );
        }
    }
}
