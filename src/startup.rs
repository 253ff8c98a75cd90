//! What `serve` writes into the database at start-up (the SES settings,
//! the guard's settings). The database may be down, or not migrated yet,
//! when the service starts: it keeps SNS's messages in the spool meanwhile,
//! and these writes are tried again, waiting longer each time, until the
//! database takes them or the service stops.

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
