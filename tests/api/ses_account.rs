//! Pausing at SES itself (SPEC §10): every pause and resume, automatic or
//! by hand, is carried out by the real aws-sdk-sesv2 client over HTTP
//! against the local SESv2 stand-in, retried through throttling, alerted
//! when refused, kept across a restart, and carried out once by two
//! replicas. What a user sees is asserted: the stand-in's calls and their
//! SigV4 scope, `/v1/sending`, `bouncer status`, alerts and `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use bouncer::app::Hooks;
use bouncer::config::{SesPauseMode, Settings};
use serde_json::{Value, json};

use crate::guard::{a_complaint, alert_kinds, deliveries};
use crate::helpers::{
    Backend, TempDir, TestApp, TestDb, answer, assert_status, eventually, spawn_app_with, start,
    test_settings,
};
use crate::on_both_databases;
use crate::ses_stand_in::SesApi;

pub const REGION: &str = "eu-west-1";
pub const ACCESS_KEY: &str = "AKIDSESTESTONLY";

/// Settings that act at SES through `api`, with fast worker timings.
pub fn at_ses(s: &mut Settings, hooks: &mut Hooks, api: &SesApi) {
    s.ses_region = Some(REGION.into());
    s.ses_api_endpoint = Some(api.url.clone());
    s.ses_poll_ms = 20;
    s.ses_retry_min_ms = 20;
    s.ses_push_rate_per_sec = 1000.0;
    hooks.aws_credentials = Some(aws_credential_types::Credentials::new(
        ACCESS_KEY,
        "test-only-secret",
        None,
        None,
        "tests",
    ));
}

/// The app pausing the whole account at SES in `REGION`.
async fn pausing_account(backend: Backend, api: &SesApi) -> TestApp {
    spawn_app_with(backend, |s, h| {
        at_ses(s, h, api);
        s.ses_pause_mode = SesPauseMode::Account;
        s.guard_warn = false;
    })
    .await
}

/// The `ses` object of `GET /v1/sending`.
pub async fn ses_state(app: &TestApp) -> Value {
    let (status, body) = app.admin_get("/v1/sending").await;
    assert_eq!(status, 200, "{body}");
    body["ses"].clone()
}

/// Waits for the start-up permission check, so that its dry calls are done
/// before a test tells the stand-in to fail.
pub async fn checked(app: &TestApp) {
    eventually("the start-up SES check is recorded", || async {
        !ses_state(app).await["check"].is_null()
    })
    .await;
}

async fn target(app: &TestApp, name: &str) -> Value {
    ses_state(app).await["targets"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["target"] == name).cloned())
        .unwrap_or(Value::Null)
}

async fn confirmed(app: &TestApp, name: &str, word: &str) {
    eventually(
        &format!("SES confirms sending {word} at {name}"),
        || async {
            let t = target(app, name).await;
            t["state"] == "confirmed" && t["confirmed"] == word
        },
    )
    .await;
}

pub async fn set_sending(app: &TestApp, state: &str) {
    let response = app
        .client
        .put(format!("{}/v1/sending", app.admin_address))
        .header("content-type", "application/json")
        .body(json!({"state": state, "by": "carol", "reason": "incident 7"}).to_string())
        .send()
        .await
        .expect("answer");
    let (status, body) = answer(response).await;
    assert_eq!(status, 200, "{body}");
}

pub async fn metrics(app: &TestApp) -> String {
    app.admin_get("/metrics")
        .await
        .1
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `bouncer status` run against the app's database.
pub fn cli_status(app: &TestApp) -> String {
    let dir = TempDir::new();
    let output = crate::cli::bouncer(dir.path())
        .env("DATABASE_URL", &app.db.url)
        .arg("status")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn a_pause_by_hand_disables_the_account_at_ses_and_a_resume_enables_it(backend: Backend) {
    let api = SesApi::start().await;
    let app = pausing_account(backend, &api).await;
    checked(&app).await;
    assert_eq!(
        target(&app, "account").await["state"],
        "idle",
        "nothing to do at SES until a pause"
    );
    assert!(api.switches_to(false).is_empty());
    set_sending(&app, "paused").await;
    confirmed(&app, "account", "disabled").await;
    assert!(!api.account_enabled());
    let pauses = api.switches_to(false);
    assert_eq!(pauses.len(), 1, "{pauses:?}");
    assert_eq!(pauses[0].operation, "PutAccountSendingAttributes");
    assert_eq!(
        (pauses[0].method.as_str(), pauses[0].path.as_str()),
        ("PUT", "/v2/email/account/sending")
    );
    assert_eq!(
        pauses[0].scope(),
        Some((ACCESS_KEY.into(), REGION.into(), "ses".into())),
        "SigV4 for SES in the configured region: {}",
        pauses[0].authorization
    );
    let status = cli_status(&app);
    assert!(status.contains("sending:        paused"), "{status}");
    assert!(
        status.contains("SES pause:      account: sending disabled at SES, confirmed"),
        "{status}"
    );
    let text = metrics(&app).await;
    assert!(
        text.contains("bouncer_ses_sending_enabled{target=\"account\",view=\"confirmed\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("bouncer_ses_sending_pending{target=\"account\"} 0"),
        "{text}"
    );
    assert!(
        text.contains(
            "bouncer_ses_calls_total{operation=\"PutAccountSendingAttributes\",outcome=\"ok\"}"
        ),
        "{text}"
    );

    set_sending(&app, "active").await;
    confirmed(&app, "account", "enabled").await;
    assert!(api.account_enabled());
    assert_eq!(api.switches_to(false).len(), 1);
    app.stop().await;
    api.stop().await;
}

async fn an_automatic_pause_disables_each_configuration_set(backend: Backend) {
    let api = SesApi::start().await;
    let app = spawn_app_with(backend, |s, h| {
        at_ses(s, h, &api);
        s.ses_pause_mode = SesPauseMode::ConfigurationSets;
        s.ses_configuration_sets = vec!["marketing".into(), "transactional".into()];
        s.guard_warn = false;
    })
    .await;
    checked(&app).await;
    assert_status(&app.post(&deliveries(1000)).await, 200, "stored");
    assert_status(&app.post(&a_complaint()).await, 200, "stored");
    assert_status(&app.post(&a_complaint()).await, 200, "stored");
    assert_eq!(app.admin_get("/v1/sending").await.1["state"], "paused");
    confirmed(&app, "configuration-set:marketing", "disabled").await;
    confirmed(&app, "configuration-set:transactional", "disabled").await;
    let mut paths: Vec<String> = api
        .switches_to(false)
        .iter()
        .map(|c| c.path.clone())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/v2/email/configuration-sets/marketing/sending",
            "/v2/email/configuration-sets/transactional/sending"
        ]
    );
    assert_eq!(api.set_enabled("marketing"), Some(false));
    assert!(api.account_enabled(), "the account itself is not touched");
    assert_eq!(alert_kinds(&app).await, ["paused"]);
    app.stop().await;
    api.stop().await;
}

async fn throttling_is_retried_until_ses_confirms(backend: Backend) {
    let api = SesApi::start().await;
    let app = pausing_account(backend, &api).await;
    checked(&app).await;
    api.fail_next(
        "PutAccountSendingAttributes",
        429,
        "TooManyRequestsException",
        2,
    );
    set_sending(&app, "paused").await;
    confirmed(&app, "account", "disabled").await;
    assert_eq!(
        api.switches_to(false).len(),
        3,
        "two throttled, one through"
    );
    let t = target(&app, "account").await;
    assert_eq!(t["attempts"], 3);
    assert_eq!(
        t["next_attempt_at"],
        Value::Null,
        "nothing left to retry: {t}"
    );
    assert!(
        t["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("TooManyRequestsException")),
        "{t}"
    );
    let text = metrics(&app).await;
    assert!(
        text.contains("bouncer_ses_calls_total{operation=\"PutAccountSendingAttributes\",outcome=\"throttled\"} 2"),
        "{text}"
    );
    assert_eq!(
        alert_kinds(&app).await,
        ["paused"],
        "throttling alone is not alerted"
    );
    app.stop().await;
    api.stop().await;
}

async fn a_refused_pause_and_a_refused_resume_are_alerted_shown_and_retried(backend: Backend) {
    let api = SesApi::start().await;
    let app = pausing_account(backend, &api).await;
    checked(&app).await;
    api.fail_always("PutAccountSendingAttributes", 403, "AccessDeniedException");
    set_sending(&app, "paused").await;
    eventually("the refused pause is alerted", || async {
        alert_kinds(&app)
            .await
            .contains(&"ses_pause_failed".to_owned())
    })
    .await;
    let t = target(&app, "account").await;
    assert_eq!(
        (t["state"].as_str(), t["wanted"].as_str()),
        (Some("pending"), Some("disabled"))
    );
    assert!(
        t["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("AccessDeniedException")),
        "{t}"
    );
    let status = cli_status(&app);
    assert!(
        status.contains("bouncer wants sending disabled; SES has not confirmed it yet"),
        "{status}"
    );
    assert!(status.contains("AccessDeniedException"), "{status}");
    let alert = app
        .db
        .text(
            "SELECT text FROM alerts WHERE kind = $1",
            "ses_pause_failed",
        )
        .await
        .unwrap_or_default();
    assert!(
        alert.contains("ses:PutAccountSendingAttributes"),
        "names the permission: {alert}"
    );
    let text = metrics(&app).await;
    assert!(text.contains("outcome=\"denied\""), "{text}");
    assert!(
        !text.contains("bouncer_ses_sending_last_error_seconds{target=\"account\"} 0\n"),
        "the last error's time: {text}"
    );
    // Retried until the permission is granted; alerted once.
    eventually("retried", || async { api.switches_to(false).len() >= 3 }).await;
    api.heal("PutAccountSendingAttributes");
    confirmed(&app, "account", "disabled").await;
    let kinds = alert_kinds(&app).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "ses_pause_failed").count(),
        1,
        "{kinds:?}"
    );

    api.fail_always("PutAccountSendingAttributes", 400, "BadRequestException");
    set_sending(&app, "active").await;
    eventually("the refused resume is alerted", || async {
        alert_kinds(&app)
            .await
            .contains(&"ses_resume_failed".to_owned())
    })
    .await;
    assert!(!api.account_enabled());
    app.stop().await;
    api.stop().await;
}

async fn the_latest_intent_wins(backend: Backend) {
    let api = SesApi::start().await;
    let app = pausing_account(backend, &api).await;
    checked(&app).await;
    api.fail_always("PutAccountSendingAttributes", 503, "ServiceUnavailable");
    set_sending(&app, "paused").await;
    eventually("a pause is tried", || async {
        !api.switches_to(false).is_empty()
    })
    .await;
    set_sending(&app, "active").await;
    api.heal("PutAccountSendingAttributes");
    confirmed(&app, "account", "enabled").await;
    assert!(api.account_enabled(), "SES ends as bouncer is: active");
    let last = api
        .calls_of("PutAccountSendingAttributes")
        .pop()
        .expect("a call");
    assert_eq!(last.body["SendingEnabled"], true);
    app.stop().await;
    api.stop().await;
}

/// A pause that SES failed, pending with a backoff far beyond the test
/// (the first failure's retry is due five minutes later, the cap, so only a
/// restart can bring it forward); the app stopped and SES healed. Returns
/// what restarts the app and the check recorded before the stop.
async fn pending_pause_across_a_stop(
    backend: Backend,
    api: &SesApi,
) -> ((Arc<TestDb>, Arc<TempDir>, Settings, Hooks), Value) {
    let app = spawn_app_with(backend, |s, h| {
        at_ses(s, h, api);
        s.ses_pause_mode = SesPauseMode::Account;
        s.ses_retry_min_ms = 600_000;
        s.guard_warn = false;
    })
    .await;
    checked(&app).await;
    let first_check = ses_state(&app).await["check"]["checked_at"].clone();
    api.fail_always("PutAccountSendingAttributes", 503, "ServiceUnavailable");
    set_sending(&app, "paused").await;
    eventually("the failed pause is recorded", || async {
        target(&app, "account").await["last_error"].is_string()
    })
    .await;
    let pending = target(&app, "account").await;
    assert_eq!(pending["state"], "pending", "{pending}");
    assert!(pending["next_attempt_at"].is_string(), "{pending}");
    let stopped = app.stop().await;
    assert_eq!(
        api.switches_to(false).len(),
        1,
        "one try before the restart: the backoff holds"
    );
    assert!(
        api.account_enabled(),
        "not paused at SES before the restart"
    );
    api.heal("PutAccountSendingAttributes");
    (stopped, first_check)
}

async fn a_restart_before_ses_confirms_loses_no_intent(backend: Backend) {
    let api = SesApi::start().await;
    let ((db, dir, settings, hooks), _) = pending_pause_across_a_stop(backend, &api).await;
    // Retried at start-up, not five minutes later.
    let app = start(settings, hooks, db, dir).await;
    confirmed(&app, "account", "disabled").await;
    assert!(!api.account_enabled());
    assert_eq!(
        target(&app, "account").await["next_attempt_at"],
        Value::Null
    );
    app.stop().await;
    api.stop().await;
}

async fn the_start_up_check_waits_for_a_pause_in_flight(backend: Backend) {
    let api = SesApi::start().await;
    let ((db, dir, settings, hooks), first_check) =
        pending_pause_across_a_stop(backend, &api).await;
    // The worker's pause is on the wire, holding the target, when the
    // check comes to the sending switch.
    api.slow_down("GetAccount", Duration::from_millis(300));
    api.slow_down("PutAccountSendingAttributes", Duration::from_millis(800));
    let before = api.calls_of("PutAccountSendingAttributes").len();
    let app = start(settings, hooks, db, dir).await;
    confirmed(&app, "account", "disabled").await;
    eventually("the restart's check is recorded", || async {
        ses_state(&app).await["check"]["checked_at"] != first_check
    })
    .await;
    // The worker's pause first, then the check's write-back of what SES
    // then had: the check waited for the worker instead of skipping.
    let switches: Vec<Value> = api.calls_of("PutAccountSendingAttributes")[before..]
        .iter()
        .map(|c| c.body["SendingEnabled"].clone())
        .collect();
    assert_eq!(switches, [json!(false), json!(false)]);
    let check = ses_state(&app).await["check"].clone();
    let switch = check["permissions"]
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|c| c["permission"] == "ses:PutAccountSendingAttributes")
        })
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(switch["verdict"], "allowed", "{check}");
    assert!(!api.account_enabled(), "the check wrote back what SES had");
    app.stop().await;
    api.stop().await;
}

/// The check `serve` keeps (`ses_settings.check_json`).
async fn kept_check(db: &TestDb) -> String {
    db.text(
        "SELECT check_json FROM ses_settings WHERE id = 1 AND check_json <> $1",
        "",
    )
    .await
    .unwrap_or_default()
}

/// Stops `app`, asserting the stop does not wait out the check (its wait
/// for a lease is bounded at 25 s, a call at 20 s) and that a check cut
/// short is not kept in place of the last whole one.
async fn stops_at_once_keeping_the_last_check(app: TestApp, kept: &str) {
    let stopping = std::time::Instant::now();
    let (db, ..) = app.stop().await;
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(10), "the stop took {took:?}");
    assert_eq!(kept_check(&db).await, kept, "the last whole check stays");
}

async fn a_stop_does_not_wait_for_a_target_another_process_holds(backend: Backend) {
    let api = SesApi::start().await;
    let ((db, dir, settings, hooks), _) = pending_pause_across_a_stop(backend, &api).await;
    let kept = kept_check(&db).await;
    assert!(kept.contains("ses:PutAccountSendingAttributes"), "{kept}");
    // Another process holds the target: a replica mid-call, or one killed
    // during its call (its lease lasts a minute; an hour here).
    db.execute(if db.is_sqlite() {
        "UPDATE ses_sending SET lease_until = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+1 hour')"
    } else {
        "UPDATE ses_sending SET lease_until = now() + interval '1 hour'"
    })
    .await;
    let reads = api.calls_of("GetAccount").len();
    let app = start(settings, hooks, db, dir).await;
    eventually("the check has read the account and waits", || async {
        api.calls_of("GetAccount").len() > reads
    })
    .await;
    stops_at_once_keeping_the_last_check(app, &kept).await;
    assert!(api.account_enabled(), "nobody paused: the target was held");
    api.stop().await;
}

async fn a_stop_does_not_wait_for_a_slow_ses(backend: Backend) {
    let api = SesApi::start().await;
    let app = pausing_account(backend, &api).await;
    checked(&app).await;
    let kept = kept_check(&app.db).await;
    let (db, dir, settings, hooks) = app.stop().await;
    // Longer than a call may take: the SDK gives up after 20 s.
    api.slow_down("GetAccount", Duration::from_secs(60));
    let app = start(settings, hooks, db, dir).await;
    // The start-up check's first call is on the wire.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stops_at_once_keeping_the_last_check(app, &kept).await;
    api.stop().await;
}

async fn two_replicas_carry_out_one_intent_once(backend: Backend) {
    let api = SesApi::start().await;
    let app = pausing_account(backend, &api).await;
    checked(&app).await;
    let first_check = ses_state(&app).await["check"]["checked_at"].clone();
    let dir2 = Arc::new(TempDir::new());
    let mut settings2 = test_settings(&app.db.url, dir2.path());
    let mut hooks2 = Hooks::default();
    at_ses(&mut settings2, &mut hooks2, &api);
    settings2.ses_pause_mode = SesPauseMode::Account;
    let replica = start(settings2, hooks2, app.db.clone(), dir2).await;
    eventually("the replica's start-up check is recorded too", || async {
        ses_state(&replica).await["check"]["checked_at"] != first_check
    })
    .await;
    set_sending(&app, "paused").await;
    confirmed(&replica, "account", "disabled").await;
    // Many poll rounds of both workers later: still one call.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        api.switches_to(false).len(),
        1,
        "{:?}",
        api.switches_to(false)
    );
    replica.stop().await;
    app.stop().await;
    api.stop().await;
}

on_both_databases!(
    a_pause_by_hand_disables_the_account_at_ses_and_a_resume_enables_it,
    an_automatic_pause_disables_each_configuration_set,
    throttling_is_retried_until_ses_confirms,
    a_refused_pause_and_a_refused_resume_are_alerted_shown_and_retried,
    the_latest_intent_wins,
    a_restart_before_ses_confirms_loses_no_intent,
    the_start_up_check_waits_for_a_pause_in_flight,
    a_stop_does_not_wait_for_a_target_another_process_holds,
    a_stop_does_not_wait_for_a_slow_ses,
    two_replicas_carry_out_one_intent_once,
);
