//! The local durable spool: where verified messages wait, fsynced before
//! their 2xx, while the database cannot take them.
//!
//! `SPOOL_PATH` is a directory of append-only segment files
//! (`000000000001.seg`, ...), each a run of records
//! `[len: u32 LE][crc32: u32 LE][json]`. Messages are appended to the newest
//! segment; a new segment begins when it passes [`SEGMENT_BYTES`]. The drain
//! reads from the oldest, a bounded chunk at a time, and deletes each
//! segment once all of it is in the database, so the spool shrinks while
//! messages keep arriving and memory stays bounded however large it grew.
//!
//! A torn record at the end of the newest segment (a crash mid-append,
//! never acknowledged) is cut off at open, its bytes kept in a `torn-*.bin`
//! file: damage to the last acknowledged record looks the same. Damage
//! anywhere else is skipped to the next intact record, its bytes kept in a
//! `damaged-*.bin` file and reported: the acknowledged records after it are
//! still applied. Damage whose bytes cannot be copied (a full disk) is
//! skipped too, and its segment, once drained, is kept under a `damaged-`
//! name rather than deleted. A kept file is never overwritten: segment
//! numbers start again with every empty spool, so a later incident can
//! meet the same name. A crash mid-drain applies part of a segment again at the next
//! start, which the MessageId dedupe turns into no-ops: exactly once in
//! effect.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
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
/// A record larger than this is damage, not a message (bodies are capped far
/// below it).
const MAX_RECORD: usize = 16 * 1024 * 1024;
/// A segment is closed and a new one begun past this size.
pub const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// The most a drain chunk reads into memory (at least one record).
const CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Where the drain has got to: a segment and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    seq: u64,
    offset: u64,
}

/// Records read for the drain, and the position after each of them.
pub struct Chunk {
    pub records: Vec<SpoolRecord>,
    pub ends: Vec<Position>,
    /// Where the read began (the drain position).
    pub start: Position,
    /// Where the read stopped: past the last record, or past damage that
    /// no intact record follows (its bytes kept aside). Once every record
    /// is in, the drain moves here, so such damage is not met again.
    pub end: Position,
}

struct Segment {
    seq: u64,
    /// Bytes that hold whole appended records.
    len: u64,
}

pub struct Spool {
    dir: PathBuf,
    _lock: File,
    /// Oldest first; the last one takes appends.
    segments: VecDeque<Segment>,
    appender: Option<File>,
    head: Position,
    /// The drain's open segment, kept between chunks.
    reader: Option<Reader>,
    /// Segments holding damage whose bytes could not be copied aside (a
    /// full disk), by number, with the offset of their first such damage:
    /// each is kept whole under a `damaged-` name once drained, not
    /// deleted (a new name takes no room for its bytes).
    keep_whole: std::collections::BTreeMap<u64, u64>,
}

struct Reader {
    seq: u64,
    /// The offset the next read starts at.
    at: u64,
    inner: BufReader<File>,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:012}.seg")
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Spool {
    /// Opens (or creates) the spool directory, taking its lock and cutting a
    /// torn tail off the newest segment. A spool written by an earlier
    /// version (one file at `path`) becomes the first segment.
    pub fn open(path: &Path) -> io::Result<Spool> {
        adopt_single_file(path)?;
        std::fs::create_dir_all(path)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("LOCK"))?;
        // One process per spool: two writers appending, or one deleting what
        // the other still counts on, would lose acknowledged messages.
        lock.try_lock().map_err(|_| {
            io::Error::other(format!(
                "the spool {} is in use by another bouncer process; give each process its own SPOOL_PATH",
                path.display()
            ))
        })?;
        let mut seqs = Vec::new();
        let mut strays = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            let Some(stem) = name.strip_suffix(".seg") else {
                continue;
            };
            // Only the names bouncer writes: `01.seg` beside
            // `000000000001.seg` would be listed as the same segment twice
            // (and the drain then waited for ever on bytes it could not
            // find), and a lone `7.seg` could not be opened by its number.
            match stem.parse::<u64>() {
                Ok(seq) if segment_name(seq) == name => seqs.push(seq),
                _ => strays.push(name.into_owned()),
            }
        }
        if !strays.is_empty() {
            strays.sort();
            // A name after every segment, never one in use: renaming a
            // stray onto a segment would overwrite acknowledged messages.
            let free = segment_name(seqs.iter().max().map_or(1, |s| s + 1));
            return Err(io::Error::other(format!(
                "the spool {} holds {}, not a segment name bouncer writes: move it out of the folder, or, if it holds messages to apply, rename it to a name no segment has (such as {free}, then the next number for another); nothing was read",
                path.display(),
                strays.join(", ")
            )));
        }
        seqs.sort_unstable();
        let mut segments = VecDeque::new();
        for seq in seqs {
            let len = std::fs::metadata(path.join(segment_name(seq)))?.len();
            segments.push_back(Segment { seq, len });
        }
        let mut spool = Spool {
            dir: path.to_owned(),
            _lock: lock,
            head: Position {
                seq: segments.front().map_or(1, |s| s.seq),
                offset: 0,
            },
            segments,
            appender: None,
            reader: None,
            keep_whole: Default::default(),
        };
        spool.cut_torn_tail()?;
        Ok(spool)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether records wait to be applied.
    pub fn has_pending(&self) -> bool {
        self.pending_bytes() > 0
    }

    /// Bytes of records not applied yet.
    pub fn pending_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| {
                if s.seq == self.head.seq {
                    s.len.saturating_sub(self.head.offset)
                } else if s.seq > self.head.seq {
                    s.len
                } else {
                    0
                }
            })
            .sum()
    }

    /// The newest segment's torn tail (a crash mid-append) is cut off; damage
    /// followed by intact records is left for the reader to skip.
    fn cut_torn_tail(&mut self) -> io::Result<()> {
        let Some(last) = self.segments.back_mut() else {
            return Ok(());
        };
        let path = self.dir.join(segment_name(last.seq));
        let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
        // Damage earlier in the segment is the reader's to skip; what
        // follows the last intact record is the torn tail.
        let whole = end_of_intact(&mut file, last.len)?;
        if whole < last.len {
            // Most often a crash mid-append, never acknowledged; but the
            // same bytes are what damage to the last acknowledged record
            // looks like, so they are kept before the cut, never only
            // dropped.
            let bytes = read_range(&mut file, whole, last.len)?;
            let kept = match keep_bytes(
                &self.dir,
                &format!("torn-{:012}-{whole}", last.seq),
                &bytes,
            ) {
                Ok(kept) => kept,
                // A full disk must not stop the start: the bytes stay where
                // they are, and once records are appended after them the
                // reader skips them as damage and tries to keep them again.
                Err(e) => {
                    tracing::error!(
                        path = %path.display(),
                        error = %e,
                        "spool ends in a record that does not check out, and its bytes cannot be kept aside; left in place"
                    );
                    return Ok(());
                }
            };
            tracing::warn!(
                path = %path.display(),
                torn_bytes = bytes.len(),
                kept_in = %kept.display(),
                "spool ends in a record that does not check out (a crash mid-append, never acknowledged, or damage to the last record); its bytes are kept and it is cut off"
            );
            file.set_len(whole)?;
            file.sync_all()?;
            last.len = whole;
        }
        Ok(())
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
        let needs_new = self.segments.back().is_none_or(|s| s.len >= SEGMENT_BYTES);
        if needs_new {
            let seq = self.segments.back().map_or(self.head.seq, |s| s.seq + 1);
            // Never over an existing file: a segment whose removal failed
            // may still hold records (numbers only grow, see `advance`).
            let file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(self.dir.join(segment_name(seq)))?;
            sync_dir(&self.dir)?;
            self.segments.push_back(Segment { seq, len: 0 });
            self.appender = Some(file);
        }
        let last = self
            .segments
            .back_mut()
            .ok_or_else(|| io::Error::other("no spool segment"))?;
        if self.appender.is_none() {
            let file = OpenOptions::new()
                .write(true)
                .open(self.dir.join(segment_name(last.seq)))?;
            self.appender = Some(file);
        }
        let file = self
            .appender
            .as_mut()
            .ok_or_else(|| io::Error::other("no spool segment"))?;
        let written = file
            .seek(SeekFrom::Start(last.len))
            .and_then(|_| file.write_all(&buf))
            .and_then(|_| file.sync_data());
        if let Err(e) = written {
            // Leave no half-written record behind an acknowledged one.
            let _ = file.set_len(last.len);
            return Err(e);
        }
        last.len += buf.len() as u64;
        Ok(())
    }

    /// Up to `max` records (and about [`CHUNK_BYTES`]) from the drain
    /// position; pass a record's end to [`Spool::advance`] once it and those
    /// before it are stored.
    pub fn read_chunk(&mut self, max: usize) -> io::Result<Chunk> {
        let mut records = Vec::new();
        let mut ends = Vec::new();
        let mut bytes = 0usize;
        let mut pos = self.head;
        while records.len() < max.max(1) && bytes < CHUNK_BYTES {
            let Some(segment) = self.segments.iter().find(|s| s.seq >= pos.seq) else {
                break;
            };
            if segment.seq > pos.seq {
                pos = Position {
                    seq: segment.seq,
                    offset: 0,
                };
            }
            let len = segment.len;
            if pos.offset >= len {
                match self.segments.iter().find(|s| s.seq > pos.seq) {
                    Some(next) => {
                        pos = Position {
                            seq: next.seq,
                            offset: 0,
                        };
                        continue;
                    }
                    None => break,
                }
            }
            match self.read_record(pos, len)? {
                Read1::Record(record, size) => {
                    bytes += size;
                    pos.offset += size as u64;
                    records.push(record);
                    ends.push(pos);
                }
                Read1::Damaged { resume_at } => {
                    if let Err(e) = self.keep_damaged(pos, resume_at) {
                        // Waiting for room would hold back every record
                        // after the damage, and with them the writer (in
                        // spool mode until the spool is drained), while
                        // the room it waits for is held by this segment.
                        tracing::error!(
                            segment = pos.seq,
                            offset = pos.offset,
                            damaged_bytes = resume_at - pos.offset,
                            error = %e,
                            "spool damage skipped: the records after it are applied; its bytes cannot be copied aside, so the whole segment is kept once drained"
                        );
                        self.keep_whole.entry(pos.seq).or_insert(pos.offset);
                    }
                    pos.offset = resume_at;
                }
            }
        }
        Ok(Chunk {
            records,
            ends,
            start: self.head,
            end: pos,
        })
    }

    fn read_record(&mut self, pos: Position, len: u64) -> io::Result<Read1> {
        let mut reader = match self.reader.take() {
            Some(r) if r.seq == pos.seq && r.at == pos.offset => r,
            _ => {
                let mut file = File::open(self.dir.join(segment_name(pos.seq)))?;
                file.seek(SeekFrom::Start(pos.offset))?;
                Reader {
                    seq: pos.seq,
                    at: pos.offset,
                    inner: BufReader::new(file),
                }
            }
        };
        match read_at(&mut reader.inner, pos.offset, len) {
            Some((record, size)) => {
                reader.at = pos.offset + size as u64;
                self.reader = Some(reader);
                Ok(Read1::Record(record, size))
            }
            None => {
                let mut file = File::open(self.dir.join(segment_name(pos.seq)))?;
                let resume_at = next_intact(&mut file, pos.offset + 1, len)?.unwrap_or(len);
                Ok(Read1::Damaged { resume_at })
            }
        }
    }

    /// Keeps the damaged bytes beside the spool for an operator, and says so.
    fn keep_damaged(&self, pos: Position, resume_at: u64) -> io::Result<()> {
        let mut file = File::open(self.dir.join(segment_name(pos.seq)))?;
        let bytes = read_range(&mut file, pos.offset, resume_at)?;
        let kept = keep_bytes(
            &self.dir,
            &format!("damaged-{:012}-{}", pos.seq, pos.offset),
            &bytes,
        )?;
        tracing::error!(
            segment = pos.seq,
            offset = pos.offset,
            damaged_bytes = bytes.len(),
            kept_in = %kept.display(),
            "spool damage skipped: the records after it are applied; the damaged bytes are kept"
        );
        Ok(())
    }

    /// Records up to `end` are in the database: segments wholly before it
    /// are deleted, and a spool drained to its end is emptied.
    pub fn advance(&mut self, end: Position) -> io::Result<()> {
        self.head = end;
        while self.segments.len() > 1 && self.segments[0].seq < end.seq {
            if let Some(done) = self.segments.pop_front() {
                self.remove_segment(done.seq)?;
            }
        }
        let drained_all = self.segments.len() == 1
            && self.segments[0].seq == end.seq
            && end.offset >= self.segments[0].len;
        if drained_all && let Some(done) = self.segments.pop_front() {
            self.appender = None;
            // The next segment takes the next number even if the removal
            // fails: a file left behind is read again at the next start
            // (duplicates, no-ops), never reused for new records.
            self.head = Position {
                seq: done.seq + 1,
                offset: 0,
            };
            self.remove_segment(done.seq)?;
        }
        Ok(())
    }

    fn remove_segment(&mut self, seq: u64) -> io::Result<()> {
        if self.reader.as_ref().is_some_and(|r| r.seq == seq) {
            self.reader = None;
        }
        let path = self.dir.join(segment_name(seq));
        match self.keep_whole.remove(&seq) {
            None => std::fs::remove_file(path),
            Some(offset) => {
                // Failed, the segment stays under its own name and is read
                // again at the next start, damage and all.
                let kept = keep_by_link(
                    &self.dir,
                    &format!("damaged-{seq:012}-{offset}-segment"),
                    &path,
                )?;
                tracing::warn!(
                    segment = seq,
                    kept_in = %kept.display(),
                    "drained spool segment kept whole: it holds damage whose bytes could not be copied aside (from the offset in its name); its other records are applied"
                );
                Ok(())
            }
        }
    }
}

enum Read1 {
    Record(SpoolRecord, usize),
    Damaged { resume_at: u64 },
}

/// The record at the reader's position (`offset`, in a segment of `len`
/// bytes) if it is whole and intact, with its size on disk.
fn read_at(reader: &mut impl Read, offset: u64, len: u64) -> Option<(SpoolRecord, usize)> {
    let mut header = [0u8; HEADER];
    reader.read_exact(&mut header).ok()?;
    let (size, crc) = split_header(&header);
    if !possible_size(size) || offset + (HEADER + size) as u64 > len {
        return None;
    }
    let mut json = vec![0u8; size];
    reader.read_exact(&mut json).ok()?;
    Some((decode(&json, crc)?, HEADER + size))
}

/// A size a record's header may hold.
fn possible_size(size: usize) -> bool {
    size != 0 && size <= MAX_RECORD
}

/// The record in `json` if its CRC is `crc` and it parses.
fn decode(json: &[u8], crc: u32) -> Option<SpoolRecord> {
    if crc32fast::hash(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

fn split_header(header: &[u8; HEADER]) -> (usize, u32) {
    let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    (size, crc)
}

/// The end of the segment's last intact record (0 if it has none),
/// stepping over damage that intact records follow.
fn end_of_intact(file: &mut File, len: u64) -> io::Result<u64> {
    let mut at = 0u64;
    let mut end = 0u64;
    while at < len {
        file.seek(SeekFrom::Start(at))?;
        let mut reader = BufReader::new(&mut *file);
        while at < len {
            match read_at(&mut reader, at, len) {
                Some((_, size)) => {
                    at += size as u64;
                    end = at;
                }
                None => break,
            }
        }
        if at < len {
            match next_intact(file, at + 1, len)? {
                Some(next) => at = next,
                None => break,
            }
        }
    }
    Ok(end)
}

/// Where the next intact record starts at or after `from`, if any.
///
/// Reads a window of the segment and widens it only when a candidate's
/// record reaches past it, so that finding the record after a damaged spot
/// costs about the distance to it, not the rest of the segment; and a
/// candidate is looked at in place, a full check (CRC, JSON) only for one
/// that starts like a record. (Found by fuzzing: a run of bytes that read
/// as large sizes made every offset copy and hash a quarter of a megabyte,
/// and each damaged spot read the rest of the segment: seconds for one
/// damaged megabyte.)
fn next_intact(file: &mut File, from: u64, len: u64) -> io::Result<Option<u64>> {
    const FIRST_WINDOW: u64 = 64 * 1024;
    let rest = len.saturating_sub(from);
    let mut window = FIRST_WINDOW.min(rest);
    let mut buf = Vec::new();
    // Offsets before `i` are ruled out.
    let mut i = 0usize;
    loop {
        file.seek(SeekFrom::Start(from))?;
        buf.clear();
        (&mut *file).take(window).read_to_end(&mut buf)?;
        // All of it, or all there is (a file cut shorter than `len` under
        // bouncer's feet must not be read again and again).
        let whole = buf.len() as u64 >= rest || (buf.len() as u64) < window;
        while i + HEADER < buf.len() {
            match record_at(&buf[i..]) {
                Some(true) => return Ok(Some(from + i as u64)),
                // Reaches past the window: read more, unless this is all.
                None if !whole => break,
                _ => i += 1,
            }
        }
        if whole {
            return Ok(None);
        }
        window = (window * 2).min(rest);
    }
}

/// Whether an intact record starts at the beginning of `bytes`: `None` when
/// it may, but its claimed size reaches past `bytes`.
fn record_at(bytes: &[u8]) -> Option<bool> {
    // Every record's JSON is an object: its first byte is cheap to check.
    if bytes.get(HEADER) != Some(&b'{') {
        return Some(false);
    }
    let header: &[u8; HEADER] = bytes[..HEADER].try_into().ok()?;
    let (size, crc) = split_header(header);
    if !possible_size(size) {
        return Some(false);
    }
    // Past the end of `bytes`: `None`, the caller reads more.
    let json = bytes.get(HEADER..HEADER + size)?;
    Some(json.last() == Some(&b'}') && decode(json, crc).is_some())
}

/// The bytes of `file` from `start` to `end`.
fn read_range(file: &mut File, start: u64, end: u64) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(end - start).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Writes bytes an operator may need into a new file named `<stem>.bin`,
/// or `<stem>-2.bin` and on when that exists: an earlier incident's file is
/// never overwritten. A file already holding exactly these bytes is the
/// one returned (the drain meets the same damage at every retry until its
/// segment is done; a copy each time would fill the disk).
fn keep_bytes(dir: &Path, stem: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    for path in kept_names(dir, stem) {
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                let written = file.write_all(bytes).and_then(|()| file.sync_all());
                if let Err(e) = written {
                    // No half-kept file to mislead an operator.
                    drop(file);
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                // The new name is durable too, not only its bytes.
                File::open(dir)?.sync_all()?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if std::fs::read(&path).is_ok_and(|kept| kept == bytes) {
                    return Ok(path);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free name to keep the bytes under"))
}

/// The names a kept file of `stem` may take, in turn: `<stem>.bin`, then
/// `<stem>-2.bin`, `<stem>-3.bin`, ...
fn kept_names<'a>(dir: &'a Path, stem: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
    (1u32..).map(move |n| match n {
        1 => dir.join(format!("{stem}.bin")),
        n => dir.join(format!("{stem}-{n}.bin")),
    })
}

/// Moves `from` to the first free name of `stem` ([`kept_names`]): a new
/// name for the same bytes takes no room for them on a full disk (at most
/// a directory entry), and a hard link, unlike a rename, never replaces a
/// file kept before.
fn keep_by_link(dir: &Path, stem: &str, from: &Path) -> io::Result<PathBuf> {
    for path in kept_names(dir, stem) {
        match std::fs::hard_link(from, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        std::fs::remove_file(from)?;
        File::open(dir)?.sync_all()?;
        return Ok(path);
    }
    Err(io::Error::other("no free name to keep the segment under"))
}

/// An earlier version kept the spool in one file at `path`: it becomes the
/// first segment of the directory (the record format is the same).
fn adopt_single_file(path: &Path) -> io::Result<()> {
    let parked = PathBuf::from(format!("{}.single-file", path.display()));
    if path.is_file() {
        std::fs::rename(path, &parked)?;
    }
    if parked.is_file() {
        std::fs::create_dir_all(path)?;
        std::fs::rename(&parked, path.join(segment_name(0)))?;
        sync_dir(path)?;
        tracing::warn!(path = %path.display(), "the single-file spool of an earlier version became the first segment of the spool directory");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
