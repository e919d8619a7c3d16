//! The worker: claims due jobs under a lease, runs them, and records the outcome. Retryable failures are
//! rescheduled with exponential backoff and full jitter (never sooner than a Retry-After the system gave); after
//! the last attempt the job is dead-lettered with its error, to be retried or replayed by hand.
//!
//! Layout: [`run`] is the loop (claim, spawn, reap); [`ConnectionLeases`] is the part of it that, when several
//! workers share one PostgreSQL, leases each connection to one worker at a time; [`handle`] runs one job and
//! records its outcome; [`backoff`] computes retry delays.
//!
//! Connection leases. A worker runs a job that names a connection only while it holds the store lease
//! `connection:<name>`, so one connection's rate limiter and token refresh live in one process at a time (jobs
//! without a connection go to anyone). Every worker keeps a heartbeat lease `worker:<id>`; from the live workers
//! and the connections that have work, each takes its fair share (`ceil(connections / workers)`) of unheld
//! connections with due jobs, renews what it holds while it works, drains (stops claiming, lets its running jobs
//! finish, then releases) what exceeds its share when more workers arrive, and releases a connection it has had
//! no work for during `connection_idle_release`. A worker that dies simply stops renewing: its leases run out
//! after `connection_lease_ttl` and the others take its connections over. The trade-off: one connection's
//! throughput is bounded by one worker's concurrency (which is also what keeps it under QuickBooks' 10 concurrent
//! requests per realm); throughput grows with the number of connections, not with workers per connection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::Duration;
use ledgerlink_store::{Job, Store};
use rand::Rng;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::executor::{ExecError, Outcome, run_flow};
use crate::poller::{JOB_FLOW_RECORD, JOB_OWN_WRITE};
use crate::{Engine, Stats};

/// The lease name under which `connection` is held by one worker.
pub fn connection_lease(connection: &str) -> String {
    format!("connection:{connection}")
}

/// The heartbeat lease of a live worker.
pub fn worker_lease(worker: &str) -> String {
    format!("worker:{worker}")
}

/// Whether this engine leases connections: as configured, or by default only on a store that several
/// processes may share (PostgreSQL). The embedded SQLite store has one process, which holds everything anyway.
pub fn leases_connections(engine: &Engine) -> bool {
    engine.settings.connection_leases.unwrap_or(engine.store.backend() == "postgres")
}

/// Jobs of this worker in flight, per connection (a connection is only released when it has none).
type Running = Arc<Mutex<HashMap<String, usize>>>;

/// Counts one job as running for its connection until dropped (also when its task is aborted).
struct RunningGuard {
    running: Running,
    connection: Option<String>,
}

impl RunningGuard {
    fn new(running: &Running, connection: Option<String>) -> RunningGuard {
        if let Some(c) = &connection {
            *running.lock().unwrap_or_else(|p| p.into_inner()).entry(c.clone()).or_default() += 1;
        }
        RunningGuard { running: running.clone(), connection }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Some(c) = &self.connection {
            let mut map = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(c) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(c);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Held {
    /// Since when this worker has had neither due nor running jobs for the connection.
    idle_since: Option<Instant>,
    /// Over this worker's fair share: no new jobs are claimed; released once its running jobs are done.
    draining: bool,
}

/// The connection leases one worker holds (see the module docs).
pub struct ConnectionLeases {
    store: Arc<dyn Store>,
    owner: String,
    ttl: Duration,
    idle_release: StdDuration,
    check_every: StdDuration,
    next_check: Instant,
    held: BTreeMap<String, Held>,
}

impl ConnectionLeases {
    pub fn new(engine: &Engine) -> ConnectionLeases {
        let s = &engine.settings;
        let ttl = s.connection_lease_ttl.max(Duration::milliseconds(100));
        // Renewed four times per TTL (at most once a second), so a busy moment never lets a lease lapse.
        let check_every = (ttl.to_std().unwrap_or_default() / 4).min(StdDuration::from_secs(1));
        ConnectionLeases {
            store: engine.store.clone(),
            owner: s.worker_id.clone(),
            ttl,
            idle_release: s.connection_idle_release,
            check_every,
            next_check: Instant::now(),
            held: BTreeMap::new(),
        }
    }

    /// The connections whose jobs this worker may claim now.
    pub fn claimable(&self) -> Vec<String> {
        self.held.iter().filter(|(_, h)| !h.draining).map(|(c, _)| c.clone()).collect()
    }

    /// Every connection this worker holds (draining ones included).
    pub fn held(&self) -> Vec<String> {
        self.held.keys().cloned().collect()
    }

    /// Heartbeat, renewals, releases and new leases, when the check is due.
    async fn maintain(&mut self, running: &Running) -> Result<(), ledgerlink_store::StoreError> {
        if Instant::now() < self.next_check {
            return Ok(());
        }
        self.next_check = Instant::now() + self.check_every;
        let now = crate::now();
        let store = &self.store;
        store.try_acquire_lease(&worker_lease(&self.owner), &self.owner, now, self.ttl).await?;
        let due: BTreeSet<String> = store.due_connections(now).await?.into_iter().collect();
        let live = store.list_leases("worker:", now).await?.len().max(1);
        let taken: BTreeSet<String> = store
            .list_leases("connection:", now)
            .await?
            .into_iter()
            .filter_map(|l| l.name.strip_prefix("connection:").map(str::to_string))
            .collect();
        let wanted = due.union(&taken).count();
        let share = wanted.div_ceil(live).max(1);
        let running_now: HashMap<String, usize> = running.lock().unwrap_or_else(|p| p.into_inner()).clone();

        // Renew or release what is held.
        let names: Vec<String> = self.held.keys().cloned().collect();
        for c in names {
            let busy_here = running_now.get(&c).copied().unwrap_or(0) > 0;
            let Some(h) = self.held.get_mut(&c) else { continue };
            if due.contains(&c) || busy_here {
                h.idle_since = None;
            } else {
                h.idle_since.get_or_insert_with(Instant::now);
            }
            let idle_long = h.idle_since.is_some_and(|t| t.elapsed() >= self.idle_release);
            if (idle_long || h.draining) && !busy_here {
                self.held.remove(&c);
                store.release_lease(&connection_lease(&c), &self.owner).await?;
                tracing::info!(connection = %c, worker = %self.owner, "connection lease released");
            } else if !store.try_acquire_lease(&connection_lease(&c), &self.owner, now, self.ttl).await? {
                // Only possible if this worker stalled past the TTL and another took the connection over.
                self.held.remove(&c);
                tracing::warn!(connection = %c, worker = %self.owner, "connection lease lost to another worker");
            }
        }

        // Over the fair share (more workers arrived): drain the excess, newest names last.
        let active: Vec<String> = self.claimable();
        if active.len() > share {
            for c in active.iter().skip(share) {
                if let Some(h) = self.held.get_mut(c) {
                    h.draining = true;
                    tracing::info!(connection = %c, worker = %self.owner, share, "draining a connection for another worker");
                }
            }
        }

        // Under it: take free connections that have work.
        let mut count = self.claimable().len();
        for c in &due {
            if count >= share {
                break;
            }
            if self.held.contains_key(c) || taken.contains(c) {
                continue;
            }
            if store.try_acquire_lease(&connection_lease(c), &self.owner, now, self.ttl).await? {
                tracing::info!(connection = %c, worker = %self.owner, "connection lease taken");
                self.held.insert(c.clone(), Held::default());
                count += 1;
            }
        }
        Ok(())
    }

    /// Gives every lease back (clean shutdown), so other workers need not wait for them to expire.
    pub async fn release_all(&mut self) {
        for c in std::mem::take(&mut self.held).into_keys() {
            if let Err(e) = self.store.release_lease(&connection_lease(&c), &self.owner).await {
                tracing::warn!(connection = %c, error = %e, "could not release the connection lease");
            }
        }
        if let Err(e) = self.store.release_lease(&worker_lease(&self.owner), &self.owner).await {
            tracing::warn!(error = %e, "could not release the worker heartbeat");
        }
    }
}

/// Runs jobs until `shutdown` turns true.
///
/// Job tasks belong to this future: if it is dropped (as when its task is aborted), they are aborted with it,
/// like a process that dies; their job leases and connection leases then expire and others take over.
pub async fn run(engine: Engine, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(engine.settings.concurrency.max(1)));
    let running: Running = Arc::default();
    let mut leases = leases_connections(&engine).then(|| ConnectionLeases::new(&engine));
    let mut tasks = tokio::task::JoinSet::new();
    // Rings `work_queued` when another process queues a job; dropped (and so stopped) with this future.
    let _wakeups = listen_for_jobs(&engine).await;
    loop {
        if *shutdown.borrow() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        if let Some(l) = leases.as_mut()
            && let Err(e) = l.maintain(&running).await
        {
            tracing::error!(error = %e, "maintaining connection leases failed");
        }
        let free = slots.available_permits();
        let claimed = if free == 0 {
            Vec::new()
        } else {
            let limit = u32::try_from(free).unwrap_or(u32::MAX);
            let (worker, now, lease) = (&engine.settings.worker_id, crate::now(), engine.settings.lease);
            let result = match &leases {
                Some(l) => engine.store.claim_jobs_for(worker, now, lease, limit, &l.claimable()).await,
                None => engine.store.claim_jobs(worker, now, lease, limit).await,
            };
            match result {
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
                _ = engine.work_queued.notified() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        for job in claimed {
            let permit = slots.clone().acquire_owned().await?;
            let engine = engine.clone();
            let guard = RunningGuard::new(&running, job.connection.clone());
            tasks.spawn(async move {
                handle(&engine, job).await;
                drop(guard);
                drop(permit);
            });
        }
    }
    // Let running jobs finish (their leases would otherwise have to expire).
    while tasks.join_next().await.is_some() {}
    if let Some(l) = leases.as_mut() {
        l.release_all().await;
    }
    Ok(())
}

/// Starts forwarding the store's cross-process job notifications (PostgreSQL `LISTEN`) to `work_queued`. Without
/// them (SQLite, or the listen failed) the worker still finds other processes' jobs at its next idle look.
async fn listen_for_jobs(engine: &Engine) -> Option<AbortOnDrop> {
    let mut feed = match engine.store.job_wakeups().await {
        Ok(Some(feed)) => feed,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for jobs queued by other processes; relying on idle polling");
            return None;
        }
    };
    let wake = engine.work_queued.clone();
    Some(AbortOnDrop(tokio::spawn(async move {
        loop {
            match feed.next().await {
                Ok(()) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, "stopped listening for jobs queued by other processes; relying on idle polling");
                    return;
                }
            }
        }
    })))
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
            // A run a scheduled sweep queued is for the firing's moment (`today`), however late it runs.
            crate::executor::run_flow_at(engine, flow, record, Some(job.id), crate::triggers::job_moment(&job.payload)).await
        }
        crate::triggers::JOB_FLOW_SWEEP => {
            let name = job.flow.as_deref().unwrap_or_default();
            let flow = engine
                .flows
                .get(name)
                .ok_or_else(|| ExecError::Other(format!("job {} names flow `{name}`, which is not loaded", job.id)))?;
            crate::triggers::run_sweep(engine, flow, &job.payload).await.map(|_| Outcome::Done { writes: 0 })
        }
        JOB_OWN_WRITE => Ok(Outcome::Skipped),
        crate::triggers::JOB_FLOW_SCHEDULE => {
            let name = job.flow.as_deref().unwrap_or_default();
            let flow = engine
                .flows
                .get(name)
                .ok_or_else(|| ExecError::Other(format!("job {} names flow `{name}`, which is not loaded", job.id)))?;
            let at = crate::triggers::job_moment(&job.payload);
            crate::executor::run_flow_at(engine, flow, job.payload.get("record").cloned().unwrap_or_default(), Some(job.id), at).await
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
            if let Some(entity) = event["entity"].as_str()
                && !entity.eq_ignore_ascii_case(object)
            {
                return crate::webhooks::fan_out_related(engine, flow, job.id, event).await.map(|_| Outcome::Done { writes: 0 });
            }
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
