//! One suppression list with SES (SPEC §10): every change of bouncer's list
//! is put on or deleted from the SES account-level list through the real
//! SDK and the local SESv2 stand-in, refusals are recorded, counted and
//! alerted; `bouncer ses import|diff|check` read the SES side back.

use std::process::Output;

use bouncer::config::{ManualAs, SesPauseMode};
use serde_json::json;

use crate::feedback::{bounce, complaint, is_suppressed};
use crate::guard::alert_kinds;
use crate::helpers::{
    Backend, TempDir, TestApp, answer, assert_status, eventually, spawn_app_with,
};
use crate::on_both_databases;
use crate::ses_account::{ACCESS_KEY, REGION, at_ses, checked, cli_status, metrics, ses_state};
use crate::ses_stand_in::SesApi;

const AT: &str = "2026-11-25T08:00:00.000Z";
const CHECK_ADDRESS: &str = "bouncer-permission-check@example.com";

async fn pushing(backend: Backend, api: &SesApi, manual_as: ManualAs) -> TestApp {
    spawn_app_with(backend, |s, h| {
        at_ses(s, h, api);
        s.ses_push_suppressions = true;
        s.ses_push_manual_as = manual_as;
    })
    .await
}

async fn add(app: &TestApp, email: &str) {
    let response = app
        .client
        .post(format!("{}/v1/suppressions", app.address))
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
            app.address
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
        (Some(true), Some(4), Some(0)),
        "{push}"
    );
    let status = cli_status(&app);
    assert!(
        status.contains("SES push:       on: 0 pending, 4 done, 0 skipped, 0 refused"),
        "{status}"
    );
    assert!(
        metrics(&app)
            .await
            .contains("bouncer_ses_pushes{state=\"done\"} 4")
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

/// `bouncer ARGS...` against `db_url` and the stand-in, with credentials
/// in the environment (the standard chain's first link).
fn ses_cli(db_url: &str, api: &SesApi, env: &[(&str, &str)], args: &[&str]) -> Output {
    let dir = TempDir::new();
    let mut cmd = crate::cli::bouncer(dir.path());
    cmd.env("DATABASE_URL", db_url)
        .env("SES_REGION", REGION)
        .env("SES_API_ENDPOINT", &api.url)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", "test-only-secret")
        .env("AWS_CONFIG_FILE", dir.path().join("no-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("no-credentials"),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn import_pages_through_the_ses_list_and_never_erases_a_row(backend: Backend) {
    let api = SesApi::start().await;
    api.cap_pages(2);
    let day = 1_795_000_000; // 2026-11-18
    for (email, reason) in [
        ("a@example.org", "BOUNCE"),
        ("b@example.org", "BOUNCE"),
        ("c@example.org", "COMPLAINT"),
        ("known@example.org", "BOUNCE"),
        ("e@example.org", "BOUNCE"),
    ] {
        api.preload(email, reason, day);
    }
    api.preload("old@example.org", "BOUNCE", day - 400 * 86_400);
    let app = spawn_app_with(backend, |_, _| {}).await;
    add(&app, "known@example.org").await;
    let output = ses_cli(
        &app.db.url,
        &api,
        &[],
        &[
            "ses",
            "import",
            "--reason",
            "bounce",
            "--since",
            "2026-01-01",
        ],
    );
    let out = stdout(&output);
    assert!(
        output.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        out.contains("4 listed in 2 pages; 3 added (source ses-account); 1 already in bouncer"),
        "{out}"
    );
    let lists = api.calls_of("ListSuppressedDestinations");
    assert_eq!(lists.len(), 2);
    assert_eq!(lists[0].query_values("Reason"), ["BOUNCE"]);
    assert_eq!(lists[0].query_values("StartDate"), ["2026-01-01T00:00:00Z"]);
    assert!(lists[0].query_values("NextToken").is_empty());
    assert_eq!(lists[1].query_values("NextToken"), ["page-2"]);
    assert_eq!(lists[0].scope().map(|s| s.2), Some("ses".into()));
    let source = |email: &'static str| {
        app.db
            .text("SELECT source FROM suppressions WHERE email = $1", email)
    };
    assert_eq!(
        source("a@example.org").await.as_deref(),
        Some("ses-account")
    );
    assert_eq!(
        source("c@example.org").await,
        None,
        "only bounces were asked for"
    );
    assert_eq!(source("old@example.org").await, None, "only since 2026");
    let known = app.get("/v1/suppressions/known@example.org").await.1;
    assert_eq!(known["suppression"]["reason"], "manual", "kept: {known}");
    assert_eq!(known["suppression"]["note"], "asked us to stop");
    // Everything, the second time: the complaint comes in as a complaint.
    let output = ses_cli(&app.db.url, &api, &[], &["ses", "import"]);
    assert!(
        stdout(&output).contains("6 listed in 3 pages; 2 added"),
        "{}",
        stdout(&output)
    );
    let c = app.get("/v1/suppressions/c@example.org").await.1;
    assert_eq!(c["suppression"]["reason"], "complaint");
    app.stop().await;
    api.stop().await;
}

async fn diff_prints_what_only_one_list_holds(backend: Backend) {
    let api = SesApi::start().await;
    api.preload("both@example.org", "BOUNCE", 1_795_000_000);
    api.preload("ses-only@example.org", "COMPLAINT", 1_795_000_000);
    let app = spawn_app_with(backend, |_, _| {}).await;
    add(&app, "both@example.org").await;
    add(&app, "ours-only@example.org").await;
    let output = ses_cli(&app.db.url, &api, &[], &["ses", "diff"]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}");
    assert!(
        out.contains("only-in-bouncer\tours-only@example.org\tmanual\n"),
        "{out}"
    );
    assert!(
        out.contains("only-at-ses\tses-only@example.org\tCOMPLAINT\n"),
        "{out}"
    );
    assert!(!out.contains("\tboth@example.org"), "{out}");
    assert!(
        out.contains("in both: 1; only in bouncer: 1; only at SES (eu-west-1): 1"),
        "{out}"
    );
    app.stop().await;
    api.stop().await;
}

async fn check_names_the_missing_permission(backend: Backend) {
    let api = SesApi::start().await;
    api.fail_always("PutSuppressedDestination", 403, "AccessDeniedException");
    // `serve` says it at start-up: recorded, shown, alerted.
    let app = spawn_app_with(backend, |s, h| {
        at_ses(s, h, &api);
        s.ses_push_suppressions = true;
        s.ses_pause_mode = SesPauseMode::Account;
    })
    .await;
    checked(&app).await;
    let check = ses_state(&app).await["check"].clone();
    assert_eq!(
        check["missing"],
        json!(["ses:PutSuppressedDestination"]),
        "{check}"
    );
    assert!(
        alert_kinds(&app)
            .await
            .contains(&"ses_permissions".to_owned())
    );
    assert!(cli_status(&app).contains("missing ses:PutSuppressedDestination"));
    // And `bouncer ses check` on demand, with each API's verdict.
    let env = [
        ("SES_PUSH_SUPPRESSIONS", "true"),
        ("SES_PAUSE_MODE", "account"),
    ];
    let output = ses_cli(&app.db.url, &api, &env, &["ses", "check"]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("missing permissions: ses:PutSuppressedDestination\n"),
        "{out}"
    );
    for allowed in [
        "ses:GetAccount",
        "ses:PutAccountSendingAttributes",
        "ses:DeleteSuppressedDestination",
        "ses:ListSuppressedDestinations",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("allowed") && l.contains(allowed)),
            "{allowed}: {out}"
        );
    }
    assert!(
        out.contains("SES account in eu-west-1: sending enabled, enforcement HEALTHY"),
        "{out}"
    );
    assert!(api.account_enabled(), "the dry call changed nothing");
    assert!(!api.listed().contains_key(CHECK_ADDRESS));
    app.stop().await;
    api.stop().await;
}

on_both_databases!(
    import_pages_through_the_ses_list_and_never_erases_a_row,
    diff_prints_what_only_one_list_holds,
    check_names_the_missing_permission,
);
