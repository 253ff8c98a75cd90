//! The admin surface on its own listener (SPEC §5): the public listener
//! serves `POST /sns` and health only; `/v1` and `/metrics` are on the admin
//! listener, behind one authentication layer. With `API_TOKENS` every admin
//! request needs a token (scheme in any case), loopback or not; without, the
//! admin listener must be on loopback and serves whoever reaches it; no
//! request header decides who is local.

use reqwest::Method;

use crate::helpers::{
    Backend, TempDir, TestApp, answer, assert_refused, free_port, spawn_app_with, test_settings,
};
use crate::on_both_databases;
use crate::suppression_api::{TOKEN, app_with_token};

/// Sends `method path` to `base` with an optional `Authorization` header.
async fn request(
    app: &TestApp,
    method: Method,
    base: &str,
    path: &str,
    authorization: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = app.client.request(method, format!("{base}{path}"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    answer(request.send().await.expect("answer")).await
}

async fn the_public_listener_serves_only_sns_and_health(backend: Backend) {
    let app = app_with_token(backend).await;
    let bearer = format!("Bearer {TOKEN}");
    for (method, path) in [
        (Method::GET, "/v1/suppressions/a@example.com"),
        (Method::POST, "/v1/suppressions"),
        (
            Method::DELETE,
            "/v1/suppressions/a@example.com?by=x&reason=y",
        ),
        (Method::GET, "/v1/sending"),
        (Method::PUT, "/v1/sending"),
        (Method::GET, "/v1/subscriptions"),
        (Method::GET, "/metrics"),
    ] {
        let (status, _) = request(&app, method.clone(), &app.address, path, Some(&bearer)).await;
        assert_eq!(status, 404, "{method} {path} on the public listener");
    }
    assert_eq!(app.get("/healthz").await.0, 200);
    assert_eq!(app.get("/readyz").await.0, 200);
    // The admin listener serves its own paths only, and its paths with
    // their own methods only (an outside trial found the others answered
    // an empty 404).
    let made_up = Method::from_bytes(b"FOO").expect("a method");
    for (method, path) in [
        (Method::POST, "/sns"),
        (Method::GET, "/healthz"),
        (Method::PATCH, "/v1/sending"),
        (Method::POST, "/v1/sending"),
        (made_up, "/v1/sending"),
        (Method::PUT, "/v1/suppressions/check"),
        (Method::DELETE, "/v1/subscriptions"),
        (Method::POST, "/metrics"),
        (Method::POST, "/"),
    ] {
        let (status, body) = request(&app, method, &app.admin_address, path, Some(&bearer)).await;
        assert_eq!(status, 404, "{path} on the admin listener");
        assert_eq!(body["error"], "not_found", "{body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| d.ends_with(path)),
            "{body}"
        );
    }
    // A 404 is JSON like every other refusal, naming what was asked.
    let (status, body) = request(&app, Method::GET, &app.address, "/sns", None).await;
    assert_eq!(
        (status, &body["error"]),
        (404, &"not_found".into()),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("GET /sns"),
        "{body}"
    );
    let (status, sending) = request(
        &app,
        Method::GET,
        &app.admin_address,
        "/v1/sending",
        Some(&bearer),
    )
    .await;
    assert_eq!((status, &sending["state"]), (200, &"active".into()));
    // HEAD answers wherever GET does, with GET's status and type (a
    // monitor's check; an outside trial found it answered 404). That no
    // body follows is HTTP's rule, kept by actix and by the client alike,
    // so it is not something a test here could see fail.
    for (base, path, authorization) in [
        (&app.address, "/healthz", None),
        (&app.address, "/readyz", None),
        (&app.admin_address, "/", None),
        (&app.admin_address, "/metrics", Some(bearer.as_str())),
        (&app.admin_address, "/v1/sending", Some(bearer.as_str())),
    ] {
        let mut head = app.client.head(format!("{base}{path}"));
        let mut get = app.client.get(format!("{base}{path}"));
        if let Some(value) = authorization {
            head = head.header("authorization", value);
            get = get.header("authorization", value);
        }
        let head = head.send().await.expect("answer");
        let get = get.send().await.expect("answer");
        assert_eq!(
            (head.status().as_u16(), get.status().as_u16()),
            (200, 200),
            "HEAD {path}"
        );
        assert_eq!(
            head.headers().get("content-type"),
            get.headers().get("content-type"),
            "HEAD {path}"
        );
    }
    let head = app
        .client
        .head(format!("{}/metrics", app.admin_address))
        .send()
        .await
        .expect("answer");
    assert_eq!(head.status(), 401, "HEAD needs the token like GET");
    app.stop().await;
}

async fn with_tokens_every_admin_request_needs_one_even_from_loopback(backend: Backend) {
    let app = app_with_token(backend).await;
    let admin = app.admin_address.clone();
    for (method, path) in [
        (Method::GET, "/metrics"),
        (Method::GET, "/v1/sending"),
        (Method::GET, "/v1/subscriptions"),
        (Method::GET, "/no-such-page"),
        (Method::PATCH, "/v1/sending"),
        (Method::POST, "/metrics"),
    ] {
        let refused = request(&app, method, &admin, path, None).await;
        assert_refused(&refused, 401, "unauthorized");
    }
    // A proxy header from loopback changes nothing.
    let proxied = app
        .client
        .get(format!("{admin}/metrics"))
        .header("x-forwarded-for", "127.0.0.1")
        .send()
        .await
        .expect("answer");
    assert_eq!(
        proxied
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_refused(&answer(proxied).await, 401, "unauthorized");
    let wrong = request(&app, Method::GET, &admin, "/metrics", Some("Bearer nope")).await;
    assert_refused(&wrong, 401, "unauthorized");
    let (status, metrics) = request(
        &app,
        Method::GET,
        &admin,
        "/metrics",
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .as_str()
            .is_some_and(|m| m.contains("bouncer_sending_paused 0")),
        "{metrics}"
    );
    // Each refusal counted: seven without a token, one with a wrong one.
    for line in [
        "bouncer_admin_refusals_total{reason=\"no_token\"} 7",
        "bouncer_admin_refusals_total{reason=\"wrong_token\"} 1",
    ] {
        assert!(
            metrics.as_str().is_some_and(|m| m.contains(line)),
            "{line}: {metrics}"
        );
    }
    app.stop().await;
}

async fn the_bearer_scheme_is_case_insensitive(backend: Backend) {
    let app = app_with_token(backend).await;
    let admin = app.admin_address.clone();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let header = format!("{scheme} {TOKEN}");
        let (status, body) = request(&app, Method::GET, &admin, "/v1/sending", Some(&header)).await;
        assert_eq!(status, 200, "{header}: {body}");
    }
    for header in [
        format!("Basic {TOKEN}"),
        format!("Bearer{TOKEN}"),
        TOKEN.to_owned(),
    ] {
        let refused = request(&app, Method::GET, &admin, "/v1/sending", Some(&header)).await;
        assert_refused(&refused, 401, "unauthorized");
    }
    // The token's holder is recorded as who changed the state.
    let response = app
        .client
        .put(format!("{admin}/v1/sending"))
        .header("authorization", format!("bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(r#"{"state": "paused", "by": "alice", "reason": "test"}"#)
        .send()
        .await
        .expect("answer");
    let (status, body) = answer(response).await;
    assert_eq!(
        (status, &body["changed_by"]),
        (200, &"alice (api:backend)".into()),
        "{body}"
    );
    app.stop().await;
}

async fn without_tokens_the_loopback_admin_listener_serves_whoever_reaches_it(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    let url = format!("{}/v1/suppressions/a@example.com", app.admin_address);
    for header in ["x-forwarded-for", "x-real-ip", "forwarded", "via"] {
        let request = app.client.get(&url).header(header, "203.0.113.9");
        let served = answer(request.send().await.expect("answer")).await;
        assert_refused(&served, 404, "not_suppressed");
    }
    assert_eq!(app.admin_get("/metrics").await.0, 200);
    app.stop().await;
}

on_both_databases!(
    the_public_listener_serves_only_sns_and_health,
    with_tokens_every_admin_request_needs_one_even_from_loopback,
    the_bearer_scheme_is_case_insensitive,
    without_tokens_the_loopback_admin_listener_serves_whoever_reaches_it,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_listener_off_loopback_needs_tokens() {
    let dir = TempDir::new();
    let mut settings = test_settings(
        &format!("sqlite:{}", dir.path().join("b.db").display()),
        dir.path(),
    );
    settings.admin_listen_addr = "0.0.0.0:0".into();
    let error = bouncer::app::Application::build(settings.clone(), Default::default())
        .await
        .err()
        .expect("refused without API_TOKENS");
    let error = format!("{error:#}");
    assert!(
        error.contains("ADMIN_LISTEN_ADDR 0.0.0.0:0") && error.contains("API_TOKENS"),
        "{error}"
    );
    // With tokens it starts, and asks every caller for one.
    settings.api_tokens = vec![format!("backend:{TOKEN}")];
    let app = bouncer::app::Application::build(settings, Default::default())
        .await
        .expect("starts with API_TOKENS");
    let url = format!("http://127.0.0.1:{}/metrics", app.admin_port());
    let handle = app.server_handle();
    let task = tokio::spawn(app.run_until_stopped());
    let refused = answer(reqwest::get(&url).await.expect("answer")).await;
    assert_refused(&refused, 401, "unauthorized");
    handle.stop(true).await;
    let _ = task.await;
}

/// One port given to both listeners stops start-up with the reason, not
/// only the operating system's "Address already in use".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_on_the_public_port_stops_start_up_saying_so() {
    let dir = TempDir::new();
    let mut settings = test_settings(
        &format!("sqlite:{}", dir.path().join("b.db").display()),
        dir.path(),
    );
    let both = format!("127.0.0.1:{}", free_port());
    settings.listen_addr = both.clone();
    settings.admin_listen_addr = both.clone();
    let error = bouncer::app::Application::build(settings, Default::default())
        .await
        .err()
        .expect("refused");
    let error = format!("{error:#}");
    assert!(
        error.contains(&format!(
            "cannot listen on ADMIN_LISTEN_ADDR {both}: LISTEN_ADDR {both} listens on that port already"
        )),
        "{error}"
    );
}

/// `API_TOKENS` values that could never work stop start-up naming the
/// entry, as the README promises of every setting: before, each started
/// and then answered 401 to everyone, or recorded changes under a wrong
/// name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_cannot_work_stop_start_up() {
    for (tokens, why) in [
        (vec!["backend:"], "entry 1 (`backend`): the token is empty"),
        (vec![":s3cret"], "entry 1: the name before `:` is empty"),
        (
            vec!["backend: s3cret"],
            "entry 1 (`backend`): the token holds spaces",
        ),
        (vec!["s3cret"], "entry 1: an entry is `name:token`"),
        (
            vec!["backend:s3cret", "page:s3cret"],
            "entry 2 (`page`): its token is given to `backend` too",
        ),
    ] {
        let error = crate::regions::start_up_error(|s| {
            s.api_tokens = tokens.iter().map(|t| t.to_string()).collect();
        })
        .await;
        assert!(
            error.contains("API_TOKENS") && error.contains(why),
            "{tokens:?}: {error}"
        );
        assert!(!error.contains("s3cret"), "a token is a secret: {error}");
    }
}

/// Alert addresses without a server stop start-up: before, the service
/// started with a warning that no channel was configured, and stored
/// alerts that nobody would be mailed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_emails_without_an_smtp_server_stop_start_up() {
    let error = crate::regions::start_up_error(|s| {
        s.alert_emails = vec!["ops@example.com".into()];
        s.smtp_host = None;
    })
    .await;
    assert!(
        error.contains("ALERT_EMAILS is set but SMTP_HOST is not"),
        "{error}"
    );
}
