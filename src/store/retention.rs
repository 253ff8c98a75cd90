//! Retention: what is deleted when it has served its purpose, so that the
//! database does not grow forever. The suppression list and its removal
//! audit are never pruned; the sending state has one row.
//!
//! - SNS messages, SES events and counted sends older than `RETENTION_DAYS`
//!   (never sooner than the guard's maximum age, which counts sends, nor
//!   than the freshness window, which the MessageId dedupe covers; SES
//!   events not within the soft-bounce window either, which counts soft
//!   bounces from them);
//! - hourly rate buckets older than the guard's maximum age (never read);
//! - delivered alerts older than `RETENTION_DAYS`;
//! - pushes to the SES suppression list a week after SES confirmed them
//!   (refused and pending ones stay: they still need an operator or a call);
//! - soft-bounce streaks whose last bounce is older than what is kept of
//!   the events (and than the soft-bounce window): an address that
//!   soft-bounced and was never mailed again keeps its row until then. A
//!   bounce that old can still arrive (`replay --ignore-age`, a spool
//!   drained after a long outage), but then neither its MessageId nor its
//!   event is remembered any more either.
//!
//! Rows go in chunks, each in its own short transaction, so that pruning
//! never holds the writer up for long.

use serde::Serialize;

use super::{DbResult, Store, on_db};
use crate::time::Timestamp;

const CHUNK: i64 = 5_000;

/// How many rows each table lost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub sns_messages: u64,
    pub feedback_events: u64,
    pub rate_volume: u64,
    pub rate_buckets: u64,
    pub alerts: u64,
    pub ses_pushes: u64,
    pub soft_bounces: u64,
}

/// How long a finished push to SES stays visible in the outbox.
const PUSHES_KEPT: time::Duration = time::Duration::days(7);

/// A `DELETE` of one chunk of rows older than `$1`, at most about `$2` of
/// them (neither database has a portable `DELETE ... LIMIT`), written for
/// each database.
struct Chunk {
    sqlite: &'static str,
    postgres: &'static str,
}

/// On SQLite, the keys of the oldest rows through the time index, deleted
/// by key. PostgreSQL turned that `IN` into a hash join over the whole
/// table for every chunk (218 ms a chunk at 1,000,000 counted sends, the
/// same with or without an index), so there the chunk is bounded by the
/// time of its `$2`-th oldest row instead: two walks of the time index
/// (2.7 ms a chunk, also as a generic plan). That form was eight times
/// slower than the other on SQLite (230 against 30 ms a chunk of 5,000
/// events). Rows sharing the boundary's time go in the same chunk.
#[rustfmt::skip]
macro_rules! older_than {
    ($table:literal, $key:literal, $time:literal, $filter:literal) => {
        Chunk {
            sqlite: concat!(
                "DELETE FROM ", $table, " WHERE (", $key, ") IN (SELECT ", $key, " FROM ", $table,
                " WHERE ", $filter, $time, " < $1 LIMIT $2)"
            ),
            postgres: concat!(
                "DELETE FROM ", $table, " WHERE ", $filter, $time, " < $1 AND ", $time,
                " <= COALESCE((SELECT ", $time, " FROM ", $table, " WHERE ", $filter, $time,
                " < $1 ORDER BY ", $time, " LIMIT 1 OFFSET $2 - 1), $1)"
            ),
        }
    };
}
const MESSAGES: Chunk = older_than!("sns_messages", "rowid", "received_at", "");
const EVENTS: Chunk = older_than!("feedback_events", "id", "received_at", "");
const VOLUME: Chunk = older_than!("rate_volume", "mail_id, recipient", "seen_at", "");
const BUCKETS: Chunk = older_than!("rate_buckets", "bucket_start", "bucket_start", "");
const DELIVERIES: Chunk = same_on_both(
    "DELETE FROM alert_deliveries WHERE alert_id IN \
    (SELECT id FROM alerts WHERE created_at < $1 LIMIT $2) \
    AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = alert_deliveries.alert_id AND d.delivered_at IS NULL)",
);
const ALERTS: Chunk = same_on_both(
    "DELETE FROM alerts WHERE id IN \
    (SELECT id FROM alerts WHERE created_at < $1 \
     AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = alerts.id) LIMIT $2)",
);

// No index on `last_at`: each chunk scans the streaks (on PostgreSQL the
// whole table, ~20 ms at 100,000 streaks), once an hour and off the
// write path; an index would cost every soft bounce's write instead.
const STREAKS: Chunk = same_on_both(
    "DELETE FROM soft_bounces WHERE email IN \
    (SELECT email FROM soft_bounces WHERE last_at < $1 LIMIT $2)",
);

const PUSHES: Chunk = older_than!(
    "ses_suppression_sync",
    "email",
    "done_at",
    "state IN ('done', 'skipped') AND "
);

/// A statement both databases run well as it is (alerts, streaks).
const fn same_on_both(sql: &'static str) -> Chunk {
    Chunk {
        sqlite: sql,
        postgres: sql,
    }
}

impl Store {
    async fn delete_before(&self, chunk: Chunk, before: Timestamp) -> DbResult<u64> {
        let sql = if self.is_sqlite() {
            chunk.sqlite
        } else {
            chunk.postgres
        };
        let mut total = 0;
        loop {
            let n = on_db!(&self.db, pool => sqlx::query(sql).bind(before).bind(CHUNK).execute(pool).await.map(|r| r.rows_affected()))?;
            total += n;
            if n < CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// Deletes what is older than `retention` (see the module's comment);
    /// `guard_age` is the guard's maximum age, `freshness` the oldest
    /// message the endpoint accepts, `soft_window` the soft-bounce window.
    pub async fn prune(
        &self,
        now: Timestamp,
        retention: time::Duration,
        guard_age: time::Duration,
        freshness: time::Duration,
        soft_window: time::Duration,
    ) -> DbResult<Pruned> {
        // One day more than each minimum, for the hour boundaries.
        let keep = retention.max(guard_age).max(freshness) + time::Duration::DAY;
        let before = now.saturating_sub(keep);
        let buckets_before = now.saturating_sub(guard_age + time::Duration::DAY);
        let alerts_before = now.saturating_sub(retention.max(time::Duration::DAY));
        let streaks_before =
            now.saturating_sub(keep.max(soft_window + freshness + time::Duration::DAY));
        let pruned = Pruned {
            sns_messages: self.delete_before(MESSAGES, before).await?,
            // Soft bounces are counted from the event log: the log keeps
            // the soft-bounce window, however short the retention.
            feedback_events: self.delete_before(EVENTS, streaks_before).await?,
            rate_volume: self.delete_before(VOLUME, before).await?,
            rate_buckets: self.delete_before(BUCKETS, buckets_before).await?,
            alerts: {
                self.delete_before(DELIVERIES, alerts_before).await?;
                self.delete_before(ALERTS, alerts_before).await?
            },
            ses_pushes: self
                .delete_before(PUSHES, now.saturating_sub(PUSHES_KEPT))
                .await?,
            // By `last_at`, which decides whether a delivery resets the
            // streak, and never within the soft-bounce window (which may be
            // longer than what is kept).
            soft_bounces: self.delete_before(STREAKS, streaks_before).await?,
        };
        // The pushes' deletions are count changes too (PostgreSQL): folded
        // here as well, for a prune with no push worker running. A fold
        // that fails (one that lost a deadlock to another replica's) leaves
        // its rows for the next one and the counts right: not the prune's
        // failure.
        if let Err(e) = self.fold_push_counts().await {
            tracing::warn!(error = %e, "prune: the outbox counts are folded later");
        }
        Ok(pruned)
    }
}
