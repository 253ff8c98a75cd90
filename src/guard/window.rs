//! The current window and its rates: the newest whole hours holding
//! `GUARD_WINDOW_SENDS` sends, within `GUARD_MAX_AGE_DAYS`, since the last
//! resume. One aggregate when the window is not full; otherwise the newest
//! few hours, then whole days, then the hours of the day where the window
//! starts. The cost is bounded by the number of hours, not by history.

use super::{Counts, GuardPolicy, Rates, hour_of};
use crate::store::guard::{GuardState, Span, Spans, guard_state, spans, totals_since};
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
    if total.sends > policy.window_sends {
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
/// while statements are cheap there: SQLite reads the newest 24 hours, then
/// whole days summed by the database, then the hours of the day where the
/// window starts (a window three weeks long: ~70 rows instead of 500).
/// PostgreSQL sends rows cheaply but every row of a statement, and each
/// statement is a round trip: it reads the newest 96 hours (four days, a
/// busy sender's window and one of a few thousand mails a day), then the
/// rest of the maximum age in one more.
const NEWEST_HOURS_SQLITE: i64 = 24;
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
    fn whole_day(&mut self, day: Span) -> bool {
        if day.oldest <= self.baseline_hour
            || self.total.sends + day.counts.sends >= self.window_sends
        {
            return false;
        }
        self.total.add(day.counts);
        if let Some(counted) = day.oldest_counted {
            self.window_start = Some(counted);
        }
        true
    }

    async fn newest(&mut self, tx: &mut Tx<'_>, mut cutoff: Timestamp) -> DbResult<()> {
        let sqlite = tx.is_sqlite();
        let limit = if sqlite {
            NEWEST_HOURS_SQLITE
        } else {
            NEWEST_HOURS_POSTGRES
        };
        let (mut read, mut oldest_read, mut wants_more) = (0, None, true);
        let newest = Spans::Hours {
            cutoff,
            older_than: None,
            limit,
        };
        spans(tx, newest, |hour| {
            read += 1;
            oldest_read = Some(hour.oldest);
            wants_more = self.hour(hour);
            wants_more
        })
        .await?;
        let (true, Some(mut older_than)) = (wants_more && read == limit, oldest_read) else {
            return Ok(());
        };
        if sqlite {
            // Whole days while the window wants more, then the hours of the
            // day where it starts (`cutoff` moved up to that day).
            let mut starts_within = None;
            spans(tx, Spans::Days { cutoff, older_than }, |day| {
                if self.whole_day(day) {
                    older_than = day.oldest;
                    true
                } else {
                    starts_within = Some(day.oldest);
                    false
                }
            })
            .await?;
            let Some(day) = starts_within else {
                return Ok(());
            };
            cutoff = day;
        }
        let rest = Spans::Hours {
            cutoff,
            older_than: Some(older_than),
            limit: i64::MAX,
        };
        spans(tx, rest, |hour| self.hour(hour)).await?;
        Ok(())
    }
}
