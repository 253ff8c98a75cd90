//! The verifier: runs the checks of SPEC §1 cheapest first and turns an
//! [`Envelope`] into a [`VerifiedMessage`], the only type the store accepts.
//! Nothing leaves the machine before the topic, version, URL and freshness
//! checks have passed.

use std::collections::HashMap;
use std::sync::Arc;

use time::Duration;

use super::cert_store::CertStore;
use super::cert_url::check_cert_url;
use super::envelope::{Envelope, MessageType};
use super::region::TopicArn;
use super::signature::{self, SignatureVersion};
use crate::clock::Clock;
use crate::error::SnsError;
use crate::time::Timestamp;

/// A message proven to come from SNS for one of our topics.
///
/// Only [`Verifier::verify`] (and the spool, which holds only messages that
/// were verified before it wrote them) can make one.
#[derive(Debug, Clone)]
pub struct VerifiedMessage {
    envelope: Envelope,
    signature_version: SignatureVersion,
    raw_body: String,
    received_at: Timestamp,
}

impl VerifiedMessage {
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
    pub fn message_type(&self) -> MessageType {
        self.envelope.message_type
    }
    pub fn message_id(&self) -> &str {
        &self.envelope.message_id
    }
    pub fn topic_arn(&self) -> &str {
        &self.envelope.topic_arn
    }
    pub fn signature_version(&self) -> SignatureVersion {
        self.signature_version
    }
    pub fn raw_body(&self) -> &str {
        &self.raw_body
    }
    pub fn received_at(&self) -> Timestamp {
        self.received_at
    }

    /// Rebuilds a message from the local spool. The spool is written only
    /// with verified messages and is checksummed, so it is not verified again
    /// (its certificate may have left the cache, or the network).
    pub(crate) fn from_spool(raw_body: String, received_at: Timestamp) -> Result<Self, SnsError> {
        let value: serde_json::Value =
            serde_json::from_str(&raw_body).map_err(|e| SnsError::MalformedJson(e.to_string()))?;
        let header = value
            .get("Type")
            .and_then(|t| t.as_str())
            .map(str::to_owned);
        let envelope = Envelope::parse(raw_body.as_bytes(), header.as_deref())?;
        let signature_version = SignatureVersion::parse(&envelope.signature_version)?;
        Ok(VerifiedMessage {
            envelope,
            signature_version,
            raw_body,
            received_at,
        })
    }
}

pub struct VerifierPolicy {
    /// The allowed topics, by their ARN as written, parsed at start-up.
    pub allowed_topics: HashMap<String, TopicArn>,
    pub require_v2: bool,
    pub max_age: Duration,
    pub max_future: Duration,
}

pub struct Verifier {
    policy: VerifierPolicy,
    certs: Arc<CertStore>,
    clock: Clock,
}

impl Verifier {
    pub fn new(policy: VerifierPolicy, certs: Arc<CertStore>, clock: Clock) -> Self {
        Verifier {
            policy,
            certs,
            clock,
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// `raw_body` must be the bytes `envelope` was parsed from.
    pub async fn verify(
        &self,
        envelope: Envelope,
        raw_body: &[u8],
    ) -> Result<VerifiedMessage, SnsError> {
        self.verify_with(envelope, raw_body, true).await
    }

    /// As [`Verifier::verify`]; `check_age: false` skips only the oldest
    /// accepted age, for an operator's replay of old stored messages through
    /// the pipeline (the signature, a time from the future and everything
    /// else are still checked).
    pub async fn verify_with(
        &self,
        envelope: Envelope,
        raw_body: &[u8],
        check_age: bool,
    ) -> Result<VerifiedMessage, SnsError> {
        if self.policy.allowed_topics.is_empty() {
            return Err(SnsError::NoTopicConfigured);
        }
        let Some(topic) = self.policy.allowed_topics.get(&envelope.topic_arn) else {
            return Err(SnsError::TopicNotAllowed(envelope.topic_arn.clone()));
        };
        let version = SignatureVersion::parse(&envelope.signature_version)?;
        if version == SignatureVersion::V1 && self.policy.require_v2 {
            return Err(SnsError::SignatureVersionRefused);
        }
        let cert_url =
            check_cert_url(&envelope.signing_cert_url).map_err(|why| SnsError::BadUrl {
                field: "SigningCertURL",
                why,
            })?;
        // SNS signs with the certificate of the topic's own region.
        let url_region = cert_url.host().region();
        if url_region != topic.region() {
            return Err(SnsError::CertificateRegionMismatch {
                topic_region: topic.region().to_string(),
                url_region: url_region.to_string(),
            });
        }
        let now = self.clock.now();
        if check_age && envelope.timestamp < now.saturating_sub(self.policy.max_age) {
            return Err(SnsError::TooOld(envelope.timestamp_text.clone()));
        }
        // Old archives are replayed; a message from the future never is
        // right, and would hold a row's details against every real event.
        if envelope.timestamp > now.saturating_add(self.policy.max_future) {
            return Err(SnsError::FromFuture(envelope.timestamp_text.clone()));
        }
        let signature = signature::decode_signature(&envelope.signature)?;
        let cert = self.certs.get(&cert_url).await?;
        cert.check_valid_at(envelope.timestamp)?;
        let signed = signature::string_to_sign(&envelope);
        signature::verify(&cert.public_key, version, signed.as_bytes(), &signature)?;
        let raw_body = String::from_utf8(raw_body.to_vec())
            .map_err(|_| SnsError::MalformedJson("body is not UTF-8".into()))?;
        Ok(VerifiedMessage {
            envelope,
            signature_version: version,
            raw_body,
            received_at: now,
        })
    }
}
