//! The webhook channel: POSTs the alert as JSON whose `text` is what Slack
//! (and compatible chat tools) show; the rest is for machines.

use std::time::Duration;

use crate::config::Settings;
use crate::outbound::{OutboundOverrides, http_client};
use crate::store::alerts::Alert;
use crate::time::Timestamp;

/// How long the webhook has to answer an alert.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct WebhookChannel {
    url: String,
    client: reqwest::Client,
}

impl WebhookChannel {
    pub fn from_settings(
        settings: &Settings,
        outbound: &OutboundOverrides,
    ) -> anyhow::Result<Option<WebhookChannel>> {
        let Some(url) = settings
            .alert_webhook_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        let parsed = url::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("ALERT_WEBHOOK_URL is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            anyhow::bail!("ALERT_WEBHOOK_URL must be http(s)");
        }
        Ok(Some(WebhookChannel {
            url: url.to_owned(),
            client: http_client(outbound, TIMEOUT, false)?,
        }))
    }

    pub async fn send(&self, alert: &Alert, now: Timestamp) -> Result<(), String> {
        let details: serde_json::Value =
            serde_json::from_str(&alert.details_json).unwrap_or(serde_json::Value::Null);
        let body = serde_json::json!({
            "text": alert.text_at(now),
            "alert_id": alert.id,
            "kind": alert.kind,
            "subject": alert.subject,
            "created_at": alert.created_at,
            "details": details,
        });
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| {
                // A webhook that answers after the time-out may have taken
                // the alert: it will get it again.
                if e.is_timeout() {
                    format!("the webhook did not answer within {} s", TIMEOUT.as_secs())
                } else {
                    // reqwest's own text is "error sending request"; the
                    // cause (refused, a certificate not trusted, no such
                    // host) is in its sources, which `{:#}` follows.
                    format!(
                        "webhook unreachable: {:#}",
                        anyhow::Error::new(e.without_url())
                    )
                }
            })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered {}", response.status()))
        }
    }
}
