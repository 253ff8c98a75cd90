//! Messages set aside: verified messages the database refused for a reason
//! of their own (content it cannot hold, a defect), each kept on its own as
//! one JSON line in `SPOOL_PATH/set-aside.jsonl`, fsynced, so that they
//! never hold back the messages behind them and are never lost. `bouncer
//! replay` reads the file (each line's `body` is the envelope as received),
//! and a file beside it that takes a line the first cannot ([`SetAside::keep`]).

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::time::Timestamp;

/// The file name inside the spool directory.
pub const FILE_NAME: &str = "set-aside.jsonl";

/// One message to set aside, and why.
pub struct SetAsideRecord<'a> {
    pub message_id: &'a str,
    pub received_at: Timestamp,
    pub body: &'a str,
    pub error: &'a str,
    pub at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct SetAside {
    path: PathBuf,
}

impl SetAside {
    pub fn in_dir(dir: &Path) -> SetAside {
        SetAside {
            path: dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line and fsyncs it (blocking I/O: call from a blocking
    /// thread), and says which file took it: `set-aside.jsonl`, or, when
    /// that file cannot be written for a reason other than room (its
    /// owner or mode changed by hand, a read-only mount of it), a file of
    /// its own beside it, `set-aside-<unix ms>.jsonl`. Otherwise the
    /// message would wait in the spool, and every message after it behind
    /// it, until someone mended the file. On a full disk no other file
    /// has room either: the first error is said.
    pub fn keep(&self, record: &SetAsideRecord<'_>) -> std::io::Result<PathBuf> {
        let line = serde_json::json!({
            "set_aside_at": record.at,
            "error": record.error,
            "message_id": record.message_id,
            "received_at": record.received_at,
            "body": record.body,
        });
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        let refused = match append_line(&self.path, &bytes) {
            Ok(()) => return Ok(self.path.clone()),
            Err(e) => e,
        };
        if matches!(
            refused.kind(),
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded
        ) {
            return Err(refused);
        }
        let beside = self
            .path
            .with_file_name(format!("set-aside-{}.jsonl", record.at.unix_millis()));
        match append_line(&beside, &bytes) {
            Ok(()) => {
                tracing::error!(error = %refused, path = %self.path.display(), kept_in = %beside.display(), "cannot write the set-aside file; the message is kept in a file beside it");
                Ok(beside)
            }
            Err(_) => Err(refused),
        }
    }
}

/// Appends `bytes` (one whole line) to `path` and syncs it, and the
/// folder when the file is new (or a crash could lose the file the line is
/// in). A line that could not be written whole (a full disk) is cut off
/// again, so that the next one starts a line of its own.
fn append_line(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let new = !path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let before = file.metadata()?.len();
    if let Err(e) = file.write_all(bytes) {
        // Cutting needs no room; if it fails too, the error said is the
        // write's.
        let _ = file.set_len(before);
        return Err(e);
    }
    file.sync_data()?;
    match path.parent() {
        Some(folder) if new => super::spool::sync_dir(folder),
        _ => Ok(()),
    }
}
