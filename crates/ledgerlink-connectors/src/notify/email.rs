//! Email notifications over SMTP, sent with lettre's tokio transport.
//!
//! Layout: [`SmtpSettings`] is the mail server (host, port, sender, optional login, plain or STARTTLS, an optional
//! extra root certificate for a server with a private certificate authority); [`EmailNotifier::new`] checks the
//! settings once and builds the transport; [`EmailNotifier::send`] writes a plain-text UTF-8 message and
//! [`EmailNotifier::send_message`] sends a [`Message`] rendered the same way as its Slack twin. SMTP failures are
//! classified for the retry engine: a 4xx reply is [`ConnectorError::Transient`] (the server asks to try later),
//! 535 (login refused) is [`ConnectorError::Unauthorized`], any other 5xx is [`ConnectorError::Validation`] with the reply code,
//! and network or TLS failures are transient with an unknown outcome (the message may have been accepted).

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use super::Message;
use crate::ConnectorError;

/// How long one SMTP conversation step may take before the send counts as failed.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain TCP. Only for a relay on the same host or a trusted network (port 25 inside a data centre).
    None,
    /// Plain TCP upgraded with STARTTLS before anything else is sent; refused if the server does not offer it.
    #[default]
    StartTls,
}

/// Where and how to send mail.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    /// 587 for submission with STARTTLS, 25 for a relay.
    pub port: u16,
    /// The sender, `address` or `Name <address>`.
    pub from: String,
    /// Login name; with `password`, the transport authenticates (PLAIN or LOGIN, as the server offers).
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub tls: SmtpTls,
    /// A PEM file of extra certificate authorities to trust for STARTTLS (a private CA); the platform's roots
    /// stay trusted and certificates are always verified.
    pub root_certificate: Option<PathBuf>,
}

/// Sends email notifications through one SMTP server.
#[derive(Clone)]
pub struct EmailNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
    port: u16,
}

impl std::fmt::Debug for EmailNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The transport holds the credentials: show only where mail goes.
        f.debug_struct("EmailNotifier")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

fn invalid(field: &str, message: String) -> ConnectorError {
    ConnectorError::Validation {
        code: "invalid_smtp_settings".into(),
        message,
        field: Some(field.into()),
    }
}

impl EmailNotifier {
    /// Checks the settings (host, sender address, login given in full or not at all, readable root certificate)
    /// and builds the transport. Nothing is sent and no connection is made yet.
    pub fn new(settings: SmtpSettings) -> Result<Self, ConnectorError> {
        let host = settings.host.trim().to_string();
        if host.is_empty() {
            return Err(invalid("host", "the SMTP host is empty".into()));
        }
        if settings.port == 0 {
            return Err(invalid(
                "port",
                "the SMTP port must be between 1 and 65535".into(),
            ));
        }
        let from: Mailbox = settings.from.trim().parse().map_err(|e| {
            invalid(
                "from",
                format!(
                    "the sender `{}` is not an email address ({e})",
                    settings.from
                ),
            )
        })?;

        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(settings.port)
            .timeout(Some(SMTP_TIMEOUT));
        match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(
                    user.clone(),
                    password.expose_secret().to_string(),
                ));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(invalid(
                    "password",
                    "an SMTP username is set without a password".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "username",
                    "an SMTP password is set without a username".into(),
                ));
            }
        }
        if settings.tls == SmtpTls::StartTls {
            crate::http::install_crypto_provider();
            let mut params = TlsParameters::builder(host.clone());
            if let Some(path) = &settings.root_certificate {
                let pem = std::fs::read(path).map_err(|e| {
                    invalid(
                        "root_certificate",
                        format!(
                            "cannot read the root certificate file {}: {e}",
                            path.display()
                        ),
                    )
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    invalid(
                        "root_certificate",
                        format!("{} is not a PEM certificate file: {e}", path.display()),
                    )
                })?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build_rustls().map_err(|e| {
                invalid(
                    "tls",
                    format!("the TLS settings for {host} cannot be used: {e}"),
                )
            })?;
            builder = builder.tls(Tls::Required(params));
        } else {
            builder = builder.tls(Tls::None);
        }
        Ok(EmailNotifier {
            transport: builder.build(),
            from,
            host,
            port: settings.port,
        })
    }

    /// Sends a plain-text message to every address in `to` (one SMTP transaction, all in the `To` header).
    pub async fn send(
        &self,
        to: &[String],
        subject: &str,
        text_body: &str,
    ) -> Result<(), ConnectorError> {
        if to.is_empty() {
            return Err(invalid(
                "to",
                "an email needs at least one recipient".into(),
            ));
        }
        let mut builder = lettre::Message::builder().from(self.from.clone());
        for (i, address) in to.iter().enumerate() {
            let mailbox: Mailbox = address.trim().parse().map_err(|e| {
                invalid(
                    &format!("to[{i}]"),
                    format!("the recipient `{address}` is not an email address ({e})"),
                )
            })?;
            builder = builder.to(mailbox);
        }
        let email = builder
            .subject(subject.split_whitespace().collect::<Vec<_>>().join(" "))
            .header(ContentType::TEXT_PLAIN)
            .body(text_body.to_string())
            .map_err(|e| invalid("message", format!("the email cannot be built: {e}")))?;
        self.transport
            .send(email)
            .await
            .map(|_| ())
            .map_err(|e| self.classify(&e))
    }

    /// Sends a [`Message`]: the title is the subject, the body is the same plain text the Slack fallback carries.
    pub async fn send_message(
        &self,
        to: &[String],
        message: &Message,
    ) -> Result<(), ConnectorError> {
        let rendered = message.render()?;
        self.send(to, rendered.title(), &rendered.plain_body())
            .await
    }

    fn classify(&self, err: &lettre::transport::smtp::Error) -> ConnectorError {
        let server = format!("{}:{}", self.host, self.port);
        let code = err.status().map(u16::from);
        if err.is_transient() {
            return ConnectorError::Transient {
                message: format!("the mail server {server} asked to try later: {err}"),
                // A 4xx reply means the server did not take the message.
                outcome_unknown: false,
            };
        }
        if err.is_permanent() {
            if code == Some(535) {
                return ConnectorError::Unauthorized {
                    message: format!("the mail server {server} refused the login: {err}"),
                };
            }
            return ConnectorError::Validation {
                code: code
                    .map(|c| format!("smtp_{c}"))
                    .unwrap_or_else(|| "smtp_permanent".into()),
                message: format!("the mail server {server} refused the message: {err}"),
                field: None,
            };
        }
        if err.is_tls() || tls_failure(err) {
            return ConnectorError::Transient {
                message: format!(
                    "TLS with the mail server {server} failed: {}",
                    describe(err)
                ),
                outcome_unknown: false,
            };
        }
        ConnectorError::Transient {
            message: format!("sending mail through {server} failed: {}", describe(err)),
            outcome_unknown: true,
        }
    }
}

/// Whether the failure is the TLS handshake (an untrusted or mismatched certificate, no common protocol).
/// lettre reports these as connection errors with the rustls error inside an `io::Error`, which hides it from
/// `source()`, so each I/O error in the chain is opened too. Nothing was sent before the handshake.
fn tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && tls_failure(inner)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// An error with its causes, on one line; a cause already spelled out by the text before it is not repeated
/// (lettre's messages include their source).
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
