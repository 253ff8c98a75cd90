//! `bouncer prune`: old messages, events and counts go; the suppression
//! list stays.

use bouncer::clock::Clock;
use bouncer::time::Timestamp;

use crate::feedback::{bounce, delivery, is_suppressed};
use crate::helpers::{Backend, TempDir, assert_status, spawn_app_with};
use crate::on_both_databases;
use crate::signing::{Msg, TOPIC};

fn text(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn prune_deletes_what_retention_no_longer_keeps(backend: Backend) {
    let now = time::OffsetDateTime::now_utc();
    let then = now - time::Duration::days(400);
    let clock = Clock::fixed(Timestamp::from_datetime(then));
    let app_clock = clock.clone();
    let app = spawn_app_with(backend, move |_, hooks| hooks.clock = app_clock).await;
    // 400 days ago: a hard bounce and a delivery.
    let old_bounce = bounce("Permanent", "General", "old@example.com", &text(then))
        .set("Timestamp", &text(then))
        .sign();
    let old_delivery = delivery("kept@example.com", &text(then))
        .set("Timestamp", &text(then))
        .sign();
    assert_status(&app.post(&old_bounce).await, 200, "stored");
    assert_status(&app.post(&old_delivery).await, 200, "stored");
    // Today: one more message.
    clock.set(Timestamp::from_datetime(now));
    let fresh = Msg::notification(TOPIC, "today").sign();
    assert_status(&app.post(&fresh).await, 200, "stored");
    assert_eq!(app.db.total_messages().await, 3);

    let dir = TempDir::new();
    let output = crate::cli::bouncer(dir.path())
        .env("DATABASE_URL", &app.db.url)
        .arg("prune")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("pruned: 2 sns_messages, 2 feedback_events, 2 rate_volume, 1 rate_buckets"),
        "{stdout}"
    );
    assert_eq!(
        app.db.count_messages(&fresh.id()).await,
        1,
        "today's message stays"
    );
    assert_eq!(app.db.total_messages().await, 1);
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM feedback_events", None)
            .await,
        0
    );
    assert!(
        is_suppressed(&app, "old@example.com").await,
        "the suppression list is never pruned"
    );
    // Nothing more to prune the second time.
    let again = crate::cli::bouncer(dir.path())
        .env("DATABASE_URL", &app.db.url)
        .arg("prune")
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&again.stdout)
            .contains("pruned: 0 sns_messages, 0 feedback_events, 0 rate_volume, 0 rate_buckets")
    );
    app.stop().await;
}

on_both_databases!(prune_deletes_what_retention_no_longer_keeps);
