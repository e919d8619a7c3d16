//! The poll trigger: reads a flow's source object for records changed since its cursor, re-reading an overlap
//! window behind it (records can commit late, with a timestamp already passed), and enqueues one durable job per
//! new (id, version). Jobs are enqueued before the cursor moves: a crash in between re-reads the same changes, and
//! the job idempotency key turns them into no-ops.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use ledgerlink_flow::{Flow, Trigger};
use ledgerlink_store::{ChangeCursor, Enqueued, NewJob};
use serde_json::{Value, json};

use crate::{Engine, Stats, keys};

/// The job kind that runs a flow for one source record.
pub const JOB_FLOW_RECORD: &str = "flow.record";

/// The job kind that marks a version of a record as our own write: it occupies that version's change key, so the
/// poll that reads the version back finds it handled. Running it does nothing.
pub const JOB_OWN_WRITE: &str = "flow.own-write";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    /// Changes read, overlap re-reads included.
    pub read: usize,
    /// New (id, version) pairs.
    pub new_changes: usize,
    /// Jobs enqueued (the flow's condition held).
    pub enqueued: usize,
}

/// The first poll of a flow: it starts watching from now. Every version visible in the overlap window is marked
/// as seen without a job, so installing a flow does not act on records that changed before it existed; any later
/// change to them is a new version and is handled.
async fn baseline(engine: &Engine, flow: &Flow, now: DateTime<Utc>) -> anyhow::Result<PollReport> {
    let Trigger::Poll { connection, object, overlap_seconds, .. } = &flow.trigger else {
        anyhow::bail!("flow `{}` is not polled (it runs on a schedule)", flow.name);
    };
    let conn = engine.connector(connection)?;
    let overlap = Duration::seconds(i64::try_from(*overlap_seconds).unwrap_or(i64::MAX / 1000));
    let changes = read_changes(conn, &flow.trigger, now - overlap).await?;
    let mut seen = BTreeMap::new();
    let mut high = now - overlap;
    for rec in &changes.records {
        if let (Some(id), Some(ts)) = (conn.record_id(rec), conn.change_timestamp(rec)) {
            seen.insert(id, keys::version_of(ts, conn.record_version(rec).as_deref()));
            high = high.max(ts);
        }
    }
    save_cursor(engine, flow, connection, object, high, &seen, now).await?;
    tracing::info!(flow = %flow.name, baseline = seen.len(), "flow starts watching {connection} {object} from now");
    Ok(PollReport { read: changes.records.len(), ..Default::default() })
}

/// One poll of one flow's trigger.
pub async fn poll_once(engine: &Engine, flow: &Flow) -> anyhow::Result<PollReport> {
    let Trigger::Poll { connection, object, overlap_seconds, .. } = &flow.trigger else {
        anyhow::bail!("flow `{}` is not polled (it runs on a schedule)", flow.name);
    };
    let conn = engine.connector(connection)?;
    let store = &engine.store;
    let overlap = Duration::seconds(i64::try_from(*overlap_seconds).unwrap_or(i64::MAX / 1000));
    let now = crate::now();

    let Some(cursor) = store.get_cursor(connection, object, &flow.name).await? else {
        return baseline(engine, flow, now).await;
    };
    let since = cursor.position - overlap;
    let mut seen: BTreeMap<String, String> = serde_json::from_value(cursor.seen.clone()).unwrap_or_default();

    let changes = read_changes(conn, &flow.trigger, since).await?;
    let mut report = PollReport { read: changes.records.len(), ..Default::default() };
    let mut high = cursor.position;
    for rec in changes.records {
        let Some(id) = conn.record_id(&rec) else { continue };
        let Some(ts) = conn.change_timestamp(&rec) else { continue };
        let version = keys::version_of(ts, conn.record_version(&rec).as_deref());
        if seen.get(&id) == Some(&version) {
            continue;
        }
        report.new_changes += 1;
        Stats::inc(&engine.stats.changes_seen);
        let record = Value::Object(rec);
        let wanted = match &flow.condition {
            None => true,
            // A condition that cannot be evaluated still gets a job: the executor files it for review.
            Some(c) => {
                let mut vars = ledgerlink_flow::Vars::new();
                vars.insert("record".into(), record.clone());
                vars.insert(
                    "params".into(),
                    Value::Object(flow.params.iter().map(|(k, v)| (k.clone(), Value::String(v.value.clone()))).collect()),
                );
                vars.insert("now".into(), Value::String(now.to_rfc3339()));
                !matches!(c.eval(&vars), Ok(Value::Bool(false)))
            }
        };
        if wanted {
            let job = NewJob {
                kind: JOB_FLOW_RECORD.into(),
                idempotency_key: keys::change_job_key(&flow.name, connection, object, &id, &version),
                flow: Some(flow.name.clone()),
                connection: Some(connection.clone()),
                payload: json!({"record": record}),
                run_at: now,
                max_attempts: engine.settings.max_attempts,
            };
            match store.enqueue(&job).await? {
                Enqueued::Inserted(_) => {
                    report.enqueued += 1;
                    Stats::inc(&engine.stats.jobs_enqueued);
                    engine.work_queued.notify_one();
                }
                // Already queued once: our own write-back coming back (see `executor`), or a re-read after a crash.
                Enqueued::Duplicate(_) => Stats::inc(&engine.stats.changes_already_handled),
            }
        }
        seen.insert(id, version);
        if ts > high {
            high = ts;
        }
    }

    // Keep only what the next overlap window can show again.
    let horizon = high - overlap;
    seen.retain(|_, v| keys::version_time(v).is_some_and(|t| t >= horizon));
    save_cursor(engine, flow, connection, object, high, &seen, now).await?;
    Ok(report)
}

/// The changes a poll trigger sees since `since`: changed records, then (with `deletions = true`) deleted ones,
/// each carrying the system's deletion marker. A delete has a timestamp and version of its own, so it is a new
/// (id, version) and gets a job like any change.
async fn read_changes(
    conn: &std::sync::Arc<dyn ledgerlink_connectors::Connector>,
    trigger: &Trigger,
    since: DateTime<Utc>,
) -> anyhow::Result<ledgerlink_connectors::Changes> {
    let Trigger::Poll { object, fields, deletions, .. } = trigger else {
        anyhow::bail!("only a poll trigger reads changes");
    };
    let mut changes = conn.changes_since(object, since, fields).await?;
    if *deletions {
        changes.records.extend(conn.deletions_since(object, since, fields).await?.records);
    }
    Ok(changes)
}

/// Stores where a flow's poll of `object` stands: the high-water mark and the versions seen near it.
async fn save_cursor(
    engine: &Engine,
    flow: &Flow,
    connection: &str,
    object: &str,
    position: DateTime<Utc>,
    seen: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let cursor = ChangeCursor {
        connection: connection.to_string(),
        object: object.to_string(),
        flow: flow.name.clone(),
        position,
        seen: serde_json::to_value(seen)?,
        updated_at: now,
    };
    Ok(engine.store.put_cursor(&cursor).await?)
}

/// One poll, recorded in the run history when it found something or failed (idle polls are not recorded).
pub async fn poll_and_record(engine: &Engine, flow: &Flow) -> anyhow::Result<PollReport> {
    let started = crate::now();
    let result = poll_once(engine, flow).await;
    let outcome = match &result {
        Ok(r) if r.new_changes == 0 => return result,
        Ok(r) => ledgerlink_store::RunOutcome {
            records_seen: i64::try_from(r.new_changes).unwrap_or(i64::MAX),
            jobs_enqueued: i64::try_from(r.enqueued).unwrap_or(i64::MAX),
            ..Default::default()
        },
        Err(e) => ledgerlink_store::RunOutcome { errors: 1, error: Some(format!("{e:#}")), ..Default::default() },
    };
    let run = engine.store.start_run(&ledgerlink_store::NewRun { flow: flow.name.clone(), trigger: "poll".into(), started_at: started }).await?;
    engine.store.finish_run(run, &outcome, crate::now()).await?;
    result
}
