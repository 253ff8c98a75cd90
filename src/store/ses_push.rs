//! The push outbox (`ses_suppression_sync`): one row per address whose
//! place on the SES account-level suppression list must follow bouncer's
//! list. Triggers on `suppressions` fill it in the transaction of each
//! change (see migrations `0005_ses.sql`); a worker claims due rows with a
//! lease, and finishes one only if no newer change came meanwhile.

use serde::Serialize;

use super::text::storable;
use super::{Db, DbResult, Store, on_db};
use crate::time::Timestamp;

/// A push claimed by this worker until its lease ends.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedPush {
    pub email: String,
    pub action: String,
    pub seq: i64,
    pub attempts: i64,
}

/// How a push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushEnd {
    /// SES confirmed it.
    Done,
    /// Nothing to do at SES (the row came from SES, or manual rows are not
    /// pushed).
    Skipped,
    /// SES refused the request for good (400): recorded, never retried.
    Refused,
}

impl PushEnd {
    fn state(self) -> &'static str {
        match self {
            PushEnd::Done => "done",
            PushEnd::Skipped => "skipped",
            PushEnd::Refused => "refused",
        }
    }
}

/// The outbox at a glance, for `status` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushSummary {
    pub pending: i64,
    pub done: i64,
    pub skipped: i64,
    pub refused: i64,
    pub last_error: Option<String>,
    pub last_error_email: Option<String>,
    pub last_error_at: Option<Timestamp>,
    pub last_done_at: Option<Timestamp>,
}

/// One address's row, as the operator sees it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PushRow {
    pub email: String,
    pub action: String,
    pub state: String,
    pub attempts: i64,
    pub sent_reason: Option<String>,
    pub done_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
}

impl Store {
    /// Whether a push is due (a read: idle workers take no write lock).
    pub async fn pushes_due(&self, now: Timestamp) -> DbResult<bool> {
        const SQL: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM ses_suppression_sync WHERE state = 'pending' \
            AND (next_attempt_at IS NULL OR next_attempt_at <= $1) \
            AND (lease_until IS NULL OR lease_until < $1) LIMIT 1) AS due";
        let n: i64 =
            on_db!(&self.db, pool => sqlx::query_scalar(SQL).bind(now).fetch_one(pool).await)?;
        Ok(n > 0)
    }

    /// Claims the oldest due push for `lease`. An address whose previous
    /// call is still in flight is leased, so its next change waits for it.
    pub async fn claim_push(
        &self,
        now: Timestamp,
        lease: time::Duration,
    ) -> DbResult<Option<ClaimedPush>> {
        const SQLITE: &str = "UPDATE ses_suppression_sync SET lease_until = $1, attempts = attempts + 1 \
            WHERE email = (SELECT email FROM ses_suppression_sync WHERE state = 'pending' \
                AND (next_attempt_at IS NULL OR next_attempt_at <= $2) \
                AND (lease_until IS NULL OR lease_until < $2) ORDER BY changed_at LIMIT 1) \
            RETURNING email, action, seq, attempts";
        const POSTGRES: &str = "UPDATE ses_suppression_sync SET lease_until = $1, attempts = attempts + 1 \
            WHERE email = (SELECT email FROM ses_suppression_sync WHERE state = 'pending' \
                AND (next_attempt_at IS NULL OR next_attempt_at <= $2) \
                AND (lease_until IS NULL OR lease_until < $2) ORDER BY changed_at LIMIT 1 \
                FOR UPDATE SKIP LOCKED) \
            RETURNING email, action, seq, attempts";
        let until = now.saturating_add(lease);
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_as(SQLITE)
                    .bind(until)
                    .bind(now)
                    .fetch_optional(pool)
                    .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_as(POSTGRES)
                    .bind(until)
                    .bind(now)
                    .fetch_optional(pool)
                    .await?
            }
        })
    }

    /// Ends push `seq` of `email` (`sent` is the SES reason put, or why it
    /// was skipped), unless a newer change came meanwhile: then the row
    /// stays pending and is done again. Returns whether it ended. A refusal
    /// keeps `error`.
    pub async fn push_ended(
        &self,
        email: &str,
        seq: i64,
        end: PushEnd,
        sent: Option<&str>,
        error: Option<&str>,
        now: Timestamp,
    ) -> DbResult<bool> {
        const END: &str = "UPDATE ses_suppression_sync SET state = $3, sent_reason = $4, done_at = $5, lease_until = NULL, \
            last_error = COALESCE($6, last_error), last_error_at = CASE WHEN $6 IS NULL THEN last_error_at ELSE $5 END \
            WHERE email = $1 AND seq = $2";
        const RELEASE: &str = "UPDATE ses_suppression_sync SET lease_until = NULL WHERE email = $1";
        let ended = on_db!(&self.db, pool => sqlx::query(END)
            .bind(email)
            .bind(seq)
            .bind(end.state())
            .bind(sent)
            .bind(now)
            .bind(error.map(|e| storable(e).into_owned()))
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?
            == 1;
        if !ended {
            on_db!(&self.db, pool => sqlx::query(RELEASE).bind(email).execute(pool).await.map(|_| ()))?;
        }
        Ok(ended)
    }

    /// Records a failed attempt; due again at `retry_at` (a newer change,
    /// if one came, is due now).
    pub async fn push_failed(
        &self,
        email: &str,
        seq: i64,
        error: &str,
        retry_at: Timestamp,
        now: Timestamp,
    ) -> DbResult<()> {
        const SQL: &str = "UPDATE ses_suppression_sync SET lease_until = NULL, last_error = $3, last_error_at = $5, \
            next_attempt_at = CASE WHEN seq = $2 THEN $4 ELSE next_attempt_at END WHERE email = $1";
        on_db!(&self.db, pool => sqlx::query(SQL)
            .bind(email)
            .bind(seq)
            .bind(storable(error).as_ref())
            .bind(retry_at)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Stamps the latest removal of `email` with the time SES confirmed it:
    /// the audit shows who removed it, why, and when SES followed.
    pub async fn stamp_ses_removal(&self, email: &str, now: Timestamp) -> DbResult<()> {
        const SQL: &str = "UPDATE suppression_removals SET ses_removed_at = $2 WHERE id = \
            (SELECT MAX(id) FROM suppression_removals WHERE email = $1)";
        on_db!(&self.db, pool => sqlx::query(SQL).bind(email).bind(now).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Read from counts kept by triggers (migration 0009), never by
    /// counting the outbox: a sender may ask `GET /v1/sending` before every
    /// send, and the outbox holds a week of pushes and any backlog. On
    /// PostgreSQL the counts are the folded ones plus the changes not
    /// folded yet ([`Store::fold_push_counts`]).
    pub async fn push_summary(&self) -> DbResult<PushSummary> {
        const COUNTS_SQLITE: &str = "SELECT state, n FROM ses_push_counts";
        const COUNTS_POSTGRES: &str = "SELECT state, SUM(n)::BIGINT FROM (\
            SELECT state, n FROM ses_push_counts \
            UNION ALL SELECT state, n FROM ses_push_count_changes) AS c GROUP BY state";
        const LAST_ERROR: &str = "SELECT email, last_error, last_error_at FROM ses_suppression_sync \
            WHERE last_error_at IS NOT NULL ORDER BY last_error_at DESC LIMIT 1";
        // SQLite, with no statistics, took the state's index and read every
        // confirmed push (260 ms at 800,000).
        const LAST_DONE_SQLITE: &str = "SELECT MAX(done_at) FROM ses_suppression_sync \
            INDEXED BY ses_suppression_sync_last_done WHERE state = 'done'";
        const LAST_DONE_POSTGRES: &str =
            "SELECT MAX(done_at) FROM ses_suppression_sync WHERE state = 'done'";
        let counts: Vec<(String, i64)> = match &self.db {
            Db::Sqlite(pool) => sqlx::query_as(COUNTS_SQLITE).fetch_all(pool).await?,
            Db::Postgres(pool) => sqlx::query_as(COUNTS_POSTGRES).fetch_all(pool).await?,
        };
        let mut summary = PushSummary::default();
        for (state, n) in counts {
            match state.as_str() {
                "pending" => summary.pending = n,
                "done" => summary.done = n,
                "skipped" => summary.skipped = n,
                "refused" => summary.refused = n,
                _ => {}
            }
        }
        let last: Option<(String, Option<String>, Option<Timestamp>)> =
            on_db!(&self.db, pool => sqlx::query_as(LAST_ERROR).fetch_optional(pool).await)?;
        if let Some((email, error, at)) = last {
            summary.last_error_email = Some(email);
            summary.last_error = error;
            summary.last_error_at = at;
        }
        summary.last_done_at = match &self.db {
            Db::Sqlite(pool) => sqlx::query_scalar(LAST_DONE_SQLITE).fetch_one(pool).await?,
            Db::Postgres(pool) => {
                sqlx::query_scalar(LAST_DONE_POSTGRES)
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(summary)
    }

    /// PostgreSQL: folds the outbox's count changes into its counts, in a
    /// transaction of its own. The triggers append a row per statement and
    /// state instead of updating a shared count, whose lock would last
    /// until the writer's or an import's commit; the push worker folds them
    /// as it goes, so a read sums a few rows. Replicas fold disjoint rows
    /// (SKIP LOCKED); a fold that loses a deadlock on the four counts is
    /// rolled back whole and its rows are folded next time. SQLite keeps
    /// its counts directly (one writer at a time): nothing to do.
    pub async fn fold_push_counts(&self) -> DbResult<u64> {
        const FOLD: &str = "WITH moved AS (\
                DELETE FROM ses_push_count_changes WHERE id IN (\
                    SELECT id FROM ses_push_count_changes ORDER BY id LIMIT 10000 \
                    FOR UPDATE SKIP LOCKED) \
                RETURNING state, n), \
            sums AS (SELECT state, SUM(n) AS n FROM moved GROUP BY state) \
            UPDATE ses_push_counts AS c SET n = c.n + sums.n FROM sums WHERE c.state = sums.state";
        match &self.db {
            Db::Sqlite(_) => Ok(0),
            Db::Postgres(pool) => Ok(sqlx::query(FOLD).execute(pool).await?.rows_affected()),
        }
    }

    /// One address's push, if it has one.
    pub async fn push_row(&self, email: &str) -> DbResult<Option<PushRow>> {
        const SQL: &str = "SELECT email, action, state, attempts, sent_reason, done_at, last_error, last_error_at \
            FROM ses_suppression_sync WHERE email = $1";
        Ok(on_db!(&self.db, pool => sqlx::query_as(SQL).bind(email).fetch_optional(pool).await)?)
    }
}
