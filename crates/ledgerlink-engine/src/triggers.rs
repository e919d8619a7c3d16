//! Schedules and manual runs: the triggers that do not come from a change in a system.
//!
//! A schedule keeps its last firing in the store (a change cursor of object `schedule`), so several workers and
//! restarts agree on what has fired; each firing is one job keyed by (flow, firing time), so it runs once even if
//! two processes tick together. A schedule missed while ledgerlink was down fires once when it comes back, not
//! once per missed slot. A new schedule starts from now.

use std::str::FromStr as _;

use chrono::{DateTime, Utc};
use ledgerlink_flow::{Flow, Trigger};
use ledgerlink_store::{ChangeCursor, JobId, NewJob};
use serde_json::json;

use crate::Engine;

/// The job kind of one firing of a schedule.
pub const JOB_FLOW_SCHEDULE: &str = "flow.schedule";

/// The next firing strictly after `after`.
fn next_after(cron: &croner::Cron, tz: chrono_tz::Tz, after: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    Ok(cron.find_next_occurrence(&after.with_timezone(&tz), false)?.with_timezone(&Utc))
}

/// Enqueues the firing of `flow` due at `now`, if any; returns when the next one is due.
pub async fn tick(engine: &Engine, flow: &Flow, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let Trigger::Schedule { cron, timezone } = &flow.trigger else {
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
    let job = NewJob {
        kind: JOB_FLOW_SCHEDULE.into(),
        idempotency_key: format!("{how}:{}:{stamp}", flow.name),
        flow: Some(flow.name.clone()),
        connection: None,
        payload: json!({"record": firing_record(flow, at)}),
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

/// The calendar day of `at` in the time zone of `flow`'s schedule (UTC for other flows).
fn local_date(flow: &Flow, at: DateTime<Utc>) -> String {
    let tz = match &flow.trigger {
        Trigger::Schedule { timezone, .. } => timezone.parse::<chrono_tz::Tz>().unwrap_or(chrono_tz::UTC),
        Trigger::Poll { .. } => chrono_tz::UTC,
    };
    at.with_timezone(&tz).format("%Y-%m-%d").to_string()
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
        (Trigger::Poll { object, .. }, None) => {
            anyhow::bail!("flow `{}` runs per {object}: name the record to run it for (--record ID / record_id)", flow.name)
        }
    }
}
