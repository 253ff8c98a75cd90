//! A measurement, not a timed test (ignored by default): the page's calls
//! on a list of 1,000,000 suppressions, through the running server over
//! HTTP, on SQLite and PostgreSQL. It prints the median of each call; the
//! figures and the command are in BENCHMARKS.md:
//!
//! ```sh
//! cargo test --release --test api -- --ignored --nocapture the_page_at_a_million_suppressions
//! ```

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::helpers::{Backend, TestApp, spawn_app};
use crate::page::seed_hour;

const ROWS: i64 = 1_000_000;

/// Addresses `user<i>@example.com`; every 50th a complaint, every 100th a
/// manual row (so 1% manual); last seen on one of 1,000 days.
const FILL_SQLITE: &str = "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999999) \
    INSERT INTO suppressions (email, reason, bounce_type, bounce_subtype, diagnostic_code, first_seen_at, last_seen_at, event_count, source) \
    SELECT 'user' || i || '@example.com', CASE WHEN i % 100 = 0 THEN 'manual' WHEN i % 50 = 0 THEN 'complaint' ELSE 'bounce' END, \
      'Permanent', 'General', 'smtp; 550 5.1.1 user unknown', \
      strftime('%Y-%m-%dT%H:%M:%fZ', '2026-11-25', '-' || (i % 1000) || ' days'), \
      strftime('%Y-%m-%dT%H:%M:%fZ', '2026-11-25', '-' || (i % 1000) || ' days'), 1, 'scale' FROM n";
const FILL_POSTGRES: &str = "INSERT INTO suppressions (email, reason, bounce_type, bounce_subtype, diagnostic_code, first_seen_at, last_seen_at, event_count, source) \
    SELECT 'user' || i || '@example.com', CASE WHEN i % 100 = 0 THEN 'manual' WHEN i % 50 = 0 THEN 'complaint' ELSE 'bounce' END, \
      'Permanent', 'General', 'smtp; 550 5.1.1 user unknown', \
      TIMESTAMPTZ '2026-11-25 00:00:00+00' - (i % 1000) * INTERVAL '1 day', \
      TIMESTAMPTZ '2026-11-25 00:00:00+00' - (i % 1000) * INTERVAL '1 day', 1, 'scale' FROM generate_series(0, 999999) AS i";

fn cursor(email: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(email)
}

/// The median time of `GET path` (21 calls after 3 to warm up), and the
/// number of rows the answer holds.
async fn median(app: &TestApp, path: &str) -> (Duration, usize) {
    let url = format!("{}{path}", app.admin_address);
    let mut times = Vec::new();
    let mut rows = 0;
    for i in 0..24 {
        let started = Instant::now();
        let response = app.client.get(&url).send().await.expect("answer");
        assert_eq!(response.status(), 200, "{path}");
        let body: Value =
            serde_json::from_str(&response.text().await.expect("body")).expect("JSON");
        let took = started.elapsed();
        rows = body["items"]
            .as_array()
            .or(body["hours"].as_array())
            .map_or(0, Vec::len);
        if i >= 3 {
            times.push(took);
        }
    }
    times.sort();
    (times[times.len() / 2], rows)
}

async fn measure(backend: Backend, label: &str) {
    let app = spawn_app(backend).await;
    let started = Instant::now();
    if app.db.is_sqlite() {
        app.db.execute(FILL_SQLITE).await;
    } else {
        app.db.execute(FILL_POSTGRES).await;
        // What autovacuum does after such a load.
        app.db.execute("ANALYZE suppressions").await;
    }
    for ago in 0..720 {
        seed_hour(&app, &crate::page::hour_ago(ago), 300, 3, 0).await;
    }
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM suppressions", None)
            .await,
        ROWS
    );
    println!(
        "{label}: filled {ROWS} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let deep = cursor("user899999@example.com");
    let calls = [
        (
            "first page, 100 rows",
            "/v1/suppressions?limit=100".to_owned(),
        ),
        (
            "page after row ~890,000 (cursor)",
            format!("/v1/suppressions?limit=100&cursor={deep}"),
        ),
        (
            "search `user12345` (11 rows)",
            "/v1/suppressions?q=user12345&limit=50".to_owned(),
        ),
        (
            "search `user9` (111,111 rows), first page",
            "/v1/suppressions?q=user9&limit=50".to_owned(),
        ),
        (
            "search `user9`, page after ~100,000 of them",
            format!(
                "/v1/suppressions?q=user9&limit=50&cursor={}",
                cursor("user989999@example.com")
            ),
        ),
        (
            "search `nobody` (no row)",
            "/v1/suppressions?q=nobody&limit=50".to_owned(),
        ),
        (
            "reason=manual (1%), first page",
            "/v1/suppressions?reason=manual&limit=50".to_owned(),
        ),
        (
            "reason=manual, page after row ~890,000",
            format!("/v1/suppressions?reason=manual&limit=50&cursor={deep}"),
        ),
        (
            "last seen on one day (0.1%)",
            "/v1/suppressions?since=2026-06-01&until=2026-06-01&limit=50".to_owned(),
        ),
        (
            "last seen in 500 days (50%)",
            "/v1/suppressions?since=2025-07-01&limit=50".to_owned(),
        ),
        (
            "last seen in a year, both ends (36%)",
            "/v1/suppressions?since=2025-11-25&until=2026-11-25&limit=50".to_owned(),
        ),
        (
            "last seen in 30 days, one end (3%)",
            "/v1/suppressions?since=2026-10-26&limit=50".to_owned(),
        ),
        (
            "complaints on a day with none (of 10,000)",
            "/v1/suppressions?reason=complaint&since=2026-11-24&until=2026-11-24&limit=50"
                .to_owned(),
        ),
        (
            "search + reason + one day",
            "/v1/suppressions?q=user1&reason=bounce&since=2026-06-01&until=2026-06-01&limit=50"
                .to_owned(),
        ),
        ("rate history, 721 hours", "/v1/rates/history".to_owned()),
    ];
    for (what, path) in calls {
        let (took, rows) = median(&app, &path).await;
        println!(
            "{label} | {what} | {rows} rows | {:.2} ms",
            took.as_secs_f64() * 1000.0
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement on 1,000,000 rows; see BENCHMARKS.md"]
async fn the_page_at_a_million_suppressions() {
    measure(Backend::Sqlite, "SQLite").await;
    if let Some(backend) = Backend::postgres().await {
        measure(backend, "PostgreSQL").await;
    }
}
