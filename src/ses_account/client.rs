//! The SESv2 calls bouncer makes, through aws-sdk-sesv2 with the shared SDK
//! configuration (`crate::aws`), and what each failure means: throttled or
//! unavailable (try again later), denied (a permission is missing), refused
//! (the request itself is wrong), or not found.

use std::time::Duration;

use aws_sdk_sesv2::config::Region;
use aws_sdk_sesv2::config::retry::RetryConfig;
use aws_sdk_sesv2::config::timeout::TimeoutConfig;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::primitives::DateTime;
use aws_sdk_sesv2::types::SuppressionListReason;

use crate::metrics::Metrics;
use crate::store::ses::SendingTarget;
use crate::time::Timestamp;

/// What a failed call means for whoever made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// 429 / `TooManyRequestsException`: slow down and try again.
    Throttled,
    /// 5xx, time-outs, no connection, no credentials: may pass.
    Unavailable,
    /// 401/403: the credentials lack a permission (or are not valid).
    Denied,
    /// Another 4xx (`BadRequestException`): this request will never succeed.
    Refused,
    /// 404 / `NotFoundException`.
    NotFound,
}

impl FailureKind {
    /// The outcome label of `bouncer_ses_calls_total`.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Throttled => "throttled",
            FailureKind::Unavailable => "unavailable",
            FailureKind::Denied => "denied",
            FailureKind::Refused => "refused",
            FailureKind::NotFound => "not_found",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed: {detail}")]
pub struct SesFailure {
    pub operation: &'static str,
    pub kind: FailureKind,
    /// The AWS error code, when SES gave one.
    pub code: Option<String>,
    pub detail: String,
}

/// SES's own view of the account (`GetAccount`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountView {
    pub sending_enabled: bool,
    pub enforcement_status: Option<String>,
    pub production_access_enabled: bool,
    /// The reasons SES itself adds addresses to the account list for.
    pub suppressed_reasons: Vec<String>,
}

/// One entry of the account-level suppression list.
#[derive(Debug, Clone)]
pub struct Listed {
    pub email: String,
    pub reason: String,
    pub last_update: Timestamp,
}

/// Filters of `ListSuppressedDestinations`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// `BOUNCE`, `COMPLAINT`; empty: both.
    pub reasons: Vec<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

pub struct SesClient {
    client: aws_sdk_sesv2::Client,
    region: String,
    metrics: Metrics,
}

/// Calls taking longer than this count as unavailable (well inside the
/// workers' 60-second leases).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(20);

impl SesClient {
    /// `sdk_retries`: let the SDK retry throttling itself (the CLI); the
    /// worker retries durably instead and wants each failure back at once.
    pub async fn new(
        region: &str,
        endpoint: Option<&str>,
        credentials: Option<aws_credential_types::Credentials>,
        sdk_retries: bool,
        metrics: Metrics,
    ) -> SesClient {
        let shared = crate::aws::load_sdk_config(region, credentials).await;
        let retry = if sdk_retries {
            RetryConfig::standard().with_max_attempts(5)
        } else {
            RetryConfig::disabled()
        };
        let mut builder = aws_sdk_sesv2::config::Builder::from(&shared)
            .region(Region::new(region.to_owned()))
            .retry_config(retry)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(CALL_TIMEOUT)
                    .build(),
            );
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        SesClient {
            client: aws_sdk_sesv2::Client::from_conf(builder.build()),
            region: region.to_owned(),
            metrics,
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Counts the call and turns its error into a [`SesFailure`].
    fn outcome<T, E>(
        &self,
        operation: &'static str,
        result: Result<T, SdkError<E, aws_sdk_sesv2::config::http::HttpResponse>>,
    ) -> Result<T, SesFailure>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let failure = result.map_err(|e| classify(operation, &e));
        let label = match &failure {
            Ok(_) => "ok",
            Err(f) => f.kind.label(),
        };
        self.metrics.ses_call(operation, label);
        failure
    }

    /// Enables or disables sending at `target`.
    pub async fn set_sending(
        &self,
        target: &SendingTarget,
        enabled: bool,
    ) -> Result<(), SesFailure> {
        match target {
            SendingTarget::Account => {
                let result = self
                    .client
                    .put_account_sending_attributes()
                    .sending_enabled(enabled)
                    .send()
                    .await;
                self.outcome("PutAccountSendingAttributes", result)
                    .map(|_| ())
            }
            SendingTarget::ConfigurationSet(name) => {
                let result = self
                    .client
                    .put_configuration_set_sending_options()
                    .configuration_set_name(name)
                    .sending_enabled(enabled)
                    .send()
                    .await;
                self.outcome("PutConfigurationSetSendingOptions", result)
                    .map(|_| ())
            }
        }
    }

    /// Whether sending is enabled at `target`, as SES says now.
    pub async fn sending_enabled(&self, target: &SendingTarget) -> Result<bool, SesFailure> {
        match target {
            SendingTarget::Account => self.account().await.map(|a| a.sending_enabled),
            SendingTarget::ConfigurationSet(name) => {
                let result = self
                    .client
                    .get_configuration_set()
                    .configuration_set_name(name)
                    .send()
                    .await;
                self.outcome("GetConfigurationSet", result).map(|out| {
                    // No SendingOptions: SES's default, enabled.
                    out.sending_options().is_none_or(|o| o.sending_enabled())
                })
            }
        }
    }

    pub async fn account(&self) -> Result<AccountView, SesFailure> {
        let result = self.client.get_account().send().await;
        self.outcome("GetAccount", result).map(|out| AccountView {
            sending_enabled: out.sending_enabled(),
            enforcement_status: out.enforcement_status().map(str::to_owned),
            production_access_enabled: out.production_access_enabled(),
            suppressed_reasons: out
                .suppression_attributes()
                .map(|s| {
                    s.suppressed_reasons()
                        .iter()
                        .map(|r| r.as_str().to_owned())
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Puts `email` on the account-level list with `reason` (`BOUNCE` or
    /// `COMPLAINT`).
    pub async fn put_suppressed(&self, email: &str, reason: &str) -> Result<(), SesFailure> {
        let result = self
            .client
            .put_suppressed_destination()
            .email_address(email)
            .reason(SuppressionListReason::from(reason))
            .send()
            .await;
        self.outcome("PutSuppressedDestination", result).map(|_| ())
    }

    pub async fn delete_suppressed(&self, email: &str) -> Result<(), SesFailure> {
        let result = self
            .client
            .delete_suppressed_destination()
            .email_address(email)
            .send()
            .await;
        self.outcome("DeleteSuppressedDestination", result)
            .map(|_| ())
    }

    /// One page of the account-level list (at most `page_size`, up to
    /// 1,000), and the token of the next page.
    pub async fn list_suppressed(
        &self,
        filter: &ListFilter,
        page_size: i32,
        next_token: Option<String>,
    ) -> Result<(Vec<Listed>, Option<String>), SesFailure> {
        let mut request = self
            .client
            .list_suppressed_destinations()
            .page_size(page_size)
            .set_next_token(next_token);
        for reason in &filter.reasons {
            request = request.reasons(SuppressionListReason::from(reason.as_str()));
        }
        if let Some(since) = filter.since {
            request = request.start_date(DateTime::from_millis(since.unix_millis()));
        }
        if let Some(until) = filter.until {
            request = request.end_date(DateTime::from_millis(until.unix_millis()));
        }
        let out = self.outcome("ListSuppressedDestinations", request.send().await)?;
        let listed = out
            .suppressed_destination_summaries()
            .iter()
            .map(|s| Listed {
                email: s.email_address().to_owned(),
                reason: s.reason().as_str().to_owned(),
                last_update: s
                    .last_update_time()
                    .to_millis()
                    .ok()
                    .and_then(Timestamp::from_unix_millis)
                    .unwrap_or_else(|| Timestamp::from_datetime(time::OffsetDateTime::UNIX_EPOCH)),
            })
            .collect();
        Ok((listed, out.next_token().map(str::to_owned)))
    }
}

/// An error and its sources, `: `-joined (without the Debug dump that
/// `DisplayErrorContext` appends).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let next = inner.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = inner.source();
    }
    text
}

fn classify<E>(
    operation: &'static str,
    error: &SdkError<E, aws_sdk_sesv2::config::http::HttpResponse>,
) -> SesFailure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = error.code().map(str::to_owned);
    let kind = match (code.as_deref(), status) {
        (Some("TooManyRequestsException" | "ThrottlingException" | "Throttling"), _)
        | (_, Some(429)) => FailureKind::Throttled,
        (Some("NotFoundException"), _) | (_, Some(404)) => FailureKind::NotFound,
        (
            Some(
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "SignatureDoesNotMatch",
            ),
            _,
        )
        | (_, Some(401 | 403)) => FailureKind::Denied,
        (_, Some(s)) if (400..500).contains(&s) => FailureKind::Refused,
        _ => FailureKind::Unavailable,
    };
    let detail = match (&code, error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.clone(),
        _ => chain(error),
    };
    SesFailure {
        operation,
        kind,
        code,
        detail,
    }
}
