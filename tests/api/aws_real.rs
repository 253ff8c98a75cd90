//! Real messages signed by AWS (fixtures/aws-real) verify through the HTTP
//! endpoint, with their certificates pinned and the clock set to when they
//! were sent; the tampered one is refused.

use bouncer::clock::Clock;
use bouncer::time::Timestamp;

use crate::helpers::{Backend, assert_refused, fixture, spawn_app_with};
use crate::on_both_databases;

const CERT_2021: &str =
    "fixtures/aws-real/certs/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem";
const CERT_2014: &str =
    "fixtures/aws-real/certs/SimpleNotificationService-d6d679a1d18e95c2f9ffcf11f4f9e198.pem";

pub fn real_pins() -> Vec<String> {
    vec![
        format!(
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem={}",
            fixture(CERT_2021).display()
        ),
        format!(
            "https://sns.us-east-2.amazonaws.com/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem={}",
            fixture(CERT_2021).display()
        ),
        format!(
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-d6d679a1d18e95c2f9ffcf11f4f9e198.pem={}",
            fixture(CERT_2014).display()
        ),
    ]
}

pub const REAL: [&str; 7] = [
    "notification-sv1.json",
    "notification-sv2.json",
    "notification-sv1-subject.json",
    "notification-sv2-subject.json",
    "ses-bounce-sv1.json",
    "ses-complaint-eventpublishing-sv1.json",
    "notification-2015-sv1.json",
];

pub fn read_real(name: &str) -> (String, serde_json::Value) {
    let body =
        std::fs::read_to_string(fixture(&format!("fixtures/aws-real/{name}"))).expect("fixture");
    let value = serde_json::from_str(&body).expect("fixture is JSON");
    (body, value)
}

async fn every_real_aws_message_verifies_over_http(backend: Backend) {
    let clock = Clock::fixed(Timestamp::parse_rfc3339("2022-01-01T00:00:00Z").expect("time"));
    let topics: Vec<String> = REAL
        .iter()
        .map(|name| {
            read_real(name).1["TopicArn"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let app_clock = clock.clone();
    let app = spawn_app_with(backend, move |s, hooks| {
        s.sns_cert_pins = real_pins();
        s.sns_topic_arns = topics;
        hooks.clock = app_clock;
    })
    .await;
    for name in REAL {
        let (body, value) = read_real(name);
        let sent = Timestamp::parse_rfc3339(value["Timestamp"].as_str().unwrap_or_default())
            .expect("time");
        clock.set(sent.saturating_add(time::Duration::seconds(2)));
        let (status, answer) = app.post_raw(body, value["Type"].as_str()).await;
        assert_eq!(
            (status, &answer["status"]),
            (200, &serde_json::json!("stored")),
            "{name}: {answer}"
        );
        let id = value["MessageId"].as_str().unwrap_or_default();
        assert_eq!(app.db.count_messages(id).await, 1, "{name}");
    }
    app.stop().await;
}

async fn the_tampered_real_message_is_refused(backend: Backend) {
    let (body, value) = read_real("notification-2015-tampered.json");
    let sent =
        Timestamp::parse_rfc3339(value["Timestamp"].as_str().unwrap_or_default()).expect("time");
    let clock = Clock::fixed(sent.saturating_add(time::Duration::seconds(2)));
    let app = spawn_app_with(backend, move |s, hooks| {
        s.sns_cert_pins = real_pins();
        s.sns_topic_arns = vec![value["TopicArn"].as_str().unwrap_or_default().to_owned()];
        hooks.clock = clock;
    })
    .await;
    assert_refused(
        &app.post_raw(body, Some("Notification")).await,
        403,
        "bad_signature",
    );
    assert_eq!(app.db.total_messages().await, 0);
    app.stop().await;
}

async fn real_messages_are_too_old_on_todays_clock(backend: Backend) {
    let app = spawn_app_with(backend, |s, _| {
        s.sns_cert_pins = real_pins();
        s.sns_topic_arns = vec!["arn:aws:sns:us-east-1:364852123998:test-email".into()];
    })
    .await;
    let (body, _) = read_real("ses-bounce-sv1.json");
    assert_refused(
        &app.post_raw(body, Some("Notification")).await,
        403,
        "message_too_old",
    );
    app.stop().await;
}

on_both_databases!(
    every_real_aws_message_verifies_over_http,
    the_tampered_real_message_is_refused,
    real_messages_are_too_old_on_todays_clock,
);
