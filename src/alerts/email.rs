//! The email channel: the sender's own SMTP settings (`SMTP_*`) to the
//! admins in `ALERT_EMAILS`.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Settings, SmtpTls};
use crate::store::alerts::Alert;

pub struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl EmailChannel {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Option<EmailChannel>> {
        let Some(host) = settings
            .smtp_host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
        else {
            // Addresses without a server are a half-made setting, not a
            // choice: the alerts would be stored and never mailed.
            if settings.alert_emails.iter().any(|e| !e.trim().is_empty()) {
                anyhow::bail!(
                    "ALERT_EMAILS is set but SMTP_HOST is not: alert emails need an SMTP server (SMTP_HOST, SMTP_PORT, SMTP_FROM_EMAIL)"
                );
            }
            return Ok(None);
        };
        let to: Vec<Mailbox> = settings
            .alert_emails
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|e| {
                e.parse()
                    .map_err(|err| anyhow::anyhow!("ALERT_EMAILS: `{e}`: {err}"))
            })
            .collect::<anyhow::Result<_>>()?;
        if to.is_empty() {
            return Ok(None);
        }
        let from_email = settings
            .smtp_from_email
            .as_deref()
            .filter(|f| !f.trim().is_empty())
            .ok_or_else(|| anyhow::anyhow!("SMTP_FROM_EMAIL is required for alert emails"))?;
        let from = Mailbox::new(
            Some(settings.smtp_from_name.clone()),
            from_email.trim().parse()?,
        );
        let tls = match settings.smtp_tls {
            SmtpTls::Auto if settings.smtp_port == 465 => SmtpTls::Tls,
            SmtpTls::Auto => SmtpTls::Starttls,
            other => other,
        };
        let builder = match tls {
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
            SmtpTls::Starttls | SmtpTls::Auto => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?
            }
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        };
        let mut builder = builder
            .port(settings.smtp_port)
            .timeout(Some(Duration::from_secs(15)));
        if let Some(user) = settings.smtp_user.as_deref().filter(|u| !u.is_empty()) {
            builder = builder.credentials(Credentials::new(
                user.to_owned(),
                settings.smtp_password.clone().unwrap_or_default(),
            ));
        }
        Ok(Some(EmailChannel {
            transport: builder.build(),
            from,
            to,
        }))
    }

    pub async fn send(&self, alert: &Alert) -> Result<(), String> {
        let details: serde_json::Value =
            serde_json::from_str(&alert.details_json).unwrap_or(serde_json::Value::Null);
        let body = format!(
            "{}\n\nAlert {} ({}) raised at {}.\n\nDetails:\n{}\n",
            alert.plain_text(),
            alert.id,
            alert.kind,
            alert.created_at,
            serde_json::to_string_pretty(&details).unwrap_or_default()
        );
        // The same for every attempt at one alert, so that a copy sent
        // again after an attempt that did go through (a lost answer) is
        // the same message to mail clients; RFC 5322 asks for one.
        let message_id = format!(
            "<bouncer.alert.{}.{}@{}>",
            alert.id,
            alert.created_at.unix_millis(),
            self.from.email.domain()
        );
        let mut message = Message::builder()
            .from(self.from.clone())
            .message_id(Some(message_id))
            .subject(&alert.subject);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| format!("cannot build the email: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}
