//! No answer before the disk has the message.
//!
//! On PostgreSQL (`synchronous_commit` on) a COMMIT returns once the batch
//! is on disk, and its answers go out at once. The writer's SQLite
//! connection commits at `synchronous=NORMAL` instead: its COMMIT writes the
//! batch's WAL frames to the operating system and returns, and a thread of
//! its own makes the WAL durable (one fdatasync, covering every batch
//! committed since the previous one) before it answers any of those
//! messages. Meanwhile the writer runs the next batch, so the fsync (about
//! 1.5 ms on the benchmark machine, a fifth of a batch under load) no
//! longer holds the one serial part of the pipeline (BENCHMARKS.md).
//!
//! What it changes and what it does not: a 2xx still means the message is
//! on disk. A batch is visible to readers (the suppression check, the
//! page) a fsync earlier than it is durable; after a power loss in that
//! window the batch is gone, but none of it was answered, so SNS sends it
//! again. A process crash loses nothing either way (the frames are in the
//! operating system's cache). SQLite keeps the database consistent at
//! `NORMAL` in WAL mode, and syncs the WAL itself before every checkpoint
//! (a committed frame is overwritten only after the checkpoint that copied
//! it was synced to the database file).
//!
//! The log is opened when the writer's connection is (SQLite keeps it while
//! a connection is open) and that descriptor is what is synced: Linux
//! reports a failed write-back once, to the descriptors open when it
//! failed, so one opened later could be told all is well. A failed sync is
//! final: the pages it covered may be gone while the cache says they are
//! written, so from then on nothing is answered as stored and every message
//! goes to the spool, until bouncer is restarted (as PostgreSQL stops on a
//! failed fsync).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::accepted::Applied;
use super::applier::{Item, WriteError, Written};
use crate::metrics::Metrics;

/// How committed messages reach their answers.
pub(super) enum Durability {
    /// The commit was durable when it returned.
    AtCommit,
    /// The WAL must be synced first (see the module comment).
    WalSync(WalSyncer),
}

/// Makes a file's data durable; the real one is `fdatasync`.
type SyncFn = Box<dyn Fn(&File) -> std::io::Result<()> + Send>;

impl Durability {
    pub(super) fn new(wal: Option<&Path>, metrics: &Metrics) -> Durability {
        Durability::with_sync(wal, metrics, Box::new(File::sync_data))
    }

    fn with_sync(wal: Option<&Path>, metrics: &Metrics, sync: SyncFn) -> Durability {
        match wal {
            Some(path) => {
                Durability::WalSync(WalSyncer::start(path.to_owned(), metrics.clone(), sync))
            }
            None => Durability::AtCommit,
        }
    }

    /// A new writer connection: its log is opened now (see the module
    /// comment). An error means the connection must not be used.
    pub(super) fn connected(&mut self) -> Result<(), String> {
        match self {
            Durability::AtCommit => Ok(()),
            Durability::WalSync(syncer) => syncer.open_log(),
        }
    }

    /// Where a failed sync is marked for good: shared with the checkpoints
    /// beside the writer (SQLite only).
    pub(super) fn failure(&self) -> Option<Arc<OnceLock<String>>> {
        match self {
            Durability::AtCommit => None,
            Durability::WalSync(syncer) => Some(syncer.failed.clone()),
        }
    }

    /// Why nothing can be answered as stored any more, once a sync failed.
    pub(super) fn failed(&self) -> Option<String> {
        match self {
            Durability::AtCommit => None,
            Durability::WalSync(syncer) => syncer.failed.get().cloned(),
        }
    }

    /// Answers committed messages once they are durable.
    pub(super) fn answer(&self, committed: Vec<(Item, Applied)>) {
        if committed.is_empty() {
            return;
        }
        match self {
            Durability::AtCommit => answer_all(committed, &Ok(())),
            Durability::WalSync(syncer) => match &syncer.log {
                Some(log) => syncer.hand_over(Handover::Answers(log.clone(), committed)),
                // Committed on no connection: cannot happen; nobody is
                // told it is stored.
                None => answer_all(
                    committed,
                    &Err("no write-ahead log was opened for the writer's connection".into()),
                ),
            },
        }
    }

    /// Waits until everything committed so far is durable: before the
    /// spool lets go of what the drain applied, and after writes that
    /// answer nobody (an alert).
    pub(super) async fn settled(&self) -> Result<(), String> {
        match self {
            Durability::AtCommit => Ok(()),
            Durability::WalSync(syncer) => {
                let (done, wait) = oneshot::channel();
                syncer.hand_over(Handover::Barrier(syncer.log.clone(), done));
                wait.await
                    .unwrap_or_else(|_| Err("the WAL sync thread has stopped".into()))
            }
        }
    }
}

enum Handover {
    /// Committed on the connection whose log this is.
    Answers(Arc<File>, Vec<(Item, Applied)>),
    Barrier(Option<Arc<File>>, oneshot::Sender<Result<(), String>>),
}

impl Handover {
    fn log(&self) -> Option<&Arc<File>> {
        match self {
            Handover::Answers(log, _) => Some(log),
            Handover::Barrier(log, _) => log.as_ref(),
        }
    }
}

pub(super) struct WalSyncer {
    path: PathBuf,
    /// The log of the writer's current connection (kept after the
    /// connection is dropped, until the next one opens its own).
    log: Option<Arc<File>>,
    /// Set once, by the first failed sync (of the log here, or of the
    /// database file in a checkpoint), or a sync thread that is gone.
    failed: Arc<OnceLock<String>>,
    /// `None` only while being dropped.
    sender: Option<mpsc::Sender<Handover>>,
    thread: Option<JoinHandle<()>>,
}

impl WalSyncer {
    fn start(path: PathBuf, metrics: Metrics, sync: SyncFn) -> WalSyncer {
        let (sender, receiver) = mpsc::channel();
        let failed = Arc::new(OnceLock::new());
        let thread = {
            let (path, failed) = (path.clone(), failed.clone());
            std::thread::Builder::new()
                .name("bouncer-wal-sync".into())
                .spawn(move || run(&path, &receiver, &metrics, &*sync, &failed))
        };
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                fail(&failed, format!("cannot start the WAL sync thread: {e}"));
                None
            }
        };
        WalSyncer {
            path,
            log: None,
            failed,
            sender: Some(sender),
            thread,
        }
    }

    fn open_log(&mut self) -> Result<(), String> {
        let log = File::open(&self.path).map_err(|e| {
            format!(
                "cannot open the SQLite write-ahead log {}: {e}",
                self.path.display()
            )
        })?;
        self.log = Some(Arc::new(log));
        Ok(())
    }

    fn hand_over(&self, handover: Handover) {
        let sent = match &self.sender {
            Some(sender) if self.thread.is_some() => sender.send(handover).map_err(|e| e.0),
            _ => Err(handover),
        };
        // Only if the thread could not start or has died: nobody is told a
        // message is stored that may not be, and nothing is from now on.
        if let Err(handover) = sent {
            fail(&self.failed, "the WAL sync thread is not running".into());
            finish(
                handover,
                &Err(self.failed.get().cloned().unwrap_or_default()),
            );
        }
    }
}

impl Drop for WalSyncer {
    /// Whatever was handed over is synced and answered before the writer
    /// is gone: shutdown waits for one fsync at most (on the writer task's
    /// thread, at its very end).
    fn drop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Marks the failure that stops every answer as stored, once (also after a
/// failed sync of the database file in a checkpoint: `checkpoint`).
pub(super) fn fail(failed: &OnceLock<String>, why: String) {
    if failed.set(why).is_ok() {
        tracing::error!(
            error = %failed.get().map_or("", String::as_str),
            "SQLite's files could not be made durable: what they held may be lost while the cache says it is written, so nothing is answered as stored any more; messages go to the spool until bouncer is restarted"
        );
    }
}

fn run(
    path: &Path,
    receiver: &mpsc::Receiver<Handover>,
    metrics: &Metrics,
    sync: &dyn Fn(&File) -> std::io::Result<()>,
    failed: &OnceLock<String>,
) {
    while let Ok(first) = receiver.recv() {
        let mut pending = vec![first];
        pending.extend(receiver.try_iter());
        // Usually one log; two when the writer reconnected in between;
        // none for a barrier before any connection was made.
        let mut logs: Vec<&Arc<File>> = Vec::new();
        for log in pending.iter().filter_map(Handover::log) {
            if !logs.iter().any(|l| Arc::ptr_eq(l, log)) {
                logs.push(log);
            }
        }
        if failed.get().is_none() && !logs.is_empty() {
            let started = Instant::now();
            let synced = logs.iter().try_for_each(|log| sync(log));
            metrics.observe_wal_sync(started.elapsed().as_secs_f64());
            if let Err(e) = synced {
                fail(failed, format!("fdatasync of {}: {e}", path.display()));
            }
        }
        let result = match failed.get() {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        };
        for handover in pending {
            finish(handover, &result);
        }
    }
}

fn answer_all(committed: Vec<(Item, Applied)>, synced: &Result<(), String>) {
    for (item, applied) in committed {
        item.answer(match synced {
            Ok(()) => Ok(Written::Applied(applied)),
            Err(e) => Err(WriteError(format!(
                "the message was written but could not be made durable: {e}"
            ))),
        });
    }
}

fn finish(handover: Handover, result: &Result<(), String>) {
    match handover {
        Handover::Answers(_, committed) => answer_all(committed, result),
        Handover::Barrier(_, done) => {
            let _ = done.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::time::Duration;

    use super::*;
    use crate::ingest::accepted::StoreOutcome;

    type Answer = oneshot::Receiver<Result<Written, WriteError>>;

    /// A log file to open, in a directory of the test's own.
    fn log_file(name: &str) -> (PathBuf, PathBuf) {
        let dir = crate::ingest::scratch_dir(&format!("durable-{name}"));
        let wal = dir.join("bouncer.db-wal");
        std::fs::write(&wal, b"frames").unwrap();
        (dir, wal)
    }

    fn stored() -> Applied {
        Applied {
            outcome: StoreOutcome::Stored,
            events: Vec::new(),
            unrecognized: None,
            unsubscribed: false,
        }
    }

    /// A sync that tells when it starts and returns what the test says,
    /// when the test says.
    fn scripted() -> (SyncFn, mpsc::Receiver<()>, mpsc::Sender<io::Result<()>>) {
        let (entered, on_entry) = mpsc::channel();
        let (release, results) = mpsc::channel::<io::Result<()>>();
        let sync: SyncFn = Box::new(move |_: &File| {
            let _ = entered.send(());
            results
                .recv()
                .unwrap_or_else(|_| Err(io::Error::other("test ended")))
        });
        (sync, on_entry, release)
    }

    /// A connected durability whose syncs the test drives (see
    /// `scripted`), its metrics, and the directory to remove.
    struct Driven {
        dir: PathBuf,
        metrics: Metrics,
        durability: Durability,
        entered: mpsc::Receiver<()>,
        release: mpsc::Sender<io::Result<()>>,
    }

    fn driven(name: &str) -> Driven {
        let (dir, wal) = log_file(name);
        let metrics = Metrics::new();
        let (sync, entered, release) = scripted();
        let mut durability = Durability::with_sync(Some(&wal), &metrics, sync);
        durability.connected().unwrap();
        Driven {
            dir,
            metrics,
            durability,
            entered,
            release,
        }
    }

    impl Driven {
        /// Ends the test: the sync thread stops (after syncing what it was
        /// handed), `syncs` syncs were counted, the directory goes.
        fn finish(self, syncs: u64) {
            drop(self.durability);
            let text = self.metrics.render();
            let line = format!("bouncer_wal_sync_seconds_count {syncs}");
            assert!(text.contains(&line), "{text}");
            std::fs::remove_dir_all(&self.dir).unwrap();
        }
    }

    fn still_waiting(answer: &mut Answer) -> bool {
        std::thread::sleep(Duration::from_millis(20));
        matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Empty))
    }

    #[tokio::test]
    async fn no_answer_before_the_sync_that_covers_it_returns() {
        let t = driven("order");

        let (first, mut first_answer) = Item::waiting();
        t.durability.answer(vec![(first, stored())]);
        t.entered.recv().unwrap();
        // Committed while the first sync runs: it waits for the next one.
        let (second, mut second_answer) = Item::waiting();
        t.durability.answer(vec![(second, stored())]);
        assert!(still_waiting(&mut first_answer));
        assert!(still_waiting(&mut second_answer));

        t.release.send(Ok(())).unwrap();
        assert_eq!(
            first_answer.await.unwrap().unwrap(),
            Written::Applied(stored())
        );
        t.entered.recv().unwrap();
        assert!(still_waiting(&mut second_answer));
        t.release.send(Ok(())).unwrap();
        assert_eq!(
            second_answer.await.unwrap().unwrap(),
            Written::Applied(stored())
        );
        t.finish(2);
    }

    #[tokio::test]
    async fn a_failed_sync_is_final_even_if_the_next_one_would_succeed() {
        let t = driven("final");
        assert_eq!(t.durability.failed(), None);

        let (first, first_answer) = Item::waiting();
        t.durability.answer(vec![(first, stored())]);
        t.entered.recv().unwrap();
        t.release
            .send(Err(io::Error::from_raw_os_error(5)))
            .unwrap();
        let refused = first_answer.await.unwrap().unwrap_err().0;
        assert!(
            refused.contains("could not be made durable") && refused.contains("bouncer.db-wal"),
            "{refused}"
        );

        // The next sync would succeed; it is not even tried.
        t.release.send(Ok(())).unwrap();
        let (second, second_answer) = Item::waiting();
        t.durability.answer(vec![(second, stored())]);
        assert!(second_answer.await.unwrap().is_err());
        assert!(t.durability.settled().await.is_err());
        assert!(
            t.durability
                .failed()
                .is_some_and(|why| why.contains("Input/output error")),
            "{:?}",
            t.durability.failed()
        );
        assert!(t.entered.try_recv().is_err(), "a second sync was tried");
        t.finish(1);
    }

    #[tokio::test]
    async fn a_real_log_is_synced_and_a_missing_one_refuses_the_connection() {
        let (dir, wal) = log_file("real");
        let mut durability = Durability::new(Some(&wal), &Metrics::new());
        durability.connected().unwrap();
        let (item, answer) = Item::waiting();
        durability.answer(vec![(item, stored())]);
        assert_eq!(answer.await.unwrap().unwrap(), Written::Applied(stored()));
        assert_eq!(durability.settled().await, Ok(()));

        let gone = dir.join("gone.db-wal");
        let mut missing = Durability::new(Some(&gone), &Metrics::new());
        let refused = missing.connected().unwrap_err();
        assert!(refused.contains("gone.db-wal"), "{refused}");
        // Nothing committed without a log is answered as stored.
        let (item, answer) = Item::waiting();
        missing.answer(vec![(item, stored())]);
        assert!(answer.await.unwrap().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn without_a_log_to_sync_the_answer_is_immediate() {
        let durability = Durability::new(None, &Metrics::new());
        let (item, mut answer) = Item::waiting();
        durability.answer(vec![(item, stored())]);
        assert_eq!(
            answer.try_recv().unwrap().unwrap(),
            Written::Applied(stored())
        );
        assert_eq!(durability.settled().await, Ok(()));
        assert_eq!(durability.failed(), None);
    }
}
