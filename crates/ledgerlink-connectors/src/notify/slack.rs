//! Slack incoming webhooks: one `POST` of a JSON payload to the hook URL, answered `200 ok` in plain text.
//!
//! Layout: [`SlackNotifier`] holds the hook URL (a secret: whoever has it can post to the channel, so it is never
//! logged and `Debug` redacts it) and the shared HTTP client; [`SlackNotifier::send`] renders the [`Message`]
//! and classifies Slack's answer: 429 is [`ConnectorError::RateLimited`] with the `Retry-After` delay, 5xx is
//! [`ConnectorError::Transient`], any other 4xx is [`ConnectorError::Validation`] carrying Slack's error code
//! (`invalid_payload`, `no_text`, `no_service`, `channel_is_archived`, …) so the reason reaches the review queue.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::Message;
use crate::ConnectorError;
use crate::http::{self, snippet};

/// Posts notifications to one Slack incoming webhook.
#[derive(Clone)]
pub struct SlackNotifier {
    webhook_url: SecretString,
    http: reqwest::Client,
}

impl fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackNotifier")
            .field("webhook_url", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl SlackNotifier {
    /// A notifier for the hook at `webhook_url`, sending through `http` (normally [`crate::http::client`]).
    pub fn new(webhook_url: SecretString, http: reqwest::Client) -> Self {
        SlackNotifier { webhook_url, http }
    }

    /// Checks that the hook URL is an absolute http(s) URL, without echoing it (it is a secret).
    pub fn validate(&self) -> Result<(), ConnectorError> {
        let bad = |message: &str| ConnectorError::Validation {
            code: "invalid_webhook_url".into(),
            message: message.into(),
            field: Some("webhook_url".into()),
        };
        let url = url::Url::parse(self.webhook_url.expose_secret())
            .map_err(|e| bad(&format!("the Slack webhook URL is not a valid URL ({e})")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(bad("the Slack webhook URL must start with https://"));
        }
        Ok(())
    }

    /// Sends one message. `Ok` means Slack answered `200`: the message is in the channel.
    pub async fn send(&self, message: &Message) -> Result<(), ConnectorError> {
        self.validate()?;
        let payload = message.render()?.slack_payload();
        let request = self
            .http
            .post(self.webhook_url.expose_secret())
            .json(&payload);
        let reply = http::send(request).await?;
        classify(&reply)
    }
}

/// Maps Slack's answer to a result. Slack's webhook answers are short plain-text codes.
fn classify(reply: &http::Reply) -> Result<(), ConnectorError> {
    let status = reply.status.as_u16();
    let code = reply.body.trim();
    match status {
        200..=299 => Ok(()),
        429 => Err(ConnectorError::RateLimited {
            retry_after: http::retry_after(&reply.headers),
            message: format!("Slack throttled the webhook: {}", snippet(code)),
        }),
        500..=599 => Err(ConnectorError::Transient {
            message: format!("Slack answered {status}: {}", snippet(code)),
            // Slack may have posted before failing; a duplicate notice is the lesser harm than a lost one.
            outcome_unknown: true,
        }),
        _ => {
            let code = if code.is_empty() || code.contains(char::is_whitespace) {
                format!("http_{status}")
            } else {
                code.to_string()
            };
            Err(ConnectorError::Validation {
                message: format!("Slack refused the message with {status} `{code}`"),
                code,
                field: None,
            })
        }
    }
}
