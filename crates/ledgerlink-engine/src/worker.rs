//! The worker: claims due jobs under a lease, runs them, and records the outcome. Retryable failures are
//! rescheduled with exponential backoff and full jitter (never sooner than a Retry-After the system gave); after
//! the last attempt the job is dead-lettered with its error, to be retried or replayed by hand.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use ledgerlink_store::Job;
use rand::Rng;
use tokio::sync::{Semaphore, watch};

use crate::executor::{ExecError, Outcome, run_flow};
use crate::poller::{JOB_FLOW_RECORD, JOB_OWN_WRITE};
use crate::{Engine, Stats};

/// Runs jobs until `shutdown` turns true.
pub async fn run(engine: Engine, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(engine.settings.concurrency.max(1)));
    loop {
        if *shutdown.borrow() {
            break;
        }
        let free = slots.available_permits();
        let claimed = if free == 0 {
            Vec::new()
        } else {
            let limit = u32::try_from(free).unwrap_or(u32::MAX);
            match engine.store.claim_jobs(&engine.settings.worker_id, crate::now(), engine.settings.lease, limit).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::error!(error = %e, "claiming jobs failed");
                    Vec::new()
                }
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(engine.settings.idle_wait) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        for job in claimed {
            let permit = slots.clone().acquire_owned().await?;
            let engine = engine.clone();
            tokio::spawn(async move {
                handle(&engine, job).await;
                drop(permit);
            });
        }
    }
    // Let running jobs finish (their leases would otherwise have to expire).
    let _ = slots.acquire_many(u32::try_from(engine.settings.concurrency.max(1)).unwrap_or(1)).await;
    Ok(())
}

/// Claims and runs due jobs until none is due (for tests and `--once`). Returns how many ran.
pub async fn drain(engine: &Engine) -> anyhow::Result<usize> {
    let mut ran = 0;
    loop {
        let jobs = engine.store.claim_jobs(&engine.settings.worker_id, crate::now(), engine.settings.lease, 16).await?;
        if jobs.is_empty() {
            return Ok(ran);
        }
        ran += jobs.len();
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let engine = engine.clone();
                tokio::spawn(async move { handle(&engine, job).await })
            })
            .collect();
        for h in handles {
            h.await?;
        }
    }
}

/// Runs one claimed job and records its outcome in the store.
pub async fn handle(engine: &Engine, job: Job) {
    let worker = engine.settings.worker_id.clone();
    // Claimed more often than allowed: earlier attempts never reported back (their process died while running it).
    // Running it again could take the next worker down too; it goes to the dead letters for a person to look at.
    if job.attempts > job.max_attempts {
        Stats::inc(&engine.stats.jobs_dead);
        Stats::inc(&engine.stats.errors);
        let msg = format!("abandoned after {} attempts that never finished (the worker stopped while running it)", job.attempts - 1);
        tracing::error!(job = job.id, "{msg}");
        if let Err(e) = engine.store.fail_job(job.id, &worker, &msg, None, crate::now()).await {
            tracing::warn!(job = job.id, error = %e, "could not dead-letter the job");
        }
        return;
    }
    let result = execute(engine, &job).await;
    let now = crate::now();
    let store = &engine.store;
    let recorded = match result {
        Ok(Outcome::Done { .. }) | Ok(Outcome::Skipped) => {
            Stats::inc(&engine.stats.jobs_done);
            store.complete_job(job.id, &worker, now).await
        }
        Ok(Outcome::Review(review)) => {
            Stats::inc(&engine.stats.jobs_parked);
            tracing::warn!(job = job.id, review, "job waits for review");
            store.park_job(job.id, &worker, review, now).await
        }
        Err(e) if e.is_retryable() && job.attempts < job.max_attempts => {
            let delay = backoff(engine, job.attempts, e.retry_after());
            Stats::inc(&engine.stats.jobs_retried);
            tracing::info!(job = job.id, attempt = job.attempts, error = %e, retry_in_ms = delay.num_milliseconds(), "job will retry");
            store.fail_job(job.id, &worker, &e.to_string(), Some(now + delay), now).await
        }
        Err(e) => {
            Stats::inc(&engine.stats.jobs_dead);
            Stats::inc(&engine.stats.errors);
            tracing::error!(job = job.id, attempts = job.attempts, error = %e, "job dead-lettered");
            store.fail_job(job.id, &worker, &e.to_string(), None, now).await
        }
    };
    if let Err(e) = recorded {
        // Most likely the lease expired and another worker took the job over; it will record the outcome.
        tracing::warn!(job = job.id, error = %e, "could not record the job's outcome");
    }
}

async fn execute(engine: &Engine, job: &Job) -> Result<Outcome, ExecError> {
    match job.kind.as_str() {
        JOB_FLOW_RECORD => {
            let name = job.flow.as_deref().unwrap_or_default();
            let flow = engine
                .flows
                .get(name)
                .ok_or_else(|| ExecError::Other(format!("job {} names flow `{name}`, which is not loaded", job.id)))?;
            let record = job.payload.get("record").cloned().unwrap_or_default();
            run_flow(engine, flow, record, Some(job.id)).await
        }
        JOB_OWN_WRITE => Ok(Outcome::Skipped),
        crate::triggers::JOB_FLOW_SCHEDULE => {
            let name = job.flow.as_deref().unwrap_or_default();
            let flow = engine
                .flows
                .get(name)
                .ok_or_else(|| ExecError::Other(format!("job {} names flow `{name}`, which is not loaded", job.id)))?;
            run_flow(engine, flow, job.payload.get("record").cloned().unwrap_or_default(), Some(job.id)).await
        }
        crate::webhooks::JOB_FLOW_EVENT => {
            let name = job.flow.as_deref().unwrap_or_default();
            let flow = engine
                .flows
                .get(name)
                .ok_or_else(|| ExecError::Other(format!("job {} names flow `{name}`, which is not loaded", job.id)))?;
            let Some((connection, object, fields)) = flow.trigger.source() else {
                return Err(ExecError::Other(format!("job {}: flow `{name}` watches no records", job.id)));
            };
            let event = &job.payload["event"];
            let id = event["id"].as_str().unwrap_or_default();
            // Deleted records are left to the flow's delete policy (not part of this trigger yet).
            if event["operation"] == "Delete" {
                return Ok(Outcome::Skipped);
            }
            let conn = engine.connector(connection).map_err(|e| ExecError::Other(e.to_string()))?;
            let record = conn
                .get(object, id, fields)
                .await
                .map_err(|source| ExecError::Connector { step: "trigger".into(), source })?;
            match record {
                Some(r) => run_flow(engine, flow, serde_json::Value::Object(r), Some(job.id)).await,
                None => Ok(Outcome::Skipped),
            }
        }
        other => Err(ExecError::Other(format!("job {} has unknown kind `{other}`", job.id))),
    }
}

/// base × 2^(attempt−1), capped, with full jitter; never less than the system's Retry-After.
fn backoff(engine: &Engine, attempt: i32, retry_after: Option<StdDuration>) -> Duration {
    let s = &engine.settings;
    let exp = s.retry_base.num_milliseconds().saturating_mul(1i64 << attempt.clamp(1, 20).saturating_sub(1));
    let cap = exp.min(s.retry_max.num_milliseconds()).max(1);
    let jittered = rand::rng().random_range(cap / 2..=cap);
    let floor = retry_after.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0);
    Duration::milliseconds(jittered.max(floor))
}
