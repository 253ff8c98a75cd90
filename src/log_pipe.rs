//! `serve`'s log lines to standard output through a thread of their own.
//!
//! Written directly, a log reader that is slow or stopped (a full pipe, a
//! stuck log shipper) stops every request that logs, SNS's answers with
//! them (an outside trial: with a stopped reader every `POST /sns` hung).
//! Here a request hands its line over and goes on; the thread writes. Past
//! [`LINES_HELD`] lines or [`BYTES_HELD`] bytes waiting, lines are left out
//! and counted, as are
//! lines the reader refused (it went away). At shutdown the lines waiting
//! get [`SHUTDOWN_WAIT`] to be written, and the process never waits on the
//! reader beyond that: a library writer tried first (`tracing-appender`)
//! hung the process at SIGTERM with a stopped reader, and lost the lines
//! waiting without a word even with a slow one.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Lines held for a slow reader, and the bytes they may hold in all.
pub const LINES_HELD: usize = 8192;
pub const BYTES_HELD: usize = 8 << 20;

/// How long shutdown waits for the lines still held to be written.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Counts {
    /// Lines left out: the queue was full, or the reader refused them.
    dropped: AtomicU64,
    /// Lines handed over and not yet written.
    waiting: AtomicU64,
    /// Their bytes.
    bytes: AtomicUsize,
}

/// The writer the log's subscriber makes a line writer from.
#[derive(Clone)]
pub struct LogPipe {
    sender: SyncSender<Vec<u8>>,
    counts: Arc<Counts>,
}

/// Held until the process ends: dropping it waits (at most
/// [`SHUTDOWN_WAIT`]) for the lines still held to be written.
pub struct LogPipeGuard {
    counts: Arc<Counts>,
}

impl LogPipe {
    /// Starts the thread that writes to standard output.
    pub fn to_stdout() -> std::io::Result<(LogPipe, LogPipeGuard)> {
        LogPipe::to_writer(std::io::stdout())
    }

    /// Starts the thread that writes to `out` (standard output, or a
    /// reader the tests hold up).
    fn to_writer(out: impl Write + Send + 'static) -> std::io::Result<(LogPipe, LogPipeGuard)> {
        let (sender, receiver) = sync_channel(LINES_HELD);
        let counts = Arc::new(Counts::default());
        let writing = counts.clone();
        std::thread::Builder::new()
            .name("bouncer-log".into())
            .spawn(move || write_lines(&receiver, &writing, out))?;
        Ok((
            LogPipe {
                sender,
                counts: counts.clone(),
            },
            LogPipeGuard { counts },
        ))
    }

    /// Lines left out so far.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    fn send(&self, line: Vec<u8>) {
        let len = line.len();
        if self.counts.bytes.fetch_add(len, Ordering::Relaxed) + len > BYTES_HELD {
            self.counts.bytes.fetch_sub(len, Ordering::Relaxed);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.counts.waiting.fetch_add(1, Ordering::Relaxed);
        match self.sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.waiting.fetch_sub(1, Ordering::Relaxed);
                self.counts.bytes.fetch_sub(len, Ordering::Relaxed);
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// How long the thread gathers lines after a write. Woken for every line,
/// it cost the server about 10 µs a message at `LOG_LEVEL=info` (a wake
/// and a switch of the two cores for each); gathering, a crowd of lines
/// costs one wake and one `write` every 10 ms, and a request's `try_send`
/// finds no one to wake.
const GATHER: Duration = Duration::from_millis(10);

/// The thread's loop: the lines waiting written together, each whole; a
/// write the reader refused counts its lines as left out. It ends with the
/// process.
fn write_lines(receiver: &Receiver<Vec<u8>>, counts: &Counts, mut out: impl Write) {
    let mut batch: Vec<u8> = Vec::new();
    while let Ok(first) = receiver.recv() {
        let mut lines = vec![first];
        while let Ok(line) = receiver.try_recv() {
            lines.push(line);
        }
        batch.clear();
        for line in &lines {
            batch.extend_from_slice(line);
        }
        // `Stdout::write_all` holds its lock for the whole batch.
        if out.write_all(&batch).and_then(|()| out.flush()).is_err() {
            counts
                .dropped
                .fetch_add(lines.len() as u64, Ordering::Relaxed);
        }
        counts.bytes.fetch_sub(batch.len(), Ordering::Relaxed);
        counts
            .waiting
            .fetch_sub(lines.len() as u64, Ordering::Relaxed);
        // A batch this large is not kept between writes.
        if batch.capacity() > 1 << 20 {
            batch = Vec::new();
        }
        std::thread::sleep(GATHER);
    }
}

impl Drop for LogPipeGuard {
    fn drop(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while self.counts.waiting.load(Ordering::Relaxed) > 0 {
            if Instant::now() >= deadline {
                let left = self.counts.waiting.load(Ordering::Relaxed);
                if left == 0 {
                    return;
                }
                // Said on standard error from a thread of its own, waited
                // for a second at most: standard error may be the same
                // stuck pipe.
                let (said, heard) = std::sync::mpsc::channel();
                let _ = std::thread::Builder::new().spawn(move || {
                    eprintln!(
                        "{left} log lines not written: standard output did not take them within {} s",
                        SHUTDOWN_WAIT.as_secs()
                    );
                    let _ = said.send(());
                });
                let _ = heard.recv_timeout(Duration::from_secs(1));
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One log line, handed over whole when the subscriber is done with it.
pub struct LineWriter {
    pipe: LogPipe,
    line: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The subscriber writes an event in one call: held at its size.
        if self.line.is_empty() {
            self.line = buf.to_vec();
        } else {
            self.line.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.pipe.send(std::mem::take(&mut self.line));
        }
    }
}

impl<'a> MakeWriter<'a> for LogPipe {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            pipe: self.clone(),
            line: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{Sender, channel};
    use std::sync::{Condvar, Mutex};

    /// A reader that takes nothing until it is let go, and says when the
    /// log's thread first waits on it.
    #[derive(Clone)]
    struct HeldReader {
        open: Arc<(Mutex<bool>, Condvar)>,
        waiting: Sender<()>,
        read: Arc<Mutex<Vec<u8>>>,
    }

    impl HeldReader {
        fn new() -> (HeldReader, Receiver<()>) {
            let (waiting, first_wait) = channel();
            let reader = HeldReader {
                open: Arc::new((Mutex::new(false), Condvar::new())),
                waiting,
                read: Arc::default(),
            };
            (reader, first_wait)
        }

        fn let_go(&self) {
            let (open, changed) = &*self.open;
            *open.lock().expect("lock") = true;
            changed.notify_all();
        }
    }

    impl Write for HeldReader {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.waiting.send(());
            let (open, changed) = &*self.open;
            let mut open = open.lock().expect("lock");
            while !*open {
                open = changed.wait(open).expect("wait");
            }
            self.read.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// One line in the thread's hands, stuck in a write; then `more`.
    fn held_with(more: &[Vec<u8>]) -> (LogPipe, LogPipeGuard, HeldReader) {
        let (reader, first_wait) = HeldReader::new();
        let (pipe, guard) = LogPipe::to_writer(reader.clone()).expect("thread");
        pipe.send(b"first\n".to_vec());
        first_wait.recv().expect("the thread writes");
        for line in more {
            pipe.send(line.clone());
        }
        (pipe, guard, reader)
    }

    #[test]
    fn lines_past_the_budget_are_left_out_counted_and_the_rest_written_in_order() {
        let lines: Vec<Vec<u8>> = (0..LINES_HELD + 300)
            .map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let (pipe, guard, reader) = held_with(&lines);
        assert_eq!(pipe.dropped(), 300, "the lines past {LINES_HELD} waiting");
        reader.let_go();
        drop(guard);
        let read = String::from_utf8(reader.read.lock().expect("lock").clone()).expect("text");
        let expected: String = std::iter::once("first\n".to_owned())
            .chain((0..LINES_HELD).map(|i| format!("line {i}\n")))
            .collect();
        assert!(read == expected, "{} bytes read", read.len());
        assert_eq!(pipe.dropped(), 300);
    }

    #[test]
    fn bytes_past_the_budget_are_left_out_and_counted() {
        let mib = |c: u8| {
            let mut line = vec![c; 1 << 20];
            line.push(b'\n');
            line
        };
        // The first line's bytes count until they are written; lines of
        // a MiB and a byte each pass BYTES_HELD with the eighth.
        let more: Vec<Vec<u8>> = (b'a'..=b'j').map(mib).collect();
        let (pipe, guard, reader) = held_with(&more);
        assert_eq!(pipe.dropped(), 3, "past {BYTES_HELD} bytes waiting");
        reader.let_go();
        drop(guard);
        let read = reader.read.lock().expect("lock").clone();
        assert_eq!(read.len(), 6 + 7 * ((1 << 20) + 1));
        assert_eq!(read[6], b'a');
        assert_eq!(read[read.len() - 2], b'g');
    }
}
