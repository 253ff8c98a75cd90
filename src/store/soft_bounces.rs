//! `soft_bounces`: soft bounces counted per address in a streak anchored at
//! its first bounce, reset by a delivery. A batch's counts are computed in
//! memory, in arrival order, from the rows as they are: [`lock`] makes sure
//! each address has a row and locks it in one statement (so a concurrent
//! replica waits rather than counting from the same old value), [`write`]
//! stores the results in one statement each for the rows kept and the rows
//! reset.

use std::collections::HashMap;

use sqlx::QueryBuilder;

use super::messages::MAX_PARAMS;
use super::{DbResult, Tx, on_tx};
use crate::address::EmailAddress;
use crate::time::Timestamp;

/// One address's streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    pub count: i64,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
}

/// The streaks of `emails` (by address) as they are, each row locked until
/// the end of the transaction. A row is made where there is none (count 0,
/// which stands for "no streak"), in the same statement that locks and
/// reads it: with an insert and then a `SELECT ... FOR UPDATE`, a row
/// deleted in between (a delivery's reset, retention) was not locked, and
/// two replicas could both count from nothing.
pub async fn lock(
    tx: &mut Tx<'_>,
    emails: &[&EmailAddress],
    now: Timestamp,
) -> DbResult<HashMap<String, Streak>> {
    let mut sorted: Vec<&EmailAddress> = emails.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut found = HashMap::new();
    for chunk in sorted.chunks(MAX_PARAMS / 4) {
        let rows: Vec<(String, i64, Timestamp, Timestamp)> = on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new("INSERT INTO soft_bounces (email, count, first_at, last_at) ");
            qb.push_values(chunk, |mut row, email| {
                row.push_bind(email.as_str().to_owned()).push_bind(0i64).push_bind(now);
                row.push_bind(now);
            });
            // The no-op update is what locks an existing row (SQLite's write
            // transaction already holds the database) and returns it as it is.
            qb.push(
                " ON CONFLICT (email) DO UPDATE SET count = soft_bounces.count \
                 RETURNING email, count, first_at, last_at",
            );
            qb.build_query_as().fetch_all(conn).await
        })?;
        for (email, count, first_at, last_at) in rows {
            if count > 0 {
                found.insert(
                    email,
                    Streak {
                        count,
                        first_at,
                        last_at,
                    },
                );
            }
        }
    }
    Ok(found)
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
    for chunk in kept.chunks(MAX_PARAMS / 4) {
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
    for chunk in reset.chunks(MAX_PARAMS) {
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
    for chunk in deliveries.chunks(MAX_PARAMS / 2) {
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
