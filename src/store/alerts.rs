//! The alert outbox: an alert is written in the transaction of its cause;
//! the process that delivers it decides the channels. A delivery worker
//! adds one `alert_deliveries` row per channel it has for each recent
//! alert that lacks one, so an alert raised where no channel was configured
//! (a `bouncer pause` from a bare shell) goes out from `serve`. Workers on
//! any replica claim due deliveries with a lease (`FOR UPDATE SKIP LOCKED`
//! on PostgreSQL; SQLite serializes writers), deliver, and mark them done
//! or due again later. A restart or a dead webhook loses nothing.

use serde::Serialize;

use super::text::storable;
use super::{Db, DbResult, Store, Tx, on_db, on_tx};
use crate::time::Timestamp;

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

/// An alert sent this long after it was raised says when it was raised:
/// a channel configured later (or a webhook back after an outage) gets
/// the alerts of the last days, and "sending paused" read days after the
/// pause is history, not news.
pub const LATE_AFTER: time::Duration = time::Duration::minutes(5);

impl Alert {
    /// The text as sent at `now`: a late alert gains a line saying when it
    /// was raised.
    pub fn text_at(&self, now: Timestamp) -> std::borrow::Cow<'_, str> {
        let late = time::Duration::milliseconds(
            now.unix_millis()
                .saturating_sub(self.created_at.unix_millis()),
        );
        if late < LATE_AFTER {
            return self.text.as_str().into();
        }
        format!(
            "{}\n(raised at {}, sent {} later)",
            self.text,
            self.created_at,
            how_long(late)
        )
        .into()
    }

    /// The text without the Slack emoji code it opens with (`:warning: `):
    /// the webhook posts `text` for Slack and its kin to draw the emoji, but
    /// in an email the code is read as written.
    pub fn plain_text(&self) -> &str {
        without_emoji_code(&self.text)
    }
}

/// Minutes up to two hours, hours up to two days, then days.
fn how_long(d: time::Duration) -> String {
    if d < time::Duration::hours(2) {
        format!("{} min", d.whole_minutes())
    } else if d < time::Duration::days(2) {
        format!("{} h", d.whole_hours())
    } else {
        format!("{} days", d.whole_days())
    }
}

fn without_emoji_code(text: &str) -> &str {
    let Some(rest) = text.strip_prefix(':') else {
        return text;
    };
    let Some((name, after)) = rest.split_once(": ") else {
        return text;
    };
    let is_code = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_+-".contains(&b));
    if is_code { after } else { text }
}

/// A delivery claimed by this worker until its lease ends.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub alert_id: i64,
    pub channel: String,
    pub attempts: i64,
}

/// Writes the alert; it is delivered by whichever process has channels.
pub async fn enqueue(tx: &mut Tx<'_>, draft: &AlertDraft, now: Timestamp) -> DbResult<i64> {
    const ALERT: &str = "INSERT INTO alerts (kind, subject, text, details_json, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id";
    let details = draft.details.to_string();
    let id: i64 = on_tx!(tx, conn => sqlx::query_scalar(ALERT)
        .bind(draft.kind)
        .bind(storable(&draft.subject).as_ref())
        .bind(storable(&draft.text).as_ref())
        .bind(&details)
        .bind(now)
        .fetch_one(conn)
        .await)?;
    tracing::warn!(alert = id, kind = draft.kind, subject = %draft.subject, "admin alert raised");
    Ok(id)
}

impl Store {
    /// Gives every alert raised at or after `since` a delivery on `channel`
    /// if it has none yet; returns how many were added. A cheap read first,
    /// so that idle workers take no write lock.
    pub async fn plan_deliveries(
        &self,
        channel: &str,
        since: Timestamp,
        now: Timestamp,
    ) -> DbResult<u64> {
        const MISSING: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM alerts a WHERE a.created_at >= $1 \
            AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = a.id AND d.channel = $2) LIMIT 1) AS missing";
        const ADD: &str = "INSERT INTO alert_deliveries (alert_id, channel, next_attempt_at) \
            SELECT a.id, $2, $3 FROM alerts a WHERE a.created_at >= $1 \
            AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = a.id AND d.channel = $2) \
            ON CONFLICT (alert_id, channel) DO NOTHING";
        let missing: i64 = on_db!(&self.db, pool => sqlx::query_scalar(MISSING)
            .bind(since)
            .bind(channel)
            .fetch_one(pool)
            .await)?;
        if missing == 0 {
            return Ok(0);
        }
        Ok(on_db!(&self.db, pool => sqlx::query(ADD)
            .bind(since)
            .bind(channel)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?)
    }

    /// Whether any delivery is due (a read, so that idle workers take no
    /// write lock).
    pub async fn deliveries_due(&self, now: Timestamp) -> DbResult<bool> {
        const SQL: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM alert_deliveries WHERE delivered_at IS NULL \
            AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until < $1) LIMIT 1) AS due";
        let n: i64 =
            on_db!(&self.db, pool => sqlx::query_scalar(SQL).bind(now).fetch_one(pool).await)?;
        Ok(n > 0)
    }

    /// Claims the oldest due delivery on one of `channels` for `lease`.
    pub async fn claim_delivery(
        &self,
        channels: &[&str],
        now: Timestamp,
        lease: time::Duration,
    ) -> DbResult<Option<Claimed>> {
        // The channel list is short and fixed: a JSON array both databases
        // can take apart.
        const SQLITE: &str = "UPDATE alert_deliveries SET lease_until = $1, attempts = attempts + 1 \
            WHERE id = (SELECT id FROM alert_deliveries WHERE delivered_at IS NULL AND next_attempt_at <= $2 \
                        AND (lease_until IS NULL OR lease_until < $2) \
                        AND channel IN (SELECT value FROM json_each($3)) ORDER BY id LIMIT 1) \
            RETURNING id, alert_id, channel, attempts";
        const POSTGRES: &str = "UPDATE alert_deliveries SET lease_until = $1, attempts = attempts + 1 \
            WHERE id = (SELECT id FROM alert_deliveries WHERE delivered_at IS NULL AND next_attempt_at <= $2 \
                        AND (lease_until IS NULL OR lease_until < $2) \
                        AND channel IN (SELECT jsonb_array_elements_text($3::jsonb)) \
                        ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
            RETURNING id, alert_id, channel, attempts";
        let until = now.saturating_add(lease);
        let wanted = serde_json::json!(channels).to_string();
        Ok(match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_as(SQLITE)
                    .bind(until)
                    .bind(now)
                    .bind(wanted)
                    .fetch_optional(pool)
                    .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_as(POSTGRES)
                    .bind(until)
                    .bind(now)
                    .bind(wanted)
                    .fetch_optional(pool)
                    .await?
            }
        })
    }

    pub async fn alert(&self, id: i64) -> DbResult<Option<Alert>> {
        const SQL: &str =
            "SELECT id, kind, subject, text, details_json, created_at FROM alerts WHERE id = $1";
        Ok(on_db!(&self.db, pool => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await)?)
    }

    pub async fn delivery_done(&self, id: i64, now: Timestamp) -> DbResult<()> {
        const SQL: &str = "UPDATE alert_deliveries SET delivered_at = $2, lease_until = NULL, last_error = NULL WHERE id = $1";
        on_db!(&self.db, pool => sqlx::query(SQL).bind(id).bind(now).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn delivery_failed(&self, id: i64, error: &str, retry_at: Timestamp) -> DbResult<()> {
        const SQL: &str = "UPDATE alert_deliveries SET lease_until = NULL, last_error = $2, next_attempt_at = $3 WHERE id = $1";
        on_db!(&self.db, pool => sqlx::query(SQL).bind(id).bind(storable(error).as_ref()).bind(retry_at).execute(pool).await.map(|_| ()))?;
        Ok(())
    }
}

/// An alert as people read it: its deliveries, one per channel.
#[derive(Debug, Clone, Serialize)]
pub struct AlertWithDeliveries {
    pub id: i64,
    pub kind: String,
    pub subject: String,
    pub text: String,
    pub details: serde_json::Value,
    pub created_at: Timestamp,
    pub deliveries: Vec<Delivery>,
}

/// Where one alert stands on one channel.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Delivery {
    #[serde(skip)]
    pub alert_id: i64,
    pub channel: String,
    pub attempts: i64,
    pub delivered_at: Option<Timestamp>,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
}

impl Store {
    /// The newest `limit` alerts, newest first, each with its deliveries:
    /// two queries, both by primary key or unique index.
    pub async fn recent_alerts(&self, limit: i64) -> DbResult<Vec<AlertWithDeliveries>> {
        const ALERTS: &str = "SELECT id, kind, subject, text, details_json, created_at FROM alerts \
            ORDER BY id DESC LIMIT $1";
        const DELIVERIES: &str = "SELECT alert_id, channel, attempts, delivered_at, next_attempt_at, last_error \
            FROM alert_deliveries WHERE alert_id >= $1 AND alert_id <= $2 ORDER BY alert_id, channel";
        let alerts: Vec<Alert> =
            on_db!(&self.db, pool => sqlx::query_as(ALERTS).bind(limit).fetch_all(pool).await)?;
        let (Some(newest), Some(oldest)) = (alerts.first(), alerts.last()) else {
            return Ok(Vec::new());
        };
        let deliveries: Vec<Delivery> = on_db!(&self.db, pool => sqlx::query_as(DELIVERIES)
            .bind(oldest.id)
            .bind(newest.id)
            .fetch_all(pool)
            .await)?;
        Ok(alerts
            .into_iter()
            .map(|a| AlertWithDeliveries {
                deliveries: deliveries
                    .iter()
                    .filter(|d| d.alert_id == a.id)
                    .cloned()
                    .collect(),
                details: serde_json::from_str(&a.details_json).unwrap_or(serde_json::Value::Null),
                id: a.id,
                kind: a.kind,
                subject: a.subject,
                text: a.text,
                created_at: a.created_at,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::{Alert, LATE_AFTER, how_long, without_emoji_code};
    use crate::time::Timestamp;

    #[test]
    fn an_alert_sent_late_says_when_it_was_raised() {
        let raised = Timestamp::parse_rfc3339("2026-12-07T01:27:39.123Z").expect("time");
        let alert = Alert {
            id: 1,
            kind: "paused".into(),
            subject: "s".into(),
            text: ":octagonal_sign: Sending paused".into(),
            details_json: "{}".into(),
            created_at: raised,
        };
        let at = |d: time::Duration| alert.text_at(raised.saturating_add(d)).into_owned();
        let just_before = LATE_AFTER - time::Duration::milliseconds(1);
        assert_eq!(at(just_before), ":octagonal_sign: Sending paused");
        assert_eq!(
            at(LATE_AFTER),
            ":octagonal_sign: Sending paused\n(raised at 2026-12-07T01:27:39.123Z, sent 5 min later)"
        );
        assert_eq!(how_long(time::Duration::minutes(119)), "119 min");
        assert_eq!(how_long(time::Duration::hours(2)), "2 h");
        assert_eq!(how_long(time::Duration::hours(47)), "47 h");
        assert_eq!(how_long(time::Duration::days(6)), "6 days");
    }

    #[test]
    fn the_leading_emoji_code_is_left_out_and_nothing_else() {
        assert_eq!(
            without_emoji_code(":rotating_light: bouncer paused sending: x"),
            "bouncer paused sending: x"
        );
        assert_eq!(without_emoji_code(":+1: ok"), "ok");
        // Not a code: kept as written.
        for text in [
            "bouncer paused sending: rate 6%",
            ":: empty",
            ":Warning: capital",
            ":two words: here",
            ":no_space:after",
            "",
        ] {
            assert_eq!(without_emoji_code(text), text);
        }
    }
}
