//! The local durable spool: where verified messages wait, fsynced before
//! their 2xx, while the database cannot take them.
//!
//! An append-only file of records `[len: u32 LE][crc32: u32 LE][json]`. A
//! torn record at the end (a crash mid-append, never acknowledged) is cut
//! off when the spool is opened. Records are applied in file order; the file
//! is emptied once every record is in the database. A crash mid-drain makes
//! the next start apply some records again, which the MessageId dedupe turns
//! into no-ops: exactly once in effect.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpoolRecord {
    pub received_at: Timestamp,
    /// The SNS envelope exactly as received.
    pub body: String,
    /// A SubscriptionConfirmation that was confirmed before it was spooled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_arn: Option<String>,
}

const HEADER: usize = 8;
/// A record larger than this is corruption, not a message (bodies are capped
/// far below it).
const MAX_RECORD: usize = 16 * 1024 * 1024;

pub struct Spool {
    path: PathBuf,
    file: File,
    /// Bytes of the file that hold whole records.
    len: u64,
    /// Where the next drain reads from.
    drained: u64,
}

impl Spool {
    /// Opens (or creates) the spool, cutting off a torn tail.
    pub fn open(path: &Path) -> io::Result<Spool> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // One process per spool: two writers appending at their own offsets
        // (or one emptying what the other still counts on) would lose
        // acknowledged messages.
        file.try_lock().map_err(|_| {
            io::Error::other(format!(
                "the spool {} is in use by another bouncer process; give each process its own SPOOL_PATH",
                path.display()
            ))
        })?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut whole = 0usize;
        while let Some((_, next)) = decode_at(&bytes, whole) {
            whole = next;
        }
        if whole < bytes.len() && intact_record_follows(&bytes, whole) {
            // Not a torn append: acknowledged messages lie beyond the damage.
            return Err(io::Error::other(format!(
                "the spool {} is damaged at byte {whole} with intact records after it; \
                 move it aside and keep it (it holds acknowledged messages), then start again",
                path.display()
            )));
        }
        if whole < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                torn_bytes = bytes.len() - whole,
                "spool ends in a torn record (never acknowledged); cutting it off"
            );
            file.set_len(whole as u64)?;
            file.sync_all()?;
        }
        Ok(Spool {
            path: path.to_owned(),
            file,
            len: whole as u64,
            drained: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether records wait to be applied.
    pub fn has_pending(&self) -> bool {
        self.drained < self.len
    }

    /// Appends the records and fsyncs once for all of them.
    pub fn append(&mut self, records: &[SpoolRecord]) -> io::Result<()> {
        let mut buf = Vec::new();
        for record in records {
            let json = serde_json::to_vec(record).map_err(io::Error::other)?;
            buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
            buf.extend_from_slice(&json);
        }
        self.file.seek(SeekFrom::Start(self.len))?;
        let written = self
            .file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = written {
            // Leave no half-written record behind an acknowledged one.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Up to `max` records from the drain position, and the position after
    /// them (pass it to [`Spool::mark_drained`] once they are stored).
    pub fn read_pending(&mut self, max: usize) -> io::Result<(Vec<SpoolRecord>, u64)> {
        let mut records = Vec::new();
        let mut pos = self.drained;
        self.file.seek(SeekFrom::Start(pos))?;
        while records.len() < max && pos < self.len {
            let mut header = [0u8; HEADER];
            self.file.read_exact(&mut header)?;
            let (size, crc) = split_header(&header);
            if size == 0 || size > MAX_RECORD {
                return Err(io::Error::other("spool record length is corrupt"));
            }
            let mut json = vec![0u8; size];
            self.file.read_exact(&mut json)?;
            if crc32fast::hash(&json) != crc {
                return Err(io::Error::other("spool record checksum mismatch"));
            }
            records.push(serde_json::from_slice(&json).map_err(io::Error::other)?);
            pos += (HEADER + size) as u64;
        }
        Ok((records, pos))
    }

    /// Records up to `pos` are in the database; when all are, empty the file.
    pub fn mark_drained(&mut self, pos: u64) -> io::Result<()> {
        self.drained = pos.min(self.len);
        if self.drained == self.len {
            self.file.set_len(0)?;
            self.file.sync_all()?;
            self.len = 0;
            self.drained = 0;
        }
        Ok(())
    }
}

fn split_header(header: &[u8; HEADER]) -> (usize, u32) {
    let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    (size, crc)
}

/// The record at `at` if it is whole and intact, and where the next begins.
fn decode_at(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header: &[u8; HEADER] = bytes.get(at..at + HEADER)?.try_into().ok()?;
    let (size, crc) = split_header(header);
    let json = bytes.get(at + HEADER..at + HEADER + size)?;
    (size > 0 && size <= MAX_RECORD && crc32fast::hash(json) == crc)
        .then_some((json, at + HEADER + size))
}

/// Whether a whole, intact record starts anywhere after the damaged one at
/// `at` (an append torn by a crash is always the last thing in the file).
fn intact_record_follows(bytes: &[u8], at: usize) -> bool {
    (at + 1..bytes.len().saturating_sub(HEADER))
        .any(|i| decode_at(bytes, i).is_some_and(|(json, _)| json.first() == Some(&b'{')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: &str) -> SpoolRecord {
        SpoolRecord {
            received_at: Timestamp::from_unix_millis(0).unwrap(),
            body: body.into(),
            confirmed_mode: None,
            subscription_arn: None,
        }
    }

    #[test]
    fn damage_before_intact_records_refuses_to_open_and_a_second_process_is_refused() {
        let dir = std::env::temp_dir().join(format!("bouncer-spool-damage-{}", std::process::id()));
        let path = dir.join("unit.spool");
        let _ = std::fs::remove_file(&path);
        let mut spool = Spool::open(&path).unwrap();
        assert!(
            Spool::open(&path)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .contains("in use")
        );
        spool.append(&[record("a"), record("b")]).unwrap();
        drop(spool);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 2] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            Spool::open(&path)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .contains("damaged")
        );
        // An all-zero tail (a torn append after a crash) is cut instead.
        std::fs::write(&path, [0u8; 20]).unwrap();
        let spool = Spool::open(&path).unwrap();
        assert!(!spool.has_pending());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = std::env::temp_dir().join(format!("bouncer-spool-{}", std::process::id()));
        let path = dir.join("unit.spool");
        let _ = std::fs::remove_file(&path);
        let mut spool = Spool::open(&path).unwrap();
        spool.append(&[record("a"), record("b")]).unwrap();
        drop(spool);
        // A crash in the middle of a third append.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let mut spool = Spool::open(&path).unwrap();
        assert!(spool.has_pending());
        let (records, pos) = spool.read_pending(10).unwrap();
        let bodies: Vec<_> = records.iter().map(|r| r.body.as_str()).collect();
        assert_eq!(bodies, ["a", "b"]);
        spool.mark_drained(pos).unwrap();
        assert!(!spool.has_pending());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
