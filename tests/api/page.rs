//! The page for people (SPEC §11) in a real browser (headless Chromium, see
//! `browser.rs`), on SQLite and PostgreSQL: what a person sees and does.
//! It loads without console errors, charts a known history against the
//! lines, finds a seeded address and removes it with who and why, resumes
//! sending with who and why, asks for a token where one is needed, and a
//! page of another site cannot change anything. (Screenshots:
//! `page_screenshots.rs`.)

use bouncer::time::Timestamp;
use serde_json::json;

use crate::browser::Browser;
use crate::helpers::{Backend, TestApp, TestDb, assert_status, spawn_app};
use crate::on_both_databases;
use crate::signing::{Msg, TOPIC, unique_id};
use crate::suppression_api::{TOKEN, app_with_token};

/// The start of the hour `hours_ago` hours before this one, as stored.
pub fn hour_ago(hours_ago: i64) -> String {
    let now = Timestamp::from_datetime(time::OffsetDateTime::now_utc());
    bouncer::guard::hour_of(now)
        .saturating_sub(time::Duration::hours(hours_ago))
        .to_text()
}

/// A time as an SQL literal of the test's database (PostgreSQL's columns
/// are `timestamptz`, SQLite's text).
pub fn time_literal(db: &TestDb, text: &str) -> String {
    if db.is_sqlite() {
        format!("'{text}'")
    } else {
        format!("'{text}'::timestamptz")
    }
}

/// Writes one hourly bucket of the guard's counts (`rate_buckets` is a
/// documented table; the pipeline would put every event in this hour).
pub async fn seed_hour(app: &TestApp, hour: &str, sends: i64, hard_bounces: i64, complaints: i64) {
    seed_hour_in(&app.db, hour, sends, hard_bounces, complaints).await;
}

/// [`seed_hour`] in a database without a service.
pub async fn seed_hour_in(db: &TestDb, hour: &str, sends: i64, hard_bounces: i64, complaints: i64) {
    let delivery_sends = sends - hard_bounces;
    db.execute(&format!(
        "INSERT INTO rate_buckets (bucket_start, sends, hard_bounces, complaints, delivery_sends) \
         VALUES ({}, {sends}, {hard_bounces}, {complaints}, {delivery_sends})",
        time_literal(db, hour)
    ))
    .await;
}

/// The known history of the chart tests: (hours ago, sends, hard bounces,
/// complaints), and the window rates the guard reads at each hour's end.
pub const KNOWN: [(i64, i64, i64, i64); 3] = [(4, 1000, 10, 0), (3, 1000, 40, 1), (1, 2000, 10, 3)];
pub const KNOWN_BOUNCE_RATES: [f64; 3] = [0.01, 0.025, 0.015];
pub const KNOWN_COMPLAINT_RATES: [f64; 3] = [0.0, 0.0005, 0.001];

pub async fn seed_known_history(app: &TestApp) {
    for (ago, sends, hard_bounces, complaints) in KNOWN {
        seed_hour(app, &hour_ago(ago), sends, hard_bounces, complaints).await;
    }
}

pub async fn open_page(browser: &Browser, app: &TestApp) {
    browser.goto(&format!("{}/", app.admin_address)).await;
}

/// `(data-hour, data-rate)` of the points `chart` plots.
async fn plotted(browser: &Browser, chart: &str) -> Vec<(String, f64)> {
    let points = browser
        .run(
            "return [...document.querySelectorAll(arguments[0] + ' circle.point')]\
               .map(c => [c.dataset.hour, Number(c.dataset.rate)]);",
            json!([chart]),
        )
        .await;
    serde_json::from_value(points).expect("points")
}

fn assert_rates(points: &[(String, f64)], expected: &[f64]) {
    let hours: Vec<String> = KNOWN.iter().map(|(ago, ..)| hour_ago(*ago)).collect();
    assert_eq!(
        points.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>(),
        hours,
        "one point per hour that counted something"
    );
    for ((hour, rate), want) in points.iter().zip(expected) {
        assert!(
            (rate - want).abs() < 1e-12,
            "{hour}: plotted {rate}, expected {want}"
        );
    }
}

async fn the_page_loads_without_console_errors_and_charts_a_known_history(backend: Backend) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app(backend).await;
    seed_known_history(&app).await;
    // A feed that stopped is a banner.
    assert_status(
        &app.post(&Msg::unsubscribe_confirmation(TOPIC).sign()).await,
        200,
        "stored",
    );
    open_page(&browser, &app).await;
    browser
        .wait_for(
            "both charts drawn",
            "document.querySelectorAll('#complaint-chart circle.point').length === 3",
        )
        .await;
    assert_rates(
        &plotted(&browser, "#bounce-chart").await,
        &KNOWN_BOUNCE_RATES,
    );
    assert_rates(
        &plotted(&browser, "#complaint-chart").await,
        &KNOWN_COMPLAINT_RATES,
    );
    // Against bouncer's lines and SES's.
    let lines = browser
        .run(
            "return Object.fromEntries(['bounce', 'complaint'].map(c => [c, [...document.querySelectorAll('#' + c + '-chart [data-line]')]\
               .map(l => [l.dataset.line, Number(l.dataset.percent)])]));",
            json!([]),
        )
        .await;
    assert_eq!(
        lines,
        json!({
            "bounce": [["warn", 2.5], ["pause", 5], ["ses-review", 5], ["ses-pause", 10]],
            "complaint": [["warn", 0.05], ["pause", 0.1], ["ses-review", 0.1], ["ses-pause", 0.5]],
        })
    );
    // The window they are computed over: 4,000 sends, 60 hard bounces.
    let window = browser.text("#window-table").await;
    assert!(window.contains("Sends 4,000"), "{window}");
    assert!(window.contains("Hard bounces 60 (1.50%)"), "{window}");
    assert!(window.contains("Complaints 4 (0.100%)"), "{window}");
    let banner = browser.text("[data-banner=unsubscribed]").await;
    assert!(
        banner.contains(TOPIC) && banner.contains("stopped"),
        "{banner}"
    );
    assert_eq!(browser.text("#state-badge").await, "Active");
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    app.stop().await;
}

/// A hard bounce of `email` through the whole pipeline, with a diagnostic
/// code as a remote server writes it.
pub fn hard_bounce(email: &str, diagnostic: &str) -> Msg {
    let at = crate::signing::now_text();
    let ses = json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": email, "action": "failed", "status": "5.1.1", "diagnosticCode": diagnostic}],
            "timestamp": at, "feedbackId": format!("fb-{}", unique_id()),
        },
        "mail": {"timestamp": at, "messageId": format!("ses-{}", unique_id()), "source": "news@signals.example", "destination": [email]},
    });
    Msg::notification(TOPIC, &ses.to_string()).sign()
}

pub const CAROL_DIAGNOSTIC: &str = "smtp; 550 5.1.1 <carol.jones@example.com>: Recipient address rejected: User unknown in virtual mailbox table";

async fn rows_shown(browser: &Browser) -> Vec<String> {
    serde_json::from_value(
        browser
            .run(
                "return [...document.querySelectorAll('#suppression-table tbody tr')].map(r => r.dataset.email);",
                json!([]),
            )
            .await,
    )
    .expect("rows")
}

async fn search_finds_a_seeded_address_and_removal_asks_who_and_why(backend: Backend) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app(backend).await;
    for (email, diagnostic) in [
        ("carol.jones@example.com", CAROL_DIAGNOSTIC),
        ("dave@example.com", "smtp; 550 no such user"),
    ] {
        assert_status(
            &app.post(&hard_bounce(email, diagnostic)).await,
            200,
            "stored",
        );
    }
    let added = app
        .client
        .post(format!("{}/v1/suppressions", app.admin_address))
        .body(r#"{"email": "carl@example.com", "note": "asked to stop"}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(added.status(), 201);
    open_page(&browser, &app).await;
    browser
        .wait_for(
            "the first page of the list",
            "document.querySelectorAll('#suppression-table tbody tr').length === 3",
        )
        .await;
    browser.type_into("#search-q", "Car").await;
    browser.click("#search-form button[type=submit]").await;
    browser
        .wait_for(
            "two rows",
            "document.querySelectorAll('#suppression-table tbody tr').length === 2",
        )
        .await;
    assert_eq!(
        rows_shown(&browser).await,
        ["carl@example.com", "carol.jones@example.com"]
    );
    browser.type_into("#search-q", "carol").await;
    browser.click("#search-form button[type=submit]").await;
    browser
        .wait_for(
            "one row",
            "document.querySelectorAll('#suppression-table tbody tr').length === 1",
        )
        .await;
    assert_eq!(rows_shown(&browser).await, ["carol.jones@example.com"]);
    // The row's whole record.
    browser
        .click("button[data-email='carol.jones@example.com']")
        .await;
    browser
        .wait_for(
            "the record",
            "document.getElementById('record-dialog').open",
        )
        .await;
    let record = browser.text("#record-facts").await;
    for shown in [
        CAROL_DIAGNOSTIC,
        "Permanent / General",
        "sns:",
        "First seen",
        "Last seen",
    ] {
        assert!(record.contains(shown), "record lacks {shown}: {record}");
    }
    // Removal asks who and why, and is recorded.
    browser.click("#remove-confirm").await;
    assert!(
        browser
            .run(
                "return document.getElementById('record-dialog').open;",
                json!([])
            )
            .await
            == true
    );
    assert_eq!(
        app.db
            .scalar(
                "SELECT COUNT(*) FROM suppressions WHERE email = $1",
                Some("carol.jones@example.com")
            )
            .await,
        1,
        "nothing removed without who and why"
    );
    browser.type_into("#remove-by", "Erin").await;
    browser
        .type_into("#remove-reason", "mailbox restored, confirmed by phone")
        .await;
    browser.click("#remove-confirm").await;
    browser
        .wait_for(
            "the row gone",
            "document.querySelectorAll('#suppression-table tbody tr').length === 0",
        )
        .await;
    assert_eq!(
        app.db
            .scalar(
                "SELECT COUNT(*) FROM suppressions WHERE email = $1",
                Some("carol.jones@example.com")
            )
            .await,
        0
    );
    assert_eq!(
        app.db
            .text(
                "SELECT removed_by || ' / ' || why FROM suppression_removals WHERE email = $1",
                "carol.jones@example.com"
            )
            .await
            .as_deref(),
        Some("Erin (api:loopback) / mailbox restored, confirmed by phone")
    );
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    app.stop().await;
}

/// `sending_state` as the sender reads it: state, changed_by, reason.
async fn sending_state(app: &TestApp) -> (String, String, String) {
    let row = app
        .db
        .text(
            "SELECT state || '|' || changed_by || '|' || reason FROM sending_state WHERE CAST(id AS TEXT) = $1",
            "1",
        )
        .await
        .unwrap_or_default();
    let mut parts = row.splitn(3, '|').map(str::to_owned);
    let mut next = || parts.next().unwrap_or_default();
    (next(), next(), next())
}

async fn resume_asks_who_and_why_and_changes_sending_state(backend: Backend) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app(backend).await;
    let paused = app
        .client
        .put(format!("{}/v1/sending", app.admin_address))
        .body(r#"{"state": "paused", "by": "ops", "reason": "bounce storm after a list import"}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(paused.status(), 200);
    open_page(&browser, &app).await;
    let banner = browser.text("[data-banner=paused]").await;
    assert!(
        banner.contains("bounce storm after a list import") && banner.contains("ops"),
        "{banner}"
    );
    assert_eq!(browser.text("#state-badge").await, "Paused");
    // The pause's alert as people read it: without the emoji code the
    // webhook's text opens with for Slack (":octagonal_sign: ").
    assert_eq!(
        browser
            .run(
                "return Array.from(document.querySelectorAll('.alert-text'), p => p.textContent);",
                json!([])
            )
            .await,
        json!(["Sending paused by ops (api:loopback): bounce storm after a list import"])
    );
    browser.click("#resume-button").await;
    browser
        .wait_for(
            "the dialog",
            "document.getElementById('sending-dialog').open",
        )
        .await;
    assert_eq!(browser.text("label[for=sending-by]").await, "Who are you?");
    assert_eq!(browser.text("label[for=sending-reason]").await, "Why?");
    // Without who and why nothing happens.
    browser.click("#sending-confirm").await;
    assert!(
        browser
            .run(
                "return document.getElementById('sending-dialog').open;",
                json!([])
            )
            .await
            == true
    );
    browser.type_into("#sending-by", "Dana").await;
    browser.type_into("#sending-reason", "   ").await;
    browser.click("#sending-confirm").await;
    let refused = browser.text("#sending-error").await;
    assert!(refused.contains("who you are and why"), "{refused}");
    assert_eq!(sending_state(&app).await.0, "paused");
    browser
        .type_into(
            "#sending-reason",
            "the import is cleaned; bad addresses removed",
        )
        .await;
    browser.click("#sending-confirm").await;
    browser
        .wait_for(
            "the page to show sending resumed",
            "document.getElementById('state-badge').textContent === 'Active'",
        )
        .await;
    assert_eq!(
        sending_state(&app).await,
        (
            "active".to_owned(),
            "Dana (api:loopback)".to_owned(),
            "the import is cleaned; bad addresses removed".to_owned()
        )
    );
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    app.stop().await;
}

/// A page of another site (another port of the same host: the same site
/// but another origin) that tries to add a suppression on the admin
/// listener with a form (text/plain, whose body is JSON) and with fetch.
async fn other_site(admin: &str) -> (String, actix_web::dev::ServerHandle) {
    let html = format!(
        r#"<!doctype html><html><body>
<form id="forged" method="POST" action="{admin}/v1/suppressions" enctype="text/plain">
<input type="hidden" name='{{"email": "forged-by-form@example.com", "note": "' value='"}}'>
</form>
<script>
fetch("{admin}/v1/suppressions", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
  body: JSON.stringify({{email: "forged-by-fetch@example.com"}})}})
  .finally(() => document.getElementById("forged").submit());
</script></body></html>"#
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().expect("addr").port()
    );
    let server = actix_web::HttpServer::new(move || {
        let html = html.clone();
        actix_web::App::new().default_service(actix_web::web::to(move || {
            let html = html.clone();
            async move {
                actix_web::HttpResponse::Ok()
                    .content_type("text/html")
                    .body(html)
            }
        }))
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (url, handle)
}

async fn a_cross_site_post_is_refused_and_changes_nothing(backend: Backend) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app(backend).await;
    let (url, other) = other_site(&app.admin_address).await;
    browser.goto(&url).await;
    // The form's POST lands on the admin listener, which answers with the
    // refusal the browser then shows.
    let shown = browser
        .wait_for(
            "the admin listener's answer to the form",
            "document.body && document.body.innerText.includes('cross_site_request') && document.body.innerText",
        )
        .await;
    assert!(
        shown
            .as_str()
            .is_some_and(|s| s.contains("refused as a cross-site request")),
        "{shown}"
    );
    for forged in ["forged-by-form@example.com", "forged-by-fetch@example.com"] {
        assert_eq!(
            app.db
                .scalar(
                    "SELECT COUNT(*) FROM suppressions WHERE email = $1",
                    Some(forged)
                )
                .await,
            0,
            "{forged} was added"
        );
    }
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM suppressions", None)
            .await,
        0
    );
    other.stop(true).await;
    app.stop().await;
}

async fn with_tokens_the_page_asks_for_one_and_keeps_it_for_the_tab_only(backend: Backend) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = app_with_token(backend).await;
    open_page(&browser, &app).await;
    browser
        .wait_for(
            "the token form",
            "!document.getElementById('token-section').hidden",
        )
        .await;
    assert!(
        browser
            .run(
                "return document.getElementById('content').hidden;",
                json!([])
            )
            .await
            == true
    );
    browser.type_into("#token-input", "not-the-token").await;
    browser.click("#token-form button[type=submit]").await;
    browser
        .wait_for(
            "the refusal",
            "document.getElementById('token-error').textContent.includes('refused')",
        )
        .await;
    browser.type_into("#token-input", TOKEN).await;
    browser.click("#token-form button[type=submit]").await;
    browser
        .wait_for("the data", "!document.getElementById('content').hidden && document.getElementById('state-badge').textContent === 'Active'")
        .await;
    let kept = browser
        .run(
            "return [sessionStorage.getItem('bouncer.token'), localStorage.length, document.cookie];",
            json!([]),
        )
        .await;
    assert_eq!(
        kept,
        json!([TOKEN, 0, ""]),
        "in this tab's session storage only"
    );
    // The only errors are the refused calls before the token was given.
    let errors = browser.console_errors().await;
    assert!(!errors.is_empty(), "the 401s are logged");
    assert!(errors.iter().all(|e| e.contains("401")), "{errors:?}");
    app.stop().await;
}

on_both_databases!(
    the_page_loads_without_console_errors_and_charts_a_known_history,
    search_finds_a_seeded_address_and_removal_asks_who_and_why,
    resume_asks_who_and_why_and_changes_sending_state,
    a_cross_site_post_is_refused_and_changes_nothing,
    with_tokens_the_page_asks_for_one_and_keeps_it_for_the_tab_only,
);
