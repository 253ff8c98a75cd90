//! Applies SES feedback events inside the SNS message's transaction: the
//! event log (`feedback_events`, once per event key), the suppression list,
//! and the soft-bounce counts.

use super::{Timestamp, Tx, on_tx};
use crate::guard::Counts;
use crate::ses::address::EmailAddress;
use crate::ses::feedback::{Detail, FeedbackEvent};
use crate::ses::policy::{self, Action, Rate, Rule};

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
    /// What it adds to the reputation counters.
    pub counts: Counts,
}

/// The mailbox simulator's addresses count toward no rate, as at SES.
fn is_simulator(email: &EmailAddress) -> bool {
    email.as_str().ends_with("@simulator.amazonses.com")
}

const COUNT_VOLUME: &str = "INSERT INTO rate_volume (mail_id, recipient, seen_at) VALUES ($1, $2, $3) \
    ON CONFLICT (mail_id, recipient) DO NOTHING";

/// Counts the sends an event proves, once per mail and recipient whichever
/// event (Send, Delivery, Bounce) arrives first.
async fn count_volume(
    tx: &mut Tx,
    event: &FeedbackEvent,
    rule: &Rule,
    received_at: Timestamp,
) -> Result<Counts, sqlx::Error> {
    let mut counts = Counts::default();
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
    for r in recipients.into_iter().filter(|r| !is_simulator(r)) {
        let new = on_tx!(tx, conn => sqlx::query(COUNT_VOLUME)
            .bind(&event.ses_message_id)
            .bind(r.as_str())
            .bind(received_at)
            .execute(conn)
            .await?
            .rows_affected())
            == 1;
        if new {
            counts.sends += 1;
            counts.delivery_sends += i64::from(from_delivery);
        }
    }
    if event.recipient.as_ref().is_some_and(|r| !is_simulator(r)) {
        match rule.rate {
            Rate::HardBounce => counts.hard_bounces += 1,
            Rate::Complaint => counts.complaints += 1,
            Rate::None => {}
        }
    }
    Ok(counts)
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

const INSERT_EVENT: &str = "INSERT INTO feedback_events \
    (event_key, sns_message_id, event_type, format, ses_message_id, email, feedback_id, \
     bounce_type, bounce_subtype, complaint_feedback_type, status, diagnostic_code, action, \
     occurred_at, received_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
    ON CONFLICT (event_key) DO NOTHING";

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

/// A delivery resets the count, unless the bounces came after it.
const RESET_SOFT_BOUNCES: &str = "DELETE FROM soft_bounces WHERE email = $1 AND last_at <= $2";

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

/// Applies one event of SNS message `sns_message_id` from topic `topic`.
pub async fn apply_event(
    tx: &mut Tx,
    event: &FeedbackEvent,
    sns_message_id: &str,
    topic: &str,
    received_at: Timestamp,
    soft: SoftBouncePolicy,
) -> Result<EventOutcome, sqlx::Error> {
    let rule = policy::decide(&event.detail);
    let (bounce_type, bounce_subtype, status, diagnostic) = match &event.detail {
        Detail::Bounce {
            bounce_type,
            bounce_subtype,
            status,
            diagnostic_code,
        } => (
            Some(bounce_type.as_str()),
            Some(bounce_subtype.as_str()),
            status.as_deref(),
            diagnostic_code.as_deref(),
        ),
        _ => (None, None, None, None),
    };
    let feedback_type = match &event.detail {
        Detail::Complaint { feedback_type, .. } => feedback_type.as_deref(),
        _ => None,
    };
    let email = event.recipient.as_ref();
    let inserted = on_tx!(tx, conn => sqlx::query(INSERT_EVENT)
        .bind(&event.key)
        .bind(sns_message_id)
        .bind(&event.event_type)
        .bind(event.format.as_str())
        .bind(&event.ses_message_id)
        .bind(email.map(EmailAddress::as_str))
        .bind(event.feedback_id.as_deref())
        .bind(bounce_type)
        .bind(bounce_subtype)
        .bind(feedback_type)
        .bind(status)
        .bind(diagnostic)
        .bind(rule.action.as_str())
        .bind(event.occurred_at)
        .bind(received_at)
        .execute(conn)
        .await?
        .rows_affected())
        == 1;
    let mut outcome = EventOutcome {
        rule,
        applied: inserted,
        suppressed: false,
        counts: Counts::default(),
    };
    if !inserted {
        return Ok(outcome);
    }
    outcome.counts = count_volume(tx, event, rule, received_at).await?;
    let Some(email) = email else {
        return Ok(outcome);
    };
    let source = format!("sns:{topic}");
    let mut row = SuppressionWrite {
        email,
        reason: if matches!(event.detail, Detail::Complaint { .. }) {
            "complaint"
        } else {
            "bounce"
        },
        bounce_type,
        bounce_subtype,
        complaint_feedback_type: feedback_type,
        diagnostic_code: diagnostic,
        seen_at: event.occurred_at,
        ses_message_id: Some(&event.ses_message_id),
        sns_message_id: Some(sns_message_id),
        source: &source,
        note: None,
    };
    match rule.action {
        Action::Suppress => {
            upsert_suppression(tx, &row).await?;
            outcome.suppressed = true;
        }
        Action::CountSoftBounce => {
            let window_start = event.occurred_at.saturating_sub(soft.window);
            let count: i64 = on_tx!(tx, conn => sqlx::query_scalar(COUNT_SOFT_BOUNCE)
                .bind(email.as_str())
                .bind(event.occurred_at)
                .bind(window_start)
                .fetch_one(conn)
                .await)?;
            if count >= soft.limit {
                let note = format!(
                    "{count} soft bounces within {} days",
                    soft.window.whole_days()
                );
                row.note = Some(&note);
                upsert_suppression(tx, &row).await?;
                outcome.suppressed = true;
            }
        }
        Action::ResetSoftBounces => {
            on_tx!(tx, conn => sqlx::query(RESET_SOFT_BOUNCES)
                .bind(email.as_str())
                .bind(event.occurred_at)
                .execute(conn)
                .await
                .map(|_| ()))?;
        }
        Action::ContentProblem | Action::NotSpam | Action::Record => {}
    }
    Ok(outcome)
}
