//! `POST /sns`: read the body within its cap, parse the envelope, verify it,
//! hand it to the writer, and answer only once it is durably stored.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::web;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::app::AppState;
use crate::error::SnsError;
use crate::ingest::applier::Written;
use crate::ingest::{Accepted, Content, StoreOutcome};
use crate::intake::{Room, SLOW_BODY};
use crate::log_budget::{LeftOut, REFUSALS_LOGGED_A_SECOND, Turn};
use crate::sns::envelope::{Envelope, MessageType, Named};
use crate::telemetry::escaped_word;

pub async fn receive(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    // For the log line, as the sender wrote it (escaped when logged).
    let mut seen = Named::default();
    let mut verified = false;
    let result = handle(&req, &mut payload, &state, &mut seen, &mut verified).await;
    // A refusal may leave the body unread; a message taken was read whole.
    let refused = result.is_err();
    let repeated = matches!(&result, Ok(Written::Applied(applied)) if applied.outcome == StoreOutcome::Duplicate);
    let (response, outcome) = match result {
        Ok(written) => {
            let (status, outcome, body) = match written {
                Written::Applied(applied) => {
                    let outcome = applied.outcome.as_str();
                    let body = match &applied.unrecognized {
                        Some(why) => serde_json::json!({ "status": outcome, "unrecognized": why }),
                        None => serde_json::json!({ "status": outcome }),
                    };
                    (StatusCode::OK, outcome, body)
                }
                Written::Spooled => (
                    StatusCode::ACCEPTED,
                    "spooled",
                    serde_json::json!({ "status": "spooled" }),
                ),
                Written::SetAside => (
                    StatusCode::ACCEPTED,
                    "set_aside",
                    serde_json::json!({ "status": "set_aside" }),
                ),
            };
            (HttpResponse::build(status).json(body), outcome)
        }
        Err(error) => {
            state.metrics.refusal(error.code());
            (error.error_response(), error.code())
        }
    };
    // A label takes only the three types: a refused body's `Type` is the
    // sender's text, and each new value would be a new series.
    let type_label = MessageType::parse(&seen.message_type).map_or("unknown", MessageType::as_str);
    state.metrics.message(type_label, outcome);
    state
        .metrics
        .observe_latency(started.elapsed().as_secs_f64());
    let line = MessageLine {
        seen: &seen,
        outcome,
        status: response.status().as_u16(),
        micros: started.elapsed().as_micros() as u64,
    };
    // Every message taken the first time, or refused after its signature
    // verified (only SNS can send those), is logged. Other refusals, and
    // messages stored before (anyone holding one real message can send it
    // again for as long as SNS_MAX_AGE_SECS allows, while SNS repeats one
    // rarely), are logged within their budget, which is spent only where
    // their lines would be written.
    let budgeted = (refused && !verified) || repeated;
    if budgeted && tracing::enabled!(tracing::Level::INFO) {
        state.refusal_lines.take(
            Instant::now(),
            OffsetDateTime::now_utc(),
            |turn| match turn {
                Turn::Write { left_out } => {
                    if let Some(left) = left_out {
                        report_left_out(left);
                    }
                    line.write();
                }
                Turn::StartLeavingOut => tracing::warn!(
                    per_second = REFUSALS_LOGGED_A_SECOND,
                    "more refused or repeated SNS messages than are logged in a second: \
                     the rest of this second's are counted, not logged"
                ),
                Turn::LeaveOut => {}
            },
        );
    } else {
        line.write();
    }
    if !refused {
        return response;
    }
    response
        .map_body(|_, body| KeepsPayload {
            body,
            _payload: payload,
        })
        .map_into_boxed_body()
}

/// A field in a log line is at most this many bytes once escaped: a
/// sender's `TopicArn` (refused as not allowed, or as unsigned) could
/// otherwise make a line as long as the body cap, and characters that are
/// escaped take up to ten bytes each. Real ids, types and ARNs are shorter.
const LOGGED_BYTES: usize = 256;

/// The one log line of an answer to `POST /sns`.
struct MessageLine<'a> {
    seen: &'a Named,
    outcome: &'a str,
    status: u16,
    micros: u64,
}

impl MessageLine<'_> {
    fn write(&self) {
        tracing::info!(
            message_id = %escaped_word(&self.seen.message_id).within(LOGGED_BYTES),
            message_type = %escaped_word(&self.seen.message_type).within(LOGGED_BYTES),
            topic = %escaped_word(&self.seen.topic_arn).within(LOGGED_BYTES),
            outcome = self.outcome,
            status = self.status,
            micros = self.micros,
            "sns message"
        );
    }
}

/// Says how many refused messages were not logged, and since when.
pub fn report_left_out(left: LeftOut) {
    tracing::warn!(
        left_out = left.count,
        since = %left.since.format(&Rfc3339).unwrap_or_default(),
        "refused or repeated SNS messages not logged \
         (bouncer_sns_refusals_total and bouncer_sns_messages_total count them all)"
    );
}

/// An answer's body that holds the request's payload until the answer is
/// sent. actix-http drains a chunked body whose reader is gone, without a
/// time limit, before it closes or reuses the connection: a client that
/// stalls a chunked body after its 408 would hold the connection (and one
/// of `HTTP_MAX_CONNECTIONS`) for ever. While the reader is there, actix
/// closes a connection whose body is unread, as it does for one with a
/// `Content-Length`. Only refusals need it: a message taken was read to
/// its end.
struct KeepsPayload {
    body: BoxBody,
    _payload: web::Payload,
}

impl MessageBody for KeepsPayload {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

async fn handle(
    req: &HttpRequest,
    payload: &mut web::Payload,
    state: &AppState,
    seen: &mut Named,
    verified: &mut bool,
) -> Result<Written, SnsError> {
    let body = read_body(req, payload, state).await?;
    if header(req, "x-amz-sns-rawdelivery").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(SnsError::RawDelivery);
    }
    // Read as it came: a header holding a byte beyond ASCII is there, and
    // disagrees with `Type`, rather than missing.
    let type_header = req
        .headers()
        .get("x-amz-sns-message-type")
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    let envelope = Envelope::parse(&body, type_header.as_deref())
        .inspect_err(|_| *seen = Named::read(&body))?;
    seen.message_id = envelope.message_id.clone();
    seen.message_type = envelope.message_type.as_str().to_owned();
    seen.topic_arn = envelope.topic_arn.clone();
    let message = state.verifier.verify(envelope, &body).await?;
    *verified = true;
    let mut accepted = Accepted::new(message, false);
    if let Content::SubscriptionConfirmation { confirmed } = &mut accepted.content {
        // A confirmation stored before was confirmed before: do not call SNS
        // again for a redelivery. If the database cannot tell, confirm.
        // While the database is down, do not wait on it: confirming twice
        // is harmless, waiting out a time-out is not.
        let seen = state.writer.database_up()
            && state
                .store
                .message_seen(
                    accepted.message.envelope().timestamp,
                    accepted.message.message_id(),
                )
                .await
                .unwrap_or(false);
        if !seen {
            *confirmed = Some(state.confirmer.confirm(&accepted.message).await?);
        }
    }
    state.writer.write(accepted).await.map_err(|e| {
        tracing::error!(error = %e, "message not kept");
        SnsError::StoreUnavailable
    })
}

fn header<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Reads the body within its time limit and the process's body budget,
/// refusing at once what announces itself too large and stopping as soon as
/// a streamed body passes the cap.
async fn read_body(
    req: &HttpRequest,
    payload: &mut web::Payload,
    state: &AppState,
) -> Result<Vec<u8>, SnsError> {
    let limit = state.max_body_bytes;
    let too_large = SnsError::BodyTooLarge { limit };
    let announced = header(req, "content-length").and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit as u64) {
        return Err(too_large);
    }
    let mut share = state.body_budget.share();
    let cut = || SnsError::BodyCut {
        ms: SLOW_BODY.as_millis() as u64,
    };
    let read = async {
        let mut body = Vec::new();
        loop {
            // The body first: a chunk that is there already is taken
            // without waiting on the cut.
            let next = tokio::select! {
                biased;
                next = payload.next() => next,
                () = share.cut() => return Err(cut()),
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| match e {
                // A hang-up or a broken connection, counted apart from a
                // sender's malformed body.
                PayloadError::Incomplete(_) | PayloadError::Io(_) => {
                    SnsError::BodyIncomplete(e.to_string())
                }
                e => SnsError::MalformedJson(format!("body could not be read: {e}")),
            })?;
            if body.len() + chunk.len() > limit {
                return Err(too_large);
            }
            match share.grow(chunk.len()).await {
                Room::Granted => {}
                Room::Full => return Err(SnsError::Busy),
                Room::Cut => return Err(cut()),
            }
            let needed = body.len() + chunk.len();
            if needed > body.capacity() {
                // Sized for the length announced once an eighth of it has
                // come; doubled before that, and for a chunked body. Grown
                // by doubling all the way, a flood of 500 KB bodies left
                // the allocator holding every size they passed through
                // (16 clients: 21 to 76-90 MB; about 50 sized once). Not
                // at once: a head that announces 512 KiB and sends a byte
                // would hold 512 KiB of address space. The budget goes on
                // counting the bytes received: charged what it announces,
                // a client could fill it with a few dozen heads and make
                // real messages wait a second each for them to be cut.
                let size = match announced.map(|len| len as usize) {
                    Some(len) if len <= needed.saturating_mul(8) => len.max(needed),
                    _ => needed.max(body.capacity() * 2).min(limit),
                };
                body.reserve_exact(size - body.len());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| SnsError::BodyTimeout {
            ms: state.body_timeout.as_millis() as u64,
        })??;
    if body.is_empty() {
        return Err(SnsError::MalformedJson("the body is empty".into()));
    }
    Ok(body)
}
