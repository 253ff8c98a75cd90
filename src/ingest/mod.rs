//! The ingest pipeline: what happens to a verified message between the
//! route that accepted it and the database.
//!
//! - `accepted`: the message with its parsed content, and what became of it;
//! - `apply`: one batch of messages applied in one transaction;
//! - `writer`: the one task per process that owns those writes (group
//!   commit), and falls back to the `spool` when the database is away.

pub mod accepted;
pub mod apply;
pub mod spool;
pub mod writer;

pub use self::accepted::{Accepted, Applied, Content, StoreOutcome};
pub use self::apply::{ApplyPolicy, SoftBouncePolicy};
