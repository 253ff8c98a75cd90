//! `feedback_events`: every SES event bouncer applied, once per event key
//! (`feedbackId` and recipient for bounces and complaints): the same event
//! arriving in two SNS messages is applied once.

use std::collections::HashSet;

use sqlx::QueryBuilder;

use super::keyed::KeyedInsert;
use super::messages::{key_order, new_flags, statements};
use super::text::{storable, storable_opt};
use super::{DbResult, Tx, on_tx};
use crate::time::Timestamp;

/// One SES event to record.
#[derive(Debug, Clone)]
pub struct EventRow<'a> {
    pub event_key: &'a str,
    pub sns_message_id: &'a str,
    pub event_type: &'a str,
    /// `classic` or `event`.
    pub format: &'a str,
    pub ses_message_id: &'a str,
    pub email: Option<&'a str>,
    pub feedback_id: Option<&'a str>,
    pub bounce_type: Option<&'a str>,
    pub bounce_subtype: Option<&'a str>,
    pub complaint_feedback_type: Option<&'a str>,
    pub status: Option<&'a str>,
    pub diagnostic_code: Option<&'a str>,
    /// The policy's action for it.
    pub action: &'a str,
    pub occurred_at: Timestamp,
    pub received_at: Timestamp,
}

/// Inserts the events (a known key inserts nothing); for each, whether it
/// was new.
pub async fn insert_events(tx: &mut Tx<'_>, rows: &[EventRow<'_>]) -> DbResult<Vec<bool>> {
    let keys: Vec<_> = rows.iter().map(|r| storable(r.event_key)).collect();
    let order = key_order(&keys);
    let mut inserted = HashSet::new();
    for chunk in statements(&order, 15, |i| rows[*i].diagnostic_code.map_or(0, str::len)) {
        let returned = on_tx!(tx, conn => {
            let mut qb = QueryBuilder::new(
                "INSERT INTO feedback_events (event_key, sns_message_id, event_type, format, ses_message_id, \
                 email, feedback_id, bounce_type, bounce_subtype, complaint_feedback_type, status, \
                 diagnostic_code, action, occurred_at, received_at) ",
            );
            qb.push_values(chunk, |mut row, i| {
                let r = &rows[*i];
                row.push_bind(keys[*i].clone().into_owned())
                    .push_bind(storable(r.sns_message_id).into_owned())
                    .push_bind(storable(r.event_type).into_owned())
                    .push_bind(r.format.to_owned())
                    .push_bind(storable(r.ses_message_id).into_owned())
                    .push_bind(storable_opt(r.email))
                    .push_bind(storable_opt(r.feedback_id))
                    .push_bind(storable_opt(r.bounce_type))
                    .push_bind(storable_opt(r.bounce_subtype))
                    .push_bind(storable_opt(r.complaint_feedback_type))
                    .push_bind(storable_opt(r.status))
                    .push_bind(storable_opt(r.diagnostic_code))
                    .push_bind(r.action.to_owned())
                    .push_bind(r.occurred_at)
                    .push_bind(r.received_at);
            });
            qb.push(" ON CONFLICT (event_key) DO NOTHING");
            conn.keyed_insert(qb, "feedback_events", "event_key", chunk.len()).await
        })?;
        inserted.extend(returned.keys(
            chunk.iter().map(|i| keys[*i].as_ref()),
            |(key,): (String,)| key,
        ));
    }
    Ok(new_flags(&keys, &inserted))
}
