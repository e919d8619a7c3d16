//! A QuickBooks connector whose creates are coalesced: concurrent single creates from many jobs leave as batch calls
//! of up to 30 items (through [`BatchWriter`]), which spend one request of the realm's 500 per minute (and one of
//! its 120 batch calls) instead of thirty. Everything else is the plain connector.
//!
//! Exactly once: a batch is retried whole under its own `requestid`, so a batch QuickBooks already applied is
//! replayed, not applied again. If a batch's outcome stays unknown after its retries, the engine retries the job,
//! and the item may travel in a batch of a different make-up: for that case the engine relies on looking before
//! re-creating (the match cascade for names; QuickBooks' refusal of a second invoice with the same DocNumber,
//! which sends the engine to adopt the invoice it finds).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::QuickbooksConnector;
use super::batch::BatchWriter;
use crate::retry::RetryPolicy;
use crate::{Changes, Connector, ConnectorError, FindQuery, RateLimitPolicy, Record};

pub struct BatchingConnector {
    inner: Arc<QuickbooksConnector>,
    writer: BatchWriter,
}

impl BatchingConnector {
    /// `linger`: how long a partial batch waits for more writes ([`BatchWriter::DEFAULT_LINGER`] is a good value).
    pub fn new(inner: Arc<QuickbooksConnector>, linger: Duration) -> Self {
        let writer = BatchWriter::new(inner.clone(), linger, RetryPolicy::default());
        BatchingConnector { inner, writer }
    }

    /// Batch calls sent so far.
    pub fn batch_calls(&self) -> u64 {
        self.writer.batch_calls()
    }
}

#[async_trait]
impl Connector for BatchingConnector {
    fn system(&self) -> &'static str {
        self.inner.system()
    }

    fn rate_limit_policy(&self) -> RateLimitPolicy {
        self.inner.rate_limit_policy()
    }

    async fn test_connection(&self) -> Result<String, ConnectorError> {
        self.inner.test_connection().await
    }

    async fn get(&self, object: &str, id: &str, fields: &[String]) -> Result<Option<Record>, ConnectorError> {
        self.inner.get(object, id, fields).await
    }

    async fn find(&self, query: &FindQuery) -> Result<Vec<Record>, ConnectorError> {
        self.inner.find(query).await
    }

    async fn create(&self, object: &str, record: &Record, idempotency_key: &str) -> Result<Record, ConnectorError> {
        self.writer.create(object, record.clone(), idempotency_key).await
    }

    async fn update(&self, object: &str, id: &str, fields: &Record) -> Result<Record, ConnectorError> {
        self.inner.update(object, id, fields).await
    }

    async fn delete(&self, object: &str, id: &str) -> Result<bool, ConnectorError> {
        self.inner.delete(object, id).await
    }

    async fn changes_page(
        &self,
        object: &str,
        since: DateTime<Utc>,
        fields: &[String],
        page: Option<&str>,
    ) -> Result<Changes, ConnectorError> {
        self.inner.changes_page(object, since, fields, page).await
    }

    fn change_timestamp(&self, record: &Record) -> Option<DateTime<Utc>> {
        self.inner.change_timestamp(record)
    }

    async fn deletions_since(&self, object: &str, since: DateTime<Utc>, fields: &[String]) -> Result<Changes, ConnectorError> {
        Connector::deletions_since(self.inner.as_ref(), object, since, fields).await
    }

    fn is_deleted(&self, record: &Record) -> bool {
        self.inner.is_deleted(record)
    }

    fn active_field(&self, object: &str) -> Option<&'static str> {
        self.inner.active_field(object)
    }

    fn change_timestamp_fields(&self) -> &'static [&'static str] {
        self.inner.change_timestamp_fields()
    }

    fn record_version(&self, record: &Record) -> Option<String> {
        self.inner.record_version(record)
    }

    fn is_duplicate_error(&self, err: &ConnectorError) -> bool {
        self.inner.is_duplicate_error(err)
    }

    fn record_id(&self, record: &Record) -> Option<String> {
        self.inner.record_id(record)
    }

    fn encode_invoice(&self, invoice: &ledgerlink_model::Invoice) -> Result<Record, ConnectorError> {
        self.inner.encode_invoice(invoice)
    }
}
