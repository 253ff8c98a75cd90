//! `/v1` as `curl` meets it: a JSON body is read whatever its Content-Type,
//! an empty query value means absent, and `/v1/sending` names its units.

use crate::guard::{a_complaint, deliveries};
use crate::helpers::{Backend, answer, assert_refused, assert_status, spawn_app};
use crate::on_both_databases;

async fn json_bodies_are_read_whatever_their_content_type(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = format!("{}/v1/suppressions", app.admin_address);
    // What `curl -d '{...}'` sends.
    let form = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"email":"jane@example.com","note":"by curl"}"#);
    let (status, body) = answer(form.send().await.expect("answer")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["suppression"]["note"], "by curl");
    // No Content-Type at all.
    let bare = app.client.post(&url).body(r#"{"email":"joe@example.com"}"#);
    let (status, body) = answer(bare.send().await.expect("answer")).await;
    assert_eq!(status, 201, "{body}");
    let pause = app
        .client
        .put(format!("{}/v1/sending", app.admin_address))
        .header("content-type", "text/plain")
        .body(r#"{"state":"paused","by":"carol","reason":"drill"}"#);
    let (status, body) = answer(pause.send().await.expect("answer")).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("paused")),
        "{body}"
    );
    // A body that is not JSON is still a clear 400.
    let broken = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=jane@example.com");
    let refused = answer(broken.send().await.expect("answer")).await;
    assert_refused(&refused, 400, "invalid_request");
    app.stop().await;
}

async fn empty_query_values_mean_absent(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = format!("{}/v1/suppressions", app.admin_address);
    let added = app
        .client
        .post(&url)
        .body(r#"{"email":"jane@example.com"}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(added.status().as_u16(), 201);
    // The README's own line, pasted as is.
    let (status, body) = app
        .admin_get("/v1/suppressions?reason=&since=&limit=&cursor=")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["email"], "jane@example.com", "{body}");
    let refused = app.admin_get("/v1/suppressions?limit=many").await;
    assert_refused(&refused, 400, "invalid_request");
    assert_eq!(
        refused.1["detail"], "limit `many` is not a number from 1 to 1000",
        "{}",
        refused.1
    );
    app.stop().await;
}

async fn sending_names_the_units_of_its_rates(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_status(&app.post(&deliveries(1200)).await, 200, "stored");
    assert_status(&app.post(&a_complaint()).await, 200, "stored");
    let (status, sending) = app.admin_get("/v1/sending").await;
    assert_eq!(status, 200, "{sending}");
    let rates = &sending["rates"];
    let fraction = rates["complaint_rate"].as_f64().unwrap_or_default();
    assert!((fraction - 1.0 / 1200.0).abs() < 1e-12, "{rates}");
    assert_eq!(rates["complaint_rate_percent"], 0.083333, "{rates}");
    assert_eq!(rates["bounce_rate_percent"], 0.0, "{rates}");
    assert_eq!(sending["policy"]["complaint_pause_percent"], 0.1);
    app.stop().await;
}

on_both_databases!(
    json_bodies_are_read_whatever_their_content_type,
    empty_query_values_mean_absent,
    sending_names_the_units_of_its_rates,
);
