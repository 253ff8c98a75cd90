//! Applying a batch of accepted messages inside one transaction: each
//! message whole (its dedupe record, events, suppression rows, counts,
//! alerts) or, a duplicate, not at all. Each table is written with one
//! multi-row statement for the whole batch (`effects`), whatever its kinds.

use std::collections::BTreeMap;

use crate::guard::{self, Counts, GuardPolicy, hour_of};
use crate::ses::policy::{self, Rule};
use crate::sns::confirm::ConfirmMode;
use crate::store::alerts::{AlertDraft, enqueue};
use crate::store::guard::{CountChange, add_counts, change_hours, guard_state};
use crate::store::messages::{MessageRow, insert_messages};
use crate::store::subscriptions::{SubscriptionChange, record};
use crate::store::{DbResult, Tx};
use crate::time::Timestamp;

use super::accepted::{Accepted, Applied, Content, StoreOutcome};
use super::effects::{Planned, apply_events};

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

/// What a batch did.
#[derive(Debug)]
pub struct BatchApplied {
    /// What became of each message, in the batch's order.
    pub messages: Vec<Applied>,
    /// Sends counted before that SES's word in this batch took back (an
    /// `OnAccountSuppressionList` bounce or complaint, a `Reject`, a
    /// `Rendering Failure`), once each.
    pub sends_taken_back: usize,
}

/// Applies `batch` in `tx` (the caller commits).
pub async fn apply_batch(
    tx: &mut Tx<'_>,
    batch: &[&Accepted],
    policy: &ApplyPolicy,
    now: Timestamp,
) -> DbResult<BatchApplied> {
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
    let mut change = CountChange::default();
    if !events.is_empty() {
        change = apply_events(tx, batch, &events, policy.soft_bounce, &mut applied, now).await?;
    }

    for i in stored {
        apply_other(tx, batch[i], &mut applied[i], now).await?;
    }
    // One counter update per batch, and the guard asked whatever was
    // counted: sends alone can bring a window above a line up to the
    // minimum volume (a pause), bring both rates back under the warning
    // lines (the warning re-armed), or push a good old hour out of a full
    // window.
    let counted = change.counted;
    let sends_taken_back = change.taken_back.len();
    if write_counts(tx, change, &policy.guard, now).await? {
        guard::check(tx, &policy.guard, now, counted).await?;
    }
    Ok(BatchApplied {
        messages: applied,
        sends_taken_back,
    })
}

/// Writes what the batch changed in the rates' counts: its own hour's,
/// and the sends taken back, each from the hour it was counted in.
/// Returns whether anything changed.
async fn write_counts(
    tx: &mut Tx<'_>,
    change: CountChange,
    policy: &GuardPolicy,
    now: Timestamp,
) -> DbResult<bool> {
    if change.taken_back.is_empty() {
        // The common batch: one hour, one upsert.
        if change.counted.is_zero() {
            return Ok(false);
        }
        add_counts(tx, hour_of(now), change.counted).await?;
        return Ok(true);
    }
    // A send counted before the last resume is outside every window from
    // then on (or, in the resume's hour, in the baseline the window
    // subtracts): taking it back would undercount the window. One counted
    // in an hour older than the window's oldest (the guard's maximum age)
    // is in no window either, and its hour may be pruned.
    let since = guard_state(tx, false).await?.counting_since;
    let oldest_hour = hour_of(now.saturating_sub(policy.max_age));
    let taken: Vec<(Timestamp, Counts)> = change
        .taken_back
        .into_iter()
        .filter(|(seen_at, _)| *seen_at >= since && hour_of(*seen_at) >= oldest_hour)
        .collect();
    // Every hour with a take-back is written, even when the batch's own
    // counts cancel it: the statement then holds it before the state row,
    // and a put-back below writes no hour it does not hold.
    let mut by_hour = signed_by_hour(&taken, -1);
    if !change.counted.is_zero() {
        by_hour.entry(hour_of(now)).or_default().add(change.counted);
    }
    if by_hour.is_empty() {
        return Ok(false);
    }
    let changes: Vec<(Timestamp, Counts)> = by_hour.into_iter().collect();
    let written = change_hours(tx, &changes).await?;
    if written.is_empty() {
        return Ok(false);
    }
    // `since` was read without a lock: a resume that committed since made
    // the sends counted before it part of its hour's baseline, and what
    // was taken back of them goes back in. The state row is locked after
    // the hours and days, as by every writer (a resume locks it first and
    // then only reads hours), and the lock waits for a resume in flight
    // (PostgreSQL; on SQLite none can be).
    let resumed = guard_state(tx, true).await?.counting_since;
    if resumed > since {
        let before: Vec<(Timestamp, Counts)> = taken
            .into_iter()
            .filter(|(seen_at, _)| *seen_at < resumed && written.contains(&hour_of(*seen_at)))
            .collect();
        let again: Vec<(Timestamp, Counts)> = signed_by_hour(&before, 1).into_iter().collect();
        if !again.is_empty() {
            change_hours(tx, &again).await?;
        }
    }
    Ok(true)
}

/// The sends and delivery sends of `taken`, summed by the hour each was
/// counted in, with `sign`.
fn signed_by_hour(taken: &[(Timestamp, Counts)], sign: i64) -> BTreeMap<Timestamp, Counts> {
    let mut by_hour: BTreeMap<Timestamp, Counts> = BTreeMap::new();
    for (seen_at, c) in taken {
        let hour = by_hour.entry(hour_of(*seen_at)).or_default();
        hour.sends += sign * c.sends;
        hour.delivery_sends += sign * c.delivery_sends;
    }
    by_hour
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
