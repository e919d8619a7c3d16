//! `ledgerlink bench`: measurements of the sync engine, run by hand and reported in `docs/benchmarks.md`.
//!
//! Layout: [`run`] dispatches to four benchmarks, each building a fresh [`World`] (the sandboxes on a tokio
//! runtime of their own, so their CPU time can be told apart from the engine's; a fresh SQLite file or PostgreSQL
//! database; connectors and a store wrapped in [`TimedConnector`] / [`TimedStore`], which add up the time spent in
//! every call). [`throughput`] closes N opportunities before the clock starts and times the engine until every one
//! has its invoice linked; [`limits`] does the same with QuickBooks' request limits on a scaled clock and counts
//! requests per scaled minute and 429s; [`latency`] posts signed QuickBooks webhooks at a fixed rate and times each
//! from the POST to its job's completion; [`backfill`] polls 100,000 changed records served by a Salesforce
//! sandbox in a child process and reads this process's peak resident memory. Every benchmark prints a readable
//! table and one JSON line. Nothing here gates on timings: the figures are for people to read.
//!
//! Rates and shares are `f64` measurements of time, never money, hence the float arithmetic allowed below.

#![allow(clippy::float_arithmetic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use ledgerlink_connectors::quickbooks::{QuickbooksConfig, QuickbooksConnector, quickbooks_policy, webhook};
use ledgerlink_connectors::{Changes, Connector, ConnectorError, FindQuery, RateLimitPolicy, Record};
use ledgerlink_engine::connections::{self, StoreTokenStore};
use ledgerlink_engine::{Engine, EngineSettings, templates};
use ledgerlink_model::QboRealmId;
use ledgerlink_sandbox::{RunningSandbox, quickbooks, salesforce};
use ledgerlink_store::{
    AuditEntry, AuditFilter, ChangeCursor, Connection, Enqueued, Job, JobCounts, JobFilter, JobId, Lease, Link, MasterKey, NewAuditEntry,
    NewConnection, NewJob, NewReviewItem, NewRun, NewWriteIntent, RecordRef, ReviewId, ReviewItem, ReviewStatus, Run, RunId,
    RunOutcome, SecretCipher, Store, WriteIntent,
};
use serde_json::{Value, json};

/// Which measurement to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    Throughput,
    Limits,
    Latency,
    Backfill,
    All,
}

/// Which store backend the engine runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub which: Which,
    pub store: StoreKind,
    /// Records (throughput, limits, backfill) or events (latency); each benchmark has its own default.
    pub n: Option<usize>,
    /// Only the JSON line on stdout (the table goes to stderr).
    pub json: bool,
    /// A PostgreSQL server on which a fresh database is created for the run (and dropped after it).
    pub postgres_url: Option<String>,
    /// Jobs the engine runs at once.
    pub concurrency: usize,
    /// How much faster than real time QuickBooks' limit minute passes in `limits` (sandbox and connector alike).
    pub time_scale: f64,
    /// Webhook events per second in `latency`.
    pub rate: u32,
    /// How long `latency` sends events.
    pub seconds: u64,
    /// The engine's `linked_copy_ttl` (zero: every linked record is read each time).
    pub linked_copy_ttl: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            which: Which::Throughput,
            store: StoreKind::Sqlite,
            n: None,
            json: false,
            postgres_url: None,
            concurrency: ledgerlink_engine::DEFAULT_CONCURRENCY,
            time_scale: 10.0,
            rate: 100,
            seconds: 20,
            linked_copy_ttl: EngineSettings::default().linked_copy_ttl,
        }
    }
}

/// The flow the throughput and limits benchmarks run: the shipped one.
const INVOICE_FLOW: &str = "salesforce-closed-won-to-quickbooks-invoice";
/// Accounts the prepared opportunities are spread over (each becomes one QuickBooks customer).
const ACCOUNTS: usize = 40;
/// Records per sObject Collections call.
const COLLECTION: usize = 200;

pub async fn run(opts: BenchOptions) -> anyhow::Result<ExitCode> {
    let mut results = Vec::new();
    match opts.which {
        Which::Throughput => results.push(throughput(&opts, opts.store).await?),
        Which::Limits => results.push(limits(&opts).await?),
        Which::Latency => results.push(latency(&opts).await?),
        Which::Backfill => results.push(backfill(&opts).await?),
        Which::All => {
            results.push(throughput(&opts, StoreKind::Sqlite).await?);
            if opts.postgres_url.is_some() {
                results.push(throughput(&opts, StoreKind::Postgres).await?);
            } else {
                say("throughput on PostgreSQL skipped: give --postgres-url or set LEDGERLINK_TEST_POSTGRES_URL");
            }
            results.push(limits(&opts).await?);
            results.push(latency(&opts).await?);
            results.push(backfill(&opts).await?);
        }
    }
    let mut table = String::new();
    for r in &results {
        table.push_str(&r.table());
    }
    if opts.json {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    let line = if results.len() == 1 {
        results[0].json.clone()
    } else {
        json!({"bench": "all", "results": results.iter().map(|r| r.json.clone()).collect::<Vec<_>>()})
    };
    println!("{}", serde_json::to_string(&line)?);
    Ok(ExitCode::SUCCESS)
}

fn say(line: &str) {
    eprintln!("{line}");
}

/// One benchmark's outcome: rows for the table and the JSON object.
struct Report {
    title: String,
    rows: Vec<(String, String)>,
    json: Value,
}

impl Report {
    fn table(&self) -> String {
        let mut out = format!("\n{}\n", self.title);
        let width = self.rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
        for (k, v) in &self.rows {
            out.push_str(&format!("  {k:<width$}  {v}\n"));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Timing wrappers
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone, Copy)]
struct Stat {
    count: u64,
    total: Duration,
    max: Duration,
}

/// Time spent per operation, summed over all calls (concurrent calls overlap, so sums can exceed wall time).
#[derive(Debug)]
pub struct Timings {
    stats: Mutex<BTreeMap<String, Stat>>,
}

impl Timings {
    fn new() -> Arc<Self> {
        Arc::new(Timings { stats: Mutex::default() })
    }

    fn record(&self, key: &str, took: Duration) {
        let mut g = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let s = match g.get_mut(key) {
            Some(s) => s,
            None => g.entry(key.to_string()).or_default(),
        };
        s.count += 1;
        s.total += took;
        s.max = s.max.max(took);
    }

    fn reset(&self) {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn snapshot(&self) -> BTreeMap<String, Stat> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A connector that adds up the time of every call it passes on.
struct TimedConnector {
    name: String,
    inner: Arc<dyn Connector>,
    timings: Arc<Timings>,
}

impl TimedConnector {
    fn wrap(name: &str, inner: Arc<dyn Connector>, timings: &Arc<Timings>) -> Arc<dyn Connector> {
        Arc::new(TimedConnector { name: name.to_string(), inner, timings: timings.clone() })
    }

    fn done(&self, op: &str, object: &str, started: Instant) {
        self.timings.record(&format!("{} {op} {object}", self.name), started.elapsed());
    }
}

#[async_trait]
impl Connector for TimedConnector {
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
        let t = Instant::now();
        let r = self.inner.get(object, id, fields).await;
        self.done("get", object, t);
        r
    }
    async fn find(&self, query: &FindQuery) -> Result<Vec<Record>, ConnectorError> {
        let t = Instant::now();
        let r = self.inner.find(query).await;
        self.done("find", &query.object, t);
        r
    }
    async fn create(&self, object: &str, record: &Record, idempotency_key: &str) -> Result<Record, ConnectorError> {
        let t = Instant::now();
        let r = self.inner.create(object, record, idempotency_key).await;
        self.done("create", object, t);
        r
    }
    async fn update(&self, object: &str, id: &str, fields: &Record) -> Result<Record, ConnectorError> {
        let t = Instant::now();
        let r = self.inner.update(object, id, fields).await;
        self.done("update", object, t);
        r
    }
    async fn delete(&self, object: &str, id: &str) -> Result<bool, ConnectorError> {
        let t = Instant::now();
        let r = self.inner.delete(object, id).await;
        self.done("delete", object, t);
        r
    }
    async fn changes_page(
        &self,
        object: &str,
        since: DateTime<Utc>,
        fields: &[String],
        page: Option<&str>,
    ) -> Result<Changes, ConnectorError> {
        let t = Instant::now();
        let r = self.inner.changes_page(object, since, fields, page).await;
        self.done("changes_page", object, t);
        r
    }
    fn change_timestamp(&self, record: &Record) -> Option<DateTime<Utc>> {
        self.inner.change_timestamp(record)
    }
    fn record_version(&self, record: &Record) -> Option<String> {
        self.inner.record_version(record)
    }
    fn change_timestamp_fields(&self) -> &'static [&'static str] {
        self.inner.change_timestamp_fields()
    }
    fn is_duplicate_error(&self, err: &ConnectorError) -> bool {
        self.inner.is_duplicate_error(err)
    }
    fn record_id(&self, record: &Record) -> Option<String> {
        self.inner.record_id(record)
    }
    fn encode_invoice(&self, invoice: &ledgerlink_model::Invoice) -> Result<Record, ConnectorError> {
        self.inner.encode_invoice(invoice)
    }
}

/// A store that adds up the time of every call it passes on.
struct TimedStore {
    inner: Arc<dyn Store>,
    timings: Arc<Timings>,
}

macro_rules! timed {
    ($self:ident, $name:literal, $call:expr) => {{
        let t = Instant::now();
        let r = $call.await;
        $self.timings.record(concat!("store ", $name), t.elapsed());
        r
    }};
}

type SResult<T> = ledgerlink_store::Result<T>;

// The platform connector's storage, passed through untimed (the benchmarks do not use it).
ledgerlink_store::delegate_platform_store!(TimedStore, inner);

#[async_trait]
impl Store for TimedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn web(&self) -> Option<&dyn ledgerlink_store::WebStore> {
        self.inner.web()
    }
    async fn put_connection(&self, conn: &NewConnection) -> SResult<Connection> {
        timed!(self, "put_connection", self.inner.put_connection(conn))
    }
    async fn get_connection(&self, name: &str) -> SResult<Option<Connection>> {
        timed!(self, "get_connection", self.inner.get_connection(name))
    }
    async fn list_connections(&self) -> SResult<Vec<Connection>> {
        timed!(self, "list_connections", self.inner.list_connections())
    }
    async fn update_credentials(&self, name: &str, expected_version: i64, credentials: &Value) -> SResult<i64> {
        timed!(self, "update_credentials", self.inner.update_credentials(name, expected_version, credentials))
    }
    async fn enqueue(&self, job: &NewJob) -> SResult<Enqueued> {
        timed!(self, "enqueue", self.inner.enqueue(job))
    }
    async fn claim_jobs(&self, worker: &str, now: DateTime<Utc>, lease: chrono::Duration, limit: u32) -> SResult<Vec<Job>> {
        timed!(self, "claim_jobs", self.inner.claim_jobs(worker, now, lease, limit))
    }
    async fn complete_job(&self, id: JobId, worker: &str, now: DateTime<Utc>) -> SResult<()> {
        timed!(self, "complete_job", self.inner.complete_job(id, worker, now))
    }
    async fn fail_job(&self, id: JobId, worker: &str, error: &str, retry_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> SResult<()> {
        timed!(self, "fail_job", self.inner.fail_job(id, worker, error, retry_at, now))
    }
    async fn park_job(&self, id: JobId, worker: &str, review: ReviewId, now: DateTime<Utc>) -> SResult<()> {
        timed!(self, "park_job", self.inner.park_job(id, worker, review, now))
    }
    async fn requeue_job(&self, id: JobId, now: DateTime<Utc>) -> SResult<()> {
        timed!(self, "requeue_job", self.inner.requeue_job(id, now))
    }
    async fn recover_leases(&self, owner: Option<&str>, now: DateTime<Utc>) -> SResult<u64> {
        timed!(self, "recover_leases", self.inner.recover_leases(owner, now))
    }
    async fn claim_jobs_for(&self, worker: &str, now: DateTime<Utc>, lease: chrono::Duration, limit: u32, connections: &[String]) -> SResult<Vec<Job>> {
        timed!(self, "claim_jobs_for", self.inner.claim_jobs_for(worker, now, lease, limit, connections))
    }
    async fn due_connections(&self, now: DateTime<Utc>) -> SResult<Vec<String>> {
        timed!(self, "due_connections", self.inner.due_connections(now))
    }
    async fn get_job(&self, id: JobId) -> SResult<Option<Job>> {
        timed!(self, "get_job", self.inner.get_job(id))
    }
    async fn list_jobs(&self, filter: &JobFilter) -> SResult<Vec<Job>> {
        timed!(self, "list_jobs", self.inner.list_jobs(filter))
    }
    async fn count_jobs(&self) -> SResult<JobCounts> {
        timed!(self, "count_jobs", self.inner.count_jobs())
    }
    async fn put_link(&self, link: &Link) -> SResult<()> {
        timed!(self, "put_link", self.inner.put_link(link))
    }
    async fn find_link(&self, from: &RecordRef, to_connection: &str, to_object: &str) -> SResult<Option<Link>> {
        timed!(self, "find_link", self.inner.find_link(from, to_connection, to_object))
    }
    async fn list_links(&self, connection: &str, object: &str) -> SResult<Vec<Link>> {
        timed!(self, "list_links", self.inner.list_links(connection, object))
    }
    async fn begin_intent(&self, intent: &NewWriteIntent) -> SResult<WriteIntent> {
        timed!(self, "begin_intent", self.inner.begin_intent(intent))
    }
    async fn complete_intent(&self, key: &str, result_id: &str, response: &Value, now: DateTime<Utc>, audit: &NewAuditEntry) -> SResult<()> {
        timed!(self, "complete_intent", self.inner.complete_intent(key, result_id, response, now, audit))
    }
    async fn enqueue_done(&self, job: &NewJob) -> SResult<Enqueued> {
        timed!(self, "enqueue_done", self.inner.enqueue_done(job))
    }
    async fn refuse_intent(&self, key: &str, next_request_key: &str, reason: &str) -> SResult<()> {
        timed!(self, "refuse_intent", self.inner.refuse_intent(key, next_request_key, reason))
    }
    async fn get_intent(&self, key: &str) -> SResult<Option<WriteIntent>> {
        timed!(self, "get_intent", self.inner.get_intent(key))
    }
    async fn get_cursor(&self, connection: &str, object: &str, flow: &str) -> SResult<Option<ChangeCursor>> {
        timed!(self, "get_cursor", self.inner.get_cursor(connection, object, flow))
    }
    async fn put_cursor(&self, cursor: &ChangeCursor) -> SResult<()> {
        timed!(self, "put_cursor", self.inner.put_cursor(cursor))
    }
    async fn start_run(&self, run: &NewRun) -> SResult<RunId> {
        timed!(self, "start_run", self.inner.start_run(run))
    }
    async fn finish_run(&self, id: RunId, outcome: &RunOutcome, now: DateTime<Utc>) -> SResult<()> {
        timed!(self, "finish_run", self.inner.finish_run(id, outcome, now))
    }
    async fn list_runs(&self, flow: Option<&str>, limit: u32) -> SResult<Vec<Run>> {
        timed!(self, "list_runs", self.inner.list_runs(flow, limit))
    }
    async fn append_audit(&self, entry: &NewAuditEntry) -> SResult<i64> {
        timed!(self, "append_audit", self.inner.append_audit(entry))
    }
    async fn list_audit(&self, filter: &AuditFilter) -> SResult<Vec<AuditEntry>> {
        timed!(self, "list_audit", self.inner.list_audit(filter))
    }
    async fn create_review(&self, item: &NewReviewItem) -> SResult<ReviewId> {
        timed!(self, "create_review", self.inner.create_review(item))
    }
    async fn get_review(&self, id: ReviewId) -> SResult<Option<ReviewItem>> {
        timed!(self, "get_review", self.inner.get_review(id))
    }
    async fn list_reviews(&self, status: Option<ReviewStatus>) -> SResult<Vec<ReviewItem>> {
        timed!(self, "list_reviews", self.inner.list_reviews(status))
    }
    async fn reviews_for_job(&self, job_id: JobId) -> SResult<Vec<ReviewItem>> {
        timed!(self, "reviews_for_job", self.inner.reviews_for_job(job_id))
    }
    async fn resolve_review(&self, id: ReviewId, resolution: &Value, now: DateTime<Utc>) -> SResult<ReviewItem> {
        timed!(self, "resolve_review", self.inner.resolve_review(id, resolution, now))
    }
    async fn try_acquire_lease(&self, name: &str, owner: &str, now: DateTime<Utc>, ttl: chrono::Duration) -> SResult<bool> {
        timed!(self, "try_acquire_lease", self.inner.try_acquire_lease(name, owner, now, ttl))
    }
    async fn release_lease(&self, name: &str, owner: &str) -> SResult<bool> {
        timed!(self, "release_lease", self.inner.release_lease(name, owner))
    }
    async fn lease_holder(&self, name: &str, now: DateTime<Utc>) -> SResult<Option<Lease>> {
        timed!(self, "lease_holder", self.inner.lease_holder(name, now))
    }
    async fn list_leases(&self, prefix: &str, now: DateTime<Utc>) -> SResult<Vec<Lease>> {
        timed!(self, "list_leases", self.inner.list_leases(prefix, now))
    }
    async fn release_leases_of(&self, owner: Option<&str>) -> SResult<u64> {
        timed!(self, "release_leases_of", self.inner.release_leases_of(owner))
    }
    async fn job_wakeups(&self) -> SResult<Option<Box<dyn ledgerlink_store::JobWakeups>>> {
        self.inner.job_wakeups().await
    }
    async fn put_report(&self, report: &ledgerlink_store::NewReport) -> SResult<(ledgerlink_store::Report, bool)> {
        timed!(self, "put_report", self.inner.put_report(report))
    }
    async fn get_report(&self, id: i64) -> SResult<Option<ledgerlink_store::Report>> {
        timed!(self, "get_report", self.inner.get_report(id))
    }
    async fn list_reports(&self, flow: Option<&str>, limit: u32) -> SResult<Vec<ledgerlink_store::Report>> {
        timed!(self, "list_reports", self.inner.list_reports(flow, limit))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// CPU time per thread group, from /proc
// ---------------------------------------------------------------------------------------------------------------

/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on every Linux build this runs on).
const USER_HZ: u64 = 100;

/// CPU time (user + system, in ticks) per thread name of this process.
/// The ids and last errors of up to five dead-lettered jobs, so a run that lost a job says why in its report
/// (the benchmark's store is removed when it ends).
async fn dead_job_errors(store: &Arc<dyn Store>) -> anyhow::Result<Vec<(JobId, String)>> {
    let filter = JobFilter { status: Some(ledgerlink_store::JobStatus::Dead), limit: Some(5), ..JobFilter::default() };
    Ok(store
        .list_jobs(&filter)
        .await?
        .into_iter()
        .map(|j| (j.id, j.last_error.unwrap_or_else(|| "(no error recorded)".into())))
        .collect())
}

fn cpu_by_thread() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // The name sits in parentheses and may contain spaces; the fields after it are space-separated.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the name: state(0) … utime(11) stime(12).
        let ticks = rest.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + rest.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        *out.entry(thread_group(&name)).or_default() += ticks;
    }
    out
}

fn thread_group(name: &str) -> String {
    if name.starts_with("sandbox") {
        "sandboxes".into()
    } else if name.starts_with("tokio") {
        "engine (tokio workers)".into()
    } else if name.starts_with("store-writer") {
        "store writer".into()
    } else if name.contains("sqlx") || name.contains("sqlite") {
        "store (SQLite threads)".into()
    } else {
        "other".into()
    }
}

fn cpu_delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).copied().unwrap_or(0)) as f64 / USER_HZ as f64))
        .filter(|(_, s)| *s > 0.0)
        .collect()
}

/// `VmHWM` / `VmRSS` of this process in KiB.
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------------------------------
// The world a benchmark runs in
// ---------------------------------------------------------------------------------------------------------------

/// Where the engine's store lives, removed when the benchmark ends.
enum StoreHome {
    Sqlite(std::path::PathBuf),
    Postgres { admin_url: String, name: String },
}

impl StoreHome {
    async fn create(kind: StoreKind, postgres_url: Option<&str>, label: &str) -> anyhow::Result<(StoreHome, String)> {
        let unique = format!("{}_{}_{}", label, std::process::id(), Utc::now().timestamp_micros());
        match kind {
            StoreKind::Sqlite => {
                let dir = std::env::temp_dir().join(format!("ledgerlink-bench-{unique}"));
                std::fs::create_dir_all(&dir)?;
                let url = format!("sqlite://{}", dir.join("bench.sqlite").display());
                Ok((StoreHome::Sqlite(dir), url))
            }
            StoreKind::Postgres => {
                let admin_url = postgres_url.ok_or_else(|| {
                    anyhow::anyhow!("--store postgres needs a server: give --postgres-url or set LEDGERLINK_TEST_POSTGRES_URL")
                })?;
                let name = format!("ledgerlink_bench_{unique}");
                {
                    use sqlx::Connection;
                    let mut admin = sqlx::PgConnection::connect(admin_url)
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot connect to the PostgreSQL server given by --postgres-url: {e}"))?;
                    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await?;
                    let _ = admin.close().await;
                }
                let mut url = url::Url::parse(admin_url).map_err(|e| anyhow::anyhow!("--postgres-url is not a URL: {e}"))?;
                url.set_path(&format!("/{name}"));
                Ok((StoreHome::Postgres { admin_url: admin_url.to_string(), name }, url.to_string()))
            }
        }
    }

    async fn remove(self) {
        match self {
            StoreHome::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            StoreHome::Postgres { admin_url, name } => {
                use sqlx::Connection;
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    if sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.is_err() {
                        say(&format!("note: could not drop the benchmark database {name}"));
                    }
                    let _ = admin.close().await;
                }
            }
        }
    }
}

/// The Salesforce org the benchmark writes its data into, over plain REST (the sales team's side).
#[derive(Clone)]
struct SalesTeam {
    http: reqwest::Client,
    data: String,
    token: String,
}

impl SalesTeam {
    fn new(info: &Value) -> Self {
        let s = |k: &str| info.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        SalesTeam {
            http: ledgerlink_connectors::http::client(),
            data: format!("{}/services/data/v{}", s("instance_url"), s("api_version")),
            token: s("access_token"),
        }
    }

    async fn query(&self, soql: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut page: Value =
            self.http.get(format!("{}/query", self.data)).query(&[("q", soql)]).bearer_auth(&self.token).send().await?.error_for_status()?.json().await?;
        loop {
            if let Some(rows) = page["records"].as_array() {
                out.extend(rows.iter().cloned());
            }
            let Some(next) = page["nextRecordsUrl"].as_str().map(str::to_string) else { break };
            let base = self.data.split("/services/").next().unwrap_or_default();
            page = self.http.get(format!("{base}{next}")).bearer_auth(&self.token).send().await?.error_for_status()?.json().await?;
        }
        Ok(out)
    }

    /// Creates (`PATCH` = false) or updates records through sObject Collections, 200 per call, a few calls at once.
    async fn collections(&self, object: &str, records: Vec<Value>, update: bool) -> anyhow::Result<Vec<String>> {
        let chunks: Vec<Vec<Value>> = records.chunks(COLLECTION).map(<[Value]>::to_vec).collect();
        let calls = futures::stream::iter(chunks.into_iter().map(|chunk| {
            let team = self.clone();
            let object = object.to_string();
            async move {
                let records: Vec<Value> = chunk
                    .into_iter()
                    .map(|mut r| {
                        r["attributes"] = json!({"type": object});
                        r
                    })
                    .collect();
                let url = format!("{}/composite/sobjects", team.data);
                let req = if update { team.http.patch(url) } else { team.http.post(url) };
                let answer: Value = req.bearer_auth(&team.token).json(&json!({"allOrNone": true, "records": records})).send().await?.error_for_status()?.json().await?;
                let rows = answer.as_array().cloned().unwrap_or_default();
                let mut ids = Vec::with_capacity(rows.len());
                for row in rows {
                    anyhow::ensure!(row["success"] == true, "Salesforce refused a {object}: {row}");
                    ids.push(row["id"].as_str().unwrap_or_default().to_string());
                }
                Ok::<_, anyhow::Error>(ids)
            }
        }))
        .buffered(4)
        .collect::<Vec<_>>()
        .await;
        let mut ids = Vec::new();
        for c in calls {
            ids.extend(c?);
        }
        Ok(ids)
    }

    /// API calls the org has counted today (the sandbox's admin route).
    async fn api_calls_used(&self, admin_base: &str) -> anyhow::Result<u64> {
        let v: Value = self.http.get(format!("{admin_base}/sandbox/admin/limits")).send().await?.error_for_status()?.json().await?;
        Ok(v["used"].as_u64().unwrap_or(0))
    }
}

/// A Salesforce sandbox in a child process (`ledgerlink sandbox salesforce`), so its memory is not this one's.
struct ChildSandbox {
    child: tokio::process::Child,
    info: Value,
}

impl ChildSandbox {
    async fn start() -> anyhow::Result<ChildSandbox> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe()?;
        let mut child = tokio::process::Command::new(exe)
            .args(["sandbox", "salesforce", "--port", "0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("the sandbox process has no stdout"))?;
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(30), tokio::io::BufReader::new(stdout).read_line(&mut line))
            .await
            .map_err(|_| anyhow::anyhow!("the Salesforce sandbox process printed no startup line within 30 s"))??;
        let info: Value = serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("the sandbox's startup line is not JSON ({e}): {line}"))?;
        Ok(ChildSandbox { child, info })
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

enum SalesforceSide {
    InProcess(RunningSandbox),
    Child(ChildSandbox),
}

impl SalesforceSide {
    fn info(&self) -> &Value {
        match self {
            SalesforceSide::InProcess(s) => &s.info,
            SalesforceSide::Child(c) => &c.info,
        }
    }
    fn base_url(&self) -> String {
        self.info().get("base_url").and_then(Value::as_str).unwrap_or_default().to_string()
    }
}

struct World {
    sandbox_rt: Option<tokio::runtime::Runtime>,
    qbo: Option<RunningSandbox>,
    sfdc: SalesforceSide,
    raw_store: Arc<dyn Store>,
    store: Arc<dyn Store>,
    home: StoreHome,
    qb: Option<Arc<QuickbooksConnector>>,
    connectors: BTreeMap<String, Arc<dyn Connector>>,
    timings: Arc<Timings>,
    team: SalesTeam,
}

struct WorldSpec {
    store: StoreKind,
    /// QuickBooks limits (None: no QuickBooks sandbox at all).
    qbo_limits: Option<quickbooks::QuickbooksLimits>,
    /// The QuickBooks connector's limiter speed-up.
    speedup: f64,
    /// Serve Salesforce from a child process instead of this one.
    salesforce_child: bool,
    label: &'static str,
}

async fn world(opts: &BenchOptions, spec: WorldSpec) -> anyhow::Result<World> {
    // The sandboxes get a runtime (and threads) of their own: their CPU time is then told apart from the engine's.
    let sandbox_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("sandbox").enable_all().build()?;
    let qbo = match spec.qbo_limits.clone() {
        Some(limits) => Some(sandbox_rt.spawn(quickbooks::start(quickbooks::QuickbooksOptions { limits, ..Default::default() })).await??),
        None => None,
    };
    let sfdc = if spec.salesforce_child {
        let child = ChildSandbox::start().await?;
        let base = child.info["base_url"].as_str().unwrap_or_default().to_string();
        ledgerlink_connectors::http::client().post(format!("{base}/sandbox/admin/limits")).json(&json!({"daily": 100_000_000u64})).send().await?.error_for_status()?;
        SalesforceSide::Child(child)
    } else {
        SalesforceSide::InProcess(
            sandbox_rt
                .spawn(salesforce::start(salesforce::SalesforceOptions { daily_api_limit: 100_000_000, ..Default::default() }))
                .await??,
        )
    };

    let (home, url) = StoreHome::create(spec.store, opts.postgres_url.as_deref(), spec.label).await?;
    let key_dir = std::env::temp_dir().join(format!("ledgerlink-bench-key-{}", std::process::id()));
    std::fs::create_dir_all(&key_dir)?;
    let key = MasterKey::load(&key_dir, None)?;
    let raw_store = ledgerlink_store::open(&url, SecretCipher::new(key)).await?;
    let timings = Timings::new();
    let store: Arc<dyn Store> = Arc::new(TimedStore { inner: raw_store.clone(), timings: timings.clone() });

    let http = ledgerlink_connectors::http::client();
    let mut connectors = BTreeMap::new();
    let sf_conn = connections::from_sandbox_info("salesforce", sfdc.info())?;
    let sf_stored = store.put_connection(&sf_conn).await?;
    let sf = connections::build_connector(store.clone(), &sf_stored, http.clone())?;
    connectors.insert("salesforce".to_string(), TimedConnector::wrap("salesforce", sf, &timings));
    let mut qb = None;
    if let Some(q) = &qbo {
        let conn = connections::from_sandbox_info("quickbooks", &q.info)?;
        store.put_connection(&conn).await?;
        let realm = q.info_str("realm_id");
        let config = QuickbooksConfig {
            api_base: q.info_str("api_base").to_string(),
            token_url: q.info_str("token_url").to_string(),
            realm_id: QboRealmId::parse(realm).map_err(|e| anyhow::anyhow!("sandbox realm: {e}"))?,
            client_id: q.info_str("client_id").to_string(),
            client_secret: secrecy::SecretString::from(q.info_str("client_secret").to_string()),
            minor_version: 75,
        };
        let limiter = ledgerlink_connectors::limiter::Limiter::with_speedup(&quickbooks_policy(), spec.speedup);
        let connector = Arc::new(QuickbooksConnector::new(config, Arc::new(StoreTokenStore::new(store.clone(), "quickbooks")), http.clone()).with_limiter(limiter));
        // As `connections::build_connector` builds it by default: creates from concurrent jobs coalesced into
        // batch calls.
        let batching = Arc::new(ledgerlink_connectors::quickbooks::batching::BatchingConnector::new(
            connector.clone(),
            ledgerlink_connectors::quickbooks::batch::BatchWriter::DEFAULT_LINGER,
        ));
        connectors.insert("quickbooks".to_string(), TimedConnector::wrap("quickbooks", batching, &timings));
        qb = Some(connector);
    }
    let team = SalesTeam::new(sfdc.info());
    Ok(World { sandbox_rt: Some(sandbox_rt), qbo, sfdc, raw_store, store, home, qb, connectors, timings, team })
}

impl World {
    fn engine(&self, flows: Vec<ledgerlink_flow::Flow>, opts: &BenchOptions, poll_interval: Option<Duration>) -> anyhow::Result<Engine> {
        let settings = EngineSettings {
            worker_id: "bench".into(),
            concurrency: opts.concurrency.max(1),
            poll_interval,
            linked_copy_ttl: opts.linked_copy_ttl,
            ..EngineSettings::default()
        };
        Engine::new(self.store.clone(), self.connectors.clone(), flows, settings)
    }

    fn qbo_base(&self) -> String {
        self.qbo.as_ref().map(|q| q.base_url.clone()).unwrap_or_default()
    }

    /// The QuickBooks sandbox's call log: (calls, of which answered 429, calls by kind).
    async fn qbo_calls(&self) -> anyhow::Result<(usize, usize, BTreeMap<String, usize>)> {
        let calls: Vec<Value> = self.team.http.get(format!("{}/sandbox/admin/calls", self.qbo_base())).send().await?.error_for_status()?.json().await?;
        let throttled = calls.iter().filter(|c| c["status"] == 429).count();
        let mut kinds = BTreeMap::new();
        for c in &calls {
            *kinds.entry(call_kind(c["method"].as_str().unwrap_or_default(), c["path"].as_str().unwrap_or_default())).or_insert(0) += 1;
        }
        Ok((calls.len(), throttled, kinds))
    }

    async fn stop(mut self) {
        if let Some(q) = self.qbo.take() {
            q.stop().await;
        }
        match self.sfdc {
            SalesforceSide::InProcess(s) => s.stop().await,
            SalesforceSide::Child(c) => c.stop().await,
        }
        if let Some(rt) = self.sandbox_rt.take() {
            rt.shutdown_background();
        }
        drop(self.store);
        drop(self.raw_store);
        self.home.remove().await;
    }
}

/// Intuit's limit on batch calls per minute and company, and the most items one carries.
const BATCH_PER_MINUTE: u32 = 120;
const BATCH_ITEMS: u32 = 30;

/// One QuickBooks API request, as the sandbox logged it.
struct QboRequest {
    at: DateTime<Utc>,
    /// A POST: a create, an update or a batch.
    write: bool,
    batch: bool,
}

/// The QuickBooks API requests the sandbox logged after its first `skip` (OAuth and admin calls left out).
async fn qbo_requests_since(w: &World, skip: usize) -> anyhow::Result<Vec<QboRequest>> {
    let calls: Vec<Value> = w.team.http.get(format!("{}/sandbox/admin/calls", w.qbo_base())).send().await?.error_for_status()?.json().await?;
    anyhow::ensure!(calls.len() < 10_000, "the sandbox's call log (10,000 calls) overflowed: use a smaller --n");
    let mut out: Vec<QboRequest> = calls
        .iter()
        .skip(skip)
        .filter_map(|c| {
            let path = c["path"].as_str().unwrap_or_default();
            let at = c["time"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok())?.with_timezone(&Utc);
            path.starts_with("/v3/company/").then(|| QboRequest { at, write: c["method"] == "POST", batch: path.ends_with("/batch") })
        })
        .collect();
    out.sort_by_key(|r| r.at);
    Ok(out)
}

/// `GET /v3/company/1/query` → `GET query`, `POST …/invoice` → `POST invoice`.
fn call_kind(method: &str, path: &str) -> String {
    let tail: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).skip(3).collect();
    let what = tail.first().copied().unwrap_or(path);
    format!("{method} {}", what.to_ascii_lowercase())
}

// ---------------------------------------------------------------------------------------------------------------
// Preparing opportunities
// ---------------------------------------------------------------------------------------------------------------

/// Creates `n` opportunities with one to three product lines over [`ACCOUNTS`] accounts and closes them (won),
/// all through sObject Collections. Returns the opportunity ids.
async fn prepare_closed_opportunities(team: &SalesTeam, n: usize, tag: &str) -> anyhow::Result<Vec<String>> {
    let pricebook = team.query("SELECT Id FROM Pricebook2 WHERE IsStandard = true").await?;
    let pricebook_id = pricebook.first().and_then(|r| r["Id"].as_str()).ok_or_else(|| anyhow::anyhow!("the org has no standard price book"))?.to_string();
    let entries = team.query(&format!("SELECT Id FROM PricebookEntry WHERE Pricebook2Id = '{pricebook_id}' AND IsActive = true")).await?;
    anyhow::ensure!(!entries.is_empty(), "the standard price book has no active entries");
    let accounts: Vec<Value> = (0..ACCOUNTS.min(n.max(1)))
        .map(|i| json!({"Name": format!("Bench {tag} Customer {i:03}"), "BillingCity": "Portland", "BillingState": "OR"}))
        .collect();
    let account_ids = team.collections("Account", accounts, false).await?;
    let today = Utc::now().date_naive().to_string();
    let opps: Vec<Value> = (0..n)
        .map(|i| {
            json!({"Name": format!("Bench {tag} deal {i}"), "AccountId": account_ids[i % account_ids.len()], "StageName": "Proposal/Price Quote",
                   "CloseDate": today, "Pricebook2Id": pricebook_id})
        })
        .collect();
    let opp_ids = team.collections("Opportunity", opps, false).await?;
    let mut lines = Vec::new();
    for (i, id) in opp_ids.iter().enumerate() {
        for l in 0..(1 + i % 3) {
            let entry = &entries[(i + l * 3) % entries.len()];
            lines.push(json!({"OpportunityId": id, "PricebookEntryId": entry["Id"], "Quantity": 1 + (i + l) % 5}));
        }
    }
    team.collections("OpportunityLineItem", lines, false).await?;
    let closes: Vec<Value> = opp_ids.iter().map(|id| json!({"Id": id, "StageName": "Closed Won"})).collect();
    team.collections("Opportunity", closes, true).await?;
    Ok(opp_ids)
}

/// Waits until `want` opportunities have an invoice link, or the deadline passes. Returns the links' latest time.
///
/// Progress is read from the engine's own counter of invoices created; the links are read (every one of them,
/// the ground truth the figures come from) only once that counter says they should all be there, and at the
/// deadline. Why: reading every link five times a second made the benchmark's own polling a measurable share of
/// the database's work, growing with the links already written.
async fn wait_for_invoice_links(
    store: &Arc<dyn Store>,
    engine: &Engine,
    want: usize,
    limit: Duration,
) -> anyhow::Result<(usize, Option<DateTime<Utc>>)> {
    let deadline = Instant::now() + limit;
    let mut last_report = Instant::now();
    loop {
        let created = usize::try_from(engine.stats.invoices_created.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(usize::MAX);
        let out_of_time = Instant::now() > deadline;
        if created >= want || out_of_time {
            let links = store.list_links("salesforce", "Opportunity").await?;
            let invoice_links: Vec<&Link> = links.iter().filter(|l| l.a.object == "Invoice" || l.b.object == "Invoice").collect();
            let done = invoice_links.len();
            if done >= want || out_of_time {
                return Ok((done, invoice_links.iter().map(|l| l.updated_at).max()));
            }
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            say(&format!("  {created}/{want} invoiced"));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The table rows and JSON of where the time went: summed call time per operation (top ones) and CPU per thread
/// group.
fn time_breakdown(timings: &Timings, cpu: &BTreeMap<String, f64>, per: usize, rows: &mut Vec<(String, String)>) -> Value {
    let stats = timings.snapshot();
    let mut ops: Vec<(&String, &Stat)> = stats.iter().collect();
    ops.sort_by_key(|op| std::cmp::Reverse(op.1.total));
    let store_total: Duration = stats.iter().filter(|(k, _)| k.starts_with("store ")).map(|(_, s)| s.total).sum();
    let conn_total: Duration = stats.iter().filter(|(k, _)| !k.starts_with("store ")).map(|(_, s)| s.total).sum();
    let per = per.max(1) as f64;
    rows.push((
        "time in calls, per record".into(),
        format!("store {:.2} ms · connectors {:.2} ms (summed over concurrent jobs)", secs(store_total) * 1000.0 / per, secs(conn_total) * 1000.0 / per),
    ));
    for (k, s) in ops.iter().take(8) {
        rows.push((
            format!("  {k}"),
            format!("{:>7} calls · mean {:.2} ms · max {:.1} ms · {:.2} ms/record", s.count, secs(s.total) * 1000.0 / s.count.max(1) as f64, secs(s.max) * 1000.0, secs(s.total) * 1000.0 / per),
        ));
    }
    let cpu_text: Vec<String> = cpu.iter().map(|(k, v)| format!("{k} {v:.1} s")).collect();
    rows.push(("CPU time by thread group".into(), cpu_text.join(" · ")));
    json!({
        "store_ms_per_record": secs(store_total) * 1000.0 / per,
        "connector_ms_per_record": secs(conn_total) * 1000.0 / per,
        "operations": ops.iter().map(|(k, s)| json!({"op": k, "calls": s.count, "total_ms": secs(s.total) * 1000.0, "mean_ms": secs(s.total) * 1000.0 / s.count.max(1) as f64})).collect::<Vec<_>>(),
        "cpu_seconds": cpu,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// (a) throughput
// ---------------------------------------------------------------------------------------------------------------

async fn throughput(opts: &BenchOptions, kind: StoreKind) -> anyhow::Result<Report> {
    let n = opts.n.unwrap_or(2000);
    say(&format!("throughput on {}: preparing {n} closed opportunities", kind.name()));
    let limits = quickbooks::QuickbooksLimits { enabled: false, ..Default::default() };
    let w = world(opts, WorldSpec { store: kind, qbo_limits: Some(limits), speedup: 1e6, salesforce_child: false, label: "throughput" }).await?;
    let flow = templates::load(INVOICE_FLOW, &BTreeMap::new())?;
    let engine = w.engine(vec![flow], opts, Some(Duration::from_secs(1)))?;
    engine.prime().await?;
    let opp_ids = prepare_closed_opportunities(&w.team, n, "T").await?;
    let sf_admin = w.sfdc.base_url();
    let sf_before = w.team.api_calls_used(&sf_admin).await?;
    let (qb_before, _, _) = w.qbo_calls().await?;
    w.timings.reset();

    say(&format!("  {} opportunities closed; the engine starts now", opp_ids.len()));
    let cpu_before = cpu_by_thread();
    let started_at = Utc::now();
    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(stop_rx).await })
    };
    let (linked, last_link) = wait_for_invoice_links(&w.raw_store, &engine, n, Duration::from_secs(600)).await?;
    let wall = started.elapsed();
    let cpu = cpu_delta(&cpu_before, &cpu_by_thread());
    let _ = stop_tx.send(true);
    runner.await??;

    let took = last_link.and_then(|t| (t - started_at).to_std().ok()).unwrap_or(wall);
    let rate = linked as f64 / secs(took).max(1e-9);
    let sf_calls = w.team.api_calls_used(&sf_admin).await?.saturating_sub(sf_before);
    let (qb_after, _, qb_kinds) = w.qbo_calls().await?;
    let qb_calls = qb_after.saturating_sub(qb_before);
    let counts = w.raw_store.count_jobs().await?;
    let dead_errors = dead_job_errors(&w.raw_store).await?;
    let stats = engine.stats.snapshot();
    let per = linked.max(1) as f64;

    let mut rows = vec![
        ("store".to_string(), kind.name().to_string()),
        ("opportunities closed".into(), n.to_string()),
        ("invoices linked".into(), linked.to_string()),
        ("time (first poll → last link)".into(), format!("{:.2} s", secs(took))),
        ("throughput".into(), format!("{rate:.0} opportunities/s (bar: 1,000/s → {})", if rate >= 1000.0 { "met" } else { "NOT met" })),
        ("engine concurrency".into(), opts.concurrency.to_string()),
        ("linked records reused for".into(), format!("{} ms", opts.linked_copy_ttl.as_millis())),
        ("HTTP calls per opportunity".into(), format!("Salesforce {:.2} · QuickBooks {:.2}", sf_calls as f64 / per, qb_calls as f64 / per)),
        ("QuickBooks calls by kind".into(), qb_kinds.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(" · ")),
        ("jobs done / dead / parked".into(), format!("{} / {} / {}", counts.done, counts.dead, counts.parked)),
    ];
    rows.extend(dead_errors.iter().map(|(id, error)| (format!("dead job {id}"), error.clone())));
    let breakdown = time_breakdown(&w.timings, &cpu, linked, &mut rows);
    let json = json!({
        "bench": "throughput", "store": kind.name(), "n": n, "linked": linked, "seconds": secs(took),
        "per_second": rate, "bar_per_second": 1000, "meets_bar": rate >= 1000.0, "concurrency": opts.concurrency,
        "salesforce_calls_per_record": sf_calls as f64 / per, "quickbooks_calls_per_record": qb_calls as f64 / per,
        "quickbooks_calls_log_capped": qb_after >= 10_000,
        "jobs": {"done": counts.done, "dead": counts.dead, "parked": counts.parked},
        "dead_job_errors": dead_errors.iter().map(|(id, e)| json!({"job": id, "error": e})).collect::<Vec<_>>(),
        "errors": stats.errors, "where_time_goes": breakdown,
    });
    w.stop().await;
    Ok(Report { title: format!("(a) throughput, limits off, {}", kind.name()), rows, json })
}

// ---------------------------------------------------------------------------------------------------------------
// (b) QuickBooks limits on
// ---------------------------------------------------------------------------------------------------------------

async fn limits(opts: &BenchOptions) -> anyhow::Result<Report> {
    let n = opts.n.unwrap_or(1000);
    let scale = opts.time_scale;
    anyhow::ensure!(scale.is_finite() && scale > 0.0, "--time-scale must be a positive number, got {scale}");
    say(&format!("limits: QuickBooks at 500 requests/min on a clock {scale}× faster; preparing {n} closed opportunities"));
    let limits = quickbooks::QuickbooksLimits { time_scale: scale, ..Default::default() };
    let w = world(opts, WorldSpec { store: opts.store, qbo_limits: Some(limits), speedup: scale, salesforce_child: false, label: "limits" }).await?;
    let flow = templates::load(INVOICE_FLOW, &BTreeMap::new())?;
    let engine = w.engine(vec![flow], opts, Some(Duration::from_secs(1)))?;
    engine.prime().await?;
    let opp_ids = prepare_closed_opportunities(&w.team, n, "L").await?;
    let qb = w.qb.clone().ok_or_else(|| anyhow::anyhow!("no QuickBooks connector"))?;
    let throttled_before = qb.limiter().throttled_count();
    let (log_before, log429_before, _) = w.qbo_calls().await?;
    w.timings.reset();

    say(&format!("  {} opportunities closed; the engine starts now", opp_ids.len()));
    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(stop_rx).await })
    };
    let (linked, _) = wait_for_invoice_links(&w.raw_store, &engine, n, Duration::from_secs(1800)).await?;
    let wall = started.elapsed();
    let _ = stop_tx.send(true);
    runner.await??;

    // What counts against Intuit's limits is HTTP requests (a batch of up to 30 invoices is one), so they are
    // counted where they arrive: the sandbox's call log, each with its arrival time.
    let requests = qbo_requests_since(&w, log_before).await?;
    let minute = chrono::Duration::from_std(Duration::from_secs(60).div_f64(scale))?;
    // Steady state: leave out the first and the last scaled minute (warm-up: customers and items are looked up
    // and created; tail: the last deals trickle out), where the limit does not bind.
    let first = requests.first().map(|r| r.at).unwrap_or_default();
    let last = requests.last().map(|r| r.at).unwrap_or_default();
    // Whole minutes counted from the first call: the limiter lets each minute's allowance out as a burst at the
    // start of its window, so a span that is not a whole number of minutes would over- or under-count one burst.
    let whole = ((last - first).num_milliseconds() / minute.num_milliseconds().max(1)).saturating_sub(2);
    let whole = i32::try_from(whole.max(0)).unwrap_or(0);
    let (lo, hi) = (first + minute, first + minute * (whole + 1));
    let window: Vec<&QboRequest> = requests.iter().filter(|r| r.at >= lo && r.at < hi).collect();
    let span_minutes = f64::from(whole);
    let per_minute = |count: usize| if span_minutes > 0.0 { count as f64 / span_minutes } else { 0.0 };
    let writes_pm = per_minute(window.iter().filter(|r| r.write).count());
    let batches_pm = per_minute(window.iter().filter(|r| r.batch).count());
    let reads_pm = per_minute(window.iter().filter(|r| !r.write).count());
    let requests_pm = writes_pm + reads_pm;
    // Invoices made in the window: their links are written right after QuickBooks answers.
    let links = w.raw_store.list_links("salesforce", "Opportunity").await?;
    let invoices_pm = per_minute(
        links.iter().filter(|l| (l.a.object == "Invoice" || l.b.object == "Invoice") && l.updated_at >= lo && l.updated_at < hi).count(),
    );
    // The ceiling for invoices: 120 batch calls of 30, plus what is left of the 500 requests after the batch calls
    // and the flow's reads, as single creates.
    let write_ceiling = f64::from(BATCH_PER_MINUTE * BATCH_ITEMS) + (500.0 - f64::from(BATCH_PER_MINUTE) - reads_pm).max(0.0);
    let share = if write_ceiling > 0.0 { invoices_pm / write_ceiling } else { 0.0 };
    let throttled = qb.limiter().throttled_count() - throttled_before;
    let (log_after, log429_after, kinds) = w.qbo_calls().await?;
    let sandbox_429 = log429_after.saturating_sub(log429_before);
    let delayed = qb.limiter().delayed_count();

    let rows = vec![
        ("store".to_string(), opts.store.name().to_string()),
        ("scale".into(), format!("{scale}× (a limit minute lasts {:.2} s)", secs(minute.to_std()?))),
        ("opportunities invoiced".into(), format!("{linked}/{n} in {:.1} s = {:.1} scaled minutes", secs(wall), secs(wall) / secs(minute.to_std()?))),
        ("steady-state window".into(), format!("{span_minutes:.1} scaled minutes (first and last minute left out)")),
        ("QuickBooks requests per minute".into(), format!("{requests_pm:.0} of 500 ({:.1}%)", requests_pm / 5.0)),
        ("  of which writes / reads".into(), format!("{writes_pm:.0} / {reads_pm:.0} per minute")),
        ("  batch calls".into(), format!("{batches_pm:.0} of {BATCH_PER_MINUTE} per minute ({:.1}%)", batches_pm * 100.0 / f64::from(BATCH_PER_MINUTE))),
        ("invoices vs write ceiling".into(), format!("{invoices_pm:.0} of {write_ceiling:.0} per minute = {:.1}% (bar: 90% → {})", share * 100.0, if share >= 0.9 { "met" } else { "NOT met" })),
        ("429s received".into(), format!("{throttled} by the connector · {sandbox_429} in the sandbox's log (bar: 0 → {})", if throttled == 0 && sandbox_429 == 0 { "met" } else { "NOT met" })),
        ("calls the limiter held back".into(), delayed.to_string()),
        ("QuickBooks calls by kind".into(), kinds.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(" · ")),
    ];
    let json = json!({
        "bench": "limits", "store": opts.store.name(), "n": n, "linked": linked, "time_scale": scale, "seconds": secs(wall),
        "steady_minutes": span_minutes, "requests_per_minute": requests_pm, "writes_per_minute": writes_pm, "reads_per_minute": reads_pm,
        "batch_calls_per_minute": batches_pm, "invoices_per_minute": invoices_pm,
        "ceiling_requests_per_minute": 500, "write_ceiling_per_minute": write_ceiling, "share_of_ceiling": share,
        "bar_share": 0.9, "meets_bar": share >= 0.9 && throttled == 0 && sandbox_429 == 0,
        "throttled_429": throttled, "sandbox_429": sandbox_429, "limiter_delayed": delayed,
        "quickbooks_calls_logged": log_after.saturating_sub(log_before),
    });
    w.stop().await;
    Ok(Report { title: "(b) QuickBooks limits on (scaled clock)".into(), rows, json })
}

// ---------------------------------------------------------------------------------------------------------------
// (c) webhook-to-write latency
// ---------------------------------------------------------------------------------------------------------------

/// Each changed invoice's note names a Salesforce account, whose description gets the invoice's id and total.
const WEBHOOK_FLOW: &str = r#"
[flow]
name = "bench-invoice-events"
description = "Copies each changed QuickBooks invoice's number and total onto the Salesforce account named in its note."

[trigger]
type = "webhook"
connection = "quickbooks"
object = "Invoice"
fields = ["Id", "DocNumber", "TotalAmt", "PrivateNote"]

[[steps]]
id = "account"
type = "update"
connection = "salesforce"
object = "Account"
record_id = 'record.PrivateNote'
[steps.fields]
Description = '"QuickBooks invoice " + record.Id + " total " + string(record.TotalAmt)'
"#;

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    secs(d) * 1000.0
}

async fn latency(opts: &BenchOptions) -> anyhow::Result<Report> {
    let rate = opts.rate.max(1);
    let total = opts.n.unwrap_or(rate as usize * opts.seconds as usize).max(1);
    say(&format!("latency: {total} QuickBooks webhook events at {rate}/s; preparing their invoices"));
    let limits = quickbooks::QuickbooksLimits { enabled: false, ..Default::default() };
    let w = world(opts, WorldSpec { store: opts.store, qbo_limits: Some(limits), speedup: 1e6, salesforce_child: false, label: "latency" }).await?;
    let qbo = w.qbo.as_ref().ok_or_else(|| anyhow::anyhow!("no QuickBooks sandbox"))?;
    let realm = qbo.info_str("realm_id").to_string();
    let verifier = qbo.info_str("verifier_token").to_string();

    // The invoices exist before the clock starts; each event then tells the engine one of them changed.
    let accounts = w.team.collections("Account", (0..20).map(|i| json!({"Name": format!("Bench webhook account {i}")})).collect(), false).await?;
    let qb = w.connectors["quickbooks"].clone();
    let customer = qb.find(&FindQuery { object: "Customer".into(), limit: Some(1), ..Default::default() }).await?;
    let customer_id = customer.first().and_then(|c| c.get("Id")).and_then(Value::as_str).ok_or_else(|| anyhow::anyhow!("the QuickBooks company has no customer"))?.to_string();
    let items = qb.find(&FindQuery { object: "Item".into(), equals: vec![("Type".into(), json!("Service"))], limit: Some(1), ..Default::default() }).await?;
    let item_id = items.first().and_then(|c| c.get("Id")).and_then(Value::as_str).ok_or_else(|| anyhow::anyhow!("the QuickBooks company has no service item"))?.to_string();
    let created = futures::stream::iter((0..total).map(|i| {
        let qb = qb.clone();
        let note = accounts[i % accounts.len()].clone();
        let (customer_id, item_id) = (customer_id.clone(), item_id.clone());
        async move {
            let amount = 100 + i % 900;
            let inv = json!({"CustomerRef": {"value": customer_id}, "PrivateNote": note,
                "Line": [{"Amount": amount, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": item_id}, "Qty": 1, "UnitPrice": amount}}]});
            let Value::Object(rec) = inv else { unreachable!("a JSON object literal") };
            qb.create("Invoice", &rec, &format!("bench-webhook-invoice-{i}")).await
        }
    }))
    .buffered(8)
    .collect::<Vec<_>>()
    .await;
    let mut invoices = Vec::with_capacity(total);
    for c in created {
        let rec = c?;
        let id = rec.get("Id").and_then(Value::as_str).unwrap_or_default().to_string();
        let updated = rec.get("MetaData").and_then(|m| m.get("LastUpdatedTime")).and_then(Value::as_str).unwrap_or_default().to_string();
        invoices.push((id, updated));
    }

    let flow = ledgerlink_flow::parse_flow(WEBHOOK_FLOW, "bench-invoice-events.toml", &BTreeMap::new()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = w.engine(vec![flow], opts, None)?;
    // The first sweep takes the baseline now: the invoices above are "before the flow", and only events run it.
    engine.prime().await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let (addr, server) = ledgerlink_server::serve(engine.clone(), SocketAddr::from(([127, 0, 0, 1], 0)), async move {
        let _ = server_stop.changed().await;
    })
    .await?;
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(stop_rx).await })
    };
    w.timings.reset();
    let cpu_before = cpu_by_thread();

    let url = format!("http://{addr}/webhooks/quickbooks/quickbooks");
    let http = ledgerlink_connectors::http::client();
    let posted: Arc<Mutex<Posted>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut senders = tokio::task::JoinSet::new();
    let send_started = Instant::now();
    for (id, updated) in invoices.iter().cloned() {
        tick.tick().await;
        let body = serde_json::to_vec(&json!({"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": [
            {"name": "Invoice", "id": id, "operation": "Create", "lastUpdated": updated}]}}]}))?;
        let signature = webhook::sign(&verifier, &body);
        let (http, url, posted) = (http.clone(), url.clone(), posted.clone());
        senders.spawn(async move {
            let at = Utc::now();
            let t = Instant::now();
            let status = match http.post(&url).header(webhook::SIGNATURE_HEADER, signature).body(body).send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            posted.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (at, t.elapsed(), status));
        });
    }
    while senders.join_next().await.is_some() {}
    let sending = send_started.elapsed();

    // Every event's job finishes (or the deadline passes).
    let deadline = Instant::now() + Duration::from_secs(120);
    let filter = JobFilter { kind: Some(ledgerlink_engine::webhooks::JOB_FLOW_EVENT.into()), limit: Some(u32::try_from(total * 2).unwrap_or(u32::MAX)), ..Default::default() };
    let jobs = loop {
        let jobs = w.raw_store.list_jobs(&filter).await?;
        let finished = jobs.iter().filter(|j| j.status != ledgerlink_store::JobStatus::Queued && j.status != ledgerlink_store::JobStatus::Running).count();
        if finished >= total || Instant::now() > deadline {
            break jobs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cpu = cpu_delta(&cpu_before, &cpu_by_thread());
    let _ = stop_tx.send(true);
    runner.await??;
    let _ = server.await;

    let posted = posted.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut latencies = Vec::new();
    let mut acks: Vec<Duration> = posted.values().map(|p| p.1).collect();
    let refused = posted.values().filter(|p| p.2 != 200).count();
    let mut not_done = 0;
    for job in &jobs {
        let id = job.payload["event"]["id"].as_str().unwrap_or_default();
        let Some((at, _, _)) = posted.get(id) else { continue };
        if job.status == ledgerlink_store::JobStatus::Done {
            latencies.push((job.updated_at - *at).to_std().unwrap_or_default());
        } else {
            not_done += 1;
        }
    }
    latencies.sort();
    acks.sort();
    let (p50, p99, max) = (percentile(&latencies, 50), percentile(&latencies, 99), latencies.last().copied().unwrap_or_default());
    let achieved = posted.len() as f64 / secs(sending).max(1e-9);

    let mut rows = vec![
        ("store".to_string(), opts.store.name().to_string()),
        ("events".into(), format!("{} sent at {achieved:.0}/s (asked {rate}/s), {} refused", posted.len(), refused)),
        ("jobs done / not done".into(), format!("{} / {not_done}", latencies.len())),
        ("POST → 200 (events durable)".into(), format!("p50 {:.1} ms · p99 {:.1} ms", ms(percentile(&acks, 50)), ms(percentile(&acks, 99)))),
        ("POST → job done (write made)".into(), format!("p50 {:.1} ms · p99 {:.1} ms · max {:.1} ms", ms(p50), ms(p99), ms(max))),
        ("bar: p99 < 250 ms".into(), if p99 < Duration::from_millis(250) { "met".into() } else { "NOT met".into() }),
        ("worker idle wait".into(), format!("{} ms (a job queued while the worker sleeps waits up to this long)", engine.settings.idle_wait.as_millis())),
    ];
    let breakdown = time_breakdown(&w.timings, &cpu, latencies.len(), &mut rows);
    let json = json!({
        "bench": "latency", "store": opts.store.name(), "events": posted.len(), "rate_asked": rate, "rate_achieved": achieved,
        "refused": refused, "done": latencies.len(), "not_done": not_done,
        "ack_p50_ms": ms(percentile(&acks, 50)), "ack_p99_ms": ms(percentile(&acks, 99)),
        "p50_ms": ms(p50), "p99_ms": ms(p99), "max_ms": ms(max), "bar_p99_ms": 250, "meets_bar": p99 < Duration::from_millis(250),
        "idle_wait_ms": engine.settings.idle_wait.as_millis() as u64, "where_time_goes": breakdown,
    });
    w.stop().await;
    Ok(Report { title: "(c) webhook → write latency".into(), rows, json })
}

// ---------------------------------------------------------------------------------------------------------------
// (d) backfill memory
// ---------------------------------------------------------------------------------------------------------------

/// A light flow: read the changed account, write one field back.
const BACKFILL_FLOW: &str = r#"
[flow]
name = "bench-account-backfill"
description = "Reads every changed account and stamps its description."

[trigger]
type = "poll"
connection = "salesforce"
object = "Account"
fields = ["Id", "Name", "SystemModstamp"]
interval_seconds = 5

[[steps]]
id = "account"
type = "get"
connection = "salesforce"
object = "Account"
record_id = 'record.Id'
fields = ["Id", "Name", "Description"]

[[steps]]
id = "stamp"
type = "update"
connection = "salesforce"
object = "Account"
record_id = 'record.Id'
[steps.fields]
Description = '"Backfilled: " + account.Name'
"#;

/// Per webhook event id: when it was posted, how long the POST took, its status.
type Posted = BTreeMap<String, (DateTime<Utc>, Duration, u16)>;

async fn backfill(opts: &BenchOptions) -> anyhow::Result<Report> {
    let n = opts.n.unwrap_or(100_000);
    say(&format!("backfill: {n} changed Salesforce accounts (Salesforce sandbox in a child process)"));
    let w = world(opts, WorldSpec { store: opts.store, qbo_limits: None, speedup: 1.0, salesforce_child: true, label: "backfill" }).await?;
    let flow = ledgerlink_flow::parse_flow(BACKFILL_FLOW, "bench-account-backfill.toml", &BTreeMap::new()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = w.engine(vec![flow], opts, None)?;
    engine.prime().await?;
    let mut ids = Vec::new();
    let chunk = 10_000;
    for start in (0..n).step_by(chunk) {
        let records: Vec<Value> = (start..(start + chunk).min(n)).map(|i| json!({"Name": format!("Backfill account {i:06}")})).collect();
        ids.extend(w.team.collections("Account", records, false).await?);
        say(&format!("  {} accounts created", ids.len()));
    }
    drop(ids);
    let rss_before = proc_status_kib("VmRSS:").unwrap_or(0);
    // Resets VmHWM to the current RSS (Linux ≥ 4.0), so the peak below is the engine's run, not the set-up.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    w.timings.reset();

    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(stop_rx).await })
    };
    // Peak memory is sampled while waiting, so the growth over time can be reported, not only its maximum.
    let mut samples: Vec<(f64, u64, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut last_say = Instant::now();
    let stamped = loop {
        let updated = engine.stats.snapshot().records_updated;
        let counts = w.raw_store.count_jobs().await?;
        let rss = proc_status_kib("VmRSS:").unwrap_or(0);
        samples.push((secs(started.elapsed()), rss, counts.queued));
        // Every changed record's job has ended (stamped, found already stamped, dead or parked) and none is left
        // queued or running. Counted from the engine's job outcomes, not from stamps: a record that needs no write
        // must not keep the run waiting for its deadline.
        let s = engine.stats.snapshot();
        let ended = s.jobs_done + s.jobs_dead + s.jobs_parked;
        if (ended >= n as u64 && counts.queued == 0 && counts.running == 0) || Instant::now() > deadline {
            break updated;
        }
        if last_say.elapsed() > Duration::from_secs(10) {
            say(&format!("  {:.0} s: jobs done {} queued {} · RSS {} MiB", secs(started.elapsed()), counts.done, counts.queued, rss / 1024));
            last_say = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let wall = started.elapsed();
    let hwm = proc_status_kib("VmHWM:").unwrap_or(0);
    let _ = stop_tx.send(true);
    runner.await??;
    let counts = w.raw_store.count_jobs().await?;
    let dead_errors = dead_job_errors(&w.raw_store).await?;
    let peak_at = samples.iter().max_by_key(|s| s.1).map(|s| s.0).unwrap_or(0.0);
    let queued_peak = samples.iter().map(|s| s.2).max().unwrap_or(0);
    let mib = |k: u64| k as f64 / 1024.0;

    let mut rows = vec![
        ("store".to_string(), opts.store.name().to_string()),
        ("records".into(), format!("{n} accounts changed, {stamped} stamped in {:.0} s ({:.0}/s)", secs(wall), stamped as f64 / secs(wall).max(1e-9))),
        ("RSS before the run".into(), format!("{:.0} MiB", mib(rss_before))),
        ("peak RSS (VmHWM) during the run".into(), format!("{:.0} MiB{} (bar: 200 MB → {})", mib(hwm), if reset { "" } else { " (peak since start: clear_refs unavailable)" }, if hwm * 1024 <= 200_000_000 { "met" } else { "NOT met" })),
        ("peak reached at".into(), format!("{peak_at:.0} s into the run; most jobs queued at once: {queued_peak}")),
        ("jobs done / dead / parked".into(), format!("{} / {} / {}", counts.done, counts.dead, counts.parked)),
    ];
    rows.extend(dead_errors.iter().map(|(id, error)| (format!("dead job {id}"), error.clone())));
    let json = json!({
        "bench": "backfill", "store": opts.store.name(), "n": n, "records_updated": stamped, "seconds": secs(wall),
        "rss_before_mib": mib(rss_before), "peak_rss_mib": mib(hwm), "peak_rss_bytes": hwm * 1024, "hwm_reset": reset,
        "bar_bytes": 200_000_000u64, "meets_bar": hwm * 1024 <= 200_000_000, "peak_at_seconds": peak_at, "queued_peak": queued_peak,
        "jobs": {"done": counts.done, "dead": counts.dead, "parked": counts.parked},
        "dead_job_errors": dead_errors.iter().map(|(id, e)| json!({"job": id, "error": e})).collect::<Vec<_>>(),
        "rss_samples": samples.iter().step_by((samples.len() / 40).max(1)).map(|s| json!([s.0.round(), s.1 / 1024])).collect::<Vec<_>>(),
    });
    w.stop().await;
    Ok(Report { title: "(d) backfill peak memory".into(), rows, json })
}
