//! `sns_messages`: every accepted SNS message, once per MessageId. The
//! primary key is the dedupe: a second delivery (even at the same moment on
//! another connection or another replica) inserts nothing and applies
//! nothing. A new notification's SES events are applied in the same
//! transaction.

use super::alerts::{AlertDraft, enqueue};
use super::feedback::{EventOutcome, apply_event};
use super::guard::{add_counts, check};
use super::subscriptions::{SubscriptionChange, record};
use super::{Store, Timestamp, Tx, on_tx};
use crate::guard::Counts;
use crate::ses::feedback::{self, FeedbackEvent, Parsed};
use crate::sns::confirm::{ConfirmMode, Confirmed};
use crate::sns::envelope::MessageType;
use crate::sns::verify::VerifiedMessage;

/// What a verified message carries for the store, parsed before it reaches
/// the writer (so the single writer task does no parsing).
#[derive(Debug, Clone)]
pub enum Content {
    /// `confirmed` is filled in by the route once SNS accepted the
    /// confirmation (or by the spool, which kept it).
    SubscriptionConfirmation {
        confirmed: Option<Confirmed>,
    },
    UnsubscribeConfirmation,
    Feedback(Vec<FeedbackEvent>),
    /// SES's test message when a topic is attached to an identity.
    SesSetupNotice,
    /// A notification whose Message bouncer does not understand.
    Unrecognized(String),
}

/// A verified message on its way into the database.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub message: VerifiedMessage,
    pub content: Content,
    /// It waited in the local spool while the database was unreachable.
    pub via_spool: bool,
}

impl Accepted {
    pub fn new(message: VerifiedMessage, via_spool: bool) -> Accepted {
        let content = match message.message_type() {
            MessageType::SubscriptionConfirmation => {
                Content::SubscriptionConfirmation { confirmed: None }
            }
            MessageType::UnsubscribeConfirmation => Content::UnsubscribeConfirmation,
            MessageType::Notification => match feedback::parse(&message.envelope().message) {
                Parsed::Feedback(events) => Content::Feedback(events),
                Parsed::SubscriptionSucceeded => Content::SesSetupNotice,
                Parsed::Unrecognized(why) => Content::Unrecognized(why),
            },
        };
        Accepted {
            message,
            content,
            via_spool,
        }
    }

    /// The `outcome` column of `sns_messages`.
    fn outcome_label(&self) -> &'static str {
        match self.content {
            Content::SubscriptionConfirmation { .. } | Content::UnsubscribeConfirmation => "stored",
            Content::Feedback(_) => "applied",
            Content::SesSetupNotice => "recorded",
            Content::Unrecognized(_) => "unrecognized",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored now, for the first time.
    Stored,
    /// The MessageId was stored before: nothing changed.
    Duplicate,
}

impl StoreOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOutcome::Stored => "stored",
            StoreOutcome::Duplicate => "duplicate",
        }
    }
}

/// What happened to one message of a committed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub outcome: StoreOutcome,
    /// One per SES event the message carried (empty for a duplicate).
    pub events: Vec<(String, EventOutcome)>,
    /// Why the content was not understood, if it was not.
    pub unrecognized: Option<String>,
    /// This message ended a subscription: the feed from its topic stopped.
    pub unsubscribed: bool,
}

const INSERT_MESSAGE: &str = "INSERT INTO sns_messages \
     (message_id, message_type, topic_arn, subject, sns_timestamp, received_at, stored_at, \
      signature_version, via_spool, outcome, outcome_detail, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (message_id) DO NOTHING";

/// Inserts the message; `false` when its MessageId was already there.
async fn insert_message(
    tx: &mut Tx,
    accepted: &Accepted,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let m = &accepted.message;
    let e = m.envelope();
    let detail = match &accepted.content {
        Content::Unrecognized(why) => Some(why.as_str()),
        _ => None,
    };
    let rows = on_tx!(tx, conn => sqlx::query(INSERT_MESSAGE)
        .bind(m.message_id())
        .bind(e.message_type.as_str())
        .bind(m.topic_arn())
        .bind(e.subject())
        .bind(e.timestamp)
        .bind(m.received_at())
        .bind(now)
        .bind(m.signature_version().number())
        .bind(accepted.via_spool)
        .bind(accepted.outcome_label())
        .bind(detail)
        .bind(m.raw_body())
        .execute(conn)
        .await?
        .rows_affected());
    Ok(rows == 1)
}

impl Store {
    /// Applies one message inside an open transaction: its dedupe record
    /// and everything it causes, or (a duplicate) nothing.
    async fn apply_one(
        &self,
        tx: &mut Tx,
        accepted: &Accepted,
        now: Timestamp,
    ) -> Result<Applied, sqlx::Error> {
        let mut applied = Applied {
            outcome: StoreOutcome::Duplicate,
            events: Vec::new(),
            unrecognized: None,
            unsubscribed: false,
        };
        if !insert_message(tx, accepted, now).await? {
            return Ok(applied);
        }
        applied.outcome = StoreOutcome::Stored;
        let m = &accepted.message;
        match &accepted.content {
            Content::Feedback(events) => {
                for event in events {
                    let outcome = apply_event(
                        tx,
                        event,
                        m.message_id(),
                        m.topic_arn(),
                        m.received_at(),
                        self.policy.soft_bounce,
                    )
                    .await?;
                    applied.events.push((event.event_type.clone(), outcome));
                }
            }
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
                enqueue(tx, &draft, &self.policy.alert_channels, now).await?;
            }
            Content::SesSetupNotice => {}
        }
        Ok(applied)
    }

    /// Applies `batch` in one transaction and one commit (group commit);
    /// each message is applied whole or, if the commit fails, not at all.
    pub async fn apply_batch(
        &self,
        batch: &[&Accepted],
        now: Timestamp,
    ) -> Result<Vec<Applied>, sqlx::Error> {
        let mut tx = self.begin().await?;
        let mut applied = Vec::with_capacity(batch.len());
        let mut counts = Counts::default();
        for accepted in batch {
            let one = self.apply_one(&mut tx, accepted, now).await?;
            one.events.iter().for_each(|(_, e)| counts.add(e.counts));
            applied.push(one);
        }
        // One counter update per batch; the rates can only rise when hard
        // bounces or complaints were added, so only then is the guard asked.
        if !counts.is_zero() {
            add_counts(&mut tx, now, counts).await?;
        }
        if counts.hard_bounces > 0 || counts.complaints > 0 {
            check(
                &mut tx,
                &self.policy.guard,
                &self.policy.alert_channels,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(applied)
    }
}
