//! Messages set aside: verified messages the database refused for a reason
//! of their own (content it cannot hold, a defect), each kept on its own as
//! one JSON line in `SPOOL_PATH/set-aside.jsonl`, fsynced, so that they
//! never hold back the messages behind them and are never lost. `bouncer
//! replay` reads the file (each line's `body` is the envelope as received).

use std::io::Write;
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
    /// thread). A line that could not be written whole (a full disk) is
    /// cut off again, so that the next one starts a line of its own.
    pub fn keep(&self, record: &SetAsideRecord<'_>) -> std::io::Result<()> {
        let line = serde_json::json!({
            "set_aside_at": record.at,
            "error": record.error,
            "message_id": record.message_id,
            "received_at": record.received_at,
            "body": record.body,
        });
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        let before = file.metadata()?.len();
        if let Err(e) = file.write_all(&bytes) {
            // Cutting needs no room; if it fails too, the error said is
            // the write's.
            let _ = file.set_len(before);
            return Err(e);
        }
        file.sync_data()
    }
}
