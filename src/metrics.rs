//! Prometheus metrics, rendered as text at `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    r#type: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    file: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SesLabels {
    r#type: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SesCallLabels {
    operation: String,
    outcome: String,
}

struct Inner {
    registry: Registry,
    ses_calls: Family<SesCallLabels, Counter>,
    ses_events: Family<SesLabels, Counter>,
    unrecognized: Counter,
    unsubscribed: Counter,
    sends_taken_back: Counter,
    suppressions: Counter,
    messages: Family<MessageLabels, Counter>,
    refusals: Family<ReasonLabels, Counter>,
    cert_cache: Family<EventLabels, Counter>,
    spool: Family<EventLabels, Counter>,
    spool_pending: Gauge,
    database_up: Gauge,
    tls_expiry: Family<FileLabels, Gauge>,
    sqlite_wal: Family<FileLabels, Gauge>,
    admin_refusals: Family<ReasonLabels, Counter>,
    set_aside: Counter,
    write_retries: Counter,
    log_dropped: Counter,
    batch_size: Histogram,
    batch_seconds: Histogram,
    wal_sync_seconds: Histogram,
    checkpoint_seconds: Histogram,
    latency: Histogram,
}

/// Cheap to clone; every clone feeds the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Buckets for a write that waits for the disk (a commit, an fsync).
const DISK_SECONDS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("bouncer");
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "sns_messages",
            "SNS messages answered, by Type and outcome",
            messages.clone(),
        );
        let refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "sns_refusals",
            "SNS messages refused, by error code",
            refusals.clone(),
        );
        let ses_events = Family::<SesLabels, Counter>::default();
        registry.register(
            "ses_events",
            "SES events applied, by event type and policy action",
            ses_events.clone(),
        );
        let unrecognized = Counter::default();
        registry.register(
            "unrecognized_messages",
            "Verified notifications whose content is not SES feedback bouncer understands (kept whole)",
            unrecognized.clone(),
        );
        let unsubscribed = Counter::default();
        registry.register(
            "feed_unsubscribed",
            "UnsubscribeConfirmations received: a feedback feed stopped",
            unsubscribed.clone(),
        );
        let sends_taken_back = Counter::default();
        registry.register(
            "sends_taken_back",
            "Sends counted before that SES later said were not sent (an OnAccountSuppressionList bounce or complaint, a Reject, a Rendering Failure), once each, whether or not a window of the rates still held them. Mostly mail sent to addresses on the SES account's suppression list",
            sends_taken_back.clone(),
        );
        let suppressions = Counter::default();
        registry.register(
            "suppressions_written",
            "Suppression rows created or refreshed by SES events",
            suppressions.clone(),
        );
        let cert_cache = Family::<EventLabels, Counter>::default();
        registry.register(
            "cert_cache",
            "Signing certificate look-ups: hit or fetch",
            cert_cache.clone(),
        );
        let spool = Family::<EventLabels, Counter>::default();
        registry.register(
            "spool_messages",
            "Messages written to and applied from the local spool",
            spool.clone(),
        );
        let spool_pending = Gauge::default();
        registry.register(
            "spool_pending_bytes",
            "Bytes of messages waiting in the local spool for the database",
            spool_pending.clone(),
        );
        let database_up = Gauge::default();
        registry.register(
            "database_up",
            "1 while the writer writes to the database and the database answered this scrape's reads in time; 0 while the writer spools or the reads failed",
            database_up.clone(),
        );
        // A family, so that a server without TLS shows no sample (a 0
        // would read as long expired to an alert on it).
        let tls_expiry = Family::<FileLabels, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate served from TLS_CERT_FILE expires, as Unix seconds",
            tls_expiry.clone(),
        );
        // A family for the same reason: no sample on PostgreSQL.
        let sqlite_wal = Family::<FileLabels, Gauge>::default();
        registry.register(
            "sqlite_wal_bytes",
            "Size of the SQLite write-ahead log, read at this scrape: it grows while a reader holds a transaction open",
            sqlite_wal.clone(),
        );
        let admin_refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "admin_refusals",
            "Admin requests answered 401: no token, or a token that is not one of API_TOKENS",
            admin_refusals.clone(),
        );
        let set_aside = Counter::default();
        registry.register(
            "set_aside_messages",
            "Verified messages the database refused, kept in the set-aside file for replay",
            set_aside.clone(),
        );
        let write_retries = Counter::default();
        registry.register(
            "write_retries",
            "Batches tried again at once after a serialization failure or a deadlock",
            write_retries.clone(),
        );
        let log_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines left out because standard output did not take them (a log reader stopped or too slow), read at this scrape",
            log_dropped.clone(),
        );
        let ses_calls = Family::<SesCallLabels, Counter>::default();
        registry.register(
            "ses_calls",
            "Calls to the SESv2 API, by operation and outcome (ok, throttled, unavailable, denied, refused, not_found)",
            ses_calls.clone(),
        );
        let batch_size =
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]);
        registry.register(
            "write_batch_size",
            "SNS messages per database commit",
            batch_size.clone(),
        );
        let batch_seconds = Histogram::new(DISK_SECONDS);
        registry.register(
            "write_batch_seconds",
            "Time to apply and commit one batch (one transaction)",
            batch_seconds.clone(),
        );
        let wal_sync_seconds = Histogram::new(DISK_SECONDS);
        registry.register(
            "wal_sync_seconds",
            "SQLite: time to make the write-ahead log durable (one fdatasync covering every batch committed since the last; their answers wait for it)",
            wal_sync_seconds.clone(),
        );
        let checkpoint_seconds = Histogram::new(DISK_SECONDS);
        registry.register(
            "sqlite_checkpoint_seconds",
            "SQLite: time of one checkpoint beside the writer (the write-ahead log copied into the database file, which is synced when the whole log was copied; also the cut of an oversized log while idle)",
            checkpoint_seconds.clone(),
        );
        let latency = Histogram::new([
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        registry.register(
            "sns_request_seconds",
            "Time to answer POST /sns",
            latency.clone(),
        );
        // Families whose labels are known in advance start at 0, so that a
        // dashboard shows 0 rather than "no data" until the first event.
        for event in ["hit", "fetch", "shared", "refusal_kept", "busy"] {
            let _ = cert_cache.get_or_create(&EventLabels {
                event: event.to_owned(),
            });
        }
        for event in ["spooled", "applied"] {
            let _ = spool.get_or_create(&EventLabels {
                event: event.to_owned(),
            });
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                ses_calls,
                ses_events,
                unrecognized,
                unsubscribed,
                sends_taken_back,
                suppressions,
                messages,
                refusals,
                cert_cache,
                spool,
                spool_pending,
                tls_expiry,
                sqlite_wal,
                admin_refusals,
                database_up,
                set_aside,
                write_retries,
                log_dropped,
                batch_size,
                batch_seconds,
                wal_sync_seconds,
                checkpoint_seconds,
                latency,
            }),
        }
    }

    pub fn message(&self, message_type: &str, outcome: &str) {
        self.inner
            .messages
            .get_or_create(&MessageLabels {
                r#type: message_type.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts what a committed message did.
    pub fn applied(&self, applied: &crate::ingest::Applied) {
        for (event_type, outcome) in applied.events.iter().filter(|(_, o)| o.applied) {
            self.inner
                .ses_events
                .get_or_create(&SesLabels {
                    r#type: event_type.clone(),
                    action: outcome.rule.action.as_str().to_owned(),
                })
                .inc();
            if outcome.suppressed {
                self.inner.suppressions.inc();
            }
        }
        if applied.unrecognized.is_some() {
            self.inner.unrecognized.inc();
        }
        if applied.unsubscribed {
            self.inner.unsubscribed.inc();
        }
    }

    pub fn sends_taken_back(&self, n: usize) {
        if n > 0 {
            self.inner.sends_taken_back.inc_by(n as u64);
        }
    }

    pub fn ses_call(&self, operation: &str, outcome: &str) {
        self.inner
            .ses_calls
            .get_or_create(&SesCallLabels {
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn refusal(&self, reason: &str) {
        self.inner
            .refusals
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn cert_cache(&self, event: &str) {
        self.event(&self.inner.cert_cache, event, 1);
    }

    pub fn spooled(&self, n: usize) {
        self.event(&self.inner.spool, "spooled", n);
    }

    pub fn unspooled(&self, n: usize) {
        self.event(&self.inner.spool, "applied", n);
    }

    pub fn spool_pending(&self, bytes: u64) {
        self.inner
            .spool_pending
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn admin_refused(&self, reason: &str) {
        self.inner
            .admin_refusals
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The served certificate's expiry (its file as the label).
    pub fn tls_expiry(&self, file: &std::path::Path, expires_at: i64) {
        set_for_file(&self.inner.tls_expiry, file, expires_at);
    }

    pub fn sqlite_wal(&self, file: &std::path::Path, bytes: u64) {
        set_for_file(
            &self.inner.sqlite_wal,
            file,
            i64::try_from(bytes).unwrap_or(i64::MAX),
        );
    }

    /// The log's size could not be read: no sample, rather than the last.
    pub fn no_sqlite_wal(&self) {
        self.inner.sqlite_wal.clear();
    }

    pub fn database_up(&self, up: bool) {
        self.inner.database_up.set(i64::from(up));
    }

    pub fn write_retry(&self) {
        self.inner.write_retries.inc();
    }

    pub fn set_aside(&self) {
        self.inner.set_aside.inc();
    }

    pub fn observe_commit(&self, seconds: f64) {
        self.inner.batch_seconds.observe(seconds);
    }

    pub fn observe_wal_sync(&self, seconds: f64) {
        self.inner.wal_sync_seconds.observe(seconds);
    }

    pub fn observe_checkpoint(&self, seconds: f64) {
        self.inner.checkpoint_seconds.observe(seconds);
    }

    pub fn observe_batch(&self, n: usize) {
        self.inner.batch_size.observe(n as f64);
    }

    pub fn observe_latency(&self, seconds: f64) {
        self.inner.latency.observe(seconds);
    }

    fn event(&self, family: &Family<EventLabels, Counter>, event: &str, n: usize) {
        family
            .get_or_create(&EventLabels {
                event: event.to_owned(),
            })
            .inc_by(n as u64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.inner.log_dropped.inner().store(
            crate::telemetry::log_lines_dropped(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            tracing::error!(error = %e, "cannot render metrics");
        }
        out
    }
}

/// A gauge's one sample, labelled with the file it is about (a file named
/// differently since replaces it).
fn set_for_file(family: &Family<FileLabels, Gauge>, file: &std::path::Path, value: i64) {
    family.clear();
    family
        .get_or_create(&FileLabels {
            file: file.display().to_string(),
        })
        .set(value);
}
