//! Messages set aside: verified messages the database refused for a reason
//! of their own (content it cannot hold, a defect), each kept on its own as
//! one JSON line in `SPOOL_PATH/set-aside.jsonl`, fsynced, so that they
//! never hold back the messages behind them and are never lost. `bouncer
//! replay` reads the file (each line's `body` is the envelope as received),
//! and a file beside it that takes a line the first cannot ([`SetAside::keep`]).

use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
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
        // Absolute, so that the log and the alert name a file an operator
        // can replay from anywhere (a relative SPOOL_PATH is the service's
        // working directory's).
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
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
    /// owner or mode changed by hand, a read-only mount of it), a new file
    /// of its own beside it, `set-aside-<unix ms>.jsonl`. Otherwise the
    /// message would wait in the spool, and every message after it behind
    /// it, until someone mended the file. On a full disk no other file
    /// has room either, and when the folder takes no new file there is
    /// nowhere else: the first error is said.
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
        let refused = match append_line(&self.path, &bytes, Open::AppendOrCreate) {
            Ok(()) => return Ok(self.path.clone()),
            Err(e) => e,
        };
        if matches!(
            refused.kind(),
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded
        ) {
            return Err(refused);
        }
        let stem = format!("set-aside-{}", record.at.unix_millis());
        for n in 1..=BESIDE_NAMES {
            let name = match n {
                1 => format!("{stem}.jsonl"),
                n => format!("{stem}-{n}.jsonl"),
            };
            let beside = self.path.with_file_name(name);
            match append_line(&beside, &bytes, Open::New) {
                Ok(()) => {
                    tracing::error!(error = %refused, path = %self.path.display(), kept_in = %beside.display(), "cannot write the set-aside file; the message is kept in a file beside it");
                    return Ok(beside);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => {
                    // Both causes are said: the first may be a file's own
                    // (its mode), the second the disk's or the folder's.
                    return Err(std::io::Error::new(
                        refused.kind(),
                        format!("{refused}; a file beside it: {e}"),
                    ));
                }
            }
        }
        Err(refused)
    }
}

/// How many names a file beside is tried under (`set-aside-<ms>.jsonl`,
/// then `-2`, `-3`, ...): a name taken (two messages in one millisecond,
/// a clock stepped back, anything else of that name) is never written
/// into.
const BESIDE_NAMES: u32 = 100;

enum Open {
    /// `set-aside.jsonl`: appended to, made if missing.
    AppendOrCreate,
    /// A file beside: only one this call makes.
    New,
}

/// Appends `bytes` (one whole line) to `path` and syncs it, and its folder
/// when the file is new (or a power loss could lose the file the line is
/// in). On any failure the line is taken out again (cutting needs no
/// room), and a file this call made goes whole: no line is left that is
/// not known to be on disk, to be met half written by `replay`, and a try
/// again starts clean.
fn append_line(path: &Path, bytes: &[u8], open: Open) -> std::io::Result<()> {
    let options = || {
        let mut options = std::fs::OpenOptions::new();
        // Not blocking: a FIFO of that name (no reader) would hold the
        // writer and every message behind it; it is refused below instead.
        options.append(true).custom_flags(libc::O_NONBLOCK);
        options
    };
    // Made here or not is known from the open itself, never from a look
    // before it: only a file this call made is removed on a failure.
    let (mut file, made) = match options().create_new(true).open(path) {
        Ok(file) => (file, true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && matches!(open, Open::AppendOrCreate) => {
            (options().open(path)?, false)
        }
        Err(e) => return Err(e),
    };
    let before = match file.metadata() {
        Ok(metadata) if metadata.is_file() => metadata.len(),
        Ok(_) => {
            return Err(std::io::Error::new(
                ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Err(e) => {
            if made {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
    };
    let written = (|| {
        // A last line left without its end (a crash while it was written
        // by hand, a copy cut short) gets one, or this line would be glued
        // to it and `replay` could read neither.
        if before > 0 && !ends_a_line(path, before) {
            file.write_all(b"\n")?;
        }
        file.write_all(bytes)?;
        file.sync_data()?;
        match path.parent() {
            Some(folder) if made => super::spool::sync_dir(folder),
            _ => Ok(()),
        }
    })();
    if written.is_err() {
        if made {
            let _ = std::fs::remove_file(path);
        } else {
            let _ = file.set_len(before);
        }
    }
    written
}

/// Whether the file's last byte (it is `len` long) ends a line; a file
/// that cannot be read (opened to write only, say) is taken to.
fn ends_a_line(path: &Path, len: u64) -> bool {
    let mut last = [0u8];
    match std::fs::File::open(path).and_then(|f| f.read_at(&mut last, len - 1)) {
        Ok(1) => last[0] == b'\n',
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: i64 = 1_796_688_000_000;

    fn keep(dir: &Path, id: &str) -> std::io::Result<PathBuf> {
        SetAside::in_dir(dir).keep(&SetAsideRecord {
            message_id: id,
            received_at: Timestamp::from_unix_millis(AT).unwrap(),
            body: "{\"Type\":\"Notification\"}",
            error: "refused",
            at: Timestamp::from_unix_millis(AT).unwrap(),
        })
    }

    /// Each line of `file`, parsed; `None` for one that is not JSON.
    fn lines(file: &Path) -> Vec<Option<serde_json::Value>> {
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    #[test]
    fn a_file_that_cannot_be_written_sends_the_line_beside_it_under_a_name_not_taken() {
        let dir = crate::ingest::scratch_dir("set-aside-beside");
        std::fs::create_dir(dir.join(FILE_NAME)).unwrap();
        // The first name is taken (another message this millisecond): it
        // is not written into.
        let taken = dir.join(format!("set-aside-{AT}.jsonl"));
        std::fs::write(&taken, "an operator's notes\n").unwrap();
        let kept = keep(&dir, "m1").unwrap();
        assert_eq!(kept, dir.join(format!("set-aside-{AT}-2.jsonl")));
        assert!(kept.is_absolute());
        assert_eq!(
            std::fs::read_to_string(&taken).unwrap(),
            "an operator's notes\n"
        );
        let got = lines(&kept);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap()["message_id"], "m1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_last_line_left_without_its_end_gets_one() {
        let dir = crate::ingest::scratch_dir("set-aside-torn");
        std::fs::write(dir.join(FILE_NAME), "{\"torn\":").unwrap();
        assert_eq!(keep(&dir, "m1").unwrap(), dir.join(FILE_NAME));
        let got = lines(&dir.join(FILE_NAME));
        assert_eq!(got.len(), 2);
        assert!(got[0].is_none());
        assert_eq!(got[1].as_ref().unwrap()["message_id"], "m1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_fifo_of_that_name_does_not_hold_the_writer() {
        let dir = crate::ingest::scratch_dir("set-aside-fifo");
        let fifo = std::ffi::CString::new(dir.join(FILE_NAME).to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let kept = keep(&dir, "m1").unwrap();
        assert_eq!(kept, dir.join(format!("set-aside-{AT}.jsonl")));
        assert_eq!(lines(&kept).len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn with_nowhere_to_write_the_first_error_is_said() {
        let dir = crate::ingest::scratch_dir("set-aside-nowhere");
        let gone = dir.join("gone");
        let e = keep(&gone, "m1").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
