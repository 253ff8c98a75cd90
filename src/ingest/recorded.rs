//! The rules `serve` applies messages with (the guard's window and
//! thresholds, the soft-bounce rule), as it records them in the database
//! (`apply_settings`) at every start-up, so that `bouncer status` and
//! `bouncer replay`, run from a shell that lacks the service's `GUARD_*`
//! and `SOFT_BOUNCE_*` settings, report and apply as the service does.
//! Percentages are kept as exact parts per million.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::apply::{ApplyPolicy, SoftBouncePolicy};
use crate::clock::Clock;
use crate::guard::{GuardPolicy, Ppm};
use crate::store::Store;
use crate::time::Timestamp;

/// The guard's window and thresholds (its SES targets are not the guard's
/// to record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedGuard {
    pub window_sends: i64,
    pub max_age_days: i64,
    pub min_volume: i64,
    pub bounce_pause_ppm: i64,
    pub complaint_pause_ppm: i64,
    pub bounce_warn_ppm: Option<i64>,
    pub complaint_warn_ppm: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPolicy {
    pub guard: RecordedGuard,
    pub soft_bounce_limit: i64,
    pub soft_bounce_window_days: i64,
    /// The service's `SNS_MAX_AGE_SECS`: how long its messages are kept
    /// at least, for the MessageId dedupe, which `bouncer prune` run from
    /// another shell must not cut short. Not a rule messages are applied
    /// with; absent in what earlier versions recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns_max_age_secs: Option<u64>,
}

impl RecordedGuard {
    pub fn of(policy: &GuardPolicy) -> RecordedGuard {
        RecordedGuard {
            window_sends: policy.window_sends,
            max_age_days: policy.max_age.whole_days(),
            min_volume: policy.min_volume,
            bounce_pause_ppm: policy.bounce_pause.0,
            complaint_pause_ppm: policy.complaint_pause.0,
            bounce_warn_ppm: policy.bounce_warn.map(|p| p.0),
            complaint_warn_ppm: policy.complaint_warn.map(|p| p.0),
        }
    }

    fn sane(&self) -> bool {
        let ppm = |v: i64| (0..=1_000_000).contains(&v);
        self.window_sends >= 1
            && (1..=36_500).contains(&self.max_age_days)
            && self.min_volume >= 0
            && ppm(self.bounce_pause_ppm)
            && ppm(self.complaint_pause_ppm)
            && self.bounce_warn_ppm.is_none_or(ppm)
            && self.complaint_warn_ppm.is_none_or(ppm)
    }

    /// `base` with this window and these thresholds.
    pub fn applied_to(&self, base: &GuardPolicy) -> GuardPolicy {
        GuardPolicy {
            window_sends: self.window_sends,
            max_age: time::Duration::days(self.max_age_days),
            min_volume: self.min_volume,
            bounce_pause: Ppm(self.bounce_pause_ppm),
            complaint_pause: Ppm(self.complaint_pause_ppm),
            bounce_warn: self.bounce_warn_ppm.map(Ppm),
            complaint_warn: self.complaint_warn_ppm.map(Ppm),
            ses_pause: base.ses_pause.clone(),
        }
    }
}

impl RecordedPolicy {
    pub fn of(policy: &ApplyPolicy) -> RecordedPolicy {
        RecordedPolicy {
            guard: RecordedGuard::of(&policy.guard),
            soft_bounce_limit: policy.soft_bounce.limit,
            soft_bounce_window_days: policy.soft_bounce.window.whole_days(),
            sns_max_age_secs: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads what `to_json` wrote; `None` for anything else (a row written
    /// by hand), which the commands then say they could not use.
    pub fn from_json(json: &str) -> Option<RecordedPolicy> {
        let r: RecordedPolicy = serde_json::from_str(json).ok()?;
        let sane = r.guard.sane()
            && r.soft_bounce_limit >= 1
            && (0..=36_500).contains(&r.soft_bounce_window_days)
            // The setting's own range (config.rs).
            && r.sns_max_age_secs.is_none_or(|s| (1..=315_360_000).contains(&s));
        sane.then_some(r)
    }

    /// `base` with these rules (its SES targets stay).
    pub fn applied_to(&self, base: &ApplyPolicy) -> ApplyPolicy {
        ApplyPolicy {
            soft_bounce: SoftBouncePolicy {
                limit: self.soft_bounce_limit,
                window: time::Duration::days(self.soft_bounce_window_days),
            },
            guard: self.guard.applied_to(&base.guard),
        }
    }
}

/// What a command compares: all the rules (`replay` applies them all) or
/// the guard's part (`status` reports only the guard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compared {
    All,
    Guard,
}

/// The settings whose values differ between `service` and `shell`, each
/// as `NAME service's value (here shell's value)`.
fn differences(
    service: &RecordedPolicy,
    shell: &RecordedPolicy,
    compared: Compared,
) -> Vec<String> {
    let percent = |ppm: Option<i64>| match ppm {
        Some(p) => format!("{}", Ppm(p).percent()),
        None => "off".to_owned(),
    };
    let (a, b) = (&service.guard, &shell.guard);
    let mut rows = vec![
        (
            "GUARD_WINDOW_SENDS",
            a.window_sends.to_string(),
            b.window_sends.to_string(),
        ),
        (
            "GUARD_MAX_AGE_DAYS",
            a.max_age_days.to_string(),
            b.max_age_days.to_string(),
        ),
        (
            "GUARD_MIN_VOLUME",
            a.min_volume.to_string(),
            b.min_volume.to_string(),
        ),
        (
            "GUARD_BOUNCE_PAUSE_PERCENT",
            percent(Some(a.bounce_pause_ppm)),
            percent(Some(b.bounce_pause_ppm)),
        ),
        (
            "GUARD_COMPLAINT_PAUSE_PERCENT",
            percent(Some(a.complaint_pause_ppm)),
            percent(Some(b.complaint_pause_ppm)),
        ),
    ];
    // `GUARD_WARN` turns both warning levels off at once: name it rather
    // than two levels the operator did not touch.
    let warns = |g: &RecordedGuard| g.bounce_warn_ppm.is_some() || g.complaint_warn_ppm.is_some();
    if warns(a) != warns(b) {
        rows.push(("GUARD_WARN", warns(a).to_string(), warns(b).to_string()));
    } else {
        rows.push((
            "GUARD_BOUNCE_WARN_PERCENT",
            percent(a.bounce_warn_ppm),
            percent(b.bounce_warn_ppm),
        ));
        rows.push((
            "GUARD_COMPLAINT_WARN_PERCENT",
            percent(a.complaint_warn_ppm),
            percent(b.complaint_warn_ppm),
        ));
    }
    if compared == Compared::All {
        rows.push((
            "SOFT_BOUNCE_LIMIT",
            service.soft_bounce_limit.to_string(),
            shell.soft_bounce_limit.to_string(),
        ));
        rows.push((
            "SOFT_BOUNCE_WINDOW_DAYS",
            service.soft_bounce_window_days.to_string(),
            shell.soft_bounce_window_days.to_string(),
        ));
    }
    rows.into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, a, b)| format!("{name} {a} (here {b})"))
        .collect()
}

/// Which rules a command uses: the service's as `serve` recorded them, not
/// this shell's, which may lack the service's environment. With a line to
/// print when the shell's differ (naming each difference) or the
/// service's are not known.
pub fn service_rules(
    own: &ApplyPolicy,
    recorded: Option<(String, Timestamp)>,
    compared: Compared,
) -> (ApplyPolicy, Option<String>) {
    let Some((json, at)) = recorded else {
        return (
            own.clone(),
            Some(
                "this shell's (no `bouncer serve` has recorded its own in this database yet)"
                    .into(),
            ),
        );
    };
    let Some(service) = RecordedPolicy::from_json(&json) else {
        return (
            own.clone(),
            Some(format!(
                "this shell's (the service's, recorded at {at}, could not be read: {json})"
            )),
        );
    };
    let differ = differences(&service, &RecordedPolicy::of(own), compared);
    if differ.is_empty() {
        return (own.clone(), None);
    }
    (
        service.applied_to(own),
        Some(format!(
            "the service's, as `bouncer serve` recorded them at {at}; this shell's differ and are not used: {}",
            differ.join(", ")
        )),
    )
}

/// `serve`'s part: records `policy` as the service's once the database
/// takes it.
pub fn spawn_recorder(
    store: Store,
    policy: &ApplyPolicy,
    sns_max_age_secs: u64,
    clock: Clock,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let recorded = RecordedPolicy {
        sns_max_age_secs: Some(sns_max_age_secs),
        ..RecordedPolicy::of(policy)
    };
    const WHAT: &str = "the rules messages are applied with";
    tokio::spawn(async move {
        if !crate::startup::until_written(WHAT, &stop, Duration::from_secs(1), || {
            record(&store, &recorded, &clock)
        })
        .await
        {
            return;
        }
        crate::startup::keep_written(
            WHAT,
            &stop,
            crate::startup::KEPT_CHECK_EVERY,
            || async { Ok(store.recorded_apply_settings().await?.is_some()) },
            || async {
                record(&store, &recorded, &clock).await?;
                Ok("recorded them again".to_owned())
            },
        )
        .await;
    })
}

/// Writes `recorded`, and says so when it replaces other rules: after a
/// change and a restart that is expected, but replicas of one database
/// running with different thresholds would not agree on when to pause.
async fn record(store: &Store, recorded: &RecordedPolicy, clock: &Clock) -> anyhow::Result<()> {
    let json = recorded.to_json();
    let before = store.record_apply_settings(&json, clock.now()).await?;
    // The rules only: a record of an earlier version has no message age.
    if let Some((old, at)) = before
        && RecordedPolicy::from_json(&old)
            .is_none_or(|old| !differences(&old, recorded, Compared::All).is_empty())
    {
        tracing::warn!(
            before = %old,
            recorded_at = %at,
            now = %json,
            "the guard's or soft-bounce settings differ from those the last `bouncer serve` on this database recorded: any replica still running with those would pause or suppress at other lines; `bouncer status` and `bouncer replay` now use these"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ApplyPolicy {
        ApplyPolicy {
            soft_bounce: SoftBouncePolicy {
                limit: 3,
                window: time::Duration::days(14),
            },
            guard: GuardPolicy {
                window_sends: 1_000,
                max_age: time::Duration::days(7),
                min_volume: 100,
                bounce_pause: Ppm(50_000),
                complaint_pause: Ppm(1_000),
                bounce_warn: None,
                complaint_warn: Some(Ppm(500)),
                ses_pause: Vec::new(),
            },
        }
    }

    #[test]
    fn rules_survive_the_round_trip_and_garbage_is_refused() {
        let policy = policy();
        let recorded = RecordedPolicy::of(&policy);
        let back = RecordedPolicy::from_json(&recorded.to_json()).expect("reads its own");
        assert_eq!(back, recorded);
        let applied = back.applied_to(&policy);
        assert_eq!(RecordedPolicy::of(&applied), recorded);
        assert_eq!(applied.guard.max_age, policy.guard.max_age);
        assert_eq!(applied.soft_bounce.window, policy.soft_bounce.window);
        assert_eq!(RecordedPolicy::from_json("{}"), None);
        assert_eq!(RecordedPolicy::from_json("not json"), None);
        let zero = recorded
            .to_json()
            .replace("\"window_sends\":1000", "\"window_sends\":0");
        assert_eq!(RecordedPolicy::from_json(&zero), None);
    }

    #[test]
    fn a_command_takes_the_services_rules_and_says_so() {
        let own = policy();
        let mut service = own.clone();
        service.guard.min_volume = 300;
        let json = RecordedPolicy::of(&service).to_json();
        let at = Timestamp::from_unix_millis(1_764_000_000_000).expect("a time");
        let (used, line) = service_rules(&own, Some((json.clone(), at)), Compared::Guard);
        assert_eq!(used.guard.min_volume, 300);
        assert!(
            line.as_deref().is_some_and(
                |l| l.ends_with("differ and are not used: GUARD_MIN_VOLUME 300 (here 100)")
            ),
            "{line:?}"
        );
        let (used, line) = service_rules(&service, Some((json.clone(), at)), Compared::Guard);
        assert_eq!((used.guard.min_volume, line), (300, None));
        // The soft-bounce rule is not the guard's: `status` says nothing of
        // it, `replay` does.
        let mut soft = service.clone();
        soft.soft_bounce.limit = 5;
        let (_, line) = service_rules(&soft, Some((json.clone(), at)), Compared::Guard);
        assert_eq!(line, None);
        let (used, line) = service_rules(&soft, Some((json, at)), Compared::All);
        assert_eq!(used.soft_bounce.limit, 3);
        assert!(line.is_some_and(|l| l.ends_with("SOFT_BOUNCE_LIMIT 3 (here 5)")));
        // Warnings off in the service: the one setting that did it is named.
        let mut quiet = service.clone();
        quiet.guard.bounce_warn = None;
        quiet.guard.complaint_warn = None;
        let quiet_json = RecordedPolicy::of(&quiet).to_json();
        let (_, line) = service_rules(&service, Some((quiet_json, at)), Compared::Guard);
        assert!(
            line.as_deref()
                .is_some_and(|l| l.ends_with("not used: GUARD_WARN false (here true)")),
            "{line:?}"
        );
        let (used, line) = service_rules(&own, None, Compared::Guard);
        assert_eq!(used.guard.min_volume, 100);
        assert!(line.is_some_and(|l| l.contains("no `bouncer serve` has recorded")));
    }
}
