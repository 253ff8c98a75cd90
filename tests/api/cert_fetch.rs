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
    handle: actix_web::dev::ServerHandle,
}

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
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(counter.clone()))
                .app_data(web::Data::new(at_once.clone()))
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

async fn serve(
    req: HttpRequest,
    hits: web::Data<Arc<Mutex<HashMap<String, usize>>>>,
    answering: web::Data<Arc<AtOnce>>,
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
        // Slow enough that a crowd of concurrent messages all wait for one
        // failing fetch.
        missing if missing.starts_with("slow-missing") => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            HttpResponse::NotFound().finish()
        }
        "slow-error.pem" => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            HttpResponse::InternalServerError().finish()
        }
        // Forged names, each different: 0.6 s each, and counted while they
        // are being answered.
        held if held.starts_with("held-") => {
            let _answering = Answering::start(&answering);
            tokio::time::sleep(Duration::from_millis(600)).await;
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
/// waited for its fetch and remembered for a minute; a host that could not
/// answer (502) is asked again by the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_certificate_is_remembered_for_a_minute() {
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
    let crowd = |name: &str| -> Vec<Msg> { (0..20).map(|_| signed_with_url(name)).collect() };

    let missing = crowd("slow-missing.pem");
    let answers = futures_util::future::join_all(missing.iter().map(|m| app.post(m))).await;
    for answer in &answers {
        assert_refused(answer, 403, "certificate_invalid");
    }
    assert_eq!(host.hits("slow-missing.pem"), 1, "one fetch for the crowd");
    let again = signed_with_url("slow-missing.pem");
    assert_refused(&app.post(&again).await, 403, "certificate_invalid");
    clock.set(start.saturating_add(time::Duration::seconds(59)));
    assert_refused(&app.post(&again).await, 403, "certificate_invalid");
    assert_eq!(host.hits("slow-missing.pem"), 1, "remembered for a minute");
    clock.set(start.saturating_add(time::Duration::seconds(61)));
    assert_refused(&app.post(&again).await, 403, "certificate_invalid");
    assert_eq!(host.hits("slow-missing.pem"), 2, "asked again after it");

    let failing = crowd("slow-error.pem");
    let answers = futures_util::future::join_all(failing.iter().map(|m| app.post(m))).await;
    for answer in &answers {
        assert_refused(answer, 502, "certificate_unavailable");
    }
    assert_eq!(host.hits("slow-error.pem"), 1, "one fetch for the crowd");
    assert_refused(
        &app.post(&signed_with_url("slow-error.pem")).await,
        502,
        "certificate_unavailable",
    );
    assert_eq!(host.hits("slow-error.pem"), 2, "not remembered");

    // A fetch whose only message's client hung up still ends, and its
    // refusal is remembered.
    let hung_up = signed_with_url("slow-missing-2.pem");
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
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_refused(&app.post(&hung_up).await, 403, "certificate_invalid");
    assert_eq!(host.hits("slow-missing-2.pem"), 1);

    let (_, metrics) = app.admin_get("/metrics").await;
    let text = metrics.as_str().unwrap_or_default();
    for line in [
        r#"bouncer_cert_cache_total{event="refusal_kept"} 3"#,
        r#"bouncer_cert_cache_total{event="fetch"} 5"#,
    ] {
        assert!(text.contains(line), "{line} in {text}");
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
/// most 64 names fetched or waiting; a fetch that finds no turn within the
/// fetch time limit, and a name past the 64, are answered 502, which SNS
/// retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_four_certificates_are_fetched_at_once() {
    let host = CertHost::start().await;
    let app = app_with_host(Backend::Sqlite, &host, 1000).await;
    let forged: Vec<Msg> = (0..70)
        .map(|i| signed_with_url(&format!("held-{i}.pem")))
        .collect();
    let answers = futures_util::future::join_all(forged.iter().map(|m| app.post(m))).await;
    let said = |answer: &(u16, serde_json::Value), words: &str| {
        answer.1["detail"]
            .as_str()
            .is_some_and(|d| d.contains(words))
    };
    let (mut fetched, mut no_turn, mut crowded) = (0, 0, 0);
    for answer in &answers {
        if said(answer, "other certificates were being fetched for longer") {
            assert_refused(answer, 502, "certificate_unavailable");
            no_turn += 1;
        } else if said(answer, "other certificates are being fetched or waiting") {
            assert_refused(answer, 502, "certificate_unavailable");
            crowded += 1;
        } else {
            assert_refused(answer, 403, "certificate_invalid");
            fetched += 1;
        }
    }
    assert_eq!(host.most_held_at_once(), 4, "fetches at once");
    assert_eq!(host.hits_with_prefix("held-"), fetched);
    // Each fetch takes 0.6 s and a turn is waited for at most 1 s: the
    // first four fetch, the next four may, no more.
    assert!((4..=8).contains(&fetched), "{fetched} fetched");
    assert!(crowded >= 1, "none past the 64");
    assert_eq!(fetched + no_turn + crowded, 70);
    // The turns and places were given back.
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
