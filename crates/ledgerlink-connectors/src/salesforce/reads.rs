//! Coalesced reads: concurrent single-record reads from many jobs leave as one call.
//!
//! A flow's steps read one record at a time (the opportunity's account, its lines, each line's product). With
//! many jobs running at once those reads are of the same few shapes, so a [`ReadCoalescer`] gathers them:
//! - `get(object, id, fields)` calls with the same object and fields become one sObject Collections retrieve
//!   (`GET /composite/sobjects/{Object}?ids=…&fields=…`, records in the order asked, `null` for ids not found);
//! - `find` calls on one record-id field (`OpportunityId = '006…'`) with the same object and fields become one SOQL
//!   query with `OpportunityId IN (…)`, whose rows are handed back to each caller by that field.
//!
//! No read waits for company: while no call of its shape is in flight it leaves at once, alone. Reads that
//! arrive while [`MAX_IN_FLIGHT`] calls of their shape are out queue up and leave together when one returns. A
//! lone job therefore sees the latency it always had; under load a call carries many reads, which spends one
//! call of the org's daily API budget instead of many and gives the org one query to run instead of dozens.
//!
//! A batch refused as a whole for a reason that is not transient (a malformed id, say) is not the fault of every
//! caller: its reads are then sent one by one, so the bad one fails alone with its own error. A transient
//! failure (throttle, network, session) is given to every caller of the batch, classified as usual; their jobs
//! retry as they would after a single read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{SalesforceConnector, classify, strip_attributes, unexpected};
use crate::{Connector, ConnectorError, FindQuery, Record};

/// The most ids one coalesced call carries (a Collections retrieve takes up to 2,000; 200 keeps the URL short).
pub const MAX_BATCH: usize = 200;

/// Calls of one shape that may be out at once before further reads of that shape wait to be coalesced.
pub const MAX_IN_FLIGHT: usize = 2;

/// The shape of a coalescible read: reads of one shape can share a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Shape {
    /// Reads by id with these fields.
    Get { object: String, fields: Vec<String> },
    /// Finds by one record-id field (`by`) with these fields.
    FindBy { object: String, fields: Vec<String>, by: String },
}

/// One caller's answer: a get's record (or `None`), or a find's rows.
type Reply = Result<Vec<Record>, ConnectorError>;

struct Pending {
    /// The id asked for (a get) or the value of the `by` field (a find).
    key: String,
    reply: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct Group {
    pending: Vec<Pending>,
    in_flight: usize,
}

struct Inner {
    sf: Arc<SalesforceConnector>,
    groups: Mutex<HashMap<Shape, Group>>,
    /// Coalesced calls sent, and the reads they carried.
    calls: AtomicU64,
    reads: AtomicU64,
}

/// Coalesces concurrent single-record reads of one Salesforce connection (see the module documentation).
#[derive(Clone)]
pub struct ReadCoalescer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ReadCoalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCoalescer").field("calls", &self.calls()).field("reads", &self.reads()).finish()
    }
}

/// Salesforce record ids are 15 characters, case-sensitive, or 18 with a case-safe suffix; the first 15 identify
/// the record either way, and that is what rows are matched to their callers by.
fn id_key(id: &str) -> Option<&str> {
    let ok = (id.len() == 15 || id.len() == 18) && id.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| &id[..15])
}

impl ReadCoalescer {
    pub fn new(sf: Arc<SalesforceConnector>) -> Self {
        ReadCoalescer {
            inner: Arc::new(Inner {
                sf,
                groups: Mutex::new(HashMap::new()),
                calls: AtomicU64::new(0),
                reads: AtomicU64::new(0),
            }),
        }
    }

    /// Coalesced calls sent so far.
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// Reads those calls answered.
    pub fn reads(&self) -> u64 {
        self.inner.reads.load(Ordering::Relaxed)
    }

    /// Reads one record. Reads without an explicit field list, or with an id that is not a Salesforce id, go
    /// alone (a Collections retrieve needs its fields named; a malformed id is refused on its own).
    pub async fn get(&self, object: &str, id: &str, fields: &[String]) -> Result<Option<Record>, ConnectorError> {
        if fields.is_empty() || id_key(id).is_none() {
            return self.inner.sf.get(object, id, fields).await;
        }
        super::soql::check_object(object)?;
        for f in fields {
            super::soql::check_field(f)?;
        }
        let shape = Shape::Get { object: object.to_string(), fields: normalised(fields, None) };
        let mut rows = self.submit(shape, id.to_string()).await?;
        Ok(rows.pop())
    }

    /// Runs a find. One equality on a record-id field (a name ending in `Id`) with a Salesforce id for value, an
    /// explicit field list and no limit is coalesced; anything else goes alone.
    pub async fn find(&self, query: &FindQuery) -> Result<Vec<Record>, ConnectorError> {
        let by = match query.equals.as_slice() {
            [(field, Value::String(value))]
                if query.limit.is_none()
                    && !query.fields.is_empty()
                    && field.ends_with("Id")
                    && crate::split_comparison(field).1 == "="
                    && id_key(value).is_some() =>
            {
                (field.clone(), value.clone())
            }
            _ => return self.inner.sf.find(query).await,
        };
        super::soql::check_object(&query.object)?;
        super::soql::check_field(&by.0)?;
        for f in &query.fields {
            super::soql::check_field(f)?;
        }
        let requested = query.fields.iter().any(|f| f.eq_ignore_ascii_case(&by.0));
        let shape = Shape::FindBy { object: query.object.clone(), fields: normalised(&query.fields, Some(&by.0)), by: by.0.clone() };
        let mut rows = self.submit(shape, by.1).await?;
        if !requested {
            for row in &mut rows {
                row.retain(|k, _| !k.eq_ignore_ascii_case(&by.0));
            }
        }
        Ok(rows)
    }

    async fn submit(&self, shape: Shape, key: String) -> Reply {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut groups = self.inner.groups.lock().unwrap_or_else(|e| e.into_inner());
            let group = groups.entry(shape.clone()).or_default();
            group.pending.push(Pending { key, reply: tx });
            if group.in_flight < MAX_IN_FLIGHT {
                group.in_flight += 1;
                true
            } else {
                false
            }
        };
        if start {
            // A task of its own: a caller that gives up (its job cancelled) must not strand the others.
            tokio::spawn(drain(self.inner.clone(), shape));
        }
        rx.await.unwrap_or_else(|_| {
            Err(ConnectorError::Transient { message: "the call carrying this read was abandoned".into(), outcome_unknown: false })
        })
    }
}

/// The field list of a shape: sorted, deduplicated, with `Id` (gets) or the `by` field (finds) included.
fn normalised(fields: &[String], by: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = fields.to_vec();
    out.push(by.unwrap_or("Id").to_string());
    out.sort_by_key(|f| f.to_ascii_lowercase());
    out.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    out
}

/// Sends the shape's pending reads, a batch at a time, until none are left; then gives its in-flight slot back.
async fn drain(inner: Arc<Inner>, shape: Shape) {
    loop {
        let batch: Vec<Pending> = {
            let mut groups = inner.groups.lock().unwrap_or_else(|e| e.into_inner());
            let group = groups.entry(shape.clone()).or_default();
            if group.pending.is_empty() {
                group.in_flight -= 1;
                if group.in_flight == 0 {
                    groups.remove(&shape);
                }
                return;
            }
            let n = group.pending.len().min(MAX_BATCH);
            group.pending.drain(..n).collect()
        };
        inner.calls.fetch_add(1, Ordering::Relaxed);
        inner.reads.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut keys: Vec<String> = batch.iter().map(|p| p.key.clone()).collect();
        keys.sort();
        keys.dedup();
        let answer = match &shape {
            Shape::Get { object, fields } => retrieve(&inner.sf, object, fields, &keys).await,
            Shape::FindBy { object, fields, by } => find_in(&inner.sf, object, fields, by, &keys).await,
        };
        match answer {
            Ok(by_key) => {
                for p in batch {
                    let rows = by_key.get(id_key(&p.key).unwrap_or(&p.key)).cloned().unwrap_or_default();
                    let _ = p.reply.send(Ok(rows));
                }
            }
            Err(e) if e.is_retryable() => {
                for p in batch {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
            Err(_) => {
                // Refused as a whole: each read on its own, so only the bad one fails.
                for p in batch {
                    let single = match &shape {
                        Shape::Get { object, fields } => inner.sf.get(object, &p.key, fields).await.map(|r| r.into_iter().collect()),
                        Shape::FindBy { object, fields, by } => {
                            let query = FindQuery {
                                object: object.clone(),
                                equals: vec![(by.clone(), Value::String(p.key.clone()))],
                                fields: fields.clone(),
                                limit: None,
                            };
                            inner.sf.find(&query).await
                        }
                    };
                    let _ = p.reply.send(single);
                }
            }
        }
    }
}

/// One Collections retrieve: each found record under its id's 15-character key.
async fn retrieve(
    sf: &SalesforceConnector,
    object: &str,
    fields: &[String],
    ids: &[String],
) -> Result<HashMap<String, Vec<Record>>, ConnectorError> {
    let url = sf.data_path(&format!("composite/sobjects/{object}"));
    let params = [("ids", ids.join(",")), ("fields", fields.join(","))];
    let reply = sf.send(Method::GET, &url, &params, None).await?;
    if !reply.is_success() {
        return Err(classify::classify(&reply));
    }
    let Value::Array(items) = reply.json()? else {
        return Err(unexpected(&format!("the {object} retrieve answer is not a list")));
    };
    if items.len() != ids.len() {
        return Err(unexpected(&format!("the {object} retrieve answered {} records for {} ids", items.len(), ids.len())));
    }
    let mut out = HashMap::new();
    for (id, item) in ids.iter().zip(items) {
        if let Value::Object(mut rec) = item {
            strip_attributes(&mut rec);
            out.insert(id_key(id).unwrap_or(id).to_string(), vec![rec]);
        }
    }
    Ok(out)
}

/// One query with `by IN (keys)`: the rows under the 15-character key of their `by` value.
async fn find_in(
    sf: &SalesforceConnector,
    object: &str,
    fields: &[String],
    by: &str,
    keys: &[String],
) -> Result<HashMap<String, Vec<Record>>, ConnectorError> {
    let query = FindQuery {
        object: object.to_string(),
        equals: vec![(by.to_string(), Value::Array(keys.iter().cloned().map(Value::String).collect()))],
        fields: fields.to_vec(),
        limit: None,
    };
    let rows = sf.find(&query).await?;
    let mut out: HashMap<String, Vec<Record>> = HashMap::new();
    for row in rows {
        let value = row.iter().find(|(k, _)| k.eq_ignore_ascii_case(by)).and_then(|(_, v)| v.as_str()).and_then(id_key);
        if let Some(key) = value {
            out.entry(key.to_string()).or_default().push(row);
        }
    }
    Ok(out)
}
