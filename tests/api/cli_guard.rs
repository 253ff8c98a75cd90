//! `bouncer pause`, `resume` and `status` as separate processes: an alert
//! raised by a command without any alert channel reaches the running
//! service's webhook, and `status` says from when the rates count.

use crate::alert_sinks::Webhook;
use crate::cli::{bouncer, migrate, run, run_with};
use crate::guard::alerting;
use crate::helpers::{Backend, TempDir, TestDb, eventually, spawn_app_with};
use crate::on_both_databases;
use bouncer::clock::Clock;
use bouncer::time::Timestamp;

/// The alert a `bouncer pause` run with no alert channel in its
/// environment reaches the running service's webhook as, the service
/// reading `clock` (the system's when `None`).
async fn a_cli_pause_as_the_webhook_gets_it(
    backend: Backend,
    clock: Option<Clock>,
) -> serde_json::Value {
    let webhook = Webhook::start().await;
    let url = webhook.url.clone();
    let app = spawn_app_with(backend, move |s, hooks| {
        alerting(s, &url, None);
        if let Some(clock) = clock {
            hooks.clock = clock;
        }
    })
    .await;
    let dir = TempDir::new();
    let ran = run(bouncer(dir.path())
        .env("DATABASE_URL", &app.db.url)
        .env("USER", "ops")
        .args(["pause", "--by", "carol", "--reason", "incident 7"]));
    assert_eq!(ran.code, 0, "{ran}");
    assert_eq!(ran.stdout, "sending is now paused\n", "{ran}");
    eventually(
        "the running service delivers the CLI's pause alert",
        || async { webhook.kinds() == ["paused"] },
    )
    .await;
    let alert = webhook.received()[0].clone();
    app.stop().await;
    webhook.stop().await;
    alert
}

async fn a_pause_from_the_cli_is_alerted_by_the_running_service(backend: Backend) {
    let alert = a_cli_pause_as_the_webhook_gets_it(backend, None).await;
    assert_eq!(
        alert["text"], ":octagonal_sign: Sending paused by carol (cli:ops): incident 7",
        "{alert}"
    );
}

/// An alert raised while no process could deliver it (here: three and a
/// half hours before the service's clock) reaches the webhook saying when
/// it was raised, so that a pause long since resumed does not read as news.
async fn an_alert_sent_late_says_when_it_was_raised(backend: Backend) {
    // Three and a half hours: the command runs a little after `later` was read.
    let later =
        Timestamp::from_datetime(time::OffsetDateTime::now_utc() + time::Duration::minutes(210));
    let alert = a_cli_pause_as_the_webhook_gets_it(backend, Some(Clock::fixed(later))).await;
    let raised = alert["created_at"].as_str().unwrap_or_default();
    assert!(raised.starts_with("20"), "{alert}");
    assert_eq!(
        alert["text"],
        format!(
            ":octagonal_sign: Sending paused by carol (cli:ops): incident 7\n(raised at {raised}, sent 3 h later)"
        ),
        "{alert}"
    );
}

async fn status_counts_since_the_start_then_since_the_resume(backend: Backend) {
    let dir = TempDir::new();
    let db = TestDb::create(&backend, dir.path()).await;
    migrate(dir.path(), &db.url);
    let status = run_with(dir.path(), &db.url, &["status"]);
    assert_eq!(status.code, 0, "{status}");
    assert!(
        status.stdout.contains("; counting since the start)"),
        "{status}"
    );
    assert!(!status.stdout.contains("1970"), "{status}");
    for change in ["pause", "resume"] {
        let ran = run_with(
            dir.path(),
            &db.url,
            &[change, "--by", "carol", "--reason", "a drill"],
        );
        assert_eq!(ran.code, 0, "{ran}");
    }
    let status = run_with(dir.path(), &db.url, &["status"]);
    assert!(
        status.stdout.contains("; counting since the resume at 20"),
        "{status}"
    );
}

on_both_databases!(
    a_pause_from_the_cli_is_alerted_by_the_running_service,
    an_alert_sent_late_says_when_it_was_raised,
    status_counts_since_the_start_then_since_the_resume,
);

/// `alerts test` with no channel configured is a setting missing (exit 2),
/// not a channel that failed (exit 1), and says which settings to set.
#[test]
fn alerts_test_without_a_channel_is_an_error_naming_the_settings() {
    let dir = TempDir::new();
    let ran = run(bouncer(dir.path()).args(["alerts", "test"]));
    assert_eq!(ran.code, 2, "{ran}");
    assert!(ran.stderr.contains("ALERT_WEBHOOK_URL"), "{ran}");
}
