//! The current window and its rates: the newest whole hours holding
//! `GUARD_WINDOW_SENDS` sends, within `GUARD_MAX_AGE_DAYS`, since the last
//! resume. One aggregate when the window is not full; otherwise the newest
//! few buckets. The cost is bounded by the number of hours, not by history.

use super::{Counts, GuardPolicy, Rates, hour_of};
use crate::store::guard::{GuardState, guard_state, newest_buckets, totals_since};
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
        // The window is full: the newest buckets until it is, usually a few.
        total = Counts::default();
        newest_buckets(tx, cutoff, |start, counts| {
            let counts = if start == baseline_hour {
                counts.minus(state.baseline)
            } else {
                counts
            };
            if !counts.is_zero() {
                total.add(counts);
                window_start = Some(start);
            }
            total.sends < policy.window_sends
        })
        .await?;
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
