//! `bouncer prune`: old messages, events, counts and soft-bounce streaks
//! go; the suppression list and a streak that can still grow stay.

use bouncer::clock::Clock;
use bouncer::time::Timestamp;

use crate::feedback::{bounce, delivery, is_suppressed};
use crate::helpers::{Backend, TempDir, assert_status, eventually, spawn_app_with};
use crate::on_both_databases;
use crate::signing::{Msg, TOPIC};

/// `bouncer prune` on the database; what it printed, once it succeeded.
pub fn prune(database_url: &str) -> String {
    let dir = TempDir::new();
    let output = crate::cli::bouncer(dir.path())
        .env("DATABASE_URL", database_url)
        .arg("prune")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

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
    // A soft bounce then, never followed by a delivery: its streak is older
    // than the events kept (180 days), so it goes.
    let old_soft = bounce("Transient", "MailboxFull", "gone@example.com", &text(then))
        .set("Timestamp", &text(then))
        .sign();
    assert_status(&app.post(&old_bounce).await, 200, "stored");
    assert_status(&app.post(&old_delivery).await, 200, "stored");
    assert_status(&app.post(&old_soft).await, 200, "stored");
    // A month ago, past the 14-day window but within what is kept: its
    // streak stays, since a bounce that late can still be replayed.
    let month_ago = now - time::Duration::days(30);
    clock.set(Timestamp::from_datetime(month_ago));
    let month_soft = bounce(
        "Transient",
        "MailboxFull",
        "month@example.com",
        &text(month_ago),
    )
    .set("Timestamp", &text(month_ago))
    .sign();
    assert_status(&app.post(&month_soft).await, 200, "stored");
    // Today: one more message, and a soft bounce whose streak stays.
    clock.set(Timestamp::from_datetime(now));
    let fresh = Msg::notification(TOPIC, "today").sign();
    assert_status(&app.post(&fresh).await, 200, "stored");
    let recent_soft = bounce("Transient", "MailboxFull", "recent@example.com", &text(now))
        .set("Timestamp", &text(now))
        .sign();
    assert_status(&app.post(&recent_soft).await, 200, "stored");
    assert_eq!(app.db.total_messages().await, 6);
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM soft_bounces", None)
            .await,
        3
    );

    let stdout = prune(&app.db.url);
    assert!(
        stdout.contains("pruned: 3 sns_messages, 3 feedback_events, 3 rate_volume, 1 rate_buckets"),
        "{stdout}"
    );
    assert!(stdout.contains(", 1 soft_bounces"), "{stdout}");
    for kept in ["recent@example.com", "month@example.com"] {
        assert_eq!(
            app.db
                .scalar(
                    "SELECT COUNT(*) FROM soft_bounces WHERE email = $1",
                    Some(kept)
                )
                .await,
            1,
            "{kept}'s streak stays"
        );
    }
    assert_eq!(
        app.db.count_messages(&fresh.id()).await,
        1,
        "today's message stays"
    );
    assert_eq!(app.db.total_messages().await, 3);
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM feedback_events", None)
            .await,
        2,
        "only the recent soft bounces are left"
    );
    assert!(
        is_suppressed(&app, "old@example.com").await,
        "the suppression list is never pruned"
    );
    // Nothing more to prune the second time.
    assert!(
        prune(&app.db.url)
            .contains("pruned: 0 sns_messages, 0 feedback_events, 0 rate_volume, 0 rate_buckets, 0 alerts, 0 ses_pushes, 0 soft_bounces")
    );
    app.stop().await;
}

on_both_databases!(prune_deletes_what_retention_no_longer_keeps);

/// `bouncer prune` from a shell without the service's settings keeps what
/// the service keeps, by what `serve` recorded: a cron job that lacks
/// GUARD_MAX_AGE_DAYS and SNS_MAX_AGE_SECS deleted the rate counts the
/// guard still read and the messages whose redelivery the dedupe must
/// recognize (an outside trial then saw one bounce counted twice).
async fn prune_from_another_shell_keeps_what_the_service_keeps(backend: Backend) {
    let now = time::OffsetDateTime::now_utc();
    let then = now - time::Duration::days(40);
    let clock = Clock::fixed(Timestamp::from_datetime(then));
    let app = spawn_app_with(backend, move |s, hooks| {
        s.guard_max_age_days = 60;
        s.sns_max_age_secs = 365 * 86_400;
        s.retention_days = 30;
        hooks.clock = clock;
    })
    .await;
    let old = bounce("Permanent", "General", "old@example.com", &text(then))
        .set("Timestamp", &text(then))
        .sign();
    assert_status(&app.post(&old).await, 200, "stored");
    eventually("the service records its settings", || async {
        app.db
            .scalar("SELECT COUNT(*) FROM apply_settings", None)
            .await
            == 1
    })
    .await;
    let dir = TempDir::new();
    let ran = crate::cli::run(
        crate::cli::bouncer(dir.path())
            .env("DATABASE_URL", &app.db.url)
            .env("RETENTION_DAYS", "30")
            .arg("prune"),
    );
    assert_eq!(ran.code, 0, "{ran}");
    for line in [
        "kept at least as long as the service keeps",
        "messages at least 365 days (SNS_MAX_AGE_SECS",
        "what the guard counts at least 60 days (GUARD_MAX_AGE_DAYS)",
        "pruned: 0 sns_messages, 0 feedback_events, 0 rate_volume, 0 rate_buckets",
    ] {
        assert!(ran.stdout.contains(line), "{line}: {ran}");
    }
    let (_, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(sending["rates"]["hard_bounces"], 1, "{sending}");
    assert_status(&app.post(&old).await, 200, "duplicate");
    app.stop().await;
}

on_both_databases!(prune_from_another_shell_keeps_what_the_service_keeps);

/// `RETENTION_DAYS=0` is a valid setting (never prune): `prune` says so and
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_with_retention_off_says_so() {
    let dir = TempDir::new();
    let ran = crate::cli::run(
        crate::cli::bouncer(dir.path())
            .env(
                "DATABASE_URL",
                format!("sqlite:{}", dir.path().join("b.db").display()),
            )
            .env("RETENTION_DAYS", "0")
            .arg("prune"),
    );
    assert_eq!(
        (ran.code, ran.stdout.as_str()),
        (0, "RETENTION_DAYS is 0: nothing is pruned\n"),
        "{ran}"
    );
}

/// More old rows than one chunk (5,000), a run of them sharing one time
/// across the first chunk's boundary: all of them go, in chunks, and nothing
/// newer.
async fn a_backlog_larger_than_a_chunk_is_pruned_whole(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    // 12,001 counted sends from early 2025, one a second, except the 21
    // from the 4,991st to the 5,011th, which share one second.
    let old = if app.db.is_sqlite() {
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 12000) \
         INSERT INTO rate_volume (mail_id, recipient, seen_at) \
         SELECT 'old-' || i, 'r@example.com', \
         strftime('%Y-%m-%dT%H:%M:%fZ', '2025-01-01', \
         '+' || (CASE WHEN i BETWEEN 4990 AND 5010 THEN 4990 ELSE i END) || ' seconds') FROM n"
    } else {
        "INSERT INTO rate_volume (mail_id, recipient, seen_at) \
         SELECT 'old-' || i, 'r@example.com', \
         TIMESTAMPTZ '2025-01-01 00:00:00+00' \
         + (CASE WHEN i BETWEEN 4990 AND 5010 THEN 4990 ELSE i END) * INTERVAL '1 second' \
         FROM generate_series(0, 12000) AS i"
    };
    app.db.execute(old).await;
    let recent = if app.db.is_sqlite() {
        "INSERT INTO rate_volume (mail_id, recipient, seen_at) VALUES \
         ('new-1', 'r@example.com', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), \
         ('new-2', 'r@example.com', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
    } else {
        "INSERT INTO rate_volume (mail_id, recipient, seen_at) VALUES \
         ('new-1', 'r@example.com', now()), ('new-2', 'r@example.com', now())"
    };
    app.db.execute(recent).await;
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM rate_volume", None)
            .await,
        12_003
    );

    let stdout = prune(&app.db.url);
    assert!(stdout.contains(", 12001 rate_volume,"), "{stdout}");
    assert_eq!(
        app.db
            .scalar(
                "SELECT COUNT(*) FROM rate_volume WHERE mail_id LIKE 'new-%'",
                None
            )
            .await,
        2,
        "today's counted sends stay"
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM rate_volume", None)
            .await,
        2
    );
    app.stop().await;
}

on_both_databases!(a_backlog_larger_than_a_chunk_is_pruned_whole);
