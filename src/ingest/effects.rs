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
use crate::store::guard::{CountChange, Proof, count_volume};
use crate::store::soft_bounces::{self, Past};
use crate::store::suppression_writes::{SuppressionWrite, latest_removals, upsert_suppressions};
use crate::store::text::storable;
use crate::store::{DbResult, Tx};
use crate::time::Timestamp;

use super::accepted::{Accepted, Applied};
use super::apply::{EventOutcome, SoftBouncePolicy};
use super::fold;

/// The mailbox simulator's addresses count toward no rate, as at SES.
fn is_simulator(email: &EmailAddress) -> bool {
    email.as_str().ends_with("@simulator.amazonses.com")
}

/// The recipients whose send this event proves (each counted once per mail
/// later), or disproves: mail to the account's suppression list, rejected
/// mail and mail whose template did not render were not sent (SES counts
/// none of them).
fn volume_of(event: &FeedbackEvent) -> (Vec<&EmailAddress>, Proof) {
    const LISTED: &str = "OnAccountSuppressionList";
    let (recipients, proof): (Vec<&EmailAddress>, Proof) = match &event.detail {
        Detail::Delivery => (event.recipient.iter().collect(), Proof::Delivery),
        Detail::Other if event.event_type == "Send" => {
            (event.destination.iter().collect(), Proof::Delivery)
        }
        Detail::Other
            if event.event_type == "Reject" || event.event_type == "Rendering Failure" =>
        {
            (event.destination.iter().collect(), Proof::NotSent)
        }
        Detail::Bounce { bounce_subtype, .. } if bounce_subtype.as_deref() == Some(LISTED) => {
            (event.recipient.iter().collect(), Proof::NotSent)
        }
        Detail::Bounce { .. } => (event.recipient.iter().collect(), Proof::Bounce),
        Detail::Complaint {
            complaint_subtype: Some(subtype),
            ..
        } if subtype == LISTED => (event.recipient.iter().collect(), Proof::NotSent),
        _ => (Vec::new(), Proof::Bounce),
    };
    (
        recipients
            .into_iter()
            .filter(|r| !is_simulator(r))
            .collect(),
        proof,
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
                bounce_subtype: bounce_subtype.as_deref(),
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
/// records each one's outcome in `applied`; returns what they change in
/// the rates' counts.
pub async fn apply_events(
    tx: &mut Tx<'_>,
    batch: &[&Accepted],
    events: &[Planned<'_>],
    soft: SoftBouncePolicy,
    applied: &mut [Applied],
    now: Timestamp,
) -> DbResult<CountChange> {
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
    let mut volume: Vec<(&str, &str, Proof)> = Vec::new();
    let mut soft_bounced: Vec<(usize, &EmailAddress)> = Vec::new();
    let mut delivered: Vec<(&EmailAddress, Timestamp)> = Vec::new();
    let mut suppress: Vec<(usize, SuppressionWrite<'_>)> = Vec::new();
    for (k, (i, event, rule)) in events.iter().enumerate() {
        if !fresh[k] {
            continue;
        }
        let (recipients, proof) = volume_of(event);
        volume.extend(
            recipients
                .into_iter()
                .map(|r| (event.ses_message_id.as_str(), r.as_str(), proof)),
        );
        counts.add(numerators(event, rule));
        let Some(email) = event.recipient.as_ref() else {
            continue;
        };
        match rule.action {
            Action::Suppress => {
                suppress.push((k, suppression(batch[*i], event, email, &sources[*i])));
            }
            Action::CountSoftBounce => soft_bounced.push((k, email)),
            Action::ResetSoftBounces => delivered.push((email, event.occurred_at)),
            Action::ContentProblem | Action::NotSpam | Action::Record => {}
        }
    }
    let mut change = CountChange::default();
    if !volume.is_empty() {
        change = count_volume(tx, &volume, now).await?;
    }
    change.counted.add(counts);
    let filled = soft_bounce_windows(tx, events, &soft_bounced, &delivered, soft, now).await?;
    // Which events each address's row stands for.
    let mut stands_for: Vec<(usize, &EmailAddress)> =
        suppress.iter().map(|(k, w)| (*k, w.email)).collect();
    for window in &filled {
        let (i, _, _) = events[window.trigger];
        let past = &window.newest;
        suppress.push((
            window.trigger,
            SuppressionWrite {
                email: window.email,
                reason: "bounce",
                bounce_type: past.bounce_type.as_deref(),
                bounce_subtype: past.bounce_subtype.as_deref(),
                complaint_feedback_type: None,
                diagnostic_code: past.diagnostic_code.as_deref(),
                first_seen: window.first_at,
                last_seen: past.occurred_at,
                events: window.events,
                ses_message_id: Some(&past.ses_message_id),
                sns_message_id: Some(&past.sns_message_id),
                source: &sources[i],
                note: Some(format!(
                    "{} soft bounces within {} days",
                    window.count,
                    soft.window.whole_days()
                )),
            },
        ));
        stands_for.extend(window.new.iter().map(|k| (*k, window.email)));
    }
    if !suppress.is_empty() {
        suppress.sort_by_key(|(k, _)| *k);
        let rows = fold::suppressions(suppress.into_iter().map(|(_, w)| w).collect());
        let kept_out = upsert_suppressions(tx, &rows).await?;
        for (k, email) in stands_for {
            outcomes[k].suppressed = !kept_out.contains(email.as_str());
        }
    }
    for ((i, event, _), outcome) in events.iter().zip(outcomes) {
        applied[*i].events.push((event.event_type.clone(), outcome));
    }
    Ok(change)
}

/// An address whose soft bounces fill the window with this batch.
struct Filled<'a> {
    email: &'a EmailAddress,
    /// The batch's bounces in the window (event positions), and the newest
    /// of them, whose message's topic is the suppression's source.
    new: Vec<usize>,
    trigger: usize,
    /// See [`fold::Crossing`].
    count: i64,
    events: i64,
    first_at: Timestamp,
    /// The window's newest bounce, whose details the row takes.
    newest: Past,
}

/// Counts the soft bounces of the addresses the batch's soft bounces
/// (`soft_bounced`, by event position) name, from the event log in the
/// order they happened, after each address's latest delivery or removal
/// by hand; returns those whose window fills now. Deliveries to
/// addresses without a soft bounce in the batch reset their streaks in one
/// statement.
async fn soft_bounce_windows<'a>(
    tx: &mut Tx<'_>,
    events: &[Planned<'a>],
    soft_bounced: &[(usize, &'a EmailAddress)],
    delivered: &[(&EmailAddress, Timestamp)],
    soft: SoftBouncePolicy,
    now: Timestamp,
) -> DbResult<Vec<Filled<'a>>> {
    let mut new_keys: HashMap<&EmailAddress, HashMap<String, usize>> = HashMap::new();
    for (k, email) in soft_bounced {
        let key = storable(&events[*k].1.key).into_owned();
        new_keys.entry(*email).or_default().insert(key, *k);
    }
    let only_delivered: Vec<(&EmailAddress, Timestamp)> = delivered
        .iter()
        .filter(|(email, _)| !new_keys.contains_key(email))
        .copied()
        .collect();
    let touched: Vec<&EmailAddress> = new_keys
        .keys()
        .copied()
        .chain(only_delivered.iter().map(|(email, _)| *email))
        .collect();
    soft_bounces::serialize(tx, &touched).await?;
    if !only_delivered.is_empty() {
        soft_bounces::reset(tx, &only_delivered).await?;
    }
    let Some(oldest) = soft_bounced
        .iter()
        .map(|(k, _)| events[*k].1.occurred_at)
        .min()
    else {
        return Ok(Vec::new());
    };
    let emails: Vec<&EmailAddress> = new_keys.keys().copied().collect();
    soft_bounces::lock(tx, &emails, now).await?;
    // Soft bounces before an address's removal by hand do not count (the
    // upsert keeps every other event before it from putting the address
    // back). Read after the lock, as the log is: a removal committed while
    // this batch waited for it is seen.
    let removed = latest_removals(tx, &emails).await?;
    // Nothing older than a window before the oldest new bounce can share
    // a window with one; a delivery that old resets none of them.
    let mut logged = soft_bounces::history(tx, &emails, oldest.saturating_sub(soft.window)).await?;
    let mut filled = Vec::new();
    let mut streaks = Vec::with_capacity(emails.len());
    for (email, keys) in &new_keys {
        let mut past = logged.remove(email.as_str()).unwrap_or_default();
        let latest_delivery = past
            .iter()
            .filter(|p| p.is_delivery())
            .map(|p| p.occurred_at)
            .max();
        past.retain(|p| !p.is_delivery());
        let bounces: Vec<fold::Bounce> = past
            .iter()
            .map(|p| fold::Bounce {
                at: p.occurred_at,
                new: keys.contains_key(&p.event_key),
                after_delivery: p.delivered_before,
            })
            .collect();
        let (window, streak) = fold::soft_bounces(
            &bounces,
            latest_delivery,
            removed.get(email.as_str()).copied(),
            soft,
        );
        streaks.push((*email, streak));
        let Some(fold::Crossing {
            members,
            first,
            events,
            count,
        }) = window
        else {
            continue;
        };
        let new: Vec<usize> = members
            .iter()
            .filter_map(|m| keys.get(&past[*m].event_key).copied())
            .collect();
        let (Some(&trigger), Some(&last)) = (new.iter().max(), members.last()) else {
            continue;
        };
        filled.push(Filled {
            email,
            new,
            trigger,
            count,
            events,
            first_at: past[first].occurred_at,
            newest: past.swap_remove(last),
        });
    }
    streaks.sort_by(|a, b| a.0.cmp(b.0));
    soft_bounces::write(tx, &streaks).await?;
    Ok(filled)
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
