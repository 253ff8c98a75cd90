//! Confirming a subscription: the SNS `ConfirmSubscription` API through
//! aws-sdk-sns (`sdk`), a GET of the checked SubscribeURL (`url`), or only
//! recording it (`off`). `auto` picks `sdk` when the standard AWS credential
//! chain yields credentials, else `url`, once, at the first confirmation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_sns::config::Region;
use aws_sdk_sns::config::timeout::TimeoutConfig;
use aws_sdk_sns::error::SdkError;
use tokio::sync::OnceCell;

use super::cert_url::check_subscribe_url;
use super::envelope::TypeFields;
use super::region::TopicArn;
use super::verify::VerifiedMessage;
use crate::error::SnsError;
use crate::outbound::{OutboundOverrides, http_client};
use crate::telemetry::{escaped, escaped_word};

/// The longest a confirmation through the SDK may take, retries included:
/// well within the ~15 s SNS waits for an answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfirmMode {
    Auto,
    Sdk,
    Url,
    Off,
}

impl ConfirmMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfirmMode::Auto => "auto",
            ConfirmMode::Sdk => "sdk",
            ConfirmMode::Url => "url",
            ConfirmMode::Off => "off",
        }
    }
}

/// The result of a confirmation that went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub mode: ConfirmMode,
    /// The subscription's ARN, when SNS told it (`off` does not ask).
    pub subscription_arn: Option<String>,
}

pub struct Confirmer {
    mode: ConfirmMode,
    resolved: OnceCell<ConfirmMode>,
    sdk_config: OnceCell<aws_config::SdkConfig>,
    clients: Mutex<HashMap<String, aws_sdk_sns::Client>>,
    endpoint: Option<String>,
    url_client: reqwest::Client,
    credentials: Option<aws_credential_types::Credentials>,
}

/// Only the start of a token goes into logs: the whole one could confirm
/// (or, for an unsubscribe, undo) a subscription.
pub fn redact_token(token: &str) -> String {
    format!("{}…", token.chars().take(8).collect::<String>())
}

impl Confirmer {
    pub fn new(
        mode: ConfirmMode,
        endpoint: Option<String>,
        outbound: &OutboundOverrides,
        credentials: Option<aws_credential_types::Credentials>,
    ) -> anyhow::Result<Confirmer> {
        Ok(Confirmer {
            mode,
            resolved: OnceCell::new(),
            sdk_config: OnceCell::new(),
            clients: Mutex::new(HashMap::new()),
            endpoint,
            url_client: http_client(outbound, Duration::from_secs(10), true)?,
            credentials,
        })
    }

    async fn sdk_config(&self) -> &aws_config::SdkConfig {
        self.sdk_config
            .get_or_init(|| {
                // The region of each call comes from the topic ARN.
                crate::aws::load_sdk_config("us-east-1", self.credentials.clone())
            })
            .await
    }

    /// `auto` becomes `sdk` if credentials can be had within 5 seconds.
    async fn mode(&self) -> ConfirmMode {
        if self.mode != ConfirmMode::Auto {
            return self.mode;
        }
        *self
            .resolved
            .get_or_init(|| async {
                use aws_credential_types::provider::ProvideCredentials;
                let found = match self.sdk_config().await.credentials_provider() {
                    Some(provider) => {
                        tokio::time::timeout(Duration::from_secs(5), provider.provide_credentials())
                            .await
                            .is_ok_and(|r| r.is_ok())
                    }
                    None => false,
                };
                let mode = if found {
                    ConfirmMode::Sdk
                } else {
                    ConfirmMode::Url
                };
                tracing::info!(mode = mode.as_str(), "SNS_CONFIRM_MODE=auto resolved");
                mode
            })
            .await
    }

    async fn client(&self, region: &str) -> aws_sdk_sns::Client {
        if let Some(client) = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(region)
        {
            return client.clone();
        }
        // SNS waits about 15 s for our answer: a confirmation that cannot
        // finish within CALL_TIMEOUT (retries included) is answered 503 in
        // time for SNS to send it again, not left hanging.
        let mut builder = aws_sdk_sns::config::Builder::from(self.sdk_config().await)
            .region(Region::new(region.to_owned()))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_timeout(CALL_TIMEOUT)
                    .build(),
            );
        if let Some(endpoint) = &self.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let client = aws_sdk_sns::Client::from_conf(builder.build());
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(region.to_owned(), client.clone());
        client
    }

    /// Confirms the subscription a verified `SubscriptionConfirmation` asks
    /// for. Transient failures are 503 (SNS sends the message again).
    pub async fn confirm(&self, message: &VerifiedMessage) -> Result<Confirmed, SnsError> {
        let TypeFields::Subscription {
            token,
            subscribe_url,
        } = &message.envelope().fields
        else {
            return Err(SnsError::Internal("not a subscription message".into()));
        };
        let topic = message.topic_arn();
        let mode = self.mode().await;
        let result = match mode {
            ConfirmMode::Off | ConfirmMode::Auto => Ok(None),
            ConfirmMode::Sdk | ConfirmMode::Url => match parse_topic(topic) {
                Err(e) => Err(e),
                Ok(arn) if mode == ConfirmMode::Sdk => {
                    self.confirm_with_sdk(&arn, topic, token).await.map(Some)
                }
                Ok(arn) => self.confirm_with_url(&arn, subscribe_url).await,
            },
        };
        match &result {
            // Nothing was asked of SNS: the subscription stays pending
            // until someone confirms it (`/v1/subscriptions` says so too).
            Ok(_) if mode == ConfirmMode::Off => {
                tracing::info!(topic = %escaped_word(topic), mode = mode.as_str(), token = %escaped_word(&redact_token(token)), "subscription left pending: SNS_CONFIRM_MODE is off; confirm it by hand in the SNS console")
            }
            Ok(arn) => {
                tracing::info!(topic = %escaped_word(topic), mode = mode.as_str(), token = %escaped_word(&redact_token(token)), subscription_arn = %escaped_word(arn.as_deref().unwrap_or_default()), "subscription confirmed")
            }
            Err(e) => {
                tracing::warn!(topic = %escaped_word(topic), mode = mode.as_str(), token = %escaped_word(&redact_token(token)), error = %escaped(&e.to_string()), "subscription confirmation failed")
            }
        }
        result.map(|subscription_arn| Confirmed {
            mode,
            subscription_arn,
        })
    }

    async fn confirm_with_sdk(
        &self,
        topic_arn: &TopicArn,
        topic: &str,
        token: &str,
    ) -> Result<String, SnsError> {
        let output = self
            .client(topic_arn.region().as_str())
            .await
            .confirm_subscription()
            .topic_arn(topic)
            .token(token)
            .authenticate_on_unsubscribe("true")
            .send()
            .await
            .map_err(|e| {
                use aws_sdk_sns::error::ProvideErrorMetadata;
                // No HTTP answer at all (time-out, connection) may pass.
                let status = e.raw_response().map(|r| r.status().as_u16());
                // What SNS said, not the SDK's dump of its answer (which the
                // 503's body would carry to whoever sent the message).
                let why = match (status, e.code()) {
                    (Some(status), Some(code)) => format!(
                        "ConfirmSubscription failed: SNS answered {status} {code}: {}",
                        e.message().unwrap_or_default()
                    ),
                    (Some(status), None) => {
                        format!("ConfirmSubscription failed: the SNS endpoint answered {status}")
                    }
                    (None, _) if matches!(e, SdkError::TimeoutError(_)) => format!(
                        "ConfirmSubscription failed: SNS did not answer within {} s",
                        CALL_TIMEOUT.as_secs()
                    ),
                    (None, _) => format!(
                        "ConfirmSubscription failed: {}",
                        aws_sdk_sns::error::DisplayErrorContext(&e)
                    ),
                };
                confirmation_failure(status, e.code(), why)
            })?;
        Ok(output.subscription_arn().unwrap_or_default().to_owned())
    }

    async fn confirm_with_url(
        &self,
        topic_arn: &TopicArn,
        subscribe_url: &str,
    ) -> Result<Option<String>, SnsError> {
        let url = check_subscribe_url(subscribe_url, topic_arn.region()).map_err(|why| {
            SnsError::BadUrl {
                field: "SubscribeURL",
                why,
            }
        })?;
        let response = self.url_client.get(url).send().await.map_err(|e| {
            SnsError::ConfirmationUnavailable(format!("SubscribeURL: {}", e.without_url()))
        })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            return Ok(xml_value(&body, "SubscriptionArn"));
        }
        let code = xml_value(&body, "Code");
        let why = match &code {
            Some(code) => format!("SubscribeURL answered {status} ({code})"),
            None => format!("SubscribeURL answered {status}"),
        };
        Err(confirmation_failure(
            Some(status.as_u16()),
            code.as_deref(),
            why,
        ))
    }
}

/// SNS error codes that may pass on a retry, whatever the HTTP status (SNS
/// answers throttling with 400 `Throttling`).
const TRANSIENT_CODES: [&str; 9] = [
    "Throttling",
    "ThrottlingException",
    "Throttled",
    "RequestThrottled",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
];

/// Sorts a failed confirmation, by HTTP status first and SNS error code
/// second: a 5xx or 429 may pass, whoever answered it (SNS, or a proxy or VPC
/// endpoint in between, with no SNS error body); another 4xx is SNS refusing
/// (an expired token, no permission) unless its code is transient; no answer
/// at all may pass. What may pass is 503 `confirmation_unavailable`, so that
/// SNS sends the confirmation again.
fn confirmation_failure(status: Option<u16>, code: Option<&str>, why: String) -> SnsError {
    let transient_code = code.is_some_and(|c| TRANSIENT_CODES.contains(&c));
    match status {
        Some(500..=599 | 429) => SnsError::ConfirmationUnavailable(why),
        Some(400..=499) if !transient_code => SnsError::ConfirmationRefused(why),
        _ => SnsError::ConfirmationUnavailable(why),
    }
}

/// The text of the first `<name>...</name>` element.
fn xml_value(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + end].trim().to_owned()).filter(|v| !v.is_empty())
}

/// The topic a confirmation is for, which names the region to confirm in.
fn parse_topic(topic: &str) -> Result<TopicArn, SnsError> {
    TopicArn::parse(topic).map_err(|why| SnsError::MalformedField {
        field: "TopicArn",
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_sorted_by_status_first_and_code_second() {
        let sorted = |status, code| confirmation_failure(status, code, String::new()).code();
        for (status, code) in [
            (Some(502), None),
            (Some(503), None),
            (Some(504), None),
            (Some(500), Some("InvalidParameter")),
            (Some(429), None),
            (Some(400), Some("Throttling")),
            (None, None),
        ] {
            assert_eq!(
                sorted(status, code),
                "confirmation_unavailable",
                "{status:?} {code:?}"
            );
        }
        for (status, code) in [
            (Some(400), Some("InvalidParameter")),
            (Some(403), Some("AuthorizationError")),
            (Some(404), Some("NotFound")),
            (Some(400), None),
        ] {
            assert_eq!(
                sorted(status, code),
                "confirmation_refused",
                "{status:?} {code:?}"
            );
        }
    }

    #[test]
    fn tokens_are_redacted() {
        assert_eq!(redact_token("2336412f37fb687f5d51e6e2425"), "2336412f…");
    }
}
