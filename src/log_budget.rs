//! A limit on how many lines one kind of event may write to the log.
//!
//! Every refused `POST /sns` is one log line. A flood of forgeries, or a
//! second topic pointed at bouncer by mistake, would otherwise write as many
//! lines as requests (10,000 a second is 3 MB a second), and fill the disk
//! the logs are kept on. The lines beyond the budget are counted, and the
//! count is written once their window has ended: with the next line
//! written, by a task that looks every second, or at shutdown. The metrics
//! count every event.

use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Refused `POST /sns` requests logged in each window of a second, each
/// process.
pub const REFUSALS_LOGGED_A_SECOND: u32 = 10;

/// Lines a window of time may write; the rest are counted.
pub struct LogBudget {
    per_window: u32,
    window: Duration,
    state: Mutex<Window>,
}

struct Window {
    started: Option<Instant>,
    written: u32,
    left_out: Option<LeftOut>,
}

/// Lines left out: how many, and when the first of them was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeftOut {
    pub count: u64,
    pub since: OffsetDateTime,
}

/// What the caller does with one event's line.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// Write the line; first say that lines were left out, when there were.
    Write { left_out: Option<LeftOut> },
    /// The first line left out in this window: say that lines are now left
    /// out, once, instead of this event's own line.
    StartLeavingOut,
    /// Leave the line out.
    LeaveOut,
}

impl LogBudget {
    /// `per_window` lines each `window`, a window beginning at the first
    /// event after the last one ended.
    pub fn new(per_window: u32, window: Duration) -> Self {
        LogBudget {
            per_window,
            window,
            state: Mutex::new(Window {
                started: None,
                written: 0,
                left_out: None,
            }),
        }
    }

    /// The budget of refused `POST /sns` lines.
    pub fn refusals() -> Self {
        LogBudget::new(REFUSALS_LOGGED_A_SECOND, Duration::from_secs(1))
    }

    /// Gives `write` the turn of an event at `now` (`wall`, the same
    /// instant by the wall clock). `write` runs under the budget's lock, so
    /// that the lines it writes keep their order with the counts of lines
    /// left out.
    pub fn take<R>(&self, now: Instant, wall: OffsetDateTime, write: impl FnOnce(Turn) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.ended(&state, now) {
            state.started = Some(now);
            state.written = 0;
        }
        if state.written < self.per_window {
            state.written += 1;
            let left_out = state.left_out.take();
            return write(Turn::Write { left_out });
        }
        let turn = match &mut state.left_out {
            Some(left) => {
                left.count += 1;
                Turn::LeaveOut
            }
            None => {
                state.left_out = Some(LeftOut {
                    count: 1,
                    since: wall,
                });
                Turn::StartLeavingOut
            }
        };
        write(turn)
    }

    /// Gives `report` the lines left out once their window has ended (at
    /// once when `at_end`), and forgets them. Before the end it does not
    /// wait for the lock: a request holding it may be writing to a log
    /// pipe that is slow, and this runs beside the writer; the next look
    /// reports what this one skipped.
    pub fn flush(&self, now: Instant, at_end: bool, report: impl FnOnce(LeftOut)) {
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) if !at_end => return,
            Err(TryLockError::WouldBlock) => self.state.lock().unwrap_or_else(|e| e.into_inner()),
        };
        if (at_end || self.ended(&state, now))
            && let Some(left) = state.left_out.take()
        {
            report(left);
        }
    }

    fn ended(&self, state: &Window, now: Instant) -> bool {
        state
            .started
            .is_none_or(|started| now.saturating_duration_since(started) >= self.window)
    }
}

/// Reports what `budget` left out every second, and at once when `stop`
/// is cancelled; then ends.
pub fn spawn_flusher(
    budget: Arc<LogBudget>,
    stop: CancellationToken,
    report: fn(LeftOut),
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => budget.flush(Instant::now(), false, report),
                () = stop.cancelled() => {
                    budget.flush(Instant::now(), true, report);
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns(budget: &LogBudget, at: Instant, wall: OffsetDateTime) -> Turn {
        budget.take(at, wall, |turn| turn)
    }

    #[test]
    fn lines_past_the_budget_are_counted_and_reported_once_their_window_ends() {
        let budget = LogBudget::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        let wall = OffsetDateTime::UNIX_EPOCH;
        let later = wall + Duration::from_millis(500);
        assert_eq!(turns(&budget, t0, wall), Turn::Write { left_out: None });
        assert_eq!(turns(&budget, t0, wall), Turn::Write { left_out: None });
        assert_eq!(turns(&budget, t0, later), Turn::StartLeavingOut);
        let late = t0 + Duration::from_millis(999);
        assert_eq!(turns(&budget, late, wall), Turn::LeaveOut);
        // Not yet reported: the window has not ended.
        budget.flush(late, false, |_| panic!("reported within its window"));
        let t1 = t0 + Duration::from_secs(1);
        let reported = LeftOut {
            count: 2,
            since: later,
        };
        assert_eq!(
            turns(&budget, t1, wall),
            Turn::Write {
                left_out: Some(reported)
            }
        );
        assert_eq!(turns(&budget, t1, wall), Turn::Write { left_out: None });
        assert_eq!(turns(&budget, t1, wall), Turn::StartLeavingOut);
        // A quiet spell: the next look after the window reports it.
        let mut flushed = Vec::new();
        budget.flush(t1 + Duration::from_secs(1), false, |l| {
            flushed.push(l.count)
        });
        budget.flush(t1 + Duration::from_secs(2), false, |l| {
            flushed.push(l.count)
        });
        assert_eq!(flushed, [1]);
        // At the end, whatever the window.
        assert_eq!(
            turns(&budget, t1 + Duration::from_secs(3), wall),
            Turn::Write { left_out: None }
        );
        assert_eq!(
            turns(&budget, t1 + Duration::from_secs(3), wall),
            Turn::Write { left_out: None }
        );
        assert_eq!(
            turns(&budget, t1 + Duration::from_secs(3), wall),
            Turn::StartLeavingOut
        );
        budget.flush(t1 + Duration::from_secs(3), true, |l| flushed.push(l.count));
        assert_eq!(flushed, [1, 1]);
    }
}
