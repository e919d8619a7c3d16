//! Change notifications pushed by a system (QuickBooks webhooks) become durable jobs.
//!
//! The signature is checked first (in constant time, with the connection's verifier token): a bad one is refused
//! and nothing is queued. Each event for an object some flow watches with a `webhook` trigger becomes one job,
//! keyed by (flow, record, version, operation) so a re-delivered event is a no-op, and only when every job is in
//! the store does the caller answer 200 — that is what lets Intuit stop retrying. Events can arrive late, twice or
//! out of order; the flow's backup sweep (its poll) catches any that never arrive.
//!
//! An event for one of a trigger's `related` objects (a payment, for a flow per invoice) is queued the same way;
//! when it runs ([`fan_out_related`]) the related record is read and one run is queued for each record of the
//! watched object it names. A related record deleted before its job runs names nothing: the watched records it
//! changed are still caught by their own events and by the backup sweep.

use ledgerlink_connectors::quickbooks::webhook;
use ledgerlink_flow::Trigger;
use ledgerlink_store::{Enqueued, NewJob};
use serde_json::{Value, json};

use crate::executor::ExecError;
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
            let Trigger::Poll { connection: c, object: watched, webhooks, related, .. } = &flow.trigger else { continue };
            if !*webhooks || c != connection {
                continue;
            }
            let object = if watched.eq_ignore_ascii_case(&ev.entity) {
                watched
            } else if let Some(r) = related.iter().find(|r| r.object.eq_ignore_ascii_case(&ev.entity)) {
                &r.object
            } else {
                continue;
            };
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

/// Runs the job of a related object's event (see the module documentation): reads the related record and
/// queues one event job per record of the watched object it names, keyed by (flow, related record, version,
/// watched record) so a re-delivered event queues nothing new. Returns how many were queued.
pub async fn fan_out_related(engine: &Engine, flow: &ledgerlink_flow::Flow, job_id: i64, event: &Value) -> Result<usize, ExecError> {
    let Trigger::Poll { connection, object: watched, related, .. } = &flow.trigger else {
        return Err(ExecError::Other(format!("job {job_id}: flow `{}` watches no records", flow.name)));
    };
    let entity = event["entity"].as_str().unwrap_or_default();
    let Some(rel) = related.iter().find(|r| r.object.eq_ignore_ascii_case(entity)) else {
        return Err(ExecError::Other(format!("job {job_id}: flow `{}` does not follow {entity} changes", flow.name)));
    };
    let id = event["id"].as_str().unwrap_or_default();
    if event["operation"] == "Delete" {
        return Ok(0);
    }
    let conn = engine.connector(connection).map_err(|e| ExecError::Other(e.to_string()))?;
    let Some(record) = conn.get(&rel.object, id, &rel.fields).await.map_err(|source| ExecError::Connector { step: "trigger".into(), source })? else {
        return Ok(0);
    };
    let mut vars = ledgerlink_flow::Vars::new();
    vars.insert("record".into(), Value::Object(record));
    vars.insert("params".into(), Value::Object(flow.params.iter().map(|(k, v)| (k.clone(), json!(v.value))).collect()));
    vars.insert("now".into(), json!(crate::now().to_rfc3339()));
    vars.insert("today".into(), json!(crate::triggers::local_date(flow, crate::now())));
    let named = rel
        .ids
        .eval(&vars)
        .map_err(|e| ExecError::Other(format!("{}: `ids` of related {} in [trigger]: {e}", flow.file, rel.object)))?;
    let mut ids = Vec::new();
    flatten_ids(&named, &mut ids);
    ids.sort();
    ids.dedup();
    let version = event["last_updated"].as_str().unwrap_or_default();
    let mut queued = 0;
    for target in ids {
        let job = NewJob {
            kind: JOB_FLOW_EVENT.into(),
            idempotency_key: format!("related:{}:{connection}:{}:{id}:{version}:{watched}:{target}", flow.name, rel.object),
            flow: Some(flow.name.clone()),
            connection: Some(connection.clone()),
            payload: json!({"event": {"entity": watched, "id": target, "operation": "Update", "via": {"entity": rel.object, "id": id}}}),
            run_at: crate::now(),
            max_attempts: engine.settings.max_attempts,
        };
        if let Enqueued::Inserted(_) = engine.store.enqueue(&job).await.map_err(ExecError::Store)? {
            queued += 1;
            Stats::inc(&engine.stats.jobs_enqueued);
        }
    }
    if queued > 0 {
        engine.work_queued.notify_one();
    }
    Ok(queued)
}

/// The ids an `ids` expression gave: text or numbers, from nested lists; nulls and empty text skipped.
fn flatten_ids(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if !s.is_empty() => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|i| flatten_ids(i, out)),
        _ => {}
    }
}
