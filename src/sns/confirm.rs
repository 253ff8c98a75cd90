//! Confirming a subscription: the SNS `ConfirmSubscription` API through
//! aws-sdk-sns (`sdk`), a GET of the checked SubscribeURL (`url`), or only
//! recording it (`off`). `auto` picks `sdk` when the standard AWS credential
//! chain yields credentials, else `url`, once, at the first confirmation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_sns::config::Region;
use tokio::sync::OnceCell;

use super::cert_url::check_subscribe_url;
use super::envelope::TypeFields;
use super::verify::VerifiedMessage;
use crate::error::SnsError;
use crate::outbound::{OutboundOverrides, http_client};

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

/// `arn:aws:sns:us-east-1:123456789012:topic` → `us-east-1`.
pub fn region_of(topic_arn: &str) -> Option<&str> {
    let mut parts = topic_arn.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_partition), Some("sns"), Some(region)) if !region.is_empty() => {
            Some(region)
        }
        _ => None,
    }
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
        let mut builder = aws_sdk_sns::config::Builder::from(self.sdk_config().await)
            .region(Region::new(region.to_owned()));
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
            ConfirmMode::Sdk => self.confirm_with_sdk(topic, token).await.map(Some),
            ConfirmMode::Url => self.confirm_with_url(subscribe_url).await,
        };
        match &result {
            Ok(arn) => {
                tracing::info!(topic, mode = mode.as_str(), token = %redact_token(token), subscription_arn = ?arn, "subscription confirmed")
            }
            Err(e) => {
                tracing::warn!(topic, mode = mode.as_str(), token = %redact_token(token), error = %e, "subscription confirmation failed")
            }
        }
        result.map(|subscription_arn| Confirmed {
            mode,
            subscription_arn,
        })
    }

    async fn confirm_with_sdk(&self, topic: &str, token: &str) -> Result<String, SnsError> {
        let region = region_of(topic).ok_or_else(|| SnsError::MalformedField {
            field: "TopicArn",
            why: "not an SNS topic ARN with a region".into(),
        })?;
        let output = self
            .client(region)
            .await
            .confirm_subscription()
            .topic_arn(topic)
            .token(token)
            .authenticate_on_unsubscribe("true")
            .send()
            .await
            .map_err(|e| {
                use aws_sdk_sns::error::ProvideErrorMetadata;
                let service_error = e.as_service_error().is_some();
                let code = e.code().unwrap_or_default().to_owned();
                let why = format!(
                    "ConfirmSubscription failed: {}",
                    aws_sdk_sns::error::DisplayErrorContext(&e)
                );
                // Throttling and server-side trouble may pass; a refusal by
                // SNS (expired token, no permission) will not.
                if service_error
                    && !matches!(
                        code.as_str(),
                        "Throttling"
                            | "ThrottlingException"
                            | "InternalError"
                            | "InternalFailure"
                            | "ServiceUnavailable"
                    )
                {
                    SnsError::ConfirmationRefused(why)
                } else {
                    SnsError::ConfirmationUnavailable(why)
                }
            })?;
        Ok(output.subscription_arn().unwrap_or_default().to_owned())
    }

    async fn confirm_with_url(&self, subscribe_url: &str) -> Result<Option<String>, SnsError> {
        let url = check_subscribe_url(subscribe_url).map_err(|why| SnsError::BadUrl {
            field: "SubscribeURL",
            why,
        })?;
        let response = self.url_client.get(url).send().await.map_err(|e| {
            SnsError::ConfirmationUnavailable(format!("SubscribeURL: {}", e.without_url()))
        })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(xml_value(&body, "SubscriptionArn"))
        } else if status.is_client_error() {
            Err(SnsError::ConfirmationRefused(format!(
                "SubscribeURL answered {status}"
            )))
        } else {
            Err(SnsError::ConfirmationUnavailable(format!(
                "SubscribeURL answered {status}"
            )))
        }
    }
}

/// The text of the first `<name>...</name>` element.
fn xml_value(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + end].trim().to_owned()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_comes_from_the_topic_arn() {
        assert_eq!(region_of("arn:aws:sns:eu-west-1:123:t"), Some("eu-west-1"));
        assert_eq!(
            region_of("arn:aws-cn:sns:cn-north-1:123:t"),
            Some("cn-north-1")
        );
        assert_eq!(region_of("not-an-arn"), None);
    }

    #[test]
    fn tokens_are_redacted() {
        assert_eq!(redact_token("2336412f37fb687f5d51e6e2425"), "2336412f…");
    }
}
