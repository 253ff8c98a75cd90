//! `soft_bounces`: soft bounces counted per address in a streak anchored at
//! its first bounce, reset by a delivery.

use sqlx::QueryBuilder;

use super::messages::MAX_PARAMS;
use super::{DbResult, Tx, on_tx};
use crate::address::EmailAddress;
use crate::time::Timestamp;

/// Counts a soft bounce; a streak whose first bounce is older than
/// `window_start` starts over. Returns the count after this bounce.
pub async fn count(
    tx: &mut Tx<'_>,
    email: &EmailAddress,
    at: Timestamp,
    window_start: Timestamp,
) -> DbResult<i64> {
    const SQL: &str = "INSERT INTO soft_bounces (email, count, first_at, last_at) \
        VALUES ($1, 1, $2, $2) \
        ON CONFLICT (email) DO UPDATE SET \
          count = CASE WHEN soft_bounces.first_at < $3 THEN 1 ELSE soft_bounces.count + 1 END, \
          first_at = CASE WHEN soft_bounces.first_at < $3 THEN excluded.first_at ELSE soft_bounces.first_at END, \
          last_at = CASE WHEN excluded.last_at > soft_bounces.last_at THEN excluded.last_at ELSE soft_bounces.last_at END \
        RETURNING count";
    Ok(on_tx!(tx, conn => sqlx::query_scalar(SQL)
        .bind(email.as_str())
        .bind(at)
        .bind(window_start)
        .fetch_one(conn)
        .await)?)
}

/// Deliveries reset their addresses' counts, unless the bounces came after
/// the delivery.
pub async fn reset(tx: &mut Tx<'_>, deliveries: &[(&EmailAddress, Timestamp)]) -> DbResult<()> {
    for chunk in deliveries.chunks(MAX_PARAMS / 2) {
        on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new("DELETE FROM soft_bounces WHERE EXISTS (SELECT 1 FROM (");
            qb.push_values(chunk, |mut row, (email, at)| {
                row.push_bind(email.as_str().to_owned()).push_bind(*at);
            });
            // VALUES columns are column1, column2 in both databases.
            qb.push(") AS delivered WHERE delivered.column1 = soft_bounces.email AND soft_bounces.last_at <= delivered.column2)");
            qb.build().execute(conn).await.map(|_| ())
        })?;
    }
    Ok(())
}
