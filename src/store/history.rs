//! Reading the guard's hourly `rate_buckets` as a series, for the rate
//! history (`GET /v1/rates/history` and the page): one query over one hour
//! range, so its cost is bounded by the hours asked for, never by history.

use super::guard::Counts;
use super::{DbResult, Tx, on_tx};
use crate::time::Timestamp;

/// The buckets whose hour starts in `from..=to`, oldest first; hours with
/// no row are absent (nothing was counted in them).
pub async fn buckets_between(
    tx: &mut Tx<'_>,
    from: Timestamp,
    to: Timestamp,
) -> DbResult<Vec<(Timestamp, Counts)>> {
    const SQL: &str = "SELECT bucket_start, sends, hard_bounces, complaints, delivery_sends \
        FROM rate_buckets WHERE bucket_start >= $1 AND bucket_start <= $2 ORDER BY bucket_start";
    type Row = (Timestamp, i64, i64, i64, i64);
    let rows: Vec<Row> =
        on_tx!(tx, conn => sqlx::query_as(SQL).bind(from).bind(to).fetch_all(conn).await)?;
    Ok(rows
        .into_iter()
        .map(|(start, sends, hard_bounces, complaints, delivery_sends)| {
            (
                start,
                Counts {
                    sends,
                    hard_bounces,
                    complaints,
                    delivery_sends,
                },
            )
        })
        .collect())
}
