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
        let message_id = required(raw.message_id, "MessageId")?;
        if message_id.len() > 128 {
            return Err(SnsError::MalformedField {
                field: "MessageId",
                why: "longer than 128 characters".into(),
            });
        }
        let topic_arn = required(raw.topic_arn, "TopicArn")?;
        let message = raw.message.ok_or(SnsError::MissingField("Message"))?;
        let timestamp_text = required(raw.timestamp, "Timestamp")?;
        let timestamp =
            Timestamp::parse_rfc3339(&timestamp_text).ok_or_else(|| SnsError::MalformedField {
                field: "Timestamp",
                why: format!("`{timestamp_text}` is not an ISO 8601 UTC time"),
            })?;
        let signature_version = required(raw.signature_version, "SignatureVersion")?;
        let signature = required(raw.signature, "Signature")?;
        let signing_cert_url = required(raw.signing_cert_url, "SigningCertURL")?;
        let fields = match message_type {
            MessageType::Notification => TypeFields::Notification {
                subject: raw.subject,
                unsubscribe_url: required(raw.unsubscribe_url, "UnsubscribeURL")?,
            },
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
                TypeFields::Subscription {
                    token: required(raw.token, "Token")?,
                    subscribe_url: required(raw.subscribe_url, "SubscribeURL")?,
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
    fn confirmation_needs_token() {
        let body = NOTIFICATION.replace("\"Notification\"", "\"SubscriptionConfirmation\"");
        let err = Envelope::parse(body.as_bytes(), Some("SubscriptionConfirmation")).unwrap_err();
        assert!(matches!(err, SnsError::MissingField("Token")));
    }
}
