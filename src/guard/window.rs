//! The current window and its rates: the newest whole hours holding
//! `GUARD_WINDOW_SENDS` sends, within `GUARD_MAX_AGE_DAYS`, since the last
//! resume. One aggregate when the window is not full; otherwise, on
//! PostgreSQL, the newest hours, and on SQLite whole days, then the hours of
//! the day where the window starts. The cost is bounded by the number of
//! hours, not by history.

use super::{Counts, GuardPolicy, Rates, hour_of};
use crate::store::guard::{
    GuardState, Span, Spans, first_whole_day, guard_state, spans, totals_since,
};
use crate::store::{DbResult, Store, Tx};
use crate::time::Timestamp;

/// The rates now, for the guard in `state` (read inside `tx`).
pub async fn rates_for(
    tx: &mut Tx<'_>,
    policy: &GuardPolicy,
    now: Timestamp,
    state: &GuardState,
) -> DbResult<Rates> {
    let since = state.counting_since;
    let cutoff = hour_of(now.saturating_sub(policy.max_age)).max(hour_of(since));
    // The resume hour's counts at the resume do not count.
    let baseline_hour = hour_of(since);
    let (mut total, mut window_start) = totals_since(tx, cutoff).await?;
    if baseline_hour >= cutoff {
        total = total.minus(state.baseline);
    }
    if total.sends >= policy.window_sends {
        // The window is full: the newest buckets until it is.
        let mut window = Filling {
            total: Counts::default(),
            window_start: None,
            window_sends: policy.window_sends,
            baseline_hour,
            baseline: state.baseline,
        };
        window.newest(tx, cutoff).await?;
        (total, window_start) = (window.total, window.window_start);
    }
    Ok(Rates::from_window(total, window_start, since, policy))
}

/// The rates now, in a read-only snapshot.
pub async fn current_rates(store: &Store, policy: &GuardPolicy) -> DbResult<Rates> {
    let mut conn = store.conn().await?;
    let mut tx = conn.begin_read().await?;
    let now = Timestamp::from_datetime(time::OffsetDateTime::now_utc());
    let state = guard_state(&mut tx, false).await?;
    let rates = rates_for(&mut tx, policy, now, &state).await?;
    tx.rollback().await?;
    Ok(rates)
}

/// How a full window is read costs differently on each database. sqlx
/// hands each row of SQLite over from its own thread (about 5 µs a row),
/// while statements are cheap there: SQLite reads whole days (`rate_days`,
/// which triggers keep in step with the hours), newest first, then the
/// hours of the day where the window starts (a window three weeks long:
/// ~45 rows instead of 500). PostgreSQL sends rows cheaply but every row of
/// a statement, and each statement is a round trip: it reads the newest 96
/// hours (four days, a busy sender's window and one of a few thousand mails
/// a day), then the rest of the maximum age in one more.
const NEWEST_HOURS_POSTGRES: i64 = 96;

/// A full window being filled, newest bucket first, exactly as if every
/// bucket were read one by one: a bucket is in it while the newer ones
/// hold fewer than `window_sends` sends.
struct Filling {
    total: Counts,
    window_start: Option<Timestamp>,
    window_sends: i64,
    /// The resume's hour, the oldest a window can reach: its counts from
    /// before the resume (`baseline`) do not count.
    baseline_hour: Timestamp,
    baseline: Counts,
}

impl Filling {
    /// Takes one hourly bucket; whether the window wants more.
    fn hour(&mut self, hour: Span) -> bool {
        let counts = if hour.oldest == self.baseline_hour {
            hour.counts.minus(self.baseline)
        } else {
            hour.counts
        };
        if !counts.is_zero() {
            self.total.add(counts);
            self.window_start = Some(hour.oldest);
        }
        self.total.sends < self.window_sends
    }

    /// Takes a day whole when every hour of it is in the window and the
    /// window wants more after it; otherwise the window starts within it.
    /// A day taken whole never holds the window's start: the window is
    /// full, so the hours read after the days hold the sends that fill it,
    /// and the oldest of those with a count is the start.
    fn whole_day(&mut self, day: Span) -> bool {
        if day.oldest <= self.baseline_hour
            || self.total.sends + day.counts.sends >= self.window_sends
        {
            return false;
        }
        self.total.add(day.counts);
        true
    }

    async fn newest(&mut self, tx: &mut Tx<'_>, cutoff: Timestamp) -> DbResult<()> {
        if tx.is_sqlite() {
            self.by_days(tx, cutoff).await
        } else {
            self.by_hours(tx, cutoff).await
        }
    }

    /// PostgreSQL: the newest hours, then the rest if the window wants more.
    async fn by_hours(&mut self, tx: &mut Tx<'_>, cutoff: Timestamp) -> DbResult<()> {
        let (mut read, mut oldest_read, mut wants_more) = (0, None, true);
        let newest = Spans::Hours {
            cutoff,
            older_than: None,
            limit: NEWEST_HOURS_POSTGRES,
        };
        spans(tx, newest, |hour| {
            read += 1;
            oldest_read = Some(hour.oldest);
            wants_more = self.hour(hour);
            wants_more
        })
        .await?;
        let (true, Some(older_than)) = (wants_more && read == NEWEST_HOURS_POSTGRES, oldest_read)
        else {
            return Ok(());
        };
        let rest = Spans::Hours {
            cutoff,
            older_than: Some(older_than),
            limit: i64::MAX,
        };
        spans(tx, rest, |hour| self.hour(hour)).await
    }

    /// SQLite: whole days while the window wants more after each, then the
    /// hours of the day where it starts, or of the part of a day before the
    /// first whole one when the window reaches back to `cutoff`.
    async fn by_days(&mut self, tx: &mut Tx<'_>, cutoff: Timestamp) -> DbResult<()> {
        let (mut oldest_taken, mut starts_within) = (None, None);
        let from = first_whole_day(cutoff);
        spans(tx, Spans::Days { from }, |day| {
            if self.whole_day(day) {
                oldest_taken = Some(day.oldest);
                true
            } else {
                starts_within = Some(day.oldest);
                false
            }
        })
        .await?;
        let hours_from = starts_within.unwrap_or(cutoff);
        if oldest_taken != Some(hours_from) {
            let hours = Spans::Hours {
                cutoff: hours_from,
                older_than: oldest_taken,
                limit: i64::MAX,
            };
            spans(tx, hours, |hour| self.hour(hour)).await?;
        }
        Ok(())
    }
}
