//! Signs SNS envelopes with the TEST-ONLY key in `fixtures/test-only/`, the
//! way SNS does: RSA PKCS#1 v1.5 over the canonical string of the type,
//! SHA-1 for SignatureVersion 1 and SHA-256 for 2. Written from
//! `reference/sns.md` independently of the service's own code, so the two
//! check each other. Also used by `examples/sign_fixture.rs`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{Map, Value, json};

/// The URL the test certificate is pinned under in tests (never fetched).
pub const TEST_CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-bouncer-TEST-ONLY.pem";
pub const TEST_CERT_FILE: &str = "fixtures/test-only/TEST-ONLY-sns-signing-cert.pem";
const TEST_KEY_FILE: &str = "fixtures/test-only/TEST-ONLY-sns-signing-key.pem";
pub const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:ses-feedback";

fn private_key() -> &'static rsa::PrivateKey {
    static KEY: OnceLock<rsa::PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(TEST_KEY_FILE);
        let pem = std::fs::read_to_string(path).expect("test signing key");
        rsa::PrivateKey::from_pkcs8_pem(&pem).expect("test signing key is PKCS#8")
    })
}

/// A message id no other test uses.
pub fn unique_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        std::process::id(),
        n & 0xffff,
        nanos & 0xffff_ffff_ffff
    )
}

pub fn now_text() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format now")
}

/// An SNS envelope under construction.
#[derive(Clone, Debug)]
pub struct Msg {
    pub fields: Map<String, Value>,
}

impl Msg {
    fn base(message_type: &str, topic: &str, message: &str) -> Msg {
        let fields = json!({
            "Type": message_type,
            "MessageId": unique_id(),
            "TopicArn": topic,
            "Message": message,
            "Timestamp": now_text(),
            "SignatureVersion": "1",
            "SigningCertURL": TEST_CERT_URL,
        });
        Msg {
            fields: fields.as_object().cloned().unwrap_or_default(),
        }
    }

    pub fn notification(topic: &str, message: &str) -> Msg {
        Msg::base("Notification", topic, message).set(
            "UnsubscribeURL",
            &format!("https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic}:0a1b2c3d"),
        )
    }

    pub fn subscription_confirmation(topic: &str) -> Msg {
        Msg::confirmation("SubscriptionConfirmation", topic)
    }

    pub fn unsubscribe_confirmation(topic: &str) -> Msg {
        Msg::confirmation("UnsubscribeConfirmation", topic)
    }

    fn confirmation(message_type: &str, topic: &str) -> Msg {
        let token = format!(
            "2336412f37fb687f5d51e6e2425{}",
            unique_id().replace('-', "")
        );
        Msg::base(
            message_type,
            topic,
            &format!("You have chosen to subscribe to the topic {topic}.\nTo confirm the subscription, visit the SubscribeURL included in this message."),
        )
        .set("Token", &token)
        .set(
            "SubscribeURL",
            &format!("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}&Token={token}"),
        )
    }

    pub fn set(mut self, key: &str, value: &str) -> Msg {
        self.fields
            .insert(key.to_owned(), Value::String(value.to_owned()));
        self
    }

    pub fn remove(mut self, key: &str) -> Msg {
        self.fields.remove(key);
        self
    }

    pub fn version(self, version: u8) -> Msg {
        self.set("SignatureVersion", &version.to_string())
    }

    pub fn get(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn id(&self) -> String {
        self.get("MessageId").to_owned()
    }

    /// The canonical string SNS signs for this message's Type.
    pub fn string_to_sign(&self) -> String {
        let keys: &[&str] = if self.get("Type") == "Notification" {
            &[
                "Message",
                "MessageId",
                "Subject",
                "Timestamp",
                "TopicArn",
                "Type",
            ]
        } else {
            &[
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type",
            ]
        };
        let mut out = String::new();
        for key in keys {
            if let Some(Value::String(value)) = self.fields.get(*key) {
                out.push_str(key);
                out.push('\n');
                out.push_str(value);
                out.push('\n');
            }
        }
        out
    }

    /// Adds the Signature (by the SignatureVersion field) and returns self.
    pub fn sign(mut self) -> Msg {
        let text = self.string_to_sign();
        let key = private_key().clone();
        let signature = if self.get("SignatureVersion") == "2" {
            SigningKey::<sha2::Sha256>::new(key)
                .sign(text.as_bytes())
                .to_vec()
        } else {
            SigningKey::<sha1::Sha1>::new(key)
                .sign(text.as_bytes())
                .to_vec()
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(signature);
        self.fields.insert("Signature".into(), Value::String(b64));
        self
    }

    /// The JSON body SNS would POST (pretty-printed like SNS does).
    pub fn body(&self) -> String {
        serde_json::to_string_pretty(&Value::Object(self.fields.clone())).expect("json")
    }
}

/// Signs an envelope template (JSON without `Signature`), keeping its field
/// order, and returns the signed JSON text.
pub fn sign_template(template: &str) -> Result<String, serde_json::Error> {
    let fields: Map<String, Value> = serde_json::from_str(template)?;
    let signed = Msg { fields }.sign();
    Ok(signed.body() + "\n")
}
