//! Builds the running service from [`Settings`]: database, spool, writer,
//! certificate store, verifier, and two actix servers: the public listener
//! (`POST /sns` and health, what SNS must reach) and the admin listener
//! (the page for people, `/v1`, `/metrics`, behind one authentication
//! layer). Tests bind port 0 and get real servers.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, web};
use anyhow::Context;
use tokio::task::JoinHandle;

use tokio_util::sync::CancellationToken;

use crate::alerts::{Channels, spawn_worker};
use crate::auth::{ApiTokens, require_token};
use crate::clock::Clock;
use crate::config::Settings;
use crate::cross_site::refuse_cross_site;
use crate::guard::GuardPolicy;
use crate::http_server::{Listen, serve};
use crate::ingest::applier::Applier;
use crate::ingest::set_aside::SetAside;
use crate::ingest::spool::Spool;
use crate::ingest::writer::{Writer, WriterConfig};
use crate::ingest::{ApplyPolicy, SoftBouncePolicy};
use crate::intake::{BodyBudget, connection_cap};
use crate::log_budget::LogBudget;
use crate::metrics::Metrics;
use crate::outbound::{OutboundOverrides, http_client};
use crate::routes;
use crate::routes::api::CheckTurns;
use crate::ses_account::SesSettings;
use crate::sns::cert_store::{CertSettings, CertStore};
use crate::sns::confirm::Confirmer;
use crate::sns::region::TopicArn;
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

/// Connections the admin listener serves at once; more wait to be accepted.
const ADMIN_MAX_CONNECTIONS: usize = 256;

/// Shared by every request handler.
pub struct AppState {
    pub verifier: Verifier,
    pub writer: Writer,
    pub store: Store,
    pub guard: GuardPolicy,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub body_budget: Arc<BodyBudget>,
    pub api_tokens: Arc<ApiTokens>,
    pub confirmer: Confirmer,
    /// What batch checks may hold at once (see `CheckTurns`).
    pub check_turns: Arc<CheckTurns>,
    /// How many refused `POST /sns` requests are logged a second.
    pub refusal_lines: Arc<LogBudget>,
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
        // Settings first (pins, percentages): a bad one creates nothing.
        let metrics = Metrics::new();
        let verifier = build_verifier(settings, hooks, &metrics, true)?;
        let policy = apply_policy(settings)?;
        let guard = policy.guard.clone();
        let store = Store::connect(settings).await?;
        let migrated = match store.migrate_briefly().await {
            // Which database a service runs on, and at which schema, is
            // the first thing an operator checks when rows seem missing.
            Ok(migrated) => {
                tracing::info!("{}", migrated.told(store.location()));
                true
            }
            // SQLite failing here is a real error.
            Err(e) if store.is_sqlite() => return Err(e),
            // PostgreSQL may be down at start-up: the spool takes messages,
            // and the writer migrates before it applies anything.
            Err(e) => {
                tracing::error!(error = %e, "the database cannot be migrated now; verified messages go to the spool until it can");
                false
            }
        };
        let spool = Spool::open(&settings.spool_path)
            .with_context(|| format!("cannot open the spool {}", settings.spool_path.display()))?;
        if spool.has_pending() {
            tracing::warn!(path = %settings.spool_path.display(), "spool holds messages from before; applying them");
        }
        let applier = Applier::new(
            store.clone(),
            policy,
            hooks.clock.clone(),
            metrics.clone(),
            Duration::from_millis(settings.database_write_timeout_ms.max(1)),
            migrated,
            Some(SetAside::in_dir(spool.path())),
        );
        let (writer, writer_task) = Writer::start(
            applier,
            Some(spool),
            WriterConfig {
                batch_max: settings.write_batch_max,
                retry_min: Duration::from_millis(200),
                retry_max: Duration::from_secs(5),
            },
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
                body_timeout: Duration::from_millis(settings.http_body_timeout_ms.max(1)),
                // Room for 64 bodies of the largest size at once, and never
                // less than 32 MiB; slow bodies give way once three in four
                // of the connections are reading one.
                body_budget: BodyBudget::new(
                    settings.sns_max_body_bytes.saturating_mul(64).max(32 << 20),
                    (settings.http_max_connections / 4 * 3).max(1),
                ),
                api_tokens: Arc::new(ApiTokens::parse(&settings.api_tokens)?),
                check_turns: CheckTurns::new(),
                refusal_lines: Arc::new(LogBudget::refusals()),
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

/// The verifier of `settings`: allowed topics, signature policy,
/// freshness, and the certificate store with its pins. `announce` logs the
/// topics (or their absence) as a service does at start-up.
pub fn build_verifier(
    settings: &Settings,
    hooks: &Hooks,
    metrics: &Metrics,
    announce: bool,
) -> anyhow::Result<Verifier> {
    let client = http_client(
        &hooks.outbound,
        Duration::from_millis(settings.sns_cert_fetch_timeout_ms),
        true,
    )?;
    let certs = CertStore::new(
        &settings.sns_cert_pins,
        CertSettings {
            capacity: settings.sns_cert_cache_size,
            max_bytes: settings.sns_cert_max_bytes,
            fetch_timeout: Duration::from_millis(settings.sns_cert_fetch_timeout_ms),
        },
        client,
        hooks.clock.clone(),
        metrics.clone(),
    )?;
    let allowed_topics = allowed_topics(&settings.sns_topic_arns)?;
    if allowed_topics.is_empty() {
        tracing::warn!(
            "SNS_TOPIC_ARNS is empty: every SNS message will be refused (403 no_topic_configured)"
        );
    } else if announce {
        tracing::info!(topics = ?allowed_topics.keys(), "accepting SNS messages from these topics");
    }
    Ok(Verifier::new(
        VerifierPolicy {
            allowed_topics,
            require_v2: settings.sns_require_signature_v2,
            max_age: seconds(settings.sns_max_age_secs),
            max_future: seconds(settings.sns_max_future_secs),
        },
        Arc::new(certs),
        hooks.clock.clone(),
    ))
}

/// What applying a message follows besides SQL: the soft-bounce rule and
/// the guard's thresholds.
pub fn apply_policy(settings: &Settings) -> anyhow::Result<ApplyPolicy> {
    Ok(ApplyPolicy {
        soft_bounce: SoftBouncePolicy {
            limit: i64::from(settings.soft_bounce_limit.max(1)),
            window: time::Duration::days(i64::from(settings.soft_bounce_window_days)),
        },
        guard: GuardPolicy::from_settings(settings)?,
    })
}

/// `SNS_TOPIC_ARNS`, each parsed once: a topic that is not an SNS topic ARN
/// would only ever refuse its messages, so it stops start-up instead.
fn allowed_topics(entries: &[String]) -> anyhow::Result<HashMap<String, TopicArn>> {
    entries
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| {
            TopicArn::parse(t)
                .map(|arn| (t.to_owned(), arn))
                .map_err(|why| anyhow::anyhow!("SNS_TOPIC_ARNS: {why}"))
        })
        .collect()
}

/// Mounts the public listener's endpoints: what SNS and a load balancer
/// need, nothing else (the server and the benchmarks use the same routes).
pub fn configure_public(cfg: &mut web::ServiceConfig, state: web::Data<AppState>) {
    cfg.app_data(state)
        .route("/sns", web::post().to(routes::sns::receive))
        .route("/healthz", routes::read().to(routes::health::healthz))
        .route("/readyz", routes::read().to(routes::health::readyz))
        .default_service(web::to(routes::no_such_path));
}

/// Mounts the admin listener's endpoints, all of them behind one layer
/// against cross-site requests (`cross_site`); everything but the page's
/// own files (which hold no data) and the 404 for any other path behind one
/// authentication layer.
pub fn configure_admin(cfg: &mut web::ServiceConfig, state: web::Data<AppState>) {
    let tokens = web::Data::from(state.api_tokens.clone());
    cfg.app_data(state).app_data(tokens).service(
        web::scope("")
            .wrap(from_fn(refuse_cross_site))
            .configure(routes::page::configure)
            .service(
                web::scope("")
                    .wrap(from_fn(require_token))
                    .configure(routes::api::configure)
                    .route("/metrics", routes::read().to(routes::metrics::metrics))
                    .default_service(web::to(routes::no_such_path)),
            ),
    );
    // A known path asked with a method it does not take falls back to the
    // listener's default (behind the token for the API's paths): without
    // one, actix answered an empty 404 (found by an outside trial).
    cfg.default_service(web::to(routes::no_such_path));
}

/// The admin listener, bound. Off loopback it needs API_TOKENS: without
/// them anyone who reaches the address could resume a paused sender or
/// remove suppressions.
fn bind_admin(settings: &Settings, public: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(&settings.admin_listen_addr).map_err(|e| {
        let what = format!(
            "cannot listen on ADMIN_LISTEN_ADDR {}",
            settings.admin_listen_addr
        );
        // The same port for both is a slip the operating system reports
        // only as "in use", which sends people looking for another process.
        let overlaps = |a: &SocketAddr| {
            a.port() == public.port()
                && (a.ip() == public.ip() || a.ip().is_unspecified() || public.ip().is_unspecified())
        };
        let same_port = e.kind() == std::io::ErrorKind::AddrInUse
            && listen_addr(&settings.admin_listen_addr)
                .is_ok_and(|addrs| addrs.iter().any(overlaps));
        let error = anyhow::Error::new(e);
        if same_port {
            error.context(format!(
                "{what}: LISTEN_ADDR {} listens on that port already; the admin listener (/v1, /metrics) needs a port of its own",
                settings.listen_addr
            ))
        } else {
            error.context(what)
        }
    })?;
    let addr = listener.local_addr()?;
    if ApiTokens::parse(&settings.api_tokens)?.is_empty() {
        if !addr.ip().is_loopback() {
            anyhow::bail!(
                "ADMIN_LISTEN_ADDR {} is not a loopback address and API_TOKENS is empty: \
                 /v1 and /metrics would be open to anyone who reaches it; set API_TOKENS, \
                 or bind ADMIN_LISTEN_ADDR to 127.0.0.1 or [::1]",
                settings.admin_listen_addr
            );
        }
        tracing::warn!(%addr, "API_TOKENS is empty: the admin listener (/v1, /metrics) serves whoever can connect to it on loopback");
    }
    Ok(listener)
}

pub struct Application {
    port: u16,
    admin_port: u16,
    server: Server,
    admin_server: Server,
    writer_task: JoinHandle<()>,
    alert_worker: JoinHandle<()>,
    ses_worker: JoinHandle<()>,
    rules_recorder: JoinHandle<()>,
    pruner: Option<JoinHandle<()>>,
    refusal_lines: JoinHandle<()>,
    stop_worker: CancellationToken,
    store: Store,
}

impl Application {
    pub async fn build(settings: Settings, hooks: Hooks) -> anyhow::Result<Application> {
        // Taken over first: until then SIGHUP (a renewal's "reload") would
        // end the process without SIGTERM's drain.
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot listen for SIGHUP")?;
        // Settings that would only fail later, and less clearly, first.
        let listen_on = listen_addr(&settings.listen_addr)?;
        // Both listeners serve HTTPS when a certificate is given: admin
        // requests carry bearer tokens.
        let (tls, served) = match crate::tls::server_config(&settings)? {
            Some((config, served)) => (Some(config), Some(served)),
            None => (None, None),
        };
        let listener = TcpListener::bind(&listen_on[..])
            .with_context(|| format!("cannot listen on LISTEN_ADDR {}", settings.listen_addr))?;
        let admin_listener = bind_admin(&settings, listener.local_addr()?)?;
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
        // Detached: it ends when the workers are told to stop.
        let _reloader = spawn_reloader(hangups, served, state.metrics.clone(), stop_worker.clone());
        let refusal_lines = crate::log_budget::spawn_flusher(
            state.refusal_lines.clone(),
            stop_worker.clone(),
            crate::routes::sns::report_left_out,
        );
        let ses_worker = crate::ses_account::spawn(
            store.clone(),
            ses,
            hooks.aws_credentials.clone(),
            hooks.clock.clone(),
            state.metrics.clone(),
            stop_worker.clone(),
        );
        let rules_recorder = crate::ingest::recorded::spawn_recorder(
            store.clone(),
            &apply_policy(&settings)?,
            settings.sns_max_age_secs,
            hooks.clock.clone(),
            stop_worker.clone(),
        );
        let alert_worker = spawn_worker(
            store.clone(),
            channels,
            hooks.clock.clone(),
            Duration::from_millis(settings.alert_retry_min_ms),
            stop_worker.clone(),
        );
        let port = listener.local_addr()?.port();
        let admin_port = admin_listener.local_addr()?.port();
        let data = web::Data::from(state);
        let workers = if settings.http_workers > 0 {
            settings.http_workers
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        };
        let per_worker = connection_cap(settings.http_max_connections).div_ceil(workers);
        let send_timeout = Duration::from_millis(settings.http_send_timeout_ms.max(1));
        let body_timeout = data.body_timeout;
        // actix stops accepting on a worker while 256 TLS handshakes are
        // under way (its default): clients that connect and say nothing
        // then held real senders back until the handshake time-out (3 s)
        // let each go. A silent handshake costs no CPU; the connection cap
        // bounds them as it bounds plain connections. (A process-wide
        // setting of actix-tls, read by both listeners' workers.)
        actix_tls::accept::max_concurrent_tls_connect(per_worker);
        let public_data = data.clone();
        let server = serve(
            Listen {
                name: "public",
                listener,
                tls: tls.clone(),
                workers,
                per_worker,
                signals: true,
                shutdown_timeout_secs: settings.shutdown_timeout_secs,
                send_timeout,
                body_timeout,
                // SNS sends heads of about 1 KB, and a proxy in front
                // refuses more than 32 KiB by default (nginx: four lines of
                // 8 KiB). actix's own limit, 128 KiB, let 1,000 stalled
                // heads hold 153 MB.
                max_head: 32 * 1024,
            },
            move || App::new().configure(|cfg| configure_public(cfg, public_data.clone())),
        )?;
        // Stopped by `run_until_stopped` once the public server has stopped,
        // so that SIGTERM ends both in order; one worker is plenty for it.
        let admin_server = serve(
            Listen {
                name: "admin",
                listener: admin_listener,
                tls,
                workers: 1,
                // Every connection can hold a body being read (64 KiB, a
                // check's in its turn): without a cap, actix's default
                // (25,000) lets stalled clients hold far past SPEC §9's
                // 64 MiB. People, Prometheus and a sending application's
                // workers need far fewer.
                per_worker: ADMIN_MAX_CONNECTIONS,
                signals: false,
                shutdown_timeout_secs: settings.shutdown_timeout_secs,
                send_timeout,
                body_timeout,
                // A browser's cookies for localhost are every local app's:
                // actix's own limit (128 KiB), which answers 431 past it.
                max_head: usize::MAX,
            },
            move || App::new().configure(|cfg| configure_admin(cfg, data.clone())),
        )?;
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
            admin_port,
            server,
            admin_server,
            writer_task,
            alert_worker,
            ses_worker,
            rules_recorder,
            pruner,
            refusal_lines,
            stop_worker,
            store,
        })
    }

    /// The public listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin listener's port.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Serves until a signal (or the server handle) stops it; then the
    /// writer empties its queue. On SIGTERM in-flight messages finish
    /// first; SIGINT and SIGQUIT are actix's forced stop, which drops them
    /// unanswered (so SNS sends them again).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let admin = self.admin_server.handle();
        let admin_task = tokio::spawn(self.admin_server);
        let served = self.server.await;
        admin.stop(true).await;
        if let Ok(Err(e)) = admin_task.await {
            tracing::error!(error = %e, "admin server ended abnormally");
        }
        served?;
        // The server's app state (and with it every Writer handle) is gone:
        // the writer finishes what is queued and ends.
        if let Err(e) = self.writer_task.await {
            tracing::error!(error = %e, "writer task ended abnormally");
        }
        // Undelivered alerts stay in the outbox for the next start.
        self.stop_worker.cancel();
        let _ = self.alert_worker.await;
        let _ = self.ses_worker.await;
        let _ = self.rules_recorder.await;
        if let Some(pruner) = self.pruner {
            let _ = pruner.await;
        }
        let _ = self.refusal_lines.await;
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
    pub soft_window: time::Duration,
}

impl Retention {
    pub fn from_settings(settings: &Settings) -> Retention {
        Retention {
            keep: time::Duration::days(i64::from(settings.retention_days)),
            guard_age: time::Duration::days(i64::from(settings.guard_max_age_days.max(1))),
            freshness: seconds(settings.sns_max_age_secs),
            soft_window: time::Duration::days(i64::from(settings.soft_bounce_window_days)),
        }
    }

    /// What is kept, for `bouncer prune` to print.
    pub fn describe(&self) -> String {
        format!(
            "keeping SNS messages, SES events and alerts {} (RETENTION_DAYS), messages at least {} (SNS_MAX_AGE_SECS, for the MessageId dedupe), what the guard counts at least {} (GUARD_MAX_AGE_DAYS), SES events at least {} (SOFT_BOUNCE_WINDOW_DAYS), each with a day more for the hours at its edge",
            span(self.keep),
            span(self.freshness),
            span(self.guard_age),
            span(self.soft_window)
        )
    }

    /// At least as long as the service keeps, by what `serve` recorded
    /// (`bouncer prune` from a shell that lacks the service's settings
    /// would otherwise delete what the guard still counts, or messages
    /// whose redelivery the dedupe must still recognize).
    pub fn at_least(self, service: &crate::ingest::recorded::RecordedPolicy) -> Retention {
        Retention {
            keep: self.keep,
            guard_age: self
                .guard_age
                .max(time::Duration::days(service.guard.max_age_days)),
            freshness: self
                .freshness
                .max(seconds(service.sns_max_age_secs.unwrap_or(0))),
            soft_window: self
                .soft_window
                .max(time::Duration::days(service.soft_bounce_window_days)),
        }
    }

    pub async fn prune(
        &self,
        store: &Store,
        now: crate::time::Timestamp,
    ) -> crate::store::DbResult<crate::store::retention::Pruned> {
        store
            .prune(
                now,
                self.keep,
                self.guard_age,
                self.freshness,
                self.soft_window,
            )
            .await
    }
}

/// SIGHUP reads the TLS certificate and key again (a renewal, certbot's
/// deploy hook): new handshakes get them, and a pair that does not check
/// out (or a certificate not valid now) is logged and the one served kept.
/// Without TLS there is nothing to read again, and the signal is logged
/// rather than ending the process (its default), which would skip
/// SIGTERM's drain.
fn spawn_reloader(
    mut hangups: tokio::signal::unix::Signal,
    served: Option<Arc<crate::tls::ServedCertificate>>,
    metrics: Metrics,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let expiry = move |served: &crate::tls::ServedCertificate| {
        if let Some(at) = served.expires_at() {
            metrics.tls_expiry(served.cert_file(), at);
        }
    };
    if let Some(served) = &served {
        expiry(served);
    }
    tokio::spawn(async move {
        // A renewal that failed sends no SIGHUP: the expiry is looked at
        // daily too (the first tick is at once, and start-up has logged).
        let mut daily = tokio::time::interval(Duration::from_secs(86_400));
        daily.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = daily.tick() => {
                    if let Some(served) = &served {
                        served.log_expiry();
                    }
                    continue;
                }
                got = hangups.recv() => if got.is_none() { return },
            }
            match &served {
                Some(served) => match served.reload() {
                    Ok(()) => {
                        expiry(served);
                        tracing::info!(
                            "SIGHUP: TLS_CERT_FILE and TLS_KEY_FILE read again; new handshakes get them"
                        );
                    }
                    Err(e) => tracing::error!(
                        error = %format!("{e:#}"),
                        "SIGHUP: the TLS files do not check out; still serving the certificate read before"
                    ),
                },
                None => tracing::info!("SIGHUP: no TLS_CERT_FILE to read again; ignored"),
            }
        }
    })
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
                Ok(p) => tracing::info!(
                    sns_messages = p.sns_messages,
                    feedback_events = p.feedback_events,
                    rate_volume = p.rate_volume,
                    rate_buckets = p.rate_buckets,
                    alerts = p.alerts,
                    ses_pushes = p.ses_pushes,
                    soft_bounces = p.soft_bounces,
                    "pruned old rows"
                ),
                Err(e) => tracing::warn!(error = %e, "pruning failed; trying again in an hour"),
            }
        }
    })
}

/// `LISTEN_ADDR` as the addresses it names (a host name may name several).
fn listen_addr(text: &str) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    use std::net::ToSocketAddrs;
    let bad = |why: String| {
        anyhow::anyhow!(
            "LISTEN_ADDR `{text}` is not an address and port to listen on, such as 127.0.0.1:8080 or 0.0.0.0:443 ({why})"
        )
    };
    let addrs: Vec<_> = text
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(bad("it names no address".into()));
    }
    Ok(addrs)
}

/// A duration as a person would say it, in its largest whole unit:
/// `30 days`, `2 hours`, `90 minutes`, `1 second`.
fn span(d: time::Duration) -> String {
    let secs = d.whole_seconds();
    let (n, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(size, _)| secs != 0 && secs % size == 0)
        .map_or((secs, "second"), |(size, unit)| (secs / size, unit));
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// A setting in seconds as a duration (a count past `i64` is as long as
/// there is, not a negative one).
fn seconds(n: u64) -> time::Duration {
    time::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_reads_in_its_largest_whole_unit() {
        for (secs, text) in [
            (7_200, "2 hours"),
            (3_600, "1 hour"),
            (5_400, "90 minutes"),
            (86_400 * 30, "30 days"),
            (129_600, "36 hours"),
            (61, "61 seconds"),
            (0, "0 seconds"),
        ] {
            assert_eq!(span(time::Duration::seconds(secs)), text);
        }
    }

    #[test]
    fn a_prune_keeps_at_least_what_the_service_recorded() {
        use crate::ingest::recorded::RecordedPolicy;
        let shell = Retention {
            keep: time::Duration::days(30),
            guard_age: time::Duration::days(30),
            freshness: time::Duration::hours(2),
            soft_window: time::Duration::days(14),
        };
        let service = RecordedPolicy::from_json(
            r#"{"guard":{"window_sends":10000,"max_age_days":60,"min_volume":1000,"bounce_pause_ppm":50000,"complaint_pause_ppm":1000,"bounce_warn_ppm":null,"complaint_warn_ppm":null},"soft_bounce_limit":3,"soft_bounce_window_days":21,"sns_max_age_secs":31536000}"#,
        )
        .expect("a record");
        let kept = shell.at_least(&service);
        assert_eq!(
            (kept.keep, kept.guard_age, kept.freshness, kept.soft_window),
            (
                time::Duration::days(30),
                time::Duration::days(60),
                time::Duration::days(365),
                time::Duration::days(21)
            )
        );
        // A record of an earlier version has no message age: the shell's.
        let earlier = RecordedPolicy::from_json(
            r#"{"guard":{"window_sends":10000,"max_age_days":10,"min_volume":1000,"bounce_pause_ppm":50000,"complaint_pause_ppm":1000,"bounce_warn_ppm":null,"complaint_warn_ppm":null},"soft_bounce_limit":3,"soft_bounce_window_days":7}"#,
        )
        .expect("an earlier record");
        let kept = shell.at_least(&earlier);
        assert_eq!(
            (kept.guard_age, kept.freshness, kept.soft_window),
            (
                time::Duration::days(30),
                time::Duration::hours(2),
                time::Duration::days(14)
            )
        );
        // Out of the setting's range: not a record to trust.
        assert!(
            RecordedPolicy::from_json(
                r#"{"guard":{"window_sends":10000,"max_age_days":60,"min_volume":1000,"bounce_pause_ppm":50000,"complaint_pause_ppm":1000,"bounce_warn_ppm":null,"complaint_warn_ppm":null},"soft_bounce_limit":3,"soft_bounce_window_days":21,"sns_max_age_secs":18446744073709551615}"#
            )
            .is_none()
        );
    }
}
