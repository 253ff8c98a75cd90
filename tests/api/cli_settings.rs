//! Settings as a newcomer meets them: a bad value is refused naming its
//! variable, in words rather than a library's debug text; each subcommand's
//! help is short; logs carry no colour codes when they go to a file.

use std::path::Path;
use std::time::Duration;

use crate::cli::{bouncer, run, run_within};
use crate::helpers::{TempDir, fixture};

/// What no message to an operator should contain.
const DEBUG_TEXT: [&str; 6] = [
    "Some(",
    "Der(",
    "KeyMismatch",
    "peer sent",
    "Error {",
    "\u{1b}[",
];

fn refuses(ran: &crate::cli::Ran, words: &str) {
    assert_eq!(ran.code, 2, "{ran}");
    assert!(ran.stderr.contains(words), "`{words}`: {ran}");
    for debug in DEBUG_TEXT {
        assert!(!ran.stderr.contains(debug), "`{debug}`: {ran}");
    }
}

#[test]
fn a_bad_listen_addr_is_refused_by_name_before_anything_is_created() {
    let dir = TempDir::new();
    let ran = run(bouncer(dir.path()).env("LISTEN_ADDR", "bogus").arg("serve"));
    refuses(
        &ran,
        "LISTEN_ADDR `bogus` is not an address and port to listen on",
    );
    assert!(!dir.path().join("bouncer.db").exists());
}

fn serve_with_tls(dir: &Path, cert: Option<&Path>, key: Option<&Path>) -> crate::cli::Ran {
    let mut cmd = bouncer(dir);
    cmd.env("LISTEN_ADDR", "127.0.0.1:0");
    if let Some(cert) = cert {
        cmd.env("TLS_CERT_FILE", cert);
    }
    if let Some(key) = key {
        cmd.env("TLS_KEY_FILE", key);
    }
    run(cmd.arg("serve"))
}

#[test]
fn tls_files_that_cannot_serve_are_named_in_words() {
    let dir = TempDir::new();
    let cert = fixture("fixtures/test-only/TEST-ONLY-tls-cert.pem");
    let key = fixture("fixtures/test-only/TEST-ONLY-tls-key.pem");
    let other_key = fixture("fixtures/test-only/TEST-ONLY-ca-key.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQoLDA0ODw==\n-----END CERTIFICATE-----\n",
    )
    .expect("write");

    let ran = serve_with_tls(dir.path(), Some(&key), Some(&key));
    refuses(
        &ran,
        &format!("TLS_CERT_FILE {} holds no certificate", key.display()),
    );
    let ran = serve_with_tls(dir.path(), Some(&cert), Some(&cert));
    refuses(
        &ran,
        &format!("TLS_KEY_FILE {} holds no private key", cert.display()),
    );
    let ran = serve_with_tls(dir.path(), Some(&cert), Some(&other_key));
    refuses(
        &ran,
        &format!(
            "TLS_KEY_FILE {} is not the key of the certificate in TLS_CERT_FILE {}",
            other_key.display(),
            cert.display()
        ),
    );
    let ran = serve_with_tls(dir.path(), Some(&garbage), Some(&key));
    refuses(
        &ran,
        &format!(
            "TLS_CERT_FILE {}: certificate 1 of 1 is not a valid X.509 certificate",
            garbage.display()
        ),
    );
    let ran = serve_with_tls(dir.path(), Some(&cert), None);
    refuses(&ran, "TLS_CERT_FILE is set but TLS_KEY_FILE is not");
    let missing = dir.path().join("missing.pem");
    let ran = serve_with_tls(dir.path(), Some(&missing), Some(&key));
    refuses(
        &ran,
        &format!("cannot read TLS_CERT_FILE {}", missing.display()),
    );
    assert!(!dir.path().join("bouncer.db").exists());
}

#[test]
fn an_invalid_log_level_is_refused_naming_it() {
    let dir = TempDir::new();
    for level in ["inof", "info,bouncer=loud"] {
        let ran = run(bouncer(dir.path()).env("LOG_LEVEL", level).arg("status"));
        refuses(&ran, &format!("LOG_LEVEL `{level}`"));
    }
}

/// Numbers that cannot work are refused by name, never by a library's panic
/// (actix refuses more than 512 workers; SQLite's busy time-out is a C int)
/// nor silently bent (a body limit of 0 refuses every message).
#[test]
fn numbers_that_cannot_work_are_refused_by_name() {
    let dir = TempDir::new();
    for (var, value) in [
        ("HTTP_WORKERS", "513"),
        ("SQLITE_BUSY_TIMEOUT_MS", "99999999999"),
        ("SNS_MAX_BODY_BYTES", "0"),
        ("GUARD_WINDOW_SENDS", "0"),
        ("SOFT_BOUNCE_LIMIT", "0"),
        ("WRITE_BATCH_MAX", "0"),
        ("DATABASE_MAX_CONNECTIONS", "0"),
        // Served as 64 before, silently (an outside trial).
        ("HTTP_MAX_CONNECTIONS", "4"),
    ] {
        // A value taken by mistake would start the service.
        let ran = run_within(
            bouncer(dir.path()).env(var, value).arg("serve"),
            Duration::from_secs(30),
        );
        refuses(&ran, var);
        assert!(ran.stderr.contains(value), "{var}: {ran}");
        assert!(!ran.stderr.contains("panicked"), "{var}: {ran}");
    }
    assert!(!dir.path().join("bouncer.db").exists());
}

/// tokio's own variable, which tokio panicked on when it could not use it
/// (exit 101 and a library's text, an empty line in `.env` included).
#[test]
fn runtime_threads_that_cannot_work_are_refused_by_name() {
    let dir = TempDir::new();
    for value in ["0", "abc", "", "4096"] {
        let ran = run(bouncer(dir.path())
            .env("TOKIO_WORKER_THREADS", value)
            .arg("status"));
        refuses(
            &ran,
            &format!("TOKIO_WORKER_THREADS must be a whole number from 1 to 1024, not `{value}`"),
        );
        assert!(!ran.stderr.contains("panicked"), "{ran}");
    }
    // A number it can use runs as usual.
    let ran = run(bouncer(dir.path())
        .env("TOKIO_WORKER_THREADS", "3")
        .env("DATABASE_URL", "sqlite:threads.db")
        .arg("migrate"));
    assert_eq!(ran.code, 0, "{ran}");
}

/// `.env` in the working directory is read, and the environment wins over
/// it; one in a folder above is not read (dotenvy's search would have
/// taken `/.env` in a container, or `/tmp/.env` above a test's folder).
#[test]
fn dot_env_is_read_from_the_working_directory_only() {
    let dir = TempDir::new();
    std::fs::write(
        dir.path().join(".env"),
        "DATABASE_URL=sqlite:from-dotenv.db\n",
    )
    .expect(".env");
    let ran = run(bouncer(dir.path()).arg("migrate"));
    assert_eq!(ran.code, 0, "{ran}");
    assert!(dir.path().join("from-dotenv.db").exists(), "{ran}");
    assert!(!dir.path().join("bouncer.db").exists(), "{ran}");

    let ran = run(bouncer(dir.path())
        .env("DATABASE_URL", "sqlite:from-env.db")
        .arg("migrate"));
    assert_eq!(ran.code, 0, "{ran}");
    assert!(dir.path().join("from-env.db").exists(), "{ran}");

    let below = dir.path().join("below");
    std::fs::create_dir(&below).expect("folder");
    let ran = run(bouncer(&below).arg("migrate"));
    assert_eq!(ran.code, 0, "{ran}");
    assert!(
        below.join("bouncer.db").exists(),
        "the default, not the parent's .env: {ran}"
    );
    assert!(!below.join("from-dotenv.db").exists(), "{ran}");

    std::fs::write(below.join(".env"), "not a setting\n").expect(".env");
    let ran = run(bouncer(&below).arg("migrate"));
    refuses(&ran, "cannot read .env");
}

#[test]
fn each_subcommand_help_is_short_and_points_to_the_settings() {
    let dir = TempDir::new();
    for args in [
        &["status", "--help"][..],
        &["serve", "--help"],
        &["replay", "--help"],
        &["suppressions", "--help"],
        &["suppressions", "check", "--help"],
    ] {
        let ran = run(bouncer(dir.path()).args(args));
        assert_eq!(ran.code, 0, "{args:?}: {ran}");
        assert!(!ran.stdout.contains("[env: "), "{args:?}: {ran}");
        assert!(
            ran.stdout.contains("`bouncer --help` lists them all"),
            "{args:?}: {ran}"
        );
        assert!(ran.stdout.lines().count() < 40, "{args:?}: {ran}");
    }
}

#[test]
fn a_pin_that_is_not_an_sns_certificate_is_refused_in_words() {
    let dir = TempDir::new();
    let url = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem";
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQoLDA0ODw==\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    for (file, says) in [
        (
            fixture("fixtures/test-only/TEST-ONLY-tls-cert.pem"),
            "subject CN is `sns.us-east-1.amazonaws.com`, but us-east-1 signs as sns.amazonaws.com",
        ),
        (
            fixture("fixtures/test-only/TEST-ONLY-tls-key.pem"),
            "it holds a PEM `PRIVATE KEY`, not a CERTIFICATE",
        ),
        (
            garbage.clone(),
            "its CERTIFICATE block is not a valid X.509 certificate",
        ),
    ] {
        let ran = run(bouncer(dir.path())
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("SNS_CERT_PINS", format!("{url}={}", file.display()))
            .arg("serve"));
        refuses(
            &ran,
            &format!(
                "SNS_CERT_PINS: pinned certificate {} is refused for {url}: {says}",
                file.display()
            ),
        );
    }
    assert!(!dir.path().join("bouncer.db").exists());
}
