//! The SNS envelope: the JSON body of `POST /sns`, parsed and checked for the
//! fields its `Type` requires. An [`Envelope`] has the right shape; it is not
//! yet trusted (see `verify`).

use serde::Deserialize;

use crate::error::SnsError;
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Notification => "Notification",
            MessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
            MessageType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Notification" => Some(MessageType::Notification),
            "SubscriptionConfirmation" => Some(MessageType::SubscriptionConfirmation),
            "UnsubscribeConfirmation" => Some(MessageType::UnsubscribeConfirmation),
            _ => None,
        }
    }
}

/// What only one message type carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeFields {
    Notification {
        subject: Option<String>,
        unsubscribe_url: String,
    },
    /// `SubscriptionConfirmation` and `UnsubscribeConfirmation`.
    Subscription {
        token: String,
        subscribe_url: String,
    },
}

/// A well-formed SNS envelope, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub message_type: MessageType,
    pub message_id: String,
    pub topic_arn: String,
    pub message: String,
    /// The `Timestamp` exactly as signed (it is part of the string to sign).
    pub timestamp_text: String,
    pub timestamp: Timestamp,
    pub signature_version: String,
    pub signature: String,
    pub signing_cert_url: String,
    pub fields: TypeFields,
}

/// The body as JSON, every field optional so that a missing one gets its own
/// clear error instead of serde's.
#[derive(Deserialize)]
struct RawEnvelope {
    #[serde(rename = "Type")]
    message_type: Option<String>,
    #[serde(rename = "MessageId")]
    message_id: Option<String>,
    #[serde(rename = "TopicArn")]
    topic_arn: Option<String>,
    #[serde(rename = "Subject")]
    subject: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(rename = "Timestamp")]
    timestamp: Option<String>,
    #[serde(rename = "SignatureVersion")]
    signature_version: Option<String>,
    #[serde(rename = "Signature")]
    signature: Option<String>,
    #[serde(rename = "SigningCertURL", alias = "SigningCertUrl")]
    signing_cert_url: Option<String>,
    #[serde(rename = "UnsubscribeURL", alias = "UnsubscribeUrl")]
    unsubscribe_url: Option<String>,
    #[serde(rename = "SubscribeURL", alias = "SubscribeUrl")]
    subscribe_url: Option<String>,
    #[serde(rename = "Token")]
    token: Option<String>,
}

fn required(value: Option<String>, name: &'static str) -> Result<String, SnsError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(SnsError::MissingField(name)),
    }
}

/// SNS signs its fields joined by line breaks, `Message` first. A line
/// break in any later field would let a message SNS never sent make the
/// same string to sign: `Subject` moved into the `MessageId`
/// (`"<id>\nSubject\n<subject>"`) verifies with the real signature under a
/// new id, past the dedupe. SNS puts none there: ids are UUIDs, tokens hex,
/// and a `Subject` has no line breaks. Ids, tokens and URLs are refused with
/// any control character (none has a use there, and each ends up in a log
/// or a command's one-line output); a `Subject` only with a line break (a
/// NUL in one is stored escaped, SPEC §1).
fn without(
    value: String,
    name: &'static str,
    refused: impl Fn(char) -> bool,
) -> Result<String, SnsError> {
    match value.chars().find(|c| refused(*c)) {
        None => Ok(value),
        Some(c) => Err(SnsError::MalformedField {
            field: name,
            why: format!(
                "holds the control character U+{:04X} (SNS signs its fields one per line)",
                u32::from(c)
            ),
        }),
    }
}

/// What a refused body says it is, for its log line: its `MessageId`,
/// `Type` and `TopicArn` as written, or empty where the body holds no such
/// text field. Read only on refusal: a body refused for its header or a
/// field is still findable by its id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Named {
    pub message_id: String,
    pub message_type: String,
    pub topic_arn: String,
}

impl Named {
    pub fn read(body: &[u8]) -> Named {
        // Any JSON type: one field of the wrong type must not hide the others.
        #[derive(Deserialize)]
        struct Fields {
            #[serde(rename = "MessageId")]
            message_id: Option<serde_json::Value>,
            #[serde(rename = "Type")]
            message_type: Option<serde_json::Value>,
            #[serde(rename = "TopicArn")]
            topic_arn: Option<serde_json::Value>,
        }
        let Ok(fields) = serde_json::from_slice::<Fields>(body) else {
            return Named::default();
        };
        let text = |v: Option<serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => s,
            _ => String::new(),
        };
        Named {
            message_id: text(fields.message_id),
            message_type: text(fields.message_type),
            topic_arn: text(fields.topic_arn),
        }
    }
}

impl Envelope {
    /// Parses the body and checks it against the `x-amz-sns-message-type`
    /// header. `Message` may be empty (SNS allows it); every other field the
    /// type requires must be present and non-empty.
    pub fn parse(body: &[u8], header_type: Option<&str>) -> Result<Self, SnsError> {
        let raw: RawEnvelope = serde_json::from_slice(body).map_err(|e| {
            SnsError::MalformedJson(if e.is_data() {
                format!("a field has the wrong JSON type: {e}")
            } else {
                e.to_string()
            })
        })?;
        let type_text = required(raw.message_type, "Type")?;
        let message_type = MessageType::parse(&type_text)
            .ok_or_else(|| SnsError::UnknownType(type_text.clone()))?;
        match header_type {
            None => return Err(SnsError::MissingTypeHeader),
            Some(h) if h != message_type.as_str() => {
                return Err(SnsError::TypeMismatch {
                    header: h.to_owned(),
                    body: type_text,
                });
            }
            Some(_) => {}
        }
        let message_id = without(
            required(raw.message_id, "MessageId")?,
            "MessageId",
            char::is_control,
        )?;
        if message_id.len() > 128 {
            return Err(SnsError::MalformedField {
                field: "MessageId",
                why: "longer than 128 characters".into(),
            });
        }
        if message_id.trim().is_empty() {
            return Err(SnsError::MalformedField {
                field: "MessageId",
                why: "blank".into(),
            });
        }
        let topic_arn = without(
            required(raw.topic_arn, "TopicArn")?,
            "TopicArn",
            char::is_control,
        )?;
        let message = raw.message.ok_or(SnsError::MissingField("Message"))?;
        let timestamp_text = required(raw.timestamp, "Timestamp")?;
        let timestamp =
            Timestamp::parse_rfc3339(&timestamp_text).ok_or_else(|| SnsError::MalformedField {
                field: "Timestamp",
                why: format!("`{timestamp_text}` is not an ISO 8601 time between the years 0000 and 9999 (UTC)"),
            })?;
        let signature_version = required(raw.signature_version, "SignatureVersion")?;
        let signature = required(raw.signature, "Signature")?;
        let signing_cert_url = required(raw.signing_cert_url, "SigningCertURL")?;
        let fields = match message_type {
            MessageType::Notification => TypeFields::Notification {
                subject: raw
                    .subject
                    .map(|s| without(s, "Subject", |c| c == '\n' || c == '\r'))
                    .transpose()?,
                unsubscribe_url: required(raw.unsubscribe_url, "UnsubscribeURL")?,
            },
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
                TypeFields::Subscription {
                    token: without(required(raw.token, "Token")?, "Token", char::is_control)?,
                    subscribe_url: without(
                        required(raw.subscribe_url, "SubscribeURL")?,
                        "SubscribeURL",
                        char::is_control,
                    )?,
                }
            }
        };
        Ok(Envelope {
            message_type,
            message_id,
            topic_arn,
            message,
            timestamp_text,
            timestamp,
            signature_version,
            signature,
            signing_cert_url,
            fields,
        })
    }

    pub fn subject(&self) -> Option<&str> {
        match &self.fields {
            TypeFields::Notification { subject, .. } => subject.as_deref(),
            TypeFields::Subscription { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFICATION: &str = r#"{"Type":"Notification","MessageId":"m1","TopicArn":"arn:aws:sns:us-east-1:1:t","Subject":null,"Message":"hi","Timestamp":"2026-01-01T00:00:00.000Z","SignatureVersion":"1","Signature":"x","SigningCertUrl":"https://sns.us-east-1.amazonaws.com/a.pem","UnsubscribeUrl":"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"}"#;

    #[test]
    fn lambda_spellings_and_null_subject_are_accepted() {
        let e = Envelope::parse(NOTIFICATION.as_bytes(), Some("Notification")).unwrap();
        assert_eq!(e.subject(), None);
        assert_eq!(
            e.signing_cert_url,
            "https://sns.us-east-1.amazonaws.com/a.pem"
        );
    }

    #[test]
    fn header_must_agree_with_type() {
        let err = Envelope::parse(NOTIFICATION.as_bytes(), Some("SubscriptionConfirmation"));
        assert_eq!(err.unwrap_err().code(), "message_type_mismatch");
    }

    #[test]
    fn a_signed_field_after_message_is_one_line() {
        // The field a body is refused for as malformed, and why.
        let malformed = |body: String| match Envelope::parse(body.as_bytes(), Some("Notification"))
        {
            Err(SnsError::MalformedField { field, why }) => (field, why),
            other => panic!("not refused as malformed: {other:?}"),
        };
        let (field, why) = malformed(
            NOTIFICATION.replace(r#""MessageId":"m1""#, r#""MessageId":"m1\nSubject\nhello""#),
        );
        assert_eq!(field, "MessageId");
        assert!(why.contains("U+000A"), "{why}");
        let subject = NOTIFICATION.replace(r#""Subject":null"#, r#""Subject":"a\r\nb""#);
        assert_eq!(malformed(subject).0, "Subject");
        let nul = NOTIFICATION.replace(r#""Subject":null"#, r#""Subject":"a\u0000b""#);
        assert!(Envelope::parse(nul.as_bytes(), Some("Notification")).is_ok());
        let blank = NOTIFICATION.replace(r#""MessageId":"m1""#, r#""MessageId":" ""#);
        assert_eq!(malformed(blank).0, "MessageId");
        // The message itself may span lines.
        let lines = NOTIFICATION.replace(r#""Message":"hi""#, r#""Message":"h\ni""#);
        assert_eq!(
            Envelope::parse(lines.as_bytes(), Some("Notification"))
                .unwrap()
                .message,
            "h\ni"
        );
    }

    #[test]
    fn confirmation_needs_token() {
        let body = NOTIFICATION.replace("\"Notification\"", "\"SubscriptionConfirmation\"");
        let err = Envelope::parse(body.as_bytes(), Some("SubscriptionConfirmation")).unwrap_err();
        assert!(matches!(err, SnsError::MissingField("Token")));
    }
}
