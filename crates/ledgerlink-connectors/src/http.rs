//! Shared HTTP plumbing for every connector.
//!
//! Layout: [`client`] builds the one `reqwest::Client` configuration all connectors use (TLS provider, timeouts,
//! user agent); [`send`] performs a request and reads the whole answer into a [`Reply`], mapping transport
//! failures through [`transport_error`] so the retry engine can tell "never sent" from "sent, outcome unknown";
//! [`retry_after`] reads a `Retry-After` header. Status-code classification is per system and lives in each
//! connector, because the same status means different things in QuickBooks and Salesforce.

use std::sync::Once;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::ConnectorError;

/// How long establishing a TCP/TLS connection may take. Short: a refused or black-holed host should fail fast
/// and is safe to retry (nothing was sent).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The user agent sent with every call, so the remote side can identify ledgerlink traffic in its logs.
pub fn user_agent() -> String {
    format!("ledgerlink/{}", env!("CARGO_PKG_VERSION"))
}

static CRYPTO_PROVIDER: Once = Once::new();

/// Installs the `ring` rustls provider for the process. reqwest is built without a default provider, so one
/// must be installed before the first TLS client is built; another part of the process may already have done
/// it, which is fine.
pub fn install_crypto_provider() {
    CRYPTO_PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The HTTP client every connector uses.
pub fn client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(user_agent())
        .build()
        // Building only fails when the TLS backend cannot initialise, which is a broken installation, not
        // something a caller can handle: the same configuration always builds.
        .expect("the HTTP client configuration is valid")
}

/// The HTTP client of [`client`], also trusting the root certificate(s) in the PEM file at `pem_path`, for a
/// server whose certificate is self-signed or issued by a private CA (a local sandbox, a corporate proxy).
/// Verification stays on: the extra roots are added to the platform's, never replacing the checks.
pub fn client_with_root_pem(pem_path: &std::path::Path) -> Result<reqwest::Client, ConnectorError> {
    let bad = |message: String| ConnectorError::Validation {
        code: "invalid_root_certificate".into(),
        message,
        field: Some("root_certificate".into()),
    };
    let pem = std::fs::read(pem_path)
        .map_err(|e| bad(format!("cannot read the root certificate file {}: {e}", pem_path.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| bad(format!("{} is not a PEM certificate file: {e}", pem_path.display())))?;
    if certs.is_empty() {
        return Err(bad(format!("{} holds no PEM certificate", pem_path.display())));
    }
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(user_agent())
        .tls_certs_merge(certs)
        .build()
        .map_err(|e| bad(format!("the certificates in {} cannot be used: {e}", pem_path.display())))
}

/// A complete HTTP answer: status, headers and the body as text.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The body parsed as JSON; an empty body is `null`.
    pub fn json(&self) -> Result<serde_json::Value, ConnectorError> {
        if self.body.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&self.body).map_err(|e| ConnectorError::Transient {
            message: format!("answer with status {} is not valid JSON ({e}): {}", self.status, snippet(&self.body)),
            // The server answered: whatever it did is done, but we cannot read what it was.
            outcome_unknown: true,
        })
    }

    /// The value of a header as text, if present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request and reads the whole answer. Transport failures become [`ConnectorError::Transient`].
pub async fn send(request: reqwest::RequestBuilder) -> Result<Reply, ConnectorError> {
    let response = request.send().await.map_err(|e| transport_error(&e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.map_err(|e| ConnectorError::Transient {
        message: format!("reading the answer (status {status}) failed: {}", describe(&e)),
        outcome_unknown: true,
    })?;
    Ok(Reply { status, headers, body })
}

/// Maps a transport failure to [`ConnectorError::Transient`]. `outcome_unknown` is false only when the request
/// certainly never reached the server (the connection could not be established); a timeout or reset after that
/// may have left the operation applied, so the engine must look before repeating a create.
pub fn transport_error(err: &reqwest::Error) -> ConnectorError {
    let never_sent = err.is_connect() || err.is_builder();
    ConnectorError::Transient { message: describe(err), outcome_unknown: !never_sent }
}

/// A description of a transport error with its causes, without the URL (query strings can hold identifiers
/// that do not belong in logs).
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        if err.is_connect() { "connect timeout" } else { "timeout" }
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "body error"
    } else {
        "request failed"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The `Retry-After` header as a delay: delta-seconds, or an HTTP date in the future.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// The first few hundred characters of a body, for error messages.
pub fn snippet(body: &str) -> String {
    const MAX: usize = 300;
    let trimmed = body.trim();
    if trimmed.chars().count() <= MAX {
        trimmed.to_string()
    } else {
        let cut: String = trimmed.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// Percent-encodes one URL path segment (record ids come from outside and must not change the path).
pub fn path_segment(text: &str) -> String {
    urlencoding::encode(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn snippet_truncates_long_bodies() {
        let long = "x".repeat(1000);
        let s = snippet(&long);
        assert_eq!(s.chars().count(), 301);
        assert_eq!(snippet("  short "), "short");
    }

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(path_segment("../a b"), "..%2Fa%20b");
    }

    #[tokio::test]
    async fn refused_connection_is_known_not_sent() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = send(client().get(format!("http://127.0.0.1:{port}/"))).await.unwrap_err();
        match err {
            ConnectorError::Transient { outcome_unknown, .. } => assert!(!outcome_unknown),
            other => panic!("expected transient, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn reset_after_sending_is_outcome_unknown() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut sock, _) = listener.accept().await.unwrap();
            // Read the request, then close without answering.
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await.unwrap();
            drop(sock);
        });
        let err = send(client().post(format!("http://{addr}/")).body("x")).await.unwrap_err();
        server.await.unwrap();
        match err {
            ConnectorError::Transient { outcome_unknown, .. } => assert!(outcome_unknown),
            other => panic!("expected transient, got {other:?}"),
        }
    }
}
