//! Retention: what is deleted when it has served its purpose, so that the
//! database does not grow forever. The suppression list and its removal
//! audit are never pruned; the sending state has one row.
//!
//! - SNS messages, SES events and counted sends older than `RETENTION_DAYS`
//!   (never sooner than the guard's maximum age, which counts sends, nor
//!   than the freshness window, which the MessageId dedupe covers);
//! - hourly rate buckets older than the guard's maximum age (never read);
//! - delivered alerts older than `RETENTION_DAYS`;
//! - pushes to the SES suppression list a week after SES confirmed them
//!   (refused and pending ones stay: they still need an operator or a call).
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
}

/// How long a finished push to SES stays visible in the outbox.
const PUSHES_KEPT: time::Duration = time::Duration::days(7);

/// `DELETE` in chunks (both databases lack a portable `DELETE ... LIMIT`).
const MESSAGES: &str = "DELETE FROM sns_messages WHERE message_id IN \
    (SELECT message_id FROM sns_messages WHERE received_at < $1 LIMIT $2)";
const EVENTS: &str = "DELETE FROM feedback_events WHERE id IN \
    (SELECT id FROM feedback_events WHERE received_at < $1 LIMIT $2)";
const VOLUME: &str = "DELETE FROM rate_volume WHERE (mail_id, recipient) IN \
    (SELECT mail_id, recipient FROM rate_volume WHERE seen_at < $1 LIMIT $2)";
const BUCKETS: &str = "DELETE FROM rate_buckets WHERE bucket_start IN \
    (SELECT bucket_start FROM rate_buckets WHERE bucket_start < $1 LIMIT $2)";
const DELIVERIES: &str = "DELETE FROM alert_deliveries WHERE alert_id IN \
    (SELECT id FROM alerts WHERE created_at < $1 LIMIT $2) \
    AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = alert_deliveries.alert_id AND d.delivered_at IS NULL)";
const ALERTS: &str = "DELETE FROM alerts WHERE id IN \
    (SELECT id FROM alerts WHERE created_at < $1 \
     AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = alerts.id) LIMIT $2)";

const PUSHES: &str = "DELETE FROM ses_suppression_sync WHERE email IN \
    (SELECT email FROM ses_suppression_sync WHERE state IN ('done', 'skipped') AND done_at < $1 LIMIT $2)";

impl Store {
    async fn delete_before(&self, sql: &'static str, before: Timestamp) -> DbResult<u64> {
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
    /// message the endpoint accepts.
    pub async fn prune(
        &self,
        now: Timestamp,
        retention: time::Duration,
        guard_age: time::Duration,
        freshness: time::Duration,
    ) -> DbResult<Pruned> {
        // One day more than each minimum, for the hour boundaries.
        let keep = retention.max(guard_age).max(freshness) + time::Duration::DAY;
        let before = now.saturating_sub(keep);
        let buckets_before = now.saturating_sub(guard_age + time::Duration::DAY);
        let alerts_before = now.saturating_sub(retention.max(time::Duration::DAY));
        Ok(Pruned {
            sns_messages: self.delete_before(MESSAGES, before).await?,
            feedback_events: self.delete_before(EVENTS, before).await?,
            rate_volume: self.delete_before(VOLUME, before).await?,
            rate_buckets: self.delete_before(BUCKETS, buckets_before).await?,
            alerts: {
                self.delete_before(DELIVERIES, alerts_before).await?;
                self.delete_before(ALERTS, alerts_before).await?
            },
            ses_pushes: self
                .delete_before(PUSHES, now.saturating_sub(PUSHES_KEPT))
                .await?,
        })
    }
}
