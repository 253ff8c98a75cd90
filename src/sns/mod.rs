//! Everything about Amazon SNS messages: the envelope as it arrives, the
//! certificate URL rule, signing certificates, signatures, and the verifier
//! that turns an envelope into a [`verify::VerifiedMessage`].

pub mod cert;
pub mod cert_store;
pub mod cert_url;
pub mod confirm;
pub mod envelope;
pub mod region;
pub mod signature;
pub mod verify;
