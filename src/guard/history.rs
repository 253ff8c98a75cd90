//! The rates over time, for people (`GET /v1/rates/history` and the page):
//! every hour of the guard's maximum age with its own counts and the window
//! the guard reads at the end of that hour, against bouncer's lines and
//! SES's. One bounded query reads the hours (at most one row per hour of
//! `GUARD_MAX_AGE_DAYS`); the windows are computed here, in memory.
//!
//! A window is what `window::rates_for` reads: the newest hours holding
//! `GUARD_WINDOW_SENDS` sends, never before the last resume (whose hour
//! counts only what came after it). Buckets older than the maximum age are
//! pruned, so an hour's window reaches back at most to the first hour shown,
//! and hours before the last resume are computed as if there had been none
//! (earlier resumes are not kept).

use serde::Serialize;

use super::{Counts, GuardPolicy, Ppm, hour_of};
use crate::store::guard::{GuardState, guard_state};
use crate::store::history::buckets_between;
use crate::store::{DbResult, Store};
use crate::time::Timestamp;

/// SES's lines (reference/ses.md): an account is put under review above
/// these rates and its sending may be paused above the next.
pub const SES_BOUNCE_REVIEW: Ppm = Ppm(50_000);
pub const SES_BOUNCE_PAUSE: Ppm = Ppm(100_000);
pub const SES_COMPLAINT_REVIEW: Ppm = Ppm(1_000);
pub const SES_COMPLAINT_PAUSE: Ppm = Ppm(5_000);

const HOUR: time::Duration = time::Duration::hours(1);

/// The history as `GET /v1/rates/history` answers it.
#[derive(Debug, Clone, Serialize)]
pub struct RateHistory {
    /// The first and last hour shown (starts of hours, UTC).
    pub from: Timestamp,
    pub to: Timestamp,
    pub now: Timestamp,
    /// The last resume: windows of later hours do not reach before it.
    pub counting_since: Timestamp,
    pub policy: HistoryPolicy,
    pub lines: Lines,
    /// The window now (the last hour's), as the guard reads it.
    pub window: Window,
    /// Every hour from `from` to `to`, oldest first.
    pub hours: Vec<Hour>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryPolicy {
    pub window_sends: i64,
    pub max_age_days: i64,
    pub min_volume: i64,
}

/// The horizontal lines of both charts, in percent.
#[derive(Debug, Clone, Serialize)]
pub struct Lines {
    pub bounce: RateLines,
    pub complaint: RateLines,
}

#[derive(Debug, Clone, Serialize)]
pub struct RateLines {
    /// `None`: early warnings are off (`GUARD_WARN=false`).
    pub bouncer_warn_percent: Option<f64>,
    pub bouncer_pause_percent: f64,
    pub ses_review_percent: f64,
    pub ses_pause_percent: f64,
}

/// One hour: what was counted in it, and the window at its end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hour {
    pub hour: Timestamp,
    pub sends: i64,
    pub hard_bounces: i64,
    pub complaints: i64,
    pub delivery_sends: i64,
    pub window: Window,
}

/// A window's counts and rates; rates are fractions of sends (0.05 is 5%),
/// `None` while the window holds no send.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub sends: i64,
    pub hard_bounces: i64,
    pub complaints: i64,
    /// The oldest hour that counted in it.
    pub start: Option<Timestamp>,
    pub bounce_rate: Option<f64>,
    pub complaint_rate: Option<f64>,
    /// At least `GUARD_MIN_VOLUME` sends: the lines apply.
    pub enough_volume: bool,
    /// Delivery or Send events counted in it (without them the guard never
    /// acts, see the README).
    pub volume_known: bool,
}

impl Window {
    fn of(total: Counts, start: Option<Timestamp>, policy: &GuardPolicy) -> Window {
        let rate = |n: i64| (total.sends > 0).then(|| n as f64 / total.sends as f64);
        Window {
            sends: total.sends,
            hard_bounces: total.hard_bounces,
            complaints: total.complaints,
            start,
            bounce_rate: rate(total.hard_bounces),
            complaint_rate: rate(total.complaints),
            enough_volume: total.sends >= policy.min_volume,
            volume_known: total.delivery_sends > 0,
        }
    }
}

fn lines(warn: Option<Ppm>, pause: Ppm, ses_review: Ppm, ses_pause: Ppm) -> RateLines {
    RateLines {
        bouncer_warn_percent: warn.map(Ppm::percent),
        bouncer_pause_percent: pause.percent(),
        ses_review_percent: ses_review.percent(),
        ses_pause_percent: ses_pause.percent(),
    }
}

/// Reads the history up to `now`: the guard's state row and one query
/// over the hours of the maximum age, in one read-only snapshot.
pub async fn read(store: &Store, policy: &GuardPolicy, now: Timestamp) -> DbResult<RateHistory> {
    let to = hour_of(now);
    let from = hour_of(now.saturating_sub(policy.max_age));
    let mut conn = store.conn().await?;
    let mut tx = conn.begin_read().await?;
    let state = guard_state(&mut tx, false).await?;
    let buckets = buckets_between(&mut tx, from, to).await?;
    tx.rollback().await?;
    let hours = hourly(&buckets, from, to, &state, policy);
    let window = hours.last().map(|h| h.window.clone()).unwrap_or_else(|| {
        // `from <= to` always holds; an empty series only if the clock is
        // off the calendar.
        Window::of(Counts::default(), None, policy)
    });
    Ok(RateHistory {
        from,
        to,
        now,
        counting_since: state.counting_since,
        policy: HistoryPolicy {
            window_sends: policy.window_sends,
            max_age_days: policy.max_age.whole_days(),
            min_volume: policy.min_volume,
        },
        lines: Lines {
            bounce: lines(
                policy.bounce_warn,
                policy.bounce_pause,
                SES_BOUNCE_REVIEW,
                SES_BOUNCE_PAUSE,
            ),
            complaint: lines(
                policy.complaint_warn,
                policy.complaint_pause,
                SES_COMPLAINT_REVIEW,
                SES_COMPLAINT_PAUSE,
            ),
        },
        window,
        hours,
    })
}

/// Every hour from `from` to `to` (starts of hours), with the window at its
/// end computed from `buckets` (oldest first, within `from..=to`).
pub fn hourly(
    buckets: &[(Timestamp, Counts)],
    from: Timestamp,
    to: Timestamp,
    state: &GuardState,
    policy: &GuardPolicy,
) -> Vec<Hour> {
    let starts: Vec<Timestamp> = std::iter::successors(Some(from), |h| {
        let next = h.saturating_add(HOUR);
        (next <= to && next > *h).then_some(next)
    })
    .collect();
    let mut counts = vec![Counts::default(); starts.len()];
    for (start, c) in buckets {
        if let Ok(i) = starts.binary_search(start) {
            counts[i] = *c;
        }
    }
    let resume_hour = hour_of(state.counting_since);
    // Before the resume hour, windows reach back to the first hour shown;
    // from it on, to the resume hour, which counts only what came after the
    // resume.
    let resume_index = starts.partition_point(|h| *h < resume_hour);
    let mut after_resume = counts[resume_index..].to_vec();
    if let Some(first) = after_resume.first_mut()
        && starts[resume_index] == resume_hour
    {
        *first = first.minus(state.baseline);
    }
    let windows = windows_over(&counts[..resume_index], policy.window_sends)
        .into_iter()
        .chain(
            windows_over(&after_resume, policy.window_sends)
                .into_iter()
                .map(|(total, oldest)| (total, oldest.map(|k| k + resume_index))),
        );
    starts
        .iter()
        .zip(&counts)
        .zip(windows)
        .map(|((hour, c), (total, oldest))| Hour {
            hour: *hour,
            sends: c.sends,
            hard_bounces: c.hard_bounces,
            complaints: c.complaints,
            delivery_sends: c.delivery_sends,
            window: Window::of(total, oldest.map(|k| starts[k]), policy),
        })
        .collect()
}

/// For each hour of `counts`, what walking back from it gives: the sum of
/// the newest hours up to it that hold `window_sends` sends (all of them if
/// fewer), and the index of the oldest hour that counted something. One
/// pass: as hours are added, the window's oldest hour only moves forward.
fn windows_over(counts: &[Counts], window_sends: i64) -> Vec<(Counts, Option<usize>)> {
    // The first hour at or after each that counted something.
    let mut next_counted = vec![None; counts.len() + 1];
    for k in (0..counts.len()).rev() {
        next_counted[k] = if counts[k].is_zero() {
            next_counted[k + 1]
        } else {
            Some(k)
        };
    }
    let mut total = Counts::default();
    let mut oldest = 0;
    let mut windows = Vec::with_capacity(counts.len());
    for (i, c) in counts.iter().enumerate() {
        total.add(*c);
        // The oldest hour goes while the newer ones hold a window without it.
        while oldest < i && total.sends - counts[oldest].sends >= window_sends {
            total = total.minus(counts[oldest]);
            oldest += 1;
        }
        windows.push((total, next_counted[oldest].filter(|k| *k <= i)));
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(window_sends: i64) -> GuardPolicy {
        GuardPolicy {
            window_sends,
            max_age: time::Duration::days(1),
            min_volume: 100,
            bounce_pause: Ppm(50_000),
            complaint_pause: Ppm(1_000),
            bounce_warn: None,
            complaint_warn: None,
            ses_pause: Vec::new(),
        }
    }

    fn at(hours: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_795_000_000_000 - 1_795_000_000_000 % 3_600_000)
            .unwrap()
            .saturating_add(time::Duration::hours(hours))
    }

    fn sends(sends: i64, hard_bounces: i64) -> Counts {
        Counts {
            sends,
            hard_bounces,
            complaints: 0,
            delivery_sends: sends - hard_bounces,
        }
    }

    fn never_resumed() -> GuardState {
        GuardState {
            paused: false,
            warned: false,
            counting_since: Timestamp::from_unix_millis(0).unwrap(),
            baseline: Counts::default(),
        }
    }

    #[test]
    fn every_hour_is_shown_and_windows_stop_once_full() {
        let buckets = [(at(1), sends(100, 10)), (at(3), sends(100, 0))];
        let hours = hourly(&buckets, at(0), at(4), &never_resumed(), &policy(150));
        assert_eq!(hours.len(), 5);
        assert_eq!(hours[0].window.bounce_rate, None, "nothing sent yet");
        assert_eq!(hours[1].window.bounce_rate, Some(0.1));
        assert_eq!(
            hours[2].window, hours[1].window,
            "a quiet hour changes nothing"
        );
        // 100 sends are not 150: the window reaches back to hour 1.
        assert_eq!(hours[3].window.sends, 200);
        assert_eq!(hours[3].window.start, Some(at(1)));
        assert_eq!(hours[3].window.bounce_rate, Some(0.05));
        assert!(hours[3].window.enough_volume);
    }

    #[test]
    fn after_a_resume_windows_count_only_what_came_after_it() {
        let buckets = [(at(0), sends(100, 50)), (at(1), sends(100, 20))];
        let state = GuardState {
            paused: false,
            warned: false,
            counting_since: at(1).saturating_add(time::Duration::minutes(30)),
            baseline: sends(60, 20),
        };
        let hours = hourly(&buckets, at(0), at(2), &state, &policy(10_000));
        assert_eq!(hours[0].window.hard_bounces, 50, "before the resume");
        assert_eq!(
            (hours[1].window.sends, hours[1].window.hard_bounces),
            (40, 0),
            "the resume hour counts only what came after the resume"
        );
        assert_eq!(hours[2].window.start, Some(at(1)));
    }

    /// The window at the end of hour `i` by walking back from it, as
    /// `window::rates_for` does.
    fn walked(counts: &[Counts], i: usize, window_sends: i64) -> (Counts, Option<usize>) {
        let mut total = Counts::default();
        let mut oldest = None;
        for j in (0..=i).rev() {
            if !counts[j].is_zero() {
                total.add(counts[j]);
                oldest = Some(j);
            }
            if total.sends >= window_sends {
                break;
            }
        }
        (total, oldest)
    }

    #[test]
    fn one_pass_gives_what_walking_back_from_every_hour_gives() {
        let mut seed = 7_u64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) % n) as i64
        };
        for window_sends in [1, 50, 300, 5_000] {
            let counts: Vec<Counts> = (0..500)
                .map(|_| {
                    let sends = if next(4) == 0 { 0 } else { next(120) };
                    Counts {
                        sends,
                        hard_bounces: next(4),
                        complaints: i64::from(next(9) == 0),
                        delivery_sends: sends / 2,
                    }
                })
                .collect();
            let windows = windows_over(&counts, window_sends);
            for (i, window) in windows.iter().enumerate() {
                assert_eq!(
                    *window,
                    walked(&counts, i, window_sends),
                    "hour {i}, window {window_sends}"
                );
            }
        }
    }
}
