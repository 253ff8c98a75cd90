//! A verified message on its way into the database, with its content
//! parsed on the request's worker (so the single writer task does no
//! parsing), and what became of it.

use super::apply::EventOutcome;
use crate::ses::feedback::{self, FeedbackEvent, Parsed};
use crate::sns::confirm::Confirmed;
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
            MessageType::Notification => {
                match feedback::parse(&message.envelope().message, message.envelope().timestamp) {
                    // SES publishes an event after it happened: a time later
                    // than the signed Timestamp is wrong, and would hold the
                    // row's details against every real event after it.
                    Parsed::Feedback(mut events) => {
                        let published = message.envelope().timestamp;
                        for event in &mut events {
                            event.occurred_at = event.occurred_at.min(published);
                        }
                        Content::Feedback(events)
                    }
                    Parsed::SubscriptionSucceeded => Content::SesSetupNotice,
                    Parsed::Unrecognized(why) => Content::Unrecognized(why),
                }
            }
        };
        Accepted {
            message,
            content,
            via_spool,
        }
    }

    /// The `outcome` column of `sns_messages`.
    pub(crate) fn outcome_label(&self) -> &'static str {
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
