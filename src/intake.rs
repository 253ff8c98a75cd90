//! Limits that keep the public listener answering while clients misbehave:
//! a time limit on reading a request body, a budget for the body bytes held
//! in memory at once, and a cap on connections that fits the process's file
//! descriptors. SNS sends each body whole and at once; what stalls is not
//! SNS.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a body may take to arrive before it gives way when the budget
/// is spent. SNS sends a body whole and at once; one still arriving after
/// this long is a stalled client holding memory that real messages need.
pub const SLOW_BODY: Duration = Duration::from_secs(1);

/// How long a request that finds the memory full waits for room before it
/// is answered 503: time for cut bodies to let go of theirs, and for young
/// ones to finish or pass [`SLOW_BODY`] and be cut in turn.
const ROOM_WAIT: Duration = Duration::from_secs(1);

/// How often a waiting request looks again for bodies that have become
/// slow.
const RECHECK: Duration = Duration::from_millis(100);

/// What became of a request for more of the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Granted,
    /// None came within [`ROOM_WAIT`]: 503, SNS retries.
    Full,
    /// This body was cut to make room for others (408).
    Cut,
}

/// Body bytes held in memory by requests still being read, across the
/// process. When a body would pass it, the bodies that have been arriving
/// for longer than [`SLOW_BODY`] are cut (408) to make room; a request that
/// finds none within [`ROOM_WAIT`] is answered 503 (SNS retries).
///
/// Connections are the other thing stalled bodies hold: a client that sends
/// a head and then nothing keeps its connection, one of
/// `HTTP_MAX_CONNECTIONS`, for `HTTP_BODY_TIMEOUT_MS`, and past the cap real
/// messages wait in the backlog (an outside trial: up to 35 s, one 408,
/// under 2,000 such clients). So while `crowd` or more bodies are being
/// read, a body still arriving after [`SLOW_BODY`] is cut as well.
#[derive(Debug)]
pub struct BodyBudget {
    limit: usize,
    crowd: usize,
    held: AtomicUsize,
    /// The bodies being received, oldest first, each with what cuts it.
    reading: Mutex<BTreeMap<(Instant, u64), CancellationToken>>,
    next: AtomicU64,
    released: Notify,
    /// Requests waiting on `released`: a share given back wakes them only
    /// when there are any (the common case has none).
    waiting: AtomicUsize,
}

/// A share of the budget; it goes back when dropped.
pub struct BodyShare {
    budget: Arc<BodyBudget>,
    bytes: usize,
    key: (Instant, u64),
    cut: CancellationToken,
}

impl BodyBudget {
    pub fn new(limit: usize, crowd: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            limit,
            crowd: crowd.max(1),
            held: AtomicUsize::new(0),
            reading: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            released: Notify::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    pub fn share(self: &Arc<Self>) -> BodyShare {
        let key = (Instant::now(), self.next.fetch_add(1, Ordering::Relaxed));
        let cut = CancellationToken::new();
        self.reading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, cut.clone());
        BodyShare {
            budget: self.clone(),
            bytes: 0,
            key,
            cut,
        }
    }

    /// Cuts every body other than `own` that began more than [`SLOW_BODY`]
    /// ago; returns how many.
    fn cut_slow(&self, own: (Instant, u64)) -> usize {
        let Some(before) = Instant::now().checked_sub(SLOW_BODY) else {
            return 0;
        };
        let reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cut = 0;
        for (key, token) in reading.range(..(before, u64::MAX)) {
            if *key != own && !token.is_cancelled() {
                token.cancel();
                cut += 1;
            }
        }
        cut
    }
}

impl BodyShare {
    /// Takes `more` bytes from the budget. When it is spent, bodies that
    /// have been arriving for longer than [`SLOW_BODY`] are cut, now and
    /// while this one waits (up to [`ROOM_WAIT`]) for the room they free.
    pub async fn grow(&mut self, more: usize) -> Room {
        if self.try_grow(more) {
            return Room::Granted;
        }
        let budget = self.budget.clone();
        let deadline = tokio::time::Instant::now() + ROOM_WAIT;
        budget.waiting.fetch_add(1, Ordering::SeqCst);
        let room = loop {
            let released = budget.released.notified();
            if self.try_grow(more) {
                break Room::Granted;
            }
            if self.cut.is_cancelled() {
                break Room::Cut;
            }
            if budget.cut_slow(self.key) > 0 {
                tracing::warn!(
                    "the memory for request bodies is full: bodies still arriving after {} ms were cut to make room",
                    SLOW_BODY.as_millis()
                );
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break Room::Full;
            }
            tokio::select! {
                () = released => {}
                () = self.cut.cancelled() => {}
                () = tokio::time::sleep_until(deadline.min(now + RECHECK)) => {}
            }
        };
        budget.waiting.fetch_sub(1, Ordering::SeqCst);
        room
    }

    fn try_grow(&mut self, more: usize) -> bool {
        let budget = &self.budget;
        let taken = budget
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                let next = held.checked_add(more)?;
                (next <= budget.limit).then_some(next)
            })
            .is_ok();
        if taken {
            self.bytes += more;
        }
        taken
    }

    /// Resolves when this body is cut to make room for others: for their
    /// bytes, or, once it has been arriving for [`SLOW_BODY`], for their
    /// connections while the bodies being read are a crowd.
    pub async fn cut(&self) {
        let budget = &self.budget;
        let crowded = async {
            tokio::time::sleep_until(tokio::time::Instant::from_std(self.key.0 + SLOW_BODY)).await;
            loop {
                let reading = budget
                    .reading
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len();
                if reading >= budget.crowd {
                    return;
                }
                tokio::time::sleep(RECHECK).await;
            }
        };
        tokio::select! {
            () = self.cut.cancelled() => {}
            () = crowded => {}
        }
    }
}

impl Drop for BodyShare {
    fn drop(&mut self) {
        self.budget
            .reading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
        if self.bytes > 0 && self.budget.waiting.load(Ordering::SeqCst) > 0 {
            self.budget.released.notify_waiters();
        }
    }
}

/// Raises the soft limit on open files to the hard limit and returns the
/// connection cap that fits in it, keeping room for the database, the
/// spool, certificate fetches and logs.
pub fn connection_cap(wanted: usize) -> usize {
    const RESERVE: u64 = 256;
    let files = raise_open_file_limit();
    let fits = usize::try_from(files.saturating_sub(RESERVE)).unwrap_or(usize::MAX);
    if fits < wanted {
        tracing::warn!(
            open_files = files,
            wanted,
            serving = fits.max(64),
            "the open-file limit is low: HTTP_MAX_CONNECTIONS is lowered to fit (raise `ulimit -n`)"
        );
    }
    wanted.min(fits).max(64)
}

#[cfg(unix)]
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> u64 {
    u64::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_budget_is_shared_and_given_back() {
        let budget = BodyBudget::new(10, usize::MAX);
        let mut a = budget.share();
        let mut b = budget.share();
        assert_eq!(a.grow(6).await, Room::Granted);
        // A young body is not cut: `b` waits for room, and none comes.
        let started = Instant::now();
        assert_eq!(b.grow(5).await, Room::Full);
        assert!(started.elapsed() >= ROOM_WAIT);
        drop(a);
        assert_eq!(b.grow(5).await, Room::Granted);
    }

    #[tokio::test]
    async fn a_full_budget_cuts_slow_bodies_for_a_new_one() {
        let budget = BodyBudget::new(10, usize::MAX);
        let mut slow = budget.share();
        assert_eq!(slow.grow(10).await, Room::Granted);
        tokio::time::sleep(SLOW_BODY + Duration::from_millis(50)).await;
        let mut young = budget.share();
        let mut new = budget.share();
        // The slow one is cut; its reader answers and lets go of its share.
        let reader = tokio::spawn(async move {
            slow.cut().await;
            drop(slow);
        });
        let started = Instant::now();
        assert_eq!(new.grow(8).await, Room::Granted, "room made");
        assert!(started.elapsed() < ROOM_WAIT);
        reader.await.unwrap();
        // A young body is never cut for another.
        assert_eq!(young.grow(5).await, Room::Full);
        assert!(!young.cut.is_cancelled());
    }

    #[tokio::test]
    async fn a_waiting_request_cuts_a_body_that_becomes_slow_meanwhile() {
        let budget = BodyBudget::new(10, usize::MAX);
        let mut holder = budget.share();
        assert_eq!(holder.grow(10).await, Room::Granted);
        // Young when `new` arrives; slow before `new` gives up.
        tokio::time::sleep(SLOW_BODY - Duration::from_millis(300)).await;
        let reader = tokio::spawn(async move {
            holder.cut().await;
            drop(holder);
        });
        let mut new = budget.share();
        assert_eq!(new.grow(5).await, Room::Granted);
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn a_body_cut_while_it_waits_is_told_so() {
        let budget = BodyBudget::new(10, usize::MAX);
        let mut full = budget.share();
        assert_eq!(full.grow(10).await, Room::Granted);
        let mut waiting = budget.share();
        let cut = waiting.cut.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cut.cancel();
        });
        let started = Instant::now();
        assert_eq!(waiting.grow(5).await, Room::Cut);
        assert!(started.elapsed() < ROOM_WAIT);
    }
}
