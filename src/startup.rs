//! What `serve` writes into the database at start-up (the SES settings,
//! the guard's settings). The database may be down, or not migrated yet,
//! when the service starts: it keeps SNS's messages in the spool meanwhile,
//! and these writes are tried again, waiting longer each time, until the
//! database takes them or the service stops. Once written they are kept:
//! a database dropped and made again under a running `serve` gets them
//! back within [`KEPT_CHECK_EVERY`].

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `write` until it succeeds (true) or `stop` is cancelled (false),
/// first waiting `wait` between tries, doubled each time up to 30 s.
pub async fn until_written<F, Fut>(
    what: &str,
    stop: &CancellationToken,
    mut wait: Duration,
    mut write: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    loop {
        match write().await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot write {what} to the database yet; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return false,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// How often `serve` looks whether the database still holds what it wrote
/// at start-up: two one-row reads. Short, because what the settings switch
/// (pushing to SES) is off in a database made again until they are back.
pub const KEPT_CHECK_EVERY: Duration = Duration::from_secs(2);

/// After [`until_written`]: every `every`, asks `present` whether the
/// database still holds `what`, and when it does not (a database dropped
/// and made again, then migrated, under a running `serve` holds only the
/// migrations' defaults) writes it again with `restore`, which says what
/// it did. A database that cannot be read is left to the writer and
/// `/readyz`, which report it. Ends when `stop` is cancelled.
pub async fn keep_written<P, PFut, R, RFut>(
    what: &str,
    stop: &CancellationToken,
    every: Duration,
    mut present: P,
    mut restore: R,
) where
    P: FnMut() -> PFut,
    PFut: Future<Output = anyhow::Result<bool>>,
    R: FnMut() -> RFut,
    RFut: Future<Output = anyhow::Result<String>>,
{
    // Longer, as for the first write, while a write-back keeps failing.
    let mut wait = every;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if !matches!(present().await, Ok(false)) {
            wait = every;
            continue;
        }
        match restore().await {
            Ok(done) => {
                wait = every;
                tracing::warn!(
                    "the database no longer held {what} this `bouncer serve` wrote at start-up (was it dropped and made again?): {done}"
                );
            }
            Err(e) => {
                wait = (wait * 2).min(Duration::from_secs(30));
                tracing::warn!(
                    error = %format!("{e:#}"),
                    "the database no longer holds {what} this `bouncer serve` wrote at start-up, and they cannot be written again yet; retrying"
                );
            }
        }
    }
}
