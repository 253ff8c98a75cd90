//! Fetching signing certificates: over TLS from an SNS host (a local
//! stand-in that the test resolves `sns.us-east-1.amazonaws.com` to, trusted
//! through a TEST-ONLY root that only test code can add), once per URL, with
//! a timeout, a size cap and no redirects; and never for a message that
//! fails a cheap check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bouncer::outbound::OutboundOverrides;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::helpers::{Backend, TestApp, assert_refused, fixture, spawn_app_with};
use crate::on_both_databases;
use crate::signing::{Msg, TEST_CERT_FILE, TOPIC};

const HOST: &str = "sns.us-east-1.amazonaws.com";

/// A local HTTPS server playing the SNS certificate host.
pub struct CertHost {
    pub port: u16,
    hits: Arc<Mutex<HashMap<String, usize>>>,
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
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(counter.clone()))
                .default_service(web::to(serve))
        })
        .workers(1)
        .disable_signals()
        .listen_rustls_0_23(listener, config)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        CertHost { port, hits, handle }
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

async fn serve(
    req: HttpRequest,
    hits: web::Data<Arc<Mutex<HashMap<String, usize>>>>,
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
