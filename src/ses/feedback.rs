//! SES feedback, parsed from the `Message` of a verified notification.
//!
//! Both formats: classic notifications (`notificationType`) and event
//! publishing (`eventType`). Fields bouncer does not use are ignored, so SES
//! may add fields at any time. The result is one [`FeedbackEvent`] per
//! recipient the event is about (or one for the mail when it names none).

use serde::Deserialize;
use serde_json::Value;

use crate::address::EmailAddress;
use crate::telemetry::escaped;
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Identity notifications: `notificationType`.
    Classic,
    /// Configuration-set event publishing: `eventType`.
    EventPublishing,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Classic => "classic",
            Format::EventPublishing => "event",
        }
    }
}

/// What a feedback event says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    Bounce {
        bounce_type: String,
        bounce_subtype: String,
        status: Option<String>,
        diagnostic_code: Option<String>,
    },
    Complaint {
        feedback_type: Option<String>,
        complaint_subtype: Option<String>,
    },
    Delivery,
    /// Send, Reject, DeliveryDelay, Rendering Failure, Open, Click,
    /// Subscription: recorded and counted, no effect on the list.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackEvent {
    /// As SES names it: `Bounce`, `Complaint`, `Delivery`, `Send`, ...
    pub event_type: String,
    pub format: Format,
    pub ses_message_id: String,
    pub recipient: Option<EmailAddress>,
    pub feedback_id: Option<String>,
    /// When the event happened (the event's own timestamp, else the mail's).
    pub occurred_at: Timestamp,
    pub detail: Detail,
    /// Idempotency key: the same event arriving in two SNS messages (identity
    /// notifications and a configuration set both publishing) has one key.
    pub key: String,
    /// Recipients of the whole mail (`mail.destination`).
    pub destination_count: usize,
    /// Those recipients, normalized (filled for Send events only, which
    /// count the whole mail's volume).
    pub destination: Vec<EmailAddress>,
}

/// What the `Message` of a notification turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Feedback(Vec<FeedbackEvent>),
    /// SES's test message when a topic is attached to an identity.
    SubscriptionSucceeded,
    /// Not SES feedback bouncer understands; kept whole and counted.
    Unrecognized(String),
}

#[derive(Deserialize)]
struct Mail {
    #[serde(rename = "messageId")]
    message_id: Option<String>,
    timestamp: Option<String>,
    #[serde(default)]
    destination: Vec<String>,
}

#[derive(Deserialize)]
struct BouncedRecipient {
    #[serde(rename = "emailAddress")]
    email_address: String,
    status: Option<String>,
    #[serde(rename = "diagnosticCode")]
    diagnostic_code: Option<String>,
}

#[derive(Deserialize)]
struct Bounce {
    #[serde(rename = "bounceType")]
    bounce_type: String,
    #[serde(rename = "bounceSubType")]
    bounce_sub_type: Option<String>,
    #[serde(rename = "bouncedRecipients")]
    bounced_recipients: Vec<BouncedRecipient>,
    #[serde(rename = "feedbackId")]
    feedback_id: Option<String>,
    timestamp: Option<String>,
}

#[derive(Deserialize)]
struct ComplainedRecipient {
    #[serde(rename = "emailAddress")]
    email_address: String,
}

#[derive(Deserialize)]
struct Complaint {
    #[serde(rename = "complainedRecipients")]
    complained_recipients: Vec<ComplainedRecipient>,
    #[serde(rename = "feedbackId")]
    feedback_id: Option<String>,
    timestamp: Option<String>,
    #[serde(rename = "complaintFeedbackType")]
    complaint_feedback_type: Option<String>,
    #[serde(rename = "complaintSubType")]
    complaint_sub_type: Option<String>,
}

#[derive(Deserialize)]
struct Delivery {
    timestamp: Option<String>,
    recipients: Vec<String>,
}

/// The events for the recipients that are addresses; a recipient that is
/// not one is logged and skipped, so it cannot cost the others their event.
/// Only when none is left is the whole message not understood.
fn only_valid(
    events: impl Iterator<Item = Result<FeedbackEvent, String>>,
) -> Result<Vec<FeedbackEvent>, String> {
    let mut valid = Vec::new();
    let mut refused = Vec::new();
    for event in events {
        match event {
            Ok(event) => valid.push(event),
            Err(why) => refused.push(why),
        }
    }
    if valid.is_empty() {
        return Err(refused.join("; "));
    }
    for why in refused {
        tracing::warn!(why = %escaped(&why), "SES event recipient skipped");
    }
    Ok(valid)
}

/// Parses `message` (the notification's `Message`).
pub fn parse(message: &str) -> Parsed {
    let value: Value = match serde_json::from_str(message) {
        Ok(value) => value,
        Err(_) => return Parsed::Unrecognized("the Message is not JSON".into()),
    };
    let (format, event_type) = if let Some(t) = value.get("eventType").and_then(Value::as_str) {
        (Format::EventPublishing, t.to_owned())
    } else if let Some(t) = value.get("notificationType").and_then(Value::as_str) {
        (Format::Classic, t.to_owned())
    } else {
        return Parsed::Unrecognized("neither notificationType nor eventType".into());
    };
    if event_type == "AmazonSnsSubscriptionSucceeded" {
        return Parsed::SubscriptionSucceeded;
    }
    match parse_event(&value, format, &event_type) {
        Ok(events) => Parsed::Feedback(events),
        Err(why) => Parsed::Unrecognized(format!("{event_type}: {why}")),
    }
}

fn field<T: serde::de::DeserializeOwned>(value: &Value, name: &str) -> Result<T, String> {
    let inner = value
        .get(name)
        .ok_or_else(|| format!("no `{name}` object"))?;
    T::deserialize(inner).map_err(|e| format!("`{name}` is malformed: {e}"))
}

fn time_or(text: Option<&str>, fallback: Option<Timestamp>) -> Result<Timestamp, String> {
    text.and_then(Timestamp::parse_rfc3339)
        .or(fallback)
        .ok_or_else(|| "no usable timestamp".into())
}

/// The object event publishing nests its details under (by event type).
fn event_object_name(event_type: &str) -> &str {
    match event_type {
        "Bounce" => "bounce",
        "Complaint" => "complaint",
        "Delivery" => "delivery",
        "Send" => "send",
        "Reject" => "reject",
        "Open" => "open",
        "Click" => "click",
        "Rendering Failure" => "failure",
        "DeliveryDelay" => "deliveryDelay",
        "Subscription" => "subscription",
        other => other,
    }
}

fn parse_event(
    value: &Value,
    format: Format,
    event_type: &str,
) -> Result<Vec<FeedbackEvent>, String> {
    let mail: Mail = field(value, "mail")?;
    let ses_message_id = mail
        .message_id
        .filter(|m| !m.is_empty())
        .ok_or("no mail.messageId")?;
    let mail_time = mail.timestamp.as_deref().and_then(Timestamp::parse_rfc3339);
    let destination_count = mail.destination.len();
    let event = |recipient: Option<EmailAddress>,
                 feedback_id: Option<String>,
                 occurred_at,
                 detail,
                 key: String| FeedbackEvent {
        event_type: event_type.to_owned(),
        format,
        ses_message_id: ses_message_id.clone(),
        recipient,
        feedback_id,
        occurred_at,
        detail,
        key,
        destination_count,
        destination: Vec::new(),
    };
    let address = |text: &str| EmailAddress::parse(text).map_err(|e| e.to_string());
    match event_type {
        "Bounce" => {
            let bounce: Bounce = field(value, "bounce")?;
            let at = time_or(bounce.timestamp.as_deref(), mail_time)?;
            let id = bounce
                .feedback_id
                .clone()
                .unwrap_or_else(|| ses_message_id.clone());
            if bounce.bounced_recipients.is_empty() {
                return Err("no bouncedRecipients".into());
            }
            only_valid(bounce.bounced_recipients.into_iter().map(|r| {
                let email = address(&r.email_address)?;
                let key = format!("bounce:{id}:{email}");
                let detail = Detail::Bounce {
                    bounce_type: bounce.bounce_type.clone(),
                    bounce_subtype: bounce
                        .bounce_sub_type
                        .clone()
                        .unwrap_or_else(|| "Undetermined".into()),
                    status: r.status,
                    diagnostic_code: r.diagnostic_code,
                };
                Ok(event(
                    Some(email),
                    bounce.feedback_id.clone(),
                    at,
                    detail,
                    key,
                ))
            }))
        }
        "Complaint" => {
            let complaint: Complaint = field(value, "complaint")?;
            let at = time_or(complaint.timestamp.as_deref(), mail_time)?;
            let id = complaint
                .feedback_id
                .clone()
                .unwrap_or_else(|| ses_message_id.clone());
            if complaint.complained_recipients.is_empty() {
                return Err("no complainedRecipients".into());
            }
            only_valid(complaint.complained_recipients.into_iter().map(|r| {
                let email = address(&r.email_address)?;
                let key = format!("complaint:{id}:{email}");
                let detail = Detail::Complaint {
                    feedback_type: complaint.complaint_feedback_type.clone(),
                    complaint_subtype: complaint.complaint_sub_type.clone(),
                };
                Ok(event(
                    Some(email),
                    complaint.feedback_id.clone(),
                    at,
                    detail,
                    key,
                ))
            }))
        }
        "Delivery" => {
            let delivery: Delivery = field(value, "delivery")?;
            let at = time_or(delivery.timestamp.as_deref(), mail_time)?;
            only_valid(delivery.recipients.iter().map(|r| {
                let email = address(r)?;
                let key = format!("delivery:{ses_message_id}:{email}");
                Ok(event(Some(email), None, at, Detail::Delivery, key))
            }))
        }
        "Send" | "Reject" | "Open" | "Click" | "Rendering Failure" | "DeliveryDelay"
        | "Subscription" => {
            // Keyed by mail, type and the event's own time, so that repeats
            // (a second open) count while a copy of the same event does not.
            let object = value.get(event_object_name(event_type));
            let own_time = object
                .and_then(|o| o.get("timestamp"))
                .and_then(Value::as_str);
            let at = time_or(own_time, mail_time)?;
            let link = object
                .and_then(|o| o.get("link"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let key = format!(
                "{}:{ses_message_id}:{}:{link}",
                event_type.to_lowercase(),
                own_time.unwrap_or("")
            );
            let mut one = event(None, None, at, Detail::Other, key);
            if event_type == "Send" {
                // A Send event proves the send to every recipient of the mail.
                one.destination = mail
                    .destination
                    .iter()
                    .filter_map(|d| EmailAddress::parse(d).ok())
                    .collect();
            }
            Ok(vec![one])
        }
        other => Err(format!("event type `{other}` is not one bouncer knows")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_classic_bounce_gives_one_event_per_recipient_with_normalized_addresses() {
        let message = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General","bouncedRecipients":[{"emailAddress":"\"Jane\" <Jane@Example.com>","status":"5.1.1","diagnosticCode":"smtp; 550"},{"emailAddress":"bob@example.com"}],"timestamp":"2026-01-01T00:00:00.000Z","feedbackId":"fb-1","extra":1},"mail":{"messageId":"m-1","timestamp":"2026-01-01T00:00:00.000Z","destination":["jane@example.com","bob@example.com"]}}"#;
        let Parsed::Feedback(events) = parse(message) else {
            panic!("not feedback")
        };
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].recipient.as_ref().unwrap().as_str(),
            "jane@example.com"
        );
        assert_eq!(events[0].key, "bounce:fb-1:jane@example.com");
        assert_eq!(events[0].destination_count, 2);
    }

    #[test]
    fn a_bad_recipient_does_not_cost_the_others_their_event() {
        let message = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General","bouncedRecipients":[{"emailAddress":"not an address"},{"emailAddress":"real@example.com"}],"timestamp":"2026-01-01T00:00:00.000Z","feedbackId":"fb-2"},"mail":{"messageId":"m-2","timestamp":"2026-01-01T00:00:00.000Z","destination":[]}}"#;
        let Parsed::Feedback(events) = parse(message) else {
            panic!("not feedback")
        };
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].recipient.as_ref().unwrap().as_str(),
            "real@example.com"
        );
    }

    #[test]
    fn a_send_event_names_every_recipient_of_the_mail() {
        let message = r#"{"eventType":"Send","send":{},"mail":{"messageId":"m-3","timestamp":"2026-01-01T00:00:00.000Z","destination":["A <a@example.com>","b@example.com"]}}"#;
        let Parsed::Feedback(events) = parse(message) else {
            panic!("not feedback")
        };
        let names: Vec<&str> = events[0].destination.iter().map(|d| d.as_str()).collect();
        assert_eq!(names, ["a@example.com", "b@example.com"]);
    }

    #[test]
    fn non_ses_messages_are_unrecognized() {
        assert!(matches!(parse("Hello world"), Parsed::Unrecognized(_)));
        assert!(matches!(parse(r#"{"foo":1}"#), Parsed::Unrecognized(_)));
        assert!(matches!(
            parse(r#"{"notificationType":"Bounce","mail":{"messageId":"m"}}"#),
            Parsed::Unrecognized(_)
        ));
        assert!(matches!(
            parse(
                r#"{"eventType":"Teleport","mail":{"messageId":"m","timestamp":"2026-01-01T00:00:00Z"}}"#
            ),
            Parsed::Unrecognized(_)
        ));
    }
}
