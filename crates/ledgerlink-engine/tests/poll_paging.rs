//! The poll reads page by page against the Salesforce sandbox with small query batches (7 rows), so page
//! boundaries fall inside groups of records that share one `SystemModstamp` (an sObject Collections create stamps
//! all its records alike). Every change gets exactly one job; a poll cut short between pages resumes from the
//! cursor it saved after the last whole page, re-reading no handled change as new and missing none.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledgerlink_connectors::{Changes, Connector, ConnectorError, FindQuery, RateLimitPolicy, Record};
use ledgerlink_engine::{Engine, EngineSettings, connections, poller};
use ledgerlink_sandbox::{RunningSandbox, salesforce};
use ledgerlink_store::{JobFilter, MasterKey, SecretCipher, Store};
use serde_json::{Value, json};

const PAGE: usize = 7;

const FLOW: &str = r#"
[flow]
name = "accounts"
description = "Every changed account."

[trigger]
type = "poll"
connection = "salesforce"
object = "Account"
fields = ["Id", "Name", "SystemModstamp"]
interval_seconds = 60
overlap_seconds = 120

[[steps]]
id = "account"
type = "get"
connection = "salesforce"
object = "Account"
record_id = 'record.Id'
fields = ["Id", "Name"]
"#;

struct Fixture {
    store: Arc<dyn Store>,
    salesforce: Arc<dyn Connector>,
    sfdc: RunningSandbox,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cipher = SecretCipher::new(MasterKey::load(dir.path(), None).unwrap());
    let store = ledgerlink_store::open(&format!("sqlite://{}/p.sqlite", dir.path().display()), cipher).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions { query_page_size: PAGE, ..Default::default() }).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    let salesforce = connections::build_all(store.clone()).await.unwrap().remove("salesforce").unwrap();
    Fixture { store, salesforce, sfdc, _dir: dir }
}

impl Fixture {
    fn engine(&self, salesforce: Arc<dyn Connector>) -> Engine {
        let flow = ledgerlink_flow::parse_flow(FLOW, "accounts.toml", &BTreeMap::new()).unwrap();
        let connectors = BTreeMap::from([("salesforce".to_string(), salesforce)]);
        Engine::new(self.store.clone(), connectors, vec![flow], EngineSettings::default()).unwrap()
    }

    /// Creates `n` accounts in one sObject Collections call (one `SystemModstamp` for all); returns their ids.
    async fn create_accounts(&self, prefix: &str, n: usize) -> BTreeSet<String> {
        let info = &self.sfdc.info;
        let s = |k: &str| info[k].as_str().unwrap().to_string();
        let records: Vec<Value> =
            (0..n).map(|i| json!({"attributes": {"type": "Account"}, "Name": format!("{prefix} {i:03}")})).collect();
        let answer: Vec<Value> = ledgerlink_connectors::http::client()
            .post(format!("{}/services/data/v{}/composite/sobjects", s("instance_url"), s("api_version")))
            .bearer_auth(s("access_token"))
            .json(&json!({"allOrNone": true, "records": records}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: BTreeSet<String> = answer.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
        assert_eq!(ids.len(), n, "{answer:?}");
        ids
    }

    /// The record id of every queued job, with how many jobs each has.
    async fn jobs_per_record(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for job in self.store.list_jobs(&JobFilter::default()).await.unwrap() {
            let id = job.payload["record"]["Id"].as_str().unwrap().to_string();
            *out.entry(id).or_insert(0) += 1;
        }
        out
    }

    async fn stamps(&self, ids: &BTreeSet<String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for id in ids {
            let rec = self.salesforce.get("Account", id, &["SystemModstamp".to_string()]).await.unwrap().unwrap();
            out.insert(rec["SystemModstamp"].as_str().unwrap().to_string());
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sharing_a_timestamp_across_page_boundaries_each_get_one_job() {
    let f = fixture().await;
    let engine = f.engine(f.salesforce.clone());
    let flow = engine.flows["accounts"].clone();
    poller::poll_once(&engine, &flow).await.unwrap(); // baseline: the seeded accounts are not changes

    let ids = f.create_accounts("Same Stamp", 30).await;
    assert_eq!(f.stamps(&ids).await.len(), 1, "one Collections call stamps its records alike");
    let report = poller::poll_once(&engine, &flow).await.unwrap();
    assert_eq!((report.new_changes, report.enqueued), (30, 30), "{report:?}");
    let jobs = f.jobs_per_record().await;
    assert_eq!(jobs.keys().cloned().collect::<BTreeSet<_>>(), ids);
    assert!(jobs.values().all(|&n| n == 1), "{jobs:?}");

    // Polled again (the overlap re-reads all 30): nothing is new.
    let again = poller::poll_once(&engine, &flow).await.unwrap();
    assert_eq!((again.read >= 30, again.new_changes, again.enqueued), (true, 0, 0), "{again:?}");

    // A later group, again across boundaries, gets its own jobs and only those.
    let later = f.create_accounts("Later Stamp", 11).await;
    let report = poller::poll_once(&engine, &flow).await.unwrap();
    assert_eq!((report.new_changes, report.enqueued), (11, 11), "{report:?}");
    let jobs = f.jobs_per_record().await;
    assert_eq!(jobs.len(), 41);
    assert!(later.iter().all(|id| jobs.get(id) == Some(&1)), "{jobs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_cut_short_between_pages_resumes_without_missing_or_repeating_a_change() {
    let f = fixture().await;
    let flaky = Arc::new(FailsOnPage { inner: f.salesforce.clone(), fetched: AtomicUsize::new(0), fail_at: usize::MAX.into() });
    let engine = f.engine(flaky.clone());
    let flow = engine.flows["accounts"].clone();
    // The seeded accounts are in the overlap window: every poll reads them (as seen) before the new ones.
    let seeded = poller::poll_once(&engine, &flow).await.unwrap().read;

    let ids = f.create_accounts("Cut Short", 30).await;
    // A page fetch fails once whole pages hold the seeded accounts and at least one page of new ones.
    let fail_at = seeded.div_ceil(PAGE) + 2;
    let queued_before = (fail_at - 1) * PAGE - seeded;
    assert!((PAGE..30).contains(&queued_before));
    flaky.fetched.store(0, Ordering::SeqCst);
    flaky.fail_at.store(fail_at, Ordering::SeqCst);
    let err = poller::poll_once(&engine, &flow).await.unwrap_err();
    assert!(format!("{err:#}").contains("connection dropped"), "{err:#}");
    let jobs = f.jobs_per_record().await;
    assert_eq!(jobs.len(), queued_before, "{jobs:?}");

    // A new process (no state but the store) polls: the unread changes are new, the queued ones are not.
    let restarted = f.engine(f.salesforce.clone());
    let report = poller::poll_once(&restarted, &flow).await.unwrap();
    assert_eq!((report.new_changes, report.enqueued), (30 - queued_before, 30 - queued_before), "{report:?}");
    let jobs = f.jobs_per_record().await;
    assert_eq!(jobs.keys().cloned().collect::<BTreeSet<_>>(), ids);
    assert!(jobs.values().all(|&n| n == 1), "{jobs:?}");
}

/// The real connector, except that the `fail_at`-th page fetch fails as a dropped connection would.
struct FailsOnPage {
    inner: Arc<dyn Connector>,
    fetched: AtomicUsize,
    fail_at: AtomicUsize,
}

#[async_trait]
impl Connector for FailsOnPage {
    fn system(&self) -> &'static str {
        self.inner.system()
    }
    fn rate_limit_policy(&self) -> RateLimitPolicy {
        self.inner.rate_limit_policy()
    }
    async fn test_connection(&self) -> Result<String, ConnectorError> {
        self.inner.test_connection().await
    }
    async fn get(&self, object: &str, id: &str, fields: &[String]) -> Result<Option<Record>, ConnectorError> {
        self.inner.get(object, id, fields).await
    }
    async fn find(&self, query: &FindQuery) -> Result<Vec<Record>, ConnectorError> {
        self.inner.find(query).await
    }
    async fn create(&self, object: &str, record: &Record, key: &str) -> Result<Record, ConnectorError> {
        self.inner.create(object, record, key).await
    }
    async fn update(&self, object: &str, id: &str, fields: &Record) -> Result<Record, ConnectorError> {
        self.inner.update(object, id, fields).await
    }
    async fn changes_page(
        &self,
        object: &str,
        since: DateTime<Utc>,
        fields: &[String],
        page: Option<&str>,
    ) -> Result<Changes, ConnectorError> {
        let n = self.fetched.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at.load(Ordering::SeqCst) {
            return Err(ConnectorError::Transient { message: "connection dropped".into(), outcome_unknown: false });
        }
        self.inner.changes_page(object, since, fields, page).await
    }
    fn change_timestamp(&self, record: &Record) -> Option<DateTime<Utc>> {
        self.inner.change_timestamp(record)
    }
}
