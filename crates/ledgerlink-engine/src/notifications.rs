//! Notification connections: a Slack incoming webhook or an SMTP mail server, configured like any other
//! connection and used by `notify` steps.
//!
//! Layout: [`SYSTEMS`] are the notification systems; [`build_notifier`] turns a stored connection into a
//! [`Notifier`] (checking its settings once, at start, so a typo is reported before a message is due);
//! [`build_all`] does so for every stored notification connection. The secrets (`webhook_url`, `password`) are
//! sealed in the store with the other connections' secrets ([`crate::config::SECRET_KEYS`]).
//!
//! A `[[connections]]` table:
//! ```toml
//! [[connections]]
//! name = "slack"
//! system = "slack"
//! webhook_url = "https://hooks.slack.com/services/…"     # secret
//!
//! [[connections]]
//! name = "finance-mail"
//! system = "email"
//! host = "smtp.example.com"
//! port = 587
//! tls = "starttls"                 # or "none" (a relay on a trusted network only)
//! username = "ledgerlink"          # optional, with password
//! password = "…"                   # secret
//! from = "ledgerlink <ledgerlink@example.com>"
//! to = ["finance@example.com"]     # one address or a list
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use ledgerlink_connectors::ConnectorError;
use ledgerlink_connectors::notify::Message;
use ledgerlink_connectors::notify::email::{EmailNotifier, SmtpSettings, SmtpTls};
use ledgerlink_connectors::notify::slack::SlackNotifier;
use ledgerlink_store::{Connection, Store};
use secrecy::SecretString;
use serde_json::Value;

/// The notification systems a connection may name.
pub const SYSTEMS: &[&str] = &["slack", "email"];

/// Whether `system` is a notification system (built here, not as a data connector).
pub fn is_notification_system(system: &str) -> bool {
    SYSTEMS.contains(&system)
}

/// Where a `notify` step's message goes.
#[derive(Debug)]
pub enum Notifier {
    Slack(SlackNotifier),
    /// Boxed: the SMTP transport is large next to a webhook URL.
    Email { notifier: Box<EmailNotifier>, to: Vec<String> },
}

impl Notifier {
    /// Sends one message; failures are classified like any connector's (throttled and 5xx retry, a refusal
    /// goes to review).
    pub async fn send(&self, message: &Message) -> Result<(), ConnectorError> {
        match self {
            Notifier::Slack(slack) => slack.send(message).await,
            Notifier::Email { notifier, to } => notifier.send_message(to, message).await,
        }
    }

    pub fn system(&self) -> &'static str {
        match self {
            Notifier::Slack(_) => "slack",
            Notifier::Email { .. } => "email",
        }
    }
}

/// Builds the notifier of one stored connection; errors name the connection and the setting.
pub fn build_notifier(conn: &Connection, http: reqwest::Client) -> anyhow::Result<Notifier> {
    let cfg = &conn.config;
    let name = &conn.name;
    let text = |k: &str| cfg.get(k).and_then(Value::as_str).map(str::to_string);
    let secret = |k: &str| conn.credentials.get(k).and_then(Value::as_str).map(|s| SecretString::from(s.to_string()));
    match conn.system.as_str() {
        "slack" => {
            let url = secret("webhook_url").ok_or_else(|| anyhow::anyhow!("connection `{name}` (slack): setting `webhook_url` is missing"))?;
            let slack = SlackNotifier::new(url, http);
            slack.validate().map_err(|e| anyhow::anyhow!("connection `{name}` (slack): {e}"))?;
            Ok(Notifier::Slack(slack))
        }
        "email" => {
            let need = |k: &str| text(k).ok_or_else(|| anyhow::anyhow!("connection `{name}` (email): setting `{k}` is missing"));
            let port = match cfg.get("port") {
                None => 587,
                Some(v) => v
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or_else(|| anyhow::anyhow!("connection `{name}` (email): `port` must be a number from 1 to 65535, got {v}"))?,
            };
            let tls = match text("tls").as_deref() {
                None | Some("starttls") => SmtpTls::StartTls,
                Some("none") => SmtpTls::None,
                Some(other) => anyhow::bail!("connection `{name}` (email): `tls = \"{other}\"` is not known; use \"starttls\" or \"none\""),
            };
            let to: Vec<String> = match cfg.get("to") {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("connection `{name}` (email): `to` must list addresses as strings")))
                    .collect::<anyhow::Result<_>>()?,
                _ => anyhow::bail!("connection `{name}` (email): setting `to` (an address or a list of addresses) is missing"),
            };
            if to.is_empty() {
                anyhow::bail!("connection `{name}` (email): `to` lists no address");
            }
            let settings = SmtpSettings {
                host: need("host")?,
                port,
                from: need("from")?,
                username: text("username"),
                password: secret("password"),
                tls,
                root_certificate: text("root_certificate").map(std::path::PathBuf::from),
            };
            let notifier = EmailNotifier::new(settings).map_err(|e| anyhow::anyhow!("connection `{name}` (email): {e}"))?;
            Ok(Notifier::Email { notifier: Box::new(notifier), to })
        }
        other => anyhow::bail!("connection `{name}`: `{other}` is not a notification system (known: {})", SYSTEMS.join(", ")),
    }
}

/// Builds a notifier for every stored notification connection.
pub async fn build_all(store: Arc<dyn Store>) -> anyhow::Result<BTreeMap<String, Arc<Notifier>>> {
    let http = ledgerlink_connectors::http::client();
    let mut out = BTreeMap::new();
    for conn in store.list_connections().await? {
        if is_notification_system(&conn.system) {
            out.insert(conn.name.clone(), Arc::new(build_notifier(&conn, http.clone())?));
        }
    }
    Ok(out)
}
