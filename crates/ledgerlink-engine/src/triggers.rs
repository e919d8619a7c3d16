//! Schedules and manual runs: the triggers that do not come from a change in a system.
//!
//! A schedule keeps its last firing in the store (a change cursor of object `schedule`), so several workers and
//! restarts agree on what has fired; each firing is one job keyed by (flow, firing time), so it runs once even if
//! two processes tick together. A schedule missed while ledgerlink was down fires once when it comes back, not
//! once per missed slot. A new schedule starts from now.
//!
//! A record trigger's schedule (`[trigger.schedule]` of a webhook trigger) fires the same way, but its firing is a
//! sweep: one job that finds the records meeting the schedule's conditions and queues one run per record, keyed
//! by (flow, firing, record), so one record that needs review stops alone and a retried sweep queues nothing
//! twice. Each of those runs sees the firing's day as `today`.

use std::str::FromStr as _;

use chrono::{DateTime, Utc};
use ledgerlink_flow::{Flow, Trigger};
use ledgerlink_connectors::FindQuery;
use ledgerlink_store::{ChangeCursor, Enqueued, JobId, NewJob};
use serde_json::json;

use crate::executor::ExecError;
use crate::{Engine, Stats};

/// The job kind of one firing of a schedule.
pub const JOB_FLOW_SCHEDULE: &str = "flow.schedule";
/// The job kind of one firing of a record trigger's schedule: it queues the runs for the records it finds.
pub const JOB_FLOW_SWEEP: &str = "flow.sweep";

/// The next firing strictly after `after`.
fn next_after(cron: &croner::Cron, tz: chrono_tz::Tz, after: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    Ok(cron.find_next_occurrence(&after.with_timezone(&tz), false)?.with_timezone(&Utc))
}

/// Enqueues the firing of `flow` due at `now`, if any; returns when the next one is due.
pub async fn tick(engine: &Engine, flow: &Flow, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let Some((cron, timezone)) = flow.trigger.schedule() else {
        anyhow::bail!("flow `{}` does not run on a schedule", flow.name);
    };
    let cron = croner::Cron::from_str(cron).map_err(|e| anyhow::anyhow!("flow `{}`: {e}", flow.name))?;
    let tz: chrono_tz::Tz = timezone.parse().map_err(|_| anyhow::anyhow!("flow `{}`: unknown time zone {timezone}", flow.name))?;
    let cursor = engine.store.get_cursor("", "schedule", &flow.name).await?;
    let Some(cursor) = cursor else {
        engine
            .store
            .put_cursor(&ChangeCursor { connection: String::new(), object: "schedule".into(), flow: flow.name.clone(), position: now, seen: json!({}), updated_at: now })
            .await?;
        return next_after(&cron, tz, now);
    };
    let mut due = next_after(&cron, tz, cursor.position)?;
    if due > now {
        return Ok(due);
    }
    // Missed slots collapse into the latest one.
    loop {
        let n = next_after(&cron, tz, due)?;
        if n > now {
            break;
        }
        due = n;
    }
    enqueue_firing(engine, flow, due, "schedule").await?;
    engine
        .store
        .put_cursor(&ChangeCursor { connection: String::new(), object: "schedule".into(), flow: flow.name.clone(), position: due, seen: json!({}), updated_at: now })
        .await?;
    next_after(&cron, tz, due)
}

async fn enqueue_firing(engine: &Engine, flow: &Flow, at: DateTime<Utc>, how: &str) -> anyhow::Result<JobId> {
    let stamp = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (kind, payload) = match &flow.trigger {
        Trigger::Schedule { .. } => (JOB_FLOW_SCHEDULE, json!({"record": firing_record(flow, at)})),
        Trigger::Poll { .. } => (JOB_FLOW_SWEEP, json!({"at": stamp})),
    };
    let job = NewJob {
        kind: kind.into(),
        idempotency_key: format!("{how}:{}:{stamp}", flow.name),
        flow: Some(flow.name.clone()),
        connection: None,
        payload,
        run_at: crate::now(),
        max_attempts: engine.settings.max_attempts,
    };
    Ok(engine.store.enqueue(&job).await?.id())
}

/// The `record` a firing of `flow` at `at` runs with: `scheduled_for` (RFC 3339) and `date`, the firing's
/// calendar day in the schedule's time zone ("Monday" where the people are). Dry runs plan with the same.
pub fn firing_record(flow: &Flow, at: DateTime<Utc>) -> serde_json::Value {
    json!({"scheduled_for": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "date": local_date(flow, at)})
}

/// The calendar day of `at` in the time zone of `flow`'s schedule (UTC for flows without one): `today` in the
/// flow's expressions.
pub fn local_date(flow: &Flow, at: DateTime<Utc>) -> String {
    let tz = flow.trigger.schedule().and_then(|(_, tz)| tz.parse::<chrono_tz::Tz>().ok()).unwrap_or(chrono_tz::UTC);
    at.with_timezone(&tz).format("%Y-%m-%d").to_string()
}

/// The moment a job's run is for: the firing time a sweep put in its payload (`at`) or a firing's
/// `record.scheduled_for`, else now.
pub fn job_moment(payload: &serde_json::Value) -> DateTime<Utc> {
    payload
        .get("at")
        .or_else(|| payload.pointer("/record/scheduled_for"))
        .and_then(serde_json::Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map_or_else(crate::now, |t| t.with_timezone(&Utc))
}

/// Runs one firing of a record trigger's schedule: finds the watched records that meet the schedule's
/// conditions (as of the firing's day) and queues one run of the flow per record. Returns how many were queued
/// (records already queued for this firing by an earlier attempt are not counted).
pub async fn run_sweep(engine: &Engine, flow: &Flow, payload: &serde_json::Value) -> Result<usize, ExecError> {
    let Trigger::Poll { connection, object, fields, schedule: Some(schedule), .. } = &flow.trigger else {
        return Err(ExecError::Other(format!("flow `{}` has no record schedule to sweep", flow.name)));
    };
    let at = job_moment(payload);
    let stamp = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut vars = ledgerlink_flow::Vars::new();
    vars.insert("params".into(), serde_json::Value::Object(flow.params.iter().map(|(k, v)| (k.clone(), json!(v.value))).collect()));
    vars.insert("now".into(), json!(crate::now().to_rfc3339()));
    vars.insert("today".into(), json!(local_date(flow, at)));
    let mut equals = Vec::new();
    for c in &schedule.compare {
        let value = c.value.eval(&vars).map_err(|e| ExecError::Other(format!("{}: [trigger.schedule] `{}`: {e}", flow.file, c.value.source())))?;
        equals.push((format!("{} {}", c.field, c.op.as_str()), value));
    }
    let conn = engine.connector(connection).map_err(|e| ExecError::Other(e.to_string()))?;
    let query = FindQuery { object: object.clone(), equals, fields: fields.clone(), limit: None };
    let found = conn.find(&query).await.map_err(|source| ExecError::Connector { step: "trigger".into(), source })?;
    let mut queued = 0;
    for record in found {
        let Some(id) = record.get("Id").and_then(serde_json::Value::as_str).map(str::to_owned) else { continue };
        let job = NewJob {
            kind: crate::poller::JOB_FLOW_RECORD.into(),
            idempotency_key: format!("sweep:{}:{stamp}:{connection}:{object}:{id}", flow.name),
            flow: Some(flow.name.clone()),
            connection: Some(connection.clone()),
            payload: json!({"record": record, "at": stamp}),
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
    tracing::info!(flow = %flow.name, firing = %stamp, queued, "record schedule fired");
    Ok(queued)
}

/// Queues a run of `flow` now: for a scheduled flow, one extra firing; for a flow that watches records, the run
/// for one record by id (read when the job runs).
pub async fn run_now(engine: &Engine, flow: &Flow, record_id: Option<&str>) -> anyhow::Result<JobId> {
    let now = crate::now();
    match (&flow.trigger, record_id) {
        (Trigger::Schedule { .. }, _) => enqueue_firing(engine, flow, now, "manual").await,
        (Trigger::Poll { connection, object, .. }, Some(id)) => {
            let job = NewJob {
                kind: crate::webhooks::JOB_FLOW_EVENT.into(),
                idempotency_key: format!("manual:{}:{connection}:{object}:{id}:{}", flow.name, now.to_rfc3339()),
                flow: Some(flow.name.clone()),
                connection: Some(connection.clone()),
                payload: json!({"event": {"entity": object, "id": id, "operation": "Manual"}}),
                run_at: now,
                max_attempts: engine.settings.max_attempts,
            };
            Ok(engine.store.enqueue(&job).await?.id())
        }
        (Trigger::Poll { schedule: Some(_), .. }, None) => enqueue_firing(engine, flow, now, "manual").await,
        (Trigger::Poll { object, .. }, None) => {
            anyhow::bail!("flow `{}` runs per {object}: name the record to run it for (--record ID / record_id)", flow.name)
        }
    }
}
