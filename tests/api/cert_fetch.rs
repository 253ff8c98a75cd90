//! Fetching signing certificates: over TLS from an SNS host (a local
//! stand-in that the test resolves `sns.us-east-1.amazonaws.com` to, trusted
//! through a TEST-ONLY root that only test code can add), once per URL, with
//! a timeout, a size cap and no redirects; and never for a message that
//! fails a cheap check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bouncer::outbound::OutboundOverrides;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::helpers::{Backend, TestApp, assert_refused, fixture, spawn_app_with};
use crate::on_both_databases;
use crate::signing::{Msg, TEST_CERT_FILE, TOPIC, now_text};
use bouncer::clock::Clock;
use bouncer::time::Timestamp;

const HOST: &str = "sns.us-east-1.amazonaws.com";

/// A local HTTPS server playing the SNS certificate host.
pub struct CertHost {
    pub port: u16,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    answering: Arc<AtOnce>,
    /// Open: the `gated-` and `held-` names are answered; shut: they wait.
    gate: Gate,
    handle: actix_web::dev::ServerHandle,
}

type Gate = Arc<tokio::sync::watch::Sender<bool>>;

impl CertHost {
    pub async fn start() -> CertHost {
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let certs =
            CertificateDer::pem_file_iter(fixture("fixtures/test-only/TEST-ONLY-tls-cert.pem"))
                .expect("tls cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("tls cert pem");
        let key = PrivateKeyDer::from_pem_file(fixture("fixtures/test-only/TEST-ONLY-tls-key.pem"))
            .expect("tls key");
        let config =
            rustls::ServerConfig::builder_with_provider(bouncer::outbound::crypto_provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server config");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let counter = hits.clone();
        let answering: Arc<AtOnce> = Arc::default();
        let at_once = answering.clone();
        let gate: Gate = Arc::new(tokio::sync::watch::channel(false).0);
        let shut = gate.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(counter.clone()))
                .app_data(web::Data::new(at_once.clone()))
                .app_data(web::Data::new(shut.clone()))
                .default_service(web::to(serve))
        })
        .workers(1)
        .disable_signals()
        .listen_rustls_0_23(listener, config)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        CertHost {
            port,
            hits,
            answering,
            gate,
            handle,
        }
    }

    /// Query strings of requests to `/` seen so far.
    pub fn root_queries(&self) -> Vec<String> {
        self.hits
            .lock()
            .map(|h| {
                h.keys()
                    .filter_map(|k| k.strip_prefix('?').map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn hits(&self, name: &str) -> usize {
        self.hits
            .lock()
            .map(|h| h.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The most `held-` requests that were being answered at once.
    pub fn most_held_at_once(&self) -> usize {
        self.answering.most.load(Ordering::SeqCst)
    }

    /// `held-` requests being answered now.
    pub fn held_now(&self) -> usize {
        self.answering.now.load(Ordering::SeqCst)
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    pub fn shut_gate(&self) {
        self.gate.send_replace(false);
    }

    /// Requests for names that start with `prefix`.
    pub fn hits_with_prefix(&self, prefix: &str) -> usize {
        self.hits
            .lock()
            .map(|h| {
                h.iter()
                    .filter(|(name, _)| name.starts_with(prefix))
                    .map(|(_, n)| n)
                    .sum()
            })
            .unwrap_or(0)
    }

    pub fn url(name: &str) -> String {
        format!("https://{HOST}/{name}")
    }

    /// Hooks that send the service's requests for the SNS host here.
    pub fn overrides(&self) -> OutboundOverrides {
        OutboundOverrides {
            extra_root_pem: Some(
                std::fs::read(fixture("fixtures/test-only/TEST-ONLY-ca-cert.pem")).expect("ca"),
            ),
            resolve: vec![(
                HOST.to_owned(),
                format!("127.0.0.1:{}", self.port).parse().expect("addr"),
            )],
        }
    }

    pub async fn stop(self) {
        self.open_gate();
        self.handle.stop(false).await;
    }
}

/// Requests being answered now, and the most at once.
#[derive(Default)]
struct AtOnce {
    now: AtomicUsize,
    most: AtomicUsize,
}

/// Counts one request in [`AtOnce`] while it lives.
struct Answering<'a>(&'a AtOnce);

impl<'a> Answering<'a> {
    fn start(at_once: &'a AtOnce) -> Self {
        let now = at_once.now.fetch_add(1, Ordering::SeqCst) + 1;
        at_once.most.fetch_max(now, Ordering::SeqCst);
        Answering(at_once)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits until `gate` is open (for at most 10 s, so that a failing test
/// cannot hang).
async fn pass(gate: &Gate) {
    let mut open = gate.subscribe();
    let _ = tokio::time::timeout(Duration::from_secs(10), open.wait_for(|open| *open)).await;
}

/// The count of `bouncer_cert_cache_total{event}` on the app's `/metrics`.
async fn cert_events(app: &TestApp, event: &str) -> u64 {
    let (_, metrics) = app.admin_get("/metrics").await;
    let line = format!("bouncer_cert_cache_total{{event=\"{event}\"}} ");
    metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (at most 10 s) until `ready` says so.
async fn until<F: std::future::Future<Output = bool>>(mut ready: impl FnMut() -> F) {
    for _ in 0..1000 {
        if ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not ready within 10 s");
}

async fn serve(
    req: HttpRequest,
    hits: web::Data<Arc<Mutex<HashMap<String, usize>>>>,
    answering: web::Data<Arc<AtOnce>>,
    gate: web::Data<Gate>,
) -> HttpResponse {
    let name = req.path().trim_start_matches('/').to_owned();
    if let Ok(mut h) = hits.lock() {
        *h.entry(name.clone()).or_default() += 1;
        // The whole request line of the last request to the root, for the
        // SubscribeURL tests.
        if name.is_empty() {
            h.insert(format!("?{}", req.query_string()), 1);
        }
    }
    let cert = std::fs::read(fixture(TEST_CERT_FILE)).unwrap_or_default();
    match name.as_str() {
        "SimpleNotificationService-good.pem" | "SimpleNotificationService-other.pem" => {
            // Slow enough that concurrent requests overlap the fetch.
            tokio::time::sleep(Duration::from_millis(300)).await;
            HttpResponse::Ok()
                .content_type("application/x-pem-file")
                .body(cert)
        }
        "slow.pem" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            HttpResponse::Ok().body(cert)
        }
        "big.pem" => HttpResponse::Ok().body(vec![b'A'; 64 * 1024]),
        "redirect.pem" => HttpResponse::Found()
            .insert_header((
                "location",
                CertHost::url("SimpleNotificationService-good.pem"),
            ))
            .finish(),
        "error.pem" => HttpResponse::InternalServerError().finish(),
        // Answered once the test opens the gate: a crowd of messages
        // waits for one failing fetch.
        missing if missing.starts_with("gated-missing") => {
            pass(&gate).await;
            HttpResponse::NotFound().finish()
        }
        "gated-error.pem" => {
            pass(&gate).await;
            HttpResponse::InternalServerError().finish()
        }
        // Forged names, each different, counted while they are answered.
        held if held.starts_with("held-") => {
            let _answering = Answering::start(&answering);
            pass(&gate).await;
            HttpResponse::NotFound().finish()
        }
        "notacert.pem" => HttpResponse::Ok().body("hello"),
        // The TEST-ONLY certificates of other regions, served at this host.
        region if region.starts_with("TEST-ONLY-") => {
            match std::fs::read(fixture(&format!("fixtures/test-only/regions/{region}"))) {
                Ok(pem) => HttpResponse::Ok().body(pem),
                Err(_) => HttpResponse::NotFound().finish(),
            }
        }
        // The SubscribeURL of `url` confirmation; a Token of the form
        // `answer-<status>[-<SNS error code>]` asks for that failure.
        "" if req.query_string().contains("Token=answer-") => scripted_failure(&req),
        "" => HttpResponse::Ok().content_type("text/xml").body(
            "<ConfirmSubscriptionResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\
             <ConfirmSubscriptionResult><SubscriptionArn>arn:aws:sns:us-east-1:123456789012:ses-feedback:via-url</SubscriptionArn>\
             </ConfirmSubscriptionResult><ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata>\
             </ConfirmSubscriptionResponse>",
        ),
        _ => HttpResponse::NotFound().finish(),
    }
}

fn scripted_failure(req: &HttpRequest) -> HttpResponse {
    let asked = req
        .query_string()
        .split('&')
        .find_map(|pair| pair.strip_prefix("Token=answer-"))
        .unwrap_or_default();
    let (status, code) = asked.split_once('-').unwrap_or((asked, ""));
    let status = status
        .parse()
        .ok()
        .and_then(|s| actix_web::http::StatusCode::from_u16(s).ok())
        .unwrap_or(actix_web::http::StatusCode::IM_A_TEAPOT);
    if code.is_empty() {
        HttpResponse::build(status).finish()
    } else {
        HttpResponse::build(status)
            .content_type("text/xml")
            .body(crate::subscriptions::sns_error(code))
    }
}

async fn app_with_host(backend: Backend, host: &CertHost, timeout_ms: u64) -> TestApp {
    let overrides = host.overrides();
    spawn_app_with(backend, move |s, hooks| {
        s.sns_cert_fetch_timeout_ms = timeout_ms;
        hooks.outbound = overrides;
    })
    .await
}

fn signed_with_url(name: &str) -> Msg {
    Msg::notification(TOPIC, "fetched")
        .set("SigningCertURL", &CertHost::url(name))
        .sign()
}

async fn a_certificate_is_fetched_once_for_many_concurrent_messages(backend: Backend) {
    let host = CertHost::start().await;
    let app = app_with_host(backend, &host, 3000).await;
    let messages: Vec<Msg> = (0..20)
        .map(|_| signed_with_url("SimpleNotificationService-good.pem"))
        .collect();
    let answers = futures_util::future::join_all(messages.iter().map(|m| app.post(m))).await;
    for answer in &answers {
        assert_eq!(answer.0, 200, "{answer:?}");
    }
    assert_eq!(host.hits("SimpleNotificationService-good.pem"), 1);
    assert_eq!(
        app.post(&signed_with_url("SimpleNotificationService-good.pem"))
            .await
            .0,
        200
    );
    assert_eq!(
        host.hits("SimpleNotificationService-good.pem"),
        1,
        "served from the cache"
    );
    app.stop().await;
    host.stop().await;
}

async fn the_cache_is_bounded(backend: Backend) {
    let host = CertHost::start().await;
    let overrides = host.overrides();
    let app = spawn_app_with(backend, move |s, hooks| {
        s.sns_cert_cache_size = 1;
        hooks.outbound = overrides;
    })
    .await;
    for name in [
        "SimpleNotificationService-good.pem",
        "SimpleNotificationService-other.pem",
        "SimpleNotificationService-good.pem",
    ] {
        assert_eq!(app.post(&signed_with_url(name)).await.0, 200);
    }
    assert_eq!(
        host.hits("SimpleNotificationService-good.pem"),
        2,
        "evicted by the other URL"
    );
    app.stop().await;
    host.stop().await;
}

async fn fetch_failures_answer_so_that_sns_retries_only_what_may_succeed(backend: Backend) {
    let host = CertHost::start().await;
    let app = app_with_host(backend, &host, 500).await;
    assert_refused(
        &app.post(&signed_with_url("slow.pem")).await,
        502,
        "certificate_unavailable",
    );
    assert_refused(
        &app.post(&signed_with_url("error.pem")).await,
        502,
        "certificate_unavailable",
    );
    assert_refused(
        &app.post(&signed_with_url("big.pem")).await,
        403,
        "certificate_invalid",
    );
    assert_refused(
        &app.post(&signed_with_url("missing.pem")).await,
        403,
        "certificate_invalid",
    );
    assert_refused(
        &app.post(&signed_with_url("notacert.pem")).await,
        403,
        "certificate_invalid",
    );
    // A redirect is not followed, even to a good certificate on the same host.
    assert_refused(
        &app.post(&signed_with_url("redirect.pem")).await,
        502,
        "certificate_unavailable",
    );
    assert_eq!(host.hits("SimpleNotificationService-good.pem"), 0);
    // A failed fetch is not cached: the next message tries again.
    assert_refused(
        &app.post(&signed_with_url("error.pem")).await,
        502,
        "certificate_unavailable",
    );
    assert_eq!(host.hits("error.pem"), 2);
    assert_eq!(app.db.total_messages().await, 0);
    app.stop().await;
    host.stop().await;
}

async fn nothing_is_fetched_for_a_message_that_fails_a_cheap_check(backend: Backend) {
    let host = CertHost::start().await;
    let app = app_with_host(backend, &host, 3000).await;
    let name = "SimpleNotificationService-good.pem";
    let foreign = Msg::notification("arn:aws:sns:us-east-1:999999999999:other", "x")
        .set("SigningCertURL", &CertHost::url(name))
        .sign();
    assert_refused(&app.post(&foreign).await, 403, "topic_not_allowed");
    let stale = Msg::notification(TOPIC, "x")
        .set("SigningCertURL", &CertHost::url(name))
        .set("Timestamp", "2020-01-01T00:00:00.000Z")
        .sign();
    assert_refused(&app.post(&stale).await, 403, "message_too_old");
    let bad_version = signed_with_url(name).set("SignatureVersion", "9");
    assert_refused(
        &app.post(&bad_version).await,
        400,
        "unsupported_signature_version",
    );
    let bad_signature = signed_with_url(name).set("Signature", "%%%");
    assert_refused(&app.post(&bad_signature).await, 403, "bad_signature");
    let wrong_header = signed_with_url(name);
    assert_refused(
        &app.post_raw(wrong_header.body(), Some("UnsubscribeConfirmation"))
            .await,
        400,
        "message_type_mismatch",
    );
    assert_eq!(host.hits(name), 0, "the certificate host was contacted");
    app.stop().await;
    host.stop().await;
}

async fn a_pinned_url_is_never_fetched(backend: Backend) {
    let host = CertHost::start().await;
    let overrides = host.overrides();
    let name = "SimpleNotificationService-good.pem";
    let app = spawn_app_with(backend, move |s, hooks| {
        s.sns_cert_pins = vec![format!(
            "{}={}",
            CertHost::url(name),
            fixture(TEST_CERT_FILE).display()
        )];
        hooks.outbound = overrides;
    })
    .await;
    assert_eq!(app.post(&signed_with_url(name)).await.0, 200);
    assert_eq!(host.hits(name), 0);
    app.stop().await;
    host.stop().await;
}

/// A refusal (403 `certificate_invalid`) is shared by every message that
/// waited for its fetch, and remembered for 15 s (answered 502 then, so
/// that SNS sends a real message again after it); a host that could not
/// answer (502) is asked again by the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_certificate_is_remembered_briefly() {
    let host = CertHost::start().await;
    let overrides = host.overrides();
    let start = Timestamp::parse_rfc3339(&now_text())
        .expect("now")
        .saturating_add(time::Duration::seconds(5));
    let clock = Clock::fixed(start);
    let moved = clock.clone();
    let app = spawn_app_with(Backend::Sqlite, move |_, hooks| {
        hooks.outbound = overrides;
        hooks.clock = moved;
    })
    .await;
    // 20 messages, the gate opened once 19 wait for the first's fetch.
    let crowd = |name: &str, shared_before: u64| {
        let messages: Vec<Msg> = (0..20).map(|_| signed_with_url(name)).collect();
        let (app, host) = (&app, &host);
        async move {
            let answers = futures_util::future::join_all(messages.iter().map(|m| app.post(m)));
            let opener = async {
                until(|| async { cert_events(app, "shared").await >= shared_before + 19 }).await;
                host.open_gate();
            };
            tokio::join!(answers, opener).0
        }
    };

    for answer in &crowd("gated-missing.pem", 0).await {
        assert_refused(answer, 403, "certificate_invalid");
    }
    assert_eq!(host.hits("gated-missing.pem"), 1, "one fetch for the crowd");
    let again = signed_with_url("gated-missing.pem");
    assert_refused(&app.post(&again).await, 502, "certificate_unavailable");
    clock.set(start.saturating_add(time::Duration::seconds(14)));
    let answer = app.post(&again).await;
    assert_refused(&answer, 502, "certificate_unavailable");
    assert!(
        answer.1["detail"]
            .as_str()
            .is_some_and(|d| d.contains("refused it less than 15 s ago")),
        "{answer:?}"
    );
    assert_eq!(host.hits("gated-missing.pem"), 1, "remembered");
    clock.set(start.saturating_add(time::Duration::seconds(16)));
    assert_refused(&app.post(&again).await, 403, "certificate_invalid");
    assert_eq!(host.hits("gated-missing.pem"), 2, "asked again after it");

    host.shut_gate();
    for answer in &crowd("gated-error.pem", 19).await {
        assert_refused(answer, 502, "certificate_unavailable");
    }
    assert_eq!(host.hits("gated-error.pem"), 1, "one fetch for the crowd");
    assert_refused(
        &app.post(&signed_with_url("gated-error.pem")).await,
        502,
        "certificate_unavailable",
    );
    assert_eq!(host.hits("gated-error.pem"), 2, "not remembered");

    // A fetch whose only message's client hung up still ends, and its
    // refusal is remembered.
    host.shut_gate();
    let hung_up = signed_with_url("gated-missing-2.pem");
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let sent = impatient
        .post(format!("{}/sns", app.address))
        .header("x-amz-sns-message-type", "Notification")
        .body(hung_up.body())
        .send()
        .await;
    assert!(sent.is_err(), "answered before the fetch ended: {sent:?}");
    host.open_gate();
    until(|| async { host.hits("gated-missing-2.pem") == 1 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_refused(&app.post(&hung_up).await, 502, "certificate_unavailable");
    assert_eq!(host.hits("gated-missing-2.pem"), 1);

    for (event, count) in [("refusal_kept", 3), ("fetch", 5), ("shared", 38)] {
        assert_eq!(cert_events(&app, event).await, count, "{event}");
    }
    assert_eq!(app.db.total_messages().await, 0);
    app.stop().await;
    host.stop().await;
}

/// Forged messages naming certificates that fail to fetch do not push a
/// fetched certificate out of a cache of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fetches_leave_the_cache_to_certificates() {
    let host = CertHost::start().await;
    let overrides = host.overrides();
    let app = spawn_app_with(Backend::Sqlite, move |s, hooks| {
        s.sns_cert_cache_size = 1;
        hooks.outbound = overrides;
    })
    .await;
    let good = "SimpleNotificationService-good.pem";
    assert_eq!(app.post(&signed_with_url(good)).await.0, 200);
    for (name, status) in [("missing.pem", 403), ("error.pem", 502), ("big.pem", 403)] {
        assert_eq!(app.post(&signed_with_url(name)).await.0, status, "{name}");
    }
    assert_eq!(app.post(&signed_with_url(good)).await.0, 200);
    assert_eq!(host.hits(good), 1, "the certificate stayed in the cache");
    app.stop().await;
    host.stop().await;
}

/// A crowd of forged messages, each naming another certificate on the
/// region's SNS host, gets at most four requests sent to it at once, and at
/// most 64 names fetched or waiting; a name past the 64 is answered 502 at
/// once, which SNS retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_four_certificates_are_fetched_at_once() {
    let host = CertHost::start().await;
    let app = app_with_host(Backend::Sqlite, &host, 10_000).await;
    let forged: Vec<Msg> = (0..70)
        .map(|i| signed_with_url(&format!("held-{i}.pem")))
        .collect();
    let answered = AtomicUsize::new(0);
    let crowd = futures_util::future::join_all(forged.iter().map(|m| async {
        let answer = app.post(m).await;
        answered.fetch_add(1, Ordering::SeqCst);
        answer
    }));
    // The gate opens once the six past the 64 are answered, and four
    // fetches are at the host.
    let opener = async {
        until(|| async { answered.load(Ordering::SeqCst) >= 6 && host.held_now() == 4 }).await;
        assert_eq!(
            answered.load(Ordering::SeqCst),
            6,
            "answered before the gate"
        );
        host.open_gate();
    };
    let (answers, ()) = tokio::join!(crowd, opener);
    let mut crowded = 0;
    for answer in &answers {
        if answer.0 == 502 {
            assert_refused(answer, 502, "certificate_unavailable");
            assert!(
                answer.1["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("64 other certificates are being fetched")),
                "{answer:?}"
            );
            crowded += 1;
        } else {
            assert_refused(answer, 403, "certificate_invalid");
        }
    }
    assert_eq!(crowded, 6);
    assert_eq!(host.hits_with_prefix("held-"), 64);
    assert_eq!(host.most_held_at_once(), 4, "fetches at once");
    // The turns and places were given back.
    let real = signed_with_url("SimpleNotificationService-good.pem");
    assert_eq!(app.post(&real).await.0, 200);
    app.stop().await;
    host.stop().await;
}

/// A fetch behind four that hang finds no turn within half the fetch time
/// limit and is answered 502 (SNS retries); the four end at the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_behind_four_that_hang_finds_no_turn() {
    let host = CertHost::start().await;
    let app = app_with_host(Backend::Sqlite, &host, 1000).await;
    let hanging: Vec<Msg> = (0..4)
        .map(|i| signed_with_url(&format!("held-hang-{i}.pem")))
        .collect();
    let behind = signed_with_url("held-behind.pem");
    let four = futures_util::future::join_all(hanging.iter().map(|m| app.post(m)));
    let fifth = async {
        until(|| async { host.held_now() == 4 }).await;
        app.post(&behind).await
    };
    let (four, fifth) = tokio::join!(four, fifth);
    for answer in &four {
        assert_refused(answer, 502, "certificate_unavailable");
        assert!(
            answer.1["detail"]
                .as_str()
                .is_some_and(|d| d.contains("timed out")),
            "{answer:?}"
        );
    }
    assert_refused(&fifth, 502, "certificate_unavailable");
    assert!(
        fifth.1["detail"]
            .as_str()
            .is_some_and(|d| d.contains("were being fetched for longer than half")),
        "{fifth:?}"
    );
    assert_eq!(host.hits("held-behind.pem"), 0);
    host.open_gate();
    let real = signed_with_url("SimpleNotificationService-good.pem");
    assert_eq!(app.post(&real).await.0, 200);
    app.stop().await;
    host.stop().await;
}

on_both_databases!(
    a_certificate_is_fetched_once_for_many_concurrent_messages,
    the_cache_is_bounded,
    fetch_failures_answer_so_that_sns_retries_only_what_may_succeed,
    nothing_is_fetched_for_a_message_that_fails_a_cheap_check,
    a_pinned_url_is_never_fetched,
);

#[tokio::test]
async fn a_pin_whose_url_breaks_the_rule_stops_start_up() {
    let dir = crate::helpers::TempDir::new();
    let mut settings = crate::helpers::test_settings(
        &format!("sqlite:{}", dir.path().join("b.db").display()),
        dir.path(),
    );
    settings.sns_cert_pins = vec![format!(
        "https://evil.s3.amazonaws.com/x.pem={}",
        fixture(TEST_CERT_FILE).display()
    )];
    let error = bouncer::app::Application::build(settings, Default::default())
        .await
        .err()
        .expect("refused");
    assert!(format!("{error:#}").contains("is refused"), "{error:#}");
}
