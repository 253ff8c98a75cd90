//! `sns_messages`: every accepted SNS message, once per MessageId. The
//! primary key is the dedupe: a second delivery (even at the same moment on
//! another connection or another replica) inserts nothing and applies
//! nothing. A new notification's SES events are applied in the same
//! transaction.

use std::collections::HashSet;

use super::alerts::{AlertDraft, enqueue};
use super::batch::{self, EventRow};
use super::feedback::{EventOutcome, act_on, numerators, volume_of};
use super::guard::{add_counts, check};
use super::subscriptions::{SubscriptionChange, record};
use super::{Store, Timestamp, Tx};
use crate::guard::Counts;
use crate::ses::address::EmailAddress;
use crate::ses::feedback::{self, FeedbackEvent, Parsed};
use crate::ses::policy::{self, Action};
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
    pub(super) fn outcome_label(&self) -> &'static str {
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

impl Store {
    /// Applies `batch` in one transaction and one commit (group commit).
    /// Each message is applied whole: its dedupe record, events, suppression
    /// rows, counts and alerts, or (a duplicate) nothing; if the commit
    /// fails, none of the batch is applied. The common work is done with one
    /// multi-row statement per table for the whole batch.
    pub async fn apply_batch(
        &self,
        batch: &[&Accepted],
        now: Timestamp,
    ) -> Result<Vec<Applied>, sqlx::Error> {
        let mut tx = self.begin().await?;
        let new_ids = batch::insert_messages(&mut tx, batch, now).await?;
        // The first copy of a new id in the batch is the stored one.
        let mut claimed = HashSet::new();
        let mut applied: Vec<Applied> = batch
            .iter()
            .map(|a| {
                let id = a.message.message_id();
                let stored = new_ids.contains(id) && claimed.insert(id);
                Applied {
                    outcome: if stored {
                        StoreOutcome::Stored
                    } else {
                        StoreOutcome::Duplicate
                    },
                    events: Vec::new(),
                    unrecognized: None,
                    unsubscribed: false,
                }
            })
            .collect();
        let stored: Vec<usize> = (0..batch.len())
            .filter(|i| applied[*i].outcome == StoreOutcome::Stored)
            .collect();

        let events: Vec<EventRow<'_>> = stored
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
            let new_keys = batch::insert_events(&mut tx, &events, batch).await?;
            let mut seen = HashSet::new();
            let mut volume: Vec<(&str, &str, bool)> = Vec::new();
            let mut deliveries: Vec<(&EmailAddress, Timestamp)> = Vec::new();
            for (i, event, rule) in &events {
                // Not new: the same event came in another SNS message.
                let fresh = new_keys.contains(&event.key) && seen.insert(event.key.as_str());
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
                                &mut tx,
                                event,
                                rule,
                                m.message_id(),
                                m.topic_arn(),
                                self.policy.soft_bounce,
                            )
                            .await?;
                        }
                        Action::ResetSoftBounces => deliveries
                            .extend(event.recipient.iter().map(|r| (r, event.occurred_at))),
                        Action::ContentProblem | Action::NotSpam | Action::Record => {}
                    }
                }
                applied[*i].events.push((event.event_type.clone(), outcome));
            }
            if !volume.is_empty() {
                counts.add(batch::count_volume(&mut tx, &volume, now).await?);
            }
            if !deliveries.is_empty() {
                batch::reset_soft_bounces(&mut tx, &deliveries).await?;
            }
        }

        for i in stored {
            self.apply_other(&mut tx, batch[i], &mut applied[i], now)
                .await?;
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

    /// What a stored message does besides SES events: subscription state,
    /// the feed-stopped alert, the reason its content was not understood.
    async fn apply_other(
        &self,
        tx: &mut Tx,
        accepted: &Accepted,
        applied: &mut Applied,
        now: Timestamp,
    ) -> Result<(), sqlx::Error> {
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
                enqueue(tx, &draft, &self.policy.alert_channels, now).await?;
            }
            Content::Feedback(_) | Content::SesSetupNotice => {}
        }
        Ok(())
    }
}
