//! Subscription lifecycle: a verified SubscriptionConfirmation is confirmed
//! (the real aws-sdk-sns call over HTTP to a local SNS API stand-in, or a GET
//! of the checked SubscribeURL against a local HTTPS stand-in), stored with
//! its state; an UnsubscribeConfirmation marks it unsubscribed.

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bouncer::sns::confirm::ConfirmMode;
use serde_json::Value;

use crate::cert_fetch::CertHost;
use crate::helpers::{Backend, TestApp, assert_refused, assert_status, spawn_app_with};
use crate::on_both_databases;
use crate::signing::{Msg, TOPIC};

/// One request the stand-in received: its form fields and Authorization.
#[derive(Clone, Debug)]
pub struct ApiCall {
    pub form: Vec<(String, String)>,
    pub authorization: String,
}

impl ApiCall {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What the stand-in answers instead of success: status, content type, body.
pub type Failure = (u16, &'static str, String);

/// An SNS query API error body, as SNS sends it.
pub fn sns_error(code: &str) -> String {
    format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{code}</Message></Error><RequestId>r-0</RequestId></ErrorResponse>"
    )
}

/// A local stand-in for the SNS query API: answers ConfirmSubscription like
/// SNS, or with the failure set by [`SnsApi::fail_with`].
pub struct SnsApi {
    pub url: String,
    pub calls: Arc<Mutex<Vec<ApiCall>>>,
    failure: Arc<Mutex<Option<Failure>>>,
    handle: actix_web::dev::ServerHandle,
}

struct ApiState {
    calls: Arc<Mutex<Vec<ApiCall>>>,
    failure: Arc<Mutex<Option<Failure>>>,
}

async fn sns_api(req: HttpRequest, body: web::Bytes, state: web::Data<ApiState>) -> HttpResponse {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let call = ApiCall {
        form,
        authorization,
    };
    let topic = call.get("TopicArn").unwrap_or_default().to_owned();
    if let Ok(mut calls) = state.calls.lock() {
        calls.push(call);
    }
    let failure = state.failure.lock().ok().and_then(|f| f.clone());
    if let Some((status, content_type, body)) = failure {
        let status = actix_web::http::StatusCode::from_u16(status).expect("status");
        return HttpResponse::build(status)
            .content_type(content_type)
            .body(body);
    }
    HttpResponse::Ok().content_type("text/xml").body(format!(
        "<ConfirmSubscriptionResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\
         <ConfirmSubscriptionResult><SubscriptionArn>{topic}:0b7a6f3e-1234-4c5d-9e8f-000000000001</SubscriptionArn></ConfirmSubscriptionResult>\
         <ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></ConfirmSubscriptionResponse>"
    ))
}

impl SnsApi {
    pub async fn start() -> SnsApi {
        let calls: Arc<Mutex<Vec<ApiCall>>> = Arc::default();
        let failure: Arc<Mutex<Option<Failure>>> = Arc::default();
        let state = web::Data::new(ApiState {
            calls: calls.clone(),
            failure: failure.clone(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(sns_api))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        SnsApi {
            url,
            calls,
            failure,
            handle,
        }
    }

    /// Answers every call with this until [`SnsApi::recover`].
    pub fn fail_with(&self, status: u16, content_type: &'static str, body: impl Into<String>) {
        if let Ok(mut f) = self.failure.lock() {
            *f = Some((status, content_type, body.into()));
        }
    }

    pub fn recover(&self) {
        if let Ok(mut f) = self.failure.lock() {
            *f = None;
        }
    }

    pub fn calls(&self) -> Vec<ApiCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

pub async fn app_with_sdk(backend: Backend, api: &SnsApi) -> TestApp {
    app_with_sdk_at(backend, api.url.clone()).await
}

/// The app confirming through the SDK, with test credentials, at `endpoint`.
pub async fn app_with_sdk_at(backend: Backend, endpoint: String) -> TestApp {
    spawn_app_with(backend, move |s, hooks| {
        s.sns_confirm_mode = ConfirmMode::Sdk;
        s.sns_api_endpoint = Some(endpoint);
        hooks.aws_credentials = Some(aws_credential_types::Credentials::new(
            "AKIDTESTONLY",
            "test-only-secret",
            None,
            None,
            "tests",
        ));
    })
    .await
}

async fn subscription_row(app: &TestApp) -> Value {
    let (status, body) = app.admin_get("/v1/subscriptions").await;
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or(Value::Null)
}

async fn a_confirmation_calls_confirm_subscription_once_through_the_sdk(backend: Backend) {
    let api = SnsApi::start().await;
    let app = app_with_sdk(backend, &api).await;
    let msg = Msg::subscription_confirmation(TOPIC).version(2).sign();
    assert_status(&app.post(&msg).await, 200, "stored");
    let calls = api.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.get("Action"), Some("ConfirmSubscription"));
    assert_eq!(call.get("TopicArn"), Some(TOPIC));
    assert_eq!(call.get("Token"), Some(msg.get("Token")));
    assert_eq!(call.get("AuthenticateOnUnsubscribe"), Some("true"));
    assert!(
        call.authorization.contains("Credential=AKIDTESTONLY/"),
        "signed with the chain's credentials: {}",
        call.authorization
    );
    assert!(
        call.authorization.contains("/us-east-1/sns/aws4_request"),
        "region from the topic ARN: {}",
        call.authorization
    );
    let row = subscription_row(&app).await;
    assert_eq!(row["topic_arn"], TOPIC);
    assert_eq!(row["state"], "confirmed");
    assert_eq!(row["confirm_mode"], "sdk");
    assert_eq!(
        row["subscription_arn"],
        format!("{TOPIC}:0b7a6f3e-1234-4c5d-9e8f-000000000001")
    );
    // SNS delivers the same confirmation again: no second call.
    assert_status(&app.post(&msg).await, 200, "duplicate");
    assert_eq!(api.calls().len(), 1);
    app.stop().await;
    api.stop().await;
}

async fn a_transient_failure_answers_503_and_the_retry_confirms(backend: Backend) {
    let api = SnsApi::start().await;
    api.fail_with(500, "text/xml", sns_error("InternalError"));
    let app = app_with_sdk(backend, &api).await;
    let msg = Msg::subscription_confirmation(TOPIC).sign();
    assert_refused(&app.post(&msg).await, 503, "confirmation_unavailable");
    assert!(!api.calls().is_empty());
    assert_eq!(
        app.db.total_messages().await,
        0,
        "not stored, so SNS's retry is not a duplicate"
    );
    api.recover();
    assert_status(&app.post(&msg).await, 200, "stored");
    assert_eq!(subscription_row(&app).await["state"], "confirmed");
    app.stop().await;
    api.stop().await;
}

async fn url_mode_visits_the_checked_subscribe_url(backend: Backend) {
    let host = CertHost::start().await;
    let overrides = host.overrides();
    let app = spawn_app_with(backend, move |s, hooks| {
        s.sns_confirm_mode = ConfirmMode::Url;
        hooks.outbound = overrides;
    })
    .await;
    let msg = Msg::subscription_confirmation(TOPIC).sign();
    assert_status(&app.post(&msg).await, 200, "stored");
    let queries = host.root_queries();
    assert_eq!(queries.len(), 1, "{queries:?}");
    assert!(
        queries[0].starts_with("Action=ConfirmSubscription&TopicArn="),
        "{queries:?}"
    );
    assert!(queries[0].ends_with(&format!("Token={}", msg.get("Token"))));
    let row = subscription_row(&app).await;
    assert_eq!(
        (row["state"].as_str(), row["confirm_mode"].as_str()),
        (Some("confirmed"), Some("url"))
    );
    assert_eq!(
        row["subscription_arn"],
        "arn:aws:sns:us-east-1:123456789012:ses-feedback:via-url"
    );
    app.stop().await;
    host.stop().await;
}

async fn a_subscribe_url_off_the_sns_hosts_is_refused_and_never_fetched(backend: Backend) {
    let host = CertHost::start().await;
    let overrides = host.overrides();
    let app = spawn_app_with(backend, move |s, hooks| {
        s.sns_confirm_mode = ConfirmMode::Url;
        hooks.outbound = overrides;
    })
    .await;
    for url in [
        "https://attacker.example/?Action=ConfirmSubscription&Token=x",
        "https://bucket.s3.amazonaws.com/?Action=ConfirmSubscription&Token=x",
        "http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=x",
        "https://sns.us-east-1.amazonaws.com:8443/?Action=ConfirmSubscription&Token=x",
        "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&Token=x",
        // Another region's SNS host (the stand-in would answer for it).
        "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=x",
    ] {
        let msg = Msg::subscription_confirmation(TOPIC)
            .set("SubscribeURL", url)
            .sign();
        assert_refused(&app.post(&msg).await, 403, "bad_subscribe_url");
    }
    assert!(host.root_queries().is_empty(), "nothing was fetched");
    assert_eq!(app.db.total_messages().await, 0);
    app.stop().await;
    host.stop().await;
}

async fn a_foreign_topic_confirmation_is_refused_without_calling_sns(backend: Backend) {
    let api = SnsApi::start().await;
    let app = app_with_sdk(backend, &api).await;
    let msg = Msg::subscription_confirmation("arn:aws:sns:us-east-1:999999999999:not-ours").sign();
    assert_refused(&app.post(&msg).await, 403, "topic_not_allowed");
    assert!(api.calls().is_empty());
    assert_eq!(subscription_row(&app).await, Value::Null);
    app.stop().await;
    api.stop().await;
}

async fn mode_off_records_a_pending_subscription(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    assert_status(
        &app.post(&Msg::subscription_confirmation(TOPIC).sign())
            .await,
        200,
        "stored",
    );
    let row = subscription_row(&app).await;
    assert_eq!(
        (row["state"].as_str(), row["confirm_mode"].as_str()),
        (Some("pending"), Some("off"))
    );
    app.stop().await;
}

async fn an_unsubscribe_confirmation_marks_the_feed_stopped(backend: Backend) {
    let api = SnsApi::start().await;
    let app = app_with_sdk(backend, &api).await;
    assert_status(
        &app.post(&Msg::subscription_confirmation(TOPIC).sign())
            .await,
        200,
        "stored",
    );
    let unsubscribe = Msg::unsubscribe_confirmation(TOPIC).sign();
    assert_status(&app.post(&unsubscribe).await, 200, "stored");
    assert_eq!(api.calls().len(), 1, "an unsubscribe is not confirmed back");
    let row = subscription_row(&app).await;
    assert_eq!(row["state"], "unsubscribed");
    assert!(row["unsubscribed_at"].is_string());
    assert!(
        row["subscription_arn"]
            .as_str()
            .is_some_and(|a| a.starts_with(TOPIC)),
        "kept: {row}"
    );
    let (_, metrics) = app.admin_get("/metrics").await;
    assert!(
        metrics
            .as_str()
            .unwrap_or_default()
            .contains("bouncer_feed_unsubscribed_total 1")
    );
    app.stop().await;
    api.stop().await;
}

on_both_databases!(
    a_confirmation_calls_confirm_subscription_once_through_the_sdk,
    a_transient_failure_answers_503_and_the_retry_confirms,
    url_mode_visits_the_checked_subscribe_url,
    a_subscribe_url_off_the_sns_hosts_is_refused_and_never_fetched,
    a_foreign_topic_confirmation_is_refused_without_calling_sns,
    mode_off_records_a_pending_subscription,
    an_unsubscribe_confirmation_marks_the_feed_stopped,
);

/// The `bouncer serve` binary with AWS credentials in its environment (the
/// first link of the standard chain) and SNS_CONFIRM_MODE unset (`auto`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_confirms_through_the_sdk_when_the_standard_chain_has_credentials() {
    // reqwest needs rustls's provider, which another test may not have
    // installed yet in this process (run alone, this test panicked).
    bouncer::outbound::install_default_provider();
    let api = SnsApi::start().await;
    let dir = crate::helpers::TempDir::new();
    let port = crate::helpers::free_port();
    let mut cmd = crate::cli::bouncer(dir.path());
    crate::cli::test_env(
        &mut cmd,
        &format!("sqlite:{}", dir.path().join("b.db").display()),
        dir.path(),
    );
    let mut child = cmd
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("SNS_API_ENDPOINT", &api.url)
        .env("AWS_ACCESS_KEY_ID", "AKIDFROMENVIRONMENT")
        .env("AWS_SECRET_ACCESS_KEY", "test-only-secret")
        .env("AWS_CONFIG_FILE", dir.path().join("no-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("no-credentials"),
        )
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut answer = None;
    let msg = Msg::subscription_confirmation(TOPIC).sign();
    for _ in 0..100 {
        if let Ok(r) = client
            .post(format!("{base}/sns"))
            .header("x-amz-sns-message-type", "SubscriptionConfirmation")
            .body(msg.body())
            .send()
            .await
        {
            answer = Some(r.status().as_u16());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer, Some(200));
    let calls = api.calls();
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0]
            .authorization
            .contains("Credential=AKIDFROMENVIRONMENT/"),
        "{}",
        calls[0].authorization
    );
    api.stop().await;
}
