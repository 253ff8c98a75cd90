//! SES feedback, parsed from the `Message` of a verified notification.
//!
//! Both formats: classic notifications (`notificationType`) and event
//! publishing (`eventType`). Fields bouncer does not use are ignored, so SES
//! may add fields at any time. The result is one [`FeedbackEvent`] per
//! recipient the event is about (or one for the mail when it names none).

use serde::Deserialize;
use serde_json::value::RawValue;

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
        /// As SES sent it: none when the notification names none (SES
        /// always does; a relay or a hand-made replay may not). The policy
        /// then reads it as any subtype of its type.
        bounce_subtype: Option<String>,
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
    /// Those recipients, normalized (filled for Send events, which count
    /// the whole mail's volume, and Reject and Rendering Failure events,
    /// which take it back).
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

/// The top level of an SES message: each object kept as its raw JSON, so
/// that only the one the event needs is parsed (and the `mail` headers,
/// most of the bytes, are skipped, never built into values).
#[derive(Deserialize)]
struct Top<'a> {
    #[serde(rename = "eventType", borrow)]
    event_type: Option<&'a RawValue>,
    #[serde(rename = "notificationType", borrow)]
    notification_type: Option<&'a RawValue>,
    #[serde(borrow)]
    mail: Option<&'a RawValue>,
    #[serde(borrow)]
    bounce: Option<&'a RawValue>,
    #[serde(borrow)]
    complaint: Option<&'a RawValue>,
    #[serde(borrow)]
    delivery: Option<&'a RawValue>,
    #[serde(borrow)]
    send: Option<&'a RawValue>,
    #[serde(borrow)]
    reject: Option<&'a RawValue>,
    #[serde(borrow)]
    open: Option<&'a RawValue>,
    #[serde(borrow)]
    click: Option<&'a RawValue>,
    #[serde(borrow)]
    failure: Option<&'a RawValue>,
    #[serde(rename = "deliveryDelay", borrow)]
    delivery_delay: Option<&'a RawValue>,
    #[serde(borrow)]
    subscription: Option<&'a RawValue>,
}

impl<'a> Top<'a> {
    /// The object event publishing nests its details under (by event type).
    fn object(&self, event_type: &str) -> Option<&'a RawValue> {
        match event_type {
            "Bounce" => self.bounce,
            "Complaint" => self.complaint,
            "Delivery" => self.delivery,
            "Send" => self.send,
            "Reject" => self.reject,
            "Open" => self.open,
            "Click" => self.click,
            "Rendering Failure" => self.failure,
            "DeliveryDelay" => self.delivery_delay,
            "Subscription" => self.subscription,
            _ => None,
        }
    }
}

/// A string at the top level, if it is one.
fn text(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok())
}

/// Parses `message` (the notification's `Message`).
/// `published`: the signed SNS `Timestamp` of the message, the event's time
/// when neither the event nor its mail has a usable one (a bounce must not
/// be dropped for a malformed date).
pub fn parse(message: &str, published: Timestamp) -> Parsed {
    match parse_as_sent(message, published) {
        // Half of a UTF-16 pair, escaped (`\ud83d` alone): JSON allows it,
        // a Rust string cannot hold it, and serde_json refuses the field.
        // Text that was cut in the middle of a pair (a remote server's
        // diagnostic code, say) would otherwise drop the whole bounce, and
        // the address would stay on the list of those sent to. Such halves
        // are read as U+FFFD, as a decoder reads bytes it cannot decode.
        Parsed::Unrecognized(why) => match mend_lone_surrogates(message) {
            Some(mended) => match parse_as_sent(&mended, published) {
                Parsed::Unrecognized(_) => Parsed::Unrecognized(why),
                parsed => parsed,
            },
            None => Parsed::Unrecognized(why),
        },
        parsed => parsed,
    }
}

/// `json` with every escaped half of a UTF-16 pair that has no other half
/// beside it written as `\ufffd`; `None` when it has none. Backslashes
/// and `u` are ASCII, never inside a multi-byte character, so the bytes
/// are scanned as they are; an escaped backslash is stepped over whole.
fn mend_lone_surrogates(json: &str) -> Option<String> {
    let bytes = json.as_bytes();
    let unit_at = |at: usize| -> Option<u16> {
        let escape = bytes.get(at..at + 6)?;
        if escape[0] != b'\\' || escape[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&escape[2..]).ok()?, 16).ok()
    };
    let (mut mended, mut copied, mut at) = (String::new(), 0, 0);
    while at < bytes.len() {
        if bytes[at] != b'\\' {
            at += 1;
            continue;
        }
        let Some(unit) = unit_at(at) else {
            // Any other escape: the backslash and the character after it.
            at += 2;
            continue;
        };
        let lone = match unit {
            0xD800..=0xDBFF => match unit_at(at + 6) {
                Some(0xDC00..=0xDFFF) => {
                    at += 12;
                    continue;
                }
                _ => true,
            },
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if lone {
            mended.push_str(&json[copied..at]);
            mended.push_str("\\ufffd");
            copied = at + 6;
        }
        at += 6;
    }
    if copied == 0 {
        return None;
    }
    mended.push_str(&json[copied..]);
    Some(mended)
}

fn parse_as_sent(message: &str, published: Timestamp) -> Parsed {
    let top: Top<'_> = match serde_json::from_str(message) {
        Ok(top) => top,
        Err(_) => return Parsed::Unrecognized("the Message is not a JSON object".into()),
    };
    let (format, event_type) = if let Some(t) = text(top.event_type) {
        (Format::EventPublishing, t)
    } else if let Some(t) = text(top.notification_type) {
        (Format::Classic, t)
    } else {
        return Parsed::Unrecognized("neither notificationType nor eventType".into());
    };
    if event_type == "AmazonSnsSubscriptionSucceeded" {
        return Parsed::SubscriptionSucceeded;
    }
    match parse_event(&top, format, &event_type, published) {
        Ok(events) => Parsed::Feedback(events),
        Err(why) => Parsed::Unrecognized(format!("{event_type}: {why}")),
    }
}

fn field<'de, T: Deserialize<'de>>(raw: Option<&'de RawValue>, name: &str) -> Result<T, String> {
    let inner = raw.ok_or_else(|| format!("no `{name}` object"))?;
    serde_json::from_str(inner.get()).map_err(|e| format!("`{name}` is malformed: {e}"))
}

/// The event's own time and link, for the event types with no list of
/// recipients.
#[derive(Deserialize, Default)]
struct OtherEvent {
    timestamp: Option<String>,
    link: Option<String>,
}

fn time_or(text: Option<&str>, fallback: Timestamp) -> Timestamp {
    text.and_then(Timestamp::parse_rfc3339).unwrap_or(fallback)
}

fn parse_event(
    top: &Top<'_>,
    format: Format,
    event_type: &str,
    published: Timestamp,
) -> Result<Vec<FeedbackEvent>, String> {
    let mail: Mail = field(top.mail, "mail")?;
    let ses_message_id = mail
        .message_id
        .filter(|m| !m.is_empty())
        .ok_or("no mail.messageId")?;
    let mail_time = time_or(mail.timestamp.as_deref(), published);
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
            let bounce: Bounce = field(top.bounce, "bounce")?;
            let at = time_or(bounce.timestamp.as_deref(), mail_time);
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
                        .filter(|s| !s.trim().is_empty()),
                    // An empty one tells nothing, and the CSV export could
                    // not tell it from none.
                    status: r.status.filter(|s| !s.trim().is_empty()),
                    diagnostic_code: r.diagnostic_code.filter(|s| !s.trim().is_empty()),
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
            let complaint: Complaint = field(top.complaint, "complaint")?;
            let at = time_or(complaint.timestamp.as_deref(), mail_time);
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
            let delivery: Delivery = field(top.delivery, "delivery")?;
            let at = time_or(delivery.timestamp.as_deref(), mail_time);
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
            let object: OtherEvent = top
                .object(event_type)
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .unwrap_or_default();
            let own_time = object.timestamp.as_deref();
            let at = time_or(own_time, mail_time);
            let link = object.link.as_deref().unwrap_or("");
            let key = format!(
                "{}:{ses_message_id}:{}:{link}",
                event_type.to_lowercase(),
                own_time.unwrap_or("")
            );
            let mut one = event(None, None, at, Detail::Other, key);
            if matches!(event_type, "Send" | "Reject" | "Rendering Failure") {
                // A Send event proves the send to every recipient of the
                // mail; a Reject or a Rendering Failure, that none of them
                // was sent to.
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

    /// A diagnostic code holding half of a UTF-16 pair, escaped: the bounce
    /// is applied, the half read as U+FFFD (it was dropped whole as
    /// unrecognized, and the address not suppressed).
    #[test]
    fn a_lone_half_of_a_utf16_pair_is_read_as_a_replacement_character() {
        let message = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General","bouncedRecipients":[{"emailAddress":"a@example.com","diagnosticCode":"smtp; 550 cut \ud83d"}],"timestamp":"2026-01-01T00:00:00.000Z","feedbackId":"fb-1"},"mail":{"messageId":"m-1","timestamp":"2026-01-01T00:00:00.000Z","destination":["a@example.com"]}}"#;
        let Parsed::Feedback(events) = parse(message, published()) else {
            panic!("not feedback")
        };
        assert_eq!(
            events[0].recipient.as_ref().map(EmailAddress::as_str),
            Some("a@example.com")
        );
        let Detail::Bounce {
            diagnostic_code, ..
        } = &events[0].detail
        else {
            panic!("a bounce")
        };
        assert_eq!(diagnostic_code.as_deref(), Some("smtp; 550 cut \u{fffd}"));
    }

    #[test]
    fn only_lone_halves_are_mended() {
        // A whole pair, an escaped backslash before `ud800`, other escapes.
        let whole = r#"{"a":"\ud83d\ude00 \\ud800 \n \u00e9"}"#;
        assert_eq!(mend_lone_surrogates(whole), None);
        assert_eq!(
            mend_lone_surrogates(r#"{"a":"x\udc80y\ud800\u0041\ud83d"}"#).as_deref(),
            Some(r#"{"a":"x\ufffdy\ufffd\u0041\ufffd"}"#)
        );
        // A high half followed by another high half: both lone.
        assert_eq!(
            mend_lone_surrogates(r#""\ud800\ud800\udc00""#).as_deref(),
            Some(r#""\ufffd\ud800\udc00""#)
        );
    }

    fn published() -> Timestamp {
        Timestamp::parse_rfc3339("2026-01-02T00:00:00Z").unwrap()
    }

    /// A bounce whose own time and mail's time are both unusable is still
    /// a bounce, dated by the signed SNS Timestamp (it was dropped as
    /// "unrecognized", and the address not suppressed).
    #[test]
    fn a_bounce_with_no_usable_time_is_dated_by_the_sns_message() {
        let message = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General","bouncedRecipients":[{"emailAddress":"a@example.com"}],"timestamp":"2026-01-01T01:05:60Z","feedbackId":"fb-9"},"mail":{"messageId":"m-9","timestamp":"2026-01-01T01:05:60Z","destination":["a@example.com"]}}"#;
        let Parsed::Feedback(events) = parse(message, published()) else {
            panic!("not feedback")
        };
        assert_eq!(events[0].occurred_at, published());
    }

    #[test]
    fn a_classic_bounce_gives_one_event_per_recipient_with_normalized_addresses() {
        let message = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General","bouncedRecipients":[{"emailAddress":"\"Jane\" <Jane@Example.com>","status":"5.1.1","diagnosticCode":"smtp; 550"},{"emailAddress":"bob@example.com","status":"","diagnosticCode":" "}],"timestamp":"2026-01-01T00:00:00.000Z","feedbackId":"fb-1","extra":1},"mail":{"messageId":"m-1","timestamp":"2026-01-01T00:00:00.000Z","destination":["jane@example.com","bob@example.com"]}}"#;
        let Parsed::Feedback(events) = parse(message, published()) else {
            panic!("not feedback")
        };
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].recipient.as_ref().unwrap().as_str(),
            "jane@example.com"
        );
        assert_eq!(events[0].key, "bounce:fb-1:jane@example.com");
        assert_eq!(events[0].destination_count, 2);
        // An empty status or diagnostic code is none (a CSV export could
        // not tell the two apart).
        let Detail::Bounce {
            status,
            diagnostic_code,
            ..
        } = &events[1].detail
        else {
            panic!("not a bounce")
        };
        assert_eq!((status, diagnostic_code), (&None, &None));
    }

    #[test]
    fn a_bad_recipient_does_not_cost_the_others_their_event() {
        let message = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General","bouncedRecipients":[{"emailAddress":"not an address"},{"emailAddress":"real@example.com"}],"timestamp":"2026-01-01T00:00:00.000Z","feedbackId":"fb-2"},"mail":{"messageId":"m-2","timestamp":"2026-01-01T00:00:00.000Z","destination":[]}}"#;
        let Parsed::Feedback(events) = parse(message, published()) else {
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
        let Parsed::Feedback(events) = parse(message, published()) else {
            panic!("not feedback")
        };
        let names: Vec<&str> = events[0].destination.iter().map(|d| d.as_str()).collect();
        assert_eq!(names, ["a@example.com", "b@example.com"]);
    }

    #[test]
    fn non_ses_messages_are_unrecognized() {
        assert!(matches!(
            parse("Hello world", published()),
            Parsed::Unrecognized(_)
        ));
        assert!(matches!(
            parse(r#"{"foo":1}"#, published()),
            Parsed::Unrecognized(_)
        ));
        assert!(matches!(
            parse(
                r#"{"notificationType":"Bounce","mail":{"messageId":"m"}}"#,
                published()
            ),
            Parsed::Unrecognized(_)
        ));
        assert!(matches!(
            parse(
                r#"{"eventType":"Teleport","mail":{"messageId":"m","timestamp":"2026-01-01T00:00:00Z"}}"#,
                published()
            ),
            Parsed::Unrecognized(_)
        ));
    }
}
