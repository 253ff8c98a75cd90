//! The ingest pipeline: what happens to a verified message between the
//! route that accepted it and the database.
//!
//! - `accepted`: the message with its parsed content, and what became of it;
//! - `apply`: one batch of messages applied in one transaction;
//! - `writer`: the one task per process that owns those writes (group
//!   commit), Up or Down; while Down it spools without touching the
//!   database, and `drain` probes the database on a backoff and applies
//!   the `spool` in order;
//! - `durable`: no answer before the disk has the message (SQLite's
//!   writer syncs its WAL beside the next batch);
//! - `applier`: the writer's connection, time limit and retries, and the
//!   isolation of a message the database refuses, which goes to the
//!   `set_aside` file instead of stopping the pipeline.

pub mod accepted;
pub mod applier;
pub mod apply;
mod drain;
mod durable;
mod effects;
mod fold;
pub mod set_aside;
pub mod spool;
pub mod writer;

pub use self::accepted::{Accepted, Applied, Content, StoreOutcome};
pub use self::apply::{ApplyPolicy, SoftBouncePolicy};
