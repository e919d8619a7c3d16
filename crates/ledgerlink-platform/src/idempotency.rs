//! `Idempotency-Key`: a repeated request gets the first answer (same status, same body); the same key with a
//! different request is refused with 409.
//!
//! The first request claims the key by inserting an `in_progress` document (one atomic insert, so of two
//! concurrent requests exactly one claims it). The other waits, polling the document with a deadline, and replays
//! the answer once it is stored. Answers with a 5xx status are not kept (the claim is dropped), so a retry after a
//! server fault runs again instead of replaying the fault. A claim left by a crashed process expires after
//! [`CLAIM_TTL`] and may be taken over.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Platform, PlatformError, Result, hex, now};

pub(crate) const KIND: &str = "idempotency";
/// How long a claim may stay in progress before another request may take it over.
pub const CLAIM_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a concurrent repeat waits for the first answer before it is refused with 409.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    request_hash: String,
    answer: Option<StoredAnswer>,
    claimed_at: DateTime<Utc>,
}

/// What to do with a request that carries a key.
#[derive(Debug)]
pub enum Claim {
    /// Run it, then [`Platform::idempotency_finish`].
    Run,
    /// Answer with this, as the first time.
    Replay(StoredAnswer),
}

/// The fingerprint of a request: method, path and body.
pub fn request_hash(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(body);
    hex(&h.finalize())
}

fn doc_id(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

impl Platform {
    /// Claims `key` for a request with fingerprint `hash`, or returns the stored answer to replay.
    pub async fn idempotency_claim(&self, workspace_id: &str, key: &str, hash: &str) -> Result<Claim> {
        if key.is_empty() || key.len() > 255 {
            return Err(PlatformError::invalid("Idempotency-Key", "must be 1 to 255 characters"));
        }
        let id = doc_id(key);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let entry = Entry { request_hash: hash.to_string(), answer: None, claimed_at: now() };
            let body = serde_json::to_value(&entry).map_err(|e| PlatformError::Internal(e.to_string()))?;
            let (doc, inserted) = self.store.insert_doc(workspace_id, KIND, &id, &body, now()).await?;
            if inserted {
                return Ok(Claim::Run);
            }
            let existing: Entry = serde_json::from_value(doc.body.clone()).map_err(|e| PlatformError::Internal(e.to_string()))?;
            if existing.request_hash != hash {
                return Err(PlatformError::Conflict(
                    "this Idempotency-Key was already used with a different request: use a new key for a new request".into(),
                ));
            }
            if let Some(answer) = existing.answer {
                return Ok(Claim::Replay(answer));
            }
            if now() - existing.claimed_at > Duration::from_std(CLAIM_TTL).unwrap_or_default() {
                // Left by a request that never finished (a crash): take it over.
                if self.store.update_doc(workspace_id, KIND, &id, doc.rev, &body, now()).await.is_ok() {
                    return Ok(Claim::Run);
                }
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PlatformError::Conflict("a request with this Idempotency-Key is still being processed: retry later".into()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Stores the answer of a claimed request (or drops the claim for a 5xx answer).
    pub async fn idempotency_finish(&self, workspace_id: &str, key: &str, hash: &str, answer: StoredAnswer) -> Result<()> {
        let id = doc_id(key);
        if answer.status >= 500 {
            self.store.delete_doc(workspace_id, KIND, &id).await?;
            return Ok(());
        }
        let entry = Entry { request_hash: hash.to_string(), answer: Some(answer), claimed_at: now() };
        let body = serde_json::to_value(&entry).map_err(|e| PlatformError::Internal(e.to_string()))?;
        self.store.put_doc(workspace_id, KIND, &id, &body, now()).await?;
        Ok(())
    }
}
