//! The current window and its rates: the newest whole hours holding
//! `GUARD_WINDOW_SENDS` sends, within `GUARD_MAX_AGE_DAYS`, since the last
//! resume. One aggregate when the window is not full; otherwise whole days
//! (`rate_days`), then the hours of the day where the window starts, and
//! on PostgreSQL the newest days' hours first, with the aggregate in one
//! statement. The cost is bounded by the number of days, not by history.

use super::{Counts, GuardPolicy, Rates, hour_of};
use crate::store::guard::{
    GuardState, SendingState, Span, Spans, day_of, first_whole_day, sending_state_in, spans,
    totals_and_newest_hours, totals_since,
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
    let baseline = (baseline_hour >= cutoff).then_some((baseline_hour, state.baseline));
    // PostgreSQL's newest hours: from the start of the day
    // `NEWEST_DAYS_POSTGRES` days before today's.
    let newest_from = day_of(now, NEWEST_DAYS_POSTGRES).max(cutoff);
    let (mut total, mut window_start, newest) = if tx.is_sqlite() {
        let (total, oldest) = totals_since(tx, cutoff, baseline).await?;
        (total, oldest, Vec::new())
    } else {
        // The totals fill the window at `window_sends` sends after the
        // baseline (`minus` stops at zero; `window_sends` is at least 1).
        debug_assert!(policy.window_sends >= 1, "GuardPolicy keeps it at least 1");
        let baseline_sends = baseline.map_or(0, |(_, counts)| counts.sends);
        let full_at = policy.window_sends.saturating_add(baseline_sends);
        totals_and_newest_hours(tx, cutoff, full_at, newest_from, baseline).await?
    };
    if let Some((_, counts)) = baseline {
        total = total.minus(counts);
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
        if tx.is_sqlite() {
            window.by_days(tx, cutoff, None).await?;
        } else if window.newest_hours(newest) && newest_from > cutoff {
            window.by_days(tx, cutoff, Some(newest_from)).await?;
        }
        (total, window_start) = (window.total, window.window_start);
    }
    Ok(Rates::from_window(total, window_start, since, policy))
}

/// The state row and the rates now, in one read-only snapshot: a pause,
/// a resume or a batch committed meanwhile is in both or in neither.
pub async fn current_rates(store: &Store, policy: &GuardPolicy) -> DbResult<(SendingState, Rates)> {
    let mut conn = store.conn().await?;
    let mut tx = conn.begin_read_planned_once().await?;
    let now = Timestamp::from_datetime(time::OffsetDateTime::now_utc());
    let (shown, state) = sending_state_in(&mut tx).await?;
    let rates = rates_for(&mut tx, policy, now, &state).await?;
    tx.rollback().await?;
    Ok((shown, rates))
}

/// How a full window is read costs differently on each database. sqlx
/// hands each row of SQLite over from its own thread (about 5 µs a row),
/// while statements are cheap there: SQLite reads whole days (`rate_days`,
/// which triggers keep in step with the hours), newest first, then the
/// hours of the day where the window starts (a window three weeks long:
/// ~45 rows instead of 500). PostgreSQL sends rows cheaply (about 1 µs)
/// but every row of a statement, and each statement is a round trip: the
/// statement of the totals also brings the hours of today and the three
/// days before (a busy sender's window, and one of a few thousand mails a
/// day), and an older window start costs two more, the days and the hours
/// of one.
const NEWEST_DAYS_POSTGRES: i64 = 3;

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

    /// PostgreSQL: the newest hours, read with the totals (whose
    /// condition for sending them is `rates_for`'s rule for a full
    /// window); whether the window wants more.
    fn newest_hours(&mut self, newest: Vec<Span>) -> bool {
        newest.into_iter().all(|hour| self.hour(hour))
    }

    /// Whole days, newest first, while the window wants more after each,
    /// then the hours of the day where it starts, or of the part of a day
    /// before the first whole one when the window reaches back to
    /// `cutoff`. Only what is older than `before`: on PostgreSQL the hours
    /// from `before` on are already in; on SQLite (`None`) nothing is.
    async fn by_days(
        &mut self,
        tx: &mut Tx<'_>,
        cutoff: Timestamp,
        before: Option<Timestamp>,
    ) -> DbResult<()> {
        let (mut oldest_taken, mut starts_within) = (before, None);
        let from = first_whole_day(cutoff);
        spans(tx, Spans::Days { from, before }, |day| {
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
            };
            spans(tx, hours, |hour| self.hour(hour)).await?;
        }
        Ok(())
    }
}
