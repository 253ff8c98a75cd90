//! What a batch's new SES events do, written set-wise: the event log, the
//! volume each proves, the rates' numerators, soft-bounce streaks and
//! suppression rows, each table in one statement (or a few, for the
//! bound-parameter limit) whatever the batch's size, and in arrival order
//! (`fold` works the order out in memory).

use std::collections::HashMap;

use crate::address::EmailAddress;
use crate::guard::Counts;
use crate::ses::feedback::{Detail, FeedbackEvent};
use crate::ses::policy::{Action, Rate, Rule};
use crate::store::events::{EventRow, insert_events};
use crate::store::guard::count_volume;
use crate::store::suppression_writes::{SuppressionWrite, upsert_suppressions};
use crate::store::{DbResult, Tx, soft_bounces};
use crate::time::Timestamp;

use super::accepted::{Accepted, Applied};
use super::apply::{EventOutcome, SoftBouncePolicy};
use super::fold::{self, Step};

/// The mailbox simulator's addresses count toward no rate, as at SES.
fn is_simulator(email: &EmailAddress) -> bool {
    email.as_str().ends_with("@simulator.amazonses.com")
}

/// The recipients whose send this event proves (each counted once per mail
/// later), and whether the proof is a Send event or a delivery.
fn volume_of(event: &FeedbackEvent) -> (Vec<&EmailAddress>, bool) {
    let (recipients, from_delivery): (Vec<&EmailAddress>, bool) = match &event.detail {
        Detail::Delivery => (event.recipient.iter().collect(), true),
        Detail::Other if event.event_type == "Send" => (event.destination.iter().collect(), true),
        // Mail to the account's suppression list is not sent and does not
        // count (SES excludes it too).
        Detail::Bounce { bounce_subtype, .. } if bounce_subtype != "OnAccountSuppressionList" => {
            (event.recipient.iter().collect(), false)
        }
        _ => (Vec::new(), false),
    };
    (
        recipients
            .into_iter()
            .filter(|r| !is_simulator(r))
            .collect(),
        from_delivery,
    )
}

/// What the event adds to the rates' numerators.
fn numerators(event: &FeedbackEvent, rule: &Rule) -> Counts {
    let mut counts = Counts::default();
    if event.recipient.as_ref().is_some_and(|r| !is_simulator(r)) {
        match rule.rate {
            Rate::HardBounce => counts.hard_bounces = 1,
            Rate::Complaint => counts.complaints = 1,
            Rate::None => {}
        }
    }
    counts
}

/// The bounce and complaint columns of an event's detail.
struct DetailColumns<'a> {
    bounce_type: Option<&'a str>,
    bounce_subtype: Option<&'a str>,
    status: Option<&'a str>,
    diagnostic_code: Option<&'a str>,
    feedback_type: Option<&'a str>,
}

impl<'a> DetailColumns<'a> {
    fn of(event: &'a FeedbackEvent) -> DetailColumns<'a> {
        let none = DetailColumns {
            bounce_type: None,
            bounce_subtype: None,
            status: None,
            diagnostic_code: None,
            feedback_type: None,
        };
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
                feedback_type: feedback_type.as_deref(),
                ..none
            },
            Detail::Delivery | Detail::Other => none,
        }
    }
}

/// One event of the batch: its message's index, the event, and its rule.
pub type Planned<'a> = (usize, &'a FeedbackEvent, &'static Rule);

fn event_row<'a>(batch: &[&'a Accepted], (i, e, rule): &Planned<'a>) -> EventRow<'a> {
    let m = &batch[*i].message;
    let d = DetailColumns::of(e);
    EventRow {
        event_key: &e.key,
        sns_message_id: m.message_id(),
        event_type: &e.event_type,
        format: e.format.as_str(),
        ses_message_id: &e.ses_message_id,
        email: e.recipient.as_ref().map(EmailAddress::as_str),
        feedback_id: e.feedback_id.as_deref(),
        bounce_type: d.bounce_type,
        bounce_subtype: d.bounce_subtype,
        complaint_feedback_type: d.feedback_type,
        status: d.status,
        diagnostic_code: d.diagnostic_code,
        action: rule.action.as_str(),
        occurred_at: e.occurred_at,
        received_at: m.received_at(),
    }
}

/// Applies the new messages' events (`events`, in arrival order) and
/// records each one's outcome in `applied`; returns what they add to the
/// rates' counts.
pub async fn apply_events(
    tx: &mut Tx<'_>,
    batch: &[&Accepted],
    events: &[Planned<'_>],
    soft: SoftBouncePolicy,
    applied: &mut [Applied],
    now: Timestamp,
) -> DbResult<Counts> {
    let event_rows: Vec<EventRow<'_>> = events.iter().map(|p| event_row(batch, p)).collect();
    let fresh = insert_events(tx, &event_rows).await?;
    let sources: Vec<String> = batch
        .iter()
        .map(|a| format!("sns:{}", a.message.topic_arn()))
        .collect();
    let mut outcomes: Vec<EventOutcome> = events
        .iter()
        .zip(&fresh)
        .map(|((_, _, rule), fresh)| EventOutcome {
            rule,
            applied: *fresh,
            suppressed: false,
        })
        .collect();
    let mut counts = Counts::default();
    let mut volume: Vec<(&str, &str, bool)> = Vec::new();
    // Soft bounces and deliveries by address, with the event's position.
    let mut steps: Vec<(usize, &EmailAddress, Step)> = Vec::new();
    let mut suppress: Vec<(usize, SuppressionWrite<'_>)> = Vec::new();
    for (k, (i, event, rule)) in events.iter().enumerate() {
        if !fresh[k] {
            continue;
        }
        let (recipients, from_delivery) = volume_of(event);
        volume.extend(
            recipients
                .into_iter()
                .map(|r| (event.ses_message_id.as_str(), r.as_str(), from_delivery)),
        );
        counts.add(numerators(event, rule));
        let Some(email) = event.recipient.as_ref() else {
            continue;
        };
        match rule.action {
            Action::Suppress => {
                suppress.push((k, suppression(batch[*i], event, email, &sources[*i])));
                outcomes[k].suppressed = true;
            }
            Action::CountSoftBounce => steps.push((k, email, Step::Bounce(event.occurred_at))),
            Action::ResetSoftBounces => steps.push((k, email, Step::Delivery(event.occurred_at))),
            Action::ContentProblem | Action::NotSpam | Action::Record => {}
        }
    }
    if !volume.is_empty() {
        let pairs: Vec<(&str, &str)> = volume.iter().map(|(m, r, _)| (*m, *r)).collect();
        let new_sends = count_volume(tx, &pairs, now).await?;
        for ((_, _, from_delivery), new) in volume.iter().zip(new_sends) {
            if new {
                counts.sends += 1;
                counts.delivery_sends += i64::from(*from_delivery);
            }
        }
    }
    for (k, count) in soft_bounce_streaks(tx, &steps, soft, now).await? {
        let (i, event, _) = events[k];
        if let Some(email) = event.recipient.as_ref() {
            let mut write = suppression(batch[i], event, email, &sources[i]);
            write.note = Some(format!(
                "{count} soft bounces within {} days",
                soft.window.whole_days()
            ));
            suppress.push((k, write));
            outcomes[k].suppressed = true;
        }
    }
    if !suppress.is_empty() {
        suppress.sort_by_key(|(k, _)| *k);
        let rows = fold::suppressions(suppress.into_iter().map(|(_, w)| w).collect());
        upsert_suppressions(tx, &rows).await?;
    }
    for ((i, event, _), outcome) in events.iter().zip(outcomes) {
        applied[*i].events.push((event.event_type.clone(), outcome));
    }
    Ok(counts)
}

/// Counts the batch's soft bounces, in arrival order with its deliveries,
/// from the streaks as stored; returns the bounces (by event position) that
/// reached the limit, with their count. Deliveries to addresses without a
/// soft bounce in the batch reset their streaks in one statement.
async fn soft_bounce_streaks(
    tx: &mut Tx<'_>,
    steps: &[(usize, &EmailAddress, Step)],
    soft: SoftBouncePolicy,
    now: Timestamp,
) -> DbResult<Vec<(usize, i64)>> {
    let mut by_email: HashMap<&EmailAddress, Vec<(usize, Step)>> = HashMap::new();
    let mut bounced: Vec<&EmailAddress> = Vec::new();
    for (k, email, step) in steps {
        if matches!(step, Step::Bounce(_)) && !by_email.contains_key(email) {
            bounced.push(email);
        }
        if matches!(step, Step::Bounce(_)) || by_email.contains_key(email) {
            by_email.entry(email).or_default().push((*k, *step));
        }
    }
    // A delivery before the address's first soft bounce in the batch
    // belongs to its steps too.
    let mut only_delivered: Vec<(&EmailAddress, Timestamp)> = Vec::new();
    for (k, email, step) in steps {
        if let Step::Delivery(at) = step {
            match by_email.get_mut(email) {
                Some(list) if !list.iter().any(|(j, _)| j == k) => list.push((*k, *step)),
                Some(_) => {}
                None => only_delivered.push((email, *at)),
            }
        }
    }
    if !only_delivered.is_empty() {
        soft_bounces::reset(tx, &only_delivered).await?;
    }
    if bounced.is_empty() {
        return Ok(Vec::new());
    }
    let stored = soft_bounces::lock(tx, &bounced, now).await?;
    let mut writes = Vec::with_capacity(bounced.len());
    let mut reached = Vec::new();
    for email in bounced {
        let mut list = by_email.remove(email).unwrap_or_default();
        list.sort_by_key(|(k, _)| *k);
        let only: Vec<Step> = list.iter().map(|(_, s)| *s).collect();
        let (after, counts) = fold::streak(stored.get(email.as_str()).copied(), &only, soft);
        for (at, count) in counts {
            if count >= soft.limit {
                reached.push((list[at].0, count));
            }
        }
        writes.push((email, after));
    }
    soft_bounces::write(tx, &writes).await?;
    Ok(reached)
}

/// The suppression an event of `accepted` asks for, as a single event.
fn suppression<'a>(
    accepted: &'a Accepted,
    event: &'a FeedbackEvent,
    email: &'a EmailAddress,
    source: &'a str,
) -> SuppressionWrite<'a> {
    let d = DetailColumns::of(event);
    SuppressionWrite {
        email,
        reason: if matches!(event.detail, Detail::Complaint { .. }) {
            "complaint"
        } else {
            "bounce"
        },
        bounce_type: d.bounce_type,
        bounce_subtype: d.bounce_subtype,
        complaint_feedback_type: d.feedback_type,
        diagnostic_code: d.diagnostic_code,
        first_seen: event.occurred_at,
        last_seen: event.occurred_at,
        events: 1,
        ses_message_id: Some(&event.ses_message_id),
        sns_message_id: Some(accepted.message.message_id()),
        source,
        note: None,
    }
}
