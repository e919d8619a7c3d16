//! The poll trigger: reads a flow's source object for records changed since its cursor, re-reading an overlap
//! window behind it (records can commit late, with a timestamp already passed), and enqueues one durable job per
//! new (id, version). Jobs are enqueued before the cursor moves: a crash in between re-reads the same changes, and
//! the job idempotency key turns them into no-ops.
//!
//! The read is streamed page by page (a Salesforce batch is 2,000 records): each page's jobs are queued and the
//! cursor is moved to the page's last timestamp before the next page is fetched, so a poll holds one page in
//! memory however many records changed (a backfill of 100,000 is 50 pages). A poll that stops between pages
//! (crash, error) resumes from the saved cursor: the next read starts `overlap` before it, which includes every
//! record at exactly the high-water timestamp, so records sharing a timestamp across a page boundary are read
//! again rather than lost, and the seen versions (or the job keys) make the re-read ones no-ops.

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use ledgerlink_flow::{Flow, Trigger};
use ledgerlink_store::{ChangeCursor, Enqueued, NewJob};
use serde_json::{Value, json};

use crate::seen::SeenVersions;
use crate::{Engine, Stats, keys};

/// How many of a page's jobs are being queued at once.
const ENQUEUE_AT_ONCE: usize = 256;

/// The job kind that runs a flow for one source record.
pub const JOB_FLOW_RECORD: &str = "flow.record";

/// The job kind that marks a version of a record as our own write: it occupies that version's change key, so the
/// poll that reads the version back finds it handled. It is recorded as done (`Store::enqueue_done`); one still
/// queued from an earlier release runs as a no-op.
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
    let since = now - overlap(*overlap_seconds);
    let mut seen = SeenVersions::default();
    let mut high = since;
    let mut read = 0;
    // The cursor is saved once, after the last page: a baseline cut short must not leave a cursor that would
    // make the next poll take the unread rest of the window for new changes.
    let mut at = Next::Changes(None);
    loop {
        let (changes, next) = read_page(conn, &flow.trigger, since, at).await?;
        read += changes.records.len();
        for rec in &changes.records {
            if let (Some(id), Some(ts)) = (conn.record_id(rec), conn.change_timestamp(rec)) {
                seen.insert(&id, &keys::version_of(ts, conn.record_version(rec).as_deref()));
                high = high.max(ts);
            }
        }
        match next {
            Next::Done => break,
            next => at = next,
        }
    }
    save_cursor(engine, flow, connection, object, high, &seen, now).await?;
    tracing::info!(flow = %flow.name, baseline = seen.len(), "flow starts watching {connection} {object} from now");
    Ok(PollReport { read, ..Default::default() })
}

fn overlap(seconds: u64) -> Duration {
    Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 1000))
}

/// One poll of one flow's trigger.
pub async fn poll_once(engine: &Engine, flow: &Flow) -> anyhow::Result<PollReport> {
    let Trigger::Poll { connection, object, overlap_seconds, .. } = &flow.trigger else {
        anyhow::bail!("flow `{}` is not polled (it runs on a schedule)", flow.name);
    };
    let conn = engine.connector(connection)?;
    let overlap = overlap(*overlap_seconds);
    let now = crate::now();

    let Some(cursor) = engine.store.get_cursor(connection, object, &flow.name).await? else {
        return baseline(engine, flow, now).await;
    };
    let since = cursor.position - overlap;
    let mut seen = SeenVersions::from_json(&cursor.seen);
    let mut high = cursor.position;
    let mut report = PollReport::default();
    let mut at = Next::Changes(None);
    loop {
        let (changes, next) = read_page(conn, &flow.trigger, since, at).await?;
        report.read += changes.records.len();
        let before = report.new_changes;
        let mut fresh = Vec::new();
        let mut records = Vec::new();
        for rec in changes.records {
            let Some(id) = conn.record_id(&rec) else { continue };
            let Some(ts) = conn.change_timestamp(&rec) else { continue };
            let version = keys::version_of(ts, conn.record_version(&rec).as_deref());
            if seen.contains(&id, &version) {
                continue;
            }
            fresh.push((id, version, ts));
            records.push(rec);
        }
        // The page's jobs are queued concurrently (handed to the store in page order), so they share the store's
        // group commits instead of waiting for one commit each.
        let mut pending = Vec::with_capacity(fresh.len());
        for ((id, version, _), rec) in fresh.iter().zip(records) {
            pending.push(enqueue_change(engine, flow, connection, object, id, version, rec, now));
        }
        let queued: Vec<anyhow::Result<bool>> = futures::stream::iter(pending).buffered(ENQUEUE_AT_ONCE).collect().await;
        for ((id, version, ts), inserted) in fresh.into_iter().zip(queued) {
            report.new_changes += 1;
            Stats::inc(&engine.stats.changes_seen);
            if inserted? {
                report.enqueued += 1;
            }
            seen.insert(&id, &version);
            high = high.max(ts);
        }
        let last = matches!(next, Next::Done);
        // The page's jobs are queued: move the cursor past it (only when it moved), keeping only the versions the
        // next overlap window can show again.
        if report.new_changes > before || last {
            let horizon = high - overlap;
            seen.retain_since(horizon);
            save_cursor(engine, flow, connection, object, high, &seen, now).await?;
        }
        match next {
            Next::Done => return Ok(report),
            next => at = next,
        }
    }
}

/// Where a poll stands in its source: the pages of changed records, then (with `deletions = true`) the deleted
/// ones, each carrying the system's deletion marker. A delete has a timestamp and version of its own, so it is a
/// new (id, version) and gets a job like any change.
enum Next {
    Changes(Option<String>),
    Deletions,
    Done,
}

/// Reads the page `at` names and says what comes after it.
async fn read_page(
    conn: &std::sync::Arc<dyn ledgerlink_connectors::Connector>,
    trigger: &Trigger,
    since: DateTime<Utc>,
    at: Next,
) -> anyhow::Result<(ledgerlink_connectors::Changes, Next)> {
    let Trigger::Poll { object, fields, deletions, .. } = trigger else {
        anyhow::bail!("only a poll trigger reads changes");
    };
    match at {
        Next::Changes(page) => {
            let changes = conn.changes_page(object, since, fields, page.as_deref()).await?;
            let next = match &changes.next_page {
                Some(p) => Next::Changes(Some(p.clone())),
                None if *deletions => Next::Deletions,
                None => Next::Done,
            };
            Ok((changes, next))
        }
        Next::Deletions => Ok((conn.deletions_since(object, since, fields).await?, Next::Done)),
        Next::Done => Ok((ledgerlink_connectors::Changes::default(), Next::Done)),
    }
}

/// Queues the job for one new change when the flow's condition holds for it. `true` when a job was inserted
/// (`false`: the condition is false, or the change was already queued once — our own write-back coming back,
/// see `executor`, or a re-read after a crash).
#[allow(clippy::too_many_arguments)]
async fn enqueue_change(
    engine: &Engine,
    flow: &Flow,
    connection: &str,
    object: &str,
    id: &str,
    version: &str,
    rec: ledgerlink_connectors::Record,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let idempotency_key = keys::change_job_key(&flow.name, connection, object, id, version);
    if engine.own_writes.contains(&idempotency_key) {
        // Our own write-back coming back; the store holds its job already (see `own_writes`).
        Stats::inc(&engine.stats.changes_already_handled);
        return Ok(false);
    }
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
    if !wanted {
        return Ok(false);
    }
    let job = NewJob {
        kind: JOB_FLOW_RECORD.into(),
        idempotency_key,
        flow: Some(flow.name.clone()),
        connection: Some(connection.to_string()),
        payload: json!({"record": record}),
        run_at: now,
        max_attempts: engine.settings.max_attempts,
    };
    match engine.store.enqueue(&job).await? {
        Enqueued::Inserted(_) => {
            Stats::inc(&engine.stats.jobs_enqueued);
            engine.work_queued.notify_one();
            Ok(true)
        }
        Enqueued::Duplicate(_) => {
            Stats::inc(&engine.stats.changes_already_handled);
            Ok(false)
        }
    }
}

/// Stores where a flow's poll of `object` stands: the high-water mark and the versions seen near it.
async fn save_cursor(
    engine: &Engine,
    flow: &Flow,
    connection: &str,
    object: &str,
    position: DateTime<Utc>,
    seen: &SeenVersions,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let cursor = ChangeCursor {
        connection: connection.to_string(),
        object: object.to_string(),
        flow: flow.name.clone(),
        position,
        seen: seen.to_json(),
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
