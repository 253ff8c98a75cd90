//! POST /sns: what is accepted, and every refusal with its status and code.
//! Each refusal test also checks that nothing was stored.

use crate::helpers::{Backend, TestApp, assert_refused, assert_status, spawn_app, spawn_app_with};
use crate::on_both_databases;
use crate::signing::{Msg, TOPIC};

async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(
        app.db.total_messages().await,
        0,
        "a refused message was stored"
    );
}

async fn every_message_type_is_accepted_with_both_signature_versions(backend: Backend) {
    let app = spawn_app(backend).await;
    for version in [1, 2] {
        for msg in [
            Msg::notification(TOPIC, "{\"hello\":\"world\"}")
                .set("Subject", "Amazon SES Email Event Notification"),
            Msg::notification(TOPIC, "no subject here"),
            Msg::subscription_confirmation(TOPIC),
            Msg::unsubscribe_confirmation(TOPIC),
        ] {
            let msg = msg.version(version).sign();
            assert_status(&app.post(&msg).await, 200, "stored");
            assert_eq!(app.db.count_messages(&msg.id()).await, 1);
            let stored = app.db.stored_body(&msg.id()).await;
            assert_eq!(
                stored.as_deref(),
                Some(msg.body().as_str()),
                "the raw body is kept whole"
            );
            let kind = app
                .db
                .text(
                    "SELECT message_type FROM sns_messages WHERE message_id = $1",
                    &msg.id(),
                )
                .await;
            assert_eq!(kind.as_deref(), Some(msg.get("Type")));
        }
    }
    app.stop().await;
}

async fn a_message_delivered_twice_is_acknowledged_and_stored_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let msg = Msg::notification(TOPIC, "once").sign();
    assert_status(&app.post(&msg).await, 200, "stored");
    assert_status(&app.post(&msg).await, 200, "duplicate");
    assert_eq!(app.db.count_messages(&msg.id()).await, 1);
    app.stop().await;
}

async fn any_content_type_is_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let msg = Msg::notification(TOPIC, "json content type").sign();
    let response = app
        .client
        .post(format!("{}/sns", app.address))
        .header("content-type", "application/json")
        .header("x-amz-sns-message-type", "Notification")
        .body(msg.body())
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 200);
    app.stop().await;
}

async fn an_oversized_body_is_refused_with_413(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.sns_max_body_bytes = 4096).await;
    let msg = Msg::notification(TOPIC, &"x".repeat(5000)).sign();
    assert_refused(&app.post(&msg).await, 413, "body_too_large");
    assert_nothing_stored(&app).await;
    // Just under the cap is fine.
    let msg = Msg::notification(TOPIC, &"x".repeat(2500)).sign();
    assert_eq!(app.post(&msg).await.0, 200);
    app.stop().await;
}

/// Text that compresses poorly (hex of a xorshift stream), `len` bytes.
fn incompressible(len: usize, seed: u64) -> String {
    let mut x = seed | 1;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(len);
    out
}

/// Bodies of every size SNS sends, up to its largest message and on both
/// sides of the sizes where PostgreSQL compresses a row and moves a value
/// out of it, are stored whole.
async fn bodies_of_every_size_sns_sends_are_kept_whole(backend: Backend) {
    let app = spawn_app(backend).await;
    for (len, seed) in [(3_000, 1), (6_000, 2), (12_000, 3), (256 * 1024, 4)] {
        let msg = Msg::notification(TOPIC, &incompressible(len, seed)).sign();
        assert_status(&app.post(&msg).await, 200, "stored");
        let stored = app.db.stored_body(&msg.id()).await;
        assert!(
            stored.as_deref() == Some(msg.body().as_str()),
            "the body of a {len}-byte message was not kept whole"
        );
    }
    app.stop().await;
}

async fn raw_message_delivery_is_refused_with_a_clear_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .post(format!("{}/sns", app.address))
        .header("x-amz-sns-message-type", "Notification")
        .header("x-amz-sns-rawdelivery", "true")
        .body(r#"{"notificationType":"Bounce"}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value =
        serde_json::from_str(&response.text().await.unwrap_or_default()).expect("json");
    assert_eq!(body["error"], "raw_delivery_not_supported");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("raw message delivery")
    );
    assert_nothing_stored(&app).await;
    app.stop().await;
}

async fn malformed_bodies_are_refused_with_400(backend: Backend) {
    let app = spawn_app(backend).await;
    for body in [
        "",
        "not json",
        "[1,2]",
        "{\"Type\": 5}",
        "{\"Type\":\"Notification\"",
    ] {
        assert_refused(
            &app.post_raw(body, Some("Notification")).await,
            400,
            "malformed_json",
        );
    }
    assert_nothing_stored(&app).await;
    app.stop().await;
}

async fn each_required_field_is_checked_per_type(backend: Backend) {
    let app = spawn_app(backend).await;
    let notification = [
        "MessageId",
        "TopicArn",
        "Message",
        "Timestamp",
        "SignatureVersion",
        "Signature",
        "SigningCertURL",
        "UnsubscribeURL",
    ];
    for field in notification {
        let msg = Msg::notification(TOPIC, "x").sign().remove(field);
        let answer = app.post(&msg).await;
        assert_refused(&answer, 400, "missing_field");
        assert!(
            answer.1["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(field),
            "{answer:?}"
        );
    }
    let confirmation = ["Token", "SubscribeURL", "MessageId", "Signature"];
    for field in confirmation {
        for msg in [
            Msg::subscription_confirmation(TOPIC),
            Msg::unsubscribe_confirmation(TOPIC),
        ] {
            let msg = msg.sign().remove(field);
            assert_refused(&app.post(&msg).await, 400, "missing_field");
        }
    }
    let bad_time = Msg::notification(TOPIC, "x")
        .set("Timestamp", "yesterday")
        .sign();
    assert_refused(&app.post(&bad_time).await, 400, "malformed_field");
    // Found by fuzzing: this time, moved to UTC, is past the year 9999; it
    // panicked the worker, for anyone (the Timestamp is read before the
    // signature is checked).
    for time in ["9999-12-31T23:59:59-01:00", "0000-01-01T00:00:00+01:00"] {
        let msg = Msg::notification(TOPIC, "x").set("Timestamp", time).sign();
        assert_refused(&app.post(&msg).await, 400, "malformed_field");
    }
    // A MessageId with a control character is refused, signed or not: a
    // line break in it could move another field into the signed text, and
    // a NUL was once stored as the six characters `\u0000`, so the id
    // `x\0` and the id `x\u0000` were one message, and the second (a
    // different message) was answered as a duplicate.
    for id in ["coll-\0", "coll-\n", "coll-\t"] {
        let msg = Msg::notification(TOPIC, "x").set("MessageId", id).sign();
        let answer = app.post(&msg).await;
        assert_refused(&answer, 400, "malformed_field");
        assert!(
            answer.1["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("MessageId"),
            "{answer:?}"
        );
    }
    assert_nothing_stored(&app).await;
    // The same text, escaped by the sender, is an ordinary id.
    let escaped = Msg::notification(TOPIC, "x")
        .set("MessageId", "coll-\\u0000")
        .sign();
    assert_status(&app.post(&escaped).await, 200, "stored");
    assert_eq!(app.db.count_messages("coll-\\u0000").await, 1);
    app.stop().await;
}

async fn an_unknown_type_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let msg = Msg::notification(TOPIC, "x").set("Type", "Surprise").sign();
    assert_refused(&app.post(&msg).await, 400, "unknown_message_type");
    assert_nothing_stored(&app).await;
    app.stop().await;
}

async fn the_type_header_must_be_present_and_agree(backend: Backend) {
    let app = spawn_app(backend).await;
    let msg = Msg::notification(TOPIC, "x").sign();
    assert_refused(
        &app.post_raw(msg.body(), None).await,
        400,
        "missing_message_type_header",
    );
    assert_refused(
        &app.post_raw(msg.body(), Some("SubscriptionConfirmation"))
            .await,
        400,
        "message_type_mismatch",
    );
    // A byte beyond ASCII: there, and not the `Type`, rather than missing.
    let sent = app
        .client
        .post(format!("{}/sns", app.address))
        .header(
            "x-amz-sns-message-type",
            reqwest::header::HeaderValue::from_bytes(b"Notification\xe9").expect("obs-text"),
        )
        .body(msg.body())
        .send()
        .await
        .expect("answered");
    assert_eq!(sent.status().as_u16(), 400);
    let answer: serde_json::Value =
        serde_json::from_slice(&sent.bytes().await.expect("body")).expect("json");
    assert_eq!(answer["error"], "message_type_mismatch", "{answer}");
    assert_nothing_stored(&app).await;
    app.stop().await;
}

async fn a_foreign_topic_is_refused_even_when_validly_signed(backend: Backend) {
    let app = spawn_app(backend).await;
    let foreign = "arn:aws:sns:us-east-1:999999999999:attacker-topic";
    for msg in [
        Msg::notification(foreign, "x"),
        Msg::subscription_confirmation(foreign),
    ] {
        assert_refused(&app.post(&msg.sign()).await, 403, "topic_not_allowed");
    }
    assert_nothing_stored(&app).await;
    app.stop().await;
}

async fn with_no_topic_configured_every_message_is_refused(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.sns_topic_arns.clear()).await;
    let msg = Msg::notification(TOPIC, "x").sign();
    assert_refused(&app.post(&msg).await, 403, "no_topic_configured");
    assert_nothing_stored(&app).await;
    app.stop().await;
}

async fn unknown_signature_versions_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    for version in ["3", "0", "1.0", "SHA256"] {
        let msg = Msg::notification(TOPIC, "x")
            .sign()
            .set("SignatureVersion", version);
        assert_refused(&app.post(&msg).await, 400, "unsupported_signature_version");
    }
    assert_nothing_stored(&app).await;
    app.stop().await;
}

async fn version_1_can_be_refused_by_setting(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| s.sns_require_signature_v2 = true).await;
    let v1 = Msg::notification(TOPIC, "x").version(1).sign();
    assert_refused(&app.post(&v1).await, 403, "signature_version_refused");
    assert_nothing_stored(&app).await;
    let v2 = Msg::notification(TOPIC, "x").version(2).sign();
    assert_eq!(app.post(&v2).await.0, 200);
    app.stop().await;
}

async fn certificate_urls_off_the_sns_hosts_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    for url in [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://bucket.s3.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-east-1.amazonaws.com.attacker.example/x.pem",
        "https://sns.us-east-1.amazonaws.com@attacker.example/x.pem",
        "https://sns.us-east-1.amazonaws.com:8443/x.pem",
        "https://sns.us-east-1.amazonaws.com/x.txt",
        "https://sns.us-east-1.amazonaws.com/x.pem?redirect=1",
        "https://127.0.0.1/x.pem",
    ] {
        let msg = Msg::notification(TOPIC, "x")
            .set("SigningCertURL", url)
            .sign();
        assert_refused(&app.post(&msg).await, 403, "bad_certificate_url");
    }
    assert_nothing_stored(&app).await;
    app.stop().await;
}

async fn stale_and_future_messages_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| {
        s.sns_max_age_secs = 600;
        s.sns_max_future_secs = 60;
    })
    .await;
    let at = |secs: i64| {
        (time::OffsetDateTime::now_utc() + time::Duration::seconds(secs))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let old = Msg::notification(TOPIC, "x")
        .set("Timestamp", &at(-700))
        .sign();
    assert_refused(&app.post(&old).await, 403, "message_too_old");
    let future = Msg::notification(TOPIC, "x")
        .set("Timestamp", &at(120))
        .sign();
    assert_refused(&app.post(&future).await, 403, "message_from_future");
    assert_nothing_stored(&app).await;
    let recent = Msg::notification(TOPIC, "x")
        .set("Timestamp", &at(-500))
        .sign();
    assert_eq!(app.post(&recent).await.0, 200);
    let slightly_ahead = Msg::notification(TOPIC, "x")
        .set("Timestamp", &at(30))
        .sign();
    assert_eq!(app.post(&slightly_ahead).await.0, 200);
    app.stop().await;
}

async fn tampered_and_forged_messages_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = Msg::notification(TOPIC, "{\"bounce\":\"none\"}").sign();
    // Every signed field matters.
    for (field, value) in [
        ("Message", "{\"bounce\":\"all\"}"),
        ("MessageId", "another-id"),
        ("Timestamp", &crate::signing::now_text()),
        ("Subject", "added after signing"),
        ("Type", "Notification "),
    ] {
        let tampered = signed.clone().set(field, value);
        let answer = app.post_raw(tampered.body(), Some("Notification")).await;
        assert!(answer.0 == 403 || answer.0 == 400, "{field}: {answer:?}");
        if field != "Type" {
            assert_refused(&answer, 403, "bad_signature");
        }
    }
    // Signed for version 1 but claiming version 2.
    let relabelled = signed.clone().set("SignatureVersion", "2");
    assert_refused(&app.post(&relabelled).await, 403, "bad_signature");
    // Not base64, and a signature of the wrong length.
    assert_refused(
        &app.post(&signed.clone().set("Signature", "!!!not base64!!!"))
            .await,
        403,
        "bad_signature",
    );
    assert_refused(
        &app.post(&signed.clone().set("Signature", "AAAA")).await,
        403,
        "bad_signature",
    );
    // A confirmation whose SubscribeURL was swapped after signing.
    let confirmation = Msg::subscription_confirmation(TOPIC).sign().set(
        "SubscribeURL",
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=evil",
    );
    assert_refused(&app.post(&confirmation).await, 403, "bad_signature");
    assert_nothing_stored(&app).await;
    app.stop().await;
}

async fn a_certificate_is_judged_at_the_messages_timestamp(backend: Backend) {
    // The TEST-ONLY certificate is valid from 2000 to 2100; a message
    // signed "in 1999" (with the clock set there, so it is fresh) must fail
    // on the certificate's dates, not on freshness.
    let clock = bouncer::clock::Clock::fixed(
        bouncer::time::Timestamp::parse_rfc3339("1999-06-01T00:00:10Z").expect("time"),
    );
    let app = spawn_app_with(backend, |_, hooks| hooks.clock = clock).await;
    let msg = Msg::notification(TOPIC, "x")
        .set("Timestamp", "1999-06-01T00:00:00.000Z")
        .sign();
    let answer = app.post(&msg).await;
    assert_refused(&answer, 403, "certificate_invalid");
    assert!(
        answer.1["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("not yet valid")
    );
    assert_nothing_stored(&app).await;
    app.stop().await;
}

on_both_databases!(
    every_message_type_is_accepted_with_both_signature_versions,
    a_message_delivered_twice_is_acknowledged_and_stored_once,
    any_content_type_is_accepted,
    an_oversized_body_is_refused_with_413,
    bodies_of_every_size_sns_sends_are_kept_whole,
    raw_message_delivery_is_refused_with_a_clear_error,
    malformed_bodies_are_refused_with_400,
    each_required_field_is_checked_per_type,
    an_unknown_type_is_refused,
    the_type_header_must_be_present_and_agree,
    a_foreign_topic_is_refused_even_when_validly_signed,
    with_no_topic_configured_every_message_is_refused,
    unknown_signature_versions_are_refused,
    version_1_can_be_refused_by_setting,
    certificate_urls_off_the_sns_hosts_are_refused,
    stale_and_future_messages_are_refused,
    tampered_and_forged_messages_are_refused,
    a_certificate_is_judged_at_the_messages_timestamp,
);
