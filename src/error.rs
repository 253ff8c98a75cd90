//! Every failure a client can see, with its HTTP status and stable error code,
//! in one place. The README lists the codes; tests assert on them.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::store::{DbError, DbErrorKind};

/// Why `POST /sns` did not accept a message.
///
/// 4xx: the message can never succeed (SNS does not retry).
/// 5xx: a failure on our side or upstream that a retry may cure.
#[derive(Debug, thiserror::Error)]
pub enum SnsError {
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body did not arrive within HTTP_BODY_TIMEOUT_MS ({ms} ms)")]
    BodyTimeout { ms: u64 },
    #[error(
        "the request body was still arriving after {ms} ms while the memory for request bodies was full; it was cut to make room for others"
    )]
    BodyCut { ms: u64 },
    #[error("too many request bodies are being received at once; send it again later")]
    Busy,
    /// The client went away or the connection broke before the body's end:
    /// nothing the sender wrote was wrong, and no one reads the answer.
    #[error("the request body ended early: {0}")]
    BodyIncomplete(String),
    #[error(
        "raw message delivery is on for this subscription: the body carries no signature and cannot be verified; turn raw message delivery off"
    )]
    RawDelivery,
    #[error("body is not a JSON object: {0}")]
    MalformedJson(String),
    #[error("missing or empty field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` is malformed: {why}")]
    MalformedField { field: &'static str, why: String },
    #[error(
        "unknown message Type `{0}`; expected Notification, SubscriptionConfirmation or UnsubscribeConfirmation"
    )]
    UnknownType(String),
    #[error("header x-amz-sns-message-type is missing")]
    MissingTypeHeader,
    #[error("header x-amz-sns-message-type `{header}` disagrees with Type `{body}`")]
    TypeMismatch { header: String, body: String },
    #[error("topic `{0}` is not in SNS_TOPIC_ARNS")]
    TopicNotAllowed(String),
    #[error("no SNS topic is configured (SNS_TOPIC_ARNS is empty): every message is refused")]
    NoTopicConfigured,
    #[error("SignatureVersion `{0}` is not supported; expected 1 or 2")]
    UnsupportedSignatureVersion(String),
    #[error("SignatureVersion 1 is refused by SNS_REQUIRE_SIGNATURE_V2")]
    SignatureVersionRefused,
    #[error("{field} is refused: {why}")]
    BadUrl { field: &'static str, why: String },
    #[error(
        "SigningCertURL names region {url_region}, but the topic is in {topic_region}: SNS signs with its topic's region's certificate"
    )]
    CertificateRegionMismatch {
        topic_region: String,
        url_region: String,
    },
    #[error("message Timestamp {0} is older than SNS_MAX_AGE_SECS allows")]
    TooOld(String),
    #[error("message Timestamp {0} is further in the future than SNS_MAX_FUTURE_SECS allows")]
    FromFuture(String),
    #[error("signing certificate is not usable: {0}")]
    CertificateInvalid(String),
    #[error("signing certificate could not be fetched: {0}")]
    CertificateUnavailable(String),
    #[error("signature does not verify: {0}")]
    BadSignature(&'static str),
    #[error("subscription not confirmed, SNS may send it again: {0}")]
    ConfirmationUnavailable(String),
    #[error("subscription confirmation refused: {0}")]
    ConfirmationRefused(String),
    #[error("the message could not be stored now; send it again later")]
    StoreUnavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

impl SnsError {
    /// The stable code in the JSON body (`{"error": code, "detail": ...}`).
    pub fn code(&self) -> &'static str {
        match self {
            SnsError::BodyTooLarge { .. } => "body_too_large",
            SnsError::BodyTimeout { .. } => "body_timeout",
            SnsError::BodyCut { .. } => "body_too_slow",
            SnsError::Busy => "server_busy",
            SnsError::BodyIncomplete(_) => "body_incomplete",
            SnsError::RawDelivery => "raw_delivery_not_supported",
            SnsError::MalformedJson(_) => "malformed_json",
            SnsError::MissingField(_) => "missing_field",
            SnsError::MalformedField { .. } => "malformed_field",
            SnsError::UnknownType(_) => "unknown_message_type",
            SnsError::MissingTypeHeader => "missing_message_type_header",
            SnsError::TypeMismatch { .. } => "message_type_mismatch",
            SnsError::TopicNotAllowed(_) => "topic_not_allowed",
            SnsError::NoTopicConfigured => "no_topic_configured",
            SnsError::UnsupportedSignatureVersion(_) => "unsupported_signature_version",
            SnsError::SignatureVersionRefused => "signature_version_refused",
            SnsError::BadUrl {
                field: "SubscribeURL",
                ..
            } => "bad_subscribe_url",
            SnsError::BadUrl { .. } => "bad_certificate_url",
            SnsError::CertificateRegionMismatch { .. } => "certificate_region_mismatch",
            SnsError::TooOld(_) => "message_too_old",
            SnsError::FromFuture(_) => "message_from_future",
            SnsError::CertificateInvalid(_) => "certificate_invalid",
            SnsError::CertificateUnavailable(_) => "certificate_unavailable",
            SnsError::BadSignature(_) => "bad_signature",
            SnsError::ConfirmationUnavailable(_) => "confirmation_unavailable",
            SnsError::ConfirmationRefused(_) => "confirmation_refused",
            SnsError::StoreUnavailable => "store_unavailable",
            SnsError::Internal(_) => "internal_error",
        }
    }
}

impl ResponseError for SnsError {
    fn status_code(&self) -> StatusCode {
        match self {
            SnsError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            SnsError::BodyTimeout { .. } | SnsError::BodyCut { .. } => StatusCode::REQUEST_TIMEOUT,
            SnsError::RawDelivery
            | SnsError::BodyIncomplete(_)
            | SnsError::MalformedJson(_)
            | SnsError::MissingField(_)
            | SnsError::MalformedField { .. }
            | SnsError::UnknownType(_)
            | SnsError::MissingTypeHeader
            | SnsError::TypeMismatch { .. }
            | SnsError::UnsupportedSignatureVersion(_)
            | SnsError::ConfirmationRefused(_) => StatusCode::BAD_REQUEST,
            SnsError::TopicNotAllowed(_)
            | SnsError::NoTopicConfigured
            | SnsError::SignatureVersionRefused
            | SnsError::BadUrl { .. }
            | SnsError::CertificateRegionMismatch { .. }
            | SnsError::TooOld(_)
            | SnsError::FromFuture(_)
            | SnsError::CertificateInvalid(_)
            | SnsError::BadSignature(_) => StatusCode::FORBIDDEN,
            SnsError::CertificateUnavailable(_) => StatusCode::BAD_GATEWAY,
            SnsError::StoreUnavailable | SnsError::ConfirmationUnavailable(_) | SnsError::Busy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            SnsError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = error_body(self.status_code(), self.code(), &self.to_string());
        if matches!(
            self,
            SnsError::BodyTimeout { .. }
                | SnsError::BodyCut { .. }
                | SnsError::BodyTooLarge { .. }
                | SnsError::BodyIncomplete(_)
        ) {
            // The rest of the body is not read: the connection cannot carry
            // another request.
            response
                .head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
        }
        response
    }
}

/// The JSON body every failure answers with.
pub fn error_body(status: StatusCode, code: &str, detail: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": code, "detail": detail }))
}

/// Why a `/v1` API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid `Authorization: Bearer <token>` header is required")]
    Unauthorized,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidAddress(String),
    #[error("at most {limit} addresses per call, got {got}")]
    TooManyAddresses { limit: usize, got: usize },
    #[error("{0} is not on the suppression list")]
    NotSuppressed(String),
    #[error("a removal, a pause and a resume need `reason` (why); `by` (who) is recorded with it")]
    ReasonRequired,
    #[error("refused as a cross-site request: {0}")]
    CrossSite(String),
    #[error(
        "Host `{0}` is not a loopback name: with no API_TOKENS the admin listener answers only requests sent to localhost (or a name under .localhost) or a loopback IP address"
    )]
    HostNotLoopback(String),
    #[error("no such path on this listener: {0}")]
    NoSuchPath(String),
    #[error("the database is unavailable now; try again later")]
    DatabaseUnavailable {
        /// A lock or a conflict that passes in moments, not an outage.
        passes_soon: bool,
    },
    #[error(
        "another transaction is writing the suppression list (a CSV import, say), and a removal waits for it at most 1 s; nothing was changed: try again in a moment"
    )]
    ListBusy,
    #[error("the body did not arrive within {ms} ms (HTTP_BODY_TIMEOUT_MS)")]
    BodyTimeout { ms: u64 },
    #[error("the body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("a body with Content-Encoding `{got}` is not read: this call takes {takes}")]
    UnsupportedEncoding {
        got: String,
        /// What the call takes, as said to the client.
        takes: &'static str,
        /// The codings it takes, for the `Accept-Encoding` header.
        accept: &'static str,
    },
    #[error("other batch checks' bodies fill the memory set aside for them; try again in a moment")]
    Busy,
    #[error("internal error; the server's log has the details")]
    Internal,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidAddress(_) => "invalid_address",
            ApiError::TooManyAddresses { .. } => "too_many_addresses",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::UnsupportedEncoding { .. } => "unsupported_encoding",
            ApiError::Busy => "server_busy",
            ApiError::NotSuppressed(_) => "not_suppressed",
            ApiError::ReasonRequired => "reason_required",
            ApiError::CrossSite(_) => "cross_site_request",
            ApiError::HostNotLoopback(_) => "host_not_loopback",
            ApiError::NoSuchPath(_) => "not_found",
            ApiError::DatabaseUnavailable { .. } => "database_unavailable",
            ApiError::ListBusy => "list_busy",
            ApiError::Internal => "internal_error",
        }
    }
}

impl From<DbError> for ApiError {
    /// The client learns whether to retry; the driver's words go to the log.
    fn from(e: DbError) -> Self {
        match e.kind() {
            DbErrorKind::Unavailable | DbErrorKind::Transient => {
                tracing::warn!(error = %e, "API: database unavailable");
                ApiError::DatabaseUnavailable {
                    passes_soon: e.passes_soon(),
                }
            }
            DbErrorKind::Content | DbErrorKind::Other => {
                tracing::error!(error = %e, "API: database error");
                ApiError::Internal
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::InvalidRequest(_)
            | ApiError::InvalidAddress(_)
            | ApiError::TooManyAddresses { .. }
            | ApiError::ReasonRequired => StatusCode::BAD_REQUEST,
            ApiError::NotSuppressed(_) | ApiError::NoSuchPath(_) => StatusCode::NOT_FOUND,
            ApiError::CrossSite(_) | ApiError::HostNotLoopback(_) => StatusCode::FORBIDDEN,
            ApiError::DatabaseUnavailable { .. } | ApiError::ListBusy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedEncoding { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = error_body(self.status_code(), self.code(), &self.to_string());
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(
                actix_web::http::header::WWW_AUTHENTICATE,
                actix_web::http::header::HeaderValue::from_static("Bearer"),
            );
        }
        if matches!(
            self,
            ApiError::ListBusy
                | ApiError::Busy
                | ApiError::DatabaseUnavailable { passes_soon: true }
        ) {
            // What passes within moments (a lock, a crowd of checks, a
            // conflict) says so: clients that honour the header (urllib3's
            // `Retry`, for one) ask again in a second. A database that is
            // down or refuses bouncer gets no hint: there, a client's own
            // backoff is the better guide.
            response.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static("1"),
            );
        }
        if let ApiError::UnsupportedEncoding { accept, .. } = self {
            // RFC 9110, 15.5.16: a refused content coding names the ones
            // taken.
            response.headers_mut().insert(
                actix_web::http::header::ACCEPT_ENCODING,
                actix_web::http::header::HeaderValue::from_static(accept),
            );
        }
        if matches!(
            self,
            ApiError::BodyTimeout { .. }
                | ApiError::BodyTooLarge { .. }
                | ApiError::UnsupportedEncoding { .. }
        ) {
            // The rest of the body is not read: the connection cannot carry
            // another request.
            response
                .head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_passes_in_moments_says_when_to_try_again() {
        for error in [
            ApiError::DatabaseUnavailable { passes_soon: true },
            ApiError::ListBusy,
            ApiError::Busy,
        ] {
            let response = error.error_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            let retry = response
                .headers()
                .get(actix_web::http::header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            assert_eq!(retry.as_deref(), Some("1"), "{}", error.code());
        }
        for error in [
            ApiError::DatabaseUnavailable { passes_soon: false },
            ApiError::Internal,
            ApiError::NotSuppressed("a@example.com".into()),
            ApiError::Unauthorized,
        ] {
            let response = error.error_response();
            assert!(
                response
                    .headers()
                    .get(actix_web::http::header::RETRY_AFTER)
                    .is_none(),
                "{}: asking again in a second would not help",
                error.code()
            );
        }
    }
}
