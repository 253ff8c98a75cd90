use crate::helpers::{Backend, eventually, spawn_app, spawn_app_with};
use crate::on_both_databases;

async fn healthz_and_readyz_answer_when_the_database_is_up(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(
        app.get("/healthz").await,
        (200, serde_json::json!({"status": "alive"}))
    );
    assert_eq!(
        app.get("/readyz").await,
        (200, serde_json::json!({"status": "ready"}))
    );
    let msg = crate::signing::Msg::notification(crate::signing::TOPIC, "counted").sign();
    assert_eq!(app.post(&msg).await.0, 200);
    let foreign = crate::signing::Msg::notification("arn:aws:sns:us-east-1:1:other", "x").sign();
    assert_eq!(app.post(&foreign).await.0, 403);
    let (status, metrics) = app.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default();
    assert!(
        text.contains(r#"bouncer_sns_messages_total{type="Notification",outcome="stored"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"bouncer_sns_refusals_total{reason="topic_not_allowed"} 1"#),
        "{text}"
    );
    app.stop().await;
}

async fn readyz_is_503_when_the_database_is_down(backend: Backend) {
    let Backend::Postgres { server } = backend.clone() else {
        return; // an embedded SQLite file has no "down"; see durability tests
    };
    let target = server
        .rsplit_once('@')
        .map(|(_, host)| host.to_owned())
        .unwrap_or_else(|| "127.0.0.1:5432".into());
    let outage = crate::helpers::Outage::forward_to(target.parse().expect("host:port")).await;
    let app = spawn_app_with(backend, |s, _| {
        s.database_url = s
            .database_url
            .replacen(&target, &format!("127.0.0.1:{}", outage.port), 1);
    })
    .await;
    assert_eq!(app.get("/readyz").await.0, 200);
    outage.cut();
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "database_unavailable");
    outage.restore();
    app.stop().await;
}

on_both_databases!(
    healthz_and_readyz_answer_when_the_database_is_up,
    readyz_is_503_when_the_database_is_down,
);

/// The app serving HTTPS itself with the test certificate (for
/// `localhost`), its port, and a client that trusts the test CA.
async fn https_app(
    configure: impl FnOnce(&mut bouncer::config::Settings),
) -> (crate::helpers::TestApp, String, reqwest::Client) {
    let app = spawn_app_with(Backend::Sqlite, |s, _| {
        s.tls_cert_file = Some(crate::helpers::fixture(
            "fixtures/test-only/TEST-ONLY-tls-cert.pem",
        ));
        s.tls_key_file = Some(crate::helpers::fixture(
            "fixtures/test-only/TEST-ONLY-tls-key.pem",
        ));
        configure(s);
    })
    .await;
    let port = app
        .address
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let root = std::fs::read(crate::helpers::fixture(
        "fixtures/test-only/TEST-ONLY-ca-cert.pem",
    ))
    .expect("ca");
    let tls = bouncer::outbound::tls_client_config(&bouncer::outbound::OutboundOverrides {
        extra_root_pem: Some(root),
        resolve: vec![],
    })
    .expect("tls config");
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("client");
    (app, port, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_served_directly_when_a_certificate_is_given() {
    let (app, port, client) = https_app(|_| {}).await;
    let response = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .expect("HTTPS answers");
    assert_eq!(response.status().as_u16(), 200);
    // Plain HTTP to the TLS port is not served.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    app.stop().await;
}

/// Clients that connect and never start their TLS handshake are closed
/// after the handshake time-out; meanwhile a real client's handshake goes
/// ahead at once. (actix lets a worker handshake 256 connections at a time
/// unless told otherwise: 300 silent clients made a real one wait for the
/// first of them to time out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_do_not_hold_up_a_real_tls_handshake() {
    let (app, port, client) = https_app(|s| s.http_workers = 1).await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(
            tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
                .await
                .expect("connect"),
        );
    }
    // Let the acceptor take them all before the real client comes.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let response = client
        .get(format!("https://localhost:{port}/healthz"))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .expect("HTTPS answers");
    assert_eq!(response.status().as_u16(), 200);
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_millis(1500),
        "a real handshake waited {waited:?} behind silent clients"
    );
    drop(silent);
    app.stop().await;
}

/// SNS opens a connection per message, so each handshake counts: the
/// server picks AES-128-GCM with SHA-256 even from a client that lists
/// AES-256-GCM with SHA-384 first (as Java does), and a client that
/// comes back resumes its session with the ticket it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_take_the_cheaper_suite_and_resume() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::{ServerName, pem::PemObject};
    use tokio_rustls::rustls::{self, CipherSuite, HandshakeKind};
    let (app, port, _) = https_app(|_| {}).await;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| {
        // AES-256 first, as Java's default list has it.
        s.suite() != CipherSuite::TLS13_AES_256_GCM_SHA384
    });
    let root = crate::helpers::fixture("fixtures/test-only/TEST-ONLY-ca-cert.pem");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(root).expect("ca") {
        roots.add(cert.expect("cert")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        // Read the answer, and with it the ticket the server sends after
        // the handshake.
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        tls.flush().await.expect("sent");
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
        let (_, session) = tls.get_ref();
        seen.push((
            session.negotiated_cipher_suite().map(|s| s.suite()),
            session.handshake_kind(),
        ));
    }
    let aes_128 = Some(CipherSuite::TLS13_AES_128_GCM_SHA256);
    assert_eq!(
        seen,
        [
            (aes_128, Some(HandshakeKind::Full)),
            (aes_128, Some(HandshakeKind::Resumed))
        ]
    );
    // The same order in TLS 1.2 (the test certificate is RSA).
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384);
    let tls12 = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls12))
        .connect(name, tcp)
        .await
        .expect("handshake");
    assert_eq!(
        tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()),
        Some(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)
    );
    app.stop().await;
}

/// The DER of the first certificate in a fixture.
fn leaf(fixture: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(crate::helpers::fixture(fixture))
        .expect("fixture")
        .next()
        .expect("a certificate")
        .expect("PEM")
        .to_vec()
}

/// A renewed certificate is served after SIGHUP, without a restart (a
/// certbot deploy hook); a pair that does not check out is refused with
/// the reason and the certificate served kept; the process lives on and
/// stops cleanly on SIGTERM. (Before, SIGHUP ended the process at once,
/// without SIGTERM's drain, and a renewal needed a restart.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_renewed_certificate() {
    const RSA: (&str, &str) = (
        "fixtures/test-only/TEST-ONLY-tls-cert.pem",
        "fixtures/test-only/TEST-ONLY-tls-key.pem",
    );
    const ECDSA: (&str, &str) = (
        "fixtures/test-only/TEST-ONLY-tls-ecdsa-cert.pem",
        "fixtures/test-only/TEST-ONLY-tls-ecdsa-key.pem",
    );
    let dir = crate::helpers::TempDir::new();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let install = |(c, k): (&str, &str)| {
        std::fs::copy(crate::helpers::fixture(c), &cert).expect("cert");
        std::fs::copy(crate::helpers::fixture(k), &key).expect("key");
    };
    install(RSA);
    let port = crate::helpers::free_port();
    let admin = crate::helpers::free_port();
    let log = dir.path().join("serve.log");
    /// Ends the child whatever the test's outcome.
    struct Serve(std::process::Child);
    impl Drop for Serve {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = crate::cli::bouncer(dir.path())
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("ADMIN_LISTEN_ADDR", format!("127.0.0.1:{admin}"))
        .env("TLS_CERT_FILE", &cert)
        .env("TLS_KEY_FILE", &key)
        .env("LOG_LEVEL", "info")
        .arg("serve")
        .stdout(std::process::Stdio::from(
            std::fs::File::create(&log).expect("log file"),
        ))
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Serve)
        .expect("starts");
    let root = std::fs::read(crate::helpers::fixture(
        "fixtures/test-only/TEST-ONLY-ca-cert.pem",
    ))
    .expect("ca");
    let mut tls = bouncer::outbound::tls_client_config(&bouncer::outbound::OutboundOverrides {
        extra_root_pem: Some(root),
        resolve: vec![],
    })
    .expect("tls config");
    // A full handshake every time: a resumed session reports the
    // certificate of the session it resumes.
    tls.resumption = rustls::client::Resumption::disabled();
    // A new connection, so a new handshake, every time.
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let served = || async {
        let response = client
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await
            .ok()?;
        response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate().map(<[u8]>::to_vec))
    };
    // What `/metrics` says of the served certificate's expiry.
    let expiry = || async {
        let text = client
            .get(format!("https://localhost:{admin}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with("bouncer_tls_certificate_expiry_timestamp_seconds{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let not_after = |fixture: &str| {
        let der = leaf(fixture);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("X.509");
        Some(cert.validity().not_after.timestamp())
    };
    let pid = child.0.id().to_string();
    let signal = |name: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([&format!("-{name}"), &pid])
                .status()
                .expect("kill")
                .success()
        );
    };
    eventually("HTTPS with the first certificate", || async {
        served().await == Some(leaf(RSA.0))
    })
    .await;
    assert_eq!(expiry().await, not_after(RSA.0));
    install(ECDSA);
    signal("HUP");
    eventually("the renewed certificate is served", || async {
        served().await == Some(leaf(ECDSA.0))
    })
    .await;
    assert_eq!(expiry().await, not_after(ECDSA.0));
    // A key that is not the certificate's: refused, the served one kept.
    std::fs::copy(crate::helpers::fixture(RSA.1), &key).expect("key");
    signal("HUP");
    eventually("the refusal is logged", || async {
        std::fs::read_to_string(&log).is_ok_and(|l| {
            l.contains("the TLS files do not check out")
                && l.contains("is not the key of the certificate")
        })
    })
    .await;
    assert_eq!(served().await, Some(leaf(ECDSA.0)));
    assert!(
        child.0.try_wait().expect("wait").is_none(),
        "SIGHUP does not end the process"
    );
    signal("TERM");
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = child.0.try_wait().expect("wait") {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let status = exited.expect("bouncer stops on SIGTERM");
    assert!(status.success(), "{status}");
}
