//! The guard's settings as `serve` records them in the database
//! (`guard_settings`), so that `bouncer status`, run from a shell that
//! lacks the service's `GUARD_*` settings, reports with the thresholds the
//! service acts on. Percentages are kept as exact parts per million.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{GuardPolicy, Ppm};
use crate::clock::Clock;
use crate::store::Store;

/// The window and thresholds of a `GuardPolicy` (its SES targets are not
/// the guard's to record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPolicy {
    pub window_sends: i64,
    pub max_age_days: i64,
    pub min_volume: i64,
    pub bounce_pause_ppm: i64,
    pub complaint_pause_ppm: i64,
    pub bounce_warn_ppm: Option<i64>,
    pub complaint_warn_ppm: Option<i64>,
}

impl RecordedPolicy {
    pub fn of(policy: &GuardPolicy) -> RecordedPolicy {
        RecordedPolicy {
            window_sends: policy.window_sends,
            max_age_days: policy.max_age.whole_days(),
            min_volume: policy.min_volume,
            bounce_pause_ppm: policy.bounce_pause.0,
            complaint_pause_ppm: policy.complaint_pause.0,
            bounce_warn_ppm: policy.bounce_warn.map(|p| p.0),
            complaint_warn_ppm: policy.complaint_warn.map(|p| p.0),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads what `to_json` wrote; `None` for anything else (a row written
    /// by hand), which `status` then says it could not use.
    pub fn from_json(json: &str) -> Option<RecordedPolicy> {
        let r: RecordedPolicy = serde_json::from_str(json).ok()?;
        let ppm = |v: i64| (0..=1_000_000).contains(&v);
        let sane = r.window_sends >= 1
            && (1..=36_500).contains(&r.max_age_days)
            && r.min_volume >= 0
            && ppm(r.bounce_pause_ppm)
            && ppm(r.complaint_pause_ppm)
            && r.bounce_warn_ppm.is_none_or(ppm)
            && r.complaint_warn_ppm.is_none_or(ppm);
        sane.then_some(r)
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

/// `serve`'s part: records `policy` as the service's once the database
/// takes it.
pub fn spawn_recorder(
    store: Store,
    policy: &GuardPolicy,
    clock: Clock,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let recorded = RecordedPolicy::of(policy);
    tokio::spawn(async move {
        crate::startup::until_written(
            "the guard's settings",
            &stop,
            Duration::from_secs(1),
            || record(&store, &recorded, &clock),
        )
        .await;
    })
}

/// Writes `recorded`, and says so when it replaces other settings: after
/// a change and a restart that is expected, but replicas of one database
/// running with different thresholds would not agree on when to pause.
async fn record(store: &Store, recorded: &RecordedPolicy, clock: &Clock) -> anyhow::Result<()> {
    let json = recorded.to_json();
    let before = store.record_guard_settings(&json, clock.now()).await?;
    if let Some((old, at)) = before
        && RecordedPolicy::from_json(&old).as_ref() != Some(recorded)
    {
        tracing::warn!(
            before = %old,
            recorded_at = %at,
            now = %json,
            "the guard's settings differ from those the last `bouncer serve` on this database recorded: any replica still running with those would pause at other lines; `bouncer status` now reports with these"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_survives_the_round_trip_and_garbage_is_refused() {
        let policy = GuardPolicy {
            window_sends: 1_000,
            max_age: time::Duration::days(7),
            min_volume: 100,
            bounce_pause: Ppm(50_000),
            complaint_pause: Ppm(1_000),
            bounce_warn: None,
            complaint_warn: Some(Ppm(500)),
            ses_pause: Vec::new(),
        };
        let recorded = RecordedPolicy::of(&policy);
        let back = RecordedPolicy::from_json(&recorded.to_json()).expect("reads its own");
        assert_eq!(back, recorded);
        let applied = back.applied_to(&policy);
        assert_eq!(RecordedPolicy::of(&applied), recorded);
        assert_eq!(applied.max_age, policy.max_age);
        assert_eq!(RecordedPolicy::from_json("{}"), None);
        assert_eq!(RecordedPolicy::from_json("not json"), None);
        let negative = recorded
            .to_json()
            .replace("\"window_sends\":1000", "\"window_sends\":0");
        assert_eq!(RecordedPolicy::from_json(&negative), None);
    }
}
