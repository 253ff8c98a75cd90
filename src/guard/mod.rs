//! The reputation guard: bounce and complaint rates over a window counted in
//! sends (like SES's "representative volume"), bounded by a maximum age, and
//! the decision to warn or pause. Decisions are exact integer comparisons:
//! "above 0.1%" means `complaints * 1,000,000 > 1,000 * sends`.
//!
//! The counts live in hourly buckets (`store::guard`); this module holds
//! what is decided from them: `window` reads the current rates, and
//! `transitions` pauses, warns and resumes, with their alerts, inside the
//! transaction of their cause.

pub mod history;
mod transitions;
mod window;

use serde::Serialize;

pub use self::transitions::{check, set_sending};
pub use self::window::{current_rates, rates_for};
use crate::config::{SesPauseMode, Settings};
pub use crate::store::guard::Counts;
pub use crate::store::ses::SendingTarget;
use crate::time::Timestamp;

/// A rate threshold in parts per million (5% = 50,000; 0.1% = 1,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ppm(pub i64);

impl Ppm {
    /// Parses a percentage with up to four decimals: `5`, `0.1`, `0.05`.
    pub fn parse_percent(text: &str) -> Result<Ppm, String> {
        let text = text.trim().trim_end_matches('%');
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let bad = || format!("`{text}` is not a percentage such as 5 or 0.1");
        if whole.is_empty() && frac.is_empty()
            || frac.len() > 4
            || !whole
                .chars()
                .chain(frac.chars())
                .all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let frac: i64 = format!("{frac:0<4}").parse().map_err(|_| bad())?;
        let ppm = whole * 10_000 + frac;
        if ppm > 1_000_000 {
            return Err(format!("`{text}` is more than 100%"));
        }
        Ok(Ppm(ppm))
    }

    pub fn percent(self) -> f64 {
        self.0 as f64 / 10_000.0
    }

    /// `count / sends` is strictly above this threshold.
    pub fn exceeded_by(self, count: i64, sends: i64) -> bool {
        sends > 0 && i128::from(count) * 1_000_000 > i128::from(self.0) * i128::from(sends)
    }
}

#[derive(Debug, Clone)]
pub struct GuardPolicy {
    pub window_sends: i64,
    pub max_age: time::Duration,
    pub min_volume: i64,
    pub bounce_pause: Ppm,
    pub complaint_pause: Ppm,
    /// `None`: early warnings are off.
    pub bounce_warn: Option<Ppm>,
    pub complaint_warn: Option<Ppm>,
    /// Where each pause and resume is also carried out at SES (empty:
    /// `SES_PAUSE_MODE=off`); the intent is written with the transition.
    pub ses_pause: Vec<SendingTarget>,
}

/// The SES targets `SES_PAUSE_MODE` names; a mode without what it needs is
/// refused, naming the setting.
pub fn pause_targets(settings: &Settings) -> anyhow::Result<Vec<SendingTarget>> {
    Ok(match settings.ses_pause_mode {
        SesPauseMode::Off => Vec::new(),
        SesPauseMode::Account => vec![SendingTarget::Account],
        SesPauseMode::ConfigurationSets => {
            let names: Vec<SendingTarget> = settings
                .ses_configuration_sets
                .iter()
                .map(|n| n.trim())
                .filter(|n| !n.is_empty())
                .map(|n| SendingTarget::ConfigurationSet(n.to_owned()))
                .collect();
            if names.is_empty() {
                anyhow::bail!(
                    "SES_PAUSE_MODE=configuration-sets needs SES_CONFIGURATION_SETS (the configuration set names to pause)"
                );
            }
            names
        }
    })
}

impl GuardPolicy {
    /// The guard's settings, percentages parsed exactly.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<GuardPolicy> {
        let ppm = |name: &str, text: &str| {
            Ppm::parse_percent(text).map_err(|e| anyhow::anyhow!("{name}: {e}"))
        };
        let warn = |name: &str, text: &str| -> anyhow::Result<Option<Ppm>> {
            if settings.guard_warn {
                ppm(name, text).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(GuardPolicy {
            window_sends: settings.guard_window_sends.max(1),
            max_age: time::Duration::days(i64::from(settings.guard_max_age_days.max(1))),
            min_volume: settings.guard_min_volume,
            bounce_pause: ppm(
                "GUARD_BOUNCE_PAUSE_PERCENT",
                &settings.guard_bounce_pause_percent,
            )?,
            complaint_pause: ppm(
                "GUARD_COMPLAINT_PAUSE_PERCENT",
                &settings.guard_complaint_pause_percent,
            )?,
            bounce_warn: warn(
                "GUARD_BOUNCE_WARN_PERCENT",
                &settings.guard_bounce_warn_percent,
            )?,
            complaint_warn: warn(
                "GUARD_COMPLAINT_WARN_PERCENT",
                &settings.guard_complaint_warn_percent,
            )?,
            ses_pause: pause_targets(settings)?,
        })
    }
}

/// The current rates and the counts behind them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rates {
    pub sends: i64,
    pub hard_bounces: i64,
    pub complaints: i64,
    pub bounce_rate: f64,
    pub complaint_rate: f64,
    /// The oldest hour the window reaches back to (none: no sends yet).
    pub window_start: Option<Timestamp>,
    /// Events before this do not count (the last resume).
    pub counting_since: Timestamp,
    /// Enough volume for the thresholds to apply.
    pub enough_volume: bool,
    /// Delivery or Send events were seen in the window; without them the
    /// volume is only what bounced, and the guard does not act.
    pub volume_known: bool,
}

/// The start of the hour `at` falls in.
pub fn hour_of(at: Timestamp) -> Timestamp {
    let millis = at.unix_millis();
    Timestamp::from_unix_millis(millis - millis.rem_euclid(3_600_000)).unwrap_or(at)
}

impl Rates {
    /// The rates from the window's summed counts (see `store::guard` for how
    /// the window is chosen).
    pub fn from_window(
        total: Counts,
        window_start: Option<Timestamp>,
        counting_since: Timestamp,
        policy: &GuardPolicy,
    ) -> Rates {
        let rate = |n: i64| {
            if total.sends > 0 {
                n as f64 / total.sends as f64
            } else {
                0.0
            }
        };
        Rates {
            sends: total.sends,
            hard_bounces: total.hard_bounces,
            complaints: total.complaints,
            bounce_rate: rate(total.hard_bounces),
            complaint_rate: rate(total.complaints),
            window_start,
            counting_since,
            enough_volume: total.sends >= policy.min_volume,
            volume_known: total.delivery_sends > 0,
        }
    }
}

/// What the rates call for, given the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub pause: bool,
    pub warn: bool,
    /// Both rates fell back to or below the warning levels: warn again next
    /// time they rise.
    pub rearm_warning: bool,
}

/// Whether any rates could make `decide` act. Paused, with no warning to
/// take back, they cannot: only a resume by hand ends a pause, and a paused
/// guard does not warn. The writer then skips reading them: in a bounce
/// storm every batch after the pause would read them for nothing.
pub fn rates_matter(paused: bool, warned: bool) -> bool {
    !paused || warned
}

pub fn decide(rates: &Rates, policy: &GuardPolicy, paused: bool, warned: bool) -> Decision {
    let acts = rates.enough_volume && rates.volume_known;
    let above = |ppm: Ppm, n: i64| ppm.exceeded_by(n, rates.sends);
    let pause = acts
        && !paused
        && (above(policy.bounce_pause, rates.hard_bounces)
            || above(policy.complaint_pause, rates.complaints));
    let over_warning = policy
        .bounce_warn
        .is_some_and(|p| above(p, rates.hard_bounces))
        || policy
            .complaint_warn
            .is_some_and(|p| above(p, rates.complaints));
    Decision {
        pause,
        warn: acts && !paused && !warned && !pause && over_warning,
        rearm_warning: warned && !over_warning,
    }
}

/// `1 complaint`, `2 complaints`: counts in alert texts and `bouncer status`.
pub fn counted(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_parse_exactly() {
        assert_eq!(Ppm::parse_percent("5"), Ok(Ppm(50_000)));
        assert_eq!(Ppm::parse_percent("0.1"), Ok(Ppm(1_000)));
        assert_eq!(Ppm::parse_percent("0.05%"), Ok(Ppm(500)));
        assert_eq!(Ppm::parse_percent(".5"), Ok(Ppm(5_000)));
        assert!(Ppm::parse_percent("abc").is_err());
        assert!(Ppm::parse_percent("0.00001").is_err());
        assert!(Ppm::parse_percent("101").is_err());
    }

    #[test]
    fn above_is_strict() {
        let p = Ppm::parse_percent("0.1").unwrap();
        assert!(!p.exceeded_by(1, 1000));
        assert!(p.exceeded_by(2, 1000));
        let b = Ppm::parse_percent("5").unwrap();
        assert!(!b.exceeded_by(50, 1000));
        assert!(b.exceeded_by(51, 1001));
    }

    /// `check` skips reading the rates exactly when `rates_matter` says no:
    /// then no rates, from none at all to every send a hard bounce and a
    /// complaint, may make `decide` act, with warnings on or off.
    #[test]
    fn a_pause_with_no_warning_to_take_back_needs_no_rates() {
        let at = Timestamp::from_unix_millis(1_764_000_000_000).unwrap();
        let mut policy = GuardPolicy {
            window_sends: 10_000,
            max_age: time::Duration::days(7),
            min_volume: 100,
            bounce_pause: Ppm(50_000),
            complaint_pause: Ppm(1_000),
            bounce_warn: Some(Ppm(25_000)),
            complaint_warn: Some(Ppm(500)),
            ses_pause: Vec::new(),
        };
        let idle = Decision {
            pause: false,
            warn: false,
            rearm_warning: false,
        };
        for warnings in [true, false] {
            if !warnings {
                policy.bounce_warn = None;
                policy.complaint_warn = None;
            }
            for (sends, bad, delivered) in [
                (0, 0, 0),
                (1_000, 0, 1_000),
                (1_000, 1_000, 0),
                (10_000, 10_000, 10_000),
            ] {
                let total = Counts {
                    sends,
                    hard_bounces: bad,
                    complaints: bad,
                    delivery_sends: delivered,
                };
                let rates = Rates::from_window(total, Some(at), at, &policy);
                assert_eq!(decide(&rates, &policy, true, false), idle, "{rates:?}");
            }
        }
        assert!(!rates_matter(true, false));
        assert!(rates_matter(false, false));
        assert!(rates_matter(false, true));
        assert!(rates_matter(true, true));
        // Paused and warned, rates back under the warning lines re-arm it.
        policy.bounce_warn = Some(Ppm(25_000));
        policy.complaint_warn = Some(Ppm(500));
        let quiet = Counts {
            sends: 1_000,
            hard_bounces: 0,
            complaints: 0,
            delivery_sends: 1_000,
        };
        let rates = Rates::from_window(quiet, Some(at), at, &policy);
        assert!(decide(&rates, &policy, true, true).rearm_warning);
    }
}
