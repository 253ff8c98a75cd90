//! Delivering admin alerts from the outbox (`store::alerts`): a worker per
//! process gives recent alerts a delivery on each channel this process has
//! (webhook, email), claims due deliveries, sends them, and marks them
//! delivered or due again with backoff. The channels are this process's:
//! an alert raised by a command run without any (a `bouncer pause` from a
//! shell) goes out from the `serve` that has them.

mod email;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Settings;
use crate::outbound::OutboundOverrides;
use crate::store::alerts::Alert;
use crate::store::{DbResult, Store};
use crate::time::Timestamp;

pub use self::email::EmailChannel;
pub use self::webhook::WebhookChannel;

/// The channels configured in the settings.
pub struct Channels {
    webhook: Option<WebhookChannel>,
    email: Option<EmailChannel>,
}

impl Channels {
    pub fn from_settings(
        settings: &Settings,
        outbound: &OutboundOverrides,
    ) -> anyhow::Result<Channels> {
        Ok(Channels {
            webhook: WebhookChannel::from_settings(settings, outbound)?,
            email: EmailChannel::from_settings(settings)?,
        })
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.webhook.is_some() {
            names.push("webhook");
        }
        if self.email.is_some() {
            names.push("email");
        }
        names
    }

    /// One attempt on `channel`, never longer than [`ATTEMPT_TIMEOUT`]: an
    /// SMTP server that takes the connection and then says nothing would
    /// otherwise hold the channel (and a shutdown) for ever.
    pub async fn send(&self, channel: &str, alert: &Alert, now: Timestamp) -> Result<(), String> {
        tokio::time::timeout(ATTEMPT_TIMEOUT, self.attempt(channel, alert, now))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())))
    }

    async fn attempt(&self, channel: &str, alert: &Alert, now: Timestamp) -> Result<(), String> {
        match channel {
            "webhook" => match &self.webhook {
                Some(w) => w.send(alert, now).await,
                None => Err("no ALERT_WEBHOOK_URL is configured".into()),
            },
            "email" => match &self.email {
                Some(e) => e.send(alert).await,
                None => Err("SMTP_HOST and ALERT_EMAILS are not configured".into()),
            },
            other => Err(format!("unknown alert channel `{other}`")),
        }
    }
}

/// Doubles from `min` per attempt, up to an hour.
fn backoff(min: Duration, attempts: i64) -> Duration {
    let factor =
        2u32.saturating_pow(u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20));
    min.saturating_mul(factor).min(Duration::from_secs(3600))
}

/// A claimed delivery is another process's to retry after this; longer
/// than an attempt may take.
const LEASE: time::Duration = time::Duration::seconds(60);
/// The longest one delivery attempt may take (the webhook's own time-out is
/// 10 s, SMTP's 15 s for each step).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(500);
/// A channel configured later delivers the alerts of the last week: older
/// ones would be news of a past incident, not an alert.
const BACKFILL: time::Duration = time::Duration::days(7);

/// Delivers due alerts until `stop` is cancelled: each channel in a loop
/// of its own, so that a webhook or an SMTP server that hangs holds back
/// neither the other channel nor a shutdown.
pub fn spawn_worker(
    store: Store,
    channels: Arc<Channels>,
    clock: Clock,
    retry_min: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let loops = channels
            .names()
            .into_iter()
            .map(|name| channel_loop(&store, &channels, name, &clock, retry_min, &stop));
        futures_util::future::join_all(loops).await;
    })
}

async fn channel_loop(
    store: &Store,
    channels: &Channels,
    name: &str,
    clock: &Clock,
    retry_min: Duration,
    stop: &CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(POLL) => {}
        }
        // A shutdown does not wait for a slow channel: a delivery cut
        // short stays claimed until its lease ends, and is tried again.
        tokio::select! {
            _ = stop.cancelled() => break,
            result = deliver_due(store, channels, name, clock, retry_min) => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, channel = name, "alert worker cannot reach the database; retrying");
                }
            }
        }
    }
}

/// Plans this channel's deliveries of recent alerts and sends those due.
async fn deliver_due(
    store: &Store,
    channels: &Channels,
    name: &str,
    clock: &Clock,
    retry_min: Duration,
) -> DbResult<()> {
    let now = clock.now();
    store
        .plan_deliveries(name, now.saturating_sub(BACKFILL), now)
        .await?;
    if !store.deliveries_due(clock.now()).await? {
        return Ok(());
    }
    // One after another within the channel.
    while let Some(claim) = store.claim_delivery(&[name], clock.now(), LEASE).await? {
        let Some(alert) = store.alert(claim.alert_id).await? else {
            continue;
        };
        match channels.send(&claim.channel, &alert, clock.now()).await {
            Ok(()) => {
                tracing::info!(alert = alert.id, channel = %claim.channel, attempts = claim.attempts, "alert delivered");
                store.delivery_done(claim.id, clock.now()).await?;
            }
            Err(why) => {
                let delay = backoff(retry_min, claim.attempts);
                tracing::warn!(alert = alert.id, channel = %claim.channel, attempts = claim.attempts, error = %why, retry_in_ms = delay.as_millis() as u64, "alert delivery failed");
                let retry_at = clock.now().saturating_add(
                    time::Duration::try_from(delay).unwrap_or(time::Duration::HOUR),
                );
                store.delivery_failed(claim.id, &why, retry_at).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let min = Duration::from_secs(5);
        assert_eq!(backoff(min, 1), Duration::from_secs(5));
        assert_eq!(backoff(min, 2), Duration::from_secs(10));
        assert_eq!(backoff(min, 4), Duration::from_secs(40));
        assert_eq!(backoff(min, 40), Duration::from_secs(3600));
    }
}
