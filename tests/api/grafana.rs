//! The Grafana dashboard in `docs/grafana/bouncer.json` names only metrics
//! that a running bouncer exposes at `/metrics`: every `bouncer_*` name in
//! its queries is a family there (by its `# TYPE` line, with the suffixes
//! its type gives its samples: `_total` for counters; `_bucket`, `_sum`,
//! `_count` for histograms) or a sample. Some families only show samples
//! after use, so the app first sees traffic, and acts at SES.

use std::collections::BTreeSet;

use bouncer::config::SesPauseMode;
use serde_json::Value;

use crate::feedback::bounce;
use crate::helpers::{Backend, assert_status, fixture, spawn_app_with};
use crate::ses_account::{at_ses, checked};
use crate::ses_stand_in::SesApi;

/// Every `expr` in the dashboard, wherever it is nested.
fn queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The `bouncer_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("bouncer_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The names `/metrics` exposes: sample names, and each family's names.
fn exposed(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            let mut parts = family.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_names_is_exposed() {
    let text = std::fs::read_to_string(fixture("docs/grafana/bouncer.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() > 10, "a dashboard with panels");
    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    let named: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(
        named.len() >= 20,
        "the dashboard shows most metrics: {named:?}"
    );

    let ses = SesApi::start().await;
    let app = spawn_app_with(Backend::Sqlite, |s, h| {
        at_ses(s, h, &ses);
        s.ses_pause_mode = SesPauseMode::Account;
    })
    .await;
    checked(&app).await;
    let bounced = bounce(
        "Permanent",
        "General",
        "gone@example.com",
        &crate::signing::now_text(),
    );
    assert_status(&app.post(&bounced).await, 200, "stored");
    assert_eq!(app.post_raw("{}", Some("Notification")).await.0, 400);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.admin_address))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let exposed = exposed(&metrics);
    let missing: Vec<&String> = named.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard names metrics /metrics does not expose: {missing:?}\n{metrics}"
    );
    app.stop().await;
    ses.stop().await;
}
