//! Reading and changing the suppression list by hand: what the `/v1` API
//! and the `bouncer suppressions` commands share.

use serde::Serialize;
use sqlx::QueryBuilder;

use super::conn::Raw;
use super::text::{storable, storable_opt};
use super::{Db, DbError, DbResult, Store, Tx, on_db, on_tx};
use crate::address::EmailAddress;
use crate::time::Timestamp;

/// One row of `suppressions`, as the public contract names its columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Suppression {
    pub email: String,
    pub reason: String,
    pub bounce_type: Option<String>,
    pub bounce_subtype: Option<String>,
    pub complaint_feedback_type: Option<String>,
    pub diagnostic_code: Option<String>,
    pub first_seen_at: Timestamp,
    pub last_seen_at: Timestamp,
    pub event_count: i64,
    pub last_ses_message_id: Option<String>,
    pub last_sns_message_id: Option<String>,
    pub source: String,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub reason: Option<String>,
    /// Rows last seen at or after this time.
    pub since: Option<Timestamp>,
    /// Rows last seen before this time.
    pub until: Option<Timestamp>,
    /// Rows whose email starts with this (normalized, as emails are).
    pub prefix: Option<String>,
    /// Keyset paging: rows whose email sorts after this one.
    pub after: Option<String>,
    pub limit: i64,
}

/// How [`Store::list`] reads a page: see `Store::time_plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimePlan {
    /// No time range, or PostgreSQL: the planner chooses.
    Planner,
    /// Few rows in the range: through the time index, then sorted.
    TimeIndex,
    /// Many rows in the range: in address order, the time tested per row.
    KeyOrder,
}

/// The filter's time bounds on `column` (`last_seen_at`, or `+last_seen_at`
/// to keep SQLite off its index).
fn push_time_range<DB>(qb: &mut QueryBuilder<DB>, filter: &ListFilter, column: &str)
where
    DB: sqlx::Database,
    Timestamp: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    if let Some(since) = filter.since {
        qb.push(format_args!(" AND {column} >= ")).push_bind(since);
    }
    if let Some(until) = filter.until {
        qb.push(format_args!(" AND {column} < ")).push_bind(until);
    }
}

/// The public columns of `suppressions`, in order: every statement that
/// reads a row, and the CSV export, take them from here.
macro_rules! columns {
    () => {
        "email, reason, bounce_type, bounce_subtype, complaint_feedback_type, \
         diagnostic_code, first_seen_at, last_seen_at, event_count, last_ses_message_id, \
         last_sns_message_id, source, note"
    };
}

impl Store {
    pub async fn suppression(&self, email: &EmailAddress) -> DbResult<Option<Suppression>> {
        const SQL: &str = concat!("SELECT ", columns!(), " FROM suppressions WHERE email = $1");
        Ok(
            on_db!(&self.db, pool => sqlx::query_as::<_, Suppression>(SQL)
            .bind(email.as_str())
            .fetch_optional(pool)
            .await)?,
        )
    }

    /// The suppressed ones among `emails`, in one statement (inside the
    /// read transaction of [`Store::check_sliced`]), each row once however
    /// often its address is given.
    pub async fn check(&self, emails: &[EmailAddress]) -> DbResult<Vec<Suppression>> {
        let mut found = Vec::new();
        self.check_sliced(emails, emails.len(), |_, rows| {
            found = rows;
            Ok::<_, DbError>(())
        })
        .await?;
        Ok(found)
    }

    /// Looks `emails` up `slice` at a time and hands each slice's rows
    /// (each once, in no order) to `each`, with the offset of the slice's
    /// first address, before the next slice is read: a caller holds one
    /// slice of rows at a time. The slices read one snapshot of the list
    /// (one read transaction on one connection), so that an address given
    /// twice gets one answer.
    pub async fn check_sliced<E: From<DbError>>(
        &self,
        emails: &[EmailAddress],
        slice: usize,
        mut each: impl FnMut(usize, Vec<Suppression>) -> Result<(), E>,
    ) -> Result<(), E> {
        if emails.is_empty() {
            return Ok(());
        }
        let slice = slice.max(1);
        let mut conn = self.conn().await?;
        // On PostgreSQL a lock that keeps readers out is waited for at most
        // DATABASE_ACQUIRE_TIMEOUT_MS (the pool's `lock_timeout`), then 503.
        let mut snapshot = conn.begin_read().await?;
        for (n, addresses) in emails.chunks(slice).enumerate() {
            let rows = select_listed(&mut snapshot, addresses).await?;
            each(n * slice, rows)?;
        }
        // Read only: the end of the snapshot, nothing to keep. Every slice
        // has been answered, so a failed ROLLBACK costs only the
        // connection, which is closed rather than reused (`Conn`'s drop).
        if let Err(e) = snapshot.rollback().await {
            tracing::warn!(error = %e, "a batch check's read transaction did not end cleanly; its connection is closed");
        }
        Ok(())
    }

    /// Rows in email order, filtered, one page. The statement names only
    /// the filters given, so that each combination walks an index from the
    /// cursor on: a page costs about the same at row 10 as at row 900,000.
    ///
    /// A prefix is a range of the key (`prefix <= email < ` [`prefix_end`]).
    /// On PostgreSQL it is taken in byte order (`COLLATE "C"`, with its own
    /// index, migration 0006): in a linguistic collation such as
    /// `en_US.UTF-8` the addresses starting with a prefix are not one range.
    /// SQLite compares bytes already. A search is paged in that same order.
    ///
    /// A time range on SQLite, which keeps no statistics to weigh it, is
    /// planned here: see [`TimePlan`].
    pub async fn list(&self, filter: &ListFilter) -> DbResult<Vec<Suppression>> {
        let key = if filter.prefix.is_some() && !self.is_sqlite() {
            "email COLLATE \"C\""
        } else {
            "email"
        };
        let plan = self.time_plan(filter).await?;
        let (from, last_seen) = match plan {
            TimePlan::Planner => (" FROM suppressions", "last_seen_at"),
            TimePlan::TimeIndex => (
                " FROM suppressions INDEXED BY suppressions_last_seen",
                "last_seen_at",
            ),
            // `+` keeps the column's terms off its index.
            TimePlan::KeyOrder => (" FROM suppressions", "+last_seen_at"),
        };
        Ok(on_db!(&self.db, pool => {
            let mut qb = QueryBuilder::new(concat!("SELECT ", columns!()));
            qb.push(from).push(" WHERE 1 = 1");
            if let Some(reason) = &filter.reason {
                qb.push(" AND reason = ").push_bind(reason.clone());
            }
            push_time_range(&mut qb, filter, last_seen);
            // One lower bound, the tighter: SQLite seeks the index by one
            // and would test the other on every row between them.
            match (&filter.prefix, &filter.after) {
                (Some(prefix), after) => {
                    match after.as_ref().filter(|after| *after >= prefix) {
                        Some(after) => qb.push(format_args!(" AND {key} > ")).push_bind(after.clone()),
                        None => qb.push(format_args!(" AND {key} >= ")).push_bind(prefix.clone()),
                    };
                    if let Some(end) = prefix_end(prefix) {
                        qb.push(format_args!(" AND {key} < ")).push_bind(end);
                    }
                }
                (None, Some(after)) => {
                    qb.push(format_args!(" AND {key} > ")).push_bind(after.clone());
                }
                (None, None) => {}
            }
            qb.push(format_args!(" ORDER BY {key} LIMIT ")).push_bind(filter.limit);
            qb.build_query_as::<Suppression>().fetch_all(pool).await
        })?)
    }

    /// How a page filtered by time is read on SQLite. Without statistics
    /// SQLite guessed: a range with both ends went to the time index and
    /// sorted everything in it (2 s a page for a year of 1,000,000 rows),
    /// one end or a reason walked the list in address order testing each
    /// row's time (0.3 s a page for a day with no complaint among 100,000).
    ///
    /// Reading the range through the time index costs about its `r` rows;
    /// walking in address order until a page of `l` fills costs about
    /// `l × n ÷ r` rows of a list of `n` (when the times are unrelated to
    /// the addresses). The two meet at `r = √(l × n)`. So the rows in the
    /// range are counted first, through the time index alone and stopping
    /// just past that point, and the cheaper way is taken. `n` is the
    /// largest rowid: no scan, and an upper bound.
    async fn time_plan(&self, filter: &ListFilter) -> DbResult<TimePlan> {
        let Db::Sqlite(pool) = &self.db else {
            return Ok(TimePlan::Planner);
        };
        if filter.since.is_none() && filter.until.is_none() {
            return Ok(TimePlan::Planner);
        }
        let listed: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(rowid), 0) FROM suppressions")
            .fetch_one(pool)
            .await?;
        // A float is exact enough to choose between two plans.
        let crossover = ((filter.limit.max(1) as f64) * (listed.max(1) as f64)).sqrt() as i64;
        let mut qb = QueryBuilder::new(
            "SELECT COUNT(*) FROM (SELECT 1 FROM suppressions INDEXED BY suppressions_last_seen WHERE 1 = 1",
        );
        push_time_range(&mut qb, filter, "last_seen_at");
        qb.push(" LIMIT ")
            .push_bind(crossover.saturating_add(1))
            .push(")");
        let in_range: i64 = qb.build_query_scalar().fetch_one(pool).await?;
        Ok(if in_range <= crossover {
            TimePlan::TimeIndex
        } else {
            TimePlan::KeyOrder
        })
    }

    /// Adds `email` by hand; an address already on the list keeps its row.
    /// Returns the row and whether it is new.
    pub async fn add_manual(
        &self,
        email: &EmailAddress,
        note: Option<&str>,
        source: &str,
        now: Timestamp,
    ) -> DbResult<(Suppression, bool)> {
        const SQL: &str = "INSERT INTO suppressions \
            (email, reason, first_seen_at, last_seen_at, event_count, source, note) \
            VALUES ($1, 'manual', $2, $2, 1, $3, $4) ON CONFLICT (email) DO NOTHING";
        let created = on_db!(&self.db, pool => sqlx::query(SQL)
            .bind(email.as_str())
            .bind(now)
            .bind(storable(source).as_ref())
            .bind(storable_opt(note))
            .execute(pool)
            .await?
            .rows_affected())
            == 1;
        let row = self
            .suppression(email)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        Ok((row, created))
    }

    /// Removes `email`, recording who and why with the row as it was, in one
    /// transaction. Its soft-bounce count goes too. `None` if not listed.
    pub async fn remove(
        &self,
        email: &EmailAddress,
        by: &str,
        why: &str,
        now: Timestamp,
    ) -> DbResult<Option<Suppression>> {
        const DELETE: &str = concat!(
            "DELETE FROM suppressions WHERE email = $1 RETURNING ",
            columns!()
        );
        const AUDIT: &str = "INSERT INTO suppression_removals (email, removed_at, removed_by, why, reason, row_json) \
            VALUES ($1, $2, $3, $4, $5, $6)";
        const FORGET_SOFT: &str = "DELETE FROM soft_bounces WHERE email = $1";
        // On PostgreSQL a writer's batch may be storing an older event of
        // this address right now: its upsert looked for removals before
        // this one commits, and would put the address back after it. The
        // removal waits for the batches already writing either table, and
        // later ones wait for it, so their upsert sees this removal. In the
        // writer's order (streaks, then suppressions), so neither waits for
        // the other's second lock. Reads are not held up; SQLite's write
        // transaction holds the whole database already.
        const QUIESCE: &str = "LOCK TABLE soft_bounces, suppressions IN EXCLUSIVE MODE";
        // Writers queue behind a removal that waits: it waits at most this
        // long (behind a CSV import's transaction, say), well under the
        // writer's own lock time-out, and is then answered 503, to retry.
        const QUIESCE_WAIT: &str = "SET LOCAL lock_timeout = '1s'";
        const LISTED: &str = "SELECT EXISTS (SELECT 1 FROM suppressions WHERE email = $1)";
        let mut conn = self.conn().await?;
        let mut tx = conn.begin().await?;
        if let Raw::Postgres(conn) = tx.raw() {
            // First: the look-up below waits on a lock that keeps readers
            // out too (an operator's `LOCK TABLE`), which an outside trial
            // held for 15 s before the removal went on.
            sqlx::query(QUIESCE_WAIT).execute(&mut *conn).await?;
            // No lock for an address that is not listed.
            let listed: bool = sqlx::query_scalar(LISTED)
                .bind(email.as_str())
                .fetch_one(&mut *conn)
                .await?;
            if !listed {
                tx.rollback().await?;
                return Ok(None);
            }
            sqlx::query(QUIESCE).execute(conn).await?;
        }
        // The streak's row first: the writer locks an address's streak
        // before its suppression, and the same order here means the two
        // cannot deadlock on PostgreSQL.
        on_tx!(&mut tx, conn => sqlx::query(FORGET_SOFT)
            .bind(email.as_str())
            .execute(conn)
            .await
            .map(|_| ()))?;
        let removed = on_tx!(&mut tx, conn => sqlx::query_as::<_, Suppression>(DELETE)
            .bind(email.as_str())
            .fetch_optional(conn)
            .await)?;
        let Some(row) = removed else {
            tx.rollback().await?;
            return Ok(None);
        };
        let snapshot = serde_json::to_string(&row).map_err(|e| sqlx::Error::Encode(e.into()))?;
        on_tx!(&mut tx, conn => sqlx::query(AUDIT)
            .bind(email.as_str())
            .bind(now)
            .bind(storable(by).as_ref())
            .bind(storable(why).as_ref())
            .bind(&row.reason)
            .bind(snapshot)
            .execute(conn)
            .await
            .map(|_| ()))?;
        tx.commit().await?;
        Ok(Some(row))
    }

    /// Merges rows into the list in one transaction (CSV import): all of
    /// them or, on any failure, none. Returns how many were new.
    pub async fn import(&self, rows: &[ImportRow], now: Timestamp) -> DbResult<usize> {
        const EXISTS: &str = "SELECT COUNT(*) FROM suppressions WHERE email = $1";
        let mut conn = self.conn().await?;
        let mut tx = conn.begin().await?;
        let mut new = 0;
        for row in rows {
            let known: i64 = on_tx!(&mut tx, conn => sqlx::query_scalar(EXISTS)
                .bind(row.email.as_str())
                .fetch_one(conn)
                .await)?;
            new += usize::from(known == 0);
            merge_imported(&mut tx, row, now).await?;
        }
        tx.commit().await?;
        Ok(new)
    }
}

/// An import merges like `add`: a new address gets the whole row; an
/// address already listed keeps everything it knows. Only its empty
/// columns are filled, first and last seen are widened by the times the
/// file gives, and the larger event count is kept; `reason` and `source`
/// never change.
const MERGE_IMPORTED: &str = "INSERT INTO suppressions \
    (email, reason, bounce_type, bounce_subtype, complaint_feedback_type, diagnostic_code, \
     first_seen_at, last_seen_at, event_count, last_ses_message_id, last_sns_message_id, source, note) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
    ON CONFLICT (email) DO UPDATE SET \
      bounce_type = COALESCE(suppressions.bounce_type, excluded.bounce_type), \
      bounce_subtype = COALESCE(suppressions.bounce_subtype, excluded.bounce_subtype), \
      complaint_feedback_type = COALESCE(suppressions.complaint_feedback_type, excluded.complaint_feedback_type), \
      diagnostic_code = COALESCE(suppressions.diagnostic_code, excluded.diagnostic_code), \
      last_ses_message_id = COALESCE(suppressions.last_ses_message_id, excluded.last_ses_message_id), \
      last_sns_message_id = COALESCE(suppressions.last_sns_message_id, excluded.last_sns_message_id), \
      note = COALESCE(suppressions.note, excluded.note), \
      first_seen_at = CASE WHEN $14 AND excluded.first_seen_at < suppressions.first_seen_at \
        THEN excluded.first_seen_at ELSE suppressions.first_seen_at END, \
      last_seen_at = CASE WHEN $15 AND excluded.last_seen_at > suppressions.last_seen_at \
        THEN excluded.last_seen_at ELSE suppressions.last_seen_at END, \
      event_count = CASE WHEN excluded.event_count > suppressions.event_count \
        THEN excluded.event_count ELSE suppressions.event_count END";

async fn merge_imported(tx: &mut Tx<'_>, row: &ImportRow, now: Timestamp) -> DbResult<()> {
    // A new row without times was seen now; an old one keeps its own.
    let first = row.first_seen_at.or(row.last_seen_at).unwrap_or(now);
    let last = row.last_seen_at.unwrap_or(first).max(first);
    on_tx!(tx, conn => sqlx::query(MERGE_IMPORTED)
        .bind(row.email.as_str())
        .bind(&row.reason)
        .bind(storable_opt(row.bounce_type.as_deref()))
        .bind(storable_opt(row.bounce_subtype.as_deref()))
        .bind(storable_opt(row.complaint_feedback_type.as_deref()))
        .bind(storable_opt(row.diagnostic_code.as_deref()))
        .bind(first)
        .bind(last)
        .bind(row.event_count.unwrap_or(1).max(1))
        .bind(storable_opt(row.last_ses_message_id.as_deref()))
        .bind(storable_opt(row.last_sns_message_id.as_deref()))
        .bind(storable(&row.source).as_ref())
        .bind(storable_opt(row.note.as_deref()))
        .bind(row.first_seen_at.is_some())
        .bind(row.last_seen_at.is_some())
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// One line of a CSV import: the table's columns, those the file lacks
/// left empty.
#[derive(Debug, Clone)]
pub struct ImportRow {
    pub email: EmailAddress,
    pub reason: String,
    pub bounce_type: Option<String>,
    pub bounce_subtype: Option<String>,
    pub complaint_feedback_type: Option<String>,
    pub diagnostic_code: Option<String>,
    pub first_seen_at: Option<Timestamp>,
    pub last_seen_at: Option<Timestamp>,
    pub event_count: Option<i64>,
    pub last_ses_message_id: Option<String>,
    pub last_sns_message_id: Option<String>,
    /// The file's `source`, or `import:<file>`.
    pub source: String,
    pub note: Option<String>,
}

/// The column list, for exports that must match the table.
pub fn columns() -> Vec<&'static str> {
    columns!().split(',').map(str::trim).collect()
}

/// The first text after every text that starts with `prefix`, in code
/// point order (UTF-8 byte order, the key's order): `prefix` with its last
/// character that can be, moved to the next one. `None` when every
/// character is the last one (no upper bound). `prefix || U+10FFFF` missed
/// the addresses whose next character is U+10FFFF (found by an outside
/// trial).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next scalar value, stepping over the surrogates.
        let next = (u32::from(last) + 1..=0x10FFFF).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The rows of `emails` that are on the list, in one statement.
async fn select_listed(tx: &mut Tx<'_>, emails: &[EmailAddress]) -> DbResult<Vec<Suppression>> {
    let mut list: Vec<&str> = emails.iter().map(EmailAddress::as_str).collect();
    match tx.raw() {
        Raw::Sqlite(conn) => {
            const SQL: &str = concat!(
                "SELECT ",
                columns!(),
                " FROM suppressions \
                WHERE email IN (SELECT value FROM json_each($1))"
            );
            let json = serde_json::to_string(&list).map_err(|e| sqlx::Error::Encode(e.into()))?;
            Ok(sqlx::query_as::<_, Suppression>(SQL)
                .bind(json)
                .fetch_all(conn)
                .await?)
        }
        Raw::Postgres(conn) => {
            // Without repeats: the statement returns a row per address
            // given. (SQLite's `IN` is a set already.)
            list.sort_unstable();
            list.dedup();
            // One primary-key look-up per address, whatever the table's
            // statistics say. `email = ANY($1)` leaves the choice to the
            // planner, which at 10,000 addresses estimates 10,000 rows
            // and, on a list grown in arrival order (no correlation
            // between the key and the heap), weighs a parallel scan of
            // the whole table within a few per cent of the look-ups and
            // can choose it: 176-211 ms at 1,000,000 narrow rows against
            // 25-45 ms through the key (BENCHMARKS.md, "Batch check").
            // `OFFSET 0` keeps the subquery a parameterized scan: without
            // it the planner may flatten it into a hash join, which
            // scans the table the same way.
            const SQL: &str = concat!(
                "SELECT ",
                columns!(),
                " FROM unnest($1::text[]) AS wanted (address) \
                CROSS JOIN LATERAL (SELECT * FROM suppressions \
                WHERE email = wanted.address OFFSET 0) AS listed"
            );
            Ok(sqlx::query_as::<_, Suppression>(SQL)
                .bind(list)
                .fetch_all(conn)
                .await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_every_text_that_starts_with_it() {
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        let end = prefix_end("pfx").unwrap();
        assert!("pfx\u{10FFFF}z@x.io" < end.as_str());
    }
}
