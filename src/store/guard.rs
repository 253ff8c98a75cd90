//! The guard's tables: hourly `rate_buckets`, the one-row `sending_state`,
//! and the transitions (pause, warning, resume) written in the transaction
//! of the events that caused them, with their alerts.

use futures_util::TryStreamExt;

use super::alerts::{AlertDraft, enqueue};
use super::{Store, Timestamp, Tx, on_tx};
use crate::guard::{Counts, GuardPolicy, Rates, decide, hour_of};

type WindowRow = (i64, i64, i64, i64, Option<Timestamp>);
type BucketRow = (Timestamp, i64, i64, i64, i64);
type StateRow = (String, Option<Timestamp>, Timestamp, i64, i64, i64, i64);

const ADD: &str = "INSERT INTO rate_buckets (bucket_start, sends, hard_bounces, complaints, delivery_sends) \
    VALUES ($1, $2, $3, $4, $5) \
    ON CONFLICT (bucket_start) DO UPDATE SET \
      sends = rate_buckets.sends + excluded.sends, \
      hard_bounces = rate_buckets.hard_bounces + excluded.hard_bounces, \
      complaints = rate_buckets.complaints + excluded.complaints, \
      delivery_sends = rate_buckets.delivery_sends + excluded.delivery_sends";
/// Everything since the cut-off, summed: for a sender whose window is not
/// full, this is the window (one pass over at most one row per hour of the
/// maximum age, inside the database).
const TOTALS: &str = "SELECT CAST(COALESCE(SUM(sends), 0) AS BIGINT), CAST(COALESCE(SUM(hard_bounces), 0) AS BIGINT), \
    CAST(COALESCE(SUM(complaints), 0) AS BIGINT), CAST(COALESCE(SUM(delivery_sends), 0) AS BIGINT), MIN(bucket_start) \
    FROM rate_buckets WHERE bucket_start >= $1";
/// Newest first, for a busy sender whose window fills within a few hours.
const NEWEST: &str = "SELECT bucket_start, sends, hard_bounces, complaints, delivery_sends FROM rate_buckets \
    WHERE bucket_start >= $1 ORDER BY bucket_start DESC";
const STATE: &str = "SELECT state, warned_at, counting_since, baseline_sends, baseline_hard_bounces, \
    baseline_complaints, baseline_delivery_sends FROM sending_state WHERE id = 1";

/// The pause state as the sender and the operator see it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct SendingState {
    pub state: String,
    pub changed_at: Timestamp,
    pub changed_by: String,
    pub reason: String,
    pub bounce_rate: Option<f64>,
    pub complaint_rate: Option<f64>,
    pub window_sends: Option<i64>,
    pub window_hard_bounces: Option<i64>,
    pub window_complaints: Option<i64>,
    pub counting_since: Timestamp,
    pub warned_at: Option<Timestamp>,
}

pub async fn add_counts(tx: &mut Tx, now: Timestamp, c: Counts) -> Result<(), sqlx::Error> {
    on_tx!(tx, conn => sqlx::query(ADD)
        .bind(hour_of(now))
        .bind(c.sends)
        .bind(c.hard_bounces)
        .bind(c.complaints)
        .bind(c.delivery_sends)
        .execute(conn)
        .await
        .map(|_| ()))
}

struct Current {
    paused: bool,
    warned: bool,
    rates: Rates,
}

async fn current(
    tx: &mut Tx,
    policy: &GuardPolicy,
    now: Timestamp,
) -> Result<Current, sqlx::Error> {
    let (state, warned_at, since, b_sends, b_bounces, b_complaints, b_delivery): StateRow =
        on_tx!(tx, conn => sqlx::query_as(STATE).fetch_one(conn).await)?;
    let cutoff = hour_of(now.saturating_sub(policy.max_age)).max(hour_of(since));
    // The resume hour's counts at the resume do not count.
    let baseline_hour = hour_of(since);
    let baseline = Counts {
        sends: b_sends,
        hard_bounces: b_bounces,
        complaints: b_complaints,
        delivery_sends: b_delivery,
    };
    let adjust = |start: Timestamp, c: Counts| {
        if start == baseline_hour {
            c.minus(baseline)
        } else {
            c
        }
    };
    let (sends, hard_bounces, complaints, delivery_sends, oldest): WindowRow =
        on_tx!(tx, conn => sqlx::query_as(TOTALS).bind(cutoff).fetch_one(conn).await)?;
    let mut total = Counts {
        sends,
        hard_bounces,
        complaints,
        delivery_sends,
    };
    if baseline_hour >= cutoff {
        total = total.minus(baseline);
    }
    let mut window_start = oldest;
    if total.sends > policy.window_sends {
        // The window is full: the newest buckets until it is, usually a few.
        total = Counts::default();
        on_tx!(tx, conn => {
            let mut rows = sqlx::query_as::<_, BucketRow>(NEWEST).bind(cutoff).fetch(conn);
            while let Some((start, s, h, c, d)) = rows.try_next().await? {
                let counts = adjust(start, Counts { sends: s, hard_bounces: h, complaints: c, delivery_sends: d });
                if counts.is_zero() {
                    continue;
                }
                total.add(counts);
                window_start = Some(start);
                if total.sends >= policy.window_sends {
                    break;
                }
            }
            Ok::<(), sqlx::Error>(())
        })?;
    }
    Ok(Current {
        paused: state == "paused",
        warned: warned_at.is_some(),
        rates: Rates::from_window(total, window_start, since, policy),
    })
}

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
        "bounce rate {} ({} hard bounces), complaint rate {} ({} complaints), over the last {} sends",
        percent(rates.bounce_rate),
        rates.hard_bounces,
        percent(rates.complaint_rate),
        rates.complaints,
        rates.sends
    )
}

/// Re-reads the rates inside `tx` and makes the transitions they call for:
/// at most one pause (the conditional UPDATE makes concurrent transactions
/// and replicas agree), one warning per crossing.
pub async fn check(
    tx: &mut Tx,
    policy: &GuardPolicy,
    channels: &[&'static str],
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    const PAUSE: &str = "UPDATE sending_state SET state = 'paused', changed_at = $1, changed_by = 'bouncer', \
        reason = $2, bounce_rate = $3, complaint_rate = $4, window_sends = $5, window_hard_bounces = $6, \
        window_complaints = $7 WHERE id = 1 AND state = 'active'";
    const WARN: &str = "UPDATE sending_state SET warned_at = $1 WHERE id = 1 AND warned_at IS NULL AND state = 'active'";
    const REARM: &str =
        "UPDATE sending_state SET warned_at = NULL WHERE id = 1 AND warned_at IS NOT NULL";
    let Current {
        paused,
        warned,
        rates,
    } = current(tx, policy, now).await?;
    let decision = decide(&rates, policy, paused, warned);
    if decision.pause {
        let reason = format!("rates above the pause thresholds: {}", summary(&rates));
        let changed = on_tx!(tx, conn => sqlx::query(PAUSE)
            .bind(now)
            .bind(&reason)
            .bind(rates.bounce_rate)
            .bind(rates.complaint_rate)
            .bind(rates.sends)
            .bind(rates.hard_bounces)
            .bind(rates.complaints)
            .execute(conn)
            .await?
            .rows_affected());
        if changed == 1 {
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
            enqueue(tx, &draft, channels, now).await?;
        }
    } else if decision.warn {
        let changed =
            on_tx!(tx, conn => sqlx::query(WARN).bind(now).execute(conn).await?.rows_affected());
        if changed == 1 {
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
            enqueue(tx, &draft, channels, now).await?;
        }
    } else if decision.rearm_warning {
        on_tx!(tx, conn => sqlx::query(REARM).execute(conn).await.map(|_| ()))?;
    }
    Ok(())
}

impl Store {
    /// The rates now: reads at most one bucket per hour of the maximum age.
    pub async fn current_rates(&self) -> Result<Rates, sqlx::Error> {
        let mut tx = self.begin_read().await?;
        let now = Timestamp::from_datetime(time::OffsetDateTime::now_utc());
        let current = current(&mut tx, &self.policy.guard, now).await?;
        Ok(current.rates)
    }

    pub async fn sending_state(&self) -> Result<SendingState, sqlx::Error> {
        const SQL: &str = "SELECT state, changed_at, changed_by, reason, bounce_rate, complaint_rate, window_sends, \
            window_hard_bounces, window_complaints, counting_since, warned_at FROM sending_state WHERE id = 1";
        super::on_db!(&self.db, pool => sqlx::query_as(SQL).fetch_one(pool).await)
    }

    /// Pauses or resumes by hand, recorded with who and why, with an alert.
    /// A resume starts counting afresh: the events behind the last pause do
    /// not pause again. Returns false when the state was already that.
    pub async fn set_sending(
        &self,
        paused: bool,
        by: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<bool, sqlx::Error> {
        const PAUSE: &str = "UPDATE sending_state SET state = 'paused', changed_at = $1, changed_by = $2, reason = $3 \
            WHERE id = 1 AND state = 'active'";
        const RESUME: &str = "UPDATE sending_state SET state = 'active', changed_at = $1, changed_by = $2, reason = $3, \
            counting_since = $1, warned_at = NULL, \
            baseline_sends = COALESCE((SELECT sends FROM rate_buckets WHERE bucket_start = $4), 0), \
            baseline_hard_bounces = COALESCE((SELECT hard_bounces FROM rate_buckets WHERE bucket_start = $4), 0), \
            baseline_complaints = COALESCE((SELECT complaints FROM rate_buckets WHERE bucket_start = $4), 0), \
            baseline_delivery_sends = COALESCE((SELECT delivery_sends FROM rate_buckets WHERE bucket_start = $4), 0) \
            WHERE id = 1 AND state = 'paused'";
        let mut tx = self.begin().await?;
        let changed = if paused {
            on_tx!(&mut tx, conn => sqlx::query(PAUSE).bind(now).bind(by).bind(reason).execute(conn).await?.rows_affected())
        } else {
            on_tx!(&mut tx, conn => sqlx::query(RESUME).bind(now).bind(by).bind(reason).bind(hour_of(now)).execute(conn).await?.rows_affected())
        } == 1;
        if changed {
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
            enqueue(&mut tx, &draft, &self.policy.alert_channels, now).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }
}
