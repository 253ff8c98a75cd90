//! Amazon SES feedback carried in SNS notifications: the address form we
//! store, the two SES formats parsed into events, and the policy that says
//! what each event does to the suppression list.

pub mod feedback;
pub mod policy;
