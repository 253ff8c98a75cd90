//! No poison pill: content that passes verification never stops the
//! pipeline. Text a database cannot hold is stored escaped (the body stays
//! byte-exact); a message the database refuses for a reason of its own is
//! set aside on its own, replayable, while the messages around it are
//! stored.

use serde_json::json;

use crate::feedback::bounce;
use crate::helpers::{Backend, TestApp, assert_status, eventually, spawn_app};
use crate::on_both_databases;
use crate::signing::{Msg, TOPIC, now_text, unique_id};

/// A bounce whose remote server answered with a NUL in its diagnostic code.
fn bounce_with_nul_diagnostic(recipient: &str) -> Msg {
    let at = now_text();
    let ses = json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": recipient, "action": "failed", "status": "5.1.1",
                                   "diagnosticCode": "smtp; 550 5.1.1 <\u{0}> user unknown\u{0}"}],
            "timestamp": at, "feedbackId": format!("fb-{}", unique_id()),
        },
        "mail": {"timestamp": at, "messageId": format!("ses-{}", unique_id()), "source": "a@signals.example", "destination": [recipient]},
    });
    Msg::notification(TOPIC, &ses.to_string()).sign()
}

async fn stored_text(app: &TestApp, sql: &'static str, id: &str) -> Option<String> {
    app.db.text(sql, id).await
}

async fn a_nul_in_text_is_stored_escaped_and_the_messages_after_it_are_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let with_subject = Msg::notification(TOPIC, "hello")
        .set("Subject", "weekly\u{0}signals")
        .sign();
    let with_diagnostic = bounce_with_nul_diagnostic("nul@example.com");
    let with_message = Msg::notification(TOPIC, "not SES\u{0}at all").sign();
    let after: Vec<Msg> = (0..5)
        .map(|i| {
            bounce(
                "Permanent",
                "General",
                &format!("after{i}@example.com"),
                &now_text(),
            )
        })
        .collect();
    // All at once, so that they share batches with the ones after them.
    let all: Vec<&Msg> = [&with_subject, &with_diagnostic, &with_message]
        .into_iter()
        .chain(&after)
        .collect();
    let answers = futures_util::future::join_all(all.iter().map(|m| app.post(m))).await;
    for answer in &answers {
        assert_status(answer, 200, "stored");
    }
    for msg in &all {
        assert_eq!(app.db.count_messages(&msg.id()).await, 1);
        // The envelope is kept byte for byte.
        assert_eq!(
            stored_text(
                &app,
                "SELECT body FROM sns_messages WHERE message_id = $1",
                &msg.id()
            )
            .await
            .as_deref(),
            Some(msg.body().as_str())
        );
    }
    assert_eq!(
        stored_text(
            &app,
            "SELECT subject FROM sns_messages WHERE message_id = $1",
            &with_subject.id()
        )
        .await
        .as_deref(),
        Some("weekly\\u0000signals")
    );
    assert_eq!(
        stored_text(
            &app,
            "SELECT diagnostic_code FROM suppressions WHERE email = $1",
            "nul@example.com"
        )
        .await
        .as_deref(),
        Some("smtp; 550 5.1.1 <\\u0000> user unknown\\u0000")
    );
    assert_eq!(
        stored_text(
            &app,
            "SELECT outcome FROM sns_messages WHERE message_id = $1",
            &with_message.id()
        )
        .await
        .as_deref(),
        Some("unrecognized")
    );
    for i in 0..5 {
        assert!(crate::feedback::is_suppressed(&app, &format!("after{i}@example.com")).await);
    }
    assert!(!app.settings.spool_path.join("set-aside.jsonl").exists());
    app.stop().await;
}

/// An SES message id far longer than any SES makes, and random so that it
/// cannot be compressed: PostgreSQL refuses it as a key (index rows are
/// limited to about 2.7 kB). Nothing in it is wrong for SQLite.
pub fn delivery_with_huge_message_id(recipient: &str) -> Msg {
    let at = now_text();
    let huge: String = (0..2000).map(|_| unique_id().replace('-', "")).collect();
    let ses = json!({
        "notificationType": "Delivery",
        "delivery": {"timestamp": at, "recipients": [recipient], "smtpResponse": "250 ok"},
        "mail": {"timestamp": at, "messageId": huge, "source": "a@signals.example", "destination": [recipient]},
    });
    Msg::notification(TOPIC, &ses.to_string()).sign()
}

/// The one line of a set-aside file, which holds `poison` whole (its id,
/// and its envelope byte for byte).
pub fn the_one_set_aside_line(file: &std::path::Path, poison: &Msg) -> serde_json::Value {
    let kept = std::fs::read_to_string(file).expect("the set-aside file");
    let lines: Vec<serde_json::Value> = kept
        .lines()
        .map(|l| serde_json::from_str(l).expect("a whole JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "{kept}");
    assert_eq!(lines[0]["message_id"], poison.id());
    assert_eq!(
        lines[0]["body"],
        poison.body(),
        "the envelope byte for byte"
    );
    lines[0].clone()
}

async fn a_message_the_database_refuses_is_set_aside_and_the_rest_of_its_batch_is_stored(
    backend: Backend,
) {
    let is_postgres = matches!(backend, Backend::Postgres { .. });
    let app = spawn_app(backend).await;
    let poison = delivery_with_huge_message_id("huge@example.com");
    let others: Vec<Msg> = (0..20)
        .map(|i| {
            bounce(
                "Permanent",
                "General",
                &format!("ok{i}@example.com"),
                &now_text(),
            )
        })
        .collect();
    let mut all: Vec<&Msg> = others.iter().collect();
    all.insert(10, &poison);
    let answers = futures_util::future::join_all(all.iter().map(|m| app.post(m))).await;
    for (msg, answer) in all.iter().zip(&answers) {
        if msg.id() == poison.id() && is_postgres {
            assert_status(answer, 202, "set_aside");
        } else {
            assert_status(answer, 200, "stored");
        }
    }
    for msg in &others {
        assert_eq!(app.db.count_messages(&msg.id()).await, 1);
    }
    if !is_postgres {
        // SQLite holds it: nothing to set aside.
        assert_eq!(app.db.count_messages(&poison.id()).await, 1);
        app.stop().await;
        return;
    }
    assert_eq!(app.db.count_messages(&poison.id()).await, 0);
    let line = the_one_set_aside_line(&app.settings.spool_path.join("set-aside.jsonl"), &poison);
    assert!(line["error"].as_str().is_some_and(|e| !e.is_empty()));
    let alerts = app
        .db
        .scalar("SELECT COUNT(*) FROM alerts WHERE kind = 'set_aside'", None)
        .await;
    assert_eq!(alerts, 1);
    let (_, metrics) = app.admin_get("/metrics").await;
    assert!(
        metrics
            .as_str()
            .is_some_and(|m| m.contains("bouncer_set_aside_messages_total 1")),
        "{metrics}"
    );
    // The pipeline goes on.
    let after = bounce("Permanent", "General", "after@example.com", &now_text());
    assert_status(&app.post(&after).await, 200, "stored");
    app.stop().await;
}

/// The set-aside file cannot be written for a reason other than room
/// (here a folder stands in its place; a file whose owner was changed by
/// hand does the same to a service not running as root): the message is
/// kept whole in a file of its own beside it, answered and alerted as set
/// aside, and the messages after it are stored. It used to wait in the
/// spool with every message after it behind it, `/readyz` 503, until
/// someone mended the file. (PostgreSQL: SQLite refuses nothing here.)
#[tokio::test]
async fn a_set_aside_file_that_cannot_be_written_keeps_the_message_in_a_file_beside_it() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let app = spawn_app(backend).await;
    let spool = app.settings.spool_path.clone();
    std::fs::create_dir_all(spool.join("set-aside.jsonl")).expect("a folder in the file's place");
    let poison = delivery_with_huge_message_id("huge@example.com");
    assert_status(&app.post(&poison).await, 202, "set_aside");
    assert_eq!(app.db.count_messages(&poison.id()).await, 0);
    let beside: Vec<std::path::PathBuf> = std::fs::read_dir(&spool)
        .expect("the spool's folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("set-aside-") && n.ends_with(".jsonl"))
        })
        .collect();
    assert_eq!(beside.len(), 1, "{beside:?}");
    the_one_set_aside_line(&beside[0], &poison);
    // The alert names the file that holds it, for the replay.
    // (Raised just after the answer.)
    let name = beside[0].display().to_string();
    eventually("the set_aside alert names the file", || async {
        app.db
            .text("SELECT text FROM alerts WHERE kind = $1", "set_aside")
            .await
            .is_some_and(|alert| alert.contains(&name))
    })
    .await;
    // The pipeline goes on: ready, and the next message stored.
    assert_eq!(app.get("/readyz").await.0, 200);
    let after = crate::feedback::bounce("Permanent", "General", "after@example.com", &now_text());
    assert_status(&app.post(&after).await, 200, "stored");
    assert_eq!(app.db.count_messages(&after.id()).await, 1);
    app.stop().await;
}

on_both_databases!(
    a_nul_in_text_is_stored_escaped_and_the_messages_after_it_are_stored,
    a_message_the_database_refuses_is_set_aside_and_the_rest_of_its_batch_is_stored,
);
