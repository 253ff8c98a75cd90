//! SES feedback over HTTP turns into exactly the suppression rows the policy
//! table predicts, on both databases.

use bouncer::clock::Clock;
use bouncer::time::Timestamp;
use serde_json::{Value, json};

use crate::helpers::{Backend, Pool, TestApp, assert_status, fixture, spawn_app_with};
use crate::on_both_databases;
use crate::signing::{Msg, TOPIC, unique_id};

/// A classic SES bounce notification for one recipient.
pub fn bounce(kind: &str, subtype: &str, recipient: &str, at: &str) -> Msg {
    let ses = json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": kind, "bounceSubType": subtype,
            "bouncedRecipients": [{"emailAddress": recipient, "action": "failed", "status": "5.0.0", "diagnosticCode": "smtp; 550 test"}],
            "timestamp": at, "feedbackId": format!("fb-{}", unique_id()),
        },
        "mail": {"timestamp": at, "messageId": format!("ses-{}", unique_id()), "source": "a@signals.example", "destination": [recipient]},
    });
    Msg::notification(TOPIC, &ses.to_string()).sign()
}

pub fn delivery(recipient: &str, at: &str) -> Msg {
    let ses = json!({
        "notificationType": "Delivery",
        "delivery": {"timestamp": at, "recipients": [recipient], "smtpResponse": "250 ok"},
        "mail": {"timestamp": at, "messageId": format!("ses-{}", unique_id()), "source": "a@signals.example", "destination": [recipient]},
    });
    Msg::notification(TOPIC, &ses.to_string()).sign()
}

pub fn complaint(feedback_type: Option<&str>, recipient: &str) -> Msg {
    let mut complaint = json!({
        "complainedRecipients": [{"emailAddress": recipient}],
        "timestamp": "2026-11-25T08:00:00.000Z", "feedbackId": format!("fb-{}", unique_id()),
    });
    if let Some(t) = feedback_type {
        complaint["complaintFeedbackType"] = json!(t);
    }
    let ses = json!({
        "notificationType": "Complaint", "complaint": complaint,
        "mail": {"timestamp": "2026-11-25T08:00:00.000Z", "messageId": format!("ses-{}", unique_id()), "destination": [recipient]},
    });
    Msg::notification(TOPIC, &ses.to_string()).sign()
}

/// `(email, reason, bounce_type, bounce_subtype, complaint_feedback_type, event_count)` of every row.
pub async fn suppression_rows(
    app: &TestApp,
) -> Vec<(
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
)> {
    const SQL: &str = "SELECT email, reason, bounce_type, bounce_subtype, complaint_feedback_type, event_count FROM suppressions ORDER BY email";
    match &app.db.pool {
        Pool::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(pool).await.expect("rows"),
        Pool::Postgres(pool) => sqlx::query_as(SQL).fetch_all(pool).await.expect("rows"),
    }
}

pub async fn is_suppressed(app: &TestApp, email: &str) -> bool {
    app.db
        .scalar(
            "SELECT COUNT(*) FROM suppressions WHERE email = $1",
            Some(email),
        )
        .await
        == 1
}

async fn replaying_the_fixtures_gives_the_rows_the_policy_predicts(backend: Backend) {
    let clock = Clock::fixed(Timestamp::parse_rfc3339("2026-11-25T08:00:05Z").expect("time"));
    let app = spawn_app_with(backend, move |_, hooks| hooks.clock = clock).await;
    let mut names: Vec<_> = std::fs::read_dir(fixture("fixtures/signed"))
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("ses-") || n.starts_with("not-ses"))
        .collect();
    names.sort();
    let mut ses_events = 0;
    for name in &names {
        let body =
            std::fs::read_to_string(fixture(&format!("fixtures/signed/{name}"))).expect("fixture");
        let answer = app.post_raw(body, Some("Notification")).await;
        assert_status(&answer, 200, "stored");
        let understood = answer.1.get("unrecognized").is_none();
        assert_eq!(
            understood,
            name != "not-ses-feedback.json",
            "{name}: {}",
            answer.1
        );
        if name.starts_with("ses-") && name != "ses-subscription-succeeded.json" {
            ses_events += 1;
        }
    }
    let s = |v: &str| Some(v.to_owned());
    let bounce = |email: &str, t: &str, st: &str| {
        (email.to_owned(), "bounce".to_owned(), s(t), s(st), None, 1)
    };
    let complaint = |email: &str, t: Option<&str>| {
        (
            email.to_owned(),
            "complaint".to_owned(),
            None,
            None,
            t.map(str::to_owned),
            1,
        )
    };
    let expected = vec![
        complaint("complaint-abuse@example.com", Some("abuse")),
        complaint("complaint-auth-failure@example.com", Some("auth-failure")),
        complaint("complaint-fraud@example.com", Some("fraud")),
        complaint("complaint-onaccount@example.com", None),
        complaint("complaint-other@example.com", Some("other")),
        complaint("complaint-untyped@example.com", None),
        complaint("complaint-virus@example.com", Some("virus")),
        bounce("display-name@example.com", "Permanent", "General"),
        complaint("event-complaint@example.com", Some("abuse")),
        bounce("mailbox-full@example.com", "Transient", "MailboxFull"),
        bounce("permanent-general@example.com", "Permanent", "General"),
        bounce("permanent-noemail@example.com", "Permanent", "NoEmail"),
        bounce(
            "permanent-onaccount@example.com",
            "Permanent",
            "OnAccountSuppressionList",
        ),
        bounce(
            "permanent-suppressed@example.com",
            "Permanent",
            "Suppressed",
        ),
    ];
    assert_eq!(suppression_rows(&app).await, expected);
    // One event row per event, the bounce published twice counted once.
    let events = app
        .db
        .scalar("SELECT COUNT(*) FROM feedback_events", None)
        .await;
    assert_eq!(events, ses_events - 1);
    for (email, action) in [
        ("too-large@example.com", "content_problem"),
        ("content-rejected@example.com", "content_problem"),
        ("attachment-rejected@example.com", "content_problem"),
        ("complaint-not-spam@example.com", "not_spam"),
        ("transient-general@example.com", "count_soft_bounce"),
        ("undetermined@example.com", "count_soft_bounce"),
        ("delivered@example.com", "reset_soft_bounces"),
    ] {
        let got = app
            .db
            .text("SELECT action FROM feedback_events WHERE email = $1", email)
            .await;
        assert_eq!(got.as_deref(), Some(action), "{email}");
    }
    for t in [
        "Send",
        "Reject",
        "Open",
        "Click",
        "Rendering Failure",
        "DeliveryDelay",
        "Subscription",
    ] {
        let n = app
            .db
            .scalar(
                "SELECT COUNT(*) FROM feedback_events WHERE event_type = $1 AND action = 'record'",
                Some(t),
            )
            .await;
        assert_eq!(n, 1, "{t} is recorded");
    }
    let unrecognized = app
        .db
        .scalar(
            "SELECT COUNT(*) FROM sns_messages WHERE outcome = 'unrecognized'",
            None,
        )
        .await;
    assert_eq!(unrecognized, 1);
    let (_, metrics) = app.admin_get("/metrics").await;
    let text = metrics.as_str().unwrap_or_default();
    assert!(
        text.contains("bouncer_unrecognized_messages_total 1"),
        "{text}"
    );
    assert!(
        text.contains(r#"bouncer_ses_events_total{type="Bounce",action="suppress"} 5"#),
        "{text}"
    );
    app.stop().await;
}

async fn soft_bounces_suppress_at_the_limit_and_a_delivery_resets_the_count(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    let who = "Soft <Soft@Example.com>";
    for at in ["2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"] {
        assert_status(
            &app.post(&bounce("Transient", "MailboxFull", who, at)).await,
            200,
            "stored",
        );
    }
    assert!(!is_suppressed(&app, "soft@example.com").await);
    assert_status(
        &app.post(&delivery("soft@example.com", "2026-11-03T00:00:00Z"))
            .await,
        200,
        "stored",
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM soft_bounces", None)
            .await,
        0,
        "reset"
    );
    for at in ["2026-11-04T00:00:00Z", "2026-11-05T00:00:00Z"] {
        app.post(&bounce("Undetermined", "Undetermined", who, at))
            .await;
    }
    assert!(
        !is_suppressed(&app, "soft@example.com").await,
        "two after the reset"
    );
    app.post(&bounce("Transient", "General", who, "2026-11-06T00:00:00Z"))
        .await;
    assert!(
        is_suppressed(&app, "soft@example.com").await,
        "the third within the window"
    );
    let note = app
        .db
        .text(
            "SELECT note FROM suppressions WHERE email = $1",
            "soft@example.com",
        )
        .await;
    assert_eq!(note.as_deref(), Some("3 soft bounces within 14 days"));
    // A delivery older than the bounces (arriving late) does not reset.
    app.post(&bounce(
        "Transient",
        "General",
        "late@example.com",
        "2026-11-10T00:00:00Z",
    ))
    .await;
    app.post(&delivery("late@example.com", "2026-11-09T00:00:00Z"))
        .await;
    assert_eq!(
        app.db
            .scalar(
                "SELECT count FROM soft_bounces WHERE email = $1",
                Some("late@example.com")
            )
            .await,
        1
    );
    app.stop().await;
}

/// A note written by a person stays: a soft-bounce streak's own note
/// ("3 soft bounces within 14 days") replaced it, where a hard bounce kept
/// it (an outside trial lost "GDPR erasure request #4711 - never mail").
async fn an_operators_note_outlives_the_events_that_follow(backend: Backend) {
    const NOTE: &str = "GDPR erasure request #4711 - never mail";
    let app = spawn_app_with(backend, |_, _| {}).await;
    let added = app
        .client
        .post(format!("{}/v1/suppressions", app.admin_address))
        .body(format!(
            r#"{{"email": "erased@example.com", "note": "{NOTE}"}}"#
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(added.status(), 201);
    let note = || async {
        app.db
            .text(
                "SELECT note FROM suppressions WHERE email = $1",
                "erased@example.com",
            )
            .await
    };
    for at in [
        "2099-01-01T00:00:00Z",
        "2099-01-02T00:00:00Z",
        "2099-01-03T00:00:00Z",
    ] {
        app.post(&bounce("Transient", "General", "erased@example.com", at))
            .await;
    }
    assert_eq!(
        note().await.as_deref(),
        Some(NOTE),
        "after a soft-bounce streak"
    );
    app.post(&bounce(
        "Permanent",
        "General",
        "erased@example.com",
        "2099-01-04T00:00:00Z",
    ))
    .await;
    assert_eq!(note().await.as_deref(), Some(NOTE), "after a hard bounce");
    app.stop().await;
}

async fn soft_bounces_spread_wider_than_the_window_never_suppress(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| {
        s.soft_bounce_limit = 2;
        s.soft_bounce_window_days = 1;
    })
    .await;
    for at in [
        "2026-11-01T00:00:00Z",
        "2026-11-03T00:00:00Z",
        "2026-11-05T00:00:00Z",
    ] {
        app.post(&bounce("Transient", "General", "spread@example.com", at))
            .await;
    }
    assert!(!is_suppressed(&app, "spread@example.com").await);
    app.post(&bounce(
        "Transient",
        "General",
        "spread@example.com",
        "2026-11-05T12:00:00Z",
    ))
    .await;
    assert!(
        is_suppressed(&app, "spread@example.com").await,
        "two within one day"
    );
    app.stop().await;
}

async fn content_rejections_never_count_against_the_address(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    for subtype in [
        "MessageTooLarge",
        "ContentRejected",
        "AttachmentRejected",
        "ContentRejected",
        "MessageTooLarge",
    ] {
        app.post(&bounce(
            "Transient",
            subtype,
            "reader@example.com",
            "2026-11-01T00:00:00Z",
        ))
        .await;
    }
    assert!(!is_suppressed(&app, "reader@example.com").await);
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM soft_bounces", None)
            .await,
        0
    );
    assert_eq!(
        app.db
            .scalar(
                "SELECT COUNT(*) FROM feedback_events WHERE action = 'content_problem'",
                None
            )
            .await,
        5
    );
    app.stop().await;
}

async fn complaints_suppress_unless_not_spam(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    app.post(&complaint(Some("not-spam"), "fan@example.com"))
        .await;
    app.post(&complaint(Some("abuse"), "Angry <ANGRY@example.com>"))
        .await;
    app.post(&complaint(None, "untyped@example.com")).await;
    assert!(!is_suppressed(&app, "fan@example.com").await);
    assert!(is_suppressed(&app, "angry@example.com").await);
    assert!(is_suppressed(&app, "untyped@example.com").await);
    app.stop().await;
}

async fn one_event_in_two_sns_messages_is_applied_once(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    let first = bounce(
        "Permanent",
        "General",
        "twice@example.com",
        "2026-11-01T00:00:00Z",
    );
    // The same SES event, published again under another SNS MessageId (a
    // configuration set besides the identity notifications).
    let second = Msg::notification(TOPIC, first.get("Message")).sign();
    assert_ne!(first.id(), second.id());
    let answers = futures_util::future::join_all([app.post(&first), app.post(&second)]).await;
    for answer in &answers {
        assert_status(answer, 200, "stored");
    }
    assert_eq!(
        app.db.total_messages().await,
        2,
        "both SNS messages are kept"
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM feedback_events", None)
            .await,
        1
    );
    assert_eq!(
        app.db
            .scalar(
                "SELECT event_count FROM suppressions WHERE email = $1",
                Some("twice@example.com")
            )
            .await,
        1
    );
    app.stop().await;
}

async fn a_notification_that_is_not_ses_feedback_is_kept_whole_and_counted(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    let msg = Msg::notification(
        TOPIC,
        r#"{"notificationType":"Bounce","bounce":{"oops":true},"mail":{"messageId":"m"}}"#,
    )
    .sign();
    let (status, body): (u16, Value) = app.post(&msg).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "stored");
    assert!(
        body["unrecognized"]
            .as_str()
            .unwrap_or_default()
            .contains("bounce"),
        "{body}"
    );
    let stored = app.db.stored_body(&msg.id()).await;
    assert_eq!(stored.as_deref(), Some(msg.body().as_str()));
    let outcome = app
        .db
        .text(
            "SELECT outcome FROM sns_messages WHERE message_id = $1",
            &msg.id(),
        )
        .await;
    assert_eq!(outcome.as_deref(), Some("unrecognized"));
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM suppressions", None)
            .await,
        0
    );
    app.stop().await;
}

/// An event dated after its SNS message was published (here, in 2099) is
/// taken at the message's time: a later real event still replaces the
/// row's details.
async fn an_event_from_the_future_counts_from_when_it_was_published(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("nanos");
    let text = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .expect("time")
    };
    let published = now - time::Duration::minutes(2);
    let future = bounce(
        "Permanent",
        "General",
        "later@example.com",
        "2099-01-01T00:00:00Z",
    )
    .set("Timestamp", &text(published))
    .sign();
    assert_status(&app.post(&future).await, 200, "stored");
    let real = bounce("Permanent", "NoEmail", "later@example.com", &text(now))
        .set("Timestamp", &text(now))
        .sign();
    assert_status(&app.post(&real).await, 200, "stored");
    let (status, body) = app
        .api(
            reqwest::Method::GET,
            "/v1/suppressions/later@example.com",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let row = &body["suppression"];
    assert_eq!(row["bounce_subtype"], "NoEmail", "{row}");
    assert_eq!(
        row["first_seen_at"],
        Timestamp::from_datetime(published).to_text()
    );
    assert_eq!(row["last_seen_at"], Timestamp::from_datetime(now).to_text());
    app.stop().await;
}

/// A remote server's diagnostic code cut in the middle of a UTF-16 pair
/// reaches bouncer as half a pair, escaped (`\ud83d`), which no Rust
/// string holds: the bounce still suppresses its recipient, the half read
/// as U+FFFD (the whole message was stored as unrecognized, and the address
/// stayed sendable).
async fn a_bounce_whose_diagnostic_holds_half_a_utf16_pair_suppresses(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    let at = crate::signing::now_text();
    let ses = format!(
        r#"{{"notificationType":"Bounce","bounce":{{"bounceType":"Permanent","bounceSubType":"General","bouncedRecipients":[{{"emailAddress":"cut@example.com","diagnosticCode":"smtp; 550 mailbox full \ud83d"}}],"timestamp":"{at}","feedbackId":"fb-{id}"}},"mail":{{"messageId":"ses-{id}","timestamp":"{at}","destination":["cut@example.com"]}}}}"#,
        id = unique_id()
    );
    let answer = app.post(&Msg::notification(TOPIC, &ses).sign()).await;
    assert_status(&answer, 200, "stored");
    assert!(answer.1.get("unrecognized").is_none(), "{}", answer.1);
    assert!(is_suppressed(&app, "cut@example.com").await);
    let diagnostic = app
        .db
        .text(
            "SELECT diagnostic_code FROM suppressions WHERE email = $1",
            "cut@example.com",
        )
        .await;
    assert_eq!(
        diagnostic.as_deref(),
        Some("smtp; 550 mailbox full \u{fffd}")
    );
    app.stop().await;
}

/// A bounce whose `bounceSubType` is `subtype`, or left out (`None`): SES
/// always names one, but a relay or a hand-made replay through SNS may not.
fn bounce_without_subtype(kind: &str, recipient: &str, at: &str, subtype: Option<Value>) -> Msg {
    let mut ses = json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": kind,
            "bouncedRecipients": [{"emailAddress": recipient, "status": "5.0.0", "diagnosticCode": "smtp; 550 test"}],
            "timestamp": at, "feedbackId": format!("fb-{}", unique_id()),
        },
        "mail": {"timestamp": at, "messageId": format!("ses-{}", unique_id()), "destination": [recipient]},
    });
    if let Some(subtype) = subtype {
        ses["bounce"]["bounceSubType"] = subtype;
    }
    Msg::notification(TOPIC, &ses.to_string()).sign()
}

async fn a_bounce_without_a_subtype_is_kept_without_one(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    let hard = [
        ("hard@example.com", None),
        ("hard-null@example.com", Some(Value::Null)),
        ("hard-blank@example.com", Some(json!(" "))),
    ];
    for (email, subtype) in &hard {
        assert_status(
            &app.post(&bounce_without_subtype(
                "Permanent",
                email,
                "2026-11-01T00:00:00Z",
                subtype.clone(),
            ))
            .await,
            200,
            "stored",
        );
    }
    // Soft all the same: the third within the window suppresses.
    for day in ["01", "02", "03"] {
        assert!(!is_suppressed(&app, "soft@example.com").await, "day {day}");
        assert_status(
            &app.post(&bounce_without_subtype(
                "Transient",
                "soft@example.com",
                &format!("2026-11-{day}T00:00:00Z"),
                None,
            ))
            .await,
            200,
            "stored",
        );
    }
    let listed = hard
        .iter()
        .map(|(email, _)| (*email, "Permanent"))
        .chain([("soft@example.com", "Transient")]);
    for (email, kind) in listed {
        let row = crate::ordering::listed(&app, email)
            .await
            .expect("suppressed");
        assert_eq!(row["reason"], "bounce", "{row}");
        assert_eq!(row["bounce_type"], kind, "{row}");
        // Not a subtype SES did not send.
        assert_eq!(row["bounce_subtype"], Value::Null, "{row}");
    }
    assert_eq!(
        app.db
            .scalar(
                "SELECT COUNT(*) FROM feedback_events WHERE event_type = 'Bounce' AND bounce_subtype IS NULL",
                None,
            )
            .await,
        6,
        "the events keep none either"
    );
    app.stop().await;
}

on_both_databases!(
    a_bounce_without_a_subtype_is_kept_without_one,
    a_bounce_whose_diagnostic_holds_half_a_utf16_pair_suppresses,
    an_operators_note_outlives_the_events_that_follow,
    an_event_from_the_future_counts_from_when_it_was_published,
    replaying_the_fixtures_gives_the_rows_the_policy_predicts,
    soft_bounces_suppress_at_the_limit_and_a_delivery_resets_the_count,
    soft_bounces_spread_wider_than_the_window_never_suppress,
    content_rejections_never_count_against_the_address,
    complaints_suppress_unless_not_spam,
    one_event_in_two_sns_messages_is_applied_once,
    a_notification_that_is_not_ses_feedback_is_kept_whole_and_counted,
);
