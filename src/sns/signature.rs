//! The string SNS signs for each message type, and the RSA PKCS#1 v1.5
//! check of a signature against it.
//!
//! Verification uses `ring` (already in the tree through rustls), not the
//! `rsa` crate: BENCHMARKS.md has the side-by-side numbers that decided it
//! (`rsa` cost several times more per message, and verification is on the
//! path of every message).

use base64::Engine;
use ring::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
};

use super::envelope::{Envelope, TypeFields};
use crate::error::SnsError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVersion {
    /// SHA1withRSA.
    V1,
    /// SHA256withRSA.
    V2,
}

impl SignatureVersion {
    pub fn parse(text: &str) -> Result<Self, SnsError> {
        match text {
            "1" => Ok(SignatureVersion::V1),
            "2" => Ok(SignatureVersion::V2),
            other => Err(SnsError::UnsupportedSignatureVersion(other.to_owned())),
        }
    }

    pub fn number(self) -> i32 {
        match self {
            SignatureVersion::V1 => 1,
            SignatureVersion::V2 => 2,
        }
    }
}

/// `key\nvalue\n` for each signed key in order, from the decoded values.
pub fn string_to_sign(envelope: &Envelope) -> String {
    let mut out = String::with_capacity(envelope.message.len() + 512);
    let mut push = |key: &str, value: &str| {
        out.push_str(key);
        out.push('\n');
        out.push_str(value);
        out.push('\n');
    };
    push("Message", &envelope.message);
    push("MessageId", &envelope.message_id);
    match &envelope.fields {
        TypeFields::Notification { subject, .. } => {
            if let Some(subject) = subject {
                push("Subject", subject);
            }
            push("Timestamp", &envelope.timestamp_text);
        }
        TypeFields::Subscription {
            token,
            subscribe_url,
        } => {
            push("SubscribeURL", subscribe_url);
            push("Timestamp", &envelope.timestamp_text);
            push("Token", token);
        }
    }
    push("TopicArn", &envelope.topic_arn);
    push("Type", envelope.message_type.as_str());
    out
}

/// Decodes the base64 `Signature` (cheap; done before any certificate work).
pub fn decode_signature(text: &str) -> Result<Vec<u8>, SnsError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|_| SnsError::BadSignature("Signature is not valid base64"))?;
    if bytes.len() < 256 || bytes.len() > 1024 {
        return Err(SnsError::BadSignature(
            "Signature length does not fit an RSA key of 2048 to 8192 bits",
        ));
    }
    Ok(bytes)
}

/// Checks `signature` over `signed` with the certificate's RSA public key
/// (PKCS#1 `RSAPublicKey` DER).
pub fn verify(
    public_key_pkcs1: &[u8],
    version: SignatureVersion,
    signed: &[u8],
    signature: &[u8],
) -> Result<(), SnsError> {
    let algorithm = match version {
        SignatureVersion::V1 => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        SignatureVersion::V2 => &RSA_PKCS1_2048_8192_SHA256,
    };
    UnparsedPublicKey::new(algorithm, public_key_pkcs1)
        .verify(signed, signature)
        .map_err(|_| SnsError::BadSignature("the signature does not match the message"))
}
