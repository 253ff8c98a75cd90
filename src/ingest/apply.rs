//! Applying a batch of accepted messages inside one transaction: each
//! message whole (its dedupe record, events, suppression rows, counts,
//! alerts) or, a duplicate, not at all. The common work is done with one
//! multi-row statement per table for the whole batch.

use crate::address::EmailAddress;
use crate::guard::{self, Counts, GuardPolicy, hour_of};
use crate::ses::feedback::{Detail, FeedbackEvent};
use crate::ses::policy::{self, Action, Rate, Rule};
use crate::sns::confirm::ConfirmMode;
use crate::store::alerts::{AlertDraft, enqueue};
use crate::store::events::{EventRow, insert_events};
use crate::store::guard::{add_counts, count_volume};
use crate::store::messages::{MessageRow, insert_messages};
use crate::store::subscriptions::{SubscriptionChange, record};
use crate::store::suppressions::{SuppressionWrite, upsert_suppression};
use crate::store::{DbResult, Tx, soft_bounces};
use crate::time::Timestamp;

use super::accepted::{Accepted, Applied, Content, StoreOutcome};

/// How many soft bounces, within how long, suppress an address.
#[derive(Debug, Clone, Copy)]
pub struct SoftBouncePolicy {
    pub limit: i64,
    pub window: time::Duration,
}

/// What the writer applies besides the SQL: the soft-bounce rule and the
/// guard's thresholds.
#[derive(Debug, Clone)]
pub struct ApplyPolicy {
    pub soft_bounce: SoftBouncePolicy,
    pub guard: GuardPolicy,
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventOutcome {
    pub rule: &'static Rule,
    /// False when the same event (same key) was applied before, from another
    /// SNS message: then nothing changed.
    pub applied: bool,
    /// The address is (now) on the suppression list because of this event.
    pub suppressed: bool,
}

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

fn message_row(accepted: &Accepted) -> MessageRow<'_> {
    let m = &accepted.message;
    let e = m.envelope();
    MessageRow {
        message_id: m.message_id(),
        message_type: e.message_type.as_str(),
        topic_arn: m.topic_arn(),
        subject: e.subject(),
        sns_timestamp: e.timestamp,
        received_at: m.received_at(),
        signature_version: m.signature_version().number(),
        via_spool: accepted.via_spool,
        outcome: accepted.outcome_label(),
        outcome_detail: match &accepted.content {
            Content::Unrecognized(why) => Some(why),
            _ => None,
        },
        body: m.raw_body(),
    }
}

/// One event of the batch: its message's index, the event, and its rule.
type Planned<'a> = (usize, &'a FeedbackEvent, &'static Rule);

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

/// Applies `batch` in `tx` (the caller commits). Returns what became of
/// each message, in the batch's order.
pub async fn apply_batch(
    tx: &mut Tx<'_>,
    batch: &[&Accepted],
    policy: &ApplyPolicy,
    now: Timestamp,
) -> DbResult<Vec<Applied>> {
    let rows: Vec<MessageRow<'_>> = batch.iter().map(|a| message_row(a)).collect();
    let new = insert_messages(tx, &rows, now).await?;
    let mut applied: Vec<Applied> = new
        .iter()
        .map(|&stored| Applied {
            outcome: if stored {
                StoreOutcome::Stored
            } else {
                StoreOutcome::Duplicate
            },
            events: Vec::new(),
            unrecognized: None,
            unsubscribed: false,
        })
        .collect();
    let stored: Vec<usize> = (0..batch.len()).filter(|i| new[*i]).collect();

    let events: Vec<Planned<'_>> = stored
        .iter()
        .filter_map(|i| match &batch[*i].content {
            Content::Feedback(events) => Some(
                events
                    .iter()
                    .map(move |e| (*i, e, policy::decide(&e.detail))),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    let mut counts = Counts::default();
    if !events.is_empty() {
        let event_rows: Vec<EventRow<'_>> = events.iter().map(|p| event_row(batch, p)).collect();
        let fresh = insert_events(tx, &event_rows).await?;
        let mut volume: Vec<(&str, &str, bool)> = Vec::new();
        let mut deliveries: Vec<(&EmailAddress, Timestamp)> = Vec::new();
        for ((i, event, rule), fresh) in events.iter().zip(fresh) {
            let mut outcome = EventOutcome {
                rule,
                applied: fresh,
                suppressed: false,
            };
            if fresh {
                let (recipients, from_delivery) = volume_of(event);
                volume.extend(
                    recipients
                        .into_iter()
                        .map(|r| (event.ses_message_id.as_str(), r.as_str(), from_delivery)),
                );
                counts.add(numerators(event, rule));
                match rule.action {
                    Action::Suppress | Action::CountSoftBounce => {
                        let m = &batch[*i].message;
                        outcome.suppressed = act_on(
                            tx,
                            event,
                            rule,
                            m.message_id(),
                            m.topic_arn(),
                            policy.soft_bounce,
                        )
                        .await?;
                    }
                    Action::ResetSoftBounces => {
                        deliveries.extend(event.recipient.iter().map(|r| (r, event.occurred_at)))
                    }
                    Action::ContentProblem | Action::NotSpam | Action::Record => {}
                }
            }
            applied[*i].events.push((event.event_type.clone(), outcome));
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
        if !deliveries.is_empty() {
            soft_bounces::reset(tx, &deliveries).await?;
        }
    }

    for i in stored {
        apply_other(tx, batch[i], &mut applied[i], now).await?;
    }
    // One counter update per batch; the rates can only rise when hard
    // bounces or complaints were added, so only then is the guard asked.
    if !counts.is_zero() {
        add_counts(tx, hour_of(now), counts).await?;
    }
    if counts.hard_bounces > 0 || counts.complaints > 0 {
        guard::check(tx, &policy.guard, now).await?;
    }
    Ok(applied)
}

/// Suppresses, or counts a soft bounce for, the recipient of a new event of
/// SNS message `sns_message_id` from `topic`, as `rule` says. Returns whether
/// the address is (now) suppressed because of it.
async fn act_on(
    tx: &mut Tx<'_>,
    event: &FeedbackEvent,
    rule: &Rule,
    sns_message_id: &str,
    topic: &str,
    soft: SoftBouncePolicy,
) -> DbResult<bool> {
    let Some(email) = event.recipient.as_ref() else {
        return Ok(false);
    };
    let d = DetailColumns::of(event);
    let source = format!("sns:{topic}");
    let mut row = SuppressionWrite {
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
        seen_at: event.occurred_at,
        ses_message_id: Some(&event.ses_message_id),
        sns_message_id: Some(sns_message_id),
        source: &source,
        note: None,
    };
    match rule.action {
        Action::Suppress => {
            upsert_suppression(tx, &row).await?;
            Ok(true)
        }
        Action::CountSoftBounce => {
            let window_start = event.occurred_at.saturating_sub(soft.window);
            let count = soft_bounces::count(tx, email, event.occurred_at, window_start).await?;
            if count < soft.limit {
                return Ok(false);
            }
            let note = format!(
                "{count} soft bounces within {} days",
                soft.window.whole_days()
            );
            row.note = Some(&note);
            upsert_suppression(tx, &row).await?;
            Ok(true)
        }
        Action::ResetSoftBounces | Action::ContentProblem | Action::NotSpam | Action::Record => {
            Ok(false)
        }
    }
}

/// What a stored message does besides SES events: subscription state,
/// the feed-stopped alert, the reason its content was not understood.
async fn apply_other(
    tx: &mut Tx<'_>,
    accepted: &Accepted,
    applied: &mut Applied,
    now: Timestamp,
) -> DbResult<()> {
    let m = &accepted.message;
    match &accepted.content {
        Content::Unrecognized(why) => applied.unrecognized = Some(why.clone()),
        Content::SubscriptionConfirmation { confirmed } => {
            let change = SubscriptionChange {
                topic_arn: m.topic_arn(),
                subscription_arn: confirmed
                    .as_ref()
                    .and_then(|c| c.subscription_arn.as_deref()),
                state: match confirmed {
                    Some(c) if c.mode != ConfirmMode::Off => "confirmed",
                    _ => "pending",
                },
                confirm_mode: confirmed.as_ref().map(|c| c.mode.as_str()),
                message_id: m.message_id(),
                message_at: m.envelope().timestamp,
                now,
            };
            record(tx, &change).await?;
        }
        Content::UnsubscribeConfirmation => {
            let change = SubscriptionChange {
                topic_arn: m.topic_arn(),
                subscription_arn: None,
                state: "unsubscribed",
                confirm_mode: None,
                message_id: m.message_id(),
                message_at: m.envelope().timestamp,
                now,
            };
            record(tx, &change).await?;
            applied.unsubscribed = true;
            let draft = AlertDraft {
                kind: "unsubscribed",
                subject: "bouncer: the SES feedback feed stopped".into(),
                text: format!(
                    ":rotating_light: The SNS subscription of bouncer to {} was deleted (UnsubscribeConfirmation). No more bounces or complaints arrive from it: the sender is flying blind until the endpoint is subscribed again.",
                    m.topic_arn()
                ),
                details: serde_json::json!({ "topic_arn": m.topic_arn(), "message_id": m.message_id() }),
            };
            enqueue(tx, &draft, now).await?;
        }
        Content::Feedback(_) | Content::SesSetupNotice => {}
    }
    Ok(())
}
