//! Set-based statements for a batch of SNS messages: one multi-row
//! statement per table instead of one per message, so that a batch of a
//! hundred deliveries costs a handful of round trips. Each takes rows in
//! chunks small enough for either database's limit on bound parameters.

use std::collections::HashSet;

use sqlx::QueryBuilder;

use super::messages::{Accepted, Content};
use super::{Timestamp, Tx, on_tx};
use crate::guard::Counts;
use crate::ses::address::EmailAddress;
use crate::ses::feedback::{Detail, FeedbackEvent};
use crate::ses::policy::Rule;

/// SQLite allows 32,766 bound parameters per statement; stay well below.
const MAX_PARAMS: usize = 30_000;

/// Inserts the batch's messages; returns the ids that were new.
pub async fn insert_messages(
    tx: &mut Tx,
    batch: &[&Accepted],
    now: Timestamp,
) -> Result<HashSet<String>, sqlx::Error> {
    let mut new = HashSet::new();
    for chunk in batch.chunks(MAX_PARAMS / 12) {
        let ids: Vec<String> = on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new(
                "INSERT INTO sns_messages (message_id, message_type, topic_arn, subject, sns_timestamp, \
                 received_at, stored_at, signature_version, via_spool, outcome, outcome_detail, body) ",
            );
            qb.push_values(chunk, |mut row, a| {
                let m = &a.message;
                let e = m.envelope();
                let detail = match &a.content {
                    Content::Unrecognized(why) => Some(why.clone()),
                    _ => None,
                };
                row.push_bind(m.message_id().to_owned())
                    .push_bind(e.message_type.as_str())
                    .push_bind(m.topic_arn().to_owned())
                    .push_bind(e.subject().map(str::to_owned))
                    .push_bind(e.timestamp)
                    .push_bind(m.received_at())
                    .push_bind(now)
                    .push_bind(m.signature_version().number())
                    .push_bind(a.via_spool)
                    .push_bind(a.outcome_label())
                    .push_bind(detail)
                    .push_bind(m.raw_body().to_owned());
            });
            qb.push(" ON CONFLICT (message_id) DO NOTHING RETURNING message_id");
            qb.build_query_scalar().fetch_all(conn).await
        })?;
        new.extend(ids);
    }
    Ok(new)
}

/// One event to record: the index of its message in the batch, the event,
/// and the policy rule it falls under.
pub type EventRow<'a> = (usize, &'a FeedbackEvent, &'static Rule);

/// Inserts the events into `feedback_events`; returns the keys that were new.
pub async fn insert_events(
    tx: &mut Tx,
    events: &[EventRow<'_>],
    batch: &[&Accepted],
) -> Result<HashSet<String>, sqlx::Error> {
    let mut new = HashSet::new();
    for chunk in events.chunks(MAX_PARAMS / 15) {
        let keys: Vec<String> = on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new(
                "INSERT INTO feedback_events (event_key, sns_message_id, event_type, format, ses_message_id, \
                 email, feedback_id, bounce_type, bounce_subtype, complaint_feedback_type, status, \
                 diagnostic_code, action, occurred_at, received_at) ",
            );
            qb.push_values(chunk, |mut row, (i, e, rule)| {
                let m = &batch[*i].message;
                let d = DetailColumns::of(e);
                row.push_bind(e.key.clone())
                    .push_bind(m.message_id().to_owned())
                    .push_bind(e.event_type.clone())
                    .push_bind(e.format.as_str())
                    .push_bind(e.ses_message_id.clone())
                    .push_bind(e.recipient.as_ref().map(|r| r.as_str().to_owned()))
                    .push_bind(e.feedback_id.clone())
                    .push_bind(d.bounce_type.map(str::to_owned))
                    .push_bind(d.bounce_subtype.map(str::to_owned))
                    .push_bind(d.feedback_type.map(str::to_owned))
                    .push_bind(d.status.map(str::to_owned))
                    .push_bind(d.diagnostic_code.map(str::to_owned))
                    .push_bind(rule.action.as_str())
                    .push_bind(e.occurred_at)
                    .push_bind(m.received_at());
            });
            qb.push(" ON CONFLICT (event_key) DO NOTHING RETURNING event_key");
            qb.build_query_scalar().fetch_all(conn).await
        })?;
        new.extend(keys);
    }
    Ok(new)
}

/// Counts each (mail, recipient) once in `rate_volume`; returns the sends
/// that were new (and how many of them came from a Send event or delivery).
pub async fn count_volume(
    tx: &mut Tx,
    pairs: &[(&str, &str, bool)],
    now: Timestamp,
) -> Result<Counts, sqlx::Error> {
    let mut counts = Counts::default();
    for chunk in pairs.chunks(MAX_PARAMS / 3) {
        let rows: Vec<(String, String)> = on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new("INSERT INTO rate_volume (mail_id, recipient, seen_at) ");
            qb.push_values(chunk, |mut row, (mail, recipient, _)| {
                row.push_bind(mail.to_string()).push_bind(recipient.to_string()).push_bind(now);
            });
            qb.push(" ON CONFLICT (mail_id, recipient) DO NOTHING RETURNING mail_id, recipient");
            qb.build_query_as().fetch_all(conn).await
        })?;
        for (mail, recipient) in rows {
            counts.sends += 1;
            // The first pair in the batch is the one inserted.
            let from_delivery = chunk
                .iter()
                .find(|(m, r, _)| *m == mail && *r == recipient)
                .is_some_and(|p| p.2);
            counts.delivery_sends += i64::from(from_delivery);
        }
    }
    Ok(counts)
}

/// Deliveries reset their addresses' soft-bounce counts, unless the bounces
/// came after the delivery.
pub async fn reset_soft_bounces(
    tx: &mut Tx,
    deliveries: &[(&EmailAddress, Timestamp)],
) -> Result<(), sqlx::Error> {
    for chunk in deliveries.chunks(MAX_PARAMS / 2) {
        on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new(
                "DELETE FROM soft_bounces WHERE EXISTS (SELECT 1 FROM (",
            );
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

/// The bounce and complaint columns of an event's detail.
pub struct DetailColumns<'a> {
    pub bounce_type: Option<&'a str>,
    pub bounce_subtype: Option<&'a str>,
    pub status: Option<&'a str>,
    pub diagnostic_code: Option<&'a str>,
    pub feedback_type: Option<&'a str>,
}

impl<'a> DetailColumns<'a> {
    pub fn of(event: &'a FeedbackEvent) -> DetailColumns<'a> {
        match &event.detail {
            Detail::Bounce {
                bounce_type,
                bounce_subtype,
                status,
                diagnostic_code,
            } => DetailColumns {
                bounce_type: Some(bounce_type),
                bounce_subtype: Some(bounce_subtype),
                status: status.as_deref(),
                diagnostic_code: diagnostic_code.as_deref(),
                feedback_type: None,
            },
            Detail::Complaint { feedback_type, .. } => DetailColumns {
                bounce_type: None,
                bounce_subtype: None,
                status: None,
                diagnostic_code: None,
                feedback_type: feedback_type.as_deref(),
            },
            Detail::Delivery | Detail::Other => DetailColumns {
                bounce_type: None,
                bounce_subtype: None,
                status: None,
                diagnostic_code: None,
                feedback_type: None,
            },
        }
    }
}
