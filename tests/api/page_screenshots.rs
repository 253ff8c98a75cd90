//! Screenshots of the page (SPEC §11) in its three states, active, warning
//! and paused, written by a headless Chromium to `target/tmp/screenshots/`
//! (`page-<backend>-<state>.png`, the top of the page, and `-full.png`):
//! a plausible history, real bounces and complaints through the pipeline,
//! alerts delivered to a webhook, and the pause carried out at a local SES
//! stand-in. `docs/page-paused.png` is one of them.

use bouncer::config::SesPauseMode;
use serde_json::{Value, json};

use crate::alert_sinks::Webhook;
use crate::browser::{Browser, screenshot_dir};
use crate::guard::{a_complaint, alerting};
use crate::helpers::{Backend, TestApp, assert_status, eventually, spawn_app_with};
use crate::on_both_databases;
use crate::page::{CAROL_DIAGNOSTIC, hard_bounce, hour_ago, open_page, seed_hour};
use crate::ses_account::at_ses;
use crate::ses_stand_in::SesApi;
use crate::signing::TOPIC;

/// A month-like history for the screenshots: about 200 sends an hour over
/// ten days, bounces around 1.5%, a complaint a day.
async fn seed_plausible_history(app: &TestApp) {
    for ago in 1..=240_i64 {
        let sends = 150 + (ago * 37) % 120;
        let hard_bounces = sends * (8 + (ago * 13) % 12) / 1000;
        let complaints = i64::from(ago % 23 == 0);
        seed_hour(app, &hour_ago(ago), sends, hard_bounces, complaints).await;
    }
}

async fn shoot(browser: &Browser, backend: &Backend, state: &str) {
    let name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres { .. } => "postgres",
    };
    let dir = screenshot_dir();
    browser.resize(1100, 1300).await;
    browser
        .screenshot(&dir.join(format!("page-{name}-{state}.png")))
        .await;
    let height = browser
        .run("return document.documentElement.scrollHeight;", json!([]))
        .await
        .as_u64()
        .unwrap_or(2400);
    browser.resize(1280, height as u32 + 20).await;
    browser
        .screenshot(&dir.join(format!("page-{name}-{state}-full.png")))
        .await;
}

async fn sending(app: &TestApp) -> Value {
    app.admin_get("/v1/sending").await.1
}

async fn screenshots_of_the_page_active_warning_and_paused(backend: Backend) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let webhook = Webhook::start().await;
    let ses = SesApi::start().await;
    let url = webhook.url.clone();
    let app = spawn_app_with(backend.clone(), |s, h| {
        alerting(s, &url, None);
        at_ses(s, h, &ses);
        s.ses_pause_mode = SesPauseMode::Account;
    })
    .await;
    seed_plausible_history(&app).await;
    app.db
        .execute(&format!(
            "INSERT INTO subscriptions (topic_arn, subscription_arn, state, confirm_mode, created_at, updated_at, \
             confirmed_at, last_message_id, last_message_at) VALUES ('{TOPIC}', '{TOPIC}:0f6b5d3e', 'confirmed', 'sdk', \
             '{h}', '{h}', '{h}', 'seed', '{h}')",
            h = hour_ago(240)
        ))
        .await;
    for (email, diagnostic) in [
        ("carol.jones@example.com", CAROL_DIAGNOSTIC),
        (
            "old.account@example.org",
            "smtp; 550 5.1.1 The email account that you tried to reach does not exist",
        ),
        (
            "info@closed-shop.example",
            "smtp; 554 5.7.1 Service unavailable; client host blocked",
        ),
    ] {
        assert_status(
            &app.post(&hard_bounce(email, diagnostic)).await,
            200,
            "stored",
        );
    }
    open_page(&browser, &app).await;
    browser
        .wait_for(
            "the page",
            "document.getElementById('state-badge').textContent === 'Active'",
        )
        .await;
    browser
        .wait_for(
            "the list",
            "document.querySelectorAll('#suppression-table tbody tr').length === 3",
        )
        .await;
    shoot(&browser, &backend, "active").await;

    // Complaints in this hour: past the warning line, then the pause line.
    for _ in 0..20 {
        if !sending(&app).await["warned_at"].is_null() {
            break;
        }
        assert_status(&app.post(&a_complaint()).await, 200, "stored");
    }
    browser.click("#refresh").await;
    browser
        .wait_for(
            "the warning",
            "document.getElementById('state-badge').textContent === 'Active — warning'",
        )
        .await;
    eventually("the warning delivered", || async {
        webhook.kinds() == ["warning"]
    })
    .await;
    browser.click("#refresh").await;
    browser
        .wait_for(
            "its delivery",
            "document.querySelector('#alert-table li.ok')",
        )
        .await;
    shoot(&browser, &backend, "warning").await;

    for _ in 0..20 {
        if sending(&app).await["state"] == "paused" {
            break;
        }
        assert_status(&app.post(&a_complaint()).await, 200, "stored");
    }
    eventually("SES confirmed the pause", || async {
        sending(&app).await["ses"]["targets"][0]["confirmed"] == "disabled"
    })
    .await;
    eventually("the pause delivered", || async {
        webhook.kinds() == ["warning", "paused"]
    })
    .await;
    browser.click("#refresh").await;
    browser
        .wait_for(
            "the pause",
            "document.getElementById('state-badge').textContent === 'Paused'",
        )
        .await;
    browser
        .wait_for(
            "both deliveries",
            "document.querySelectorAll('#alert-table li.ok').length === 2",
        )
        .await;
    let ses_shown = browser.text("#ses-state").await;
    assert!(
        ses_shown.contains("account") && ses_shown.contains("disabled"),
        "{ses_shown}"
    );
    shoot(&browser, &backend, "paused").await;
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    app.stop().await;
    webhook.stop().await;
    ses.stop().await;
}

on_both_databases!(screenshots_of_the_page_active_warning_and_paused);
