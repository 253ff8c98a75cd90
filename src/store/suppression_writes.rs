//! Suppression rows written by SES events: a whole batch's rows in one
//! multi-row upsert. A newer event replaces the row's details; an older one
//! arriving late only widens first/last seen; the count adds up. The caller
//! folds a batch's events to one row per address (the statement may touch a
//! row once), and the rows go in address order (the lock order every
//! replica shares).

use std::collections::{HashMap, HashSet};

use sqlx::QueryBuilder;

use super::messages::{MAX_PARAMS, statements};
use super::text::{storable, storable_opt};
use super::{DbResult, Tx, on_tx};
use crate::address::EmailAddress;
use crate::time::Timestamp;

/// One address's suppression, as a batch's events leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionWrite<'a> {
    pub email: &'a EmailAddress,
    pub reason: &'a str,
    pub bounce_type: Option<&'a str>,
    pub bounce_subtype: Option<&'a str>,
    pub complaint_feedback_type: Option<&'a str>,
    pub diagnostic_code: Option<&'a str>,
    pub first_seen: Timestamp,
    /// The details above are those of the event seen at this time.
    pub last_seen: Timestamp,
    /// How many events this row stands for.
    pub events: i64,
    pub ses_message_id: Option<&'a str>,
    pub sns_message_id: Option<&'a str>,
    pub source: &'a str,
    pub note: Option<String>,
}

/// Newer details replace older ones, and the counts add up. A note already
/// there stays: it may be a person's (`suppressions add --note`, an
/// import), which an event's own note ("3 soft bounces within 14 days")
/// must not replace; an event's note fills only an empty one.
const ON_CONFLICT: &str = " ON CONFLICT (email) DO UPDATE SET \
      reason = CASE WHEN excluded.last_seen_at >= suppressions.last_seen_at THEN excluded.reason ELSE suppressions.reason END, \
      bounce_type = CASE WHEN excluded.last_seen_at >= suppressions.last_seen_at THEN excluded.bounce_type ELSE suppressions.bounce_type END, \
      bounce_subtype = CASE WHEN excluded.last_seen_at >= suppressions.last_seen_at THEN excluded.bounce_subtype ELSE suppressions.bounce_subtype END, \
      complaint_feedback_type = CASE WHEN excluded.last_seen_at >= suppressions.last_seen_at THEN excluded.complaint_feedback_type ELSE suppressions.complaint_feedback_type END, \
      diagnostic_code = CASE WHEN excluded.last_seen_at >= suppressions.last_seen_at THEN excluded.diagnostic_code ELSE suppressions.diagnostic_code END, \
      last_ses_message_id = CASE WHEN excluded.last_seen_at >= suppressions.last_seen_at THEN excluded.last_ses_message_id ELSE suppressions.last_ses_message_id END, \
      last_sns_message_id = CASE WHEN excluded.last_seen_at >= suppressions.last_seen_at THEN excluded.last_sns_message_id ELSE suppressions.last_sns_message_id END, \
      source = CASE WHEN excluded.last_seen_at >= suppressions.last_seen_at THEN excluded.source ELSE suppressions.source END, \
      first_seen_at = CASE WHEN excluded.first_seen_at < suppressions.first_seen_at THEN excluded.first_seen_at ELSE suppressions.first_seen_at END, \
      last_seen_at = CASE WHEN excluded.last_seen_at > suppressions.last_seen_at THEN excluded.last_seen_at ELSE suppressions.last_seen_at END, \
      event_count = suppressions.event_count + excluded.event_count, \
      note = COALESCE(suppressions.note, excluded.note)";

/// Writes the rows (one per address) in as few statements as the bound
/// parameter limit allows, except a row whose address was removed by hand
/// at or after its event (`last_seen`): the operator's decision came after
/// it, and stands. Returns the addresses kept out that way (almost always
/// none).
pub async fn upsert_suppressions(
    tx: &mut Tx<'_>,
    rows: &[SuppressionWrite<'_>],
) -> DbResult<HashSet<String>> {
    let mut order: Vec<&SuppressionWrite<'_>> = rows.iter().collect();
    order.sort_by(|a, b| a.email.cmp(b.email));
    let mut kept_out = HashSet::new();
    for chunk in statements(&order, 13, |w| w.diagnostic_code.map_or(0, str::len)) {
        let written = on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new(
                "INSERT INTO suppressions (email, reason, bounce_type, bounce_subtype, complaint_feedback_type, \
                 diagnostic_code, first_seen_at, last_seen_at, event_count, last_ses_message_id, \
                 last_sns_message_id, source, note) SELECT * FROM (",
            );
            qb.push_values(chunk, |mut row, w| {
                row.push_bind(w.email.as_str().to_owned())
                    .push_bind(w.reason.to_owned())
                    .push_bind(storable_opt(w.bounce_type))
                    .push_bind(storable_opt(w.bounce_subtype))
                    .push_bind(storable_opt(w.complaint_feedback_type))
                    .push_bind(storable_opt(w.diagnostic_code))
                    .push_bind(w.first_seen)
                    .push_bind(w.last_seen)
                    .push_bind(w.events)
                    .push_bind(storable_opt(w.ses_message_id))
                    .push_bind(storable_opt(w.sns_message_id))
                    .push_bind(storable(w.source).into_owned())
                    .push_bind(storable_opt(w.note.as_deref()));
            });
            // In the statement itself, not a look-up before it: a bounce
            // storm's batches pay an index probe per row, not a statement.
            // (Both databases name a VALUES list's columns column1, ...)
            qb.push(
                ") AS v WHERE NOT EXISTS (SELECT 1 FROM suppression_removals r \
                 WHERE r.email = v.column1 AND r.removed_at >= v.column8)",
            );
            qb.push(ON_CONFLICT);
            qb.build().execute(conn).await.map(|r| r.rows_affected())
        })?;
        // Each row written counts once (inserted or updated): fewer means
        // removals kept some out, and only then are they looked up.
        if written < chunk.len() as u64 {
            let emails: Vec<&EmailAddress> = chunk.iter().map(|w| w.email).collect();
            let removed = latest_removals(tx, &emails).await?;
            kept_out.extend(
                chunk
                    .iter()
                    .filter(|w| {
                        removed
                            .get(w.email.as_str())
                            .is_some_and(|at| *at >= w.last_seen)
                    })
                    .map(|w| w.email.as_str().to_owned()),
            );
        }
    }
    Ok(kept_out)
}

/// When each of `emails` was last removed from the list by hand, for those
/// ever removed. An event that happened before its address's removal does
/// not put it back: the operator's decision came after it.
pub async fn latest_removals(
    tx: &mut Tx<'_>,
    emails: &[&EmailAddress],
) -> DbResult<HashMap<String, Timestamp>> {
    let mut sorted: Vec<&EmailAddress> = emails.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut found = HashMap::new();
    for chunk in sorted.chunks(MAX_PARAMS) {
        let rows: Vec<(String, Timestamp)> = on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new(
                "SELECT email, MAX(removed_at) FROM suppression_removals WHERE email IN (",
            );
            let mut list = qb.separated(", ");
            for email in chunk {
                list.push_bind(email.as_str().to_owned());
            }
            qb.push(") GROUP BY email");
            qb.build_query_as().fetch_all(conn).await
        })?;
        found.extend(rows);
    }
    Ok(found)
}
