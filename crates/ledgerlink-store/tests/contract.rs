//! The store contract: one suite, run against both backends.
//!
//! Layout: each contract is a plain `async fn(&Fixture)` written against `Arc<dyn Store>`; the `contract!` macro at
//! the bottom turns each into a module with a `sqlite` and a `postgres` test. SQLite gets a fresh file in a temp
//! dir; PostgreSQL gets a fresh database `ledgerlink_test_<random>` on the server named by
//! `LEDGERLINK_TEST_POSTGRES_URL`, dropped when the fixture is dropped (even if the test panicked). Without that
//! variable the PostgreSQL half is skipped with a message, unless `CI=true`, where skipping would hide a gap and
//! the test fails instead.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledgerlink_store::{
    AuditFilter, ChangeCursor, Enqueued, IntentStatus, JobFilter, JobStatus, Link, NewAuditEntry, NewConnection,
    NewJob, NewPlatformTask, NewReport, NewReviewItem, NewRun, NewWriteIntent, PgStore, RecordRef, ReviewStatus, RunOutcome,
    SecretCipher, SqliteStore, Store, StoreError, TaskAttempt, TaskOutcome, TaskStatus,
};
use ledgerlink_store::testing::TestDatabase;
use serde_json::json;

// ----- fixtures -----

enum Concrete {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

struct Fixture {
    store: Arc<dyn Store>,
    concrete: Concrete,
    url: String,
    _dir: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

impl Fixture {
    async fn raw_credentials(&self, name: &str) -> Option<String> {
        match &self.concrete {
            Concrete::Sqlite(s) => s.raw_credentials_column(name).await.unwrap(),
            Concrete::Postgres(s) => s.raw_credentials_column(name).await.unwrap(),
        }
    }
}

async fn sqlite_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: opening must create it.
    let url = format!("sqlite://{}", dir.path().join("state/ledgerlink.db").display());
    let store = SqliteStore::open(&url, SecretCipher::for_tests()).await.unwrap();
    Fixture { store: Arc::new(store.clone()), concrete: Concrete::Sqlite(store), url, _dir: Some(dir), _database: None }
}

async fn postgres_fixture() -> Option<Fixture> {
    let database = TestDatabase::create().await?;
    let url = database.url.clone();
    let store = PgStore::open(&url, SecretCipher::for_tests()).await.unwrap();
    Some(Fixture {
        store: Arc::new(store.clone()),
        concrete: Concrete::Postgres(store),
        url,
        _dir: None,
        _database: Some(database),
    })
}

// ----- builders -----

/// A fixed instant (whole microseconds, as both backends store them) so that results never depend on the clock.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn job(key: &str, run_at: DateTime<Utc>) -> NewJob {
    NewJob {
        kind: "flow.record".into(),
        idempotency_key: key.into(),
        flow: Some("opportunity-to-invoice".into()),
        connection: Some("qbo".into()),
        payload: json!({"record": key, "amount": "125.50", "currency": "USD"}),
        run_at,
        max_attempts: 3,
    }
}

fn new_connection(secret: &str) -> NewConnection {
    NewConnection {
        name: "qbo-acme".into(),
        system: "quickbooks".into(),
        config: json!({"realm_id": "9130350000000001", "base_url": "https://sandbox-quickbooks.api.intuit.com"}),
        credentials: json!({"client_secret": secret, "refresh_token": "RT1-first-token"}),
    }
}

// ----- contracts -----

async fn connections_are_sealed_at_rest_and_rotated_by_compare_and_swap(f: &Fixture) {
    let s = &f.store;
    let secret = "very-secret-client-secret-4711";
    let created = s.put_connection(&new_connection(secret)).await.unwrap();
    assert_eq!(created.credentials_version, 1);
    assert_eq!(created.credentials["client_secret"], secret);
    assert!(!format!("{created:?}").contains(secret), "Debug must redact credentials");

    let raw = f.raw_credentials("qbo-acme").await.unwrap();
    assert!(raw.starts_with("v1:"), "sealed column should carry the format version: {raw}");
    assert!(!raw.contains(secret) && !raw.contains("RT1-first-token") && !raw.contains("client_secret"));

    let got = s.get_connection("qbo-acme").await.unwrap().unwrap();
    assert_eq!(got.credentials, created.credentials);
    assert_eq!(got.config["realm_id"], "9130350000000001");
    assert!(s.get_connection("missing").await.unwrap().is_none());

    // Two refreshers both read version 1; only the first swap wins.
    let v2 =
        s.update_credentials("qbo-acme", 1, &json!({"client_secret": secret, "refresh_token": "RT2"})).await.unwrap();
    assert_eq!(v2, 2);
    let stale = s.update_credentials("qbo-acme", 1, &json!({"refresh_token": "RT2-other"})).await.unwrap_err();
    assert!(matches!(stale, StoreError::Conflict(_)), "{stale:?}");
    let got = s.get_connection("qbo-acme").await.unwrap().unwrap();
    assert_eq!(got.credentials["refresh_token"], "RT2");
    assert_eq!(got.credentials_version, 2);
    assert!(!f.raw_credentials("qbo-acme").await.unwrap().contains("RT2"));
    let missing = s.update_credentials("nope", 1, &json!({})).await.unwrap_err();
    assert!(matches!(missing, StoreError::NotFound { what: "connection", .. }), "{missing:?}");

    // Replacing the connection keeps its creation time and moves the version on, so in-flight swaps fail.
    let replaced = s.put_connection(&new_connection("rotated-secret")).await.unwrap();
    assert_eq!(replaced.credentials_version, 3);
    assert_eq!(replaced.created_at, created.created_at);
    assert!(s.update_credentials("qbo-acme", 2, &json!({})).await.is_err());

    let mut other = new_connection("sf-secret");
    other.name = "salesforce".into();
    other.system = "salesforce".into();
    s.put_connection(&other).await.unwrap();
    let names: Vec<String> = s.list_connections().await.unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["qbo-acme", "salesforce"]);
}

async fn credentials_cannot_be_read_with_another_master_key(f: &Fixture) {
    f.store.put_connection(&new_connection("s3cr3t")).await.unwrap();
    let other = ledgerlink_store::open(&f.url, SecretCipher::for_tests()).await.unwrap();
    assert_eq!(other.backend(), f.store.backend());
    let err = other.get_connection("qbo-acme").await.unwrap_err();
    assert!(matches!(err, StoreError::Decrypt), "{err:?}");
}

async fn duplicate_enqueue_is_a_no_op(f: &Fixture) {
    let s = &f.store;
    let first = s.enqueue(&job("sf:006A:v1", t0())).await.unwrap();
    let Enqueued::Inserted(id) = first else { panic!("first enqueue should insert: {first:?}") };
    let mut again = job("sf:006A:v1", t0() + Duration::hours(1));
    again.payload = json!({"different": true});
    assert_eq!(s.enqueue(&again).await.unwrap(), Enqueued::Duplicate(id));

    let stored = s.get_job(id).await.unwrap().unwrap();
    assert_eq!(stored.payload, job("sf:006A:v1", t0()).payload, "the original job must be untouched");
    assert_eq!(stored.run_at, t0());
    assert_eq!(stored.status, JobStatus::Queued);
    assert_eq!(stored.attempts, 0);
    assert_eq!(s.count_jobs().await.unwrap().queued, 1);
    assert!(s.get_job(id + 1000).await.unwrap().is_none());

    // A job recorded as done occupies its key and is never claimed; recording a taken key changes nothing.
    let done = s.enqueue_done(&job("sf:006A:v2", t0())).await.unwrap();
    let Enqueued::Inserted(done_id) = done else { panic!("{done:?}") };
    assert_eq!(s.get_job(done_id).await.unwrap().unwrap().status, JobStatus::Done);
    assert_eq!(s.enqueue(&job("sf:006A:v2", t0())).await.unwrap(), Enqueued::Duplicate(done_id));
    assert_eq!(s.enqueue_done(&job("sf:006A:v1", t0())).await.unwrap(), Enqueued::Duplicate(id));
    assert_eq!(s.get_job(id).await.unwrap().unwrap().status, JobStatus::Queued);
    assert!(s.claim_jobs("w1", t0() + Duration::hours(2), Duration::seconds(30), 10).await.unwrap().iter().all(|j| j.id != done_id));
}

async fn claim_takes_due_jobs_in_order_and_leases_them(f: &Fixture) {
    let s = &f.store;
    let late = s.enqueue(&job("late", t0() - Duration::seconds(1))).await.unwrap().id();
    let early = s.enqueue(&job("early", t0() - Duration::minutes(5))).await.unwrap().id();
    // Differs from t0 only in the microseconds: text ordering in SQLite must still get it right.
    let future = s.enqueue(&job("future", t0() + Duration::microseconds(1))).await.unwrap().id();
    let exact = s.enqueue(&job("exact", t0())).await.unwrap().id();

    let got = s.claim_jobs("w1", t0(), Duration::seconds(30), 2).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), [early, late]);
    for j in &got {
        assert_eq!(j.status, JobStatus::Running);
        assert_eq!(j.lease_owner.as_deref(), Some("w1"));
        assert_eq!(j.lease_until, Some(t0() + Duration::seconds(30)));
        assert_eq!(j.attempts, 1);
    }
    let rest = s.claim_jobs("w2", t0(), Duration::seconds(30), 10).await.unwrap();
    assert_eq!(rest.iter().map(|j| j.id).collect::<Vec<_>>(), [exact], "leased and future jobs are not due");
    assert!(s.claim_jobs("w2", t0() + Duration::seconds(29), Duration::seconds(30), 0).await.unwrap().is_empty());
    let later = s.claim_jobs("w2", t0() + Duration::microseconds(1), Duration::seconds(30), 10).await.unwrap();
    assert_eq!(later.iter().map(|j| j.id).collect::<Vec<_>>(), [future]);

    let counts = s.count_jobs().await.unwrap();
    assert_eq!((counts.queued, counts.running), (0, 4));
    s.complete_job(early, "w1", t0() + Duration::seconds(1)).await.unwrap();
    let done = s.get_job(early).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Done);
    assert_eq!(done.updated_at, t0() + Duration::seconds(1));
    // Done is final: completing again, or from another worker, is a conflict.
    assert!(matches!(s.complete_job(early, "w1", t0()).await, Err(StoreError::Conflict(_))));
    assert!(matches!(s.complete_job(late, "w2", t0()).await, Err(StoreError::Conflict(_))));
    assert!(matches!(s.complete_job(999_999, "w1", t0()).await, Err(StoreError::NotFound { what: "job", .. })));
}

async fn concurrent_claimers_never_share_a_job_and_drain_the_queue(f: &Fixture) {
    const JOBS: usize = 200;
    const WORKERS: usize = 8;
    for i in 0..JOBS {
        let run_at = t0() - Duration::seconds((i % 17) as i64);
        f.store.enqueue(&job(&format!("bulk-{i}"), run_at)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let store = Arc::clone(&f.store);
        tasks.push(tokio::spawn(async move {
            let worker = format!("worker-{w}");
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_jobs(&worker, t0(), Duration::minutes(5), 3).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                for j in batch {
                    assert_eq!(j.lease_owner.as_deref(), Some(worker.as_str()));
                    // Completing proves the lease is really ours and not also someone else's.
                    store.complete_job(j.id, &worker, t0()).await.unwrap();
                    mine.push(j.id);
                }
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for t in tasks {
        for id in t.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "job {id} was handed to two workers");
        }
    }
    assert_eq!(total, JOBS);
    assert_eq!(seen.len(), JOBS);
    let counts = f.store.count_jobs().await.unwrap();
    assert_eq!((counts.done, counts.queued, counts.running), (JOBS as i64, 0, 0));
    for j in f.store.list_jobs(&JobFilter::default()).await.unwrap() {
        assert_eq!(j.attempts, 1, "job {} was claimed more than once", j.id);
    }
}

async fn expired_lease_is_reclaimed_and_the_old_worker_loses_it(f: &Fixture) {
    let s = &f.store;
    let id = s.enqueue(&job("crashy", t0())).await.unwrap().id();
    let lease = Duration::seconds(30);
    assert_eq!(s.claim_jobs("old", t0(), lease, 10).await.unwrap().len(), 1);
    assert!(s.claim_jobs("new", t0() + Duration::seconds(29), lease, 10).await.unwrap().is_empty());
    // Exactly at lease end the lease still holds; strictly after, it has expired.
    assert!(s.claim_jobs("new", t0() + lease, lease, 10).await.unwrap().is_empty());

    let at = t0() + Duration::seconds(31);
    let reclaimed = s.claim_jobs("new", at, lease, 10).await.unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].id, id);
    assert_eq!(reclaimed[0].attempts, 2, "the lost attempt counts");
    assert_eq!(reclaimed[0].lease_owner.as_deref(), Some("new"));
    assert_eq!(reclaimed[0].lease_until, Some(at + lease));

    for err in [
        s.complete_job(id, "old", at).await.unwrap_err(),
        s.fail_job(id, "old", "late failure", None, at).await.unwrap_err(),
        s.park_job(id, "old", 1, at).await.unwrap_err(),
    ] {
        assert!(matches!(&err, StoreError::Conflict(m) if m.contains("new")), "{err:?}");
    }
    s.complete_job(id, "new", at).await.unwrap();
    assert_eq!(s.get_job(id).await.unwrap().unwrap().status, JobStatus::Done);
}

async fn leases_of_a_gone_process_are_recovered_at_once(f: &Fixture) {
    let s = &f.store;
    let a = s.enqueue(&job("a", t0())).await.unwrap().id();
    let b = s.enqueue(&job("b", t0())).await.unwrap().id();
    let c = s.enqueue(&job("c", t0())).await.unwrap().id();
    let lease = Duration::minutes(10);
    assert_eq!(s.claim_jobs("dead-worker", t0(), lease, 2).await.unwrap().len(), 2);
    assert_eq!(s.claim_jobs("live-worker", t0(), lease, 1).await.unwrap().len(), 1);

    // Only the named owner's leases come back, long before they would expire.
    let at = t0() + Duration::seconds(1);
    assert_eq!(s.recover_leases(Some("dead-worker"), at).await.unwrap(), 2);
    let again = s.claim_jobs("restarted", at, lease, 10).await.unwrap();
    let ids: HashSet<_> = again.iter().map(|j| j.id).collect();
    assert_eq!(ids, HashSet::from([a, b]));
    assert!(again.iter().all(|j| j.attempts == 2), "the interrupted attempt still counts");
    let live = s.get_job(c).await.unwrap().unwrap();
    assert_eq!((live.status, live.lease_owner.as_deref()), (JobStatus::Running, Some("live-worker")));

    // Without an owner every running job comes back (single-process stores).
    assert_eq!(s.recover_leases(None, at).await.unwrap(), 3);
    assert!(s.list_jobs(&JobFilter { status: Some(JobStatus::Running), ..Default::default() }).await.unwrap().is_empty());
}

async fn failures_retry_then_dead_letter_and_requeue_resets(f: &Fixture) {
    let s = &f.store;
    let id = s.enqueue(&job("flaky", t0())).await.unwrap().id();
    let mut now = t0();
    let mut attempts_seen = Vec::new();
    // What the engine does: retry with backoff while attempts remain, dead-letter after the last.
    loop {
        let claimed = s.claim_jobs("w", now, Duration::seconds(60), 1).await.unwrap();
        let Some(j) = claimed.into_iter().next() else { panic!("job should be due at {now}") };
        attempts_seen.push(j.attempts);
        let retry_at = (j.attempts < j.max_attempts).then(|| now + Duration::seconds(10 * i64::from(j.attempts)));
        s.fail_job(id, "w", &format!("HTTP 503 on attempt {}", j.attempts), retry_at, now).await.unwrap();
        let after = s.get_job(id).await.unwrap().unwrap();
        assert_eq!(after.last_error.as_deref(), Some(format!("HTTP 503 on attempt {}", j.attempts).as_str()));
        assert_eq!(after.lease_owner, None);
        match retry_at {
            Some(at) => {
                assert_eq!(after.status, JobStatus::Queued);
                assert_eq!(after.run_at, at);
                let early = s.claim_jobs("w", at - Duration::microseconds(1), Duration::seconds(60), 1).await.unwrap();
                assert!(early.is_empty(), "not due before retry_at");
                now = at;
            }
            None => {
                assert_eq!(after.status, JobStatus::Dead);
                break;
            }
        }
    }
    assert_eq!(attempts_seen, [1, 2, 3]);
    assert!(s.claim_jobs("w", now + Duration::days(1), Duration::seconds(60), 10).await.unwrap().is_empty());
    assert_eq!(s.count_jobs().await.unwrap().dead, 1);

    let replay_at = now + Duration::hours(1);
    s.requeue_job(id, replay_at).await.unwrap();
    let requeued = s.get_job(id).await.unwrap().unwrap();
    assert_eq!((requeued.status, requeued.attempts, requeued.run_at), (JobStatus::Queued, 0, replay_at));
    let again = s.claim_jobs("w", replay_at, Duration::seconds(60), 1).await.unwrap();
    assert_eq!(again[0].attempts, 1);
    // A running job cannot be requeued under its worker's feet.
    assert!(matches!(s.requeue_job(id, replay_at).await, Err(StoreError::Conflict(_))));
    assert!(matches!(s.requeue_job(424_242, replay_at).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(s.fail_job(424_242, "w", "x", None, now).await, Err(StoreError::NotFound { .. })));
}

async fn parked_jobs_wait_for_their_review(f: &Fixture) {
    let s = &f.store;
    let id = s.enqueue(&job("ambiguous", t0())).await.unwrap().id();
    s.claim_jobs("w", t0(), Duration::seconds(60), 1).await.unwrap();
    let review = s
        .create_review(&NewReviewItem {
            flow: Some("opportunity-to-invoice".into()),
            job_id: Some(id),
            kind: "ambiguous_match".into(),
            reason: "Two QuickBooks customers are named Acme Corp".into(),
            subject: Some(RecordRef::new("salesforce", "Opportunity", "006A")),
            details: json!({"candidates": [{"id": "58", "score": 0.91}, {"id": "61", "score": 0.90}]}),
            created_at: t0(),
        })
        .await
        .unwrap();
    s.park_job(id, "w", review, t0()).await.unwrap();
    let parked = s.get_job(id).await.unwrap().unwrap();
    assert_eq!((parked.status, parked.review_id, parked.lease_owner.clone()), (JobStatus::Parked, Some(review), None));
    assert!(s.claim_jobs("w", t0() + Duration::days(1), Duration::seconds(60), 10).await.unwrap().is_empty());
    assert_eq!(s.count_jobs().await.unwrap().parked, 1);

    s.resolve_review(review, &json!({"customer_id": "58"}), t0()).await.unwrap();
    s.requeue_job(id, t0() + Duration::minutes(1)).await.unwrap();
    let resumed = s.get_job(id).await.unwrap().unwrap();
    assert_eq!((resumed.status, resumed.review_id, resumed.attempts), (JobStatus::Queued, None, 0));
}

async fn jobs_are_listed_with_filters(f: &Fixture) {
    let s = &f.store;
    let a = s.enqueue(&job("a", t0())).await.unwrap().id();
    let mut other = job("b", t0());
    other.flow = Some("payments".into());
    other.kind = "flow.poll".into();
    let b = s.enqueue(&other).await.unwrap().id();
    let c = s.enqueue(&job("c", t0() + Duration::hours(1))).await.unwrap().id();
    s.claim_jobs("w", t0(), Duration::seconds(60), 1).await.unwrap(); // takes `a`

    let ids = |jobs: Vec<ledgerlink_store::Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_jobs(&JobFilter::default()).await.unwrap()), [c, b, a], "newest first");
    let queued = JobFilter { status: Some(JobStatus::Queued), ..Default::default() };
    assert_eq!(ids(s.list_jobs(&queued).await.unwrap()), [c, b]);
    let flow = JobFilter { flow: Some("payments".into()), ..Default::default() };
    assert_eq!(ids(s.list_jobs(&flow).await.unwrap()), [b]);
    let kind = JobFilter { kind: Some("flow.record".into()), limit: Some(1), ..Default::default() };
    assert_eq!(ids(s.list_jobs(&kind).await.unwrap()), [c]);
    let none = JobFilter { status: Some(JobStatus::Dead), ..Default::default() };
    assert!(s.list_jobs(&none).await.unwrap().is_empty());
    let counts = s.count_jobs().await.unwrap();
    assert_eq!((counts.queued, counts.running, counts.done, counts.dead, counts.parked), (2, 1, 0, 0, 0));
}

async fn links_are_found_from_either_side(f: &Fixture) {
    let s = &f.store;
    let opp = RecordRef::new("salesforce", "Opportunity", "006A000001");
    let inv = RecordRef::new("qbo-acme", "Invoice", "145");
    let link = Link {
        a: opp.clone(),
        b: inv.clone(),
        a_version: Some("2025-03-01T11:59:00Z".into()),
        b_version: Some("0".into()),
        a_hash: Some("h-a-1".into()),
        b_hash: Some("h-b-1".into()),
        flow: Some("opportunity-to-invoice".into()),
        updated_at: t0(),
    };
    s.put_link(&link).await.unwrap();
    assert_eq!(s.find_link(&opp, "qbo-acme", "Invoice").await.unwrap(), Some(link.clone()));
    assert_eq!(s.find_link(&inv, "salesforce", "Opportunity").await.unwrap(), Some(link.clone()), "as stored");
    assert_eq!(s.find_link(&opp, "qbo-acme", "Customer").await.unwrap(), None);
    assert_eq!(
        s.find_link(&RecordRef::new("salesforce", "Opportunity", "other"), "qbo-acme", "Invoice").await.unwrap(),
        None
    );

    // Upsert on (a, b.connection, b.object): new versions and hashes replace the old ones.
    let updated = Link {
        b_version: Some("1".into()),
        b_hash: Some("h-b-2".into()),
        updated_at: t0() + Duration::minutes(1),
        ..link.clone()
    };
    s.put_link(&updated).await.unwrap();
    assert_eq!(s.find_link(&inv, "salesforce", "Opportunity").await.unwrap(), Some(updated.clone()));

    let customer = Link {
        a: RecordRef::new("salesforce", "Account", "001A"),
        b: RecordRef::new("qbo-acme", "Customer", "58"),
        a_version: None,
        b_version: None,
        a_hash: None,
        b_hash: None,
        flow: None,
        updated_at: t0(),
    };
    s.put_link(&customer).await.unwrap();
    assert_eq!(s.list_links("qbo-acme", "Invoice").await.unwrap(), std::slice::from_ref(&updated));
    assert_eq!(s.list_links("salesforce", "Opportunity").await.unwrap(), [updated]);
    assert_eq!(s.list_links("qbo-acme", "Customer").await.unwrap(), [customer]);
    assert!(s.list_links("qbo-acme", "Bill").await.unwrap().is_empty());
}

async fn write_intents_are_idempotent(f: &Fixture) {
    let s = &f.store;
    let intent = NewWriteIntent {
        key: "opportunity-to-invoice:006A:v3:create".into(),
        flow: "opportunity-to-invoice".into(),
        job_id: Some(7),
        connection: "qbo-acme".into(),
        object: "Invoice".into(),
        action: "create".into(),
        payload: json!({"TotalAmt": "125.50", "CurrencyRef": {"value": "USD"}}),
        created_at: t0(),
    };
    let first = s.begin_intent(&intent).await.unwrap();
    assert_eq!((first.status, first.attempts, first.result_id.clone()), (IntentStatus::Pending, 1, None));
    let retry =
        NewWriteIntent { payload: json!({"changed": true}), created_at: t0() + Duration::minutes(5), ..intent.clone() };
    let second = s.begin_intent(&retry).await.unwrap();
    assert_eq!(second.attempts, 2);
    assert_eq!(second.payload, intent.payload, "the stored intent is returned, not the new one");
    assert_eq!(second.created_at, t0());
    assert_eq!(second.job_id, Some(7));

    // Refused outright: still pending, with the request key the next attempt carries; the next begin sees it.
    s.refuse_intent(&intent.key, "ll-next", "DisplayName must not contain ':'").await.unwrap();
    let refused = s.begin_intent(&retry).await.unwrap();
    assert_eq!((refused.status, refused.attempts), (IntentStatus::Pending, 3));
    assert_eq!(refused.response, Some(json!({"refused": "DisplayName must not contain ':'", "request_key": "ll-next"})));

    let response = json!({"Invoice": {"Id": "145", "SyncToken": "0"}});
    let done_at = t0() + Duration::minutes(6);
    let audit = |id: &str| NewAuditEntry {
        at: done_at,
        flow: Some("opp-to-invoice".into()),
        job_id: Some(7),
        connection: "qbo-acme".into(),
        object: "Invoice".into(),
        record_id: Some(id.into()),
        action: "create".into(),
        outcome: "ok".into(),
        before: None,
        after: Some(response.clone()),
        error: None,
    };
    let audited = |id: &str| {
        let filter = AuditFilter { record_id: Some(id.into()), ..AuditFilter::default() };
        let s = s.clone();
        async move { s.list_audit(&filter).await.unwrap() }
    };
    s.complete_intent(&intent.key, "145", &response, done_at, &audit("145")).await.unwrap();
    let done = s.get_intent(&intent.key).await.unwrap().unwrap();
    assert_eq!(done.status, IntentStatus::Done);
    assert_eq!(done.result_id.as_deref(), Some("145"));
    assert_eq!(done.response, Some(response.clone()));
    assert_eq!(done.completed_at, Some(done_at));
    // The write's audit entry was appended with the completion.
    let entries = audited("145").await;
    assert_eq!(entries.len(), 1);
    let (got, want) = (&entries[0].entry, audit("145"));
    assert_eq!((got.at, &got.action, &got.outcome, got.job_id, &got.after), (want.at, &want.action, &want.outcome, want.job_id, &want.after));
    // A retried commit of the same outcome is harmless; a different record for the same intent is not, and
    // nothing of it is written, not even its audit entry.
    s.complete_intent(&intent.key, "145", &response, done_at, &audit("145")).await.unwrap();
    assert!(matches!(s.complete_intent(&intent.key, "146", &response, done_at, &audit("146")).await, Err(StoreError::Conflict(_))));
    assert!(audited("146").await.is_empty());
    assert_eq!(s.get_intent(&intent.key).await.unwrap().unwrap().result_id.as_deref(), Some("145"));
    assert!(matches!(s.complete_intent("nope", "1", &response, done_at, &audit("1")).await, Err(StoreError::NotFound { .. })));
    assert!(audited("1").await.is_empty());
    assert!(s.get_intent("nope").await.unwrap().is_none());
    // After completion, a re-begin still returns the completed intent, so the caller sees the result.
    let third = s.begin_intent(&intent).await.unwrap();
    assert_eq!((third.status, third.attempts, third.result_id.as_deref()), (IntentStatus::Done, 4, Some("145")));
    // A refusal noted late (a stale worker) does not touch a done intent.
    s.refuse_intent(&intent.key, "ll-late", "late").await.unwrap();
    assert_eq!(s.get_intent(&intent.key).await.unwrap().unwrap().response, Some(response));
}

async fn change_cursors_upsert(f: &Fixture) {
    let s = &f.store;
    assert!(s.get_cursor("salesforce", "Opportunity", "opp").await.unwrap().is_none());
    let cursor = ChangeCursor {
        connection: "salesforce".into(),
        object: "Opportunity".into(),
        flow: "opp".into(),
        position: t0(),
        seen: json!([["006A", "v1"]]),
        updated_at: t0(),
    };
    s.put_cursor(&cursor).await.unwrap();
    assert_eq!(s.get_cursor("salesforce", "Opportunity", "opp").await.unwrap(), Some(cursor.clone()));
    let moved = ChangeCursor {
        position: t0() + Duration::minutes(5),
        seen: json!([]),
        updated_at: t0() + Duration::minutes(5),
        ..cursor.clone()
    };
    s.put_cursor(&moved).await.unwrap();
    assert_eq!(s.get_cursor("salesforce", "Opportunity", "opp").await.unwrap(), Some(moved));
    let other_flow = ChangeCursor { flow: "other".into(), ..cursor.clone() };
    s.put_cursor(&other_flow).await.unwrap();
    assert_eq!(s.get_cursor("salesforce", "Opportunity", "other").await.unwrap(), Some(other_flow));
    assert!(s.get_cursor("salesforce", "Account", "opp").await.unwrap().is_none());
}

async fn runs_start_finish_and_list_newest_first(f: &Fixture) {
    let s = &f.store;
    let r1 = s.start_run(&NewRun { flow: "opp".into(), trigger: "poll".into(), started_at: t0() }).await.unwrap();
    let r2 = s
        .start_run(&NewRun { flow: "pay".into(), trigger: "webhook".into(), started_at: t0() + Duration::minutes(1) })
        .await
        .unwrap();
    let r3 = s
        .start_run(&NewRun { flow: "opp".into(), trigger: "manual".into(), started_at: t0() + Duration::minutes(2) })
        .await
        .unwrap();
    let outcome =
        RunOutcome { records_seen: 12, jobs_enqueued: 3, writes: 2, errors: 1, error: Some("one 400".into()) };
    s.finish_run(r1, &outcome, t0() + Duration::seconds(30)).await.unwrap();
    assert!(matches!(s.finish_run(9_999, &outcome, t0()).await, Err(StoreError::NotFound { what: "run", .. })));

    let all = s.list_runs(None, 10).await.unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), [r3, r2, r1]);
    let opp = s.list_runs(Some("opp"), 10).await.unwrap();
    assert_eq!(opp.iter().map(|r| r.id).collect::<Vec<_>>(), [r3, r1]);
    let finished = &opp[1];
    assert_eq!(finished.finished_at, Some(t0() + Duration::seconds(30)));
    let stored = finished.outcome.clone().unwrap();
    assert_eq!((stored.records_seen, stored.jobs_enqueued, stored.writes, stored.errors), (12, 3, 2, 1));
    assert_eq!(stored.error.as_deref(), Some("one 400"));
    assert!(opp[0].finished_at.is_none() && opp[0].outcome.is_none());
    assert_eq!(opp[0].trigger, "manual");
    assert_eq!(s.list_runs(None, 1).await.unwrap().len(), 1);
}

async fn audit_log_lists_newest_first_with_filters(f: &Fixture) {
    let s = &f.store;
    let entry = |minute: i64, flow: &str, connection: &str, object: &str, record: &str| NewAuditEntry {
        at: t0() + Duration::minutes(minute),
        flow: Some(flow.into()),
        job_id: Some(minute),
        connection: connection.into(),
        object: object.into(),
        record_id: Some(record.into()),
        action: "create".into(),
        outcome: "ok".into(),
        before: None,
        after: Some(json!({"Id": record})),
        error: None,
    };
    let e1 = s.append_audit(&entry(1, "opp", "qbo-acme", "Invoice", "145")).await.unwrap();
    let e2 = s.append_audit(&entry(2, "opp", "salesforce", "Opportunity", "006A")).await.unwrap();
    let mut failed = entry(3, "pay", "qbo-acme", "Payment", "77");
    failed.outcome = "error".into();
    failed.error = Some("Stale object error".into());
    failed.before = Some(json!({"Id": "77", "SyncToken": "1"}));
    let e3 = s.append_audit(&failed).await.unwrap();
    let e4 = s.append_audit(&entry(4, "opp", "qbo-acme", "Invoice", "145")).await.unwrap();

    let ids = |v: Vec<ledgerlink_store::AuditEntry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_audit(&AuditFilter::default()).await.unwrap()), [e4, e3, e2, e1]);
    let by_flow = AuditFilter { flow: Some("opp".into()), ..Default::default() };
    assert_eq!(ids(s.list_audit(&by_flow).await.unwrap()), [e4, e2, e1]);
    let by_conn = AuditFilter { connection: Some("qbo-acme".into()), ..Default::default() };
    assert_eq!(ids(s.list_audit(&by_conn).await.unwrap()), [e4, e3, e1]);
    let by_record = AuditFilter {
        connection: Some("qbo-acme".into()),
        object: Some("Invoice".into()),
        record_id: Some("145".into()),
        ..Default::default()
    };
    assert_eq!(ids(s.list_audit(&by_record).await.unwrap()), [e4, e1]);
    let limited = AuditFilter { limit: Some(2), ..Default::default() };
    assert_eq!(ids(s.list_audit(&limited).await.unwrap()), [e4, e3]);

    let by_object = AuditFilter { object: Some("Payment".into()), ..Default::default() };
    let got = s.list_audit(&by_object).await.unwrap();
    assert_eq!(got.len(), 1);
    let stored = &got[0].entry;
    assert_eq!((stored.outcome.as_str(), stored.error.as_deref()), ("error", Some("Stale object error")));
    assert_eq!(stored.before, failed.before);
    assert_eq!(stored.after, failed.after);
    assert_eq!((stored.at, stored.job_id, stored.flow.as_deref()), (failed.at, Some(3), Some("pay")));
}

async fn reviews_resolve_exactly_once(f: &Fixture) {
    let s = &f.store;
    let item = NewReviewItem {
        flow: None,
        job_id: None,
        kind: "unmapped_account".into(),
        reason: "No QuickBooks income account is mapped for product family Services".into(),
        subject: None,
        details: json!({"product_family": "Services"}),
        created_at: t0(),
    };
    let first = s.create_review(&item).await.unwrap();
    let with_subject =
        NewReviewItem { subject: Some(RecordRef::new("salesforce", "Opportunity", "006B")), ..item.clone() };
    let second = s.create_review(&with_subject).await.unwrap();

    let got = s.get_review(first).await.unwrap().unwrap();
    assert_eq!((got.status, got.item.subject.clone(), got.resolution.clone()), (ReviewStatus::Open, None, None));
    assert_eq!(got.item.details, item.details);
    assert_eq!(s.get_review(second).await.unwrap().unwrap().item.subject, with_subject.subject);
    assert!(s.get_review(second + 100).await.unwrap().is_none());

    let resolved_at = t0() + Duration::hours(2);
    let resolved = s.resolve_review(first, &json!({"account_id": "79"}), resolved_at).await.unwrap();
    assert_eq!(resolved.status, ReviewStatus::Resolved);
    assert_eq!(resolved.resolution, Some(json!({"account_id": "79"})));
    assert_eq!(resolved.resolved_at, Some(resolved_at));
    let again = s.resolve_review(first, &json!({"account_id": "80"}), resolved_at).await.unwrap_err();
    assert!(matches!(again, StoreError::Conflict(_)), "{again:?}");
    assert_eq!(s.get_review(first).await.unwrap().unwrap().resolution, Some(json!({"account_id": "79"})));
    assert!(matches!(s.resolve_review(4242, &json!({}), resolved_at).await, Err(StoreError::NotFound { .. })));

    let ids = |v: Vec<ledgerlink_store::ReviewItem>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_reviews(Some(ReviewStatus::Open)).await.unwrap()), [second]);
    assert_eq!(ids(s.list_reviews(Some(ReviewStatus::Resolved)).await.unwrap()), [first]);
    assert_eq!(ids(s.list_reviews(None).await.unwrap()), [first, second]);
}

async fn reviews_are_found_by_their_job(f: &Fixture) {
    let s = &f.store;
    let job_a = s.enqueue(&job("a", t0())).await.unwrap().id();
    let job_b = s.enqueue(&job("b", t0())).await.unwrap().id();
    let review = |job_id| NewReviewItem {
        flow: Some("f".into()),
        job_id: Some(job_id),
        kind: "ambiguous_match".into(),
        reason: "two customers are called Acme".into(),
        subject: None,
        details: json!({"candidates": ["1", "2"]}),
        created_at: t0(),
    };
    let a1 = s.create_review(&review(job_a)).await.unwrap();
    let b1 = s.create_review(&review(job_b)).await.unwrap();
    let a2 = s.create_review(&review(job_a)).await.unwrap();
    s.resolve_review(a1, &json!({"action": "link", "target_id": "2"}), t0()).await.unwrap();
    let got: Vec<_> = s.reviews_for_job(job_a).await.unwrap().into_iter().map(|r| (r.id, r.status)).collect();
    assert_eq!(got, [(a1, ReviewStatus::Resolved), (a2, ReviewStatus::Open)]);
    assert_eq!(s.reviews_for_job(job_b).await.unwrap()[0].id, b1);
    assert!(s.reviews_for_job(job_b + 1000).await.unwrap().is_empty());
}

async fn leases_are_exclusive_under_concurrency(f: &Fixture) {
    const CONTENDERS: usize = 16;
    let ttl = Duration::seconds(30);
    // Everyone races for a free lease at once: exactly one wins.
    let race = |at: DateTime<Utc>, round: &'static str| {
        let tasks: Vec<_> = (0..CONTENDERS)
            .map(|i| {
                let store = Arc::clone(&f.store);
                tokio::spawn(async move {
                    let owner = format!("{round}-{i}");
                    store.try_acquire_lease("connection:qbo", &owner, at, ttl).await.unwrap().then_some(owner)
                })
            })
            .collect();
        async move {
            let mut winners = Vec::new();
            for t in tasks {
                winners.extend(t.await.unwrap());
            }
            winners
        }
    };
    let winners = race(t0(), "first").await;
    assert_eq!(winners.len(), 1, "a free lease went to {winners:?}");
    let holder = f.store.lease_holder("connection:qbo", t0()).await.unwrap().unwrap();
    assert_eq!(holder.owner, winners[0]);
    assert_eq!((holder.until, holder.acquired_at), (t0() + ttl, t0()));

    // While it holds, nobody else gets it, however many try.
    assert!(race(t0() + Duration::seconds(10), "second").await.is_empty());
    // Once it has expired, exactly one of many takes it over.
    let later = t0() + ttl + Duration::seconds(1);
    let takers = race(later, "third").await;
    assert_eq!(takers.len(), 1, "an expired lease went to {takers:?}");
    assert_eq!(f.store.lease_holder("connection:qbo", later).await.unwrap().unwrap().owner, takers[0]);
}

async fn leases_expire_renew_and_release(f: &Fixture) {
    let s = &f.store;
    let ttl = Duration::seconds(30);
    assert!(s.lease_holder("refresh:qbo", t0()).await.unwrap().is_none());
    assert!(s.try_acquire_lease("refresh:qbo", "a", t0(), ttl).await.unwrap());
    assert!(!s.try_acquire_lease("refresh:qbo", "b", t0() + Duration::seconds(29), ttl).await.unwrap());
    // Exactly at its end the lease still holds (as job leases do); strictly after, it has expired.
    assert!(!s.try_acquire_lease("refresh:qbo", "b", t0() + ttl, ttl).await.unwrap());
    assert_eq!(s.lease_holder("refresh:qbo", t0() + ttl).await.unwrap().unwrap().owner, "a");

    // Renewal by the owner moves the end and keeps the start of its tenure.
    let renewed_at = t0() + Duration::seconds(20);
    assert!(s.try_acquire_lease("refresh:qbo", "a", renewed_at, ttl).await.unwrap());
    let held = s.lease_holder("refresh:qbo", t0() + Duration::seconds(45)).await.unwrap().unwrap();
    assert_eq!((held.owner.as_str(), held.until, held.acquired_at), ("a", renewed_at + ttl, t0()));
    assert!(!s.try_acquire_lease("refresh:qbo", "b", t0() + Duration::seconds(45), ttl).await.unwrap());

    // Expired: `b` takes over, and the old owner can neither renew nor release it any more.
    let over = renewed_at + ttl + Duration::milliseconds(1);
    assert!(s.lease_holder("refresh:qbo", over).await.unwrap().is_none());
    assert!(s.try_acquire_lease("refresh:qbo", "b", over, ttl).await.unwrap());
    let taken = s.lease_holder("refresh:qbo", over).await.unwrap().unwrap();
    assert_eq!((taken.owner.as_str(), taken.acquired_at), ("b", over));
    assert!(!s.try_acquire_lease("refresh:qbo", "a", over, ttl).await.unwrap());
    assert!(!s.release_lease("refresh:qbo", "a").await.unwrap());
    assert_eq!(s.lease_holder("refresh:qbo", over).await.unwrap().unwrap().owner, "b");

    // Released: free at once for anyone, long before it would have expired.
    assert!(s.release_lease("refresh:qbo", "b").await.unwrap());
    assert!(s.lease_holder("refresh:qbo", over).await.unwrap().is_none());
    assert!(!s.release_lease("refresh:qbo", "b").await.unwrap(), "releasing twice reports nothing released");
    assert!(s.try_acquire_lease("refresh:qbo", "c", over, ttl).await.unwrap());

    // An owner who let its lease lapse gets a new tenure when it takes it again.
    let lapsed = over + ttl + Duration::seconds(5);
    assert!(s.try_acquire_lease("refresh:qbo", "c", lapsed, ttl).await.unwrap());
    assert_eq!(s.lease_holder("refresh:qbo", lapsed).await.unwrap().unwrap().acquired_at, lapsed);
}

async fn leases_are_listed_by_prefix_and_dropped_by_owner(f: &Fixture) {
    let s = &f.store;
    let ttl = Duration::seconds(30);
    for (name, owner) in
        [("worker:w1", "w1"), ("worker:w2", "w2"), ("connection:a", "w1"), ("connection:b", "w2"), ("worker_x", "w3")]
    {
        assert!(s.try_acquire_lease(name, owner, t0(), ttl).await.unwrap());
    }
    // A short-lived one that has run out by the time of the listing.
    assert!(s.try_acquire_lease("worker:w9", "w9", t0() - Duration::minutes(5), ttl).await.unwrap());
    let names = |v: Vec<ledgerlink_store::Lease>| v.into_iter().map(|l| l.name).collect::<Vec<_>>();
    // `_` is not a wildcard: `worker_x` is not under `worker:`, and the expired `worker:w9` is not listed.
    assert_eq!(names(s.list_leases("worker:", t0()).await.unwrap()), ["worker:w1", "worker:w2"]);
    assert_eq!(names(s.list_leases("connection:", t0()).await.unwrap()), ["connection:a", "connection:b"]);
    assert_eq!(names(s.list_leases("worker_", t0()).await.unwrap()), ["worker_x"]);

    // A restarted w1 drops what its previous life held; w2's leases stay.
    assert_eq!(s.release_leases_of(Some("w1")).await.unwrap(), 2);
    assert_eq!(names(s.list_leases("", t0()).await.unwrap()), ["connection:b", "worker:w2", "worker_x"]);
    assert!(s.try_acquire_lease("connection:a", "w3", t0(), ttl).await.unwrap());
    // Without an owner everything goes (a single-process store at start-up).
    assert_eq!(s.release_leases_of(None).await.unwrap(), 5);
    assert!(s.list_leases("", t0() - Duration::hours(1)).await.unwrap().is_empty());
}

async fn claims_can_be_limited_to_leased_connections(f: &Fixture) {
    let s = &f.store;
    let on = |key: &str, connection: Option<&str>, run_at: DateTime<Utc>| {
        let mut j = job(key, run_at);
        j.connection = connection.map(str::to_string);
        j
    };
    let a1 = s.enqueue(&on("a1", Some("alpha"), t0() - Duration::seconds(3))).await.unwrap().id();
    let b1 = s.enqueue(&on("b1", Some("beta"), t0() - Duration::seconds(2))).await.unwrap().id();
    let free = s.enqueue(&on("free", None, t0() - Duration::seconds(1))).await.unwrap().id();
    let a2 = s.enqueue(&on("a2", Some("alpha"), t0())).await.unwrap().id();
    s.enqueue(&on("g1", Some("gamma"), t0() + Duration::minutes(5))).await.unwrap();
    let quoted = s.enqueue(&on("x'y", Some("it's"), t0() - Duration::seconds(9))).await.unwrap().id();
    // Only connections with something claimable now: gamma's job is not due yet.
    assert_eq!(s.due_connections(t0()).await.unwrap(), ["alpha", "beta", "it's"]);

    let lease = Duration::seconds(30);
    let alpha = ["alpha".to_string()];
    let got: Vec<_> = s.claim_jobs_for("w1", t0(), lease, 10, &alpha).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(got, [a1, free, a2], "alpha's jobs and the connection-less one, oldest first");
    assert_eq!(s.due_connections(t0()).await.unwrap(), ["beta", "it's"]);
    // Holding nothing still lets a worker run connection-less jobs, and nothing else.
    assert!(s.claim_jobs_for("w2", t0(), lease, 10, &[]).await.unwrap().is_empty());
    let beta = ["beta".to_string(), "it's".to_string()];
    let got: Vec<_> = s.claim_jobs_for("w2", t0(), lease, 1, &beta).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(got, [quoted], "the limit holds and the oldest due job comes first");
    assert_eq!(s.due_connections(t0()).await.unwrap(), ["beta"]);
    let got: Vec<_> = s.claim_jobs_for("w2", t0(), lease, 5, &beta).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(got, [b1]);
    assert!(s.due_connections(t0()).await.unwrap().is_empty());
    assert!(s.claim_jobs_for("w2", t0(), lease, 0, &beta).await.unwrap().is_empty());

    // A running job whose lease has expired counts as due for its connection again.
    let later = t0() + lease + Duration::seconds(1);
    let due = s.due_connections(later).await.unwrap();
    assert_eq!(due, ["alpha", "beta", "it's"]);
    let retaken = s.claim_jobs_for("w3", later, lease, 10, &alpha).await.unwrap();
    assert_eq!(retaken.iter().map(|j| j.id).collect::<Vec<_>>(), [a1, free, a2]);
    assert!(retaken.iter().all(|j| j.attempts == 2 && j.lease_owner.as_deref() == Some("w3")));
}

// ----- the platform connector's documents and tasks -----

async fn platform_docs_insert_once_and_update_by_revision(f: &Fixture) {
    let s = &f.store;
    let (doc, inserted) = s.insert_doc("ws_a", "client", "c-1", &json!({"name": "Acme"}), t0()).await.unwrap();
    assert!(inserted);
    assert_eq!((doc.rev, doc.body.clone(), doc.created_at), (1, json!({"name": "Acme"}), t0()));
    let (again, inserted) = s.insert_doc("ws_a", "client", "c-1", &json!({"name": "Other"}), t0()).await.unwrap();
    assert!(!inserted, "a second insert of the same id inserts nothing");
    assert_eq!(again.body, json!({"name": "Acme"}), "and leaves the first body");

    let later = t0() + Duration::seconds(5);
    let updated = s.update_doc("ws_a", "client", "c-1", 1, &json!({"name": "Acme Ltd"}), later).await.unwrap();
    assert_eq!((updated.rev, updated.updated_at, updated.created_at), (2, later, t0()));
    let stale = s.update_doc("ws_a", "client", "c-1", 1, &json!({"name": "lost"}), later).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    let missing = s.update_doc("ws_a", "client", "nope", 1, &json!({}), later).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");

    let put = s.put_doc("ws_a", "client", "c-1", &json!({"name": "Put"}), later).await.unwrap();
    assert_eq!(put.rev, 3);
    let fresh = s.put_doc("ws_a", "client", "c-2", &json!({"name": "Zed"}), later).await.unwrap();
    assert_eq!(fresh.rev, 1);

    // Workspaces are separate name spaces; a global look-up finds the one holder.
    s.insert_doc("ws_b", "client", "c-1", &json!({"name": "B's"}), t0()).await.unwrap();
    assert_eq!(s.get_doc("ws_b", "client", "c-1").await.unwrap().unwrap().body, json!({"name": "B's"}));
    let ids: Vec<_> = s.list_docs("ws_a", "client").await.unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["c-1", "c-2"]);
    assert!(s.list_docs("ws_a", "invoice").await.unwrap().is_empty());
    s.insert_doc("ws_b", "token", "hash-1", &json!({"label": "ci"}), t0()).await.unwrap();
    assert_eq!(s.find_doc("token", "hash-1").await.unwrap().unwrap().workspace_id, "ws_b");
    assert!(s.find_doc("token", "hash-2").await.unwrap().is_none());

    assert!(s.delete_doc("ws_a", "client", "c-2").await.unwrap());
    assert!(!s.delete_doc("ws_a", "client", "c-2").await.unwrap());
    assert!(s.get_doc("ws_a", "client", "c-2").await.unwrap().is_none());
}

async fn platform_docs_insert_is_atomic_under_concurrency(f: &Fixture) {
    let mut handles = Vec::new();
    for n in 0..8 {
        let s = f.store.clone();
        handles.push(tokio::spawn(async move { s.insert_doc("ws", "idempotency", "key", &json!({"n": n}), t0()).await.unwrap().1 }));
    }
    let mut winners = 0;
    for h in handles {
        winners += usize::from(h.await.unwrap());
    }
    assert_eq!(winners, 1, "exactly one concurrent insert of one id wins");
}

fn task(key: &str, run_at: DateTime<Utc>) -> NewPlatformTask {
    NewPlatformTask {
        workspace_id: "ws_a".into(),
        kind: "sync.record".into(),
        dedupe_key: key.into(),
        payload: json!({"id": key}),
        run_at,
        max_attempts: 3,
    }
}

async fn platform_tasks_claim_retry_pause_and_resume(f: &Fixture) {
    let s = &f.store;
    let lease = Duration::seconds(30);
    let (a, new) = s.enqueue_task(&task("a", t0())).await.unwrap();
    assert!(new);
    assert_eq!(s.enqueue_task(&task("a", t0())).await.unwrap(), (a, false), "a duplicate key is a no-op");
    let (b, _) = s.enqueue_task(&task("b", t0() + Duration::seconds(1))).await.unwrap();
    let (later, _) = s.enqueue_task(&task("later", t0() + Duration::hours(1))).await.unwrap();

    let claimed = s.claim_tasks("w1", t0() + Duration::seconds(1), lease, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|t| t.id).collect::<Vec<_>>(), [a, b], "due tasks, oldest first");
    assert!(claimed.iter().all(|t| t.status == TaskStatus::Running && t.attempts == 1 && t.lease_owner.as_deref() == Some("w1")));
    assert!(s.claim_tasks("w2", t0() + Duration::seconds(1), lease, 10).await.unwrap().is_empty(), "leased tasks are not claimed twice");

    // Only the lease holder may finish a task.
    let wrong = s.finish_task(a, "w2", &TaskOutcome::Done, t0()).await;
    assert!(matches!(wrong, Err(StoreError::Conflict(_))), "{wrong:?}");
    s.finish_task(a, "w1", &TaskOutcome::Done, t0()).await.unwrap();
    let retry_at = t0() + Duration::seconds(10);
    s.finish_task(b, "w1", &TaskOutcome::Retry { at: retry_at, error: "HTTP 503".into() }, t0()).await.unwrap();
    let tb = s.get_task(b).await.unwrap().unwrap();
    assert_eq!((tb.status, tb.run_at, tb.last_error.as_deref(), tb.lease_owner.clone()), (TaskStatus::Queued, retry_at, Some("HTTP 503"), None));
    assert!(s.claim_tasks("w1", retry_at - Duration::seconds(1), lease, 10).await.unwrap().is_empty(), "not before its retry time");

    // Paused while disconnected: the attempt is given back, and resuming makes it due at once.
    let again = s.claim_tasks("w1", retry_at, lease, 10).await.unwrap();
    assert_eq!(again.iter().map(|t| (t.id, t.attempts)).collect::<Vec<_>>(), [(b, 2)]);
    s.finish_task(b, "w1", &TaskOutcome::Paused { reason: "disconnected".into() }, retry_at).await.unwrap();
    let tb = s.get_task(b).await.unwrap().unwrap();
    assert_eq!((tb.status, tb.attempts), (TaskStatus::Paused, 1));
    assert!(s.claim_tasks("w1", retry_at + Duration::minutes(30), lease, 10).await.unwrap().iter().all(|t| t.id != b), "paused tasks wait");
    assert_eq!(s.resume_tasks("ws_b", retry_at).await.unwrap(), 0, "another workspace's resume touches nothing");
    assert_eq!(s.resume_tasks("ws_a", retry_at).await.unwrap(), 1);
    let resumed = s.claim_tasks("w1", retry_at, lease, 10).await.unwrap();
    assert_eq!(resumed.iter().map(|t| t.id).collect::<Vec<_>>(), [b]);
    s.finish_task(b, "w1", &TaskOutcome::Dead { error: "refused".into() }, retry_at).await.unwrap();
    assert_eq!(s.get_task(b).await.unwrap().unwrap().status, TaskStatus::Dead);

    // An expired lease is taken over.
    let t_late = t0() + Duration::hours(1);
    let first = s.claim_tasks("w1", t_late, lease, 10).await.unwrap();
    assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), [later]);
    let taken = s.claim_tasks("w2", t_late + lease + Duration::seconds(1), lease, 10).await.unwrap();
    assert_eq!(taken.iter().map(|t| (t.id, t.attempts)).collect::<Vec<_>>(), [(later, 2)]);
    assert!(s.finish_task(later, "w1", &TaskOutcome::Done, t_late).await.is_err(), "the old holder lost it");

    let listed: Vec<_> = s.list_tasks("ws_a", Some("sync.record"), 10).await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(listed, [later, b, a], "newest first");
    assert!(s.list_tasks("ws_a", Some("webhook.deliver"), 10).await.unwrap().is_empty());
    assert_eq!(s.list_tasks("ws_a", None, 2).await.unwrap().len(), 2);
}

async fn platform_task_attempts_are_recorded_in_order(f: &Fixture) {
    let s = &f.store;
    let (id, _) = s.enqueue_task(&task("w", t0())).await.unwrap();
    for (n, ok, code) in [(2, true, Some(200)), (1, false, Some(500))] {
        s.record_attempt(&TaskAttempt {
            task_id: id,
            attempt: n,
            at: t0() + Duration::seconds(i64::from(n)),
            ok,
            status_code: code,
            error: (!ok).then(|| "HTTP 500".to_string()),
            duration_ms: 12,
        })
        .await
        .unwrap();
    }
    let got = s.list_attempts(id).await.unwrap();
    assert_eq!(got.iter().map(|a| (a.attempt, a.ok, a.status_code)).collect::<Vec<_>>(), [(1, false, Some(500)), (2, true, Some(200))]);
    assert_eq!(got[0].error.as_deref(), Some("HTTP 500"));
    assert_eq!(got[1].at, t0() + Duration::seconds(2));
    assert!(s.list_attempts(id + 1000).await.unwrap().is_empty());
}

async fn platform_secrets_round_trip_through_the_store_cipher(f: &Fixture) {
    let sealed = f.store.secrets().seal(&json!("whsec_abc"));
    assert!(!sealed.contains("whsec_abc"));
    assert_eq!(f.store.secrets().open(&sealed).unwrap(), json!("whsec_abc"));
}

async fn reports_are_kept_once_per_flow_and_period(f: &Fixture) {
    let s = &f.store;
    let report = |flow: &str, period: &str, title: &str, at: i64| NewReport {
        flow: flow.into(),
        kind: "reconciliation".into(),
        period: period.into(),
        title: title.into(),
        text: format!("{title}\n1 deal without an invoice: Acme's renewal, 1200.50 USD"),
        body: json!({"mismatches": [{"kind": "deal_without_invoice", "amount": "1200.50", "currency": "USD"}]}),
        created_at: t0() + Duration::seconds(at),
    };
    let (first, new) = s.put_report(&report("weekly", "2026-W47", "Week 47", 0)).await.unwrap();
    assert!(new);
    assert_eq!(first.report, report("weekly", "2026-W47", "Week 47", 0), "stored as given, body and text intact");

    // The same period again, even with other contents: the first report stays and is returned.
    let (again, new) = s.put_report(&report("weekly", "2026-W47", "Week 47 (re-run)", 5)).await.unwrap();
    assert!(!new);
    assert_eq!(again, first);

    let (other_flow, new) = s.put_report(&report("monthly", "2026-W47", "Other flow", 10)).await.unwrap();
    assert!(new, "periods are per flow");
    let (next_week, _) = s.put_report(&report("weekly", "2026-W48", "Week 48", 20)).await.unwrap();

    let all: Vec<i64> = s.list_reports(None, 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(all, [next_week.id, other_flow.id, first.id], "newest first");
    let weekly: Vec<i64> = s.list_reports(Some("weekly"), 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(weekly, [next_week.id, first.id]);
    assert_eq!(s.list_reports(None, 1).await.unwrap().len(), 1);
    assert_eq!(s.get_report(first.id).await.unwrap(), Some(first));
    assert_eq!(s.get_report(next_week.id + 1000).await.unwrap(), None);
}

// ----- one test per backend per contract -----

macro_rules! contract {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let fixture = super::sqlite_fixture().await;
                super::$name(&fixture).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(fixture) = super::postgres_fixture().await else { return };
                super::$name(&fixture).await;
            }
        }
    )*};
}

contract!(
    leases_are_exclusive_under_concurrency,
    leases_expire_renew_and_release,
    leases_are_listed_by_prefix_and_dropped_by_owner,
    claims_can_be_limited_to_leased_connections,
    reviews_are_found_by_their_job,
    connections_are_sealed_at_rest_and_rotated_by_compare_and_swap,
    credentials_cannot_be_read_with_another_master_key,
    duplicate_enqueue_is_a_no_op,
    claim_takes_due_jobs_in_order_and_leases_them,
    concurrent_claimers_never_share_a_job_and_drain_the_queue,
    expired_lease_is_reclaimed_and_the_old_worker_loses_it,
    leases_of_a_gone_process_are_recovered_at_once,
    failures_retry_then_dead_letter_and_requeue_resets,
    parked_jobs_wait_for_their_review,
    jobs_are_listed_with_filters,
    links_are_found_from_either_side,
    write_intents_are_idempotent,
    change_cursors_upsert,
    runs_start_finish_and_list_newest_first,
    audit_log_lists_newest_first_with_filters,
    reviews_resolve_exactly_once,
    reports_are_kept_once_per_flow_and_period,
);

contract!(
    platform_docs_insert_once_and_update_by_revision,
    platform_docs_insert_is_atomic_under_concurrency,
    platform_tasks_claim_retry_pause_and_resume,
    platform_task_attempts_are_recorded_in_order,
    platform_secrets_round_trip_through_the_store_cipher,
);
