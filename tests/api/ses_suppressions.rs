//! One suppression list with SES (SPEC §10): every change of bouncer's list
//! is put on or deleted from the SES account-level list through the real
//! SDK and the local SESv2 stand-in, refusals are recorded, counted and
//! alerted (`ses_cli` has the commands that read the SES side back).

use bouncer::config::ManualAs;
use serde_json::json;

use crate::feedback::{bounce, complaint, is_suppressed};
use crate::guard::alert_kinds;
use crate::helpers::{Backend, TestApp, answer, assert_status, eventually, spawn_app_with};
use crate::on_both_databases;
use crate::ses_account::{ACCESS_KEY, REGION, at_ses, checked, cli_status, metrics, ses_state};
use crate::ses_stand_in::SesApi;

const AT: &str = "2026-11-25T08:00:00.000Z";
pub const CHECK_ADDRESS: &str = "bouncer-permission-check@example.com";

async fn pushing(backend: Backend, api: &SesApi, manual_as: ManualAs) -> TestApp {
    spawn_app_with(backend, |s, h| {
        at_ses(s, h, api);
        s.ses_push_suppressions = true;
        s.ses_push_manual_as = manual_as;
    })
    .await
}

pub async fn add(app: &TestApp, email: &str) {
    let response = app
        .client
        .post(format!("{}/v1/suppressions", app.admin_address))
        .header("content-type", "application/json")
        .body(json!({"email": email, "note": "asked us to stop"}).to_string())
        .send()
        .await
        .expect("answer");
    let (status, body) = answer(response).await;
    assert!(status == 201 || status == 200, "{body}");
}

async fn remove(app: &TestApp, email: &str) {
    let response = app
        .client
        .delete(format!(
            "{}/v1/suppressions/{email}?by=carol&reason=recipient%20asked",
            app.admin_address
        ))
        .send()
        .await
        .expect("answer");
    let (status, body) = answer(response).await;
    assert_eq!(status, 200, "{body}");
}

/// The suppression-list calls about `email`, as (operation, reason).
fn calls_about(api: &SesApi, email: &str) -> Vec<(&'static str, Option<String>)> {
    api.calls()
        .into_iter()
        .filter(|c| c.email().as_deref() == Some(email))
        .map(|c| (c.operation, c.body["Reason"].as_str().map(str::to_owned)))
        .collect()
}

async fn nothing_pending(app: &TestApp) {
    eventually("the push outbox is empty", || async {
        ses_state(app).await["push"]["pending"] == 0
    })
    .await;
}

async fn each_change_of_the_list_is_put_or_deleted_at_ses_with_its_reason(backend: Backend) {
    let api = SesApi::start().await;
    let app = pushing(backend, &api, ManualAs::Bounce).await;
    checked(&app).await;
    let hard = "gone@example.net";
    let soft = "full@example.net";
    let angry = "angry@example.net";
    let manual = "asked@example.net";
    assert_status(
        &app.post(&bounce("Permanent", "General", hard, AT)).await,
        200,
        "stored",
    );
    for _ in 0..3 {
        assert_status(
            &app.post(&bounce("Transient", "MailboxFull", soft, AT))
                .await,
            200,
            "stored",
        );
    }
    assert_status(
        &app.post(&complaint(Some("abuse"), angry)).await,
        200,
        "stored",
    );
    add(&app, manual).await;
    nothing_pending(&app).await;
    assert_eq!(
        calls_about(&api, hard),
        [("PutSuppressedDestination", Some("BOUNCE".into()))]
    );
    assert_eq!(
        calls_about(&api, soft),
        [("PutSuppressedDestination", Some("BOUNCE".into()))],
        "soft bounces that suppress"
    );
    assert_eq!(
        calls_about(&api, angry),
        [("PutSuppressedDestination", Some("COMPLAINT".into()))]
    );
    assert_eq!(
        calls_about(&api, manual),
        [("PutSuppressedDestination", Some("BOUNCE".into()))],
        "manual rows as SES_PUSH_MANUAL_AS says"
    );
    let put = api
        .calls_of("PutSuppressedDestination")
        .pop()
        .expect("a put");
    assert_eq!(
        put.scope(),
        Some((ACCESS_KEY.into(), REGION.into(), "ses".into()))
    );
    assert_eq!(
        (put.method.as_str(), put.path.as_str()),
        ("PUT", "/v2/email/suppression/addresses")
    );

    // A CSV import from the command line is pushed like the rest.
    let dir = crate::helpers::TempDir::new();
    let csv = dir.path().join("list.csv");
    std::fs::write(&csv, "email,reason\nimported@example.net,complaint\n").expect("write");
    let output = crate::cli::bouncer(dir.path())
        .env("DATABASE_URL", &app.db.url)
        .args(["suppressions", "import"])
        .arg(&csv)
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    nothing_pending(&app).await;
    assert_eq!(
        calls_about(&api, "imported@example.net"),
        [("PutSuppressedDestination", Some("COMPLAINT".into()))]
    );

    remove(&app, manual).await;
    nothing_pending(&app).await;
    let delete = api
        .calls_of("DeleteSuppressedDestination")
        .into_iter()
        .find(|c| c.email().as_deref() == Some(manual))
        .expect("a delete");
    assert_eq!(delete.method, "DELETE");
    assert!(!api.listed().contains_key(manual));
    let audited = app
        .db
        .text(
            "SELECT CAST(ses_removed_at AS TEXT) FROM suppression_removals WHERE email = $1",
            manual,
        )
        .await;
    assert!(
        audited.is_some(),
        "the removal audit says when SES followed"
    );
    let listed = api.listed();
    assert_eq!(listed.get(hard).map(String::as_str), Some("BOUNCE"));
    assert_eq!(listed.get(angry).map(String::as_str), Some("COMPLAINT"));
    let push = &ses_state(&app).await["push"];
    assert_eq!(
        (
            push["enabled"].as_bool(),
            push["done"].as_i64(),
            push["refused"].as_i64()
        ),
        (Some(true), Some(5), Some(0)),
        "{push}"
    );
    let status = cli_status(&app);
    assert!(
        status.contains("SES push:       on: 0 pending, 5 done, 0 skipped, 0 refused"),
        "{status}"
    );
    assert!(
        metrics(&app)
            .await
            .contains("bouncer_ses_pushes{state=\"done\"} 5")
    );
    app.stop().await;
    api.stop().await;
}

async fn a_refused_push_is_recorded_counted_and_alerted_once(backend: Backend) {
    let api = SesApi::start().await;
    let app = pushing(backend, &api, ManualAs::Complaint).await;
    checked(&app).await;
    api.fail_always("PutSuppressedDestination", 400, "BadRequestException");
    add(&app, "first@example.net").await;
    add(&app, "second@example.net").await;
    eventually("both refused", || async {
        ses_state(&app).await["push"]["refused"] == 2
    })
    .await;
    assert!(
        is_suppressed(&app, "first@example.net").await,
        "bouncer's list keeps them"
    );
    let push = ses_state(&app).await["push"].clone();
    assert!(
        push["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("BadRequestException")),
        "{push}"
    );
    let kinds = alert_kinds(&app).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "ses_push_refused").count(),
        1,
        "at most one an hour: {kinds:?}"
    );
    let text = metrics(&app).await;
    assert!(
        text.contains(
            "bouncer_ses_calls_total{operation=\"PutSuppressedDestination\",outcome=\"refused\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains("bouncer_ses_pushes{state=\"refused\"} 2"),
        "{text}"
    );
    assert_eq!(
        api.calls_of("PutSuppressedDestination")
            .iter()
            .filter(|c| c.email().as_deref() == Some("first@example.net"))
            .count(),
        1,
        "a refusal is not retried"
    );
    assert!(cli_status(&app).contains("2 refused"));
    app.stop().await;
    api.stop().await;
}

async fn ses_ends_as_the_latest_change_of_an_address(backend: Backend) {
    let api = SesApi::start().await;
    let app = pushing(backend, &api, ManualAs::Bounce).await;
    checked(&app).await;
    let email = "flaky@example.net";
    api.fail_always("PutSuppressedDestination", 503, "ServiceUnavailable");
    add(&app, email).await;
    eventually("a put is tried", || async {
        !calls_about(&api, email).is_empty()
    })
    .await;
    remove(&app, email).await;
    add(&app, email).await;
    remove(&app, email).await;
    api.heal("PutSuppressedDestination");
    nothing_pending(&app).await;
    assert!(!api.listed().contains_key(email), "removed, as in bouncer");
    assert_eq!(
        calls_about(&api, email).last().map(|c| c.0),
        Some("DeleteSuppressedDestination")
    );
    add(&app, email).await;
    nothing_pending(&app).await;
    assert_eq!(api.listed().get(email).map(String::as_str), Some("BOUNCE"));
    app.stop().await;
    api.stop().await;
}

on_both_databases!(
    each_change_of_the_list_is_put_or_deleted_at_ses_with_its_reason,
    a_refused_push_is_recorded_counted_and_alerted_once,
    ses_ends_as_the_latest_change_of_an_address,
);
