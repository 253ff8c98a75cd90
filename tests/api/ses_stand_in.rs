//! A local stand-in for the SESv2 API (REST-JSON), reached by the real
//! aws-sdk-sesv2 client through its endpoint override over real HTTP. It
//! records each request (operation, query, JSON body, SigV4 Authorization),
//! keeps an account-level suppression list, the account's and the
//! configuration sets' sending switches, and answers like SES: 200, or an
//! error status with `x-amzn-ErrorType` when told to (429, 403, 400, 503).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

/// One request as the stand-in received it.
#[derive(Clone, Debug)]
pub struct SesCall {
    pub operation: &'static str,
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Value,
    pub authorization: String,
}

impl SesCall {
    /// Every value of a query parameter, in order.
    pub fn query_values(&self, key: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The SigV4 credential scope: (access key, region, service).
    pub fn scope(&self) -> Option<(String, String, String)> {
        let credential = self
            .authorization
            .split("Credential=")
            .nth(1)?
            .split(',')
            .next()?;
        let parts: Vec<&str> = credential.split('/').collect();
        match parts.as_slice() {
            [key, _date, region, service, "aws4_request"] => Some((
                (*key).to_owned(),
                (*region).to_owned(),
                (*service).to_owned(),
            )),
            _ => None,
        }
    }

    /// The address a suppression call is about (body or path).
    pub fn email(&self) -> Option<String> {
        match self.operation {
            "PutSuppressedDestination" => self.body["EmailAddress"].as_str().map(str::to_owned),
            "DeleteSuppressedDestination" => self.path.rsplit('/').next().map(decoded),
            _ => None,
        }
    }
}

struct State {
    calls: Vec<SesCall>,
    /// Answers used once each, per operation, before the normal answer.
    next: HashMap<&'static str, VecDeque<(u16, String)>>,
    /// An answer given every time, per operation, until healed.
    always: HashMap<&'static str, (u16, String)>,
    /// The account-level list: address → (reason, last update, epoch s).
    list: BTreeMap<String, (String, i64)>,
    account_enabled: bool,
    sets: HashMap<String, bool>,
    page_cap: usize,
    /// How long an operation takes to answer, per operation.
    slow: HashMap<&'static str, std::time::Duration>,
    /// An answer to every list call after the first page, until healed.
    later_pages: Option<(u16, String)>,
}

pub struct SesApi {
    pub url: String,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

fn operation(method: &str, path: &str) -> &'static str {
    let rest = path.strip_prefix("/v2/email/").unwrap_or("");
    let parts: Vec<&str> = rest.split('/').collect();
    match (method, parts.as_slice()) {
        ("GET", ["account"]) => "GetAccount",
        ("PUT", ["account", "sending"]) => "PutAccountSendingAttributes",
        ("GET", ["configuration-sets", _]) => "GetConfigurationSet",
        ("PUT", ["configuration-sets", _, "sending"]) => "PutConfigurationSetSendingOptions",
        ("PUT", ["suppression", "addresses"]) => "PutSuppressedDestination",
        ("GET", ["suppression", "addresses"]) => "ListSuppressedDestinations",
        ("DELETE", ["suppression", "addresses", _]) => "DeleteSuppressedDestination",
        ("GET", ["suppression", "addresses", _]) => "GetSuppressedDestination",
        _ => "Unknown",
    }
}

fn error(status: u16, code: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    )
    .insert_header(("x-amzn-ErrorType", code.to_owned()))
    .content_type("application/json")
    .body(json!({ "message": format!("stand-in says {code}") }).to_string())
}

fn ok(body: Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.to_string())
}

fn epoch(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

fn decoded(segment: &str) -> String {
    url::form_urlencoded::parse(format!("x={segment}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    let method = req.method().as_str().to_owned();
    let path = req.path().to_owned();
    let op = operation(&method, &path);
    let call = SesCall {
        operation: op,
        method,
        path: path.clone(),
        query: url::form_urlencoded::parse(req.query_string().as_bytes())
            .into_owned()
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    };
    let slow = state.lock().ok().and_then(|s| s.slow.get(op).copied());
    if let Some(delay) = slow {
        actix_web::rt::time::sleep(delay).await;
    }
    let Ok(mut s) = state.lock() else {
        return error(500, "InternalFailure");
    };
    s.calls.push(call.clone());
    if let Some((status, code)) = s.next.get_mut(op).and_then(VecDeque::pop_front) {
        return error(status, &code);
    }
    if let Some((status, code)) = s.always.get(op).cloned() {
        return error(status, &code);
    }
    let next_page = call.query.iter().any(|(k, _)| k == "NextToken");
    if let Some((status, code)) = s.later_pages.clone().filter(|_| next_page) {
        return error(status, &code);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let last = path.rsplit('/').next().map(decoded).unwrap_or_default();
    match op {
        "GetAccount" => ok(json!({
            "SendingEnabled": s.account_enabled,
            "EnforcementStatus": "HEALTHY",
            "ProductionAccessEnabled": true,
            "DedicatedIpAutoWarmupEnabled": false,
            "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 0.0},
            "SuppressionAttributes": {"SuppressedReasons": ["BOUNCE", "COMPLAINT"]},
        })),
        "PutAccountSendingAttributes" => {
            if let Some(enabled) = call.body["SendingEnabled"].as_bool() {
                s.account_enabled = enabled;
            }
            ok(json!({}))
        }
        "GetConfigurationSet" => {
            let name = decoded(path.rsplit('/').next().unwrap_or_default());
            let enabled = s.sets.get(&name).copied().unwrap_or(true);
            ok(json!({"ConfigurationSetName": name, "SendingOptions": {"SendingEnabled": enabled}}))
        }
        "PutConfigurationSetSendingOptions" => {
            let name = decoded(path.split('/').nth(4).unwrap_or_default());
            if let Some(enabled) = call.body["SendingEnabled"].as_bool() {
                s.sets.insert(name, enabled);
            }
            ok(json!({}))
        }
        "PutSuppressedDestination" => {
            let email = call.body["EmailAddress"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let reason = call.body["Reason"].as_str().unwrap_or_default().to_owned();
            if email.is_empty() || !matches!(reason.as_str(), "BOUNCE" | "COMPLAINT") {
                return error(400, "BadRequestException");
            }
            s.list.insert(email, (reason, now));
            ok(json!({}))
        }
        "DeleteSuppressedDestination" => match s.list.remove(&last) {
            Some(_) => ok(json!({})),
            None => error(404, "NotFoundException"),
        },
        "ListSuppressedDestinations" => {
            let reasons = call.query_values("Reason");
            let since = call
                .query_values("StartDate")
                .first()
                .and_then(|d| epoch(d));
            let until = call.query_values("EndDate").first().and_then(|d| epoch(d));
            let start: usize = call
                .query_values("NextToken")
                .first()
                .and_then(|t| t.strip_prefix("page-"))
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let size: usize = call
                .query_values("PageSize")
                .first()
                .and_then(|p| p.parse().ok())
                .unwrap_or(1000)
                .min(s.page_cap);
            let selected: Vec<(&String, &(String, i64))> = s
                .list
                .iter()
                .filter(|(_, (reason, at))| {
                    (reasons.is_empty() || reasons.contains(&reason.as_str()))
                        && since.is_none_or(|t| *at >= t)
                        && until.is_none_or(|t| *at < t)
                })
                .collect();
            let page: Vec<Value> = selected
                .iter()
                .skip(start)
                .take(size)
                .map(|(email, (reason, at))| {
                    json!({"EmailAddress": email, "Reason": reason, "LastUpdateTime": at})
                })
                .collect();
            let next = (start + size < selected.len()).then(|| format!("page-{}", start + size));
            ok(json!({"SuppressedDestinationSummaries": page, "NextToken": next}))
        }
        "GetSuppressedDestination" => match s.list.get(&last) {
            Some((reason, at)) => ok(json!({"SuppressedDestination": {
                "EmailAddress": last, "Reason": reason, "LastUpdateTime": at}})),
            None => error(404, "NotFoundException"),
        },
        _ => error(400, "UnknownOperationException"),
    }
}

impl SesApi {
    pub async fn start() -> SesApi {
        let state = Arc::new(Mutex::new(State {
            calls: Vec::new(),
            next: HashMap::new(),
            always: HashMap::new(),
            list: BTreeMap::new(),
            account_enabled: true,
            sets: HashMap::new(),
            page_cap: 1000,
            slow: HashMap::new(),
            later_pages: None,
        }));
        let data = web::Data::from(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        SesApi { url, state, handle }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    pub fn calls(&self) -> Vec<SesCall> {
        self.with(|s| s.calls.clone())
    }

    pub fn calls_of(&self, operation: &str) -> Vec<SesCall> {
        self.with(|s| {
            s.calls
                .iter()
                .filter(|c| c.operation == operation)
                .cloned()
                .collect()
        })
    }

    /// The calls that switched sending to `enabled` (at any target).
    pub fn switches_to(&self, enabled: bool) -> Vec<SesCall> {
        self.calls()
            .into_iter()
            .filter(|c| {
                c.operation.ends_with("SendingAttributes")
                    || c.operation.ends_with("SendingOptions")
            })
            .filter(|c| c.body["SendingEnabled"] == Value::Bool(enabled))
            .collect()
    }

    /// The next `times` calls of `operation` answer `status` with `code`.
    pub fn fail_next(&self, operation: &'static str, status: u16, code: &str, times: usize) {
        self.with(|s| {
            let queue = s.next.entry(operation).or_default();
            for _ in 0..times {
                queue.push_back((status, code.to_owned()));
            }
        });
    }

    /// Every call of `operation` answers `status` with `code` until healed.
    pub fn fail_always(&self, operation: &'static str, status: u16, code: &str) {
        self.with(|s| s.always.insert(operation, (status, code.to_owned())));
    }

    /// Every call of `operation` takes `delay` before it is answered (and
    /// recorded).
    pub fn slow_down(&self, operation: &'static str, delay: std::time::Duration) {
        self.with(|s| s.slow.insert(operation, delay));
    }

    pub fn heal(&self, operation: &'static str) {
        self.with(|s| {
            s.always.remove(operation);
            s.later_pages = None;
        });
    }

    /// Every list call after the first page answers `status` with `code`
    /// until healed.
    pub fn fail_later_pages(&self, status: u16, code: &str) {
        self.with(|s| s.later_pages = Some((status, code.to_owned())));
    }

    /// Lists `email` with `reason` as last updated at `epoch` seconds.
    pub fn preload(&self, email: &str, reason: &str, epoch: i64) {
        self.with(|s| s.list.insert(email.to_owned(), (reason.to_owned(), epoch)));
    }

    /// The account-level list: address → reason.
    pub fn listed(&self) -> BTreeMap<String, String> {
        self.with(|s| {
            s.list
                .iter()
                .map(|(e, (r, _))| (e.clone(), r.clone()))
                .collect()
        })
    }

    pub fn account_enabled(&self) -> bool {
        self.with(|s| s.account_enabled)
    }

    pub fn set_enabled(&self, name: &str) -> Option<bool> {
        self.with(|s| s.sets.get(name).copied())
    }

    /// Pages hold at most `n` entries whatever PageSize asks.
    pub fn cap_pages(&self, n: usize) {
        self.with(|s| s.page_cap = n);
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}
