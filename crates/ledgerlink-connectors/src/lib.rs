//! API clients for the systems ledgerlink connects.
//!
//! Layout: [`Connector`] is the generic record interface the flow executor drives (get, find, create with an
//! idempotency key, update, changes since a time); each system module ([`quickbooks`], [`salesforce`]) implements
//! it over that system's real wire format and also offers typed calls of its own. [`ConnectorError`] classifies
//! every failure for the retry engine. [`auth`] holds the OAuth token manager: rotated refresh tokens are saved
//! through a [`auth::TokenStore`] before the new access token is used, and refreshes are serialised per connection.

pub mod auth;
pub mod error;
pub mod http;
pub mod limiter;
pub mod notify;
pub mod quickbooks;
pub mod retry;
pub mod salesforce;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

pub use error::ConnectorError;

/// A record as the system returns it: its own field names, JSON values.
pub type Record = serde_json::Map<String, Value>;

/// A lookup of records whose fields all equal the given values.
#[derive(Debug, Clone, Default)]
pub struct FindQuery {
    pub object: String,
    /// `(field, value)` pairs joined with AND. Values are escaped by the connector. A field name may end with a
    /// comparison operator after a space (`"TxnDate >="`, `"Balance >"`; see [`split_comparison`]) to compare
    /// instead of test equality: a date range or an open balance without reading every record.
    pub equals: Vec<(String, Value)>,
    /// Fields to return; empty means the connector's default set for the object.
    pub fields: Vec<String>,
    pub limit: Option<u32>,
}

/// Splits a [`FindQuery::equals`] field name into the field and its operator: `"TxnDate >="` gives
/// `("TxnDate", ">=")`, a plain name gives `(name, "=")`. Only `<`, `<=`, `>`, `>=` are recognised.
pub fn split_comparison(field: &str) -> (&str, &str) {
    for op in ["<=", ">=", "<", ">"] {
        if let Some(name) = field.strip_suffix(op)
            && name.ends_with(' ')
        {
            return (name.trim_end(), op);
        }
    }
    (field, "=")
}

/// A page of changes from a poll.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub records: Vec<Record>,
}

/// How a connection spends its API allowance: the engine builds its limiter from this.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitPolicy {
    pub requests_per_minute: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub batch_requests_per_minute: Option<u32>,
    pub max_batch_items: Option<u32>,
    /// Daily budget (Salesforce), when known.
    pub daily_budget: Option<u64>,
}

/// One connection's client. Implementations are cheap to share (`Arc`).
#[async_trait]
pub trait Connector: Send + Sync {
    /// `quickbooks`, `salesforce`, …
    fn system(&self) -> &'static str;

    fn rate_limit_policy(&self) -> RateLimitPolicy;

    /// One read-only call that proves credentials, permissions and the company/org are valid.
    /// Returns a display name for the company/org.
    async fn test_connection(&self) -> Result<String, ConnectorError>;

    /// Reads one record; `Ok(None)` when it does not exist.
    async fn get(&self, object: &str, id: &str, fields: &[String]) -> Result<Option<Record>, ConnectorError>;

    /// Records matching every `(field, value)` pair.
    async fn find(&self, query: &FindQuery) -> Result<Vec<Record>, ConnectorError>;

    /// Creates a record. `idempotency_key` makes a repeat of the same create return the first result
    /// (QuickBooks `requestid`; systems without such a key are looked up before re-creating by the engine).
    async fn create(&self, object: &str, record: &Record, idempotency_key: &str) -> Result<Record, ConnectorError>;

    /// Updates the given fields only (sparse). Returns the record as stored.
    async fn update(&self, object: &str, id: &str, fields: &Record) -> Result<Record, ConnectorError>;

    /// Records of `object` changed at or after `since`, oldest first, with at least `fields`.
    async fn changes_since(&self, object: &str, since: DateTime<Utc>, fields: &[String]) -> Result<Changes, ConnectorError>;

    /// The field holding a record's change timestamp (`SystemModstamp`, `MetaData.LastUpdatedTime`), and its
    /// version (used with the id to de-duplicate changes seen twice).
    fn change_timestamp(&self, record: &Record) -> Option<DateTime<Utc>>;

    /// The record's own change counter, when the system keeps one (QuickBooks' SyncToken). Timestamps alone can
    /// be too coarse (QuickBooks' have whole seconds): two changes within one second would look like one.
    fn record_version(&self, record: &Record) -> Option<String> {
        let _ = record;
        None
    }

    /// The fields a read must include for [`Connector::change_timestamp`] to work on the record it returns.
    fn change_timestamp_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether `err` is this system refusing a create because an equal record already exists (a unique name or
    /// value). The engine then looks again instead of giving up: another writer may have just created it.
    fn is_duplicate_error(&self, err: &ConnectorError) -> bool {
        let _ = err;
        false
    }

    /// The system's own id field of a record.
    fn record_id(&self, record: &Record) -> Option<String> {
        record.get("Id").and_then(|v| v.as_str()).map(str::to_string)
    }

    /// Encodes a canonical invoice into this system's create payload. Systems that cannot hold invoices refuse.
    fn encode_invoice(&self, invoice: &ledgerlink_model::Invoice) -> Result<Record, ConnectorError> {
        let _ = invoice;
        Err(ConnectorError::Validation {
            code: "unsupported".into(),
            message: format!("{} does not take invoices", self.system()),
            field: None,
        })
    }
}
