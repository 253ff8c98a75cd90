//! Acting at SES itself (SPEC §10), so that a sender that forgets to read
//! bouncer's pause or list is stopped all the same:
//!
//! - the pause: every pause and resume writes an intent per target
//!   (`store::ses`, in the transition's transaction); the worker carries it
//!   out with `PutAccountSendingAttributes` or
//!   `PutConfigurationSetSendingOptions` and retries until SES confirms;
//! - the list: triggers on `suppressions` queue each change in an outbox
//!   (`store::ses_push`); the worker puts or deletes the address on the SES
//!   account-level suppression list, rate-limited, with backoff;
//! - `import`: the SES list read back into bouncer's, and the difference;
//! - `check`: a dry call of each API in use, naming missing permissions.
//!
//! One worker per `serve` process; leases make replicas share the work
//! so that each intent is carried out once.

pub mod check;
pub mod client;
pub mod import;
pub mod status;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::client::SesClient;
use crate::clock::Clock;
use crate::config::{ManualAs, Settings};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::ses::SendingTarget;

/// How suppressions are pushed to SES.
#[derive(Debug, Clone, Copy)]
pub struct PushPolicy {
    pub manual_as: ManualAs,
    /// The least time between two calls (from SES_PUSH_RATE_PER_SEC).
    pub interval: Duration,
}

/// The SES settings, checked when read.
#[derive(Debug, Clone)]
pub struct SesSettings {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    /// Where pauses are carried out (empty: SES_PAUSE_MODE=off).
    pub pause: Vec<SendingTarget>,
    /// `None`: SES_PUSH_SUPPRESSIONS=false.
    pub push: Option<PushPolicy>,
    pub retry_min: Duration,
    pub poll: Duration,
}

impl SesSettings {
    /// Refuses a mode that is on without what it needs, naming the setting.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<SesSettings> {
        let pause = crate::guard::pause_targets(settings)?;
        let region = settings
            .ses_region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned);
        if region.is_none() {
            if !pause.is_empty() {
                anyhow::bail!(
                    "SES_PAUSE_MODE={} needs SES_REGION (the AWS region of the SES account, e.g. eu-west-1)",
                    settings.ses_pause_mode.as_str()
                );
            }
            if settings.ses_push_suppressions {
                anyhow::bail!(
                    "SES_PUSH_SUPPRESSIONS=true needs SES_REGION (the AWS region of the SES account, e.g. eu-west-1)"
                );
            }
        }
        let rate = settings.ses_push_rate_per_sec;
        if !(rate.is_finite() && rate > 0.0) {
            anyhow::bail!("SES_PUSH_RATE_PER_SEC must be a number above 0, not {rate}");
        }
        Ok(SesSettings {
            region,
            endpoint: settings
                .ses_api_endpoint
                .clone()
                .filter(|e| !e.trim().is_empty()),
            pause,
            push: settings.ses_push_suppressions.then(|| PushPolicy {
                manual_as: settings.ses_push_manual_as,
                interval: Duration::from_secs_f64(1.0 / rate),
            }),
            retry_min: Duration::from_millis(settings.ses_retry_min_ms.max(1)),
            poll: Duration::from_millis(settings.ses_poll_ms.max(1)),
        })
    }

    /// Whether `serve` acts at SES at all.
    pub fn is_on(&self) -> bool {
        !self.pause.is_empty() || self.push.is_some()
    }

    /// A client for the configured region (`bouncer ses` needs one even
    /// when no mode is on).
    pub async fn client(
        &self,
        credentials: Option<aws_credential_types::Credentials>,
        sdk_retries: bool,
        metrics: Metrics,
    ) -> anyhow::Result<SesClient> {
        let region = self.region.as_deref().context(
            "SES_REGION is not set: it names the AWS region of the SES account (e.g. eu-west-1)",
        )?;
        Ok(SesClient::new(
            region,
            self.endpoint.as_deref(),
            credentials,
            sdk_retries,
            metrics,
        )
        .await)
    }
}

/// What `serve` does about SES: writes the settings into the database (the
/// push gate, the pause targets), says what the credentials allow, then
/// carries out intents and pushes until `stop`. With every mode off it
/// only turns the gate off and retires old targets.
pub fn spawn(
    store: Store,
    ses: SesSettings,
    credentials: Option<aws_credential_types::Credentials>,
    clock: Clock,
    metrics: Metrics,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let first_wait = ses.poll.min(Duration::from_secs(1));
        let written = crate::startup::until_written("the SES settings", &stop, first_wait, || {
            apply_settings(&store, &ses, &clock)
        })
        .await;
        if !written || !ses.is_on() {
            return;
        }
        // With every mode off, a database made again holds what this
        // process wrote (pushing off, no targets).
        let kept = crate::startup::keep_written(
            "the SES settings",
            &stop,
            crate::startup::KEPT_CHECK_EVERY,
            || async { Ok(store.ses_settings_written().await?) },
            || restore_settings(&store, &ses, &clock),
        );
        let client = match ses.client(credentials, false, metrics).await {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot act at SES");
                // What is queued meanwhile waits for a start that can.
                kept.await;
                return;
            }
        };
        let client = Arc::new(client);
        let worker = worker::Worker {
            store: store.clone(),
            client: client.clone(),
            ses: ses.clone(),
            clock: clock.clone(),
        };
        // The check's calls may take a while when SES is slow; a pause
        // does not wait for them (leases keep the two apart).
        tokio::join!(
            check::at_start_up(&store, &client, &ses, &clock, &stop),
            worker.run(stop.clone()),
            kept
        );
    })
}

/// Writes the settings again into a database that lost them: the pause
/// targets first, pushing last, since pushing's row is what says the
/// settings are there (a failure in between is tried again). With pushing
/// on, what the list changed while the triggers were off is queued too:
/// without it the suppressions made between the database's migration and
/// this would never reach SES.
async fn restore_settings(
    store: &Store,
    ses: &SesSettings,
    clock: &Clock,
) -> anyhow::Result<String> {
    store
        .reconcile_sending_targets(&ses.pause, true, clock.now())
        .await?;
    if ses.push.is_none() {
        store.set_ses_push(false, clock.now()).await?;
        return Ok("recorded them again".to_owned());
    }
    Ok(match store.restore_ses_push(clock.now()).await? {
        Some((puts, deletes)) => format!(
            "pushing to SES is on again; queued for SES what the list changed meanwhile: {puts} {}, {deletes} {}",
            if puts == 1 {
                "suppression"
            } else {
                "suppressions"
            },
            if deletes == 1 { "removal" } else { "removals" }
        ),
        None => "another bouncer serve wrote them back first".to_owned(),
    })
}

async fn apply_settings(store: &Store, ses: &SesSettings, clock: &Clock) -> anyhow::Result<()> {
    store.set_ses_push(ses.push.is_some(), clock.now()).await?;
    store
        .reconcile_sending_targets(&ses.pause, true, clock.now())
        .await?;
    if ses.is_on() {
        tracing::info!(
            region = ses.region.as_deref().unwrap_or("-"),
            pause = ?ses.pause.iter().map(SendingTarget::key).collect::<Vec<_>>(),
            push = ses.push.is_some(),
            "acting at SES"
        );
    }
    Ok(())
}
