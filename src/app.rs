//! Builds the running service from [`Settings`]: database, spool, writer,
//! certificate store, verifier, and the actix server on a listener. Tests
//! bind port 0 and get a real server.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;

use tokio_util::sync::CancellationToken;

use crate::alerts::{Channels, spawn_worker};
use crate::auth::ApiTokens;
use crate::clock::Clock;
use crate::config::Settings;
use crate::guard::GuardPolicy;
use crate::ingest::spool::Spool;
use crate::ingest::writer::Writer;
use crate::ingest::{ApplyPolicy, SoftBouncePolicy};
use crate::metrics::Metrics;
use crate::outbound::{OutboundOverrides, crypto_provider, http_client};
use crate::routes;
use crate::ses_account::SesSettings;
use crate::sns::cert::CertStore;
use crate::sns::confirm::Confirmer;
use crate::sns::verify::{Verifier, VerifierPolicy};
use crate::store::Store;

/// What only tests set, through this API and never through a setting.
#[derive(Clone, Default)]
pub struct Hooks {
    pub clock: Clock,
    pub outbound: OutboundOverrides,
    /// AWS credentials instead of the standard chain (tests run in parallel
    /// threads and cannot safely set process environment variables).
    pub aws_credentials: Option<aws_credential_types::Credentials>,
}

/// Shared by every request handler.
pub struct AppState {
    pub verifier: Verifier,
    pub writer: Writer,
    pub store: Store,
    pub guard: GuardPolicy,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    pub api_tokens: Arc<ApiTokens>,
    pub confirmer: Confirmer,
}

/// The parts of the pipeline without the HTTP server: what `serve` runs
/// behind actix and what `replay` runs directly.
pub struct Pipeline {
    pub state: Arc<AppState>,
    pub writer_task: JoinHandle<()>,
}

impl Pipeline {
    pub async fn build(settings: &Settings, hooks: &Hooks) -> anyhow::Result<Pipeline> {
        crate::outbound::install_default_provider();
        let store = Store::connect(settings).await?;
        let migrated = match store.migrate().await {
            Ok(()) => true,
            // SQLite failing here is a real error.
            Err(e) if store.is_sqlite() => return Err(e),
            // PostgreSQL may be down at start-up: the spool takes messages,
            // and the writer migrates before it applies anything.
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot migrate the database now; messages will be spooled");
                false
            }
        };
        let metrics = Metrics::new();
        let spool = Spool::open(&settings.spool_path)
            .with_context(|| format!("cannot open the spool {}", settings.spool_path.display()))?;
        if spool.has_pending() {
            tracing::warn!(path = %settings.spool_path.display(), "spool holds messages from before; applying them");
        }
        let client = http_client(
            &hooks.outbound,
            Duration::from_millis(settings.sns_cert_fetch_timeout_ms),
            true,
        )?;
        let certs = CertStore::new(
            &settings.sns_cert_pins,
            settings.sns_cert_cache_size,
            settings.sns_cert_max_bytes,
            client,
            metrics.clone(),
        )?;
        let allowed_topics: HashSet<String> = settings
            .sns_topic_arns
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        if settings.api_tokens.iter().all(|t| t.trim().is_empty()) {
            tracing::warn!("API_TOKENS is empty: the /v1 API answers direct loopback clients only");
        }
        if allowed_topics.is_empty() {
            tracing::warn!(
                "SNS_TOPIC_ARNS is empty: every SNS message will be refused (403 no_topic_configured)"
            );
        } else {
            tracing::info!(topics = ?allowed_topics, "accepting SNS messages from these topics");
        }
        let verifier = Verifier::new(
            VerifierPolicy {
                allowed_topics,
                require_v2: settings.sns_require_signature_v2,
                max_age: time::Duration::seconds(settings.sns_max_age_secs as i64),
                max_future: time::Duration::seconds(settings.sns_max_future_secs as i64),
            },
            Arc::new(certs),
            hooks.clock.clone(),
        );
        let guard = GuardPolicy::from_settings(settings)?;
        let policy = ApplyPolicy {
            soft_bounce: SoftBouncePolicy {
                limit: i64::from(settings.soft_bounce_limit.max(1)),
                window: time::Duration::days(i64::from(settings.soft_bounce_window_days)),
            },
            guard: guard.clone(),
        };
        let (writer, writer_task) = Writer::start(
            store.clone(),
            policy,
            spool,
            hooks.clock.clone(),
            settings.write_batch_max,
            metrics.clone(),
            migrated,
        );
        Ok(Pipeline {
            state: Arc::new(AppState {
                verifier,
                writer,
                store,
                guard,
                metrics,
                max_body_bytes: settings.sns_max_body_bytes,
                api_tokens: Arc::new(ApiTokens::parse(&settings.api_tokens)),
                confirmer: Confirmer::new(
                    settings.sns_confirm_mode,
                    settings.sns_api_endpoint.clone(),
                    &hooks.outbound,
                    hooks.aws_credentials.clone(),
                )?,
            }),
            writer_task,
        })
    }
}

/// Mounts every endpoint with the shared state (the server and the
/// benchmarks use the same routes).
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<AppState>) {
    let tokens = web::Data::from(state.api_tokens.clone());
    cfg.app_data(state)
        .app_data(tokens)
        .configure(routes::api::configure)
        .route("/sns", web::post().to(routes::sns::receive))
        .route("/healthz", web::get().to(routes::health::healthz))
        .route("/readyz", web::get().to(routes::health::readyz))
        .route("/metrics", web::get().to(routes::metrics::metrics));
}

pub struct Application {
    port: u16,
    server: Server,
    writer_task: JoinHandle<()>,
    alert_worker: JoinHandle<()>,
    ses_worker: JoinHandle<()>,
    pruner: Option<JoinHandle<()>>,
    stop_worker: CancellationToken,
    store: Store,
}

impl Application {
    pub async fn build(settings: Settings, hooks: Hooks) -> anyhow::Result<Application> {
        // A mode that is on without what it needs stops start-up here.
        let ses = SesSettings::from_settings(&settings)?;
        let Pipeline { state, writer_task } = Pipeline::build(&settings, &hooks).await?;
        let store = state.store.clone();
        let channels = Arc::new(Channels::from_settings(&settings, &hooks.outbound)?);
        if channels.names().is_empty() {
            tracing::warn!(
                "no alert channel is configured (ALERT_WEBHOOK_URL, or SMTP_HOST with ALERT_EMAILS): alerts are stored and logged only"
            );
        }
        let stop_worker = CancellationToken::new();
        let ses_worker = crate::ses_account::spawn(
            store.clone(),
            ses,
            hooks.aws_credentials.clone(),
            hooks.clock.clone(),
            state.metrics.clone(),
            stop_worker.clone(),
        );
        let alert_worker = spawn_worker(
            store.clone(),
            channels,
            hooks.clock.clone(),
            Duration::from_millis(settings.alert_retry_min_ms),
            stop_worker.clone(),
        );
        let listener = TcpListener::bind(&settings.listen_addr)
            .with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
        let port = listener.local_addr()?.port();
        let data = web::Data::from(state);
        let mut server =
            HttpServer::new(move || App::new().configure(|cfg| configure(cfg, data.clone())))
                .shutdown_timeout(settings.shutdown_timeout_secs);
        if settings.http_workers > 0 {
            server = server.workers(settings.http_workers);
        }
        let server = match (&settings.tls_cert_file, &settings.tls_key_file) {
            (Some(cert), Some(key)) => {
                let config = tls_server_config(cert, key)?;
                tracing::info!(addr = %settings.listen_addr, port, "serving HTTPS");
                server.listen_rustls_0_23(listener, config)?
            }
            (None, None) => {
                tracing::info!(addr = %settings.listen_addr, port, "serving plain HTTP (put a TLS proxy in front: SNS needs HTTPS)");
                server.listen(listener)?
            }
            _ => anyhow::bail!("TLS_CERT_FILE and TLS_KEY_FILE must be set together"),
        }
        .run();
        let pruner = (settings.retention_days > 0).then(|| {
            spawn_pruner(
                store.clone(),
                hooks.clock.clone(),
                Retention::from_settings(&settings),
                stop_worker.clone(),
            )
        });
        Ok(Application {
            port,
            server,
            writer_task,
            alert_worker,
            ses_worker,
            pruner,
            stop_worker,
            store,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM/SIGINT (or the server handle stops it), then
    /// lets in-flight messages finish and the writer empty its queue.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await?;
        // The server's app state (and with it every Writer handle) is gone:
        // the writer finishes what is queued and ends.
        if let Err(e) = self.writer_task.await {
            tracing::error!(error = %e, "writer task ended abnormally");
        }
        // Undelivered alerts stay in the outbox for the next start.
        self.stop_worker.cancel();
        let _ = self.alert_worker.await;
        let _ = self.ses_worker.await;
        if let Some(pruner) = self.pruner {
            let _ = pruner.await;
        }
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }

    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }
}

/// How long what is pruned is kept (see `store::retention`).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keep: time::Duration,
    pub guard_age: time::Duration,
    pub freshness: time::Duration,
}

impl Retention {
    pub fn from_settings(settings: &Settings) -> Retention {
        Retention {
            keep: time::Duration::days(i64::from(settings.retention_days)),
            guard_age: time::Duration::days(i64::from(settings.guard_max_age_days.max(1))),
            freshness: time::Duration::seconds(settings.sns_max_age_secs as i64),
        }
    }

    pub async fn prune(
        &self,
        store: &Store,
        now: crate::time::Timestamp,
    ) -> crate::store::DbResult<crate::store::retention::Pruned> {
        store
            .prune(now, self.keep, self.guard_age, self.freshness)
            .await
    }
}

/// Prunes once an hour (the first time a minute after start-up), until
/// `stop` is cancelled.
fn spawn_pruner(
    store: Store,
    clock: Clock,
    retention: Retention,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = Duration::from_secs(60);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = Duration::from_secs(3600);
            match retention.prune(&store, clock.now()).await {
                Ok(pruned) => tracing::info!(?pruned, "pruned old rows"),
                Err(e) => tracing::warn!(error = %e, "pruning failed; trying again in an hour"),
            }
        }
    })
}

fn tls_server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<rustls::ServerConfig> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read TLS_CERT_FILE {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("TLS_CERT_FILE {} is not PEM", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read TLS_KEY_FILE {}", key.display()))?;
    Ok(
        rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?,
    )
}
