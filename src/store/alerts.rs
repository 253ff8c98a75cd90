//! The alert outbox: an alert is written in the transaction of its cause,
//! with one delivery row per configured channel; workers on any replica
//! claim due deliveries with a lease (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL; SQLite serializes writers), deliver, and mark them done or
//! due again later. A restart or a dead webhook loses nothing.

use serde::Serialize;

use super::{Db, Store, Timestamp, Tx, on_db, on_tx};

/// An alert about to be written.
#[derive(Debug, Clone)]
pub struct AlertDraft {
    pub kind: &'static str,
    pub subject: String,
    pub text: String,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Alert {
    pub id: i64,
    pub kind: String,
    pub subject: String,
    pub text: String,
    pub details_json: String,
    pub created_at: Timestamp,
}

/// A delivery claimed by this worker until `lease_until`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub alert_id: i64,
    pub channel: String,
    pub attempts: i64,
}

pub async fn enqueue(
    tx: &mut Tx,
    draft: &AlertDraft,
    channels: &[&'static str],
    now: Timestamp,
) -> Result<i64, sqlx::Error> {
    const ALERT: &str = "INSERT INTO alerts (kind, subject, text, details_json, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id";
    const DELIVERY: &str =
        "INSERT INTO alert_deliveries (alert_id, channel, next_attempt_at) VALUES ($1, $2, $3)";
    let details = draft.details.to_string();
    let id: i64 = on_tx!(tx, conn => sqlx::query_scalar(ALERT)
        .bind(draft.kind)
        .bind(&draft.subject)
        .bind(&draft.text)
        .bind(&details)
        .bind(now)
        .fetch_one(conn)
        .await)?;
    for channel in channels {
        on_tx!(tx, conn => sqlx::query(DELIVERY).bind(id).bind(*channel).bind(now).execute(conn).await.map(|_| ()))?;
    }
    tracing::warn!(alert = id, kind = draft.kind, subject = %draft.subject, "admin alert raised");
    Ok(id)
}

impl Store {
    /// Whether any delivery is due (a read, so that idle workers take no
    /// write lock).
    pub async fn deliveries_due(&self, now: Timestamp) -> Result<bool, sqlx::Error> {
        const SQL: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM alert_deliveries WHERE delivered_at IS NULL \
            AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until < $1) LIMIT 1) AS due";
        let n: i64 =
            on_db!(&self.db, pool => sqlx::query_scalar(SQL).bind(now).fetch_one(pool).await)?;
        Ok(n > 0)
    }

    /// Claims the oldest due delivery for `lease`, or `None`.
    pub async fn claim_delivery(
        &self,
        now: Timestamp,
        lease: time::Duration,
    ) -> Result<Option<Claimed>, sqlx::Error> {
        const SQLITE: &str = "UPDATE alert_deliveries SET lease_until = $1, attempts = attempts + 1 \
            WHERE id = (SELECT id FROM alert_deliveries WHERE delivered_at IS NULL AND next_attempt_at <= $2 \
                        AND (lease_until IS NULL OR lease_until < $2) ORDER BY id LIMIT 1) \
            RETURNING id, alert_id, channel, attempts";
        const POSTGRES: &str = "UPDATE alert_deliveries SET lease_until = $1, attempts = attempts + 1 \
            WHERE id = (SELECT id FROM alert_deliveries WHERE delivered_at IS NULL AND next_attempt_at <= $2 \
                        AND (lease_until IS NULL OR lease_until < $2) ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
            RETURNING id, alert_id, channel, attempts";
        let until = now.saturating_add(lease);
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_as(SQLITE)
                    .bind(until)
                    .bind(now)
                    .fetch_optional(pool)
                    .await
            }
            Db::Postgres(pool) => {
                sqlx::query_as(POSTGRES)
                    .bind(until)
                    .bind(now)
                    .fetch_optional(pool)
                    .await
            }
        }
    }

    pub async fn alert(&self, id: i64) -> Result<Option<Alert>, sqlx::Error> {
        const SQL: &str =
            "SELECT id, kind, subject, text, details_json, created_at FROM alerts WHERE id = $1";
        on_db!(&self.db, pool => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await)
    }

    pub async fn delivery_done(&self, id: i64, now: Timestamp) -> Result<(), sqlx::Error> {
        const SQL: &str = "UPDATE alert_deliveries SET delivered_at = $2, lease_until = NULL, last_error = NULL WHERE id = $1";
        on_db!(&self.db, pool => sqlx::query(SQL).bind(id).bind(now).execute(pool).await.map(|_| ()))
    }

    pub async fn delivery_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Timestamp,
    ) -> Result<(), sqlx::Error> {
        const SQL: &str = "UPDATE alert_deliveries SET lease_until = NULL, last_error = $2, next_attempt_at = $3 WHERE id = $1";
        on_db!(&self.db, pool => sqlx::query(SQL).bind(id).bind(error).bind(retry_at).execute(pool).await.map(|_| ()))
    }
}
