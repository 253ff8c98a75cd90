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
//! - `checkpoint`: SQLite's checkpoints on a connection beside the writer,
//!   not inside its commits;
//! - `applier`: the writer's connection, time limit and retries, and the
//!   isolation of a message the database refuses, which goes to the
//!   `set_aside` file instead of stopping the pipeline.

pub mod accepted;
pub mod applier;
pub mod apply;
mod checkpoint;
mod drain;
mod durable;
mod effects;
mod fold;
pub mod recorded;
pub mod set_aside;
pub mod spool;
pub mod writer;

pub use self::accepted::{Accepted, Applied, Content, StoreOutcome};
pub use self::apply::{ApplyPolicy, BatchApplied, SoftBouncePolicy};

/// A fresh, empty directory of a unit test's own (`bouncer-{name}-` the
/// process and thread), for the files the spool and the log sync write.
#[cfg(test)]
pub(crate) fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "bouncer-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
