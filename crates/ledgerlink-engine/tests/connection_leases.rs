//! Connections leased to one worker at a time, on PostgreSQL: three workers (each with its own pool, as three
//! processes would have) share one queue holding two connections' worth of jobs. Every claim and every outcome
//! passes through a recording wrapper around the real store, so each job's run is known as (worker, connection,
//! from the start of the claim that handed it out to the end of the call that recorded its outcome). The test
//! asserts that no two workers ever ran jobs of the same connection at overlapping times, that the two connections
//! went to different workers, and that when the worker holding a connection dies (its task, with its job tasks,
//! is aborted) another worker takes the connection over only after the lease's TTL, and finishes its jobs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use ledgerlink_engine::{Engine, EngineSettings, poller::JOB_OWN_WRITE, worker};
use ledgerlink_store::testing::TestDatabase;
use ledgerlink_store::*;
use serde_json::json;

#[derive(Debug, Clone)]
struct Window {
    job: JobId,
    worker: String,
    connection: Option<String>,
    start: Instant,
    start_utc: DateTime<Utc>,
    end: Option<Instant>,
}

type Log = Arc<Mutex<Vec<Window>>>;

/// The real store, with each claim and outcome of one worker written down.
struct Recording {
    inner: Arc<dyn Store>,
    worker: String,
    log: Log,
}

impl Recording {
    fn claimed(&self, jobs: &[Job], start: Instant, start_utc: DateTime<Utc>) {
        let mut log = self.log.lock().unwrap();
        for j in jobs {
            log.push(Window {
                job: j.id,
                worker: self.worker.clone(),
                connection: j.connection.clone(),
                start,
                start_utc,
                end: None,
            });
        }
    }

    fn finished(&self, id: JobId) {
        let end = Instant::now();
        let mut log = self.log.lock().unwrap();
        if let Some(w) = log.iter_mut().rev().find(|w| w.job == id && w.worker == self.worker && w.end.is_none()) {
            w.end = Some(end);
        }
    }
}

ledgerlink_store::delegate_platform_store!(Recording, inner);

#[async_trait]
impl Store for Recording {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn put_connection(&self, conn: &NewConnection) -> Result<Connection> {
        self.inner.put_connection(conn).await
    }
    async fn get_connection(&self, name: &str) -> Result<Option<Connection>> {
        self.inner.get_connection(name).await
    }
    async fn list_connections(&self) -> Result<Vec<Connection>> {
        self.inner.list_connections().await
    }
    async fn update_credentials(&self, name: &str, v: i64, c: &serde_json::Value) -> Result<i64> {
        self.inner.update_credentials(name, v, c).await
    }
    async fn enqueue(&self, job: &NewJob) -> Result<Enqueued> {
        self.inner.enqueue(job).await
    }
    async fn claim_jobs(&self, worker: &str, now: DateTime<Utc>, lease: Duration, limit: u32) -> Result<Vec<Job>> {
        let (start, start_utc) = (Instant::now(), Utc::now());
        let jobs = self.inner.claim_jobs(worker, now, lease, limit).await?;
        self.claimed(&jobs, start, start_utc);
        Ok(jobs)
    }
    async fn claim_jobs_for(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
        connections: &[String],
    ) -> Result<Vec<Job>> {
        let (start, start_utc) = (Instant::now(), Utc::now());
        let jobs = self.inner.claim_jobs_for(worker, now, lease, limit, connections).await?;
        self.claimed(&jobs, start, start_utc);
        Ok(jobs)
    }
    async fn due_connections(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        self.inner.due_connections(now).await
    }
    async fn complete_job(&self, id: JobId, worker: &str, now: DateTime<Utc>) -> Result<()> {
        let r = self.inner.complete_job(id, worker, now).await;
        self.finished(id);
        r
    }
    async fn fail_job(&self, id: JobId, w: &str, e: &str, at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<()> {
        let r = self.inner.fail_job(id, w, e, at, now).await;
        self.finished(id);
        r
    }
    async fn park_job(&self, id: JobId, worker: &str, review: ReviewId, now: DateTime<Utc>) -> Result<()> {
        let r = self.inner.park_job(id, worker, review, now).await;
        self.finished(id);
        r
    }
    async fn requeue_job(&self, id: JobId, now: DateTime<Utc>) -> Result<()> {
        self.inner.requeue_job(id, now).await
    }
    async fn recover_leases(&self, owner: Option<&str>, now: DateTime<Utc>) -> Result<u64> {
        self.inner.recover_leases(owner, now).await
    }
    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        self.inner.get_job(id).await
    }
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        self.inner.list_jobs(filter).await
    }
    async fn count_jobs(&self) -> Result<JobCounts> {
        self.inner.count_jobs().await
    }
    async fn put_link(&self, link: &Link) -> Result<()> {
        self.inner.put_link(link).await
    }
    async fn find_link(&self, from: &RecordRef, c: &str, o: &str) -> Result<Option<Link>> {
        self.inner.find_link(from, c, o).await
    }
    async fn list_links(&self, connection: &str, object: &str) -> Result<Vec<Link>> {
        self.inner.list_links(connection, object).await
    }
    async fn begin_intent(&self, intent: &NewWriteIntent) -> Result<WriteIntent> {
        self.inner.begin_intent(intent).await
    }
    async fn complete_intent(&self, k: &str, id: &str, r: &serde_json::Value, now: DateTime<Utc>, a: &NewAuditEntry) -> Result<()> {
        self.inner.complete_intent(k, id, r, now, a).await
    }
    async fn enqueue_done(&self, job: &NewJob) -> Result<Enqueued> {
        self.inner.enqueue_done(job).await
    }
    async fn refuse_intent(&self, key: &str, next: &str, reason: &str) -> Result<()> {
        self.inner.refuse_intent(key, next, reason).await
    }
    async fn get_intent(&self, key: &str) -> Result<Option<WriteIntent>> {
        self.inner.get_intent(key).await
    }
    async fn get_cursor(&self, c: &str, o: &str, f: &str) -> Result<Option<ChangeCursor>> {
        self.inner.get_cursor(c, o, f).await
    }
    async fn put_cursor(&self, cursor: &ChangeCursor) -> Result<()> {
        self.inner.put_cursor(cursor).await
    }
    async fn start_run(&self, run: &NewRun) -> Result<RunId> {
        self.inner.start_run(run).await
    }
    async fn finish_run(&self, id: RunId, outcome: &RunOutcome, now: DateTime<Utc>) -> Result<()> {
        self.inner.finish_run(id, outcome, now).await
    }
    async fn list_runs(&self, flow: Option<&str>, limit: u32) -> Result<Vec<Run>> {
        self.inner.list_runs(flow, limit).await
    }
    async fn append_audit(&self, entry: &NewAuditEntry) -> Result<i64> {
        self.inner.append_audit(entry).await
    }
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        self.inner.list_audit(filter).await
    }
    async fn create_review(&self, item: &NewReviewItem) -> Result<ReviewId> {
        self.inner.create_review(item).await
    }
    async fn get_review(&self, id: ReviewId) -> Result<Option<ReviewItem>> {
        self.inner.get_review(id).await
    }
    async fn list_reviews(&self, status: Option<ReviewStatus>) -> Result<Vec<ReviewItem>> {
        self.inner.list_reviews(status).await
    }
    async fn reviews_for_job(&self, job_id: JobId) -> Result<Vec<ReviewItem>> {
        self.inner.reviews_for_job(job_id).await
    }
    async fn resolve_review(&self, id: ReviewId, r: &serde_json::Value, now: DateTime<Utc>) -> Result<ReviewItem> {
        self.inner.resolve_review(id, r, now).await
    }
    async fn try_acquire_lease(&self, name: &str, owner: &str, now: DateTime<Utc>, ttl: Duration) -> Result<bool> {
        self.inner.try_acquire_lease(name, owner, now, ttl).await
    }
    async fn release_lease(&self, name: &str, owner: &str) -> Result<bool> {
        self.inner.release_lease(name, owner).await
    }
    async fn lease_holder(&self, name: &str, now: DateTime<Utc>) -> Result<Option<Lease>> {
        self.inner.lease_holder(name, now).await
    }
    async fn list_leases(&self, prefix: &str, now: DateTime<Utc>) -> Result<Vec<Lease>> {
        self.inner.list_leases(prefix, now).await
    }
    async fn release_leases_of(&self, owner: Option<&str>) -> Result<u64> {
        self.inner.release_leases_of(owner).await
    }
    async fn put_report(&self, report: &NewReport) -> Result<(Report, bool)> {
        self.inner.put_report(report).await
    }
    async fn get_report(&self, id: i64) -> Result<Option<Report>> {
        self.inner.get_report(id).await
    }
    async fn list_reports(&self, flow: Option<&str>, limit: u32) -> Result<Vec<Report>> {
        self.inner.list_reports(flow, limit).await
    }
}

const TTL_MS: i64 = 2000;

/// Asserts that no two workers ran jobs of the same connection at overlapping times. A run that never reported
/// back (its worker was killed) lasts until `dead_at`.
fn assert_one_worker_per_connection_at_a_time(log: &[Window], dead_at: Option<Instant>) {
    let mut by_conn: BTreeMap<&str, Vec<&Window>> = BTreeMap::new();
    for w in log {
        if let Some(c) = &w.connection {
            by_conn.entry(c).or_default().push(w);
        }
    }
    for (conn, mut runs) in by_conn {
        runs.sort_by_key(|w| w.start);
        // For each worker, the latest end among its runs that started so far.
        let mut latest_end: HashMap<&str, Instant> = HashMap::new();
        for w in runs {
            for (other, end) in &latest_end {
                assert!(
                    *other == w.worker || *end <= w.start,
                    "connection `{conn}`: job {} ran on {} while {other} still ran one of its jobs",
                    w.job,
                    w.worker
                );
            }
            let end = w.end.or(dead_at).unwrap_or_else(|| panic!("job {} of {} never finished", w.job, w.worker));
            let e = latest_end.entry(&w.worker).or_insert(end);
            *e = (*e).max(end);
        }
    }
}

async fn wait_until<F, Fut>(what: &str, limit: StdDuration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
}

fn own_write(connection: &str, i: usize, phase: u8) -> NewJob {
    NewJob {
        kind: JOB_OWN_WRITE.into(),
        idempotency_key: format!("{connection}-{phase}-{i}"),
        flow: None,
        connection: Some(connection.into()),
        payload: json!({}),
        run_at: Utc::now(),
        max_attempts: 5,
    }
}

async fn workers_done(store: &Arc<dyn Store>, total: i64) -> bool {
    store.count_jobs().await.unwrap().done == total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_runs_on_one_worker_at_a_time_and_moves_when_its_worker_dies() {
    let Some(db) = TestDatabase::create().await else { return };
    let cipher = SecretCipher::for_tests();
    let admin = ledgerlink_store::open(&db.url, cipher.clone()).await.unwrap();
    let log: Log = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut handles = BTreeMap::new();
    for name in ["w1", "w2", "w3"] {
        let inner = ledgerlink_store::open(&db.url, cipher.clone()).await.unwrap();
        let store: Arc<dyn Store> = Arc::new(Recording { inner, worker: name.into(), log: log.clone() });
        let settings = EngineSettings {
            worker_id: name.into(),
            concurrency: 4,
            lease: Duration::seconds(3),
            idle_wait: StdDuration::from_millis(10),
            connection_leases: None, // the default on PostgreSQL: on
            connection_lease_ttl: Duration::milliseconds(TTL_MS),
            // Long enough that a connection stays with its worker between the two phases.
            connection_idle_release: StdDuration::from_secs(120),
            ..EngineSettings::default()
        };
        let engine = Engine::new(store, BTreeMap::new(), Vec::new(), settings).unwrap();
        assert!(worker::leases_connections(&engine));
        handles.insert(name.to_string(), tokio::spawn(worker::run(engine, stop_rx.clone())));
    }
    wait_until("three worker heartbeats", StdDuration::from_secs(10), || async {
        admin.list_leases("worker:", Utc::now()).await.unwrap().len() == 3
    })
    .await;

    // Phase 1: two connections' worth of jobs, three workers.
    const N: usize = 150;
    for i in 0..N {
        admin.enqueue(&own_write("alpha", i, 1)).await.unwrap();
        admin.enqueue(&own_write("beta", i, 1)).await.unwrap();
    }
    let total = (2 * N) as i64;
    wait_until("phase 1 to finish", StdDuration::from_secs(60), || workers_done(&admin, total)).await;
    // The recorder notes a run's end after the store call returns: wait for the log, not only the store.
    wait_until("every phase 1 run to be recorded as ended", StdDuration::from_secs(10), || {
        let ended = log.lock().unwrap().iter().filter(|w| w.end.is_some()).count();
        async move { ended == 2 * N }
    })
    .await;
    let phase1 = log.lock().unwrap().clone();
    assert_eq!(phase1.len(), 2 * N, "every job ran exactly once");
    assert_one_worker_per_connection_at_a_time(&phase1, None);
    let ran_on = |conn: &str| -> BTreeSet<String> {
        phase1.iter().filter(|w| w.connection.as_deref() == Some(conn)).map(|w| w.worker.clone()).collect()
    };
    let (alpha_workers, beta_workers) = (ran_on("alpha"), ran_on("beta"));
    assert!(alpha_workers.is_disjoint(&beta_workers), "alpha on {alpha_workers:?}, beta on {beta_workers:?}");

    // Phase 2: the worker holding alpha dies. Its lease is left to run out.
    let holder = admin.lease_holder("connection:alpha", Utc::now()).await.unwrap().expect("alpha is held");
    let victim = holder.owner.clone();
    let handle = handles.remove(&victim).unwrap();
    handle.abort();
    assert!(handle.await.unwrap_err().is_cancelled());
    let dead_at = Instant::now();
    let until =
        admin.lease_holder("connection:alpha", Utc::now()).await.unwrap().expect("still held after death").until;
    assert_eq!(admin.lease_holder("connection:alpha", Utc::now()).await.unwrap().unwrap().owner, victim);
    for i in 0..N {
        admin.enqueue(&own_write("alpha", i, 2)).await.unwrap();
        admin.enqueue(&own_write("beta", i, 2)).await.unwrap();
    }
    let total = (4 * N) as i64;
    wait_until("phase 2 to finish", StdDuration::from_secs(60), || workers_done(&admin, total)).await;
    let all = log.lock().unwrap().clone();
    assert_one_worker_per_connection_at_a_time(&all, Some(dead_at));
    let phase2_alpha: Vec<&Window> =
        all[phase1.len()..].iter().filter(|w| w.connection.as_deref() == Some("alpha")).collect();
    assert!(phase2_alpha.len() >= N);
    assert!(phase2_alpha.iter().all(|w| w.worker != victim), "the dead worker ran nothing more");
    let first = phase2_alpha.iter().map(|w| w.start_utc).min().unwrap();
    assert!(first > until, "alpha was taken over at {first}, before the dead worker's lease ran out at {until}");
    assert!(
        first < until + Duration::seconds(5),
        "alpha was taken over at {first}, long after the dead worker's lease ran out at {until}"
    );
    let new_holder = admin.lease_holder("connection:alpha", Utc::now()).await.unwrap().unwrap();
    assert_ne!(new_holder.owner, victim);

    // A clean stop gives every lease back at once.
    stop_tx.send(true).unwrap();
    for (_, h) in handles {
        h.await.unwrap().unwrap();
    }
    let left: Vec<String> = admin
        .list_leases("", Utc::now())
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.owner)
        .filter(|o| *o != victim)
        .collect();
    assert!(left.is_empty(), "leases left after a clean stop: {left:?}");
    drop(db);
}
