//! The writer: one task per process that owns every SNS-message write.
//!
//! Requests hand it verified messages and wait. It takes whatever has queued
//! up (up to `WRITE_BATCH_MAX`) and commits it in one transaction, so that
//! concurrent messages share one fsync while each stays atomic (group
//! commit).
//!
//! It has an explicit state. **Up**: batches go to the database. **Down**:
//! the database failed in a way a retry may cure; batches go straight to
//! the spool (one fsync each) without touching the database, so intake
//! keeps its speed, and one task (`drain`) probes the database on a backoff
//! and applies the spool in order. Only the drain, finding the spool empty,
//! sets the state back to Up; both changes happen under the spool's lock,
//! so a message never lands in the spool behind the drain's back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::accepted::{Accepted, Content};
use super::applier::{
    Applier, ApplyOutcome, Item, LeftBecause, ROOM_FOR_WRITES, Room, Unkept, WriteError, Written,
};
use super::spool::{Spool, SpoolRecord};
use crate::metrics::Metrics;
use crate::store::FULL_BELOW;

/// The writes that failed since the last that went in.
#[derive(Default)]
struct Failures {
    /// The last write to the database failed and none has succeeded
    /// since. The drain's probe (an empty transaction) can succeed on a
    /// database that takes no writes (a full disk), and with nothing in
    /// the spool to apply it then sets Up: only a write (or, after a
    /// failure for room, room) clears this.
    failing: bool,
    /// Counts failures, so that a room read before one is not taken for
    /// an answer to it.
    generation: u64,
    /// The last failure was SQLite's disk being full, or `serve` started
    /// on a full disk: the bytes free that say writes go in again (a
    /// write that failed for room needs [`ROOM_FOR_WRITES`]; a start needs
    /// what a start on a disk with room needs, [`FULL_BELOW`]). `None`: a
    /// write that failed for another cause waits for one that goes in.
    room_needed: Option<u64>,
}

impl Failures {
    /// While no write has gone in since one failed for room: the bytes
    /// free that say writes go in again.
    fn waiting_for_room(&self) -> Option<u64> {
        self.room_needed.filter(|_| self.failing)
    }
}

/// What the writer and the drain share.
pub(super) struct Shared {
    /// `None`: no spool (a replay straight into the database); while the
    /// database is down, messages are then refused with 503.
    spool: Mutex<Option<Spool>>,
    /// Where batches go: the database (Up) or the spool.
    up: AtomicBool,
    /// The last append to the spool failed (a full disk).
    spool_failing: AtomicBool,
    /// The writes that failed; every report of them is made under this
    /// lock.
    failures: Mutex<Failures>,
    /// What `/readyz`, the gauge and the log say: Up and taking writes.
    takes_writes: AtomicBool,
    pub(super) wake_drain: Notify,
    pub(super) metrics: Metrics,
}

impl Shared {
    pub(super) fn spool(&self) -> MutexGuard<'_, Option<Spool>> {
        self.spool.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Called with the spool locked, so that the state and the spool change
    /// together.
    pub(super) fn set_up(&self, up: bool, spool: &Option<Spool>) {
        let failures = self.failures();
        let was = self.up.swap(up, Ordering::AcqRel);
        if up && !was && failures.failing {
            tracing::debug!(
                "the database answers again; the next write will tell whether it takes writes"
            );
        }
        self.report(&failures);
        self.metrics
            .spool_pending(spool.as_ref().map_or(0, Spool::pending_bytes));
    }

    /// What a batch of `count` items (the writer's, or a chunk the drain
    /// applied) says of the database: a failure, or writes going in. Only
    /// a batch that stored something new proves the latter: one of
    /// duplicates, or of messages set aside, commits nothing, which a
    /// database on a full disk takes as it takes the probe. A message
    /// left because its set-aside file could not be written says nothing
    /// of the database.
    pub(super) fn wrote(&self, outcome: &ApplyOutcome, count: usize) {
        let handled = count.saturating_sub(outcome.left.len());
        let mut failures = self.failures();
        if let Some(because @ (LeftBecause::Unavailable | LeftBecause::DiskFull)) =
            outcome.left_because
        {
            failures.generation += 1;
            failures.room_needed = (because == LeftBecause::DiskFull).then_some(ROOM_FOR_WRITES);
            failures.failing = true;
        } else if handled > outcome.duplicates + outcome.set_aside {
            failures.room_needed = None;
            failures.failing = false;
            self.spool_failing.store(false, Ordering::Release);
        } else {
            return;
        }
        self.report(&failures);
    }

    fn failures(&self) -> MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Which failure a room read now would answer (see `room_seen`).
    pub(super) fn failure_generation(&self) -> u64 {
        self.failures().generation
    }

    /// While no write has gone in since one failed for room (or a start
    /// on a full disk): the bytes free that say writes go in again.
    pub(super) fn room_needed(&self) -> Option<u64> {
        self.failures().waiting_for_room()
    }

    /// What the drain read of the room on the database's disk, as of
    /// failure `generation`, while no write has gone in since one failed
    /// for room. Room again says that the database takes writes, with no
    /// message to prove it: a readiness probe that took bouncer out of
    /// SNS's way would otherwise keep it out for good. A read made before
    /// a later failure says nothing of it. (A write that fails from here on
    /// says the opposite again, `wrote`.)
    pub(super) fn room_seen(&self, room: Room, generation: u64) {
        let mut failures = self.failures();
        let Some(needed) = failures.waiting_for_room() else {
            return;
        };
        let enough = match room {
            Room::Enough => true,
            Room::Short(free) => free >= needed,
            Room::Unknown => false,
        };
        if !enough || failures.generation != generation {
            return;
        }
        failures.room_needed = None;
        failures.failing = false;
        tracing::info!(
            "the database's disk has room again ({} MiB or more free)",
            needed >> 20
        );
        self.report(&failures);
    }

    /// Says a change of what the service reports, once: in the log and in
    /// `bouncer_database_up` (which `/metrics` also sets from its own reads
    /// at each scrape). Made under the failures' lock, so that two changes
    /// (the intake's, the drain's) are never said out of order.
    fn report(&self, failures: &MutexGuard<'_, Failures>) {
        let now = self.up.load(Ordering::Acquire) && !failures.failing;
        if self.takes_writes.swap(now, Ordering::AcqRel) != now {
            if now {
                tracing::info!("database reachable again; writing directly");
            } else {
                tracing::warn!("database unavailable; messages go to the spool until it is back");
            }
            self.metrics.database_up(now);
        }
    }
}

type Job = Item;

/// Hands messages to the writer task.
#[derive(Clone)]
pub struct Writer {
    sender: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

/// How the writer runs.
pub struct WriterConfig {
    pub batch_max: usize,
    /// The drain's first and longest wait between tries.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Writer {
    /// Starts the writer task and the drain; the writer ends when every
    /// `Writer` clone is dropped and its queue is empty, and stops the drain
    /// (what is spooled stays for the next start).
    /// `up`: the database took the migrations at start-up.
    pub fn start(
        applier: Applier,
        spool: Option<Spool>,
        config: WriterConfig,
        metrics: Metrics,
        up: bool,
    ) -> (Writer, JoinHandle<()>) {
        let batch_max = config.batch_max.max(1);
        let (sender, receiver) = mpsc::channel(batch_max * 4);
        // A spool holding messages from before goes first.
        let up = up && !spool.as_ref().is_some_and(Spool::has_pending);
        // A start on a full disk is taken as a write that failed for room:
        // not ready until one goes in or there is room again (the drain
        // looks). Writes are still tried.
        let full = match applier.room() {
            Room::Short(free) if free < FULL_BELOW => {
                tracing::warn!(
                    free_bytes = free,
                    "the database's disk is full: /readyz answers 503 until a message is stored or it has {} MiB free",
                    FULL_BELOW >> 20
                );
                true
            }
            Room::Short(_) | Room::Enough | Room::Unknown => false,
        };
        let room_gauge = applier.room_gauge();
        let takes_writes = up && !full;
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            up: AtomicBool::new(up),
            spool_failing: AtomicBool::new(false),
            failures: Mutex::new(Failures {
                failing: full,
                generation: 0,
                room_needed: full.then_some(FULL_BELOW),
            }),
            takes_writes: AtomicBool::new(takes_writes),
            wake_drain: Notify::new(),
            metrics,
        });
        shared.set_up(up, &shared.spool());
        shared.metrics.database_up(takes_writes);
        let applier = Arc::new(tokio::sync::Mutex::new(applier));
        let stop = CancellationToken::new();
        let drain = tokio::spawn(super::drain::run(
            shared.clone(),
            applier.clone(),
            room_gauge,
            batch_max,
            (config.retry_min, config.retry_max),
            stop.clone(),
        ));
        if !takes_writes {
            shared.wake_drain.notify_one();
        }
        let task = IntakeTask {
            shared: shared.clone(),
            applier,
            batch_max,
        };
        let handle = tokio::spawn(async move {
            task.run(receiver).await;
            stop.cancel();
            let _ = drain.await;
        });
        (Writer { sender, shared }, handle)
    }

    /// Hands over a message whose content was parsed by the caller (on the
    /// request's worker, not on the single writer task).
    pub async fn write(&self, accepted: Accepted) -> Result<Written, WriteError> {
        let (reply, answer) = oneshot::channel();
        let job = Item {
            accepted,
            reply: Some(reply),
        };
        self.sender
            .send(job)
            .await
            .map_err(|_| WriteError("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| WriteError("the writer stopped before answering".into()))?
    }

    /// Whether messages currently go straight to the database, and the
    /// last write there went in.
    pub fn database_up(&self) -> bool {
        self.shared.takes_writes.load(Ordering::Acquire)
    }

    /// Whether messages go to the database (Up), whether or not the last
    /// write there went in.
    pub fn writes_directly(&self) -> bool {
        self.shared.is_up()
    }

    /// While no write has gone in since one failed for room (SQLite's
    /// disk full), or since a start on a full disk: the bytes free that
    /// say writes go in again (16 MiB after a failed write, 1 MiB after
    /// such a start).
    pub fn room_needed(&self) -> Option<u64> {
        self.shared.room_needed()
    }

    /// Whether the last append to the spool failed: then neither the
    /// database nor the spool takes messages, and they are answered 503.
    pub fn spool_failing(&self) -> bool {
        self.shared.spool_failing.load(Ordering::Acquire)
    }

    /// Bytes waiting in the spool.
    pub fn spooled_bytes(&self) -> u64 {
        self.shared.spool().as_ref().map_or(0, Spool::pending_bytes)
    }
}

struct IntakeTask {
    shared: Arc<Shared>,
    applier: Arc<tokio::sync::Mutex<Applier>>,
    batch_max: usize,
}

impl IntakeTask {
    async fn run(self, mut receiver: mpsc::Receiver<Job>) {
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            while batch.len() < self.batch_max {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.shared.metrics.observe_batch(batch.len());
            let batch = match self.spool_if_down(batch).await {
                Some(batch) => batch,
                None => continue,
            };
            let count = batch.len();
            let outcome = self.applier.lock().await.apply(batch, Unkept::Refuse).await;
            self.shared.wrote(&outcome, count);
            let left = outcome.left;
            if !left.is_empty() {
                self.go_down_and_spool(left).await;
            }
        }
    }

    /// While the database is down, the batch goes to the spool (decided
    /// under the spool's lock, see the module comment); otherwise it is
    /// handed back to be written.
    async fn spool_if_down(&self, batch: Vec<Job>) -> Option<Vec<Job>> {
        // Only this task sets Down: if it reads Up, it is Up.
        if self.shared.is_up() {
            return Some(batch);
        }
        let shared = self.shared.clone();
        let records = records_of(&batch);
        let outcome = tokio::task::spawn_blocking(move || {
            let mut spool = shared.spool();
            if shared.is_up() {
                return None;
            }
            let result = append(&mut spool, &records);
            shared
                .metrics
                .spool_pending(spool.as_ref().map_or(0, Spool::pending_bytes));
            Some(result)
        })
        .await
        .unwrap_or_else(|e| Some(Err(format!("spool task failed: {e}"))));
        match outcome {
            None => Some(batch),
            Some(result) => {
                self.answer_spooled(batch, result);
                None
            }
        }
    }

    /// The database failed: the state goes Down and the rest of the batch
    /// into the spool, and the drain starts probing.
    async fn go_down_and_spool(&self, left: Vec<Job>) {
        let shared = self.shared.clone();
        let records = records_of(&left);
        let result = tokio::task::spawn_blocking(move || {
            let mut spool = shared.spool();
            let result = append(&mut spool, &records);
            shared.set_up(false, &spool);
            result
        })
        .await
        .unwrap_or_else(|e| Err(format!("spool task failed: {e}")));
        self.shared.wake_drain.notify_one();
        self.answer_spooled(left, result);
    }

    fn answer_spooled(&self, batch: Vec<Job>, result: Result<(), String>) {
        self.shared
            .spool_failing
            .store(result.is_err(), Ordering::Release);
        match result {
            Ok(()) => {
                self.shared.metrics.spooled(batch.len());
                for job in batch {
                    job.answer(Ok(Written::Spooled));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "neither the database nor the spool can take messages; answering 503 so SNS retries");
                for job in batch {
                    job.answer(Err(WriteError(format!(
                        "the database is unavailable and the spool cannot take the message: {e}"
                    ))));
                }
            }
        }
    }
}

fn append(spool: &mut Option<Spool>, records: &[SpoolRecord]) -> Result<(), String> {
    match spool {
        Some(spool) => spool.append(records).map_err(|e| e.to_string()),
        None => Err("no spool is configured".into()),
    }
}

/// The spool's form of each message: the envelope as received, and a
/// confirmation's result (so it is not confirmed twice).
fn records_of(batch: &[Job]) -> Vec<SpoolRecord> {
    batch
        .iter()
        .map(|j| {
            let confirmed = match &j.accepted.content {
                Content::SubscriptionConfirmation { confirmed: Some(c) } => Some(c),
                _ => None,
            };
            SpoolRecord {
                received_at: j.accepted.message.received_at(),
                body: j.accepted.message.raw_body().to_owned(),
                confirmed_mode: confirmed.map(|c| c.mode.as_str().to_owned()),
                subscription_arn: confirmed.and_then(|c| c.subscription_arn.clone()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer's shared state, Up and taking writes.
    fn shared() -> Shared {
        Shared {
            spool: Mutex::new(None),
            up: AtomicBool::new(true),
            spool_failing: AtomicBool::new(false),
            failures: Mutex::new(Failures::default()),
            takes_writes: AtomicBool::new(true),
            wake_drain: Notify::new(),
            metrics: Metrics::new(),
        }
    }

    /// A batch of one message left, for a cause.
    fn left(because: LeftBecause) -> ApplyOutcome {
        ApplyOutcome {
            left: vec![Item::waiting().0],
            duplicates: 0,
            set_aside: 0,
            left_because: Some(because),
        }
    }

    fn stored() -> ApplyOutcome {
        ApplyOutcome {
            left: Vec::new(),
            duplicates: 0,
            set_aside: 0,
            left_because: None,
        }
    }

    fn ready(shared: &Shared) -> bool {
        shared.takes_writes.load(Ordering::Acquire)
    }

    /// `room` read now.
    fn seen(shared: &Shared, room: Room) {
        shared.room_seen(room, shared.failure_generation());
    }

    #[test]
    fn room_back_after_a_write_that_failed_for_room_says_writes_go_in() {
        let shared = shared();
        shared.wrote(&left(LeftBecause::DiskFull), 1);
        assert!(!ready(&shared));
        assert_eq!(shared.room_needed(), Some(ROOM_FOR_WRITES));
        seen(&shared, Room::Unknown);
        seen(&shared, Room::Short(1 << 20));
        assert!(!ready(&shared));
        seen(&shared, Room::Enough);
        assert!(ready(&shared));
        assert_eq!(shared.room_needed(), None);
    }

    #[test]
    fn a_start_on_a_full_disk_needs_the_room_a_start_needs_not_more() {
        let shared = shared();
        *shared.failures() = Failures {
            failing: true,
            generation: 0,
            room_needed: Some(FULL_BELOW),
        };
        shared.takes_writes.store(false, Ordering::Release);
        seen(&shared, Room::Short(FULL_BELOW - 1));
        assert!(!ready(&shared));
        seen(&shared, Room::Short(FULL_BELOW));
        assert!(ready(&shared));
        // A write that fails for room afterwards needs the full margin.
        shared.wrote(&left(LeftBecause::DiskFull), 1);
        seen(&shared, Room::Short(2 * FULL_BELOW));
        assert!(!ready(&shared));
        assert_eq!(shared.room_needed(), Some(ROOM_FOR_WRITES));
    }

    #[test]
    fn room_does_not_answer_for_a_write_that_failed_for_another_cause() {
        let shared = shared();
        shared.wrote(&left(LeftBecause::Unavailable), 1);
        assert_eq!(shared.room_needed(), None);
        seen(&shared, Room::Enough);
        assert!(!ready(&shared), "the disk had room when the write failed");
        // The last failure decides: one for room before it says nothing.
        shared.wrote(&left(LeftBecause::DiskFull), 1);
        shared.wrote(&left(LeftBecause::Unavailable), 1);
        seen(&shared, Room::Enough);
        assert!(!ready(&shared));
        // Only a write that goes in says so.
        shared.wrote(&stored(), 1);
        assert!(ready(&shared));
    }

    #[test]
    fn a_room_read_before_a_later_failure_says_nothing_of_it() {
        let shared = shared();
        shared.wrote(&left(LeftBecause::DiskFull), 1);
        let before = shared.failure_generation();
        shared.wrote(&left(LeftBecause::DiskFull), 1);
        shared.room_seen(Room::Enough, before);
        assert!(!ready(&shared));
        seen(&shared, Room::Enough);
        assert!(ready(&shared));
    }

    #[test]
    fn a_write_that_goes_in_forgets_the_room() {
        let shared = shared();
        shared.wrote(&left(LeftBecause::DiskFull), 1);
        shared.wrote(&stored(), 1);
        assert!(ready(&shared));
        shared.wrote(&left(LeftBecause::Unavailable), 1);
        seen(&shared, Room::Enough);
        assert!(!ready(&shared));
    }

    #[test]
    fn a_set_aside_file_that_cannot_be_written_says_nothing_of_the_database() {
        let shared = shared();
        shared.wrote(&left(LeftBecause::SetAsideUnwritten), 1);
        assert!(ready(&shared));
        shared.wrote(&left(LeftBecause::Unavailable), 1);
        shared.wrote(&left(LeftBecause::SetAsideUnwritten), 1);
        assert!(!ready(&shared), "the database's failure stands");
        // The same, with a message of its batch stored: writes went in.
        shared.wrote(&left(LeftBecause::SetAsideUnwritten), 2);
        assert!(ready(&shared));
    }
}
