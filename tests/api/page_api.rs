//! What the page stands on, over plain HTTP on both databases: its files
//! served from the binary without a token and under a strict content
//! policy, the rate history and the recent alerts under `/v1`, searching
//! the list by prefix and dates, and the refusal of cross-site requests
//! (and, without tokens, of host names that are not loopback).

use reqwest::Method;
use serde_json::{Value, json};

use crate::alert_sinks::Webhook;
use crate::guard::{a_complaint, alerting, deliveries};
use crate::helpers::{
    Backend, TestApp, answer, assert_refused, assert_status, eventually, spawn_app, spawn_app_with,
};
use crate::on_both_databases;
use crate::page::{
    KNOWN, KNOWN_BOUNCE_RATES, KNOWN_COMPLAINT_RATES, hour_ago, seed_hour, seed_known_history,
};
use crate::suppression_api::{TOKEN, app_with_token};

async fn the_page_is_served_without_a_token_under_a_strict_content_policy(backend: Backend) {
    let app = app_with_token(backend).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/page.js", "text/javascript"),
        ("/assets/page.css", "text/css"),
    ] {
        let url = format!("{}{path}", app.admin_address);
        let served = app.client.get(&url).send().await.expect("answer");
        assert_eq!(served.status(), 200, "{path}");
        let header = |name: &str| {
            served
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let policy = header("content-security-policy");
        assert!(
            policy.contains("default-src 'none'")
                && policy.contains("script-src 'self'")
                && policy.contains("frame-ancestors 'none'"),
            "{policy}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        let etag = header("etag");
        // The browser asks again each time; an unchanged file is a 304.
        let again = app
            .client
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("answer");
        assert_eq!(again.status(), 304, "{path}");
        // No address of elsewhere (the SVG namespace is a name, not a load).
        let body = served.text().await.expect("body");
        let body = body.replace("\"http://www.w3.org/2000/svg\"", "");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
    }
    // The data still needs the token.
    assert_refused(&app.admin_get("/v1/sending").await, 401, "unauthorized");
    assert_refused(
        &app.admin_get("/v1/rates/history").await,
        401,
        "unauthorized",
    );
    assert_refused(&app.admin_get("/v1/alerts").await, 401, "unauthorized");
    let history = app.api(Method::GET, "/v1/rates/history", None).await;
    assert_eq!(history.0, 200, "{}", history.1);
    app.stop().await;
}

/// The hour in `history` that starts at `hour`.
fn hour<'a>(history: &'a Value, hour: &str) -> &'a Value {
    history["hours"]
        .as_array()
        .and_then(|hours| hours.iter().find(|h| h["hour"] == hour))
        .unwrap_or_else(|| panic!("no hour {hour} in the history"))
}

async fn the_rate_history_has_every_hour_of_the_maximum_age_and_the_lines(backend: Backend) {
    let app = spawn_app(backend).await;
    seed_known_history(&app).await;
    // Older than the maximum age (30 days): not shown.
    seed_hour(&app, &hour_ago(24 * 30 + 2), 5000, 4000, 0).await;
    let (status, history) = app.admin_get("/v1/rates/history").await;
    assert_eq!(status, 200, "{history}");
    let hours = history["hours"].as_array().expect("hours");
    assert_eq!(
        hours.len(),
        24 * 30 + 1,
        "every hour of 30 days, and this one"
    );
    assert_eq!(history["from"], hour_ago(24 * 30));
    assert_eq!(history["to"], hour_ago(0));
    assert_eq!(hours[0]["hour"], history["from"]);
    for (i, (ago, sends, hard_bounces, complaints)) in KNOWN.iter().enumerate() {
        let h = hour(&history, &hour_ago(*ago));
        assert_eq!(
            (
                &h["sends"],
                &h["hard_bounces"],
                &h["complaints"],
                &h["delivery_sends"]
            ),
            (
                &json!(sends),
                &json!(hard_bounces),
                &json!(complaints),
                &json!(sends - hard_bounces)
            ),
        );
        assert_eq!(
            h["window"]["bounce_rate"].as_f64(),
            Some(KNOWN_BOUNCE_RATES[i])
        );
        assert_eq!(
            h["window"]["complaint_rate"].as_f64(),
            Some(KNOWN_COMPLAINT_RATES[i])
        );
    }
    let quiet = hour(&history, &hour_ago(2));
    assert_eq!(
        (&quiet["sends"], &quiet["window"]["sends"]),
        (&json!(0), &json!(2000))
    );
    assert_eq!(
        hour(&history, &hour_ago(10))["window"]["bounce_rate"],
        Value::Null
    );
    assert_eq!(
        history["lines"],
        json!({
            "bounce": {"bouncer_warn_percent": 2.5, "bouncer_pause_percent": 5.0, "ses_review_percent": 5.0, "ses_pause_percent": 10.0},
            "complaint": {"bouncer_warn_percent": 0.05, "bouncer_pause_percent": 0.1, "ses_review_percent": 0.1, "ses_pause_percent": 0.5},
        })
    );
    assert_eq!(
        history["policy"],
        json!({"window_sends": 10000, "max_age_days": 30, "min_volume": 1000})
    );
    // The window now is the guard's.
    let (_, sending) = app.admin_get("/v1/sending").await;
    for count in ["sends", "hard_bounces", "complaints"] {
        assert_eq!(history["window"][count], sending["rates"][count], "{count}");
    }
    assert_eq!(
        history["window"]["bounce_rate"],
        sending["rates"]["bounce_rate"]
    );
    assert_eq!(history["window"]["enough_volume"], true);
    app.stop().await;
}

async fn after_a_resume_the_history_counts_from_the_resume(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_status(&app.post(&deliveries(1000)).await, 200, "stored");
    for _ in 0..2 {
        assert_status(&app.post(&a_complaint()).await, 200, "stored");
    }
    let (_, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(sending["state"], "paused");
    let (_, history) = app.admin_get("/v1/rates/history").await;
    assert_eq!(history["window"]["complaints"], 2);
    let resumed = app
        .client
        .put(format!("{}/v1/sending", app.admin_address))
        .body(r#"{"state": "active", "by": "Dana", "reason": "fixed"}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(resumed.status(), 200);
    let (_, history) = app.admin_get("/v1/rates/history").await;
    let now = history["hours"]
        .as_array()
        .and_then(|h| h.last())
        .expect("an hour");
    assert_eq!(now["complaints"], 2, "the hour keeps what it counted");
    assert_eq!(
        (&now["window"]["sends"], &now["window"]["complaints"]),
        (&json!(0), &json!(0)),
        "the window counts from the resume"
    );
    assert_ne!(history["counting_since"], "1970-01-01T00:00:00.000Z");
    app.stop().await;
}

async fn recent_alerts_show_their_delivery_per_channel(backend: Backend) {
    let webhook = Webhook::start().await;
    webhook.fail_next(1);
    let url = webhook.url.clone();
    let app = spawn_app_with(backend, move |s, _| alerting(s, &url, None)).await;
    assert_status(&app.post(&deliveries(1000)).await, 200, "stored");
    assert_status(&app.post(&a_complaint()).await, 200, "stored");
    eventually("the warning delivered on the second attempt", || async {
        webhook.kinds() == ["warning"]
    })
    .await;
    assert_status(&app.post(&a_complaint()).await, 200, "stored");
    eventually("the pause delivered", || async {
        webhook.kinds() == ["warning", "paused"]
    })
    .await;
    let alerts = || async {
        let (status, body) = app.admin_get("/v1/alerts").await;
        assert_eq!(status, 200, "{body}");
        body["items"].as_array().cloned().unwrap_or_default()
    };
    eventually("both deliveries recorded", || async {
        alerts()
            .await
            .iter()
            .all(|a| !a["deliveries"][0]["delivered_at"].is_null())
    })
    .await;
    let items = alerts().await;
    let kinds: Vec<&str> = items.iter().filter_map(|a| a["kind"].as_str()).collect();
    assert_eq!(kinds, ["paused", "warning"], "newest first");
    let warning = &items[1];
    assert_eq!(warning["deliveries"].as_array().map(Vec::len), Some(1));
    let delivery = &warning["deliveries"][0];
    assert_eq!(
        (&delivery["channel"], &delivery["attempts"]),
        (&json!("webhook"), &json!(2))
    );
    assert!(
        warning["subject"]
            .as_str()
            .is_some_and(|s| s.contains("warning"))
    );
    assert!(
        warning["details"]["sends"].as_i64() == Some(1000),
        "{warning}"
    );
    assert_eq!(items[0]["deliveries"][0]["attempts"], 1);
    let (_, one) = app.admin_get("/v1/alerts?limit=1").await;
    assert_eq!(one["items"].as_array().map(Vec::len), Some(1));
    assert_refused(
        &app.admin_get("/v1/alerts?limit=0").await,
        400,
        "invalid_request",
    );
    app.stop().await;
    webhook.stop().await;
}

async fn add(app: &TestApp, email: &str) {
    let (status, body) = answer(
        app.client
            .post(format!("{}/v1/suppressions", app.admin_address))
            .body(json!({ "email": email }).to_string())
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

fn emails(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|r| r["email"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn the_list_is_searched_by_prefix_and_dates_and_paged(backend: Backend) {
    let app = spawn_app(backend).await;
    for email in [
        "carl@example.com",
        "carol.jones@example.com",
        "carol@example.org",
        "caroline@example.net",
        "dave@example.com",
        "c@example.com",
    ] {
        add(&app, email).await;
    }
    let (_, found) = app.admin_get("/v1/suppressions?q=%20CAROL").await;
    assert_eq!(
        emails(&found),
        [
            "carol.jones@example.com",
            "carol@example.org",
            "caroline@example.net"
        ],
        "a prefix, lower-cased like the addresses"
    );
    // Paged: two, then the rest, with the cursor.
    let (_, first) = app.admin_get("/v1/suppressions?q=car&limit=2").await;
    assert_eq!(
        emails(&first),
        ["carl@example.com", "carol.jones@example.com"]
    );
    let cursor = first["next_cursor"].as_str().expect("more");
    let (_, second) = app
        .admin_get(&format!("/v1/suppressions?q=car&limit=2&cursor={cursor}"))
        .await;
    assert_eq!(
        emails(&second),
        ["carol@example.org", "caroline@example.net"]
    );
    assert_eq!(second["next_cursor"], Value::Null);
    let (_, none) = app.admin_get("/v1/suppressions?q=zed").await;
    assert_eq!(emails(&none), Vec::<String>::new());
    // Dates: everything was seen today; `until` a date keeps its whole day.
    let today = &hour_ago(0)[..10];
    let (_, today_rows) = app
        .admin_get(&format!("/v1/suppressions?q=c&since={today}&until={today}"))
        .await;
    assert_eq!(emails(&today_rows).len(), 5);
    let (_, before) = app
        .admin_get(&format!("/v1/suppressions?until={today}T00:00:00Z"))
        .await;
    assert_eq!(emails(&before), Vec::<String>::new());
    let (_, manual) = app.admin_get("/v1/suppressions?q=d&reason=manual").await;
    assert_eq!(emails(&manual), ["dave@example.com"]);
    let (_, bounced) = app.admin_get("/v1/suppressions?q=d&reason=bounce").await;
    assert_eq!(emails(&bounced), Vec::<String>::new());
    assert_refused(
        &app.admin_get("/v1/suppressions?until=soon").await,
        400,
        "invalid_request",
    );
    app.stop().await;
}

/// Sends `method path` to the admin listener with `headers` and a
/// text/plain body, as a browser's simple request does.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.admin_address))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(request.send().await.expect("answer")).await
}

async fn cross_site_requests_are_refused_before_anything_changes(backend: Backend) {
    let app = spawn_app(backend).await;
    let own = app.admin_address.clone();
    let forged = r#"{"email": "forged@example.com", "note": "="}"#;
    for headers in [
        vec![("origin", "http://evil.example")],
        vec![("origin", "http://127.0.0.1:1")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site"), ("origin", own.as_str())],
    ] {
        let refused = send(&app, Method::POST, "/v1/suppressions", &headers, forged).await;
        assert_refused(&refused, 403, "cross_site_request");
    }
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM suppressions", None)
            .await,
        0
    );
    let pause = r#"{"state": "paused", "by": "mallory", "reason": "forged"}"#;
    let refused = send(
        &app,
        Method::PUT,
        "/v1/sending",
        &[("origin", "http://evil.example")],
        pause,
    )
    .await;
    assert_refused(&refused, 403, "cross_site_request");
    assert_eq!(app.admin_get("/v1/sending").await.1["state"], "active");
    // Reads are not changes (and CORS keeps their answers from the page).
    let (status, _) = send(
        &app,
        Method::GET,
        "/v1/sending",
        &[("origin", "http://evil.example")],
        "",
    )
    .await;
    assert_eq!(status, 200);
    // The same forged body from the page itself, or from a tool that is no
    // browser page (no Origin), is a change as any other.
    let own_page = send(
        &app,
        Method::POST,
        "/v1/suppressions",
        &[("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
        forged,
    )
    .await;
    assert_eq!(own_page.0, 201, "{}", own_page.1);
    let tool = send(
        &app,
        Method::DELETE,
        "/v1/suppressions/forged@example.com?by=ops&reason=test",
        &[],
        "",
    )
    .await;
    assert_eq!(tool.0, 200, "{}", tool.1);
    app.stop().await;
}

async fn without_tokens_only_requests_to_a_loopback_name_are_served(backend: Backend) {
    let app = spawn_app(backend.clone()).await;
    let port = app
        .admin_address
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (status, _) = send(
            &app,
            Method::GET,
            "/v1/sending",
            &[("host", host.as_str())],
            "",
        )
        .await;
        assert_eq!(status, 200, "{host}");
    }
    // A name rebound to 127.0.0.1 by its DNS is another site's page; a
    // "port" that is not digits names no port (an attacker's trial found
    // `localhost:PORT@evil.example` taken for loopback).
    let rebound = format!("rebound.example:{port}");
    for host in [rebound.clone(), format!("localhost:{port}@rebound.example")] {
        for path in ["/v1/sending", "/metrics", "/"] {
            let refused = send(&app, Method::GET, path, &[("host", host.as_str())], "").await;
            assert_refused(&refused, 403, "host_not_loopback");
        }
    }
    // An empty Host, or one that is not text, names no loopback host
    // either (an outside trial found both let through).
    for host in [&b""[..], "ÿ".as_bytes()] {
        let request = app
            .client
            .get(format!("{}/v1/sending", app.admin_address))
            .header(
                "host",
                reqwest::header::HeaderValue::from_bytes(host).expect("a header value"),
            );
        let refused = answer(request.send().await.expect("answer")).await;
        assert_refused(&refused, 403, "host_not_loopback");
    }
    app.stop().await;
    // With tokens, the token decides: any name reaches the listener.
    let app = app_with_token(backend).await;
    let served = app
        .client
        .get(format!("{}/v1/sending", app.admin_address))
        .header("host", rebound.as_str())
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(served.status(), 200);
    app.stop().await;
}

on_both_databases!(
    the_page_is_served_without_a_token_under_a_strict_content_policy,
    the_rate_history_has_every_hour_of_the_maximum_age_and_the_lines,
    after_a_resume_the_history_counts_from_the_resume,
    recent_alerts_show_their_delivery_per_channel,
    the_list_is_searched_by_prefix_and_dates_and_paged,
    cross_site_requests_are_refused_before_anything_changes,
    without_tokens_only_requests_to_a_loopback_name_are_served,
);
