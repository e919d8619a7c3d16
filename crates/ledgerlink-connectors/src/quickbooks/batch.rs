//! `POST /batch`: up to 30 writes in one call, and a [`BatchWriter`] that coalesces single writes into batches.
//!
//! Layout: [`QuickbooksConnector::batch`] sends one batch and maps each item's answer (the entity, or a per-item
//! `Fault` classified like a single call's) back to its `bId`; [`BatchWriter`] takes single writes from many
//! callers through an async API, gathers what is pending (30 items, or whatever arrived within a short linger;
//! longer while the realm's batch allowance is scarce) into one batch call, and hands each caller its own item's
//! result.
//!
//! Exactly once: a batch carries a `requestid` (at most 36 characters) derived from its items' idempotency keys,
//! and a failed batch call is retried whole with the same `requestid`, so QuickBooks answers a repeat with the
//! first result instead of applying the items again. Each item's `bId` (at most 10 characters) is derived from its
//! own idempotency key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{MAX_BATCH_ITEMS, QuickbooksConnector, classify, query, unexpected};
use crate::limiter::Limiter;
use crate::retry::{self, RetryPolicy};
use crate::{ConnectorError, Record};

/// The longest `requestid` of a batch call.
pub const MAX_BATCH_REQUEST_ID: usize = 36;
/// The longest `bId`.
pub const MAX_BID: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOperation {
    Create,
    Update,
    Delete,
}

impl BatchOperation {
    fn wire(self) -> &'static str {
        match self {
            BatchOperation::Create => "create",
            BatchOperation::Update => "update",
            BatchOperation::Delete => "delete",
        }
    }
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    pub b_id: String,
    pub operation: BatchOperation,
    /// Entity name (`Customer`).
    pub entity: String,
    /// The entity body (for update and delete: with `Id` and `SyncToken`).
    pub body: Record,
}

fn hex_digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `bId` for an idempotency key: 10 hex characters of its SHA-256, the same for every retry.
pub fn b_id(idempotency_key: &str) -> String {
    hex_digest(&[idempotency_key])[..MAX_BID].to_string()
}

/// The `requestid` of a batch: 36 hex characters of the SHA-256 of its items' keys, so the same batch sent
/// again is recognised as a repeat.
pub fn batch_request_id(keys: &[&str]) -> String {
    hex_digest(keys)[..MAX_BATCH_REQUEST_ID].to_string()
}

fn invalid(message: String) -> ConnectorError {
    ConnectorError::Validation { code: "invalid_batch".into(), message, field: None }
}

/// The request body of a batch.
pub fn batch_body(items: &[BatchItem]) -> Value {
    let requests: Vec<Value> = items
        .iter()
        .map(|i| {
            let mut m = serde_json::Map::new();
            m.insert("bId".into(), json!(i.b_id));
            m.insert("operation".into(), json!(i.operation.wire()));
            m.insert(i.entity.clone(), Value::Object(i.body.clone()));
            Value::Object(m)
        })
        .collect();
    json!({ "BatchItemRequest": requests })
}

/// Maps a batch answer to each item's result, in the order of `items`. An item the answer does not mention is
/// a transient failure with an unknown outcome.
pub fn parse_batch_response(
    items: &[BatchItem],
    body: &Value,
) -> Result<Vec<Result<Record, ConnectorError>>, ConnectorError> {
    let answers = body
        .get("BatchItemResponse")
        .and_then(Value::as_array)
        .ok_or_else(|| unexpected("the batch answer has no BatchItemResponse list"))?;
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    for a in answers {
        if let Some(id) = a.get("bId").and_then(Value::as_str) {
            by_id.insert(id, a);
        }
    }
    Ok(items
        .iter()
        .map(|item| {
            let Some(answer) = by_id.get(item.b_id.as_str()) else {
                return Err(ConnectorError::Transient {
                    message: format!("the batch answer has no result for item {}", item.b_id),
                    outcome_unknown: true,
                });
            };
            if let Some(fault) = answer.get("Fault") {
                let text = json!({ "Fault": fault }).to_string();
                return Err(classify::classify_parts(400, None, &text));
            }
            let key = answer.as_object().and_then(|m| m.keys().find(|k| k.eq_ignore_ascii_case(&item.entity)).cloned());
            match key.and_then(|k| answer.get(&k)).and_then(Value::as_object) {
                Some(rec) => Ok(rec.clone()),
                None => Err(unexpected(&format!("batch item {} answered without a {}", item.b_id, item.entity))),
            }
        })
        .collect())
}

impl QuickbooksConnector {
    /// Sends one batch of at most 30 items with `request_id` (at most 36 characters) and returns each item's
    /// result in item order. The call itself failing is the outer error.
    pub async fn batch(
        &self,
        request_id: &str,
        items: &[BatchItem],
    ) -> Result<Vec<Result<Record, ConnectorError>>, ConnectorError> {
        if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
            return Err(invalid(format!("a batch holds 1 to {MAX_BATCH_ITEMS} items, not {}", items.len())));
        }
        if request_id.is_empty() || request_id.chars().count() > MAX_BATCH_REQUEST_ID {
            return Err(invalid(format!(
                "a batch requestid has 1 to {MAX_BATCH_REQUEST_ID} characters; `{request_id}` has {}",
                request_id.chars().count()
            )));
        }
        let mut seen = HashSet::new();
        for item in items {
            query::check_entity(&item.entity)?;
            if item.b_id.is_empty() || item.b_id.chars().count() > MAX_BID {
                return Err(invalid(format!("bId `{}` must have 1 to {MAX_BID} characters", item.b_id)));
            }
            if !seen.insert(item.b_id.as_str()) {
                return Err(invalid(format!("bId `{}` appears twice in one batch", item.b_id)));
            }
        }
        let body = batch_body(items);
        let reply =
            self.send(Method::POST, "batch", &[("requestid", request_id.to_string())], Some(&body), true).await?;
        if !reply.is_success() {
            return Err(self.failure(&reply));
        }
        parse_batch_response(items, &reply.json()?)
    }
}

/// A write waiting for its batch.
struct Pending {
    key: String,
    item: BatchItem,
    reply: oneshot::Sender<Result<Record, ConnectorError>>,
}

/// Coalesces single writes from many callers into batch calls of at most 30 items.
#[derive(Debug, Clone)]
pub struct BatchWriter {
    tx: mpsc::UnboundedSender<Pending>,
    calls: Arc<AtomicU64>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("b_id", &self.item.b_id).finish_non_exhaustive()
    }
}

impl BatchWriter {
    /// The default wait for more writes before a partial batch is sent.
    pub const DEFAULT_LINGER: Duration = Duration::from_millis(20);

    /// Starts the writer's gathering task (on the current tokio runtime). It stops when every clone of the
    /// writer is dropped, after sending what is pending.
    pub fn new(connector: Arc<QuickbooksConnector>, linger: Duration, policy: RetryPolicy) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let calls = Arc::new(AtomicU64::new(0));
        tokio::spawn(gather(connector, rx, linger, policy, calls.clone()));
        BatchWriter { tx, calls }
    }

    /// Batch calls sent so far (retries included).
    pub fn batch_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    async fn submit(&self, key: &str, item: BatchItem) -> Result<Record, ConnectorError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Pending { key: key.to_string(), item, reply }).map_err(|_| ConnectorError::Transient {
            message: "the batch writer has stopped".into(),
            outcome_unknown: false,
        })?;
        answer.await.unwrap_or_else(|_| {
            Err(ConnectorError::Transient {
                message: "the batch writer stopped before answering".into(),
                outcome_unknown: true,
            })
        })
    }

    /// Creates `body` as a new `entity`; `idempotency_key` names this logical create.
    pub async fn create(&self, entity: &str, body: Record, idempotency_key: &str) -> Result<Record, ConnectorError> {
        let item =
            BatchItem { b_id: b_id(idempotency_key), operation: BatchOperation::Create, entity: entity.into(), body };
        self.submit(idempotency_key, item).await
    }

    /// Updates with `body` (carrying `Id`, `SyncToken` and, for a sparse update, `"sparse": true`).
    pub async fn update(&self, entity: &str, body: Record, idempotency_key: &str) -> Result<Record, ConnectorError> {
        let item =
            BatchItem { b_id: b_id(idempotency_key), operation: BatchOperation::Update, entity: entity.into(), body };
        self.submit(idempotency_key, item).await
    }

    /// Deletes a transaction at its current `SyncToken`.
    pub async fn delete(
        &self,
        entity: &str,
        id: &str,
        sync_token: &str,
        idempotency_key: &str,
    ) -> Result<Record, ConnectorError> {
        let body = json!({"Id": id, "SyncToken": sync_token}).as_object().cloned().unwrap_or_default();
        let item =
            BatchItem { b_id: b_id(idempotency_key), operation: BatchOperation::Delete, entity: entity.into(), body };
        self.submit(idempotency_key, item).await
    }
}

/// Gathers pending writes into batches: the first write opens a batch, which is sent when it holds 30 items or
/// the linger has passed (later while the batch allowance is scarce: see [`keep_filling`]). A write whose `bId` is already in the open batch (the same key submitted twice) waits
/// for the next one.
async fn gather(
    connector: Arc<QuickbooksConnector>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    linger: Duration,
    policy: RetryPolicy,
    calls: Arc<AtomicU64>,
) {
    let mut carried: VecDeque<Pending> = VecDeque::new();
    loop {
        let first = match carried.pop_front() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut batch = vec![first];
        let mut ids: HashSet<String> = batch.iter().map(|p| p.item.b_id.clone()).collect();
        let mut later = VecDeque::new();
        while let Some(p) = carried.pop_front() {
            if batch.len() < MAX_BATCH_ITEMS && ids.insert(p.item.b_id.clone()) {
                batch.push(p);
            } else {
                later.push_back(p);
            }
        }
        carried = later;
        let lingered = Instant::now() + linger;
        let held = lingered + max_hold(connector.limiter());
        while batch.len() < MAX_BATCH_ITEMS {
            let until = if Instant::now() < lingered {
                lingered
            } else {
                match keep_filling(connector.limiter(), held) {
                    Some(until) => until,
                    None => break,
                }
            };
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(p)) => {
                    if ids.insert(p.item.b_id.clone()) {
                        batch.push(p);
                    } else {
                        carried.push_back(p);
                    }
                }
                Ok(None) => break,
                // The linger or a wait for room ended: look again.
                Err(_) => {}
            }
        }
        tokio::spawn(send_batch(connector.clone(), batch, policy.clone(), calls.clone()));
    }
}

/// The longest a partial batch is held past its linger while the batch allowance is scarce: the time four batch
/// calls' worth of allowance takes to come back (2 s at QuickBooks' 120 a minute). It bounds the wait of the last
/// writes of a burst, when no more arrive to fill their batch.
fn max_hold(limiter: &Limiter) -> Duration {
    match limiter.batch_usage() {
        Some(usage) => limiter.window_period() * 4 / u32::try_from(usage.limit).unwrap_or(u32::MAX).max(1),
        None => Duration::ZERO,
    }
}

/// Whether a partial batch whose linger has passed keeps filling, and until when before looking again (`None`:
/// send it now). It keeps filling while half or more of the batch allowance was spent in the last window: the
/// calls left are then worth more full than early. A burst of partial batches would otherwise spend the
/// allowance, and since the window gives room back in the rhythm it was spent in, the next minute's calls
/// would go out as partial batches again. With room to spare (and always when limits are off) a partial batch
/// leaves at its linger, as the lowest latency wants.
fn keep_filling(limiter: &Limiter, held: Instant) -> Option<Instant> {
    let usage = limiter.batch_usage()?;
    if Instant::now() >= held || usage.used * 2 < usage.limit {
        return None;
    }
    Some(usage.next_room_at.map_or(held, |t| t.min(held)))
}

/// Sends one gathered batch, retrying the whole call with the same `requestid`, and answers every caller.
async fn send_batch(
    connector: Arc<QuickbooksConnector>,
    batch: Vec<Pending>,
    policy: RetryPolicy,
    calls: Arc<AtomicU64>,
) {
    let keys: Vec<&str> = batch.iter().map(|p| p.key.as_str()).collect();
    let rid = batch_request_id(&keys);
    let items: Vec<BatchItem> = batch.iter().map(|p| p.item.clone()).collect();
    let outcome = retry::retry(&policy, |_| {
        calls.fetch_add(1, Ordering::Relaxed);
        connector.batch(&rid, &items)
    })
    .await;
    match outcome {
        Ok(results) => {
            for (p, r) in batch.into_iter().zip(results) {
                let _ = p.reply.send(r);
            }
        }
        Err(e) => {
            for p in batch {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(b: &str, op: BatchOperation) -> BatchItem {
        BatchItem { b_id: b.into(), operation: op, entity: "Customer".into(), body: Record::new() }
    }

    #[test]
    fn ids_fit_qbo_limits_and_are_stable() {
        assert_eq!(b_id("k1").len(), MAX_BID);
        assert_eq!(b_id("k1"), b_id("k1"));
        assert_ne!(b_id("k1"), b_id("k2"));
        let r = batch_request_id(&["a", "b"]);
        assert_eq!(r.len(), MAX_BATCH_REQUEST_ID);
        assert_eq!(r, batch_request_id(&["a", "b"]));
        assert_ne!(r, batch_request_id(&["ab"]), "keys are separated, not concatenated");
    }

    #[test]
    fn body_and_answers_map_by_bid() {
        let mut create = item("1", BatchOperation::Create);
        create.body.insert("DisplayName".into(), json!("A"));
        let items = vec![create, item("2", BatchOperation::Update), item("3", BatchOperation::Delete)];
        assert_eq!(
            batch_body(&items[..1]),
            json!({"BatchItemRequest": [{"bId": "1", "operation": "create", "Customer": {"DisplayName": "A"}}]})
        );
        let answer = json!({"BatchItemResponse": [
            {"bId": "2", "Fault": {"Error": [{"Message": "Stale Object Error", "code": "5010"}], "type": "ValidationFault"}},
            {"bId": "1", "Customer": {"Id": "77", "DisplayName": "A"}}
        ], "time": "t"});
        let results = parse_batch_response(&items, &answer).unwrap();
        assert_eq!(results[0].as_ref().unwrap()["Id"], json!("77"));
        assert!(matches!(results[1], Err(ConnectorError::Conflict { .. })));
        assert!(matches!(results[2], Err(ConnectorError::Transient { outcome_unknown: true, .. })));
        assert!(parse_batch_response(&items, &json!({})).is_err());
    }
}
