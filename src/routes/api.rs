//! `/v1`: the sending application's API over the suppression list, on the
//! admin listener. The listener's authentication layer (`auth`) has let the
//! caller in before any handler runs; handlers that record who made a change
//! read the caller it found from the request (`web::ReqData<Caller>`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use actix_web::body::SizedStream;
use actix_web::error::JsonPayloadError;
use actix_web::http::header::{self, ContentType};
use actix_web::web::{Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::address::EmailAddress;
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::guard::GuardPolicy;
use crate::memory::GiveBackOnDrop;
use crate::routes::inflate::{self, Coding, InflateError, Inflating};
use crate::store::suppressions::{ListFilter, Suppression};
use crate::store::{DbResult, Store};
use crate::time::Timestamp;

/// Most addresses one batch check takes.
pub const MAX_BATCH: usize = 10_000;
/// Largest body a batch check takes, after decompression: 10,000
/// addresses of 320 bytes, the longest an address can be, fit (~3.2 MB);
/// ones with long display names or much escaping may not, and are 413.
const CHECK_BODY_LIMIT: usize = 4 * 1024 * 1024;
/// Largest JSON body of every other call.
const OTHER_BODY_LIMIT: usize = 64 * 1024;
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .app_data(
                // A JSON body is read as JSON whatever its Content-Type
                // (plain `curl -d` sends a form type); one that does not
                // parse is still a 400.
                web::JsonConfig::default()
                    .content_type(|_| true)
                    .content_type_required(false)
                    // A change's body is a few fields; the check reads its
                    // own, larger one (`read_check_body`).
                    .limit(OTHER_BODY_LIMIT)
                    .error_handler(|e, _| match e {
                        JsonPayloadError::Overflow { .. }
                        | JsonPayloadError::OverflowKnownLength { .. } => ApiError::BodyTooLarge {
                            limit: OTHER_BODY_LIMIT,
                        }
                        .into(),
                        e => ApiError::InvalidRequest(format!("body: {e}")).into(),
                    }),
            )
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| ApiError::InvalidRequest(format!("query: {e}")).into()),
            )
            .route("/suppressions", super::read().to(list))
            .route("/suppressions", web::post().to(add))
            .route("/suppressions/check", web::post().to(check))
            .route("/suppressions/{email}", super::read().to(get_one))
            .route("/suppressions/{email}", web::delete().to(remove))
            .route("/subscriptions", super::read().to(subscriptions))
            .route("/sending", super::read().to(sending))
            .route("/sending", web::put().to(set_sending))
            .route("/rates/history", super::read().to(super::rates::history))
            .route("/alerts", super::read().to(super::alerts::recent)),
    );
}

/// Who made a change: the person named in `by`, with the token that vouched.
fn actor(caller: &Caller, by: Option<&str>) -> String {
    match by.map(str::trim).filter(|b| !b.is_empty()) {
        Some(person) => format!("{person} (api:{})", caller.name),
        None => format!("api:{}", caller.name),
    }
}

/// Changes that need a reason (removals, pause and resume) get one.
fn required_reason(reason: Option<&str>) -> Result<&str, ApiError> {
    reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or(ApiError::ReasonRequired)
}

fn address(text: &str) -> Result<EmailAddress, ApiError> {
    EmailAddress::parse(text).map_err(|e| ApiError::InvalidAddress(e.to_string()))
}

/// The address a path ends in, as its client sent it. actix decodes a
/// path's `%` escapes lossily: `%ff@x.com` reached the handler as
/// `\u{fffd}@x.com`, looked up and answered 404, where bytes that are no
/// UTF-8 are no address (400).
fn path_address(request: &HttpRequest) -> Result<EmailAddress, ApiError> {
    let last = request.uri().path().rsplit('/').next().unwrap_or_default();
    let text = percent_encoding::percent_decode_str(last)
        .decode_utf8()
        .map_err(|_| {
            ApiError::InvalidAddress("the path's %-escapes are not UTF-8 text".to_owned())
        })?;
    address(&text)
}

async fn get_one(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let email = path_address(&request)?;
    match state.store.suppression(&email).await? {
        Some(row) => {
            Ok(HttpResponse::Ok()
                .json(serde_json::json!({ "suppressed": true, "suppression": row })))
        }
        None => Err(ApiError::NotSuppressed(email.to_string())),
    }
}

#[derive(Deserialize)]
struct CheckRequest {
    #[serde(deserialize_with = "at_most_a_batch")]
    addresses: Batch,
}

/// The first [`MAX_BATCH`] addresses of a check, and how many were given:
/// the rest are counted, not kept. A 4 MiB body of `""` is 1.4 million
/// strings, ~50-70 MiB as a `Vec<String>` before the count could refuse it.
struct Batch {
    kept: Vec<String>,
    given: usize,
}

fn at_most_a_batch<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Batch, D::Error> {
    struct Addresses;
    impl<'de> serde::de::Visitor<'de> for Addresses {
        type Value = Batch;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of addresses")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Batch, A::Error> {
            let mut kept = Vec::new();
            while kept.len() < MAX_BATCH {
                match seq.next_element::<String>()? {
                    Some(address) => kept.push(address),
                    None => {
                        let given = kept.len();
                        return Ok(Batch { kept, given });
                    }
                }
            }
            let mut given = kept.len();
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                given += 1;
            }
            Ok(Batch { kept, given })
        }
    }
    input.deserialize_seq(Addresses)
}

/// What batch checks may hold at once; the rest wait their turn, first
/// come first served. An outside trial took the process past SPEC §9's
/// 64 MiB three ways: many checks' rows and answers at once, many large
/// bodies (3.6 MB of addresses with display names) read and parsed at
/// once, and bodies that stalled unread.
pub struct CheckTurns {
    /// Bytes of check bodies being read, or parsed and waiting, or
    /// answered: two of the largest. A body takes its announced length
    /// (the limit when it announces none or comes compressed) before it is
    /// read, and gives it back when its answer is written.
    bodies: Semaphore,
    /// Addresses being looked up, with their rows and answers being
    /// written: one check of the largest size, or many smaller ones. A
    /// check of 10,000 suppressed addresses holds ~10 MiB meanwhile.
    addresses: Semaphore,
}

impl CheckTurns {
    pub fn new() -> Arc<CheckTurns> {
        Arc::new(CheckTurns {
            bodies: Semaphore::new(2 * CHECK_BODY_LIMIT),
            addresses: Semaphore::new(MAX_BATCH),
        })
    }
}

/// A JSON body of a few fields, sent as is: one that names any coding but
/// `identity` is refused before it is read. Only the batch check takes a
/// compressed body (`read_check_body`, which decompresses within its
/// limit); actix's own decompression, which expanded each chunk whole, is
/// not built in. The body has `HTTP_BODY_TIMEOUT_MS` to arrive, as every
/// other body has: a `Content-Length` larger than what is sent held the
/// connection, and the caller's request, for ever.
struct PlainJson<T>(T);

impl<T: serde::de::DeserializeOwned + 'static> actix_web::FromRequest for PlainJson<T> {
    type Error = actix_web::Error;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        if Coding::of(request.headers()) != Ok(Coding::Identity) {
            let refused = refused_coding(request, "its JSON body uncompressed", "identity");
            return Box::pin(async move { Err(refused.into()) });
        }
        let json = web::Json::<T>::from_request(request, payload);
        let Some(within) = request
            .app_data::<web::Data<AppState>>()
            .map(|state| state.body_timeout)
        else {
            tracing::error!("the API was served without its application state");
            return Box::pin(async move { Err(ApiError::Internal.into()) });
        };
        Box::pin(async move {
            match tokio::time::timeout(within, json).await {
                Ok(json) => Ok(PlainJson(json?.into_inner())),
                Err(_) => Err(ApiError::BodyTimeout {
                    ms: within.as_millis() as u64,
                }
                .into()),
            }
        })
    }
}

/// A body whose `Content-Encoding` the call does not take.
fn refused_coding(request: &HttpRequest, takes: &'static str, accept: &'static str) -> ApiError {
    let named: Vec<&str> = request
        .headers()
        .get_all(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"))
        .collect();
    ApiError::UnsupportedEncoding {
        got: named.join(", ").chars().take(64).collect(),
        takes,
        accept,
    }
}

/// Reads a check's body within `HTTP_BODY_TIMEOUT_MS` and
/// [`CHECK_BODY_LIMIT`] (after decompressing it, a chunk at a time:
/// `inflate`), after waiting for its bytes in [`CheckTurns::bodies`]; the
/// permit comes back with the body. A body that announces no length, or
/// comes compressed, may grow to the limit and is charged the limit.
async fn read_check_body<'a>(
    state: &'a AppState,
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<(SemaphorePermit<'a>, BytesMut), ApiError> {
    let too_large = || ApiError::BodyTooLarge {
        limit: CHECK_BODY_LIMIT,
    };
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > CHECK_BODY_LIMIT) {
        return Err(too_large());
    }
    let coding = Coding::of(request.headers()).map_err(|_| {
        refused_coding(
            request,
            "its JSON body as is, gzip or deflate",
            inflate::ACCEPTED,
        )
    })?;
    let share = match announced {
        Some(n) if coding == Coding::Identity => n,
        _ => CHECK_BODY_LIMIT,
    };
    // At most 4 MiB, so within u32.
    let permits = u32::try_from(share.max(1)).map_err(|_| too_large())?;
    // A turn is waited for no longer than a body may take to arrive: two
    // stalled bodies hold the whole budget until their own time runs out.
    let permit = tokio::time::timeout(
        state.body_timeout,
        state.check_turns.bodies.acquire_many(permits),
    )
    .await
    .map_err(|_| ApiError::Busy)?
    .map_err(|_| ApiError::Internal)?;
    let mut payload = payload.into_inner();
    let read = async {
        let mut inflating = Inflating::new(coding, share);
        let mut body = BytesMut::with_capacity(if inflating.is_some() { 0 } else { share });
        // The bytes sent, compressed or not, are held to the limit too.
        let mut received = 0;
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| ApiError::InvalidRequest(format!("body: {e}")))?;
            received += chunk.len();
            if received > share {
                return Err(too_large());
            }
            match inflating.as_mut() {
                Some(inflating) => inflating.feed(&chunk).map_err(inflate_error)?,
                None => body.extend_from_slice(&chunk),
            }
        }
        match inflating {
            Some(inflating) => inflating.finish().map_err(inflate_error),
            None => Ok(body),
        }
    };
    let body = tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| ApiError::BodyTimeout {
            ms: state.body_timeout.as_millis() as u64,
        })??;
    Ok((permit, body))
}

fn inflate_error(e: InflateError) -> ApiError {
    match e {
        InflateError::TooLarge => ApiError::BodyTooLarge {
            limit: CHECK_BODY_LIMIT,
        },
        InflateError::Corrupt(why) => {
            ApiError::InvalidRequest(format!("body: cannot be decompressed: {why}"))
        }
    }
}

/// Addresses looked up per statement in a batch check.
///
/// The answer is written as each slice's rows arrive, so a check holds one
/// slice of rows at a time: all 10,000 rows at once, with the answer
/// beside them, took ~21 MiB per check, and an outside trial ran checks of
/// 10,000 suppressed addresses past SPEC §9's 64 MiB (see also
/// [`CheckTurns`]).
///
/// 1,000 keeps the statements few (ten for the largest check: on
/// PostgreSQL ten round trips of a local socket, on SQLite ten small
/// `json_each` lists).
const CHECK_SLICE: usize = 1000;

async fn check(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Held until the answer is written, like the addresses' turn below.
    let (_body_turn, body) = read_check_body(&state, &request, payload).await?;
    let batch = serde_json::from_slice::<CheckRequest>(&body)
        .map_err(|e| ApiError::InvalidRequest(format!("body: {e}")))?
        .addresses;
    drop(body);
    if batch.given > MAX_BATCH {
        return Err(ApiError::TooManyAddresses {
            limit: MAX_BATCH,
            got: batch.given,
        });
    }
    let inputs = batch.kept;
    let checked = inputs.len();
    // Held until the answer is written, not while it is sent: a client
    // that stops reading would otherwise hold every other check back.
    let permits = u32::try_from(checked).map_err(|_| ApiError::Internal)?;
    let _addresses_turn = state
        .check_turns
        .addresses
        .acquire_many(permits)
        .await
        .map_err(|_| ApiError::Internal)?;
    let mut answer = CheckAnswer::new(checked);
    let mut invalid = Vec::new();
    // The addresses that parse, as given and as stored, side by side.
    let mut given = Vec::with_capacity(checked);
    let mut emails = Vec::with_capacity(checked);
    for input in inputs {
        match EmailAddress::parse(&input) {
            Ok(email) => {
                given.push(input);
                emails.push(email);
            }
            Err(_) => invalid.push(input),
        }
    }
    state
        .store
        .check_sliced(&emails, CHECK_SLICE, |start, rows| {
            let by_email: HashMap<&str, &Suppression> =
                rows.iter().map(|r| (r.email.as_str(), r)).collect();
            let slice = given[start..]
                .iter()
                .zip(&emails[start..])
                .take(CHECK_SLICE);
            answer.write_slice(slice.filter_map(|(input, email)| {
                by_email.get(email.as_str()).map(|row| Checked {
                    row,
                    address: input,
                })
            }))
        })
        .await?;
    let large = checked > CHECK_SLICE;
    drop((given, emails));
    if large {
        // The rows and the addresses are free now; the answer follows
        // when it has been sent.
        crate::memory::give_back();
    }
    answer.finish(&invalid, large.then_some(GiveBackOnDrop))
}

/// The batch check's answer, `{"checked":N,"suppressed":[...],"invalid":[...]}`,
/// kept as the pieces it was written in (one per slice of addresses) and
/// sent as they are: joining them would copy the answer (~4 MB for 10,000
/// suppressed addresses) once more. Rows are written straight from the
/// store's values: a `serde_json::Value` per row first (a map of 14
/// entries) took ~50 MiB for 10,000 of them.
struct CheckAnswer {
    pieces: Vec<Bytes>,
    written: u64,
    /// No row written yet: the next one needs no comma before it.
    empty: bool,
}

/// A suppressed row, with the address as the caller gave it.
#[derive(Serialize)]
struct Checked<'a> {
    #[serde(flatten)]
    row: &'a Suppression,
    address: &'a str,
}

impl CheckAnswer {
    fn new(checked: usize) -> Self {
        let mut answer = CheckAnswer {
            pieces: Vec::new(),
            written: 0,
            empty: true,
        };
        answer.push(format!(r#"{{"checked":{checked},"suppressed":["#).into_bytes());
        answer
    }

    fn push(&mut self, mut piece: Vec<u8>) {
        if !piece.is_empty() {
            // A grown Vec may have up to twice its length allocated, and
            // `Bytes` keeps all of it until the piece is sent.
            piece.shrink_to_fit();
            self.written += piece.len() as u64;
            self.pieces.push(Bytes::from(piece));
        }
    }

    fn write_slice<'a>(&mut self, rows: impl Iterator<Item = Checked<'a>>) -> Result<(), ApiError> {
        let mut piece = Vec::new();
        for row in rows {
            if !std::mem::take(&mut self.empty) {
                piece.push(b',');
            }
            serde_json::to_writer(&mut piece, &row).map_err(unwritable)?;
        }
        self.push(piece);
        Ok(())
    }

    /// `then` is dropped with the answer, once it has been sent (or the
    /// caller has gone).
    fn finish<T: 'static>(mut self, invalid: &[String], then: T) -> Result<HttpResponse, ApiError> {
        let mut tail = br#"],"invalid":"#.to_vec();
        serde_json::to_writer(&mut tail, invalid).map_err(unwritable)?;
        tail.push(b'}');
        self.push(tail);
        let pieces = futures_util::stream::iter(self.pieces).map(move |piece| {
            // Names `then` so that the closure owns it: it is dropped with
            // the stream, when actix drops the body.
            let _ = &then;
            Ok::<_, Infallible>(piece)
        });
        Ok(HttpResponse::Ok()
            .content_type(ContentType::json())
            .body(SizedStream::new(self.written, pieces)))
    }
}

/// Writing JSON into memory fails only on a map with keys that are not
/// text, which no row has.
fn unwritable(e: serde_json::Error) -> ApiError {
    tracing::error!(error = %e, "a batch check's answer could not be written");
    ApiError::Internal
}

/// A page of rows, written straight from them (a `serde_json::Value` per
/// row first costs several times the answer: see [`CheckAnswer`]).
#[derive(Serialize)]
struct Page<'a> {
    items: &'a [Suppression],
    next_cursor: Option<String>,
}

/// Every field as text: an empty value (`?reason=&limit=`) means absent.
#[derive(Deserialize)]
struct ListQuery {
    /// An address prefix.
    q: Option<String>,
    reason: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A query value, with an empty one read as absent.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn encode_cursor(email: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(email)
}

fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        // An address has no control character (PostgreSQL refuses a NUL in
        // text: it was a 500 there, found by an outside trial).
        .filter(|text| !text.chars().any(char::is_control))
        .ok_or_else(|| ApiError::InvalidRequest("cursor is not one this API gave out".into()))
}

pub fn parse_reason(reason: &str) -> Result<String, ApiError> {
    match reason {
        "bounce" | "complaint" | "manual" => Ok(reason.to_owned()),
        other => Err(ApiError::InvalidRequest(format!(
            "reason `{other}` is not bounce, complaint or manual"
        ))),
    }
}

/// The end of a date range, exclusive: a time as given, or a date through
/// its whole day (`until=2026-11-30` keeps rows of the 30th).
pub fn parse_until(until: &str) -> Result<Timestamp, ApiError> {
    if let Some(time) = Timestamp::parse_rfc3339(until) {
        return Ok(time);
    }
    Timestamp::parse_rfc3339(&format!("{until}T00:00:00Z"))
        .map(|day| day.saturating_add(time::Duration::days(1)))
        .ok_or_else(|| {
            ApiError::InvalidRequest(format!("until `{until}` is not an ISO 8601 date or time"))
        })
}

/// An address prefix as addresses are stored: trimmed and lower-cased.
fn parse_prefix(q: &str) -> Result<String, ApiError> {
    const LONGEST: usize = 320;
    if q.len() > LONGEST {
        return Err(ApiError::InvalidRequest(format!(
            "q is longer than an address can be ({LONGEST} bytes)"
        )));
    }
    let q = q.trim();
    // No address holds one (and PostgreSQL refuses a NUL in text: it was
    // a 500 there, found by an outside trial).
    if q.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(
            "q holds a control character, which no address has".into(),
        ));
    }
    Ok(q.to_lowercase())
}

pub fn parse_since(since: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse_rfc3339(since)
        .or_else(|| Timestamp::parse_rfc3339(&format!("{since}T00:00:00Z")))
        .ok_or_else(|| {
            ApiError::InvalidRequest(format!("since `{since}` is not an ISO 8601 date or time"))
        })
}

async fn list(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = match given(&query.limit) {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "limit `{text}` is not a number from 1 to {MAX_PAGE}"
                ))
            })?,
    };
    let filter = ListFilter {
        reason: given(&query.reason).map(parse_reason).transpose()?,
        since: given(&query.since).map(parse_since).transpose()?,
        until: given(&query.until).map(parse_until).transpose()?,
        prefix: given(&query.q).map(parse_prefix).transpose()?,
        after: given(&query.cursor).map(decode_cursor).transpose()?,
        // One more than asked tells whether another page exists.
        limit: limit + 1,
    };
    let mut items = state.store.list(&filter).await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|r| encode_cursor(&r.email))
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(Page {
        items: &items,
        next_cursor,
    }))
}

#[derive(Deserialize)]
struct AddRequest {
    email: String,
    note: Option<String>,
}

async fn add(
    caller: web::ReqData<Caller>,
    state: web::Data<AppState>,
    PlainJson(body): PlainJson<AddRequest>,
) -> Result<HttpResponse, ApiError> {
    let email = address(&body.email)?;
    let now = state.verifier.clock().now();
    let source = format!("api:{}", caller.name);
    let (row, created) = state
        .store
        .add_manual(&email, body.note.as_deref(), &source, now)
        .await?;
    let answer = serde_json::json!({ "created": created, "suppression": row });
    Ok(if created {
        HttpResponse::Created().json(answer)
    } else {
        HttpResponse::Ok().json(answer)
    })
}

#[derive(Deserialize)]
struct RemoveQuery {
    by: Option<String>,
    reason: Option<String>,
}

async fn remove(
    caller: web::ReqData<Caller>,
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<RemoveQuery>,
) -> Result<HttpResponse, ApiError> {
    let email = path_address(&request)?;
    let why = required_reason(query.reason.as_deref())?;
    let by = actor(&caller, query.by.as_deref());
    let now = state.verifier.clock().now();
    let removed = match state.store.remove(&email, &by, why, now).await {
        Err(e) if e.is_lock_timeout() => return Err(ApiError::ListBusy),
        other => other?,
    };
    match removed {
        Some(row) => {
            Ok(HttpResponse::Ok().json(serde_json::json!({ "removed": row, "removed_by": by })))
        }
        None => Err(ApiError::NotSuppressed(email.to_string())),
    }
}

async fn subscriptions(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let items = state.store.subscriptions().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

/// A fraction (0.05) as a percentage (5), without float noise.
fn percent(fraction: f64) -> f64 {
    (fraction * 100.0 * 1e6).round() / 1e6
}

/// The pause state, the current rates, and the policy they are judged by.
/// Every `*_rate` is a fraction of sends (0.05 is 5%); every `*_percent` a
/// percentage. `ses` is the SES side.
pub async fn sending_report(store: &Store, g: &GuardPolicy) -> DbResult<serde_json::Value> {
    let (state, rates) = crate::guard::current_rates(store, g).await?;
    let mut rates_json = serde_json::to_value(&rates).unwrap_or_default();
    if let Some(obj) = rates_json.as_object_mut() {
        obj.insert(
            "bounce_rate_percent".into(),
            percent(rates.bounce_rate).into(),
        );
        obj.insert(
            "complaint_rate_percent".into(),
            percent(rates.complaint_rate).into(),
        );
    }
    let ses = crate::ses_account::status::report(store).await?;
    Ok(serde_json::json!({
        "state": state.state,
        "changed_at": state.changed_at,
        "changed_by": state.changed_by,
        "reason": state.reason,
        "warned_at": state.warned_at,
        "rates": rates_json,
        "policy": {
            "window_sends": g.window_sends,
            "max_age_days": g.max_age.whole_days(),
            "min_volume": g.min_volume,
            "bounce_pause_percent": g.bounce_pause.percent(),
            "complaint_pause_percent": g.complaint_pause.percent(),
            "bounce_warn_percent": g.bounce_warn.map(|p| p.percent()),
            "complaint_warn_percent": g.complaint_warn.map(|p| p.percent()),
        },
        "at_last_pause": {
            "bounce_rate": state.bounce_rate,
            "complaint_rate": state.complaint_rate,
            "bounce_rate_percent": state.bounce_rate.map(percent),
            "complaint_rate_percent": state.complaint_rate.map(percent),
            "sends": state.window_sends,
            "hard_bounces": state.window_hard_bounces,
            "complaints": state.window_complaints,
        },
        "ses": ses,
    }))
}

async fn sending(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(sending_report(&state.store, &state.guard).await?))
}

#[derive(Deserialize)]
struct SetSending {
    state: String,
    by: Option<String>,
    reason: Option<String>,
}

async fn set_sending(
    caller: web::ReqData<Caller>,
    state: web::Data<AppState>,
    PlainJson(body): PlainJson<SetSending>,
) -> Result<HttpResponse, ApiError> {
    let paused = match body.state.as_str() {
        "paused" => true,
        "active" => false,
        other => {
            return Err(ApiError::InvalidRequest(format!(
                "state `{other}` is not paused or active"
            )));
        }
    };
    let reason = required_reason(body.reason.as_deref())?;
    let by = actor(&caller, body.by.as_deref());
    let changed = crate::guard::set_sending(
        &state.store,
        &state.guard,
        paused,
        &by,
        reason,
        state.verifier.clock(),
    )
    .await?;
    let mut report = sending_report(&state.store, &state.guard).await?;
    if let Some(obj) = report.as_object_mut() {
        obj.insert("changed".into(), serde_json::Value::Bool(changed));
    }
    Ok(HttpResponse::Ok().json(report))
}

#[cfg(test)]
mod tests {
    use actix_web::body::{BodySize, MessageBody};

    use super::*;

    fn row(email: &str, note: Option<&str>) -> Suppression {
        let at = Timestamp::parse_rfc3339("2026-11-01T10:00:00.123Z").expect("a time");
        Suppression {
            email: email.into(),
            reason: "bounce".into(),
            bounce_type: Some("Permanent".into()),
            bounce_subtype: None,
            complaint_feedback_type: None,
            diagnostic_code: Some("smtp; 550 5.1.1 \"no\" such\tuser".into()),
            first_seen_at: at,
            last_seen_at: at,
            event_count: 2,
            last_ses_message_id: None,
            last_sns_message_id: None,
            source: "sns".into(),
            note: note.map(str::to_owned),
        }
    }

    /// The answer as it was written before it came in pieces: one value.
    #[derive(Serialize)]
    struct Whole<'a> {
        checked: usize,
        suppressed: Vec<Checked<'a>>,
        invalid: &'a [String],
    }

    /// The answer written slice by slice, as sent, against serde_json's
    /// whole answer for the same rows: byte for byte, and the length the
    /// response announces.
    async fn same_bytes(checked: usize, slices: &[&[(&Suppression, &str)]], invalid: &[String]) {
        let mut answer = CheckAnswer::new(checked);
        for slice in slices {
            answer
                .write_slice(slice.iter().map(|(row, address)| Checked { row, address }))
                .expect("written");
        }
        let body = answer.finish(invalid, ()).expect("finished").into_body();
        let announced = body.size();
        let sent = actix_web::body::to_bytes(body).await.expect("a body");
        let whole = Whole {
            checked,
            suppressed: slices
                .iter()
                .flat_map(|slice| slice.iter())
                .map(|(row, address)| Checked { row, address })
                .collect(),
            invalid,
        };
        let expected = serde_json::to_vec(&whole).expect("json");
        assert_eq!(
            String::from_utf8_lossy(&sent),
            String::from_utf8_lossy(&expected)
        );
        assert_eq!(announced, BodySize::Sized(expected.len() as u64));
    }

    #[tokio::test]
    async fn the_answer_in_pieces_reads_as_one() {
        let a = row("a@example.com", None);
        let b = row("b@example.com", Some("asked \"twice\",\nby ünïcode"));
        let invalid: Vec<String> = vec!["no at sign".into(), "quote\"d\\".into(), "ünï".into()];
        // Nothing given; only invalid ones; nothing suppressed.
        same_bytes(0, &[], &[]).await;
        same_bytes(3, &[], &invalid).await;
        same_bytes(2_000, &[&[], &[]], &[]).await;
        // Rows in the first and third slices only, one address twice.
        same_bytes(
            2_500,
            &[
                &[(&a, "A@Example.com")],
                &[],
                &[(&b, "b@example.com"), (&a, "\"A\" <a@example.com>")],
            ],
            &invalid,
        )
        .await;
    }
}
