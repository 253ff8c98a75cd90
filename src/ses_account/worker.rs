//! The SES worker of one `serve` process: carries out due sending intents
//! first (a pause matters more than a backlog of pushes), then pushes one
//! suppression change per `SES_PUSH_RATE_PER_SEC` interval. Every failure
//! is recorded with its error and retried with backoff; a failed pause or
//! resume, and a refused push, raise an alert through the alert outbox in
//! the transaction that records them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::client::{FailureKind, SesClient, SesFailure};
use super::{PushPolicy, SesSettings};
use crate::address::EmailAddress;
use crate::clock::Clock;
use crate::config::ManualAs;
use crate::store::alerts::{AlertDraft, enqueue};
use crate::store::ses::{
    ClaimedIntent, SendingTarget, alerted_since, mark_sending_alerted, record_sending_failure,
};
use crate::store::ses_push::{ClaimedPush, PushEnd};
use crate::store::suppressions::Suppression;
use crate::store::{DbResult, Store};
use crate::time::Timestamp;

const LEASE: time::Duration = time::Duration::seconds(60);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Transient failures of one intent before its alert (refusals alert at once).
const ALERT_AFTER_ATTEMPTS: i64 = 3;
/// Refused pushes alert at most this often: one missing permission must not
/// raise one alert per address.
const PUSH_ALERT_EVERY: time::Duration = time::Duration::HOUR;

/// Doubles from `min` per attempt, up to five minutes.
pub fn backoff(min: Duration, attempts: i64) -> Duration {
    let factor =
        2u32.saturating_pow(u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20));
    min.saturating_mul(factor).min(MAX_BACKOFF)
}

fn later(now: Timestamp, delay: Duration) -> Timestamp {
    now.saturating_add(time::Duration::try_from(delay).unwrap_or(time::Duration::MINUTE))
}

/// The SES call a push comes down to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushPlan {
    Put(&'static str),
    Delete,
    Skip(&'static str),
}

/// What SES should have for an address, from bouncer's row (`None`: not
/// suppressed). Manual rows follow `SES_PUSH_MANUAL_AS`.
pub fn plan(row: Option<&Suppression>, manual_as: ManualAs) -> PushPlan {
    let Some(row) = row else {
        return PushPlan::Delete;
    };
    if row.source == "ses-account" {
        return PushPlan::Skip("came from the SES account-level list");
    }
    if row.bounce_subtype.as_deref() == Some("OnAccountSuppressionList") {
        return PushPlan::Skip("already on the SES account-level list");
    }
    match (row.reason.as_str(), manual_as) {
        ("bounce", _) | ("manual", ManualAs::Bounce) => PushPlan::Put("BOUNCE"),
        ("complaint", _) | ("manual", ManualAs::Complaint) => PushPlan::Put("COMPLAINT"),
        ("manual", ManualAs::None) => PushPlan::Skip("SES_PUSH_MANUAL_AS=none"),
        _ => PushPlan::Skip("a reason SES has no equivalent for"),
    }
}

fn describe(target: &SendingTarget, region: &str) -> String {
    match target {
        SendingTarget::Account => format!("the account in {region}"),
        SendingTarget::ConfigurationSet(name) => {
            format!("configuration set `{name}` in {region}")
        }
    }
}

fn hint(failure: &SesFailure) -> String {
    match failure.kind {
        FailureKind::Denied => format!(
            " The credentials lack ses:{}; `bouncer ses check` names what is missing.",
            failure.operation
        ),
        FailureKind::NotFound => {
            " SES does not know the target: check SES_CONFIGURATION_SETS and SES_REGION.".into()
        }
        _ => String::new(),
    }
}

pub(super) struct Worker {
    pub store: Store,
    pub client: Arc<SesClient>,
    pub ses: SesSettings,
    pub clock: Clock,
}

impl Worker {
    pub async fn run(self, stop: CancellationToken) {
        let targets: Vec<String> = self.ses.pause.iter().map(SendingTarget::key).collect();
        let mut next_push = Instant::now();
        loop {
            if let Err(e) = self.carry_out_intents(&targets).await {
                tracing::warn!(error = %e, "SES worker cannot reach the database; retrying");
            }
            let mut wait = self.ses.poll;
            if let Some(policy) = self.ses.push {
                if let Err(e) = self.store.fold_push_counts().await {
                    tracing::warn!(error = %e, "SES worker cannot fold the outbox counts; retrying");
                }
                let started = Instant::now();
                if started >= next_push {
                    match self.push_one(policy).await {
                        Ok(true) => {
                            next_push = started + policy.interval;
                            wait = next_push.saturating_duration_since(Instant::now());
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "SES worker cannot reach the database; retrying")
                        }
                    }
                } else {
                    wait = wait.min(next_push - started);
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn carry_out_intents(&self, targets: &[String]) -> DbResult<()> {
        if targets.is_empty() {
            return Ok(());
        }
        while self
            .store
            .sending_intents_due(targets, self.clock.now())
            .await?
        {
            let Some(intent) = self
                .store
                .claim_sending_intent(targets, self.clock.now(), LEASE)
                .await?
            else {
                break;
            };
            self.carry_out(&intent).await?;
        }
        Ok(())
    }

    async fn carry_out(&self, intent: &ClaimedIntent) -> DbResult<()> {
        let Some(target) = SendingTarget::from_key(&intent.target) else {
            // Only claimed when configured, so always a key this code wrote.
            return Ok(());
        };
        let enabled = intent.desired_enabled;
        match self.client.set_sending(&target, enabled).await {
            Ok(()) => {
                let done = self
                    .store
                    .sending_confirmed(&intent.target, intent.seq, enabled, self.clock.now())
                    .await?;
                tracing::info!(target = %intent.target, sending_enabled = enabled, attempts = intent.attempts, latest = done, "SES confirmed sending state");
                Ok(())
            }
            Err(failure) => self.sending_failed(intent, &target, &failure).await,
        }
    }

    async fn sending_failed(
        &self,
        intent: &ClaimedIntent,
        target: &SendingTarget,
        failure: &SesFailure,
    ) -> DbResult<()> {
        let now = self.clock.now();
        let delay = backoff(self.ses.retry_min, intent.attempts);
        let error = failure.to_string();
        tracing::warn!(target = %intent.target, sending_enabled = intent.desired_enabled, attempts = intent.attempts, error = %error, retry_in_ms = delay.as_millis() as u64, "SES did not confirm the sending state");
        let mut conn = self.store.conn().await?;
        let mut tx = conn.begin().await?;
        let recorded = record_sending_failure(
            &mut tx,
            &intent.target,
            intent.seq,
            &error,
            later(now, delay),
            now,
        )
        .await?;
        let refused = matches!(
            failure.kind,
            FailureKind::Denied | FailureKind::Refused | FailureKind::NotFound
        );
        if let Some(r) = recorded
            && r.seq == intent.seq
            && r.alerted_seq < r.seq
            && (refused || r.attempts >= ALERT_AFTER_ATTEMPTS)
        {
            let place = describe(target, self.client.region());
            let draft = if intent.desired_enabled {
                AlertDraft {
                    kind: "ses_resume_failed",
                    subject: "bouncer: SES has not resumed sending".into(),
                    text: format!(
                        ":warning: bouncer resumed sending, but SES has not enabled sending for {place} ({} attempts): {}. Mail through SES there is still held back; bouncer keeps retrying.{}",
                        r.attempts,
                        failure.detail,
                        hint(failure)
                    ),
                    details: serde_json::json!({ "target": intent.target, "sending_enabled": true, "error": error, "attempts": r.attempts }),
                }
            } else {
                AlertDraft {
                    kind: "ses_pause_failed",
                    subject: "bouncer could not pause sending at SES".into(),
                    text: format!(
                        ":rotating_light: bouncer paused sending, but SES has not paused {place} ({} attempts): {}. Until it does, a sender that does not read bouncer's pause keeps sending; bouncer keeps retrying.{}",
                        r.attempts,
                        failure.detail,
                        hint(failure)
                    ),
                    details: serde_json::json!({ "target": intent.target, "sending_enabled": false, "error": error, "attempts": r.attempts }),
                }
            };
            enqueue(&mut tx, &draft, now).await?;
            mark_sending_alerted(&mut tx, &intent.target, r.seq).await?;
        }
        tx.commit().await
    }

    /// Pushes the oldest due change, if any; whether a call was made
    /// (changes with nothing to do at SES are ended on the way).
    async fn push_one(&self, policy: PushPolicy) -> DbResult<bool> {
        loop {
            let now = self.clock.now();
            if !self.store.pushes_due(now).await? {
                return Ok(false);
            }
            let Some(claim) = self.store.claim_push(now, LEASE).await? else {
                return Ok(false);
            };
            let row = match EmailAddress::parse(&claim.email) {
                Ok(email) => self.store.suppression(&email).await?,
                Err(_) => None,
            };
            match plan(row.as_ref(), policy.manual_as) {
                PushPlan::Skip(why) => {
                    self.store
                        .push_ended(
                            &claim.email,
                            claim.seq,
                            PushEnd::Skipped,
                            Some(why),
                            None,
                            now,
                        )
                        .await?;
                }
                PushPlan::Put(reason) => {
                    self.push(&claim, Some(reason)).await?;
                    return Ok(true);
                }
                PushPlan::Delete => {
                    self.push(&claim, None).await?;
                    return Ok(true);
                }
            }
        }
    }

    /// Puts the address on the SES list with `put` as its reason, or
    /// deletes it from there (`None`).
    async fn push(&self, claim: &ClaimedPush, put: Option<&'static str>) -> DbResult<()> {
        let result = match put {
            Some(reason) => self.client.put_suppressed(&claim.email, reason).await,
            None => match self.client.delete_suppressed(&claim.email).await {
                // Not listed at SES: what a removal wants.
                Err(f) if f.kind == FailureKind::NotFound => Ok(()),
                other => other,
            },
        };
        let now = self.clock.now();
        match result {
            Ok(()) => {
                let sent = put.unwrap_or("deleted");
                // The audit first: whoever sees the push done (the counts
                // in `GET /v1/sending`) sees when SES followed. Stopped
                // between the two, the delete is done and stamped again.
                if put.is_none() {
                    self.store.stamp_ses_removal(&claim.email, now).await?;
                }
                self.store
                    .push_ended(
                        &claim.email,
                        claim.seq,
                        PushEnd::Done,
                        Some(sent),
                        None,
                        now,
                    )
                    .await?;
                tracing::info!(email = %claim.email, action = sent, attempts = claim.attempts, "SES suppression list updated");
            }
            Err(failure) => self.push_failed(claim, &failure, now).await?,
        }
        Ok(())
    }

    async fn push_failed(
        &self,
        claim: &ClaimedPush,
        failure: &SesFailure,
        now: Timestamp,
    ) -> DbResult<()> {
        let error = failure.to_string();
        tracing::warn!(email = %claim.email, action = %claim.action, attempts = claim.attempts, error = %error, "SES suppression list call failed");
        let kind = match failure.kind {
            FailureKind::Refused | FailureKind::NotFound => {
                // This request can never succeed: kept, counted, alerted.
                self.store
                    .push_ended(
                        &claim.email,
                        claim.seq,
                        PushEnd::Refused,
                        None,
                        Some(&error),
                        now,
                    )
                    .await?;
                "ses_push_refused"
            }
            FailureKind::Denied => {
                let retry_at = later(now, backoff(self.ses.retry_min, claim.attempts));
                self.store
                    .push_failed(&claim.email, claim.seq, &error, retry_at, now)
                    .await?;
                "ses_push_denied"
            }
            FailureKind::Throttled | FailureKind::Unavailable => {
                let retry_at = later(now, backoff(self.ses.retry_min, claim.attempts));
                return self
                    .store
                    .push_failed(&claim.email, claim.seq, &error, retry_at, now)
                    .await;
            }
        };
        let mut conn = self.store.conn().await?;
        let mut tx = conn.begin().await?;
        if !alerted_since(&mut tx, kind, now.saturating_sub(PUSH_ALERT_EVERY)).await? {
            let what = if claim.action == "delete" {
                format!("remove {} from", claim.email)
            } else {
                format!("put {} on", claim.email)
            };
            let after = if kind == "ses_push_denied" {
                "bouncer retries with backoff until the permission is granted."
            } else {
                "The address stays as it is in bouncer; this request is not retried. Refused pushes are counted in `bouncer status`."
            };
            let draft = AlertDraft {
                kind,
                subject: "bouncer: SES refused a suppression list change".into(),
                text: format!(
                    ":warning: SES refused to {what} the account-level suppression list: {}. {after}{} (At most one such alert an hour.)",
                    failure.detail,
                    hint(failure)
                ),
                details: serde_json::json!({ "email": claim.email, "action": claim.action, "error": error }),
            };
            enqueue(&mut tx, &draft, now).await?;
        }
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(reason: &str, source: &str, subtype: Option<&str>) -> Suppression {
        let at = Timestamp::from_unix_millis(0).expect("epoch");
        Suppression {
            email: "a@example.com".into(),
            reason: reason.into(),
            bounce_type: None,
            bounce_subtype: subtype.map(str::to_owned),
            complaint_feedback_type: None,
            diagnostic_code: None,
            first_seen_at: at,
            last_seen_at: at,
            event_count: 1,
            last_ses_message_id: None,
            last_sns_message_id: None,
            source: source.into(),
            note: None,
        }
    }

    #[test]
    fn the_push_rule() {
        let sns = "sns:arn:aws:sns:us-east-1:1:t";
        assert_eq!(plan(None, ManualAs::Bounce), PushPlan::Delete);
        assert_eq!(
            plan(Some(&row("bounce", sns, None)), ManualAs::None),
            PushPlan::Put("BOUNCE")
        );
        assert_eq!(
            plan(Some(&row("complaint", sns, None)), ManualAs::Bounce),
            PushPlan::Put("COMPLAINT")
        );
        assert_eq!(
            plan(Some(&row("manual", "cli:ops", None)), ManualAs::Bounce),
            PushPlan::Put("BOUNCE")
        );
        assert_eq!(
            plan(Some(&row("manual", "cli:ops", None)), ManualAs::Complaint),
            PushPlan::Put("COMPLAINT")
        );
        assert!(matches!(
            plan(Some(&row("manual", "cli:ops", None)), ManualAs::None),
            PushPlan::Skip(_)
        ));
        assert!(matches!(
            plan(Some(&row("bounce", "ses-account", None)), ManualAs::Bounce),
            PushPlan::Skip(_)
        ));
        assert!(matches!(
            plan(
                Some(&row("bounce", sns, Some("OnAccountSuppressionList"))),
                ManualAs::Bounce
            ),
            PushPlan::Skip(_)
        ));
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let min = Duration::from_secs(1);
        assert_eq!(backoff(min, 1), Duration::from_secs(1));
        assert_eq!(backoff(min, 3), Duration::from_secs(4));
        assert_eq!(backoff(min, 30), MAX_BACKOFF);
    }
}
