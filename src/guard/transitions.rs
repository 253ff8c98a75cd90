//! The guard's transitions and their alerts, each written in the
//! transaction of its cause: an automatic pause or warning in the batch that
//! pushed a rate over its line, a pause or resume by hand in its own. With
//! SES pausing on, the intent for SES is written with each pause and resume.

use super::{GuardPolicy, Rates, counted, decide, hour_of, rates_for, rates_matter};
use crate::clock::Clock;
use crate::store::alerts::{AlertDraft, enqueue};
use crate::store::guard::{
    Counts, PauseRecord, add_to_baseline, guard_state, mark_warned, pause_automatically,
    pause_by_hand, rearm_warning, resume,
};
use crate::store::ses::record_sending_intent;
use crate::store::{DbResult, Store, Tx};
use crate::time::Timestamp;

fn percent(rate: f64) -> String {
    format!("{:.3}%", rate * 100.0)
}

fn details(rates: &Rates, policy: &GuardPolicy) -> serde_json::Value {
    serde_json::json!({
        "bounce_rate": rates.bounce_rate,
        "complaint_rate": rates.complaint_rate,
        "sends": rates.sends,
        "hard_bounces": rates.hard_bounces,
        "complaints": rates.complaints,
        "window_start": rates.window_start,
        "bounce_pause_percent": policy.bounce_pause.percent(),
        "complaint_pause_percent": policy.complaint_pause.percent(),
    })
}

fn summary(rates: &Rates) -> String {
    format!(
        "bounce rate {} ({}), complaint rate {} ({}), over the last {}",
        percent(rates.bounce_rate),
        counted(rates.hard_bounces, "hard bounce", "hard bounces"),
        percent(rates.complaint_rate),
        counted(rates.complaints, "complaint", "complaints"),
        counted(rates.sends, "send", "sends")
    )
}

/// Re-reads the rates inside `tx`, with the state row locked so that
/// concurrent batches on any replica check one at a time and each sees what
/// the others committed, and makes the transitions they call for: at most
/// one pause, one warning per crossing.
/// `counted` is what the batch added to the hour of `now`.
pub async fn check(
    tx: &mut Tx<'_>,
    policy: &GuardPolicy,
    now: Timestamp,
    counted: Counts,
) -> DbResult<()> {
    let mut state = guard_state(tx, true).await?;
    // A resume committed between this batch's write of its hour and this
    // lock: the batch's messages came before it (`now` is earlier), but the
    // resume read its hour's baseline without them. They go into the
    // baseline now, so that the new window counts only what came after.
    if state.counting_since > now
        && hour_of(state.counting_since) == hour_of(now)
        && !counted.is_zero()
    {
        add_to_baseline(tx, counted).await?;
        state.baseline.add(counted);
    }
    if !rates_matter(state.paused, state.warned) {
        return Ok(());
    }
    let rates = rates_for(tx, policy, now, &state).await?;
    let decision = decide(&rates, policy, state.paused, state.warned);
    if decision.pause {
        let reason = format!("rates above the pause thresholds: {}", summary(&rates));
        let record = PauseRecord {
            reason: &reason,
            bounce_rate: rates.bounce_rate,
            complaint_rate: rates.complaint_rate,
            sends: rates.sends,
            hard_bounces: rates.hard_bounces,
            complaints: rates.complaints,
        };
        if pause_automatically(tx, &record, now).await? {
            record_sending_intent(tx, &policy.ses_pause, false, now).await?;
            let draft = AlertDraft {
                kind: "paused",
                subject: "bouncer paused sending".into(),
                text: format!(
                    ":rotating_light: bouncer paused sending: {}. Thresholds: bounce {}%, complaint {}%. Resume with `bouncer resume --by NAME --reason WHY` once the cause is fixed.",
                    summary(&rates),
                    policy.bounce_pause.percent(),
                    policy.complaint_pause.percent()
                ),
                details: details(&rates, policy),
            };
            enqueue(tx, &draft, now).await?;
        }
    } else if decision.warn {
        if mark_warned(tx, now).await? {
            let draft = AlertDraft {
                kind: "warning",
                subject: "bouncer warning: sending reputation at risk".into(),
                text: format!(
                    ":warning: bouncer warning: {}. Sending pauses above bounce {}% or complaint {}%.",
                    summary(&rates),
                    policy.bounce_pause.percent(),
                    policy.complaint_pause.percent()
                ),
                details: details(&rates, policy),
            };
            enqueue(tx, &draft, now).await?;
        }
    } else if decision.rearm_warning {
        rearm_warning(tx).await?;
    }
    Ok(())
}

/// Pauses or resumes by hand, recorded with who and why, with an alert. A
/// resume starts counting afresh: the events behind the last pause do not
/// pause again. Returns false when the state was already that.
pub async fn set_sending(
    store: &Store,
    policy: &GuardPolicy,
    paused: bool,
    by: &str,
    reason: &str,
    clock: &Clock,
) -> DbResult<bool> {
    let mut conn = store.conn().await?;
    let mut tx = conn.begin().await?;
    // The time is read once the row is held: every batch that committed
    // before is then earlier than the resume, as its counts in the
    // baseline say, and every batch that commits after sees the resume.
    guard_state(&mut tx, true).await?;
    let now = clock.now();
    let changed = if paused {
        pause_by_hand(&mut tx, by, reason, now).await?
    } else {
        resume(&mut tx, by, reason, now, hour_of(now)).await?
    };
    if changed {
        record_sending_intent(&mut tx, &policy.ses_pause, !paused, now).await?;
        let draft = if paused {
            AlertDraft {
                kind: "paused",
                subject: "bouncer: sending paused by hand".into(),
                text: format!(":octagonal_sign: Sending paused by {by}: {reason}"),
                details: serde_json::json!({ "by": by, "reason": reason }),
            }
        } else {
            AlertDraft {
                kind: "resumed",
                subject: "bouncer: sending resumed".into(),
                text: format!(
                    ":white_check_mark: Sending resumed by {by}: {reason}. Rates count afresh from now."
                ),
                details: serde_json::json!({ "by": by, "reason": reason }),
            }
        };
        enqueue(&mut tx, &draft, now).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_counts_one_in_the_singular() {
        let rates = |sends, hard_bounces, complaints| Rates {
            sends,
            hard_bounces,
            complaints,
            bounce_rate: 1.0,
            complaint_rate: 1.0,
            window_start: None,
            counting_since: Timestamp::from_unix_millis(0).expect("epoch"),
            enough_volume: true,
            volume_known: true,
        };
        assert_eq!(
            summary(&rates(1, 1, 1)),
            "bounce rate 100.000% (1 hard bounce), complaint rate 100.000% (1 complaint), over the last 1 send"
        );
        assert_eq!(
            summary(&rates(2, 0, 2)),
            "bounce rate 100.000% (0 hard bounces), complaint rate 100.000% (2 complaints), over the last 2 sends"
        );
    }
}
