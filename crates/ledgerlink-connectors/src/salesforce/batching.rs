//! A Salesforce connector whose writes are coalesced: concurrent single creates and updates from many jobs leave
//! as sObject Collections calls of up to 200 records (through one [`CollectionsWriter`] per object), which spend
//! one call of the org's daily API budget instead of two hundred. Reads by id, and finds by one record-id field,
//! are coalesced too when [`CollectionsConnector::with_coalesced_reads`] says so ([`super::reads`]). Everything
//! else is the plain connector; the analogue of the QuickBooks [`crate::quickbooks::batching::BatchingConnector`].
//!
//! Each caller still gets its own record's answer: the Collections call is sent with `allOrNone: false`, so a
//! record Salesforce refuses fails alone, classified on its own, and the others are written. The record a write
//! returns is read back once per batch (its written fields, `Id` and `SystemModstamp`), so a batch costs two
//! calls whatever its size. The daily budget guard sees every call, as for single writes.
//!
//! Exactly once: a create of an object with an idempotency field is a Collections upsert by that field, as the
//! single create is an upsert. Other creates whose batch ended with an unknown outcome are looked up one by one
//! before being reported, exactly as a single create is ([`SalesforceConnector`]'s module documentation).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::SalesforceConnector;
use super::collections::CollectionsWriter;
use super::reads::ReadCoalescer;
use crate::{Changes, Connector, ConnectorError, FindQuery, RateLimitPolicy, Record};

pub struct CollectionsConnector {
    inner: Arc<SalesforceConnector>,
    linger: Duration,
    /// One writer per object type (a Collections call carries one type per upsert, and one type keeps each
    /// batch's read-back to a single retrieve).
    writers: Mutex<HashMap<String, CollectionsWriter>>,
    /// Whether creates and updates are coalesced (else they go one by one, as the plain connector sends them).
    batch_writes: bool,
    reads: Option<ReadCoalescer>,
}

impl std::fmt::Debug for CollectionsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectionsConnector").field("inner", &self.inner).field("linger", &self.linger).finish_non_exhaustive()
    }
}

impl CollectionsConnector {
    /// `linger`: how long a partial batch waits for more writes ([`super::collections::DEFAULT_LINGER`] is a
    /// good value).
    pub fn new(inner: Arc<SalesforceConnector>, linger: Duration) -> Self {
        CollectionsConnector { inner, linger, writers: Mutex::new(HashMap::new()), batch_writes: true, reads: None }
    }

    /// Turns read coalescing on or off ([`super::reads`]; off by default).
    pub fn with_coalesced_reads(mut self, on: bool) -> Self {
        self.reads = on.then(|| ReadCoalescer::new(self.inner.clone()));
        self
    }

    /// Turns write coalescing on or off (on by default): a connection may batch its reads only.
    pub fn with_batched_writes(mut self, on: bool) -> Self {
        self.batch_writes = on;
        self
    }

    /// The read coalescer, when reads are coalesced: its counters say how many reads shared how many calls.
    pub fn read_coalescer(&self) -> Option<&ReadCoalescer> {
        self.reads.as_ref()
    }

    /// The plain connector underneath.
    pub fn inner(&self) -> &Arc<SalesforceConnector> {
        &self.inner
    }

    /// Collections write calls sent so far, over every object.
    pub fn collection_calls(&self) -> u64 {
        self.writers.lock().unwrap_or_else(|e| e.into_inner()).values().map(CollectionsWriter::calls).sum()
    }

    fn writer(&self, object: &str) -> Result<CollectionsWriter, ConnectorError> {
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = writers.get(object) {
            return Ok(w.clone());
        }
        let w = CollectionsWriter::with_linger(self.inner.clone(), object, self.linger)?;
        writers.insert(object.to_string(), w.clone());
        Ok(w)
    }
}

#[async_trait]
impl Connector for CollectionsConnector {
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
        match &self.reads {
            Some(reads) => reads.get(object, id, fields).await,
            None => self.inner.get(object, id, fields).await,
        }
    }

    async fn find(&self, query: &FindQuery) -> Result<Vec<Record>, ConnectorError> {
        match &self.reads {
            Some(reads) => reads.find(query).await,
            None => self.inner.find(query).await,
        }
    }

    /// A create joins the object's next Collections create (or, with an idempotency field, upsert) call.
    async fn create(&self, object: &str, record: &Record, idempotency_key: &str) -> Result<Record, ConnectorError> {
        if !self.batch_writes {
            return self.inner.create(object, record, idempotency_key).await;
        }
        let writer = self.writer(object)?;
        let mut body = record.clone();
        body.remove("Id");
        body.remove("attributes");
        if let Some(field) = self.inner.idempotency_field(object) {
            let value = self.inner.idempotency_value(object, field, &body, idempotency_key)?;
            body.insert(field.to_string(), Value::String(value));
            let outcome = writer.upsert(field, body.clone()).await?;
            return Ok(self.inner.read_back(object, &outcome.id, &body).await);
        }
        let started = Utc::now();
        match writer.create_read(body.clone()).await {
            Ok((_, stored)) => Ok(stored),
            Err(ConnectorError::Transient { message, outcome_unknown: true }) => {
                self.inner.settle_unknown_create(object, &body, started, message).await
            }
            Err(e) => Err(e),
        }
    }

    /// An update joins the object's next `PATCH /composite/sobjects` call; nothing is sent as a single PATCH.
    async fn update(&self, object: &str, id: &str, fields: &Record) -> Result<Record, ConnectorError> {
        if !self.batch_writes {
            return self.inner.update(object, id, fields).await;
        }
        let mut body = fields.clone();
        body.remove("Id");
        body.remove("attributes");
        if body.is_empty() {
            // Nothing to write: the record as it is.
            return self.inner.read(object, id, &[]).await?.ok_or_else(|| ConnectorError::NotFound {
                message: format!("Salesforce {object} {id} does not exist"),
            });
        }
        let (_, stored) = self.writer(object)?.update_read(id, body).await?;
        Ok(stored)
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

    async fn delete(&self, object: &str, id: &str) -> Result<bool, ConnectorError> {
        Connector::delete(self.inner.as_ref(), object, id).await
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
