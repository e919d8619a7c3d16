//! The platform connector: what a host SaaS platform embeds so that its users' clients, invoices, services,
//! expenses and tax rates flow to QuickBooks Online and payment status flows back (the help page in
//! `shared/seeds/002_*.txt` is the specification).
//!
//! Layout:
//! - [`workspace`] and [`tokens`]: a platform tenant and the bearer tokens scoped to it (stored as SHA-256 only).
//! - [`settings`]: the Manage form's choices ([`IntegrationSettings`]), per workspace.
//! - [`integration`]: the workspace's QuickBooks connection (connect, disconnect, status, test, the company's lists).
//! - [`records`]: the pushed records, their sync status and, for invoices, payment status.
//! - [`idempotency`]: `Idempotency-Key` answers replayed byte for byte.
//! - [`reconcile`]: the reconciliation pass (clients vs customers, services vs items) and the admin's choices.
//! - [`sync`]: the durable task worker that writes to QuickBooks exactly once and reads payments back.
//! - [`notifications`]: QuickBooks' signed change notifications, which make the worker read payments at once.
//! - [`webhooks`]: outgoing webhooks, HMAC-SHA256 signed, retried with backoff, every attempt recorded.
//! - [`api`]: the HTTP API (axum) and its OpenAPI document.
//!
//! Everything is kept through [`ledgerlink_store::PlatformStore`] (documents plus a task queue), so it works on
//! both store backends. [`Platform`] is the one handle the server and the web UI hold.

pub mod api;
pub mod error;
pub mod openapi;
pub mod idempotency;
pub mod integration;
pub mod notifications;
pub mod records;
pub mod reconcile;
pub mod settings;
pub mod sync;
pub mod tokens;
pub mod webhooks;
pub mod workspace;

use std::sync::Arc;

use ledgerlink_store::Store;

pub use error::PlatformError;
pub use integration::{CompanyLists, ConnectionState, Disconnected, IntegrationStatus, QbChoice, TestResult};
pub use records::{PaymentState, PaymentStatus, RecordKind, StoredRecord, SyncState, SyncStatus};
pub use reconcile::{MatchDecision, Reconciliation};
pub use settings::{CustomerMatching, CustomerSync, ExpensePostAs, ExpenseSync, IntegrationSettings, InvoiceSync, QbRef, SyncFrequency};
pub use tokens::{IssuedToken, TokenInfo};
pub use workspace::Workspace;

pub type Result<T, E = PlatformError> = std::result::Result<T, E>;

/// Runtime knobs of the platform connector.
#[derive(Debug, Clone)]
pub struct PlatformOptions {
    /// Identifies this process in task leases.
    pub worker_id: String,
    /// How long a claimed task is leased before another worker may take it over.
    pub task_lease: chrono::Duration,
    /// Attempts before a task is dead.
    pub max_attempts: i32,
    /// First retry delay, doubled per attempt up to `retry_max`.
    pub retry_base: chrono::Duration,
    pub retry_max: chrono::Duration,
    /// How often the worker looks for due tasks when nothing woke it.
    pub idle_wait: std::time::Duration,
    /// How often payment changes are read from each connected company. The settings' reconciliation interval
    /// governs the full pass; payments are cheap (one CDC-style query) and users expect them promptly.
    pub payment_poll: std::time::Duration,
    /// Timeout of one outgoing webhook request.
    pub webhook_timeout: std::time::Duration,
}

impl Default for PlatformOptions {
    fn default() -> Self {
        PlatformOptions {
            worker_id: format!("platform-{}", std::process::id()),
            task_lease: chrono::Duration::seconds(60),
            max_attempts: 8,
            retry_base: chrono::Duration::seconds(1),
            retry_max: chrono::Duration::minutes(10),
            idle_wait: std::time::Duration::from_millis(500),
            payment_poll: std::time::Duration::from_secs(30),
            webhook_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// The handle everything goes through: the store, an HTTP client, and the worker's wake-up bell.
#[derive(Clone)]
pub struct Platform {
    pub store: Arc<dyn Store>,
    pub(crate) http: reqwest::Client,
    pub(crate) wake: Arc<tokio::sync::Notify>,
    pub(crate) connectors: Arc<integration::ConnectorCache>,
    /// One payment read at a time: the poll and a notification's read both move the workspace's cursor, and the
    /// cursor is written back into the connection status, which a concurrent disconnect also writes.
    pub(crate) payments_lock: Arc<tokio::sync::Mutex<()>>,
    /// One sync of a platform record at a time: two runs of the same client (a task and the drain the API
    /// starts, say) would each take the other's just-made link for an edit and send it again.
    pub(crate) record_locks: Arc<ledgerlink_engine::locks::KeyedLocks>,
    pub options: PlatformOptions,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform").field("backend", &self.store.backend()).field("options", &self.options).finish()
    }
}

impl Platform {
    pub fn new(store: Arc<dyn Store>, options: PlatformOptions) -> Platform {
        Platform {
            store,
            http: ledgerlink_connectors::http::client(),
            wake: bell(),
            connectors: Arc::default(),
            payments_lock: Arc::default(),
            record_locks: Arc::default(),
            options,
        }
    }

    /// Rings the worker so newly queued work starts now rather than at its next look.
    pub(crate) fn wake_worker(&self) {
        self.wake.notify_one();
    }
}

/// One wake-up bell per process: the server's API handle and the worker may be separate [`Platform`] values over
/// one store, and a push through either must wake the worker at once. A spurious wake costs one empty claim.
fn bell() -> Arc<tokio::sync::Notify> {
    static BELL: std::sync::OnceLock<Arc<tokio::sync::Notify>> = std::sync::OnceLock::new();
    BELL.get_or_init(|| Arc::new(tokio::sync::Notify::new())).clone()
}

/// The engine's clock: one time source for tasks, cursors and records.
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    ledgerlink_engine::now()
}

/// A short random identifier with a prefix (`ws_3f9a…`): 16 random bytes as hex.
pub(crate) fn new_id(prefix: &str) -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex(&bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
