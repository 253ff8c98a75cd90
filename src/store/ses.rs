//! Acting at SES, persisted: the sending intent per target (`ses_sending`),
//! written in the transaction of the pause or resume that asks for it; the
//! push outbox (`ses_suppression_sync`), filled by triggers on
//! `suppressions`; the one `ses_settings` row that gates those triggers;
//! and rows imported from the SES list. Workers on any replica claim work
//! with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite serializes
//! writers), so that each intent is carried out once.

use serde::Serialize;

use super::conn::Raw;
use super::text::storable;
use super::{Db, DbResult, Store, Tx, on_db, on_tx};
use crate::address::EmailAddress;
use crate::time::Timestamp;

/// Where sending is paused and resumed at SES.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SendingTarget {
    /// The whole account in the configured region.
    Account,
    ConfigurationSet(String),
}

const SET_PREFIX: &str = "configuration-set:";

impl SendingTarget {
    /// The key stored in `ses_sending.target`.
    pub fn key(&self) -> String {
        match self {
            SendingTarget::Account => "account".into(),
            SendingTarget::ConfigurationSet(name) => format!("{SET_PREFIX}{name}"),
        }
    }

    pub fn from_key(key: &str) -> Option<SendingTarget> {
        if key == "account" {
            return Some(SendingTarget::Account);
        }
        key.strip_prefix(SET_PREFIX)
            .filter(|name| !name.is_empty())
            .map(|name| SendingTarget::ConfigurationSet(name.to_owned()))
    }
}

/// Writes the intent that sending at SES be `enabled`, in the transaction
/// of the pause or resume: for each configured target, and for every target
/// a `serve` with SES pausing on has set up (so a `bouncer pause` run
/// without the SES settings is carried out too). The latest intent wins.
pub async fn record_sending_intent(
    tx: &mut Tx<'_>,
    targets: &[SendingTarget],
    enabled: bool,
    now: Timestamp,
) -> DbResult<()> {
    const ADD: &str = "INSERT INTO ses_sending (target, desired_enabled, state, requested_at) \
        VALUES ($1, $2, 'pending', $3) ON CONFLICT (target) DO NOTHING";
    const WANT: &str = "UPDATE ses_sending SET desired_enabled = $1, seq = seq + 1, state = 'pending', \
        requested_at = $2, attempts = 0, next_attempt_at = NULL";
    for target in targets {
        on_tx!(tx, conn => sqlx::query(ADD).bind(target.key()).bind(enabled).bind(now).execute(conn).await.map(|_| ()))?;
    }
    on_tx!(tx, conn => sqlx::query(WANT).bind(enabled).bind(now).execute(conn).await.map(|_| ()))?;
    Ok(())
}

/// One target's row, as `status` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SendingTargetRow {
    pub target: String,
    pub desired_enabled: bool,
    pub seq: i64,
    pub state: String,
    pub requested_at: Timestamp,
    pub attempts: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub confirmed_enabled: Option<bool>,
    pub confirmed_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
}

/// An intent claimed by this worker until its lease ends.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedIntent {
    pub target: String,
    pub desired_enabled: bool,
    pub seq: i64,
    pub attempts: i64,
}

/// A failed attempt as recorded: whether it is still the latest intent and
/// whether its failure was alerted yet.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct FailedIntent {
    pub seq: i64,
    pub attempts: i64,
    pub alerted_seq: i64,
}

/// Records a failed attempt at intent `seq` of `target`; due again at
/// `retry_at` unless a newer intent replaced it (that one is due now).
pub async fn record_sending_failure(
    tx: &mut Tx<'_>,
    target: &str,
    seq: i64,
    error: &str,
    retry_at: Timestamp,
    now: Timestamp,
) -> DbResult<Option<FailedIntent>> {
    const SQL: &str = "UPDATE ses_sending SET lease_until = NULL, last_error = $3, last_error_at = $5, \
        next_attempt_at = CASE WHEN seq = $2 THEN $4 ELSE next_attempt_at END \
        WHERE target = $1 RETURNING seq, attempts, alerted_seq";
    Ok(on_tx!(tx, conn => sqlx::query_as(SQL)
        .bind(target)
        .bind(seq)
        .bind(storable(error).as_ref())
        .bind(retry_at)
        .bind(now)
        .fetch_optional(conn)
        .await)?)
}

/// The failure of intent `seq` has been alerted: not again for it.
pub async fn mark_sending_alerted(tx: &mut Tx<'_>, target: &str, seq: i64) -> DbResult<()> {
    const SQL: &str = "UPDATE ses_sending SET alerted_seq = $2 WHERE target = $1";
    on_tx!(tx, conn => sqlx::query(SQL).bind(target).bind(seq).execute(conn).await.map(|_| ()))?;
    Ok(())
}

/// Whether an alert of `kind` was raised at or after `since` (refusals are
/// alerted at most once an hour, not once per address).
pub async fn alerted_since(tx: &mut Tx<'_>, kind: &str, since: Timestamp) -> DbResult<bool> {
    const SQL: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM alerts WHERE kind = $1 AND created_at >= $2 LIMIT 1) AS recent";
    let n: i64 =
        on_tx!(tx, conn => sqlx::query_scalar(SQL).bind(kind).bind(since).fetch_one(conn).await)?;
    Ok(n > 0)
}

/// Keeps the last permission check (JSON) for `status`.
pub async fn record_ses_check(tx: &mut Tx<'_>, json: &str, now: Timestamp) -> DbResult<()> {
    const SQL: &str = "UPDATE ses_settings SET check_json = $1, checked_at = $2 WHERE id = 1";
    on_tx!(tx, conn => sqlx::query(SQL).bind(json).bind(now).execute(conn).await.map(|_| ()))?;
    Ok(())
}

/// How a lease for a check came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckLease {
    /// Held until released: no worker acts on the target meanwhile.
    Held,
    /// A worker is acting on the target now.
    Busy,
    /// No row: no `serve` has set the target up, so none acts on it.
    NoRow,
}

impl Store {
    /// Makes the rows match the configuration at start-up: each configured
    /// target gets a row wanting what `sending_state` says (a new target is
    /// left alone while sending is active, and paused at once while it is
    /// paused), and a pending intent is due at once whatever its backoff;
    /// with `retire`, rows of targets no longer configured go (bouncer stops
    /// acting there).
    pub async fn reconcile_sending_targets(
        &self,
        targets: &[SendingTarget],
        retire: bool,
        now: Timestamp,
    ) -> DbResult<()> {
        const STATE: &str = "SELECT state FROM sending_state WHERE id = 1";
        const LOCKED: &str = "SELECT state FROM sending_state WHERE id = 1 FOR UPDATE";
        const ADD: &str = "INSERT INTO ses_sending (target, desired_enabled, state, requested_at) \
            VALUES ($1, $2, CASE WHEN $2 THEN 'idle' ELSE 'pending' END, $3) ON CONFLICT (target) DO UPDATE SET \
            desired_enabled = excluded.desired_enabled, seq = ses_sending.seq + 1, state = 'pending', \
            requested_at = excluded.requested_at, attempts = 0, next_attempt_at = NULL \
            WHERE ses_sending.desired_enabled <> excluded.desired_enabled";
        // A start is when an operator has fixed what made SES fail (a
        // permission, a region): a pending intent is tried at once instead
        // of waiting out up to five minutes of stored backoff. (Rows that
        // are not pending have no next attempt; older versions left one.)
        const NOW: &str = "UPDATE ses_sending SET next_attempt_at = NULL WHERE target = $1";
        const TARGETS: &str = "SELECT target FROM ses_sending";
        const RETIRE: &str = "DELETE FROM ses_sending WHERE target = $1";
        let mut conn = self.conn().await?;
        let mut tx = conn.begin().await?;
        let sql = if tx.is_sqlite() { STATE } else { LOCKED };
        let state: String = on_tx!(&mut tx, conn => sqlx::query_scalar(sql).fetch_one(conn).await)?;
        let enabled = state != "paused";
        for target in targets {
            on_tx!(&mut tx, conn => sqlx::query(ADD).bind(target.key()).bind(enabled).bind(now).execute(conn).await.map(|_| ()))?;
            on_tx!(&mut tx, conn => sqlx::query(NOW).bind(target.key()).execute(conn).await.map(|_| ()))?;
        }
        if retire {
            let keys: Vec<String> = targets.iter().map(SendingTarget::key).collect();
            let rows: Vec<String> =
                on_tx!(&mut tx, conn => sqlx::query_scalar(TARGETS).fetch_all(conn).await)?;
            for old in rows.iter().filter(|t| !keys.contains(t)) {
                tracing::info!(target = %old, "no longer pausing at this SES target");
                on_tx!(&mut tx, conn => sqlx::query(RETIRE).bind(old).execute(conn).await.map(|_| ()))?;
            }
        }
        tx.commit().await
    }

    pub async fn sending_targets(&self) -> DbResult<Vec<SendingTargetRow>> {
        const SQL: &str = "SELECT target, desired_enabled, seq, state, requested_at, attempts, next_attempt_at, \
            confirmed_enabled, confirmed_at, last_error, last_error_at FROM ses_sending ORDER BY target";
        Ok(on_db!(&self.db, pool => sqlx::query_as(SQL).fetch_all(pool).await)?)
    }

    /// Whether any of `targets` has an intent due (a read, so that idle
    /// workers take no write lock).
    pub async fn sending_intents_due(&self, targets: &[String], now: Timestamp) -> DbResult<bool> {
        Ok(self.sending_targets().await?.iter().any(|r| {
            r.state == "pending"
                && targets.contains(&r.target)
                && r.next_attempt_at.is_none_or(|at| at <= now)
        }))
    }

    /// Claims the oldest due intent among `targets` for `lease`.
    pub async fn claim_sending_intent(
        &self,
        targets: &[String],
        now: Timestamp,
        lease: time::Duration,
    ) -> DbResult<Option<ClaimedIntent>> {
        const SQLITE: &str = "UPDATE ses_sending SET lease_until = $1, attempts = attempts + 1 \
            WHERE target = (SELECT target FROM ses_sending WHERE state = 'pending' \
                AND (next_attempt_at IS NULL OR next_attempt_at <= $2) \
                AND (lease_until IS NULL OR lease_until < $2) \
                AND target IN (SELECT value FROM json_each($3)) ORDER BY requested_at LIMIT 1) \
            RETURNING target, desired_enabled, seq, attempts";
        const POSTGRES: &str = "UPDATE ses_sending SET lease_until = $1, attempts = attempts + 1 \
            WHERE target = (SELECT target FROM ses_sending WHERE state = 'pending' \
                AND (next_attempt_at IS NULL OR next_attempt_at <= $2) \
                AND (lease_until IS NULL OR lease_until < $2) \
                AND target IN (SELECT jsonb_array_elements_text($3::jsonb)) \
                ORDER BY requested_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
            RETURNING target, desired_enabled, seq, attempts";
        let until = now.saturating_add(lease);
        let wanted = serde_json::json!(targets).to_string();
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

    /// SES confirmed sending `enabled` at `target`; the intent `seq` is done
    /// unless a newer one replaced it meanwhile. Returns whether it is.
    pub async fn sending_confirmed(
        &self,
        target: &str,
        seq: i64,
        enabled: bool,
        now: Timestamp,
    ) -> DbResult<bool> {
        const SQL: &str = "UPDATE ses_sending SET lease_until = NULL, confirmed_enabled = $3, confirmed_at = $4, \
            state = CASE WHEN seq = $2 THEN 'confirmed' ELSE state END, \
            next_attempt_at = CASE WHEN seq = $2 THEN NULL ELSE next_attempt_at END \
            WHERE target = $1 RETURNING state";
        let state: Option<String> = on_db!(&self.db, pool => sqlx::query_scalar(SQL)
            .bind(target)
            .bind(seq)
            .bind(enabled)
            .bind(now)
            .fetch_optional(pool)
            .await)?;
        Ok(state.as_deref() == Some("confirmed"))
    }

    /// Takes `target`'s lease for a permission check's dry call, so that no
    /// worker writes between the check's read and its write-back.
    pub async fn lease_target_for_check(
        &self,
        target: &str,
        now: Timestamp,
        lease: time::Duration,
    ) -> DbResult<CheckLease> {
        const EXISTS: &str = "SELECT COUNT(*) FROM ses_sending WHERE target = $1";
        const LEASE: &str = "UPDATE ses_sending SET lease_until = $2 WHERE target = $1 \
            AND (lease_until IS NULL OR lease_until < $3)";
        let n: i64 = on_db!(&self.db, pool => sqlx::query_scalar(EXISTS).bind(target).fetch_one(pool).await)?;
        if n == 0 {
            return Ok(CheckLease::NoRow);
        }
        let taken = on_db!(&self.db, pool => sqlx::query(LEASE)
            .bind(target)
            .bind(now.saturating_add(lease))
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(if taken == 1 {
            CheckLease::Held
        } else {
            CheckLease::Busy
        })
    }

    pub async fn release_target(&self, target: &str) -> DbResult<()> {
        const SQL: &str = "UPDATE ses_sending SET lease_until = NULL WHERE target = $1";
        on_db!(&self.db, pool => sqlx::query(SQL).bind(target).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Turns the push triggers on or off (`serve` at start-up).
    pub async fn set_ses_push(&self, on: bool, now: Timestamp) -> DbResult<()> {
        const SQL: &str =
            "UPDATE ses_settings SET push_suppressions = $1, updated_at = $2 WHERE id = 1";
        on_db!(&self.db, pool => sqlx::query(SQL).bind(on).bind(now).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Whether the SES settings a `serve` wrote at start-up are still
    /// there. A database made again (and migrated) holds the migration's
    /// row, which no `serve` has written: pushing off, `updated_at` empty.
    /// No row at all is not such a database (the migration inserts it),
    /// and there is no row to write back into: counted as there.
    pub async fn ses_settings_written(&self) -> DbResult<bool> {
        const SQL: &str = "SELECT updated_at IS NOT NULL FROM ses_settings WHERE id = 1";
        let written: Option<bool> =
            on_db!(&self.db, pool => sqlx::query_scalar(SQL).fetch_optional(pool).await)?;
        Ok(written.unwrap_or(true))
    }

    /// Turns pushing on again in a database that lost the setting (made
    /// again under a running `serve`), and queues for SES what the list
    /// changed meanwhile, when the triggers were off: every suppression
    /// (in such a database none has been pushed) and every removal of an
    /// address not listed again that SES has not confirmed. Mirrors the
    /// triggers (migration 0005): rows imported from SES are there
    /// already. Returns the puts and the deletes queued, or `None` when the
    /// setting was written meanwhile (another replica wrote it back).
    pub async fn restore_ses_push(&self, now: Timestamp) -> DbResult<Option<(u64, u64)>> {
        const ON: &str = "UPDATE ses_settings SET push_suppressions = $1, updated_at = $2 \
            WHERE id = 1 AND updated_at IS NULL";
        // In key order, as the triggers and the writer take the rows.
        const PUTS: &str = "INSERT INTO ses_suppression_sync (email, action, state, changed_at) \
            SELECT email, 'put', 'pending', $1 FROM suppressions WHERE source <> 'ses-account' \
            ORDER BY email ON CONFLICT (email) DO NOTHING";
        const DELETES: &str = "INSERT INTO ses_suppression_sync (email, action, state, changed_at) \
            SELECT DISTINCT r.email, 'delete', 'pending', $1 FROM suppression_removals AS r \
            WHERE r.ses_removed_at IS NULL \
            AND NOT EXISTS (SELECT 1 FROM suppressions AS s WHERE s.email = r.email) \
            ORDER BY r.email ON CONFLICT (email) DO NOTHING";
        let mut conn = self.conn().await?;
        let mut tx = conn.begin().await?;
        if let Raw::Postgres(conn) = tx.raw() {
            // A change whose trigger read pushing as off and that commits
            // after the look-ups below began would be in neither: the
            // lock waits for changes under way and holds new ones until
            // this commits, when their triggers see pushing on. (SQLite
            // writes one transaction at a time.)
            sqlx::query("LOCK TABLE suppressions IN SHARE MODE")
                .execute(conn)
                .await?;
        }
        let turned_on = on_tx!(&mut tx, conn => sqlx::query(ON).bind(true).bind(now).execute(conn).await.map(|r| r.rows_affected()))?;
        if turned_on != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let puts = on_tx!(&mut tx, conn => sqlx::query(PUTS).bind(now).execute(conn).await.map(|r| r.rows_affected()))?;
        let deletes = on_tx!(&mut tx, conn => sqlx::query(DELETES).bind(now).execute(conn).await.map(|r| r.rows_affected()))?;
        tx.commit().await?;
        Ok(Some((puts, deletes)))
    }

    pub async fn ses_push_on(&self) -> DbResult<bool> {
        const SQL: &str = "SELECT push_suppressions FROM ses_settings WHERE id = 1";
        Ok(on_db!(&self.db, pool => sqlx::query_scalar(SQL).fetch_one(pool).await)?)
    }

    pub async fn last_ses_check(&self) -> DbResult<Option<(Timestamp, String)>> {
        const SQL: &str = "SELECT checked_at, check_json FROM ses_settings WHERE id = 1";
        let row: Option<(Option<Timestamp>, Option<String>)> =
            on_db!(&self.db, pool => sqlx::query_as(SQL).fetch_optional(pool).await)?;
        Ok(match row {
            Some((Some(at), Some(json))) => Some((at, json)),
            _ => None,
        })
    }

    /// Adds addresses listed at SES that bouncer does not have (source
    /// `ses-account`); a row bouncer has is left exactly as it is. Returns
    /// how many were added.
    pub async fn import_from_ses(&self, rows: &[ListedAtSes]) -> DbResult<u64> {
        const SQL: &str = "INSERT INTO suppressions \
            (email, reason, first_seen_at, last_seen_at, event_count, source, note) \
            VALUES ($1, $2, $3, $3, 1, 'ses-account', $4) ON CONFLICT (email) DO NOTHING";
        let mut conn = self.conn().await?;
        let mut tx = conn.begin().await?;
        let mut added = 0;
        for row in rows {
            let note = format!(
                "on the SES account-level suppression list ({})",
                row.ses_reason
            );
            added += on_tx!(&mut tx, conn => sqlx::query(SQL)
                .bind(row.email.as_str())
                .bind(row.reason)
                .bind(row.last_update)
                .bind(note)
                .execute(conn)
                .await
                .map(|r| r.rows_affected()))?;
        }
        tx.commit().await?;
        Ok(added)
    }
}

/// One address of the SES account-level list, for an import.
#[derive(Debug, Clone)]
pub struct ListedAtSes {
    pub email: EmailAddress,
    /// bouncer's reason: `bounce` or `complaint`.
    pub reason: &'static str,
    /// SES's: `BOUNCE` or `COMPLAINT`.
    pub ses_reason: String,
    pub last_update: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_keys_round_trip() {
        for target in [
            SendingTarget::Account,
            SendingTarget::ConfigurationSet("marketing".into()),
        ] {
            assert_eq!(SendingTarget::from_key(&target.key()), Some(target));
        }
        assert_eq!(SendingTarget::from_key("configuration-set:"), None);
        assert_eq!(SendingTarget::from_key("elsewhere"), None);
    }
}
