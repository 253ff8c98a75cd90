//! The reputation guard over HTTP: exact threshold edges, minimum volume,
//! warning then pause, one alert per crossing under concurrency and across
//! replicas, resume without flapping, and alerts that reach a webhook and an
//! SMTP server once, through failures and restarts.

use std::sync::Arc;

use bouncer::config::SmtpTls;
use bouncer::guard::{GuardPolicy, rates_for};
use bouncer::store::guard::sending_state_in;
use bouncer::store::{Access, Store};
use bouncer::time::Timestamp;
use serde_json::{Value, json};

use crate::alert_sinks::{SmtpSink, Webhook};
use crate::feedback::complaint;
use crate::helpers::{
    Backend, TempDir, TestApp, TestDb, assert_status, eventually, eventually_within,
    spawn_app_with, start, test_settings,
};
use crate::on_both_databases;
use crate::page::{hour_ago, seed_hour, seed_hour_in, time_literal};
use crate::signing::{Msg, TOPIC, unique_id};

const AT: &str = "2026-11-25T08:00:00.000Z";

/// One SES Delivery notification for a mail to `n` recipients: `n` sends.
pub fn deliveries(n: usize) -> Msg {
    let tag = unique_id();
    let recipients: Vec<String> = (0..n).map(|i| format!("r{i}-{tag}@example.com")).collect();
    let ses = json!({
        "notificationType": "Delivery",
        "delivery": {"timestamp": AT, "recipients": recipients, "smtpResponse": "250 ok"},
        "mail": {"timestamp": AT, "messageId": format!("ses-{tag}"), "source": "a@signals.example", "destination": recipients},
    });
    Msg::notification(TOPIC, &ses.to_string()).sign()
}

/// One SES hard-bounce notification for `n` recipients of one mail.
pub fn hard_bounces(n: usize) -> Msg {
    let tag = unique_id();
    let recipients: Vec<Value> = (0..n)
        .map(|i| json!({"emailAddress": format!("gone{i}-{tag}@example.com"), "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 unknown"}))
        .collect();
    let ses = json!({
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General", "bouncedRecipients": recipients, "timestamp": AT, "feedbackId": format!("fb-{tag}")},
        "mail": {"timestamp": AT, "messageId": format!("ses-{tag}"), "destination": []},
    });
    Msg::notification(TOPIC, &ses.to_string()).sign()
}

pub fn a_complaint() -> Msg {
    complaint(Some("abuse"), &format!("angry-{}@example.com", unique_id()))
}

/// Settings that send alerts to `webhook` (and `smtp`), retrying fast.
pub fn alerting(s: &mut bouncer::config::Settings, webhook: &str, smtp: Option<u16>) {
    s.alert_webhook_url = Some(webhook.to_owned());
    s.alert_retry_min_ms = 100;
    if let Some(port) = smtp {
        s.smtp_host = Some("127.0.0.1".into());
        s.smtp_port = port;
        s.smtp_tls = SmtpTls::None;
        s.smtp_from_email = Some("bouncer@signals.example".into());
        s.smtp_from_name = "Signals bouncer".into();
        s.alert_emails = vec!["admin@signals.example".into(), "ops@signals.example".into()];
    }
}

async fn state_is(app: &TestApp) -> String {
    // `id` is an integer column: compare through SQL that both accept.
    app.db
        .text(
            "SELECT state FROM sending_state WHERE CAST(id AS TEXT) = $1",
            "1",
        )
        .await
        .unwrap_or_default()
}

pub async fn alert_kinds(app: &TestApp) -> Vec<String> {
    let n = app.db.scalar("SELECT COUNT(*) FROM alerts", None).await;
    let mut kinds = Vec::new();
    for i in 1..=n {
        let kind = app
            .db
            .text(
                "SELECT kind FROM alerts WHERE CAST(id AS TEXT) = $1",
                &i.to_string(),
            )
            .await;
        kinds.push(kind.unwrap_or_default());
    }
    kinds
}

async fn post_ok(app: &TestApp, msg: &Msg) {
    assert_status(&app.post(msg).await, 200, "stored");
}

async fn the_complaint_threshold_is_strict_and_a_warning_comes_first(backend: Backend) {
    let webhook = Webhook::start().await;
    let url = webhook.url.clone();
    let app = spawn_app_with(backend, move |s, _| {
        alerting(s, &url, None);
    })
    .await;
    post_ok(&app, &deliveries(1000)).await;
    post_ok(&app, &a_complaint()).await;
    assert_eq!(
        state_is(&app).await,
        "active",
        "1 complaint in exactly 1,000 sends is not above 0.1%"
    );
    assert_eq!(
        alert_kinds(&app).await,
        ["warning"],
        "but above the 0.05% warning"
    );
    post_ok(&app, &a_complaint()).await;
    assert_eq!(state_is(&app).await, "paused", "2 in 1,000 are");
    assert_eq!(alert_kinds(&app).await, ["warning", "paused"]);
    let (_, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(sending["state"], "paused");
    assert_eq!(sending["at_last_pause"]["sends"], 1000);
    assert_eq!(sending["at_last_pause"]["complaints"], 2);
    assert_eq!(sending["at_last_pause"]["complaint_rate"], 0.002);
    eventually("both alerts reach the webhook", || async {
        webhook.kinds() == ["warning", "paused"]
    })
    .await;
    let text = webhook.received()[1]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.contains("complaint rate 0.200% (2 complaints)") && text.contains("last 1000 sends"),
        "{text}"
    );
    app.stop().await;
    webhook.stop().await;
}

async fn the_bounce_threshold_is_strict_and_counts_hard_bounces_as_sends(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.guard_warn = false).await;
    post_ok(&app, &deliveries(950)).await;
    post_ok(&app, &hard_bounces(50)).await;
    assert_eq!(
        state_is(&app).await,
        "active",
        "50 of 1,000 sends is exactly 5%"
    );
    // Soft bounces and OnAccountSuppressionList never count as hard bounces.
    post_ok(
        &app,
        &crate::feedback::bounce("Transient", "MailboxFull", "full@example.com", AT),
    )
    .await;
    post_ok(
        &app,
        &crate::feedback::bounce(
            "Permanent",
            "OnAccountSuppressionList",
            "listed@example.com",
            AT,
        ),
    )
    .await;
    assert_eq!(state_is(&app).await, "active");
    post_ok(&app, &hard_bounces(1)).await;
    assert_eq!(state_is(&app).await, "paused", "51 of 1,002 is above 5%");
    assert_eq!(alert_kinds(&app).await, ["paused"]);
    let (_, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(
        (
            sending["at_last_pause"]["sends"].as_i64(),
            sending["at_last_pause"]["hard_bounces"].as_i64()
        ),
        (Some(1002), Some(51))
    );
    app.stop().await;
}

async fn below_the_minimum_volume_nothing_happens(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    post_ok(&app, &deliveries(500)).await;
    for _ in 0..5 {
        post_ok(&app, &a_complaint()).await;
    }
    assert_eq!(
        state_is(&app).await,
        "active",
        "1% complaints, but only 500 sends"
    );
    assert!(alert_kinds(&app).await.is_empty());
    // The deliveries that bring the window to the minimum volume pause it
    // themselves: no further complaint is needed.
    post_ok(&app, &deliveries(499)).await;
    assert_eq!(state_is(&app).await, "active", "999 sends");
    post_ok(&app, &deliveries(1)).await;
    assert_eq!(
        state_is(&app).await,
        "paused",
        "5 in 1,000 once the volume is there"
    );
    assert_eq!(alert_kinds(&app).await, ["paused"]);
    let (_, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(
        (
            sending["at_last_pause"]["sends"].as_i64(),
            sending["at_last_pause"]["complaints"].as_i64()
        ),
        (Some(1000), Some(5))
    );
    app.stop().await;
}

/// Waits until the service has recorded the rules it applies messages
/// with (`serve` does it at start-up, beside serving).
async fn rules_recorded(app: &TestApp) {
    eventually("serve recorded its rules", || async {
        app.db
            .scalar("SELECT COUNT(*) FROM apply_settings", None)
            .await
            == 1
    })
    .await;
}

async fn warned(app: &TestApp) -> bool {
    !app.admin_get("/v1/sending").await.1["warned_at"].is_null()
}

/// README: the warning "re-arms when both rates are back at or below"
/// the warning lines, whatever brought them there: deliveries alone do.
async fn deliveries_alone_re_arm_the_warning(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    post_ok(&app, &deliveries(1000)).await;
    post_ok(&app, &a_complaint()).await;
    assert_eq!(alert_kinds(&app).await, ["warning"], "0.1% is above 0.05%");
    assert!(warned(&app).await);
    post_ok(&app, &deliveries(999)).await;
    assert!(warned(&app).await, "1 in 1,999 is still above 0.05%");
    post_ok(&app, &deliveries(1)).await;
    assert!(!warned(&app).await, "1 in 2,000 is back at 0.05%: re-armed");
    post_ok(&app, &a_complaint()).await;
    assert_eq!(
        state_is(&app).await,
        "active",
        "2 in 2,000 is not above 0.1%"
    );
    assert_eq!(
        alert_kinds(&app).await,
        ["warning", "warning"],
        "the second crossing warns again"
    );
    app.stop().await;
}

/// A window of 10,000 sends filled by 100 hours of history: the guard
/// counts exactly the newest hours that fill it, days of them, and none
/// older. Each stretch of hours has its own bounce count, so stopping
/// early or reading every hour shows in the rate.
async fn a_window_filled_over_days_counts_exactly_its_newest_hours(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    for ago in 1..=120 {
        let hard_bounces = match ago {
            1..=24 => 1,
            25..=72 => 2,
            73..=100 => 10,
            _ => 50,
        };
        seed_hour(&app, &hour_ago(ago), 100, hard_bounces, 0).await;
    }
    let (status, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(status, 200, "{sending}");
    let rates = &sending["rates"];
    assert_eq!(
        (&rates["sends"], &rates["hard_bounces"]),
        (&json!(100 * 100), &json!(24 + 48 * 2 + 28 * 10)),
        "{sending}"
    );
    // 400 in 10,000 (4%) is above the warning line and under the pause
    // line: the next message makes the guard warn, and no more.
    post_ok(&app, &deliveries(1)).await;
    assert_eq!(alert_kinds(&app).await, ["warning"]);
    assert_eq!(state_is(&app).await, "active");
    app.stop().await;
}

/// A window filled within the hour of a resume counts from the resume: the
/// hour's complaints before it stay out, its sends after it fill the window.
async fn a_full_window_in_the_hour_of_a_resume_counts_from_the_resume(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| {
        s.guard_window_sends = 1000;
        s.guard_warn = false;
    })
    .await;
    post_ok(&app, &deliveries(1000)).await;
    post_ok(&app, &a_complaint()).await;
    post_ok(&app, &a_complaint()).await;
    assert_eq!(state_is(&app).await, "paused", "2 in 1,002 is above 0.1%");
    let resumed = app
        .client
        .put(format!("{}/v1/sending", app.admin_address))
        .body(r#"{"state": "active", "by": "Dana", "reason": "list cleaned"}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(resumed.status(), 200);
    post_ok(&app, &deliveries(1500)).await;
    let (_, sending) = app.admin_get("/v1/sending").await;
    let rates = &sending["rates"];
    assert_eq!(
        (&rates["sends"], &rates["complaints"]),
        (&json!(1500), &json!(0)),
        "{sending}"
    );
    let since = rates["counting_since"].as_str().expect("counting_since");
    assert_eq!(
        rates["window_start"],
        format!("{}:00:00.000Z", &since[..13]),
        "the window starts with the hour of the resume"
    );
    post_ok(&app, &a_complaint()).await;
    assert_eq!(
        state_is(&app).await,
        "active",
        "1 in 1,501 is not above 0.1%"
    );
    app.stop().await;
}

/// A window that reaches back to a resume two days ago: whole days in
/// between, and of the resume's hour only what came after the resume.
async fn a_window_reaching_back_to_a_resume_days_ago_counts_from_it(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.guard_window_sends = 4930).await;
    for ago in 1..=60 {
        let hard_bounces = if ago == 50 { 20 } else { 1 };
        seed_hour(&app, &hour_ago(ago), 100, hard_bounces, 0).await;
    }
    let resume = time_literal(&app.db, &hour_ago(50).replace(":00:00.000Z", ":30:00.000Z"));
    app.db
        .execute(&format!(
            "UPDATE sending_state SET counting_since = {resume}, baseline_sends = 60, \
             baseline_hard_bounces = 15, baseline_delivery_sends = 45, baseline_complaints = 0"
        ))
        .await;
    assert_eq!(
        window_of(&app).await,
        (Some(49 * 100 + 40), Some(49 + 5), Some(hour_ago(50)))
    );
    app.stop().await;
}

/// The window follows every change of the hourly buckets, not only the
/// writer's: an operator's correction of an hour, an hour deleted
/// (retention, or by hand), an hour moved to another day. (SQLite reads a
/// long window by days, summed by triggers on the hours.)
async fn a_window_follows_hours_changed_by_hand(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.guard_window_sends = 5000).await;
    for ago in 1..=80 {
        let hard_bounces = match ago {
            20 => 7,
            52 => 9,
            _ => 1,
        };
        seed_hour(&app, &hour_ago(ago), 100, hard_bounces, 0).await;
    }
    // The newest 50 hours.
    assert_eq!(
        window_of(&app).await,
        (Some(5000), Some(49 + 7), Some(hour_ago(50)))
    );
    let hour = |ago| time_literal(&app.db, &hour_ago(ago));
    app.db
        .execute(&format!(
            "UPDATE rate_buckets SET hard_bounces = 3 WHERE bucket_start = {}",
            hour(20)
        ))
        .await;
    assert_eq!(
        window_of(&app).await,
        (Some(5000), Some(49 + 3), Some(hour_ago(50))),
        "an hour corrected"
    );
    app.db
        .execute(&format!(
            "DELETE FROM rate_buckets WHERE bucket_start = {}",
            hour(10)
        ))
        .await;
    assert_eq!(
        window_of(&app).await,
        (Some(5000), Some(49 + 3), Some(hour_ago(51))),
        "an hour deleted: the window reaches one hour further"
    );
    app.db
        .execute(&format!(
            "UPDATE rate_buckets SET bucket_start = {} WHERE bucket_start = {}",
            hour(100),
            hour(30)
        ))
        .await;
    assert_eq!(
        window_of(&app).await,
        (Some(5000), Some(48 + 3 + 9), Some(hour_ago(52))),
        "an hour moved out of the window: it reaches the hour of 9 bounces"
    );
    app.stop().await;
}

/// Days of `rate_days` that differ from the sum of their hours, counted
/// both ways (a day missing, a day left over, a day with other sums).
pub async fn days_unlike_their_hours(db: &TestDb) -> i64 {
    const SQLITE: &str = "WITH h AS (SELECT substr(bucket_start, 1, 10) AS day, SUM(sends) AS s, \
        SUM(hard_bounces) AS b, SUM(complaints) AS c, SUM(delivery_sends) AS d FROM rate_buckets GROUP BY 1), \
        r AS (SELECT day, sends AS s, hard_bounces AS b, complaints AS c, delivery_sends AS d FROM rate_days) \
        SELECT (SELECT COUNT(*) FROM (SELECT * FROM h EXCEPT SELECT * FROM r)) \
             + (SELECT COUNT(*) FROM (SELECT * FROM r EXCEPT SELECT * FROM h))";
    const POSTGRES: &str = "WITH h AS (SELECT (bucket_start AT TIME ZONE 'UTC')::date AS day, \
        CAST(SUM(sends) AS BIGINT) AS s, CAST(SUM(hard_bounces) AS BIGINT) AS b, \
        CAST(SUM(complaints) AS BIGINT) AS c, CAST(SUM(delivery_sends) AS BIGINT) AS d \
        FROM rate_buckets GROUP BY 1), \
        r AS (SELECT day, sends AS s, hard_bounces AS b, complaints AS c, delivery_sends AS d FROM rate_days) \
        SELECT (SELECT COUNT(*) FROM (SELECT * FROM h EXCEPT SELECT * FROM r) x) \
             + (SELECT COUNT(*) FROM (SELECT * FROM r EXCEPT SELECT * FROM h) y)";
    db.scalar(if db.is_sqlite() { SQLITE } else { POSTGRES }, None)
        .await
}

/// A window a week long, read by days on both databases (PostgreSQL
/// reads the newest days' hours with the totals, then whole days), follows
/// every change of the hours behind those days: an hour corrected,
/// deleted, moved to another day, and the whole table emptied and filled
/// again.
async fn a_window_of_days_follows_hours_changed_by_hand(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.guard_window_sends = 15_000).await;
    let seed_all = async |hard_bounces: fn(i64) -> i64| {
        for ago in 1..=200 {
            seed_hour(&app, &hour_ago(ago), 100, hard_bounces(ago), 0).await;
        }
    };
    seed_all(|ago| match ago {
        120 => 7,
        152 => 9,
        _ => 1,
    })
    .await;
    assert_eq!(
        window_of(&app).await,
        (Some(15_000), Some(149 + 7), Some(hour_ago(150))),
        "the newest 150 hours"
    );
    let hour = |ago| time_literal(&app.db, &hour_ago(ago));
    let changes = [
        (
            format!(
                "UPDATE rate_buckets SET hard_bounces = 3 WHERE bucket_start = {}",
                hour(120)
            ),
            (Some(15_000), Some(149 + 3), Some(hour_ago(150))),
            "an hour corrected",
        ),
        (
            format!(
                "DELETE FROM rate_buckets WHERE bucket_start = {}",
                hour(110)
            ),
            (Some(15_000), Some(149 + 3), Some(hour_ago(151))),
            "an hour deleted: the window reaches one hour further",
        ),
        (
            format!(
                "UPDATE rate_buckets SET bucket_start = {} WHERE bucket_start = {}",
                hour(300),
                hour(130)
            ),
            (Some(15_000), Some(148 + 3 + 9), Some(hour_ago(152))),
            "an hour moved out of the window: it reaches the hour of 9 bounces",
        ),
    ];
    for (sql, window, what) in changes {
        app.db.execute(&sql).await;
        assert_eq!(window_of(&app).await, window, "{what}");
        assert_eq!(days_unlike_their_hours(&app.db).await, 0, "{what}");
    }
    app.db
        .execute(if app.db.is_sqlite() {
            "DELETE FROM rate_buckets"
        } else {
            "TRUNCATE rate_buckets"
        })
        .await;
    assert_eq!(
        window_of(&app).await,
        (Some(0), Some(0), None),
        "no hours left"
    );
    seed_all(|_| 2).await;
    assert_eq!(
        window_of(&app).await,
        (Some(15_000), Some(300), Some(hour_ago(150))),
        "the days of the hours emptied are gone with them"
    );
    assert_eq!(days_unlike_their_hours(&app.db).await, 0);
    if !app.db.is_sqlite() {
        // PostgreSQL's days only ever add differences: a day's row lost
        // (deleted by hand) is summed again by the next batch of its day.
        post_ok(&app, &deliveries(1)).await;
        app.db
            .execute("DELETE FROM rate_days WHERE day = (now() AT TIME ZONE 'UTC')::date")
            .await;
        post_ok(&app, &deliveries(1)).await;
        assert_eq!(
            days_unlike_their_hours(&app.db).await,
            0,
            "today summed again"
        );
    }
    app.stop().await;
}

/// Back to the schema before migration 0011, the hours kept.
async fn before_rate_days(db: &TestDb) {
    let downgrade: &[&str] = if db.is_sqlite() {
        &[
            "DROP TRIGGER rate_days_insert",
            "DROP TRIGGER rate_days_update",
            "DROP TRIGGER rate_days_move",
            "DROP TRIGGER rate_days_delete",
            "DROP TABLE rate_days",
        ]
    } else {
        &[
            "DROP TRIGGER rate_days_follow ON rate_buckets",
            "DROP TRIGGER rate_days_truncate ON rate_buckets",
            "DROP FUNCTION rate_days_follow()",
            "DROP FUNCTION rate_days_truncate()",
            "DROP FUNCTION rate_days_add(TIMESTAMPTZ, BIGINT, BIGINT, BIGINT, BIGINT, BIGINT)",
            "DROP TABLE rate_days",
        ]
    };
    for sql in downgrade {
        db.execute(sql).await;
    }
    db.execute("DELETE FROM _sqlx_migrations WHERE version = 11")
        .await;
}

/// Waits until one session of `db` (PostgreSQL) waits for a lock.
pub async fn one_session_waits_for_a_lock(db: &TestDb, what: &str) {
    eventually(what, || async {
        db.scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock'",
            None,
        )
        .await
            == 1
    })
    .await;
}

/// A database upgraded with hours in it starts its days from them, and
/// the window read by days counts them. On PostgreSQL a replica of the
/// version before is writing meanwhile (a rolling upgrade): its batch has
/// added to an hour and commits while the migration runs, and counts in
/// its day too.
async fn an_upgraded_database_sums_its_days_from_its_hours(backend: Backend) {
    use sqlx::Connection;
    let dir = TempDir::new();
    let db = TestDb::create(&backend, dir.path()).await;
    crate::cli::migrate(dir.path(), &db.url);
    before_rate_days(&db).await;
    for ago in 1..=200 {
        seed_hour_in(&db, &hour_ago(ago), 100, if ago == 140 { 40 } else { 1 }, 0).await;
    }
    let mut writer = match db.is_sqlite() {
        true => None,
        false => Some(sqlx::PgConnection::connect(&db.url).await.expect("connect")),
    };
    let mut in_flight = match writer.as_mut() {
        Some(conn) => Some(conn.begin().await.expect("begin")),
        None => None,
    };
    if let Some(batch) = in_flight.as_mut() {
        sqlx::query(
            "INSERT INTO rate_buckets (bucket_start, sends, hard_bounces, complaints, delivery_sends) \
             VALUES ($1::timestamptz, 100, 50, 0, 50) ON CONFLICT (bucket_start) DO UPDATE SET \
             sends = rate_buckets.sends + excluded.sends, hard_bounces = rate_buckets.hard_bounces + excluded.hard_bounces, \
             delivery_sends = rate_buckets.delivery_sends + excluded.delivery_sends",
        )
        .bind(hour_ago(140))
        .execute(&mut **batch)
        .await
        .expect("a batch adds to its hour");
    }
    let migrating = crate::cli::bouncer(dir.path())
        .env("DATABASE_URL", &db.url)
        .arg("migrate")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    if let Some(batch) = in_flight {
        one_session_waits_for_a_lock(&db, "the migration waits for the batch").await;
        batch.commit().await.expect("the batch commits");
    }
    let output = tokio::task::spawn_blocking(|| migrating.wait_with_output())
        .await
        .expect("the migration's task")
        .expect("the migration ends");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout} {output:?}");
    assert!(
        stdout.starts_with("applied 1 migration to the "),
        "{stdout}"
    );
    assert_eq!(days_unlike_their_hours(&db).await, 0);
    let ran = crate::cli::run(
        crate::cli::bouncer(dir.path())
            .env("DATABASE_URL", &db.url)
            .env("GUARD_WINDOW_SENDS", "15000")
            .arg("status"),
    );
    assert_eq!(ran.code, 0, "{ran}");
    // The newest 150 hours, past the hour of 40 bounces; with the batch,
    // 149 (that hour holds 200 sends and 90 bounces).
    let (hard_bounces, first_hour) = match db.is_sqlite() {
        true => (149 + 40, 150),
        false => (148 + 90, 149),
    };
    assert!(
        ran.stdout
            .contains(&format!("({hard_bounces} hard bounces;")),
        "{ran}"
    );
    assert!(
        ran.stdout.contains(&format!(
            "15000 sends (last 15000 sends, at most 30 days; from {};",
            hour_ago(first_hour)
        )),
        "{ran}"
    );
}

/// Two replicas change hours of one day at once (one adds a batch to its
/// hour while the other begins the next hour): the day holds both, and a
/// window that takes the day whole counts both. A day summed again from
/// one transaction's snapshot would lose the other's batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_to_the_hours_of_one_day_add_up_on_postgres() {
    use sqlx::Connection;
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let (_dir, db, store, policy) = migrated_store(&backend, |s| s.guard_window_sends = 2550).await;
    // A day six days back (older than the hours PostgreSQL reads with the
    // totals) and the day before it.
    let now = Timestamp::from_datetime(time::OffsetDateTime::now_utc());
    let day = bouncer::store::guard::day_of(now, 6).to_text();
    let before = bouncer::store::guard::day_of(now, 7).to_text();
    let at = |day: &str, hour: usize| format!("{}T{hour:02}:00:00.000Z", &day[..10]);
    for hour in 0..24 {
        seed_hour_in(&db, &at(&before, hour), 100, 1, 0).await;
        if hour != 6 {
            seed_hour_in(&db, &at(&day, hour), 100, 0, 0).await;
        }
    }
    let mut first = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let mut second = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let mut adding = first.begin().await.expect("begin");
    sqlx::query(
        "UPDATE rate_buckets SET sends = sends + 100, hard_bounces = hard_bounces + 10 \
         WHERE bucket_start = $1::timestamptz",
    )
    .bind(at(&day, 5))
    .execute(&mut *adding)
    .await
    .expect("a batch added to its hour");
    let next_hour = at(&day, 6);
    let beginning = tokio::spawn(async move {
        sqlx::query(
            "INSERT INTO rate_buckets (bucket_start, sends, hard_bounces, complaints, delivery_sends) \
             VALUES ($1::timestamptz, 100, 20, 0, 80)",
        )
        .bind(next_hour)
        .execute(&mut second)
        .await
        .expect("the next hour begun");
    });
    one_session_waits_for_a_lock(&db, "the next hour waits for the day's row").await;
    adding.commit().await.expect("commit");
    beginning.await.expect("the next hour's task");
    assert_eq!(days_unlike_their_hours(&db).await, 0);
    // The day holds 2,500 sends and 30 hard bounces: taken whole, then the
    // last hour of the day before fills the window.
    let (_, rates) = bouncer::guard::current_rates(&store, &policy)
        .await
        .expect("the rates");
    assert_eq!(
        (
            rates.sends,
            rates.hard_bounces,
            rates.window_start.map(Timestamp::to_text)
        ),
        (2600, 31, Some(at(&before, 23)))
    );
    store.close().await;
}

/// A window starts at its oldest hour that counts something, full or not,
/// alike in `/v1/sending`, the rate history's current window and `bouncer
/// status`: an hour of zeros (written by hand) is no start, and right
/// after a resume the resume's hour counts nothing yet, so the window has
/// no start until the next event.
async fn a_window_starts_at_its_oldest_hour_that_counts(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    let starts = async || {
        let (_, history) = app.admin_get("/v1/rates/history").await;
        let (_, _, start) = window_of(&app).await;
        let shown = history["window"]["start"].as_str().map(str::to_owned);
        assert_eq!(
            start, shown,
            "the history's current window: {}",
            history["window"]
        );
        start
    };
    seed_hour(&app, &hour_ago(3), 0, 0, 0).await;
    seed_hour(&app, &hour_ago(2), 300, 3, 0).await;
    assert_eq!(
        starts().await,
        Some(hour_ago(2)),
        "the hour of zeros is no start"
    );
    seed_hour(&app, &hour_ago(0), 500, 40, 0).await;
    for state in ["paused", "active"] {
        let changed = app
            .client
            .put(format!("{}/v1/sending", app.admin_address))
            .body(format!(
                r#"{{"state": "{state}", "by": "Dana", "reason": "list checked"}}"#
            ))
            .send()
            .await
            .expect("answer");
        assert_eq!(changed.status(), 200);
    }
    assert_eq!(
        window_of(&app).await,
        (Some(0), Some(0), None),
        "nothing counted since the resume"
    );
    assert_eq!(starts().await, None);
    let dir = TempDir::new();
    let status = crate::cli::run_with(dir.path(), &app.db.url, &["status"]);
    assert!(
        status
            .stdout
            .contains("window:         0 sends (last 10000 sends, at most 30 days; from -;"),
        "{status}"
    );
    post_ok(&app, &deliveries(1)).await;
    assert_eq!(
        starts().await,
        Some(hour_ago(0)),
        "the resume's hour counts"
    );
    app.stop().await;
}

/// The window's sends, hard bounces and first hour, as `/v1/sending` shows
/// them.
async fn window_of(app: &TestApp) -> (Option<i64>, Option<i64>, Option<String>) {
    let (status, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(status, 200, "{sending}");
    let rates = &sending["rates"];
    (
        rates["sends"].as_i64(),
        rates["hard_bounces"].as_i64(),
        rates["window_start"].as_str().map(str::to_owned),
    )
}

/// A full window that reaches back to the maximum age counts the hours
/// from its first, whatever the hour of day (the maximum age rarely ends
/// at midnight).
async fn a_full_window_reaching_the_maximum_age_counts_from_its_first_hour(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| {
        s.guard_window_sends = 4750;
        s.guard_max_age_days = 2;
    })
    .await;
    for ago in 1..=60 {
        let hard_bounces = if ago == 48 { 30 } else { 1 };
        seed_hour(&app, &hour_ago(ago), 100, hard_bounces, 0).await;
    }
    assert_eq!(
        window_of(&app).await,
        (Some(48 * 100), Some(47 + 30), Some(hour_ago(48)))
    );
    app.stop().await;
}

/// A window holding exactly `GUARD_WINDOW_SENDS` sends is full: complaints
/// in an older hour without sends (mail sent before it) stay out of it.
async fn a_window_of_exactly_its_sends_leaves_older_hours_out(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| {
        s.guard_window_sends = 1000;
        s.guard_warn = false;
    })
    .await;
    seed_hour(&app, &hour_ago(1), 1000, 0, 0).await;
    seed_hour(&app, &hour_ago(2), 0, 0, 5).await;
    let (_, sending) = app.admin_get("/v1/sending").await;
    let rates = &sending["rates"];
    assert_eq!(
        (
            &rates["sends"],
            &rates["complaints"],
            &rates["window_start"]
        ),
        (&json!(1000), &json!(0), &json!(hour_ago(1))),
        "{sending}"
    );
    post_ok(&app, &deliveries(1)).await;
    assert_eq!(state_is(&app).await, "active", "no complaint in the window");
    app.stop().await;
}

/// A new database migrated, its store opened without a service, and the
/// guard's policy of the same settings, changed by `adjust`.
pub async fn migrated_store(
    backend: &Backend,
    adjust: impl FnOnce(&mut bouncer::config::Settings),
) -> (TempDir, TestDb, Store, GuardPolicy) {
    let dir = TempDir::new();
    let db = TestDb::create(backend, dir.path()).await;
    let mut settings = test_settings(&db.url, dir.path());
    adjust(&mut settings);
    let policy = GuardPolicy::from_settings(&settings).expect("the guard's settings");
    let store = Store::open(&settings, Access::Create)
        .await
        .expect("the store opens");
    store.migrate().await.expect("the store migrates");
    (dir, db, store, policy)
}

/// `/v1/sending`, `bouncer status` and `/metrics` answer from one read of
/// the state row and the hours: a pause, a resume or a batch committed
/// while it runs is in all of the answer or in none of it (on PostgreSQL a
/// plain `BEGIN` gave each statement a snapshot of its own).
async fn a_read_sees_one_snapshot_of_the_state_and_hours(backend: Backend) {
    let (_dir, db, store, policy) = migrated_store(&backend, |_| {}).await;
    let now = Timestamp::from_datetime(time::OffsetDateTime::now_utc());
    let read_both = async |tx: &mut bouncer::store::Tx<'_>| {
        let (shown, state) = sending_state_in(tx).await.expect("the state row");
        let rates = rates_for(tx, &policy, now, &state)
            .await
            .expect("the rates");
        (shown.state, rates.sends, rates.hard_bounces)
    };
    let mut conn = store.conn().await.expect("a connection");
    let mut read = conn.begin_read().await.expect("a read begins");
    let before = read_both(&mut read).await;
    db.execute("UPDATE sending_state SET state = 'paused' WHERE id = 1")
        .await;
    seed_hour_in(&db, &hour_ago(1), 500, 20, 0).await;
    let during = read_both(&mut read).await;
    read.rollback().await.expect("the read ends");
    let mut next = conn.begin_read().await.expect("the next read begins");
    let after = read_both(&mut next).await;
    next.rollback().await.expect("the next read ends");
    assert_eq!(
        (before.clone(), during),
        (("active".to_owned(), 0, 0), before),
        "what was committed during a read stays out of it"
    );
    assert_eq!(
        after,
        ("paused".to_owned(), 500, 20),
        "the next read sees it"
    );
    drop(conn);
    store.close().await;
}

async fn without_delivery_events_bounces_alone_never_pause(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    post_ok(&app, &hard_bounces(1500)).await;
    assert_eq!(
        state_is(&app).await,
        "active",
        "the volume is unknown without Delivery or Send events"
    );
    let (_, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(sending["rates"]["volume_known"], false);
    assert_eq!(sending["rates"]["sends"], 1500);
    app.stop().await;
}

async fn concurrent_messages_across_two_replicas_pause_once(backend: Backend) {
    let webhook = Webhook::start().await;
    let url = webhook.url.clone();
    let app = spawn_app_with(backend, move |s, _| {
        alerting(s, &url, None);
        s.guard_warn = false;
    })
    .await;
    let dir2 = Arc::new(TempDir::new());
    let mut settings2 = test_settings(&app.db.url, dir2.path());
    settings2.alert_webhook_url = Some(webhook.url.clone());
    settings2.alert_retry_min_ms = 100;
    settings2.guard_warn = false;
    let replica = start(settings2, Default::default(), app.db.clone(), dir2).await;
    post_ok(&app, &deliveries(1000)).await;
    let complaints: Vec<Msg> = (0..20).map(|_| a_complaint()).collect();
    let answers = futures_util::future::join_all(complaints.iter().enumerate().map(|(i, m)| {
        let target: &TestApp = if i % 2 == 0 { &app } else { &replica };
        target.post(m)
    }))
    .await;
    for answer in &answers {
        assert_status(answer, 200, "stored");
    }
    assert_eq!(state_is(&app).await, "paused");
    assert_eq!(
        alert_kinds(&app).await,
        ["paused"],
        "one transition, one alert"
    );
    eventually("the alert is delivered", || async {
        webhook.kinds() == ["paused"]
    })
    .await;
    // Both replicas run a worker: still delivered once.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(webhook.kinds(), ["paused"]);
    assert_eq!(
        days_unlike_their_hours(&app.db).await,
        0,
        "both replicas' counts in their day"
    );
    replica.stop().await;
    app.stop().await;
    webhook.stop().await;
}

async fn after_a_resume_the_old_events_do_not_pause_again(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.guard_warn = false).await;
    post_ok(&app, &deliveries(1000)).await;
    post_ok(&app, &a_complaint()).await;
    post_ok(&app, &a_complaint()).await;
    assert_eq!(state_is(&app).await, "paused");
    let body = json!({"state": "active", "by": "alice", "reason": "list cleaned"});
    let response = app
        .client
        .put(format!("{}/v1/sending", app.admin_address))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("answer");
    let (status, answer) = crate::helpers::answer(response).await;
    assert_eq!(
        (status, &answer["state"], &answer["changed"]),
        (200, &json!("active"), &json!(true)),
        "{answer}"
    );
    assert_eq!(answer["changed_by"], "alice (api:loopback)");
    assert_eq!(answer["rates"]["sends"], 0, "counting starts afresh");
    // More traffic and one complaint: the two old complaints are not counted.
    post_ok(&app, &deliveries(1000)).await;
    post_ok(&app, &a_complaint()).await;
    assert_eq!(
        state_is(&app).await,
        "active",
        "1 complaint in 1,000 since the resume"
    );
    post_ok(&app, &a_complaint()).await;
    assert_eq!(
        state_is(&app).await,
        "paused",
        "a new crossing pauses again"
    );
    assert_eq!(alert_kinds(&app).await, ["paused", "resumed", "paused"]);
    let by = app
        .db
        .text(
            "SELECT changed_by FROM sending_state WHERE CAST(id AS TEXT) = $1",
            "1",
        )
        .await;
    assert_eq!(by.as_deref(), Some("bouncer"));
    app.stop().await;
}

async fn a_dead_webhook_and_a_restart_lose_no_alert(backend: Backend) {
    // The webhook answers 500 twice, then works: delivered once.
    let webhook = Webhook::start().await;
    webhook.fail_next(2);
    let url = webhook.url.clone();
    let app = spawn_app_with(backend, move |s, _| {
        alerting(s, &url, None);
        s.guard_warn = false;
    })
    .await;
    post_ok(&app, &deliveries(1000)).await;
    post_ok(&app, &a_complaint()).await;
    post_ok(&app, &a_complaint()).await;
    eventually("delivered after the failures", || async {
        webhook.kinds() == ["paused"]
    })
    .await;
    assert!(webhook.attempts() >= 3, "{}", webhook.attempts());
    let attempts = app
        .db
        .scalar("SELECT attempts FROM alert_deliveries", None)
        .await;
    assert_eq!(attempts, 3);
    // Now the webhook is gone entirely while an alert is raised, and the
    // service restarts before it comes back.
    let port = webhook
        .url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .unwrap_or_default()
        .to_owned();
    webhook.stop().await;
    let resume = app
        .client
        .put(format!("{}/v1/sending", app.admin_address))
        .header("content-type", "application/json")
        .body(json!({"state": "active", "by": "bob", "reason": "fixed"}).to_string())
        .send()
        .await
        .expect("answer");
    assert_eq!(resume.status().as_u16(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (db, dir, settings, hooks) = app.stop().await;
    // The worker plans an alert's deliveries when it next looks, so the
    // alert may have none yet: what matters is that none was delivered.
    let pending = db
        .scalar(
            "SELECT COUNT(*) FROM alerts a WHERE NOT EXISTS (SELECT 1 FROM alert_deliveries d \
             WHERE d.alert_id = a.id AND d.delivered_at IS NOT NULL)",
            None,
        )
        .await;
    assert_eq!(pending, 1, "the resume alert waits in the outbox");
    let listener =
        std::net::TcpListener::bind(format!("127.0.0.1:{port}")).expect("same port again");
    let webhook = Webhook::start_on(listener).await;
    let app = start(settings, hooks, db, dir).await;
    // Usually at once; a delivery the shutdown cut short stays claimed
    // until its lease (60 s) ends, and is then tried again.
    eventually_within(
        "the waiting alert is delivered after the restart",
        std::time::Duration::from_secs(75),
        || async { webhook.kinds() == ["resumed"] },
    )
    .await;
    app.stop().await;
    webhook.stop().await;
}

/// A webhook that cannot be reached says why in the delivery's
/// `last_error` (reqwest's own text is only "error sending request").
async fn an_unreachable_webhook_says_why(backend: Backend) {
    let nothing_there = format!("http://127.0.0.1:{}/hook", crate::helpers::free_port());
    let app = spawn_app_with(backend, move |s, _| alerting(s, &nothing_there, None)).await;
    crate::ses_account::set_sending(&app, "paused").await;
    let last_error = || async {
        let (_, alerts) = app.admin_get("/v1/alerts").await;
        alerts["items"][0]["deliveries"][0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    eventually("a failed attempt recorded", || async {
        !last_error().await.is_empty()
    })
    .await;
    let error = last_error().await;
    assert!(
        error.starts_with("webhook unreachable: error sending request")
            && error.contains("Connection refused"),
        "{error}"
    );
    app.stop().await;
}

async fn alerts_arrive_by_email(backend: Backend) {
    let webhook = Webhook::start().await;
    let smtp = SmtpSink::start().await;
    let (url, port) = (webhook.url.clone(), smtp.port);
    let app = spawn_app_with(backend, move |s, _| {
        alerting(s, &url, Some(port));
        s.guard_warn = false;
    })
    .await;
    post_ok(&app, &deliveries(1000)).await;
    post_ok(&app, &a_complaint()).await;
    post_ok(&app, &a_complaint()).await;
    eventually("one email", || async { smtp.mails().len() == 1 }).await;
    let mail = &smtp.mails()[0];
    assert_eq!(mail.from, "<bouncer@signals.example>");
    assert_eq!(
        mail.to,
        ["<admin@signals.example>", "<ops@signals.example>"]
    );
    assert!(
        mail.data.contains("Subject: bouncer paused sending"),
        "{}",
        mail.data
    );
    assert!(
        mail.data
            .contains("From: \"Signals bouncer\" <bouncer@signals.example>"),
        "{}",
        mail.data
    );
    // Read as written: the webhook's Slack emoji code is left out.
    let text = mail.text();
    assert!(
        text.starts_with(
            "bouncer paused sending: bounce rate 0.000% (0 hard bounces), complaint rate 0.200% (2 complaints)"
        ),
        "{text}"
    );
    // One per alert, the same on a retry.
    assert!(
        mail.data
            .lines()
            .any(|l| l.starts_with("Message-ID: <bouncer.alert.")
                && l.ends_with("@signals.example>")),
        "{}",
        mail.data
    );
    eventually("and one webhook call", || async {
        webhook.kinds() == ["paused"]
    })
    .await;
    // The webhook's text keeps the code, which Slack draws as an emoji.
    let text = webhook.received()[0]["text"].clone();
    assert!(
        text.as_str()
            .is_some_and(|t| t.starts_with(":rotating_light: bouncer paused sending: ")),
        "{text}"
    );
    app.stop().await;
    webhook.stop().await;
}

async fn an_unsubscribe_raises_an_alert(backend: Backend) {
    let webhook = Webhook::start().await;
    let url = webhook.url.clone();
    let app = spawn_app_with(backend, move |s, _| {
        alerting(s, &url, None);
    })
    .await;
    post_ok(&app, &Msg::unsubscribe_confirmation(TOPIC).sign()).await;
    eventually("the feed-stopped alert", || async {
        webhook.kinds() == ["unsubscribed"]
    })
    .await;
    let text = webhook.received()[0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.contains(TOPIC) && text.contains("flying blind"),
        "{text}"
    );
    app.stop().await;
    webhook.stop().await;
}

on_both_databases!(
    the_complaint_threshold_is_strict_and_a_warning_comes_first,
    the_bounce_threshold_is_strict_and_counts_hard_bounces_as_sends,
    below_the_minimum_volume_nothing_happens,
    deliveries_alone_re_arm_the_warning,
    a_window_filled_over_days_counts_exactly_its_newest_hours,
    a_full_window_in_the_hour_of_a_resume_counts_from_the_resume,
    a_window_reaching_back_to_a_resume_days_ago_counts_from_it,
    a_window_follows_hours_changed_by_hand,
    a_window_of_days_follows_hours_changed_by_hand,
    an_upgraded_database_sums_its_days_from_its_hours,
    a_full_window_reaching_the_maximum_age_counts_from_its_first_hour,
    a_window_of_exactly_its_sends_leaves_older_hours_out,
    a_window_starts_at_its_oldest_hour_that_counts,
    a_read_sees_one_snapshot_of_the_state_and_hours,
    without_delivery_events_bounces_alone_never_pause,
    concurrent_messages_across_two_replicas_pause_once,
    after_a_resume_the_old_events_do_not_pause_again,
    a_dead_webhook_and_a_restart_lose_no_alert,
    alerts_arrive_by_email,
    an_unreachable_webhook_says_why,
    an_unsubscribe_raises_an_alert,
);

/// The issue's acceptance: a replay (with `bouncer replay --url`) of
/// deliveries and bounces that cross the threshold pauses sending once; the
/// webhook and the SMTP sink each get exactly one pause alert; and the
/// sender's query from the README shows the pause.
async fn a_replay_crossing_the_threshold_pauses_once_and_alerts_once_per_channel(backend: Backend) {
    let webhook = Webhook::start().await;
    let smtp = SmtpSink::start().await;
    let (url, port) = (webhook.url.clone(), smtp.port);
    let app = spawn_app_with(backend, move |s, _| {
        alerting(s, &url, Some(port));
        s.guard_warn = false;
    })
    .await;
    // N = 2,000 delivered, then M = 120 hard bounces in 12 messages: the
    // rate crosses 5% at the 106th bounce; the rest must not alert again.
    let mut lines: Vec<String> = (0..4)
        .map(|_| serde_json::to_string(&Value::Object(deliveries(500).fields)).unwrap_or_default())
        .collect();
    lines.extend((0..12).map(|_| {
        serde_json::to_string(&Value::Object(hard_bounces(10).fields)).unwrap_or_default()
    }));
    let dir = TempDir::new();
    let file = dir.path().join("campaign.jsonl");
    std::fs::write(&file, lines.join("\n")).expect("write");
    let output = crate::cli::bouncer(dir.path())
        .args(["replay", "--url", &format!("{}/sns", app.address)])
        .arg(&file)
        .output()
        .expect("replay runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(alert_kinds(&app).await, ["paused"]);
    eventually("one pause alert by webhook and by email", || async {
        webhook.kinds() == ["paused"] && smtp.mails().len() == 1
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(
        (webhook.kinds().len(), smtp.mails().len()),
        (1, 1),
        "exactly one each"
    );
    let sql = crate::sender_side::readme_block("<!-- sender-query -->");
    let answer = crate::sender_side::run_readme_query(&app, &sql);
    assert!(answer == "paused|0" || answer == "paused|f", "{answer}");
    app.stop().await;
    webhook.stop().await;
}

async fn status_pause_resume_and_alert_test_from_the_cli(backend: Backend) {
    let webhook = Webhook::start().await;
    let smtp = SmtpSink::start().await;
    let app = spawn_app_with(backend, |_, _| {}).await;
    post_ok(&app, &deliveries(1200)).await;
    post_ok(&app, &a_complaint()).await;
    let dir = TempDir::new();
    let run = |args: &[&str]| {
        let output = crate::cli::bouncer(dir.path())
            .env("DATABASE_URL", &app.db.url)
            .env("USER", "ops")
            .env("ALERT_WEBHOOK_URL", &webhook.url)
            .env("SMTP_HOST", "127.0.0.1")
            .env("SMTP_PORT", smtp.port.to_string())
            .env("SMTP_TLS", "none")
            .env("SMTP_FROM_EMAIL", "bouncer@signals.example")
            .env("ALERT_EMAILS", "admin@signals.example")
            .args(args)
            .output()
            .expect("runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (ok, status) = run(&["status"]);
    assert!(ok, "{status}");
    assert!(status.contains("sending:        active"), "{status}");
    assert!(
        status.contains("complaint rate: 0.083% (1 complaint; pauses above 0.1%)"),
        "{status}"
    );
    assert!(status.contains("window:         1200 sends"), "{status}");
    let (ok, out) = run(&["pause", "--by", "carol", "--reason", "incident 42"]);
    assert!(ok && out.contains("sending is now paused"), "{out}");
    assert_eq!(state_is(&app).await, "paused");
    let (_, status) = run(&["status"]);
    assert!(
        status.contains("sending:        paused")
            && status.contains("carol (cli:ops): incident 42"),
        "{status}"
    );
    let (ok, out) = run(&["pause", "--by", "carol", "--reason", "again"]);
    assert!(ok && out.contains("already paused"), "{out}");
    let (ok, out) = run(&["resume", "--by", "carol", "--reason", "incident closed"]);
    assert!(ok && out.contains("sending is now active"), "{out}");
    assert_eq!(alert_kinds(&app).await, ["warning", "paused", "resumed"]);
    let (ok, out) = run(&["alerts", "test"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("webhook: sent") && out.contains("email: sent"),
        "{out}"
    );
    assert_eq!(webhook.kinds(), ["test"]);
    assert_eq!(smtp.mails().len(), 1);
    app.stop().await;
    webhook.stop().await;
}

/// `bouncer status` from a shell without the service's GUARD_* settings
/// reports with the service's thresholds, as `serve` recorded them, and
/// says so; a migrated database no service has run on says it has only
/// the shell's.
async fn status_reports_with_the_services_thresholds(backend: Backend) {
    let dir = TempDir::new();
    let fresh = format!("sqlite://{}", dir.path().join("fresh.db").display());
    crate::cli::migrate(dir.path(), &fresh);
    let ran = crate::cli::run_with(dir.path(), &fresh, &["status"]);
    assert!(
        ran.code == 0
            && ran
                .stdout
                .contains("settings:       this shell's (no `bouncer serve` has recorded its own"),
        "{ran}"
    );
    // Paused by hand with no volume: the pause stands, whatever the rates.
    let ran = crate::cli::run_with(
        dir.path(),
        &fresh,
        &["pause", "--by", "carol", "--reason", "drill"],
    );
    assert_eq!(ran.code, 0, "{ran}");
    let ran = crate::cli::run_with(dir.path(), &fresh, &["status"]);
    assert!(
        ran.stdout.contains(
            "note:           fewer than 1000 sends in the window: the guard would not pause now; the pause stands until a resume"
        ),
        "{ran}"
    );

    let app = spawn_app_with(backend, |s, _| {
        s.guard_min_volume = 100;
        s.guard_window_sends = 1000;
        s.guard_warn = false;
    })
    .await;
    post_ok(&app, &deliveries(100)).await;
    post_ok(&app, &a_complaint()).await;
    assert_eq!(state_is(&app).await, "paused", "1 in 100 sends, 100 enough");
    rules_recorded(&app).await;
    let ran = crate::cli::run_with(dir.path(), &app.db.url, &["status"]);
    assert_eq!(ran.code, 0, "{ran}");
    for line in [
        "sending:        paused",
        "window:         100 sends (last 1000 sends",
        "settings:       the service's, as `bouncer serve` recorded them at ",
        "this shell's differ and are not used: GUARD_WINDOW_SENDS 1000 (here 10000), GUARD_MIN_VOLUME 100 (here 1000), GUARD_WARN false (here true)",
    ] {
        assert!(ran.stdout.contains(line), "{line}\n{ran}");
    }
    assert!(!ran.stdout.contains("does not act yet"), "{ran}");
    // The same settings in the shell: nothing to say about them.
    let ran = crate::cli::run(
        crate::cli::bouncer(dir.path())
            .env("DATABASE_URL", &app.db.url)
            .env("GUARD_MIN_VOLUME", "100")
            .env("GUARD_WINDOW_SENDS", "1000")
            .env("GUARD_WARN", "false")
            .arg("status"),
    );
    assert!(
        ran.code == 0
            && ran.stdout.contains("(last 1000 sends")
            && !ran.stdout.contains("settings:"),
        "{ran}"
    );
    app.stop().await;
}

/// `bouncer replay` applied directly, from a shell without the service's
/// GUARD_* settings, pauses where the service would.
async fn a_direct_replay_applies_the_services_rules(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| {
        s.guard_min_volume = 100;
        s.guard_warn = false;
    })
    .await;
    rules_recorded(&app).await;
    let lines: Vec<String> = [deliveries(100), a_complaint()]
        .into_iter()
        .map(|m| serde_json::to_string(&Value::Object(m.fields)).unwrap_or_default())
        .collect();
    let dir = TempDir::new();
    let file = dir.path().join("feed.jsonl");
    std::fs::write(&file, lines.join("\n")).expect("write");
    let mut cmd = crate::cli::bouncer(dir.path());
    crate::cli::test_env(&mut cmd, &app.db.url, dir.path());
    let ran = crate::cli::run(cmd.args(["replay", "--ignore-age"]).arg(&file));
    assert!(
        ran.code == 0
            && ran
                .stderr
                .contains("rules: the service's, as `bouncer serve` recorded them at "),
        "{ran}"
    );
    assert_eq!(
        state_is(&app).await,
        "paused",
        "1 complaint in 100 sends, 100 enough for the service: {ran}"
    );
    app.stop().await;
}

on_both_databases!(
    status_reports_with_the_services_thresholds,
    a_direct_replay_applies_the_services_rules,
    a_replay_crossing_the_threshold_pauses_once_and_alerts_once_per_channel,
    status_pause_resume_and_alert_test_from_the_cli,
);

/// A configuration set that publishes Send events (not deliveries): the
/// Send event counts every recipient of the mail.
async fn send_events_count_the_whole_mail_as_volume(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.guard_warn = false).await;
    let tag = unique_id();
    let recipients: Vec<String> = (0..1000)
        .map(|i| format!("s{i}-{tag}@example.com"))
        .collect();
    let ses = json!({
        "eventType": "Send", "send": {},
        "mail": {"timestamp": AT, "messageId": format!("ses-{tag}"), "source": "a@signals.example", "destination": recipients},
    });
    post_ok(&app, &Msg::notification(TOPIC, &ses.to_string()).sign()).await;
    let (_, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(
        (
            sending["rates"]["sends"].as_i64(),
            sending["rates"]["volume_known"].as_bool()
        ),
        (Some(1000), Some(true))
    );
    // The delivery of one of those recipients does not count it twice.
    let ses = json!({
        "eventType": "Delivery",
        "delivery": {"timestamp": AT, "recipients": [format!("s0-{tag}@example.com")]},
        "mail": {"timestamp": AT, "messageId": format!("ses-{tag}"), "destination": [format!("s0-{tag}@example.com")]},
    });
    post_ok(&app, &Msg::notification(TOPIC, &ses.to_string()).sign()).await;
    post_ok(&app, &a_complaint()).await;
    post_ok(&app, &a_complaint()).await;
    assert_eq!(state_is(&app).await, "paused");
    let (_, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(sending["at_last_pause"]["sends"], 1000);
    app.stop().await;
}

/// PostgreSQL is down when the service starts: it cannot migrate, spools
/// what it acknowledges, and migrates before applying the spool.
async fn a_service_started_while_postgres_is_down_migrates_before_draining(backend: Backend) {
    let Backend::Postgres { .. } = backend else {
        return;
    };
    let outage = crate::helpers::Outage::forward_to("127.0.0.1:5432".parse().expect("addr")).await;
    outage.cut();
    let port = outage.port;
    let app = spawn_app_with(backend, move |s, _| {
        s.database_url = s
            .database_url
            .replacen("127.0.0.1:5432", &format!("127.0.0.1:{port}"), 1);
    })
    .await;
    let msg = crate::feedback::bounce("Permanent", "General", "early@example.com", AT);
    assert_status(&app.post(&msg).await, 202, "spooled");
    outage.restore();
    // Through the API: the tables do not exist until the service migrates.
    eventually("the spooled bounce is applied after migrating", || async {
        app.admin_get("/v1/suppressions/early@example.com").await.0 == 200
    })
    .await;
    assert_eq!(app.db.count_messages(&msg.id()).await, 1);
    app.stop().await;
}

on_both_databases!(
    send_events_count_the_whole_mail_as_volume,
    a_service_started_while_postgres_is_down_migrates_before_draining,
);

/// An SMTP server that takes the connection and never says a word: the
/// webhook still gets every alert at once (each channel is delivered on its
/// own), the email attempt ends as a failure after its time-out, and the
/// service stops when asked instead of waiting on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_smtp_server_holds_back_neither_the_webhook_nor_a_shutdown() {
    let webhook = Webhook::start().await;
    // Bound, never accepted: the kernel takes the connection, nothing
    // answers it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let (url, port) = (
        webhook.url.clone(),
        silent.local_addr().expect("addr").port(),
    );
    let app = spawn_app_with(Backend::Sqlite, move |s, _| alerting(s, &url, Some(port))).await;
    let sending = |state: &str| json!({"state": state, "by": "alice", "reason": "drill"});
    let (status, body) = app
        .api(reqwest::Method::PUT, "/v1/sending", Some(sending("paused")))
        .await;
    assert_eq!(status, 200, "{body}");
    eventually("the webhook has the pause", || async {
        webhook.kinds() == ["paused"]
    })
    .await;
    // The pause's email is now stuck on the silent server; the resume's
    // webhook goes out all the same.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body) = app
        .api(reqwest::Method::PUT, "/v1/sending", Some(sending("active")))
        .await;
    assert_eq!(status, 200, "{body}");
    eventually("the webhook has the resume", || async {
        webhook.kinds() == ["paused", "resumed"]
    })
    .await;
    tokio::time::timeout(std::time::Duration::from_secs(10), app.stop())
        .await
        .expect("the service stops while an email attempt hangs");
    drop(silent);
    webhook.stop().await;
}
