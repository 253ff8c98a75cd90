//! The dedupe of SNS messages across the change of its key (SQLite's
//! migration 0013: `(sns_timestamp, message_id)` instead of the id alone),
//! and what the key means to the events a message carries.

use std::sync::Arc;

use crate::feedback::bounce;
use crate::helpers::{Backend, Pool, TestDb, assert_status, spawn_app, start};
use crate::on_both_databases;
use crate::signing::{Msg, now_text};

/// SQLite's table and key as they were before migration 0013, the rows
/// kept with their rowids; on both databases, 0013 not applied.
pub(crate) async fn before_time_ordered_key(db: &TestDb) {
    if db.is_sqlite() {
        // One script on one connection: statements on the pool's others
        // saw the old schema.
        let script = [
            "CREATE TABLE sns_messages_old (message_id TEXT NOT NULL PRIMARY KEY, \
             message_type TEXT NOT NULL, topic_arn TEXT NOT NULL, subject TEXT, \
             sns_timestamp TEXT NOT NULL, received_at TEXT NOT NULL, stored_at TEXT NOT NULL, \
             signature_version INTEGER NOT NULL, via_spool INTEGER NOT NULL DEFAULT 0, \
             outcome TEXT NOT NULL, body TEXT NOT NULL, outcome_detail TEXT)",
            "INSERT INTO sns_messages_old (rowid, message_id, message_type, topic_arn, subject, \
             sns_timestamp, received_at, stored_at, signature_version, via_spool, outcome, body, \
             outcome_detail) SELECT rowid, message_id, message_type, topic_arn, subject, \
             sns_timestamp, received_at, stored_at, signature_version, via_spool, outcome, body, \
             outcome_detail FROM sns_messages",
            "DROP TABLE sns_messages",
            "ALTER TABLE sns_messages_old RENAME TO sns_messages",
            "CREATE INDEX sns_messages_received_at ON sns_messages (received_at)",
        ]
        .join("; ");
        db.execute(&script).await;
    }
    db.execute("DELETE FROM _sqlx_migrations WHERE version = 13")
        .await;
}

/// Every stored message's columns but its body, as text (on SQLite with
/// its rowid), in id order.
async fn stored_rows(db: &TestDb) -> Vec<String> {
    const COLUMNS: &str = "message_id || '|' || message_type || '|' || topic_arn || '|' || \
        COALESCE(subject, '-') || '|' || sns_timestamp || '|' || received_at || '|' || stored_at || '|' || \
        signature_version || '|' || via_spool || '|' || outcome || '|' || COALESCE(outcome_detail, '-')";
    match &db.pool {
        Pool::Sqlite(pool) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT rowid || '|' || {COLUMNS} FROM sns_messages ORDER BY message_id"
        )))
        .fetch_all(pool)
        .await
        .expect("rows"),
        Pool::Postgres(pool) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM sns_messages ORDER BY message_id"
        )))
        .fetch_all(pool)
        .await
        .expect("rows"),
    }
}

/// Messages stored before the upgrade are kept byte for byte, and a
/// redelivery of one of them is still a duplicate after it: SNS retries
/// for up to an hour, and a message must not be applied twice because
/// bouncer was upgraded meanwhile.
async fn messages_stored_before_the_upgrade_are_still_known_after_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let at = now_text();
    let before: Vec<Msg> = (0..3)
        .map(|i| bounce("Permanent", "General", &format!("kept{i}@example.com"), &at))
        .collect();
    for msg in &before {
        assert_status(&app.post(msg).await, 200, "stored");
    }
    // One unrecognized, with its detail.
    let unrecognized = Msg::notification(crate::signing::TOPIC, "not SES").sign();
    assert_status(&app.post(&unrecognized).await, 200, "stored");
    let (db, dir, settings, hooks) = app.stop().await;
    before_time_ordered_key(&db).await;
    let rows = stored_rows(&db).await;
    assert_eq!(rows.len(), 4);

    // `serve` migrates at start-up.
    let app = start(settings, hooks, Arc::clone(&db), dir).await;
    assert_eq!(
        stored_rows(&db).await,
        rows,
        "the upgrade kept every message as it was"
    );
    for msg in &before {
        assert_eq!(
            db.stored_body(&msg.id()).await.as_deref(),
            Some(msg.body().as_str()),
            "a body kept whole"
        );
    }
    assert_status(&app.post(&before[1]).await, 200, "duplicate");
    let after = bounce("Permanent", "General", "new@example.com", &at);
    assert_status(&app.post(&after).await, 200, "stored");
    assert_status(&app.post(&after).await, 200, "duplicate");
    assert_eq!(db.total_messages().await, 5);
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM suppressions WHERE email = 'kept1@example.com' AND event_count = 1",
            None
        )
        .await,
        1,
        "the redelivered bounce was applied once"
    );
    if db.is_sqlite() {
        assert_eq!(
            db.scalar(
                "SELECT COUNT(*) FROM pragma_index_list('sns_messages') WHERE \"unique\" = 1 \
                 AND name = 'sns_messages_key'",
                None
            )
            .await,
            1,
            "the key in time order"
        );
        assert_eq!(
            db.scalar(
                "SELECT COUNT(*) FROM pragma_index_list('sns_messages') WHERE \"unique\" = 1 \
                 AND name <> 'sns_messages_key'",
                None
            )
            .await,
            0,
            "no unique index on the id alone is left"
        );
    }
    app.stop().await;
}

on_both_databases!(messages_stored_before_the_upgrade_are_still_known_after_it);

/// The same MessageId under another signed Timestamp: SNS never sends one
/// (every copy of a message carries its Timestamp), but only AWS can sign
/// it. SQLite, keyed by the pair, stores it as another message;
/// PostgreSQL, keyed by the id, as a duplicate. Either way the SES event
/// in it is applied once, by its own key (feedbackId and recipient).
async fn one_message_id_under_two_timestamps_applies_its_event_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = bounce("Permanent", "General", "twice@example.com", &now_text());
    let earlier = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
    let again = first
        .clone()
        .set(
            "Timestamp",
            &earlier
                .format(&time::format_description::well_known::Rfc3339)
                .expect("format"),
        )
        .sign();
    assert_status(&app.post(&first).await, 200, "stored");
    let sqlite = app.db.is_sqlite();
    assert_status(
        &app.post(&again).await,
        200,
        if sqlite { "stored" } else { "duplicate" },
    );
    assert_eq!(
        app.db.count_messages(&first.id()).await,
        if sqlite { 2 } else { 1 }
    );
    assert_eq!(
        app.db
            .scalar(
                "SELECT COUNT(*) FROM feedback_events WHERE email = 'twice@example.com'",
                None
            )
            .await,
        1,
        "one event"
    );
    assert_eq!(
        app.db
            .scalar(
                "SELECT event_count FROM suppressions WHERE email = 'twice@example.com'",
                None
            )
            .await,
        1
    );
    // Either copy again is a duplicate.
    assert_status(&app.post(&again).await, 200, "duplicate");
    assert_status(&app.post(&first).await, 200, "duplicate");
    app.stop().await;
}

on_both_databases!(one_message_id_under_two_timestamps_applies_its_event_once);
