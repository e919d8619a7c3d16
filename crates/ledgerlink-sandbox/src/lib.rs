//! Local, stateful emulators of the external APIs ledgerlink talks to.
//!
//! Layout: [`quickbooks`] and [`salesforce`] each serve one system's real wire format over axum, keep their data in
//! memory (optionally persisted to a state file), and seed a realistic sample company / org. [`clock`] is the
//! sandbox clock that tests can advance (token expiry, overdue invoices). [`faults`] injects throttles,
//! server errors, slow answers, dropped connections and token expiry at configurable rates. [`RunningSandbox`] is what `start`
//! returns: the base URL, the startup line (credentials ready to use) and a handle to stop it.
//!
//! The sandboxes are a second implementation target of the connectors, never a mock inside product code paths.

pub mod clock;
pub mod faults;
pub mod quickbooks;
pub mod salesforce;
pub mod slack;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A sandbox serving on loopback.
#[derive(Debug)]
pub struct RunningSandbox {
    /// `http://127.0.0.1:PORT` (or https with `--tls`).
    pub base_url: String,
    /// The startup line printed by `ledgerlink sandbox …`: `base_url` plus ready-to-use credentials.
    ///
    /// QuickBooks: `system`, `base_url`, `api_base` (`{base_url}/v3`), `discovery_url`, `token_url`, `client_id`,
    /// `client_secret`, `realm_id`, `access_token`, `refresh_token`, `verifier_token`.
    /// Salesforce: `system`, `base_url`, `instance_url`, `token_url`, `authorize_url`, `admin_url`, `api_version`,
    /// `client_id`, `client_secret`, `org_id`, `username`, `password`, `access_token`, `refresh_token`, and with TLS
    /// `cert_pem_path` (the PEM of the certificate authority to trust).
    pub info: serde_json::Value,
    pub(crate) shutdown: Option<oneshot::Sender<()>>,
    pub(crate) task: Option<JoinHandle<()>>,
}

impl RunningSandbox {
    /// Stops serving and waits for the server task (state is flushed to the state file if one was given).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// A string field of the startup line.
    pub fn info_str(&self, key: &str) -> &str {
        self.info.get(key).and_then(|v| v.as_str()).unwrap_or_default()
    }
}
