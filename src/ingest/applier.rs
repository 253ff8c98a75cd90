//! The writer's side of the database: a connection of its own, a time limit
//! on every batch, transient conflicts retried as a batch, and the one
//! message the database refuses found and set aside so that the rest of
//! its batch commits (no poison pill).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::oneshot;

use super::accepted::{Accepted, Applied, StoreOutcome};
use super::apply::{ApplyPolicy, BatchApplied, apply_batch};
use super::checkpoint::Checkpoints;
use super::durable::Durability;
use super::set_aside::{SetAside, SetAsideRecord};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::alerts::{AlertDraft, enqueue};
use crate::store::{Conn, DbError, DbErrorKind, DbResult, Store};

/// What became of a message handed to the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Committed to the database.
    Applied(Applied),
    /// Durably in the local spool; it reaches the database later.
    Spooled,
    /// The database refused it for a reason of its own: kept in the
    /// set-aside file for an operator to replay, and alerted.
    SetAside,
}

/// Why a message could not be kept at all: SNS should send it again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WriteError(pub String);

pub type Reply = oneshot::Sender<Result<Written, WriteError>>;

/// A message on its way to the database and, for one that came over HTTP,
/// the request waiting for its answer.
pub struct Item {
    pub accepted: Accepted,
    pub reply: Option<Reply>,
}

impl Item {
    pub fn answer(self, result: Result<Written, WriteError>) {
        if let Some(reply) = self.reply {
            // The request may have gone (client closed): nothing to tell.
            let _ = reply.send(result);
        }
    }

    /// A signed fixture message waiting for its answer, for the ingest
    /// modules' unit tests.
    #[cfg(test)]
    pub(super) fn waiting() -> (Item, oneshot::Receiver<Result<Written, WriteError>>) {
        let body = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/signed/notification-subject-v1.json"
        ))
        .expect("the fixture");
        let received_at = crate::time::Timestamp::from_unix_millis(0).expect("a time");
        let message = crate::sns::verify::VerifiedMessage::from_spool(body, received_at)
            .expect("a signed message");
        let (reply, answer) = oneshot::channel();
        let item = Item {
            accepted: Accepted::new(message, false),
            reply: Some(reply),
        };
        (item, answer)
    }
}

/// The room on an SQLite database's disk that says it takes writes again
/// after a write failed there for room (or `serve` started on a full
/// disk), with no message stored since to prove it: a batch of a few
/// hundred messages of common size writes a few MiB to the log, and a
/// checkpoint then copies it into the file. Less only keeps `/readyz` at
/// 503 until a write goes in; it never keeps a message out of the
/// database.
pub const ROOM_FOR_WRITES: u64 = 16 << 20;

/// What the disk under the database has room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// At least [`ROOM_FOR_WRITES`] free.
    Enough,
    /// Less: the bytes free.
    Short(u64),
    /// Not for bouncer to tell (PostgreSQL's disk is its server's).
    Unknown,
}

impl Room {
    /// The room on the disk under `store`'s database now (`statvfs`: call
    /// it off the async threads).
    pub fn of(store: &Store) -> Room {
        match store.free_bytes() {
            Some(free) if free >= ROOM_FOR_WRITES => Room::Enough,
            Some(free) => Room::Short(free),
            None => Room::Unknown,
        }
    }
}

/// What the drain reads the room with, without the writer's lock.
#[derive(Clone)]
pub struct RoomGauge {
    store: Store,
    /// Set by a failed sync: then no room says writes go in (they are
    /// refused until a restart).
    sync_failed: Option<std::sync::Arc<std::sync::OnceLock<String>>>,
}

impl RoomGauge {
    /// [`Room::of`], on a blocking thread.
    pub async fn read(&self) -> Room {
        if self
            .sync_failed
            .as_ref()
            .is_some_and(|failed| failed.get().is_some())
        {
            return Room::Unknown;
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || Room::of(&store))
            .await
            .unwrap_or(Room::Unknown)
    }
}

/// How many times a batch that met a serialization failure or a deadlock
/// is tried again at once before the database counts as unavailable.
const TRANSIENT_RETRIES: u32 = 3;

/// What [`Applier::apply`] did with its items.
pub struct ApplyOutcome {
    /// The items not handled because the database is unavailable.
    pub left: Vec<Item>,
    /// How many of the items handled were stored before (a message SNS
    /// sent again, or a spooled chunk that a crash kept in the spool after
    /// its commit): each changed nothing.
    pub duplicates: usize,
    /// How many of the items handled the database refused on their own:
    /// kept in the set-aside file (or answered with an error: without one,
    /// or, with [`Unkept::Refuse`], refused for their content when no
    /// set-aside file can take them).
    pub set_aside: usize,
    /// Why `left` is not empty; `None` when it is.
    pub left_because: Option<LeftBecause>,
}

/// What becomes of a message the database refused for its content when no
/// set-aside file can take it (a full disk, a folder that takes no new
/// file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unkept {
    /// Answered 503, for SNS to send again, and the messages after it
    /// applied: the writer's, whose callers wait. Spooled instead, it would
    /// send the writer to the spool, where the messages after it are
    /// refused too when the spool cannot take them (the same disk), and
    /// the drain would meet it again on every try.
    Refuse,
    /// Left, with the items after it: the drain's, whose records stay in
    /// the spool until they are applied.
    Wait,
}

/// Why items were left (the first failure: the rest follow it unapplied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftBecause {
    /// The database could not take them now.
    Unavailable,
    /// SQLite's disk was full (`SQLITE_FULL`): room, once back, says writes
    /// go in again.
    DiskFull,
    /// The database refused one for its content, and no set-aside file
    /// could take it (the drain's, [`Unkept::Wait`]): not the database's
    /// failure. (A refusal that is not the content's, a table missing say,
    /// is `Unavailable`: it would refuse every message.)
    SetAsideUnwritten,
}

pub struct Applier {
    store: Store,
    policy: ApplyPolicy,
    clock: Clock,
    metrics: Metrics,
    write_timeout: Duration,
    conn: Option<Conn>,
    migrated: bool,
    set_aside: Option<SetAside>,
    durability: Durability,
    /// SQLite: the checkpoints beside this writer.
    checkpoints: Option<Checkpoints>,
}

impl Applier {
    pub fn new(
        store: Store,
        policy: ApplyPolicy,
        clock: Clock,
        metrics: Metrics,
        write_timeout: Duration,
        migrated: bool,
        set_aside: Option<SetAside>,
    ) -> Applier {
        let durability = Durability::new(store.writer_wal(), &metrics);
        let checkpoints = match (
            durability.failure(),
            store.sqlite_options(),
            store.writer_wal(),
        ) {
            (Some(failed), Some(options), Some(wal)) => Some(Checkpoints::start(
                options,
                wal.to_owned(),
                failed,
                metrics.clone(),
            )),
            _ => None,
        };
        Applier {
            durability,
            checkpoints,
            store,
            policy,
            clock,
            metrics,
            write_timeout,
            conn: None,
            migrated,
            set_aside,
        }
    }

    /// Migrates first if start-up could not (the database was down):
    /// applying messages to an old schema would fail them for good.
    pub async fn schema_ready(&mut self) -> bool {
        if !self.migrated {
            match self.store.migrate_briefly().await {
                Ok(migrated) => {
                    tracing::info!("{}", migrated.told(self.store.location()));
                    self.migrated = true;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot migrate the database; messages wait in the spool")
                }
            }
        }
        self.migrated
    }

    /// Whether the disk under the database has room for writes (see
    /// [`ROOM_FOR_WRITES`]), read here and now.
    pub fn room(&self) -> Room {
        Room::of(&self.store)
    }

    pub fn room_gauge(&self) -> RoomGauge {
        RoomGauge {
            store: self.store.clone(),
            sync_failed: self.durability.failure(),
        }
    }

    /// One round trip on the writer's connection: can it write again?
    pub async fn probe(&mut self) -> DbResult<()> {
        // After a failed sync of SQLite's log or database file, not until a
        // restart.
        if let Some(why) = self.durability.failed() {
            return Err(DbError::unavailable(why));
        }
        let limit = self.write_timeout;
        let result = tokio::time::timeout(limit, async {
            let conn = self.connection().await?;
            let tx = conn.begin().await?;
            tx.commit().await
        })
        .await
        .unwrap_or_else(|_| Err(self.timed_out()));
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn connection(&mut self) -> DbResult<&mut Conn> {
        if self.conn.as_ref().is_some_and(Conn::is_broken) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let conn = self.store.connect_writer().await?;
            // Its log is opened with it, or it is not used.
            self.durability.connected().map_err(DbError::unavailable)?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| DbError::unavailable("no writer connection"))
    }

    fn timed_out(&self) -> DbError {
        DbError::unavailable(format!(
            "the database did not finish a write within {} ms (DATABASE_WRITE_TIMEOUT_MS)",
            self.write_timeout.as_millis()
        ))
    }

    /// Applies the items in order, in as few transactions as the database
    /// allows, answering each. Returns the items not handled because the
    /// database is unavailable (always a suffix, in order, still waiting
    /// for their answer), and how many of the others were stored before.
    pub async fn apply(&mut self, items: Vec<Item>, unkept: Unkept) -> ApplyOutcome {
        if let Some(why) = self.durability.failed() {
            tracing::warn!(error = %why, messages = items.len(), "not writing to the database after a failed sync of its log or file; restart bouncer");
            return ApplyOutcome {
                left: items,
                duplicates: 0,
                set_aside: 0,
                left_because: Some(LeftBecause::Unavailable),
            };
        }
        let mut work: VecDeque<Vec<Item>> = VecDeque::from([items]);
        let mut left: Vec<Item> = Vec::new();
        let mut duplicates = 0;
        let mut set_aside = 0;
        let mut left_because = None;
        while let Some(group) = work.pop_front() {
            if !left.is_empty() {
                left.extend(group);
                continue;
            }
            match self.commit_group(&group).await {
                Ok(batch) => {
                    let applied = batch.messages;
                    duplicates += applied
                        .iter()
                        .filter(|a| a.outcome == StoreOutcome::Duplicate)
                        .count();
                    for (item, applied) in group.iter().zip(&applied) {
                        self.after_commit(&item.accepted, applied);
                    }
                    self.metrics.sends_taken_back(batch.sends_taken_back);
                    if let Some(checkpoints) = &mut self.checkpoints {
                        checkpoints.committed(group.len());
                    }
                    // Answered once durable; the next group (or batch)
                    // runs meanwhile.
                    self.durability
                        .answer(group.into_iter().zip(applied).collect());
                }
                Err(e) => match e.kind() {
                    DbErrorKind::Unavailable | DbErrorKind::Transient => {
                        tracing::warn!(error = %e, messages = group.len(), "database unavailable");
                        left_because = Some(if e.is_disk_full() {
                            LeftBecause::DiskFull
                        } else {
                            LeftBecause::Unavailable
                        });
                        left.extend(group);
                    }
                    DbErrorKind::Content | DbErrorKind::Other if group.len() > 1 => {
                        // One message (or a few) may be what the database
                        // refuses: halve until each is alone.
                        tracing::warn!(error = %e, messages = group.len(), "batch refused; isolating the message it refused");
                        let mut first = group;
                        let second = first.split_off(first.len() / 2);
                        work.push_front(second);
                        work.push_front(first);
                    }
                    DbErrorKind::Content | DbErrorKind::Other => {
                        for item in group {
                            match self.set_aside(item, &e).await {
                                Ok(()) => set_aside += 1,
                                Err((item, io))
                                    if unkept == Unkept::Refuse
                                        && e.kind() == DbErrorKind::Content =>
                                {
                                    self.refuse_unkept(item, &e, &io).await;
                                    set_aside += 1;
                                }
                                Err((unkept, _)) => {
                                    left_because = Some(match e.kind() {
                                        DbErrorKind::Content => LeftBecause::SetAsideUnwritten,
                                        _ => LeftBecause::Unavailable,
                                    });
                                    left.push(unkept);
                                }
                            }
                        }
                    }
                },
            }
        }
        ApplyOutcome {
            left,
            duplicates,
            set_aside,
            left_because,
        }
    }

    /// Waits until everything this applier committed is durable (see
    /// `durable`): the drain's spool keeps its records until then.
    pub async fn settled(&self) -> Result<(), String> {
        self.durability.settled().await
    }

    /// One transaction for the group, tried again at once on a transient
    /// conflict, within the write time limit.
    async fn commit_group(&mut self, group: &[Item]) -> DbResult<BatchApplied> {
        let refs: Vec<&Accepted> = group.iter().map(|i| &i.accepted).collect();
        let mut attempt = 0;
        loop {
            let limit = self.write_timeout;
            let started = std::time::Instant::now();
            let result = match tokio::time::timeout(limit, self.commit_once(&refs)).await {
                Ok(result) => result,
                Err(_) => Err(self.timed_out()),
            };
            self.metrics.observe_commit(started.elapsed().as_secs_f64());
            match result {
                Ok(applied) => return Ok(applied),
                Err(e) => {
                    // A connection that saw a failure is not trusted again.
                    self.conn = None;
                    if e.kind() == DbErrorKind::Transient && attempt < TRANSIENT_RETRIES {
                        attempt += 1;
                        self.metrics.write_retry();
                        tracing::info!(error = %e, attempt, "transient conflict; trying the batch again");
                        tokio::time::sleep(jitter(attempt)).await;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    async fn commit_once(&mut self, batch: &[&Accepted]) -> DbResult<BatchApplied> {
        let now = self.clock.now();
        let policy = self.policy.clone();
        let conn = self.connection().await?;
        let mut tx = conn.begin().await?;
        let applied = apply_batch(&mut tx, batch, &policy, now).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Counts what a committed message did, and says loudly when a feed
    /// stopped.
    fn after_commit(&self, accepted: &Accepted, applied: &Applied) {
        self.metrics.applied(applied);
        if applied.unsubscribed {
            tracing::error!(
                topic = %crate::telemetry::escaped_word(accepted.message.topic_arn()),
                "UnsubscribeConfirmation: the SNS subscription was deleted and bouncer receives no more feedback from this topic; resubscribe the endpoint"
            );
        }
    }

    /// Keeps a message the database refused on its own in the set-aside
    /// file and alerts; the item back if even that failed.
    async fn set_aside(&mut self, item: Item, error: &DbError) -> Result<(), (Item, String)> {
        let Some(file) = self.set_aside.clone() else {
            item.answer(Err(WriteError(
                "the database refused this message and no spool is configured to keep it".into(),
            )));
            return Ok(());
        };
        let m = &item.accepted.message;
        let now = self.clock.now();
        let why = error.to_string();
        let (id, received_at, body) = (
            m.message_id().to_owned(),
            m.received_at(),
            m.raw_body().to_owned(),
        );
        let kept = {
            let why = why.clone();
            let id = id.clone();
            let file = file.clone();
            tokio::task::spawn_blocking(move || {
                file.keep(&SetAsideRecord {
                    message_id: &id,
                    received_at,
                    body: &body,
                    error: &why,
                    at: now,
                })
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
        };
        let kept_in = match kept {
            Ok(path) => path,
            Err(io) => {
                tracing::error!(error = %io, path = %file.path().display(), "cannot write the set-aside file");
                return Err((item, io.to_string()));
            }
        };
        tracing::error!(
            message_id = %crate::telemetry::escaped_word(&id),
            error = %why,
            kept_in = %kept_in.display(),
            "the database refused this message; set aside"
        );
        self.metrics.set_aside();
        item.answer(Ok(Written::SetAside));
        self.alert_set_aside(&id, &why, &kept_in).await;
        Ok(())
    }

    /// A spool record that is not an SNS message (a defect, since records
    /// are checksummed): kept in the set-aside file with why.
    /// Returns false when it could not be kept (it must stay in the spool).
    pub async fn set_aside_unreadable(
        &mut self,
        record: &super::spool::SpoolRecord,
        why: &str,
    ) -> bool {
        let Some(file) = self.set_aside.clone() else {
            tracing::error!(error = %why, "unreadable spool record and no set-aside file");
            return false;
        };
        let now = self.clock.now();
        let (body, received_at, why_owned) =
            (record.body.clone(), record.received_at, why.to_owned());
        let keep_in = file.clone();
        let kept = tokio::task::spawn_blocking(move || {
            keep_in.keep(&SetAsideRecord {
                message_id: "",
                received_at,
                body: &body,
                error: &why_owned,
                at: now,
            })
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        match kept {
            Ok(kept_in) => {
                self.metrics.set_aside();
                tracing::error!(error = %why, kept_in = %kept_in.display(), "spool record set aside");
                self.alert_set_aside("(unreadable spool record)", why, &kept_in)
                    .await;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot keep an unreadable spool record");
                false
            }
        }
    }

    async fn alert_set_aside(&mut self, id: &str, why: &str, path: &std::path::Path) {
        self.raise(AlertDraft {
            kind: "set_aside",
            subject: "bouncer set a message aside".into(),
            text: format!(
                ":warning: The database refused SNS message {id} ({why}). It is kept in {}; the messages after it were stored. Once the cause is fixed, apply it with `bouncer replay --ignore-age {}`.",
                path.display(),
                shell_word(&path.display().to_string())
            ),
            details: serde_json::json!({ "message_id": id, "error": why, "file": path }),
        })
        .await;
    }

    /// The database refused a message and no set-aside file could take
    /// it: answered 503, it is SNS's to send again, and lost once SNS's
    /// policy gives up. Said where an operator looks, not only in the log.
    async fn refuse_unkept(&mut self, item: Item, error: &DbError, io: &str) {
        let id = item.accepted.message.message_id().to_owned();
        tracing::error!(message_id = %crate::telemetry::escaped_word(&id), error = %error, "the database refused a message and no set-aside file can take it; answering 503 so SNS sends it again");
        item.answer(Err(WriteError(format!(
            "the database refused this message ({error}) and no set-aside file can take it"
        ))));
        let why = error.to_string();
        let folder = self
            .set_aside
            .as_ref()
            .and_then(|f| f.path().parent().map(|p| p.display().to_string()))
            .unwrap_or_default();
        self.raise(AlertDraft {
            kind: "set_aside_failed",
            subject: "bouncer could not keep a message the database refused".into(),
            text: format!(
                ":rotating_light: The database refused SNS message {id} ({why}), and no set-aside file in {folder} could take it ({io}). It was answered 503: SNS sends it again a few times (by default three within a minute) and then drops it, unless a dead-letter queue is attached. Give that folder room and write access; the messages after it are stored."
            ),
            details: serde_json::json!({ "message_id": id, "error": why, "set_aside_error": io, "folder": folder }),
        })
        .await;
    }

    /// Writes an alert to the outbox in a transaction of its own, and waits
    /// until it is durable.
    async fn raise(&mut self, draft: AlertDraft) {
        let now = self.clock.now();
        let raised = async {
            let conn = self.connection().await?;
            let mut tx = conn.begin().await?;
            enqueue(&mut tx, &draft, now).await?;
            tx.commit().await
        }
        .await;
        let raised = match raised {
            Ok(()) => self.durability.settled().await,
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = raised {
            self.conn = None;
            tracing::warn!(error = %e, kind = draft.kind, "cannot raise the alert; the log line above stands");
        }
    }
}

/// `text` as one word of a POSIX shell, so that the replay command an
/// alert gives can be pasted whatever `SPOOL_PATH` holds (a space, a `;`).
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// 10 to 40 ms times the attempt, varied so that two replicas that
/// deadlocked do not meet again at once.
fn jitter(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(u64::from(10 + nanos % 30) * u64::from(attempt))
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn a_path_is_one_shell_word_whatever_it_holds() {
        assert_eq!(
            shell_word("/var/spool/set-aside.jsonl"),
            "/var/spool/set-aside.jsonl"
        );
        assert_eq!(shell_word("/tmp/sp ace/x;y"), "'/tmp/sp ace/x;y'");
        assert_eq!(shell_word("/tmp/it's"), r"'/tmp/it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
