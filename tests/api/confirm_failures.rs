//! Confirmation failures sorted the way SNS needs them. What may pass (a 5xx
//! or 429, from SNS or from a proxy or VPC endpoint in between with no SNS
//! error body; SNS throttling) answers 503 `confirmation_unavailable`, so SNS
//! sends the confirmation again; a refusal by SNS answers 400
//! `confirmation_refused`. Nothing is stored either way.

use bouncer::sns::confirm::ConfirmMode;
use serde_json::Value;

use crate::cert_fetch::CertHost;
use crate::helpers::{Backend, TestApp, assert_status, spawn_app_with};
use crate::on_both_databases;
use crate::signing::{Msg, TOPIC};
use crate::subscriptions::{SnsApi, app_with_sdk, app_with_sdk_at, sns_error};

/// Posts a new confirmation and asserts the answer, naming `case` on failure.
/// Its detail says what SNS said, not the SDK's dump of the HTTP answer.
async fn assert_confirmation(app: &TestApp, msg: &Msg, case: &str, status: u16, code: &str) {
    let (got, body) = app.post(msg).await;
    assert_eq!(
        (got, body["error"].as_str()),
        (status, Some(code)),
        "{case}: {body}"
    );
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(": ConfirmSubscription failed: ") || detail.contains(": SubscribeURL"),
        "{case}: {detail}"
    );
    for dump in ["SdkBody", "headers", "ServiceError {"] {
        assert!(!detail.contains(dump), "{case}: {detail}");
    }
}

async fn sdk_answers_that_may_pass_are_503_and_the_retry_confirms(backend: Backend) {
    let api = SnsApi::start().await;
    let app = app_with_sdk(backend, &api).await;
    let html = |title: &str| {
        format!("<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>")
    };
    let mut last = None;
    for (status, content_type, body) in [
        (502, "text/html", html("502 Bad Gateway")),
        (503, "text/plain", String::new()),
        (504, "text/html", html("504 Gateway Time-out")),
        (429, "text/plain", String::new()),
        (400, "text/xml", sns_error("Throttling")),
    ] {
        api.fail_with(status, content_type, body.clone());
        let msg = Msg::subscription_confirmation(TOPIC).sign();
        let case = format!("{status} {body:?}");
        assert_confirmation(&app, &msg, &case, 503, "confirmation_unavailable").await;
        last = Some(msg);
    }
    assert_eq!(app.db.total_messages().await, 0);
    // SNS sends the confirmation again, and this time it goes through.
    api.recover();
    let msg = last.expect("a confirmation");
    assert_status(&app.post(&msg).await, 200, "stored");
    let (_, subscriptions) = app.admin_get("/v1/subscriptions").await;
    assert_eq!(subscriptions["items"][0]["state"], "confirmed");
    app.stop().await;
    api.stop().await;
}

async fn sdk_refusals_by_sns_are_400_and_nothing_is_stored(backend: Backend) {
    let api = SnsApi::start().await;
    let app = app_with_sdk(backend, &api).await;
    for (status, code) in [
        (400, "InvalidParameter"),
        (403, "AuthorizationError"),
        (404, "NotFound"),
    ] {
        api.fail_with(status, "text/xml", sns_error(code));
        let msg = Msg::subscription_confirmation(TOPIC).sign();
        let case = format!("{status} {code}");
        assert_confirmation(&app, &msg, &case, 400, "confirmation_refused").await;
    }
    assert_eq!(app.db.total_messages().await, 0);
    let (_, subscriptions) = app.admin_get("/v1/subscriptions").await;
    assert_eq!(subscriptions["items"], Value::Array(vec![]));
    app.stop().await;
    api.stop().await;
}

async fn url_mode_sorts_failures_the_same_way(backend: Backend) {
    let host = CertHost::start().await;
    let overrides = host.overrides();
    let app = spawn_app_with(backend, move |s, hooks| {
        s.sns_confirm_mode = ConfirmMode::Url;
        hooks.outbound = overrides;
    })
    .await;
    for (token, status, code) in [
        ("answer-429", 503, "confirmation_unavailable"),
        ("answer-502", 503, "confirmation_unavailable"),
        ("answer-400-Throttling", 503, "confirmation_unavailable"),
        ("answer-404-NotFound", 400, "confirmation_refused"),
        ("answer-403-AuthorizationError", 400, "confirmation_refused"),
    ] {
        let msg = Msg::subscription_confirmation(TOPIC)
            .set("Token", token)
            .set(
                "SubscribeURL",
                &format!("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token={token}"),
            )
            .sign();
        assert_confirmation(&app, &msg, token, status, code).await;
    }
    assert_eq!(app.db.total_messages().await, 0);
    app.stop().await;
    host.stop().await;
}

on_both_databases!(
    sdk_answers_that_may_pass_are_503_and_the_retry_confirms,
    sdk_refusals_by_sns_are_400_and_nothing_is_stored,
    url_mode_sorts_failures_the_same_way,
);

/// An SNS API that takes the request and never answers: the confirmation is
/// answered 503 within SNS's ~15 s, so SNS sends it again, instead of
/// holding the connection until SNS gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_sns_api_is_answered_503_in_time() {
    // Bound, never accepted: the kernel takes the connection and the
    // request, and nothing ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", silent.local_addr().expect("addr"));
    let app = app_with_sdk_at(Backend::Sqlite, endpoint).await;
    let started = std::time::Instant::now();
    let msg = Msg::subscription_confirmation(TOPIC).sign();
    let (status, body) = app.post(&msg).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "confirmation_unavailable");
    assert_eq!(
        body["detail"],
        "subscription not confirmed, SNS may send it again: \
         ConfirmSubscription failed: SNS did not answer within 10 s"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(14));
    assert_eq!(app.db.total_messages().await, 0);
    drop(silent);
    app.stop().await;
}
