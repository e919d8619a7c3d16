//! Outgoing webhooks to the platform: payment status and sync results, signed so the platform can trust them.
//!
//! Signature (the Stripe scheme, which platform developers know): header
//! `Ledgerlink-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. The timestamp is
//! inside the signed bytes, so a receiver that rejects old timestamps ([`verify_signature`] with a tolerance)
//! rejects replays. Each subscription has its own secret (`whsec_…`, shown once, stored sealed with the master
//! key because it must be read back to sign). An event is one durable task per subscription, retried with
//! exponential backoff until a 2xx; every attempt (time, HTTP status, error, duration) is recorded for the UI.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use ledgerlink_store::{NewPlatformTask, PlatformTask, TaskAttempt, TaskStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::sync::{SyncError, TASK_WEBHOOK};
use crate::{Platform, PlatformError, Result, hex, new_id, now};

pub(crate) const KIND: &str = "webhook_subscription";
pub const SIGNATURE_HEADER: &str = "Ledgerlink-Signature";
pub const EVENT_HEADER: &str = "Ledgerlink-Event";
pub const DELIVERY_HEADER: &str = "Ledgerlink-Delivery";

/// The events a subscription can ask for.
pub const EVENTS: &[&str] = &["invoice.payment_updated"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub url: String,
    /// Event types, or `*` for all.
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSubscription {
    #[serde(flatten)]
    sub: Subscription,
    /// Sealed with the master key.
    secret: String,
}

/// A new subscription and its signing secret, shown this once.
#[derive(Clone, Serialize)]
pub struct NewSubscription {
    pub subscription: Subscription,
    pub secret: String,
}

impl std::fmt::Debug for NewSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSubscription").field("subscription", &self.subscription).field("secret", &"[redacted]").finish()
    }
}

/// One delivery (an event to a subscription) with its attempts, as the UI lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: i64,
    pub subscription_id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: TaskStatus,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub attempts: Vec<TaskAttempt>,
}

/// The signature header value for `body` at `timestamp` (unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex(&mac(secret, timestamp, body)))
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length: new_from_slice cannot fail for it.
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// Checks a received signature header: a `v1` HMAC over `"<t>.<body>"` that matches (in constant time) and a
/// timestamp within `tolerance_seconds` of `now_unix`. What a receiving platform runs; the tests use it too.
pub fn verify_signature(secret: &str, header: &str, body: &[u8], now_unix: i64, tolerance_seconds: i64) -> std::result::Result<(), String> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(v.to_string()),
            _ => {}
        }
    }
    let t = t.ok_or("the signature has no timestamp")?;
    if (now_unix - t).abs() > tolerance_seconds {
        return Err(format!("the signature's timestamp is {}s away from now: a replay or a wrong clock", now_unix - t));
    }
    let expected = hex(&mac(secret, t, body));
    use subtle::ConstantTimeEq;
    if sigs.iter().any(|s| s.as_bytes().ct_eq(expected.as_bytes()).into()) {
        Ok(())
    } else {
        Err("no signature matches the body".into())
    }
}

impl Platform {
    /// Subscribes `url` to `events` (`*` for all). The answer holds the signing secret, shown this once.
    pub async fn subscribe_webhook(&self, workspace_id: &str, url: &str, events: &[String]) -> Result<NewSubscription> {
        self.get_workspace(workspace_id).await?;
        let parsed = reqwest::Url::parse(url).map_err(|e| PlatformError::invalid("url", format!("`{url}` is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(PlatformError::invalid("url", "must be an http:// or https:// URL"));
        }
        let events: Vec<String> = if events.is_empty() { vec!["*".into()] } else { events.to_vec() };
        for e in &events {
            if e != "*" && !EVENTS.contains(&e.as_str()) {
                return Err(PlatformError::invalid("events", format!("unknown event `{e}` (known: {}, or *)", EVENTS.join(", "))));
            }
        }
        use rand::RngCore;
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("whsec_{}", hex(&bytes));
        let sub = Subscription { id: new_id("sub"), url: url.to_string(), events, created_at: now() };
        let stored = StoredSubscription { sub: sub.clone(), secret: self.store.secrets().seal(&json!(secret)) };
        let body = serde_json::to_value(&stored).map_err(|e| PlatformError::Internal(e.to_string()))?;
        self.store.insert_doc(workspace_id, KIND, &sub.id, &body, sub.created_at).await?;
        Ok(NewSubscription { subscription: sub, secret })
    }

    pub async fn list_webhooks(&self, workspace_id: &str) -> Result<Vec<Subscription>> {
        let docs = self.store.list_docs(workspace_id, KIND).await?;
        Ok(docs.into_iter().filter_map(|d| serde_json::from_value::<StoredSubscription>(d.body).ok()).map(|s| s.sub).collect())
    }

    /// Removes a subscription; deliveries already queued to it stop at their next attempt.
    pub async fn delete_webhook(&self, workspace_id: &str, id: &str) -> Result<()> {
        if self.store.delete_doc(workspace_id, KIND, id).await? {
            Ok(())
        } else {
            Err(PlatformError::NotFound { what: "webhook subscription", id: id.to_string() })
        }
    }

    /// Queues `event_type` with `data` to every matching subscription. `key` identifies the event: emitting the
    /// same key twice queues nothing new.
    pub(crate) async fn emit(&self, workspace_id: &str, event_type: &str, key: &str, data: Value) -> Result<()> {
        use sha2::Digest;
        let event_id = format!("evt_{}", &hex(&Sha256::digest(format!("{workspace_id}\0{event_type}\0{key}").as_bytes()))[..32]);
        for doc in self.store.list_docs(workspace_id, KIND).await? {
            let Ok(stored) = serde_json::from_value::<StoredSubscription>(doc.body) else { continue };
            if !stored.sub.events.iter().any(|e| e == "*" || e == event_type) {
                continue;
            }
            let event = json!({"id": event_id, "type": event_type, "workspace_id": workspace_id, "created_at": now(), "data": data});
            let task = NewPlatformTask {
                workspace_id: workspace_id.to_string(),
                kind: TASK_WEBHOOK.into(),
                dedupe_key: format!("webhook:{}:{event_id}", stored.sub.id),
                // The body is fixed here, as text, so every retry signs and sends the same bytes.
                payload: json!({"subscription_id": stored.sub.id, "event_id": event_id, "event_type": event_type, "body": event.to_string()}),
                run_at: now(),
                max_attempts: self.options.max_attempts,
            };
            self.store.enqueue_task(&task).await?;
        }
        self.wake_worker();
        Ok(())
    }

    /// One delivery attempt. `Ok(status)` on a 2xx; otherwise the status (if any) and why.
    pub(crate) async fn deliver_webhook(&self, task: &PlatformTask) -> std::result::Result<i32, (Option<i32>, SyncError)> {
        let field = |k: &str| task.payload.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let sub_id = field("subscription_id");
        let doc = self
            .store
            .get_doc(&task.workspace_id, KIND, &sub_id)
            .await
            .map_err(|e| (None, SyncError::Retry(e.to_string())))?
            .ok_or_else(|| (None, SyncError::Failed("the subscription was deleted".into())))?;
        let stored: StoredSubscription = serde_json::from_value(doc.body).map_err(|e| (None, SyncError::Failed(e.to_string())))?;
        let secret = self.store.secrets().open(&stored.secret).map_err(|e| (None, SyncError::Failed(e.to_string())))?;
        let secret = secret.as_str().unwrap_or_default().to_string();
        let body = field("body");
        let t = now().timestamp();
        let sent = self
            .http
            .post(&stored.sub.url)
            .timeout(self.options.webhook_timeout)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, sign(&secret, t, body.as_bytes()))
            .header(EVENT_HEADER, field("event_type"))
            .header(DELIVERY_HEADER, task.id.to_string())
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => Ok(i32::from(resp.status().as_u16())),
            Ok(resp) => {
                let code = i32::from(resp.status().as_u16());
                Err((Some(code), SyncError::Retry(format!("the receiver answered HTTP {code}"))))
            }
            Err(e) => Err((None, SyncError::Retry(format!("the receiver could not be reached: {e}")))),
        }
    }

    /// The workspace's webhook deliveries, newest first, each with its attempts.
    pub async fn list_deliveries(&self, workspace_id: &str, limit: u32) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        for t in self.store.list_tasks(workspace_id, Some(TASK_WEBHOOK), limit).await? {
            let field = |k: &str| t.payload.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            out.push(Delivery {
                id: t.id,
                subscription_id: field("subscription_id"),
                event_id: field("event_id"),
                event_type: field("event_type"),
                status: t.status,
                next_attempt_at: matches!(t.status, TaskStatus::Queued).then_some(t.run_at),
                last_error: t.last_error.clone(),
                attempts: self.store.list_attempts(t.id).await?,
            });
        }
        Ok(out)
    }
}
