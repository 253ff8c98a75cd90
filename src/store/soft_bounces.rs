//! `soft_bounces`: one row per address with soft bounces, the streak that
//! the event log (`feedback_events`) holds for it, and the row a batch
//! locks so that a concurrent replica counting the same address waits for
//! it. The count itself is worked out from the log ([`history`]), in the
//! events' own time order, so that it does not depend on the order in
//! which the events arrived.

use std::collections::HashMap;

use sqlx::QueryBuilder;

use super::messages::{MAX_PARAMS, rows_per_statement};
use super::{DbResult, Tx, on_tx};
use crate::address::EmailAddress;
use crate::time::Timestamp;

/// One address's streak: the soft bounces after its latest delivery (or
/// removal from the list) within the window before its newest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    pub count: i64,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
}

/// A soft bounce of an address as the event log keeps it, or its latest
/// delivery (`reset_soft_bounces`, only the time filled in).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Past {
    pub event_key: String,
    pub email: String,
    /// `reset_soft_bounces` (a delivery) or `count_soft_bounce`.
    pub action: String,
    pub occurred_at: Timestamp,
    pub bounce_type: Option<String>,
    pub bounce_subtype: Option<String>,
    pub diagnostic_code: Option<String>,
    pub ses_message_id: String,
    pub sns_message_id: String,
    /// A soft bounce's: the address's latest delivery before it (bounces
    /// on either side of a delivery never count together).
    pub delivered_before: Option<Timestamp>,
}

impl Past {
    pub fn is_delivery(&self) -> bool {
        self.action == "reset_soft_bounces"
    }
}

/// The soft bounces of `emails` that happened at or after `since`, the
/// batch's own included (they are in the log already), each with the
/// address's latest delivery before it, and each address's latest delivery
/// since then (only those: an address mailed thousands of times costs one
/// index probe a bounce, not thousands of rows).
pub async fn history(
    tx: &mut Tx<'_>,
    emails: &[&EmailAddress],
    since: Timestamp,
) -> DbResult<HashMap<String, Vec<Past>>> {
    let mut by_email: HashMap<String, Vec<Past>> = HashMap::new();
    for chunk in emails.chunks(MAX_PARAMS / 2 - 1) {
        let rows: Vec<Past> = on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new(
                "SELECT event_key, email, action, occurred_at, bounce_type, bounce_subtype, \
                 diagnostic_code, ses_message_id, sns_message_id, \
                 (SELECT MAX(d.occurred_at) FROM feedback_events d WHERE d.email = b.email \
                  AND d.action = 'reset_soft_bounces' AND d.occurred_at < b.occurred_at) \
                 AS delivered_before FROM feedback_events b \
                 WHERE action = 'count_soft_bounce' AND email IN (",
            );
            let mut list = qb.separated(", ");
            for email in chunk {
                list.push_bind(email.as_str().to_owned());
            }
            qb.push(") AND occurred_at >= ").push_bind(since);
            qb.push(
                " UNION ALL SELECT '', email, 'reset_soft_bounces', MAX(occurred_at), NULL, NULL, \
                 NULL, '', '', NULL FROM feedback_events WHERE action = 'reset_soft_bounces' AND email IN (",
            );
            let mut list = qb.separated(", ");
            for email in chunk {
                list.push_bind(email.as_str().to_owned());
            }
            qb.push(") AND occurred_at >= ").push_bind(since);
            qb.push(" GROUP BY email");
            qb.build_query_as().fetch_all(conn).await
        })?;
        for row in rows {
            by_email.entry(row.email.clone()).or_default().push(row);
        }
    }
    Ok(by_email)
}

/// The advisory locks' first key: bouncer's streaks, apart from any other
/// user of advisory locks in the database ("boun").
const STREAK_LOCKS: i32 = 0x626f_756e;

/// How many advisory locks stand for all addresses: a batch takes at most
/// this many, whatever `WRITE_BATCH_MAX`, from PostgreSQL's shared lock
/// table (`max_locks_per_transaction` × connections, 6,400 by default).
const STREAK_LOCK_SLOTS: u32 = 1024;

/// On PostgreSQL, takes a transaction-level advisory lock for each of
/// `emails` (a batch's soft bounces and the deliveries that reset
/// streaks), in one order every replica shares, before the batch touches
/// any streak row. A batch first deletes the streaks its deliveries reset
/// and then locks (or inserts) those of its soft bounces: two statements,
/// each in address order, but not one order across both, so two replicas
/// given a delivery to one address and a soft bounce of another, crosswise,
/// each held the row the other wanted next, and PostgreSQL broke the
/// deadlock after its `deadlock_timeout` (1 s) by failing one batch (found
/// by an outside trial of three replicas: a dozen a run). Locking the
/// existing rows first in one ordered statement was not enough: a row
/// another replica inserts and commits meanwhile is locked later, out of
/// order (found by a review). An advisory lock needs no row. Addresses
/// share a lock by a hash (two that share one only wait for each other).
/// SQLite's writer holds the whole database already.
pub async fn serialize(tx: &mut Tx<'_>, emails: &[&EmailAddress]) -> DbResult<()> {
    let super::conn::Raw::Postgres(conn) = tx.raw() else {
        return Ok(());
    };
    let mut slots: Vec<i32> = emails
        .iter()
        .map(|e| (crc32fast::hash(e.as_str().as_bytes()) % STREAK_LOCK_SLOTS) as i32)
        .collect();
    slots.sort_unstable();
    slots.dedup();
    if slots.is_empty() {
        return Ok(());
    }
    // `unnest` yields the array in its order, and each row's lock is taken
    // as it is yielded.
    sqlx::query("SELECT pg_advisory_xact_lock($1, slot) FROM unnest($2::int4[]) AS slot")
        .bind(STREAK_LOCKS)
        .bind(slots)
        .execute(conn)
        .await?;
    Ok(())
}

/// Makes sure each of `emails` has a row and locks it until the end of the
/// transaction, in one statement: with an insert and then a `SELECT ... FOR
/// UPDATE`, a row deleted in between (a delivery's reset, retention) was not
/// locked, and two replicas could both count without the other's bounces.
/// The caller reads the log after this, so it sees what a replica that held
/// the lock before it committed.
pub async fn lock(tx: &mut Tx<'_>, emails: &[&EmailAddress], now: Timestamp) -> DbResult<()> {
    let mut sorted: Vec<&EmailAddress> = emails.to_vec();
    sorted.sort();
    sorted.dedup();
    for chunk in sorted.chunks(rows_per_statement(4)) {
        on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new("INSERT INTO soft_bounces (email, count, first_at, last_at) ");
            qb.push_values(chunk, |mut row, email| {
                row.push_bind(email.as_str().to_owned()).push_bind(0i64).push_bind(now);
                row.push_bind(now);
            });
            // The no-op update is what locks an existing row (SQLite's write
            // transaction already holds the database).
            qb.push(" ON CONFLICT (email) DO UPDATE SET count = soft_bounces.count");
            qb.build().execute(conn).await.map(|_| ())
        })?;
    }
    Ok(())
}

/// Stores each address's streak as the batch left it: kept (`Some`) or
/// reset (`None`, the row goes).
pub async fn write(tx: &mut Tx<'_>, rows: &[(&EmailAddress, Option<Streak>)]) -> DbResult<()> {
    let kept: Vec<(&EmailAddress, Streak)> = rows
        .iter()
        .filter_map(|(e, s)| s.map(|s| (*e, s)))
        .collect();
    let reset: Vec<&EmailAddress> = rows
        .iter()
        .filter(|(_, s)| s.is_none())
        .map(|(e, _)| *e)
        .collect();
    for chunk in kept.chunks(rows_per_statement(4)) {
        on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new("INSERT INTO soft_bounces (email, count, first_at, last_at) ");
            qb.push_values(chunk, |mut row, (email, s)| {
                row.push_bind(email.as_str().to_owned())
                    .push_bind(s.count)
                    .push_bind(s.first_at)
                    .push_bind(s.last_at);
            });
            qb.push(
                " ON CONFLICT (email) DO UPDATE SET count = excluded.count, \
                 first_at = excluded.first_at, last_at = excluded.last_at",
            );
            qb.build().execute(conn).await.map(|_| ())
        })?;
    }
    for chunk in reset.chunks(rows_per_statement(1)) {
        on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new("DELETE FROM soft_bounces WHERE email IN (");
            let mut list = qb.separated(", ");
            for email in chunk {
                list.push_bind(email.as_str().to_owned());
            }
            qb.push(")");
            qb.build().execute(conn).await.map(|_| ())
        })?;
    }
    Ok(())
}

/// Deliveries reset their addresses' counts, unless the bounces came after
/// the delivery (for addresses without soft bounces in the same batch).
pub async fn reset(tx: &mut Tx<'_>, deliveries: &[(&EmailAddress, Timestamp)]) -> DbResult<()> {
    // In address order within the statement; across statements and
    // replicas, `serialize` has ordered the batch's addresses already.
    let mut sorted = deliveries.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for chunk in sorted.chunks(rows_per_statement(2)) {
        on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new("WITH delivered (email, at) AS (");
            qb.push_values(chunk, |mut row, (email, at)| {
                row.push_bind(email.as_str().to_owned()).push_bind(*at);
            });
            // The `IN` is what finds the rows, through the primary key; a
            // correlated `EXISTS` alone made both databases scan the whole
            // table for every batch with a delivery (120 ms a batch on
            // SQLite at 100,000 streaks), and streaks of addresses never
            // delivered to again stay in it.
            qb.push(
                ") DELETE FROM soft_bounces WHERE email IN (SELECT email FROM delivered) \
                 AND EXISTS (SELECT 1 FROM delivered WHERE delivered.email = soft_bounces.email \
                 AND soft_bounces.last_at <= delivered.at)",
            );
            qb.build().execute(conn).await.map(|_| ())
        })?;
    }
    Ok(())
}
