//! The durable state of ledgerlink.
//!
//! Layout: [`Store`] is the one trait the engine talks to; [`open`] picks a backend from the URL
//! (`sqlite://…` → [`sqlite::SqliteStore`], `postgres://…` → [`postgres::PgStore`]). [`crypto`] seals
//! connection credentials with AES-256-GCM under a master key from `LEDGERLINK_MASTER_KEY` or a 0600 key file.
//! [`types`] holds the rows: connections, jobs, links, write intents, change cursors, runs, audit entries,
//! review items, named leases. [`web`] keeps the web UI's users, sessions and flow switches ([`WebStore`], reached
//! through [`Store::web`]). Migrations live in `migrations/sqlite` and `migrations/postgres`; the same contract tests
//! (`tests/contract.rs`) run against both backends.
//!
//! Named leases (`try_acquire_lease` and friends) are the store's one cross-process mutual exclusion: the engine
//! leases each connection to one worker, serialises token refreshes per connection, and keeps a heartbeat per
//! worker with them. A lease is a row with an owner and an expiry, so a dead holder's lease simply runs out.

pub mod crypto;
pub mod platform;
pub mod testing;
pub mod types;
pub mod web;

mod group_commit;
mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

pub use crypto::{MasterKey, SecretCipher};
pub use platform::{NewPlatformTask, PlatformDoc, PlatformStore, PlatformTask, TaskAttempt, TaskOutcome, TaskStatus};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use types::*;
pub use web::{FlowSwitch, NewWebSession, NewWebUser, WebSession, WebStore, WebUser};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported store URL `{0}`: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    #[error("credentials could not be decrypted: wrong master key or tampered data")]
    Decrypt,
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("conflict: {0}")]
    Conflict(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything ledgerlink keeps. Both backends pass the same contract tests. The platform connector's part is
/// the supertrait [`PlatformStore`].
///
/// Times are passed in (`now`) rather than read inside, so that the engine's clock (which tests and the
/// sandboxes can advance) is the only clock.
#[async_trait]
pub trait Store: PlatformStore + Send + Sync + 'static {
    /// Which backend this is (`sqlite` or `postgres`), for logs and the summary.
    fn backend(&self) -> &'static str;

    // ----- connections (credentials sealed with the master key) -----
    /// Creates or replaces the connection called `name`.
    async fn put_connection(&self, conn: &NewConnection) -> Result<Connection>;
    async fn get_connection(&self, name: &str) -> Result<Option<Connection>>;
    async fn list_connections(&self) -> Result<Vec<Connection>>;
    /// Replaces the credentials only if they are still at `expected_version` (compare-and-swap, so two refreshers
    /// cannot overwrite each other's rotated refresh token). Returns the new version.
    async fn update_credentials(&self, name: &str, expected_version: i64, credentials: &serde_json::Value) -> Result<i64>;

    // ----- jobs: the durable queue -----
    /// Inserts a job unless one with the same idempotency key exists (then returns that one's id).
    async fn enqueue(&self, job: &NewJob) -> Result<Enqueued>;
    /// Records a job whose work is already done, unless one with the same idempotency key exists: it occupies its
    /// key (a later enqueue of the same key is a duplicate) and is never claimed. The engine marks its own
    /// write-backs this way, so the poll that reads them back finds them handled without a job run for each.
    async fn enqueue_done(&self, job: &NewJob) -> Result<Enqueued>;
    /// Claims up to `limit` due jobs (queued with run_at <= now, or running with an expired lease), setting a lease
    /// for `worker` until now + `lease` and incrementing `attempts`. PostgreSQL uses FOR UPDATE SKIP LOCKED.
    async fn claim_jobs(&self, worker: &str, now: DateTime<Utc>, lease: Duration, limit: u32) -> Result<Vec<Job>>;
    /// Marks a job done. Fails with Conflict if `worker` no longer holds its lease.
    async fn complete_job(&self, id: JobId, worker: &str, now: DateTime<Utc>) -> Result<()>;
    /// Records a failed attempt: requeues at `retry_at`, or dead-letters when `retry_at` is None.
    async fn fail_job(&self, id: JobId, worker: &str, error: &str, retry_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<()>;
    /// Parks a job until a review item is resolved.
    async fn park_job(&self, id: JobId, worker: &str, review: ReviewId, now: DateTime<Utc>) -> Result<()>;
    /// Requeues a dead or parked job to run now, attempts reset (retry / replay / resume after review).
    async fn requeue_job(&self, id: JobId, now: DateTime<Utc>) -> Result<()>;
    /// Takes back the leases of jobs left running by a process that is known to be gone: those leased to `owner`,
    /// or every running job when `owner` is None (only sound when no other process uses the store, as with the
    /// embedded SQLite file). They become due now; `attempts` is kept, so a job that keeps killing its worker
    /// still reaches its limit. Returns how many were taken back.
    async fn recover_leases(&self, owner: Option<&str>, now: DateTime<Utc>) -> Result<u64>;
    /// Like [`Store::claim_jobs`], but only jobs whose `connection` is one of `connections`, or that have no
    /// connection at all: a worker that holds the leases of some connections runs only their jobs (and the
    /// connection-less ones, which anyone may run).
    async fn claim_jobs_for(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
        connections: &[String],
    ) -> Result<Vec<Job>>;
    /// The connections that have claimable jobs at `now` (queued and due, or running with an expired lease),
    /// sorted by name: what a worker looks at to decide which connection leases to take.
    async fn due_connections(&self, now: DateTime<Utc>) -> Result<Vec<String>>;
    async fn get_job(&self, id: JobId) -> Result<Option<Job>>;
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>>;
    async fn count_jobs(&self) -> Result<JobCounts>;

    // ----- links: which record in one system is which in another -----
    async fn put_link(&self, link: &Link) -> Result<()>;
    /// The link from `from` to a record of `to_object` in `to_connection`, looked up from either side.
    async fn find_link(&self, from: &RecordRef, to_connection: &str, to_object: &str) -> Result<Option<Link>>;
    async fn list_links(&self, connection: &str, object: &str) -> Result<Vec<Link>>;

    // ----- write intents: recorded before an external create, completed after -----
    /// Records the intent unless one with this key exists; returns the stored intent either way.
    async fn begin_intent(&self, intent: &NewWriteIntent) -> Result<WriteIntent>;
    /// Marks the intent done with the record it created, and appends `audit` (the entry for that write) in the same
    /// transaction: an intent is never done without its audit entry. Completing again with the same result is
    /// accepted (and audited again); a different result id is a conflict, and then nothing is written.
    async fn complete_intent(
        &self,
        key: &str,
        result_id: &str,
        response: &serde_json::Value,
        now: DateTime<Utc>,
        audit: &NewAuditEntry,
    ) -> Result<()>;
    /// Records that the target system refused a pending intent's write outright (nothing was created), and the
    /// request key its next attempt must carry: QuickBooks answers a repeated `requestid` with its first answer,
    /// so a write refused once would be refused forever, even after the cause was fixed. The intent stays pending;
    /// its `response` holds `{"refused": reason, "request_key": next}`. A done intent is left alone.
    async fn refuse_intent(&self, key: &str, next_request_key: &str, reason: &str) -> Result<()>;
    async fn get_intent(&self, key: &str) -> Result<Option<WriteIntent>>;

    // ----- change cursors, one per (connection, object, flow) -----
    async fn get_cursor(&self, connection: &str, object: &str, flow: &str) -> Result<Option<ChangeCursor>>;
    async fn put_cursor(&self, cursor: &ChangeCursor) -> Result<()>;

    // ----- runs -----
    async fn start_run(&self, run: &NewRun) -> Result<RunId>;
    async fn finish_run(&self, id: RunId, outcome: &RunOutcome, now: DateTime<Utc>) -> Result<()>;
    async fn list_runs(&self, flow: Option<&str>, limit: u32) -> Result<Vec<Run>>;

    // ----- audit log: every external write -----
    async fn append_audit(&self, entry: &NewAuditEntry) -> Result<i64>;
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>>;

    // ----- review items: decisions the engine must not guess -----
    async fn create_review(&self, item: &NewReviewItem) -> Result<ReviewId>;
    async fn get_review(&self, id: ReviewId) -> Result<Option<ReviewItem>>;
    async fn list_reviews(&self, status: Option<ReviewStatus>) -> Result<Vec<ReviewItem>>;
    /// The review items raised by one job, oldest first (a resumed job reads the decisions made on them).
    async fn reviews_for_job(&self, job_id: JobId) -> Result<Vec<ReviewItem>>;
    async fn resolve_review(&self, id: ReviewId, resolution: &serde_json::Value, now: DateTime<Utc>) -> Result<ReviewItem>;

    // ----- reports: what flows found, kept to be read again -----
    /// Stores `report` unless the flow already has one for its period; returns the stored report and whether it
    /// is new. The first report of a period stays: a re-run never makes a duplicate (atomic on both backends).
    async fn put_report(&self, report: &NewReport) -> Result<(Report, bool)>;
    async fn get_report(&self, id: i64) -> Result<Option<Report>>;
    /// Newest first; only `flow`'s when given.
    async fn list_reports(&self, flow: Option<&str>, limit: u32) -> Result<Vec<Report>>;

    // ----- named leases: one owner at a time, across processes -----
    /// Takes the lease `name` for `owner` until `now + ttl` and returns true when it is free, expired (held until
    /// before `now`), or already `owner`'s (then it is renewed); returns false while another owner holds it.
    /// One atomic statement, so of any number of concurrent callers at most one gets a free lease.
    async fn try_acquire_lease(&self, name: &str, owner: &str, now: DateTime<Utc>, ttl: Duration) -> Result<bool>;
    /// Gives the lease up if `owner` holds it (expired or not); returns whether it did. Another owner's lease is
    /// left alone.
    async fn release_lease(&self, name: &str, owner: &str) -> Result<bool>;
    /// The current (unexpired at `now`) holder of `name`, if any.
    async fn lease_holder(&self, name: &str, now: DateTime<Utc>) -> Result<Option<Lease>>;
    /// Every lease whose name starts with `prefix` that is unexpired at `now`, sorted by name.
    async fn list_leases(&self, prefix: &str, now: DateTime<Utc>) -> Result<Vec<Lease>>;
    /// Drops the leases of a process known to be gone: those of `owner`, or every lease when `owner` is None
    /// (only sound for a store no other process uses). Returns how many were dropped.
    async fn release_leases_of(&self, owner: Option<&str>) -> Result<u64>;

    // ----- the web UI's users, sessions and flow switches -----
    /// The web UI's part of this store. Both backends have it; a wrapper (a test double, a timing shim) that does
    /// not pass it on has none, and the UI then refuses to start rather than run without sessions.
    fn web(&self) -> Option<&dyn WebStore> {
        None
    }

    /// A feed that fires when any process queues a job, so an idle worker starts it at once instead of at its
    /// next look. `None` when the backend has no such channel (SQLite: one process, which rings its own bell).
    async fn job_wakeups(&self) -> Result<Option<Box<dyn JobWakeups>>> {
        Ok(None)
    }
}

/// See [`Store::job_wakeups`].
#[async_trait]
pub trait JobWakeups: Send {
    /// Returns once a job may have been queued since the last call: a job was queued, or the channel was
    /// re-established after a loss (when a notification may have been missed). An error ends the feed; the
    /// worker's idle polling still finds every job.
    async fn next(&mut self) -> Result<()>;
}

/// Opens the store the URL names, runs its migrations, and returns it.
///
/// `sqlite://PATH` (created if missing, WAL journal) or `postgres://…`. The cipher seals credentials.
pub async fn open(url: &str, cipher: SecretCipher) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, cipher).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::open(url, cipher).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}

pub use ledgerlink_model::RecordRef;

// For `delegate_platform_store!` in other crates.
#[doc(hidden)]
pub use async_trait as __async_trait;
#[doc(hidden)]
pub use chrono as __chrono;
#[doc(hidden)]
pub use serde_json as __serde_json;
