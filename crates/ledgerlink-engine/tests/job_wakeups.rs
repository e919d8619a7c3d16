//! Cross-process wake-up on PostgreSQL: a job queued by one process is started at once by an idle worker of another
//! (`LISTEN/NOTIFY`), not at the end of that worker's idle wait. The idle wait is two minutes here, so the
//! assertion cannot pass by polling.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ledgerlink_engine::poller::JOB_OWN_WRITE;
use ledgerlink_engine::{Engine, EngineSettings, worker};
use ledgerlink_store::testing::TestDatabase;
use ledgerlink_store::{Enqueued, JobId, JobStatus, MasterKey, NewJob, SecretCipher};
use serde_json::json;

const IDLE_WAIT: Duration = Duration::from_secs(120);

async fn engine(url: &str, dir: &std::path::Path, worker_id: &str) -> Engine {
    let cipher = SecretCipher::new(MasterKey::load(dir, None).unwrap());
    let store = ledgerlink_store::open(url, cipher).await.unwrap();
    let settings = EngineSettings { worker_id: worker_id.into(), idle_wait: IDLE_WAIT, ..EngineSettings::default() };
    Engine::new(store, BTreeMap::new(), Vec::new(), settings).unwrap()
}

async fn enqueue(engine: &Engine, key: &str) -> JobId {
    let job = NewJob {
        kind: JOB_OWN_WRITE.into(),
        idempotency_key: key.into(),
        flow: None,
        connection: None,
        payload: json!({}),
        run_at: ledgerlink_engine::now(),
        max_attempts: 3,
    };
    match engine.store.enqueue(&job).await.unwrap() {
        Enqueued::Inserted(id) => id,
        Enqueued::Duplicate(_) => panic!("job {key} was queued before"),
    }
}

/// How long `id` took to be done by the other worker, failing after `deadline`.
async fn done_within(engine: &Engine, id: JobId, deadline: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let job = engine.store.get_job(id).await.unwrap().unwrap();
        if job.status == JobStatus::Done {
            return started.elapsed();
        }
        assert!(started.elapsed() < deadline, "job {id} is still {:?} after {deadline:?}", job.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queued_by_one_process_wakes_an_idle_worker_in_another() {
    let Some(db) = TestDatabase::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    // Two engines with stores (pools) of their own: as far as PostgreSQL can tell, two processes.
    let a = engine(&db.url, dir.path(), "worker-a").await;
    let b = engine(&db.url, dir.path(), "worker-b").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker_b = tokio::spawn(worker::run(b.clone(), stopped));

    // The first job only proves B is up and listening (B may also have found it on its first look).
    let first = enqueue(&a, "wake-1").await;
    done_within(&a, first, Duration::from_secs(30)).await;

    // B is now idle for two minutes unless woken; A's jobs must start at once, every time.
    for n in 2..=4 {
        let id = enqueue(&a, &format!("wake-{n}")).await;
        let took = done_within(&a, id, Duration::from_secs(20)).await;
        assert!(took < Duration::from_secs(5), "job {n} took {took:?}: B was not woken by A's enqueue");
    }
    // A runs no worker: B did all four.
    assert_eq!(b.stats.snapshot().jobs_done, 4);

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), worker_b).await.expect("worker B stops").unwrap().unwrap();
}
