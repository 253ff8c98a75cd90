//! SQLite's checkpoints beside the writer, not inside its commits.
//!
//! A checkpoint copies the write-ahead log back into the database file. By
//! default SQLite runs one inside the commit that takes the log past 1,000
//! pages, on the connection that made it: on bouncer's one writer that was
//! 11% of its time in a bounce storm, nearly all of it waiting for the disk
//! (BENCHMARKS.md, "A fast machine, and checkpoints beside the writer").
//! Here a connection of its own runs a passive checkpoint every
//! `EVERY_MESSAGES` messages or `EVERY_COMMITS` commits, while the writer
//! goes on with the next batch (+5% on the SQLite bounce storm, +9% on the
//! feed mix: "Checkpoints beside the writer, landed"). Every connection's
//! own automatic checkpoint is raised to 4,000 pages (`store::open`): that
//! stays the bound on the log when these fall behind (a checkpoint that
//! runs beside a storm's commits never quite reaches the log's end) or
//! fail.
//!
//! Why it loses nothing:
//! - A passive checkpoint takes no lock that the writer or a reader waits
//!   for. It copies frames up to the oldest snapshot a reader still holds,
//!   syncs the log before it copies, and syncs the database file when it
//!   has copied the whole log. The log is written again from its start only
//!   after such a checkpoint, so one that stopped short loses nothing.
//! - Nothing here opens the database file outside SQLite. On Linux, closing
//!   any descriptor of a file drops every POSIX lock the process holds on
//!   it; SQLite keeps track of its own descriptors, but not of ours, and
//!   another process closing its connection could then delete the log
//!   bouncer goes on writing (docs/decisions.md).
//! - A failed sync is final, as a failed sync of the log is (`durable`):
//!   the pages the checkpoint copied may be gone while the cache says they
//!   are written, and the next checkpoint that succeeded would let the log
//!   be reused over them. From then on nothing is answered as stored, and
//!   messages go to the spool until bouncer is restarted.
//!
//! After a burst, a long reader can leave the log's file far larger than
//! SQLite keeps for reuse (`journal_size_limit`, 64 MiB), and SQLite cuts
//! it back only when a write starts the log again: a server left idle kept
//! 1.7 GB in an outside trial. So the task looks at the file every
//! `IDLE_CUT` between its checkpoints and, while it is that large, copies
//! what it can without a lock; only if that reached the log's end does it
//! cut the file to nothing (`wal_checkpoint(TRUNCATE)`), on a connection
//! that waits for no lock: the cut takes the writer's lock only when it
//! is free, holds it for the frames committed since (none, when idle), and
//! gives up at once if a reader still needs the log. A cut kept off that
//! way is tried again after twice as long, up to `CUT_AT_MOST`. Under
//! traffic SQLite cuts the file itself at the next start of the log; this
//! is for the server left idle.
//!
//! Any other failure (a full disk, say) leaves the log where it was, and
//! is logged once; the next checkpoint is tried after the next commits, on
//! the same connection unless it broke. The connection is kept because
//! Linux reports a failed write-back once to each descriptor open at the
//! time: one opened later could be told all is well.
//!
//! Left as it is: after a failed sync (of the log or of the file), the
//! last connection that closes at shutdown still checkpoints and deletes
//! the log, as SQLite does on every close; what the failed sync lost may
//! then be lost for good. That needs SQLite's `NO_CKPT_ON_CLOSE`, which
//! sqlx does not offer (docs/decisions.md).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::durable::fail;
use crate::metrics::Metrics;
use crate::store::{WAL_KEPT_BYTES, sqlite_code};

/// A checkpoint once this many messages were committed since the last, or
/// `EVERY_COMMITS` commits, whichever comes first. In a bounce storm
/// (about 20 messages a commit) that is about every 13 commits, a log of
/// about 1,000 pages; one message a commit copies about 64 commits' pages.
const EVERY_MESSAGES: usize = 256;
const EVERY_COMMITS: usize = 64;

/// How often the log's file is looked at between the checkpoints the
/// commits wake, and cut if it is oversized.
const IDLE_CUT: Duration = Duration::from_secs(2);

/// The longest wait between two cuts that a reader kept off.
const CUT_AT_MOST: Duration = Duration::from_secs(64);

/// `SQLITE_IOERR_FSYNC`: a sync SQLite asked for (of the log before a
/// checkpoint copies it, or of the database file after) failed.
const SQLITE_IOERR_FSYNC: i64 = 10 | (4 << 8);

/// The writer's side: counts commits and wakes the checkpointing task.
pub(super) struct Checkpoints {
    wake: Arc<Notify>,
    stop: CancellationToken,
    messages: usize,
    commits: usize,
}

impl Checkpoints {
    /// Starts the task, connecting with the pool's `options` to the
    /// database whose log is `wal`; `failed`: the mark a failed sync sets
    /// for good (shared with `durable`).
    pub(super) fn start(
        options: SqliteConnectOptions,
        wal: PathBuf,
        failed: Arc<OnceLock<String>>,
        metrics: Metrics,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let task = Task {
            options,
            wal,
            failed,
            metrics,
        };
        tokio::spawn(task.run(wake.clone(), stop.clone()));
        Checkpoints {
            wake,
            stop,
            messages: 0,
            commits: 0,
        }
    }

    /// A commit of `messages` messages returned.
    pub(super) fn committed(&mut self, messages: usize) {
        self.messages += messages;
        self.commits += 1;
        if self.messages >= EVERY_MESSAGES || self.commits >= EVERY_COMMITS {
            self.messages = 0;
            self.commits = 0;
            // Stored if the task is busy: one more checkpoint right after
            // the current one, not one for each wake.
            self.wake.notify_one();
        }
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Task {
    options: SqliteConnectOptions,
    wal: PathBuf,
    failed: Arc<OnceLock<String>>,
    metrics: Metrics,
}

impl Task {
    async fn run(self, wake: Arc<Notify>, stop: CancellationToken) {
        let mut conn: Option<SqliteConnection> = None;
        // Only the first of a run of failures is logged.
        let mut failing = false;
        // When the log's file is looked at next (see the module comment),
        // and its size when it was.
        let mut look_in = IDLE_CUT;
        let mut looked = 0;
        loop {
            let mode = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = wake.notified() => Mode::Passive,
                _ = tokio::time::sleep(look_in) => {
                    looked = file_len(&self.wal);
                    if looked <= WAL_KEPT_BYTES {
                        look_in = IDLE_CUT;
                        continue;
                    }
                    Mode::Cut
                }
            };
            if self.failed.get().is_some() {
                break;
            }
            let started = Instant::now();
            match checkpoint(&self.options, &mut conn, mode).await {
                Ok(Done::Copied) => {
                    self.metrics
                        .observe_checkpoint(started.elapsed().as_secs_f64());
                    if std::mem::take(&mut failing) {
                        tracing::info!("SQLite's checkpoints beside the writer work again");
                    }
                    if mode == Mode::Cut {
                        tracing::info!(
                            file = %self.wal.display(),
                            bytes = looked,
                            seconds = started.elapsed().as_secs_f64(),
                            "cut SQLite's write-ahead log back to nothing after a burst (it was over 64 MiB)"
                        );
                        look_in = IDLE_CUT;
                    }
                }
                // Another connection's checkpoint was running (the writer's
                // own at 4,000 pages, or another process's), or a reader
                // or the writer kept the cut off: tried again, a cut later.
                Ok(Done::Busy) => {
                    if mode == Mode::Cut {
                        look_in = (look_in * 2).min(CUT_AT_MOST);
                    }
                }
                Err(Failure::Sync(why)) => {
                    fail(
                        &self.failed,
                        format!(
                            "a checkpoint of {} failed to sync: {why}",
                            self.options.get_filename().display()
                        ),
                    );
                    break;
                }
                Err(Failure::Other { why, broken }) => {
                    if broken {
                        conn = None;
                    }
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %why, "a SQLite checkpoint beside the writer failed; the writer's own checkpoints keep the log bounded, and the next is tried later");
                    }
                }
            }
        }
        if let Some(conn) = conn {
            let _ = conn.close().await;
        }
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Copies what it can, waits for nothing.
    Passive,
    /// Copies what is left and cuts the log's file to nothing, or gives up
    /// at once.
    Cut,
}

enum Done {
    /// Copied what the oldest reader's snapshot allowed.
    Copied,
    /// Kept off: another checkpoint held SQLite's checkpoint lock, or (a
    /// cut) the writer or a reader was in the log.
    Busy,
}

enum Failure {
    /// A sync failed: final.
    Sync(String),
    /// `broken`: the connection is not used again.
    Other { why: String, broken: bool },
}

/// One checkpoint, on the task's connection (made first if there is none).
/// A local file opens at once or fails; a hung file system holds this
/// task, not the writer.
async fn checkpoint(
    options: &SqliteConnectOptions,
    conn: &mut Option<SqliteConnection>,
    mode: Mode,
) -> Result<Done, Failure> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(connect(options).await.map_err(|e| Failure::Other {
            why: format!("cannot connect: {e}"),
            broken: true,
        })?),
    };
    // Three numbers: 1 if a lock it needed was held (SQLite answers a
    // checkpoint's BUSY so), the log's frames, and how many of them are now
    // in the database file. The cut copies first without any lock, so that
    // it holds the writer's for the last frames only.
    if mode == Mode::Cut {
        let copied = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *conn)
            .await
            .map_err(failure)?;
        // Short of the log's end (a reader's snapshot, another
        // checkpoint): the cut would copy the rest holding the writer's
        // lock, or wait.
        if !matches!(copied, (0, log, done) if log == done) {
            return Ok(Done::Busy);
        }
    }
    let sql = match mode {
        Mode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        Mode::Cut => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    let result = sqlx::query_as::<_, (i64, i64, i64)>(sql)
        .fetch_one(conn)
        .await;
    match result {
        Ok((0, _, _)) => Ok(Done::Copied),
        Ok(_) => Ok(Done::Busy),
        Err(e) => Err(failure(e)),
    }
}

/// The task's connection: made with the pool's settings and busy time-out
/// (its pragmas may meet a lock held for a moment), then waiting for no
/// lock, so that the cut never holds the writer's lock while it waits.
async fn connect(options: &SqliteConnectOptions) -> Result<SqliteConnection, sqlx::Error> {
    let mut conn = options.connect().await?;
    sqlx::query("PRAGMA busy_timeout = 0")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

fn failure(e: sqlx::Error) -> Failure {
    if sqlite_code(&e) == Some(SQLITE_IOERR_FSYNC) {
        return Failure::Sync(e.to_string());
    }
    Failure::Other {
        broken: matches!(e, sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed),
        why: e.to_string(),
    }
}
