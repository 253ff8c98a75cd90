//! The writer: one task per process that owns every SNS-message write.
//!
//! Requests hand it verified messages and wait. It takes whatever has queued
//! up (up to `WRITE_BATCH_MAX`) and commits it in one transaction, so that
//! concurrent messages share one fsync while each stays atomic (group
//! commit). When the database cannot be reached it appends the batch to the
//! spool instead (one fsync), and while the spool holds anything, new
//! messages go behind it, so that the spool is applied in order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::messages::{Accepted, Content};
use super::{Applied, Store, is_unavailable};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::sns::confirm::{ConfirmMode, Confirmed};
use crate::sns::verify::VerifiedMessage;
use crate::spool::{Spool, SpoolRecord};
use crate::telemetry::escaped;

/// What became of a message handed to the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Committed to the database.
    Applied(Applied),
    /// Durably in the local spool; it reaches the database later.
    Spooled,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Neither the database nor the spool could take it: SNS should retry.
    #[error("{0}")]
    Unavailable(String),
    /// The database refused this message for a reason a retry will not cure.
    #[error("{0}")]
    Failed(String),
}

type Reply = oneshot::Sender<Result<Written, WriteError>>;

struct Job {
    accepted: Accepted,
    reply: Reply,
}

#[derive(Clone)]
pub struct Writer {
    sender: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task; it ends when every `Writer` clone is dropped
    /// and the queue is empty.
    /// `migrated`: the schema is known to be current (false when start-up
    /// could not migrate because the database was down).
    pub fn start(
        store: Store,
        spool: Spool,
        clock: Clock,
        batch_max: usize,
        metrics: Metrics,
        migrated: bool,
    ) -> (Writer, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(batch_max.max(1) * 4);
        let task = WriterTask {
            store,
            spool: Arc::new(Mutex::new(spool)),
            clock,
            batch_max: batch_max.max(1),
            metrics,
            retry_delay: MIN_RETRY,
            migrated,
        };
        let handle = tokio::spawn(task.run(receiver));
        (Writer { sender }, handle)
    }

    /// Hands over a message whose content was parsed by the caller (on the
    /// request's worker, not on the single writer task).
    pub async fn write(&self, accepted: Accepted) -> Result<Written, WriteError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { accepted, reply };
        self.sender
            .send(job)
            .await
            .map_err(|_| WriteError::Unavailable("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| WriteError::Unavailable("the writer stopped before answering".into()))?
    }
}

const MIN_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

struct WriterTask {
    store: Store,
    spool: Arc<Mutex<Spool>>,
    clock: Clock,
    batch_max: usize,
    metrics: Metrics,
    retry_delay: Duration,
    migrated: bool,
}

impl WriterTask {
    async fn run(mut self, mut receiver: mpsc::Receiver<Job>) {
        loop {
            let pending = self.spool_has_pending();
            let first = if pending {
                tokio::select! {
                    job = receiver.recv() => job,
                    _ = tokio::time::sleep(self.retry_delay) => {
                        self.drain_spool().await;
                        continue;
                    }
                }
            } else {
                receiver.recv().await
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < self.batch_max {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if pending {
                self.spool_jobs(batch).await;
                self.drain_spool().await;
            } else if !self.schema_ready().await {
                self.spool_jobs(batch).await;
            } else {
                self.write_batch(batch).await;
            }
        }
        // Shutting down: one last chance to empty the spool.
        if self.spool_has_pending() {
            self.drain_spool().await;
        }
    }

    /// Counts what a committed message did, and says loudly when a feed
    /// stopped.
    fn after_commit(&self, accepted: &Accepted, applied: &Applied) {
        self.metrics.applied(applied);
        if applied.unsubscribed {
            tracing::error!(
                topic = %escaped(accepted.message.topic_arn()),
                "UnsubscribeConfirmation: the SNS subscription was deleted and bouncer receives no more feedback from this topic; resubscribe the endpoint"
            );
        }
    }

    fn spool_has_pending(&self) -> bool {
        self.spool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .has_pending()
    }

    async fn write_batch(&mut self, batch: Vec<Job>) {
        self.metrics.observe_batch(batch.len());
        let refs: Vec<&Accepted> = batch.iter().map(|j| &j.accepted).collect();
        match self.store.apply_batch(&refs, self.clock.now()).await {
            Ok(applied) => {
                for (job, applied) in batch.into_iter().zip(applied) {
                    self.after_commit(&job.accepted, &applied);
                    let _ = job.reply.send(Ok(Written::Applied(applied)));
                }
            }
            Err(e) if is_unavailable(&e) => {
                tracing::warn!(error = %e, messages = batch.len(), "database unavailable; spooling");
                self.spool_jobs(batch).await;
            }
            Err(e) => {
                // One message may be poison: apply them one by one so that
                // only that one fails.
                tracing::warn!(error = %e, "batch failed; retrying its messages one by one");
                self.write_one_by_one(batch).await;
            }
        }
    }

    async fn write_one_by_one(&mut self, batch: Vec<Job>) {
        let mut jobs = batch.into_iter();
        while let Some(job) = jobs.next() {
            match self
                .store
                .apply_batch(&[&job.accepted], self.clock.now())
                .await
            {
                Ok(mut applied) => {
                    let result = applied
                        .pop()
                        .inspect(|a| self.after_commit(&job.accepted, a))
                        .map(Written::Applied)
                        .ok_or_else(|| WriteError::Failed("no result".into()));
                    let _ = job.reply.send(result);
                }
                Err(e) if is_unavailable(&e) => {
                    let mut rest = vec![job];
                    rest.extend(jobs);
                    self.spool_jobs(rest).await;
                    return;
                }
                Err(e) => {
                    tracing::error!(
                        message_id = %escaped(job.accepted.message.message_id()),
                        error = %e,
                        "message cannot be stored"
                    );
                    let _ = job.reply.send(Err(WriteError::Failed(e.to_string())));
                }
            }
        }
    }

    /// Appends the jobs' messages to the spool (one fsync) and answers them.
    async fn spool_jobs(&mut self, batch: Vec<Job>) {
        let records: Vec<SpoolRecord> = batch
            .iter()
            .map(|j| {
                let confirmed = match &j.accepted.content {
                    Content::SubscriptionConfirmation { confirmed: Some(c) } => Some(c),
                    _ => None,
                };
                SpoolRecord {
                    received_at: j.accepted.message.received_at(),
                    body: j.accepted.message.raw_body().to_owned(),
                    confirmed_mode: confirmed.map(|c| c.mode.as_str().to_owned()),
                    subscription_arn: confirmed.and_then(|c| c.subscription_arn.clone()),
                }
            })
            .collect();
        let spool = self.spool.clone();
        let appended = tokio::task::spawn_blocking(move || {
            spool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(&records)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        match appended {
            Ok(()) => {
                self.metrics.spooled(batch.len());
                for job in batch {
                    let _ = job.reply.send(Ok(Written::Spooled));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "spool write failed; answering 503 so SNS retries");
                for job in batch {
                    let _ = job.reply.send(Err(WriteError::Unavailable(format!(
                        "database and spool unavailable: {e}"
                    ))));
                }
            }
        }
    }

    /// Applies one chunk of spooled messages, in order. On a database
    /// failure it backs off and leaves the rest for the next try.
    /// Migrates first if start-up could not: applying messages (above all
    /// spooled ones) to an old schema would fail them for good.
    async fn schema_ready(&mut self) -> bool {
        if !self.migrated {
            match self.store.migrate().await {
                Ok(()) => {
                    tracing::info!("database migrated");
                    self.migrated = true;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "database not migrated yet; messages wait in the spool")
                }
            }
        }
        self.migrated
    }

    /// Keeps a spooled message the database refuses for good (not an
    /// outage) in `<SPOOL_PATH>.rejected`, one JSON line each, fsynced: it
    /// was acknowledged, so it is never dropped.
    async fn quarantine(&self, one: &Accepted, error: &str) -> std::io::Result<std::path::PathBuf> {
        let path = {
            let spool = self.spool.lock().unwrap_or_else(|e| e.into_inner());
            std::path::PathBuf::from(format!("{}.rejected", spool.path().display()))
        };
        let line = serde_json::json!({
            "error": error,
            "received_at": one.message.received_at(),
            "body": one.message.raw_body(),
        })
        .to_string();
        let target = path.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&target)?;
            file.write_all(line.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_data()
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(path)
    }

    async fn drain_spool(&mut self) {
        if !self.schema_ready().await {
            self.back_off();
            return;
        }
        let spool = self.spool.clone();
        let max = self.batch_max;
        let chunk = tokio::task::spawn_blocking(move || {
            spool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read_pending(max)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        let (records, next) = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool");
                self.back_off();
                return;
            }
        };
        let mut accepted = Vec::with_capacity(records.len());
        for record in records {
            match VerifiedMessage::from_spool(record.body, record.received_at) {
                Ok(message) => {
                    let mut one = Accepted::new(message, true);
                    if let (Content::SubscriptionConfirmation { confirmed }, Some(mode)) =
                        (&mut one.content, record.confirmed_mode.as_deref())
                    {
                        *confirmed = <ConfirmMode as clap::ValueEnum>::from_str(mode, true)
                            .ok()
                            .map(|mode| Confirmed {
                                mode,
                                subscription_arn: record.subscription_arn.clone(),
                            });
                    }
                    accepted.push(one);
                }
                Err(e) => {
                    // The record passed its checksum, so this is a bug, not
                    // damage; it stays readable in the spool file's history.
                    tracing::error!(error = %e, "spool record is not an SNS message; skipped")
                }
            }
        }
        let refs: Vec<&Accepted> = accepted.iter().collect();
        match self.store.apply_batch(&refs, self.clock.now()).await {
            Ok(applied) => {
                for (one, a) in refs.iter().zip(&applied) {
                    self.after_commit(one, a);
                }
                self.retry_delay = MIN_RETRY;
                self.metrics.unspooled(refs.len());
                tracing::info!(messages = refs.len(), "applied spooled messages");
                self.finish_drained(next).await;
            }
            Err(e) if is_unavailable(&e) => {
                tracing::warn!(error = %e, "spooled messages wait: database still unavailable");
                self.back_off();
            }
            Err(e) => {
                // A record the database refuses for good must not block the
                // ones behind it: apply one by one, log the refused whole.
                tracing::warn!(error = %e, "spooled batch failed; applying one by one");
                for one in &accepted {
                    match self.store.apply_batch(&[one], self.clock.now()).await {
                        Ok(_) => {}
                        Err(e) if is_unavailable(&e) => {
                            self.back_off();
                            return;
                        }
                        Err(e) => match self.quarantine(one, &e.to_string()).await {
                            Ok(path) => tracing::error!(
                                message_id = %escaped(one.message.message_id()),
                                error = %e,
                                kept_in = %path.display(),
                                "spooled message refused by the database; moved out of the spool"
                            ),
                            Err(io) => {
                                tracing::error!(error = %io, "cannot write the spool's quarantine file; the spool waits");
                                self.back_off();
                                return;
                            }
                        },
                    }
                }
                self.finish_drained(next).await;
            }
        }
    }

    async fn finish_drained(&mut self, next: u64) {
        let spool = self.spool.clone();
        let marked = tokio::task::spawn_blocking(move || {
            spool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .mark_drained(next)
        })
        .await;
        match marked {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot truncate the drained spool"),
            Err(e) => tracing::error!(error = %e, "cannot truncate the drained spool"),
        }
    }

    fn back_off(&mut self) {
        self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY);
    }
}
