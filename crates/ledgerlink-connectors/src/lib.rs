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

/// Changes from a poll, oldest first: one page of them ([`Connector::changes_page`]) or all
/// ([`Connector::changes_since`]).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub records: Vec<Record>,
    /// Where the next page starts, opaque to the caller (a Salesforce `nextRecordsUrl`, a QuickBooks start
    /// position); `None` when this was the last page. Only meaningful for the same `object`, `since` and `fields`.
    pub next_page: Option<String>,
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

    /// Deletes a record. `Ok(false)` when it was already gone, so a repeated delete is harmless. Systems (or
    /// objects) that do not delete records refuse with a validation error saying so (QuickBooks name-list
    /// entities are deactivated instead: see [`Connector::active_field`]).
    async fn delete(&self, object: &str, id: &str) -> Result<bool, ConnectorError> {
        let _ = id;
        Err(ConnectorError::Validation {
            code: "unsupported".into(),
            message: format!("{} records of type {object} cannot be deleted through a flow", self.system()),
            field: None,
        })
    }

    /// One page of the records of `object` changed at or after `since`, oldest first, with at least `fields`:
    /// the first page when `page` is `None`, else the page a previous answer's [`Changes::next_page`] named.
    /// Paged so a poll holds one page in memory at a time, however many records changed. A page may repeat
    /// versions of the page before it (QuickBooks pages by time and starts again at the last second it read):
    /// callers drop the versions they have seen.
    async fn changes_page(
        &self,
        object: &str,
        since: DateTime<Utc>,
        fields: &[String],
        page: Option<&str>,
    ) -> Result<Changes, ConnectorError>;

    /// Every record of `object` changed at or after `since` (all pages of [`Connector::changes_page`] in one list),
    /// for callers that want the whole list at once and know it is small. Pages may overlap (a page can start again
    /// at the last instant of the one before): a version already in the list is not added twice.
    async fn changes_since(&self, object: &str, since: DateTime<Utc>, fields: &[String]) -> Result<Changes, ConnectorError> {
        let mut all = self.changes_page(object, since, fields, None).await?;
        let version = |r: &Record| (self.record_id(r), self.change_timestamp(r), self.record_version(r));
        let mut listed: std::collections::HashSet<_> = all.records.iter().map(version).collect();
        while let Some(next) = all.next_page.take() {
            let page = self.changes_page(object, since, fields, Some(&next)).await?;
            all.records.extend(page.records.into_iter().filter(|r| listed.insert(version(r))));
            all.next_page = page.next_page;
        }
        Ok(all)
    }

    /// Records of `object` deleted at or after `since`, oldest first, each with its id, its change timestamp (the
    /// time of the delete) and the system's own deletion marker, so that [`Connector::is_deleted`] is true of it.
    /// The poll trigger asks for them when a flow wants deletions (`deletions = true`). Default: none (a system
    /// that cannot report deletions).
    async fn deletions_since(&self, object: &str, since: DateTime<Utc>, fields: &[String]) -> Result<Changes, ConnectorError> {
        let _ = (object, since, fields);
        Ok(Changes::default())
    }

    /// Whether a record from the change feed stands for a deleted record (Salesforce `IsDeleted`, a QuickBooks
    /// change-feed row with `status: "Deleted"`).
    fn is_deleted(&self, record: &Record) -> bool {
        let _ = record;
        false
    }

    /// The boolean field that says a record of `object` is active, where the system deactivates such records
    /// instead of deleting them (QuickBooks name-list entities: `Active`). `None` when the system has no such
    /// field of its own for the object (a flow can still name a custom one).
    fn active_field(&self, object: &str) -> Option<&'static str> {
        let _ = object;
        None
    }

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
