//! Exactly-once under concurrency, and no loss during a database outage:
//! verified messages are acknowledged from the local spool and reach the
//! database, once each, when it is back (also across a restart).

use std::sync::Arc;

use sqlx::Executor;

use serde_json::json;

use crate::feedback::suppression_rows;
use crate::helpers::{
    Backend, OUTAGE_BUSY_TIMEOUT_MS, Outage, Pool, TempDir, TestApp, assert_status, eventually,
    spawn_app, spawn_app_behind_forwarder, spawn_app_with, spooled_bytes, start,
    take_database_away, test_settings,
};
use crate::on_both_databases;
use crate::ses_account::metrics;
use crate::signing::{Msg, TOPIC, now_text, unique_id};

async fn fifty_concurrent_deliveries_of_one_message_are_applied_once(backend: Backend) {
    let app = spawn_app(backend).await;
    // A second replica on the same database, with its own spool.
    let dir2 = Arc::new(TempDir::new());
    let settings2 = test_settings(&app.db.url, dir2.path());
    let replica = start(settings2, Default::default(), app.db.clone(), dir2).await;
    let msg = Msg::notification(TOPIC, "at least once").sign();
    let answers = futures_util::future::join_all((0..50).map(|i| {
        let target: &TestApp = if i % 2 == 0 { &app } else { &replica };
        target.post(&msg)
    }))
    .await;
    let stored = answers.iter().filter(|a| a.1["status"] == "stored").count();
    let duplicates = answers
        .iter()
        .filter(|a| a.1["status"] == "duplicate")
        .count();
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
    assert_eq!((stored, duplicates), (1, 49));
    assert_eq!(app.db.count_messages(&msg.id()).await, 1);
    replica.stop().await;
    app.stop().await;
}

async fn via_spool(app: &TestApp, id: &str) -> i64 {
    app.db
        .scalar(
            "SELECT COUNT(*) FROM sns_messages WHERE message_id = $1 AND via_spool",
            Some(id),
        )
        .await
}

async fn a_database_outage_is_absorbed_by_the_spool(backend: Backend) {
    match backend {
        Backend::Sqlite => sqlite_outage().await,
        Backend::Postgres { server } => postgres_outage(Backend::Postgres { server }).await,
    }
}

/// SQLite "outage": another process holds the write lock longer than the
/// busy timeout (a backup, a long migration). Also restarts the service
/// while messages wait in the spool.
async fn sqlite_outage() {
    let app = spawn_app_with(Backend::Sqlite, |s, _| {
        s.sqlite_busy_timeout_ms = OUTAGE_BUSY_TIMEOUT_MS;
    })
    .await;
    let before = Msg::notification(TOPIC, "before").sign();
    assert_status(&app.post(&before).await, 200, "stored");
    let Pool::Sqlite(pool) = &app.db.pool else {
        unreachable!()
    };
    let mut lock = pool.acquire().await.expect("connection");
    lock.execute("BEGIN EXCLUSIVE")
        .await
        .expect("take the write lock");

    let during: Vec<Msg> = (0..3)
        .map(|i| Msg::notification(TOPIC, &format!("during {i}")).sign())
        .collect();
    for msg in &during {
        assert_status(&app.post(msg).await, 202, "spooled");
    }
    // SNS retries one of them while it waits in the spool.
    assert_status(&app.post(&during[0]).await, 202, "spooled");
    assert!(spooled_bytes(&app.settings.spool_path) > 0);

    // Stop while the database is still locked: the messages stay spooled.
    let (db, dir, settings, hooks) = app.stop().await;
    lock.execute("ROLLBACK").await.expect("release the lock");
    drop(lock);
    let app = start(settings, hooks, db, dir).await;
    for msg in &during {
        let id = msg.id();
        eventually("spooled messages reach the database", || async {
            app.db.count_messages(&id).await == 1
        })
        .await;
        assert_eq!(via_spool(&app, &id).await, 1);
    }
    assert_eq!(
        app.db.total_messages().await,
        4,
        "each message exactly once"
    );
    eventually("the spool is emptied", || async {
        spooled_bytes(&app.settings.spool_path) == 0
    })
    .await;
    // The drain says the database is back (`/readyz`) once it has found
    // the spool empty; until then a message still joins the spool.
    eventually("the service writes directly again", || async {
        app.get("/readyz").await.0 == 200
    })
    .await;
    assert_status(&app.post(&during[1]).await, 200, "duplicate");
    app.stop().await;
}

/// PostgreSQL outage: the service's connections go through a forwarder the
/// test cuts and restores.
async fn postgres_outage(backend: Backend) {
    let outage = Outage::forward_to("127.0.0.1:5432".parse().expect("addr")).await;
    let port = outage.port;
    let app = spawn_app_with(backend, move |s, _| {
        s.database_url = s
            .database_url
            .replacen("127.0.0.1:5432", &format!("127.0.0.1:{port}"), 1);
    })
    .await;
    let before = Msg::notification(TOPIC, "before").sign();
    assert_status(&app.post(&before).await, 200, "stored");
    outage.cut();
    let during: Vec<Msg> = (0..5)
        .map(|i| {
            Msg::notification(TOPIC, &format!("during {i}"))
                .version(2)
                .sign()
        })
        .collect();
    let answers = futures_util::future::join_all(during.iter().map(|m| app.post(m))).await;
    for answer in answers {
        assert_status(&answer, 202, "spooled");
    }
    assert_eq!(
        app.db.total_messages().await,
        1,
        "nothing reached the database yet"
    );
    outage.restore();
    for msg in &during {
        let id = msg.id();
        eventually("spooled messages reach the database", || async {
            app.db.count_messages(&id).await == 1
        })
        .await;
        assert_eq!(via_spool(&app, &id).await, 1);
    }
    assert_eq!(app.db.total_messages().await, 6);
    // Back to direct writes once the spool is empty.
    let after = Msg::notification(TOPIC, "after").sign();
    eventually("direct writes resume", || async {
        app.post(&after).await.0 == 200
    })
    .await;
    assert_eq!(app.db.count_messages(&after.id()).await, 1);
    app.stop().await;
}

/// A real-size message (a few KB: the whole `mail` object with its
/// headers) passes PostgreSQL's TOAST threshold: it is compressed with lz4,
/// the cheaper of the two methods (BENCHMARKS.md), and reads back byte for
/// byte. A server that cannot do lz4 (older than 14, or built without it)
/// keeps pglz and still stores the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_is_stored_byte_exact_and_compressed_with_lz4_on_postgres() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let app = spawn_app(backend).await;
    let headers: Vec<String> = (0..40)
        .map(|i| {
            format!(r#"{{"name":"X-Campaign-{i}","value":"spring sale, list 7, segment {i}"}}"#)
        })
        .collect();
    let msg = Msg::notification(TOPIC, &format!("[{}]", headers.join(","))).sign();
    assert!(msg.body().len() > 3000, "{}", msg.body().len());
    assert_status(&app.post(&msg).await, 200, "stored");
    let id = msg.id();
    assert_eq!(
        app.db.stored_body(&id).await.as_deref(),
        Some(msg.body().as_str())
    );
    // The column's own setting, so that a server whose default is lz4
    // does not pass this without the migration.
    let lz4 = app
        .db
        .scalar(
            "SELECT COUNT(*) FROM pg_settings WHERE name = 'default_toast_compression' \
             AND 'lz4' = ANY(enumvals)",
            None,
        )
        .await
        == 1;
    if !lz4 {
        eprintln!(
            "this PostgreSQL server cannot compress with lz4: the message is stored all the same"
        );
        app.stop().await;
        return;
    }
    let column = app
        .db
        .text(
            "SELECT attcompression::text FROM pg_attribute \
             WHERE attrelid = 'sns_messages'::regclass AND attname = $1",
            "body",
        )
        .await;
    assert_eq!(column.as_deref(), Some("l"));
    assert_eq!(
        app.db
            .text(
                "SELECT pg_column_compression(body) FROM sns_messages WHERE message_id = $1",
                &id
            )
            .await
            .as_deref(),
        Some("lz4")
    );
    app.stop().await;
}

/// SQLite's writer commits without waiting for the disk and syncs the log
/// beside the next batch, which the operator sees counted (that no answer
/// leaves before the sync covering it returns, and that a failed sync is
/// final, is tested in `ingest::durable`). PostgreSQL's commit is the sync.
async fn stored_answers_come_with_log_syncs_on_sqlite_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let messages: Vec<Msg> = (0..40)
        .map(|i| Msg::notification(TOPIC, &format!("sync {i}")).sign())
        .collect();
    let answers = futures_util::future::join_all(messages.iter().map(|m| app.post(m))).await;
    for answer in &answers {
        assert_status(answer, 200, "stored");
    }
    assert_eq!(app.db.total_messages().await, 40);
    let text = metrics(&app).await;
    // A sample's value, -1 when it is missing.
    let sample = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(-1.0)
    };
    let (syncs, commits) = (
        sample("bouncer_wal_sync_seconds_count"),
        sample("bouncer_write_batch_seconds_count"),
    );
    if app.db.is_sqlite() {
        // At least one sync, and never more than one per commit.
        assert!(
            syncs >= 1.0 && syncs <= commits,
            "{syncs} syncs, {commits} commits\n{text}"
        );
    } else {
        assert_eq!(syncs, 0.0, "{text}");
        assert!(commits >= 1.0, "{text}");
    }
    app.stop().await;
}

/// A batch that mixes new messages with what was stored before (SNS
/// redelivering a message the spool kept, the same SES event in a second
/// SNS message, a delivery of a mail whose send a bounce counted) applies
/// the new and nothing of the rest: the drain writes the spool in one
/// batch, so each table's multi-row insert inserts some of its rows.
async fn a_batch_mixing_new_and_stored_messages_applies_only_the_new(backend: Backend) {
    let (app, outage) = spawn_app_behind_forwarder(backend, |_, _| {}).await;
    let at = now_text();
    // SES bounces, their feedback ids chosen so that the event stored
    // before sorts between the batch's new ones (each table is written in
    // key order): on SQLite its AUTOINCREMENT number then lies between
    // theirs.
    let hard_bounce = |recipient: &str, feedback_id: String| {
        json!({
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": "Permanent", "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": recipient, "action": "failed", "status": "5.1.1", "diagnosticCode": "smtp; 550 no such user"}],
                "timestamp": at, "feedbackId": feedback_id,
            },
            "mail": {"timestamp": at, "messageId": format!("ses-{}", unique_id()), "source": "a@signals.example", "destination": [recipient]},
        })
        .to_string()
    };
    let bounce_of_a = hard_bounce("a@example.com", format!("fb-m-{}", unique_id()));
    let mail_to_d = format!("ses-{}", unique_id());
    let to_d = |event: serde_json::Value| {
        let mut ses = event;
        ses["mail"] = json!({"timestamp": at, "messageId": mail_to_d, "source": "a@signals.example", "destination": ["d@example.com"]});
        Msg::notification(TOPIC, &ses.to_string()).sign()
    };
    let a = Msg::notification(TOPIC, &bounce_of_a).sign();
    let soft_d = to_d(json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Transient", "bounceSubType": "MailboxFull",
            "bouncedRecipients": [{"emailAddress": "d@example.com"}],
            "timestamp": at, "feedbackId": format!("fb-{}", unique_id()),
        },
    }));
    assert_status(&app.post(&a).await, 200, "stored");
    assert_status(&app.post(&soft_d).await, 200, "stored");

    let away = take_database_away(&app, &outage).await;
    let a_again_elsewhere = Msg::notification(TOPIC, &bounce_of_a).sign();
    let b = Msg::notification(
        TOPIC,
        &hard_bounce("b@example.com", format!("fb-a-{}", unique_id())),
    )
    .sign();
    let delivered_d = to_d(json!({
        "notificationType": "Delivery",
        "delivery": {"timestamp": at, "recipients": ["d@example.com"], "smtpResponse": "250 ok"},
    }));
    for msg in [&a, &a_again_elsewhere, &b, &delivered_d] {
        assert_status(&app.post(msg).await, 202, "spooled");
    }
    away.give_back().await;
    eventually("the spool reaches the database", || async {
        app.db.total_messages().await == 5
    })
    .await;
    eventually("the service writes directly again", || async {
        app.get("/readyz").await.0 == 200
    })
    .await;

    let rows: Vec<(String, i64)> = suppression_rows(&app)
        .await
        .into_iter()
        .map(|r| (r.0, r.5))
        .collect();
    assert_eq!(
        rows,
        [
            ("a@example.com".to_owned(), 1),
            ("b@example.com".to_owned(), 1)
        ],
        "a's bounce applied once, b's applied"
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM feedback_events", None)
            .await,
        4,
        "a's bounce, d's soft bounce and delivery, b's bounce"
    );
    let (status, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(status, 200, "{sending}");
    assert_eq!(
        (
            &sending["rates"]["sends"],
            &sending["rates"]["hard_bounces"]
        ),
        (&json!(3), &json!(2)),
        "one send to each of a, b and d; {sending}"
    );
    // Redelivered once more, now straight to the database: stored before.
    assert_status(&app.post(&a).await, 200, "duplicate");
    app.stop().await;
}

on_both_databases!(
    a_batch_mixing_new_and_stored_messages_applies_only_the_new,
    stored_answers_come_with_log_syncs_on_sqlite_only,
    fifty_concurrent_deliveries_of_one_message_are_applied_once,
    a_database_outage_is_absorbed_by_the_spool,
);
