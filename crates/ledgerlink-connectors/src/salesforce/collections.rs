//! Batched writes through sObject Collections.
//!
//! Layout: a [`CollectionsWriter`] serves one object type. Callers submit single creates, updates or upserts
//! and await their own [`WriteOutcome`]; the writer coalesces what is pending of one kind into
//! `POST /composite/sobjects` (creates), `PATCH /composite/sobjects` (updates) or
//! `PATCH /composite/sobjects/{Object}/{ExtIdField}` (upserts) calls of at most [`MAX_BATCH`] records with
//! `allOrNone: false`, and hands each caller the result at its record's position. A batch is sent as soon as it is
//! full, or after a short linger for stragglers, from a task of its own so that a caller giving up does not strand
//! the others. A failure of the whole call (throttle, session, network) is given to every record of the batch,
//! classified as usual; a per-record refusal becomes that record's [`ConnectorError::Validation`].
//!
//! Callers that need the record as stored ([`CollectionsWriter::create_read`], [`CollectionsWriter::update_read`])
//! get it from one `GET /composite/sobjects/{Object}?ids=…&fields=…` per batch (the fields any record of the batch
//! wrote, with `Id` and `SystemModstamp`), not from one read per record: a batch of 200 costs two calls, not 201.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{SalesforceConnector, classify, soql};
use crate::{ConnectorError, Record};

/// The most records one Collections call takes.
pub const MAX_BATCH: usize = 200;

/// How long a batch that is not full waits for more records by default.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(20);

/// What one record's write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    pub id: String,
    /// True for creates, and for upserts that found no match.
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Kind {
    Create,
    Update,
    Upsert(String),
}

/// One record's answer: the outcome and, when its caller asked, the record as stored after the batch.
type Reply = Result<(WriteOutcome, Option<Record>), ConnectorError>;

struct Pending {
    record: Record,
    /// The caller wants the record read back after the write.
    read_back: bool,
    reply: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    /// A lingering flush is scheduled for this queue.
    scheduled: bool,
}

struct Inner {
    sf: Arc<SalesforceConnector>,
    object: String,
    linger: Duration,
    queues: Mutex<HashMap<Kind, Queue>>,
    /// Collections write calls sent.
    calls: AtomicU64,
}

/// Coalesces single-record writes of one object type into Collections calls.
#[derive(Clone)]
pub struct CollectionsWriter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CollectionsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectionsWriter")
            .field("object", &self.inner.object)
            .field("linger", &self.inner.linger)
            .finish_non_exhaustive()
    }
}

fn invalid(message: String, field: Option<&str>) -> ConnectorError {
    ConnectorError::Validation { code: "invalid_record".into(), message, field: field.map(str::to_string) }
}

impl CollectionsWriter {
    /// A writer for `object` that waits [`DEFAULT_LINGER`] for a batch to fill.
    pub fn new(sf: Arc<SalesforceConnector>, object: &str) -> Result<Self, ConnectorError> {
        Self::with_linger(sf, object, DEFAULT_LINGER)
    }

    /// A writer whose batches that are not full wait `linger` for more records before being sent.
    pub fn with_linger(sf: Arc<SalesforceConnector>, object: &str, linger: Duration) -> Result<Self, ConnectorError> {
        soql::check_object(object)?;
        Ok(CollectionsWriter {
            inner: Arc::new(Inner {
                sf,
                object: object.to_string(),
                linger,
                queues: Mutex::new(HashMap::new()),
                calls: AtomicU64::new(0),
            }),
        })
    }

    pub fn object(&self) -> &str {
        &self.inner.object
    }

    /// Collections write calls this writer has sent.
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// Creates one record as part of a batch.
    pub async fn create(&self, record: Record) -> Result<WriteOutcome, ConnectorError> {
        let mut record = record;
        record.remove("Id");
        self.submit(Kind::Create, record, false).await.map(|(o, _)| o)
    }

    /// [`Self::create`], returning also the record as stored: its written fields, `Id` and `SystemModstamp`
    /// (read back once for the whole batch). If that read fails, the written fields with the id stand in.
    pub async fn create_read(&self, record: Record) -> Result<(WriteOutcome, Record), ConnectorError> {
        let mut record = record;
        record.remove("Id");
        let written = record.clone();
        let (outcome, stored) = self.submit(Kind::Create, record, true).await?;
        let stored = stored.unwrap_or_else(|| stand_in(&written, &outcome.id));
        Ok((outcome, stored))
    }

    /// Updates the given fields of record `id` as part of a batch.
    pub async fn update(&self, id: &str, fields: Record) -> Result<WriteOutcome, ConnectorError> {
        let record = self.update_body(id, fields)?;
        self.submit(Kind::Update, record, false).await.map(|(o, _)| o)
    }

    /// [`Self::update`], returning also the record as stored (see [`Self::create_read`]).
    pub async fn update_read(&self, id: &str, fields: Record) -> Result<(WriteOutcome, Record), ConnectorError> {
        let record = self.update_body(id, fields)?;
        let written = record.clone();
        let (outcome, stored) = self.submit(Kind::Update, record, true).await?;
        let stored = stored.unwrap_or_else(|| stand_in(&written, &outcome.id));
        Ok((outcome, stored))
    }

    fn update_body(&self, id: &str, fields: Record) -> Result<Record, ConnectorError> {
        if id.is_empty() {
            return Err(invalid(format!("an update of a {} needs its Id", self.inner.object), Some("Id")));
        }
        let mut record = fields;
        record.remove("attributes");
        record.insert("Id".into(), Value::String(id.to_string()));
        Ok(record)
    }

    /// Upserts one record by the external id `field`, whose value the record must carry.
    pub async fn upsert(&self, field: &str, record: Record) -> Result<WriteOutcome, ConnectorError> {
        soql::check_field(field)?;
        match record.get(field) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::Number(_)) => {}
            _ => {
                return Err(invalid(
                    format!("a {} to upsert by `{field}` must carry a value for it", self.inner.object),
                    Some(field),
                ));
            }
        }
        let mut record = record;
        record.remove("Id");
        self.submit(Kind::Upsert(field.to_string()), record, false).await.map(|(o, _)| o)
    }

    async fn submit(&self, kind: Kind, mut record: Record, read_back: bool) -> Reply {
        record.insert("attributes".into(), json!({"type": self.inner.object}));
        let (tx, rx) = oneshot::channel();
        let full = {
            let mut queues = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner());
            let queue = queues.entry(kind.clone()).or_default();
            queue.pending.push(Pending { record, read_back, reply: tx });
            if queue.pending.len() >= MAX_BATCH {
                Some(queue.pending.drain(..MAX_BATCH).collect::<Vec<_>>())
            } else {
                if !queue.scheduled {
                    queue.scheduled = true;
                    let inner = self.inner.clone();
                    let kind = kind.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(inner.linger).await;
                        let batches: Vec<Vec<Pending>> = {
                            let mut queues = inner.queues.lock().unwrap_or_else(|e| e.into_inner());
                            let queue = queues.entry(kind.clone()).or_default();
                            queue.scheduled = false;
                            let mut all = std::mem::take(&mut queue.pending);
                            let mut out = Vec::new();
                            while !all.is_empty() {
                                let rest = all.split_off(all.len().min(MAX_BATCH));
                                out.push(std::mem::replace(&mut all, rest));
                            }
                            out
                        };
                        for batch in batches {
                            tokio::spawn(send_batch(inner.clone(), kind.clone(), batch));
                        }
                    });
                }
                None
            }
        };
        if let Some(batch) = full {
            tokio::spawn(send_batch(self.inner.clone(), kind, batch));
        }
        rx.await.unwrap_or_else(|_| {
            Err(ConnectorError::Transient {
                message: format!("the batch holding this {} write was abandoned", self.inner.object),
                outcome_unknown: true,
            })
        })
    }
}

/// The written fields with the id: what stands in for a record that could not be read back.
fn stand_in(written: &Record, id: &str) -> Record {
    let mut rec = written.clone();
    rec.remove("attributes");
    rec.insert("Id".into(), Value::String(id.to_string()));
    rec
}

/// Sends one batch and answers each of its callers.
async fn send_batch(inner: Arc<Inner>, kind: Kind, batch: Vec<Pending>) {
    let mut wanted_fields: Vec<String> = Vec::new();
    let mut wants = Vec::with_capacity(batch.len());
    let mut records = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for p in batch {
        if p.read_back {
            wanted_fields.extend(p.record.keys().filter(|k| *k != "attributes").cloned());
        }
        wants.push(p.read_back);
        records.push(p.record);
        replies.push(p.reply);
    }
    inner.calls.fetch_add(1, Ordering::Relaxed);
    let results = write_batch(&inner.sf, &inner.object, &kind, records).await;
    match results {
        Ok(outcomes) => {
            let ids: Vec<String> = outcomes
                .iter()
                .zip(&wants)
                .filter_map(|(o, want)| if *want { o.as_ref().ok().map(|o| o.id.clone()) } else { None })
                .collect();
            let mut stored = read_back(&inner, &ids, wanted_fields).await;
            for ((reply, outcome), want) in replies.into_iter().zip(outcomes).zip(wants) {
                let answer = outcome.map(|o| {
                    let rec = if want { stored.remove(&o.id) } else { None };
                    (o, rec)
                });
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// The records `ids` as stored, with `fields` (deduplicated here) and `Id` and `SystemModstamp`, from one
/// Collections retrieve. A failed read is logged and gives nothing: the writes themselves succeeded, and their
/// callers fall back to the fields they wrote.
async fn read_back(inner: &Inner, ids: &[String], mut fields: Vec<String>) -> HashMap<String, Record> {
    if ids.is_empty() {
        return HashMap::new();
    }
    fields.extend(["Id".to_string(), "SystemModstamp".to_string()]);
    fields.sort();
    fields.dedup();
    let url = inner.sf.data_path(&format!("composite/sobjects/{}", inner.object));
    let params = [("ids", ids.join(",")), ("fields", fields.join(","))];
    let answer = match inner.sf.send(Method::GET, &url, &params, None).await {
        Ok(reply) if reply.is_success() => reply.json(),
        Ok(reply) => Err(classify::classify(&reply)),
        Err(e) => Err(e),
    };
    match answer {
        Ok(Value::Array(items)) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Object(mut rec) => {
                    rec.remove("attributes");
                    let id = rec.get("Id").and_then(Value::as_str)?.to_string();
                    Some((id, rec))
                }
                _ => None,
            })
            .collect(),
        Ok(_) => {
            tracing::warn!(object = %inner.object, "reading back a written batch gave no list; using the written fields");
            HashMap::new()
        }
        Err(e) => {
            tracing::warn!(object = %inner.object, error = %e, "reading back a written batch failed; using the written fields");
            HashMap::new()
        }
    }
}

/// One Collections call; per-record results in the order of `records`.
async fn write_batch(
    sf: &SalesforceConnector,
    object: &str,
    kind: &Kind,
    records: Vec<Record>,
) -> Result<Vec<Result<WriteOutcome, ConnectorError>>, ConnectorError> {
    let count = records.len();
    let body = json!({"allOrNone": false, "records": records});
    let (method, url) = match kind {
        Kind::Create => (Method::POST, sf.data_path("composite/sobjects")),
        Kind::Update => (Method::PATCH, sf.data_path("composite/sobjects")),
        Kind::Upsert(field) => (Method::PATCH, sf.data_path(&format!("composite/sobjects/{object}/{field}"))),
    };
    let reply = sf.send(method, &url, &[], Some(&body)).await?;
    if !reply.is_success() {
        return Err(classify::classify(&reply));
    }
    let answer = reply.json()?;
    let items = answer.as_array().ok_or_else(|| ConnectorError::Transient {
        message: format!("the Collections answer for {object} is not an array"),
        outcome_unknown: true,
    })?;
    if items.len() != count {
        return Err(ConnectorError::Transient {
            message: format!("the Collections answer for {count} {object} records has {} results", items.len()),
            outcome_unknown: true,
        });
    }
    Ok(items.iter().map(|item| record_result(object, kind, item)).collect())
}

/// One record's `{id, success, errors, created?}`.
fn record_result(object: &str, kind: &Kind, item: &Value) -> Result<WriteOutcome, ConnectorError> {
    let success = item.get("success").and_then(Value::as_bool).unwrap_or(false);
    if !success {
        let errors = item.get("errors").cloned().unwrap_or(Value::Array(Vec::new()));
        // Per-record errors carry `statusCode` where whole-call errors carry `errorCode`.
        let first = errors.as_array().and_then(|a| a.first()).cloned().unwrap_or(Value::Null);
        let code = first
            .get("statusCode")
            .or_else(|| first.get("errorCode"))
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN_EXCEPTION")
            .to_string();
        let message = first.get("message").and_then(Value::as_str).unwrap_or("the record was refused").to_string();
        let field = first
            .get("fields")
            .and_then(Value::as_array)
            .and_then(|f| f.first())
            .and_then(Value::as_str)
            .map(str::to_string);
        return Err(classify::record_error(&code, &message, field));
    }
    let id = item.get("id").and_then(Value::as_str).ok_or_else(|| ConnectorError::Transient {
        message: format!("a successful {object} Collections result has no id"),
        outcome_unknown: true,
    })?;
    let created = match kind {
        Kind::Create => true,
        Kind::Update => false,
        Kind::Upsert(_) => item.get("created").and_then(Value::as_bool).unwrap_or(false),
    };
    Ok(WriteOutcome { id: id.to_string(), created })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_record_results_map_to_outcomes_and_classes() {
        let ok = json!({"id": "001A", "success": true, "errors": [], "created": true});
        assert_eq!(
            record_result("Account", &Kind::Upsert("Ext__c".into()), &ok).unwrap(),
            WriteOutcome { id: "001A".into(), created: true }
        );
        assert!(!record_result("Account", &Kind::Update, &ok).unwrap().created);
        let refused = json!({"success": false, "errors": [
            {"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Name]", "fields": ["Name"]}
        ]});
        match record_result("Account", &Kind::Create, &refused).unwrap_err() {
            ConnectorError::Validation { code, field, .. } => {
                assert_eq!(code, "REQUIRED_FIELD_MISSING");
                assert_eq!(field.as_deref(), Some("Name"));
            }
            other => panic!("{other:?}"),
        }
        let locked = json!({"success": false, "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "locked"}]});
        assert!(record_result("Account", &Kind::Update, &locked).unwrap_err().is_retryable());
    }
}
