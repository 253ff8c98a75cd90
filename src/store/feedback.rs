//! What an SES event does to the suppression list and the reputation
//! counts, inside the SNS message's transaction. The event log and the
//! volume are written for a whole batch at once (`store::batch`); the rarer
//! suppressions and soft-bounce counts here, one event at a time.

use super::batch::DetailColumns;
use super::{Timestamp, Tx, on_tx};
use crate::guard::Counts;
use crate::ses::address::EmailAddress;
use crate::ses::feedback::{Detail, FeedbackEvent};
use crate::ses::policy::{Action, Rate, Rule};

/// How many soft bounces, within how long, suppress an address.
#[derive(Debug, Clone, Copy)]
pub struct SoftBouncePolicy {
    pub limit: i64,
    pub window: time::Duration,
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
pub fn volume_of(event: &FeedbackEvent) -> (Vec<&EmailAddress>, bool) {
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
pub fn numerators(event: &FeedbackEvent, rule: &Rule) -> Counts {
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

/// The columns of a suppression row written from an event or by hand.
pub struct SuppressionWrite<'a> {
    pub email: &'a EmailAddress,
    pub reason: &'a str,
    pub bounce_type: Option<&'a str>,
    pub bounce_subtype: Option<&'a str>,
    pub complaint_feedback_type: Option<&'a str>,
    pub diagnostic_code: Option<&'a str>,
    pub seen_at: Timestamp,
    pub ses_message_id: Option<&'a str>,
    pub sns_message_id: Option<&'a str>,
    pub source: &'a str,
    pub note: Option<&'a str>,
}

/// A newer event replaces the row's details; an older one arriving late only
/// widens first/last seen and the count.
const UPSERT_SUPPRESSION: &str = "INSERT INTO suppressions \
    (email, reason, bounce_type, bounce_subtype, complaint_feedback_type, diagnostic_code, \
     first_seen_at, last_seen_at, event_count, last_ses_message_id, last_sns_message_id, source, note) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 1, $8, $9, $10, $11) \
    ON CONFLICT (email) DO UPDATE SET \
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
      event_count = suppressions.event_count + 1, \
      note = COALESCE(excluded.note, suppressions.note)";

/// Counts a soft bounce; a streak older than the window starts over.
const COUNT_SOFT_BOUNCE: &str = "INSERT INTO soft_bounces (email, count, first_at, last_at) \
    VALUES ($1, 1, $2, $2) \
    ON CONFLICT (email) DO UPDATE SET \
      count = CASE WHEN soft_bounces.first_at < $3 THEN 1 ELSE soft_bounces.count + 1 END, \
      first_at = CASE WHEN soft_bounces.first_at < $3 THEN excluded.first_at ELSE soft_bounces.first_at END, \
      last_at = CASE WHEN excluded.last_at > soft_bounces.last_at THEN excluded.last_at ELSE soft_bounces.last_at END \
    RETURNING count";

pub async fn upsert_suppression(
    tx: &mut Tx,
    row: &SuppressionWrite<'_>,
) -> Result<(), sqlx::Error> {
    on_tx!(tx, conn => sqlx::query(UPSERT_SUPPRESSION)
        .bind(row.email.as_str())
        .bind(row.reason)
        .bind(row.bounce_type)
        .bind(row.bounce_subtype)
        .bind(row.complaint_feedback_type)
        .bind(row.diagnostic_code)
        .bind(row.seen_at)
        .bind(row.ses_message_id)
        .bind(row.sns_message_id)
        .bind(row.source)
        .bind(row.note)
        .execute(conn)
        .await
        .map(|_| ()))
}

/// Suppresses, or counts a soft bounce for, the recipient of a new event of
/// SNS message `sns_message_id` from `topic`, as `rule` says. Returns whether
/// the address is (now) suppressed because of it.
pub async fn act_on(
    tx: &mut Tx,
    event: &FeedbackEvent,
    rule: &Rule,
    sns_message_id: &str,
    topic: &str,
    soft: SoftBouncePolicy,
) -> Result<bool, sqlx::Error> {
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
            let count: i64 = on_tx!(tx, conn => sqlx::query_scalar(COUNT_SOFT_BOUNCE)
                .bind(email.as_str())
                .bind(event.occurred_at)
                .bind(window_start)
                .fetch_one(conn)
                .await)?;
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
