//! Change notifications pushed by a system (QuickBooks webhooks) become durable jobs.
//!
//! The signature is checked first (in constant time, with the connection's verifier token): a bad one is refused
//! and nothing is queued. Each event for an object some flow watches with a `webhook` trigger becomes one job,
//! keyed by (flow, record, version, operation) so a re-delivered event is a no-op, and only when every job is in
//! the store does the caller answer 200 — that is what lets Intuit stop retrying. Events can arrive late, twice or
//! out of order; the flow's backup sweep (its poll) catches any that never arrive.

use ledgerlink_connectors::quickbooks::webhook;
use ledgerlink_flow::Trigger;
use ledgerlink_store::{Enqueued, NewJob};
use serde_json::{Value, json};

use crate::{Engine, Stats};

/// The job kind that runs a flow for one pushed change (the record is read when the job runs).
pub const JOB_FLOW_EVENT: &str = "flow.event";

#[derive(Debug, thiserror::Error)]
pub enum WebhookRejection {
    #[error("no connection named `{0}`")]
    UnknownConnection(String),
    #[error("connection `{0}` is not a QuickBooks connection")]
    NotQuickbooks(String),
    #[error("connection `{0}` has no webhook verifier token; add `verifier_token` to its settings")]
    NoVerifier(String),
    #[error("the intuit-signature header is missing or does not match the body")]
    BadSignature,
    #[error("{0}")]
    BadPayload(String),
    #[error("could not queue the events: {0}")]
    Store(#[from] ledgerlink_store::StoreError),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    pub events: usize,
    pub enqueued: usize,
}

/// Verifies and queues one QuickBooks webhook delivery for `connection`.
pub async fn accept_quickbooks(engine: &Engine, connection: &str, body: &[u8], signature: Option<&str>) -> Result<Accepted, WebhookRejection> {
    let conn = engine.store.get_connection(connection).await?.ok_or_else(|| WebhookRejection::UnknownConnection(connection.into()))?;
    if conn.system != "quickbooks" {
        return Err(WebhookRejection::NotQuickbooks(connection.into()));
    }
    let verifier = conn
        .credentials
        .get("verifier_token")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| WebhookRejection::NoVerifier(connection.into()))?;
    if !signature.is_some_and(|sig| webhook::verify(verifier, body, sig)) {
        return Err(WebhookRejection::BadSignature);
    }
    let events = webhook::parse(body).map_err(|e| WebhookRejection::BadPayload(e.to_string()))?;
    let realm = conn.config.get("realm_id").and_then(Value::as_str).unwrap_or_default();
    let mut accepted = Accepted { events: events.len(), enqueued: 0 };
    let now = crate::now();
    for ev in events {
        if !realm.is_empty() && ev.realm_id != realm {
            tracing::warn!(connection, event_realm = %ev.realm_id, "webhook event for another company ignored");
            continue;
        }
        for flow in engine.flows.values() {
            let Trigger::Poll { connection: c, object, webhooks, .. } = &flow.trigger else { continue };
            if !*webhooks || c != connection || !object.eq_ignore_ascii_case(&ev.entity) {
                continue;
            }
            let version = ev.last_updated.clone().unwrap_or_default();
            let job = NewJob {
                kind: JOB_FLOW_EVENT.into(),
                idempotency_key: format!("event:{}:{connection}:{object}:{}:{version}:{}", flow.name, ev.id, ev.operation),
                flow: Some(flow.name.clone()),
                connection: Some(connection.to_string()),
                payload: json!({"event": {"entity": object, "id": ev.id, "operation": ev.operation, "last_updated": ev.last_updated}}),
                run_at: now,
                max_attempts: engine.settings.max_attempts,
            };
            match engine.store.enqueue(&job).await? {
                Enqueued::Inserted(_) => {
                    accepted.enqueued += 1;
                    Stats::inc(&engine.stats.jobs_enqueued);
                    engine.work_queued.notify_one();
                }
                Enqueued::Duplicate(_) => Stats::inc(&engine.stats.changes_already_handled),
            }
        }
    }
    Ok(accepted)
}
