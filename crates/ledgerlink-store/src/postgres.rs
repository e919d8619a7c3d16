//! The scale-out backend: PostgreSQL, shared by any number of ledgerlink processes.
//!
//! Layout: [`PgStore::open`] builds a pool and runs the embedded migrations (sqlx serialises concurrent migrators
//! with an advisory lock, so N workers may start at once). The [`Store`] impl follows, grouped like the trait;
//! row decoding sits at the bottom. Timestamps are TIMESTAMPTZ and JSON is JSONB. Claiming uses
//! `FOR UPDATE SKIP LOCKED` inside a single `UPDATE … RETURNING`, so concurrent claimers in different processes
//! pass over each other's rows instead of waiting on them, and no row is ever handed out twice.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use sqlx::postgres::{PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection as _, Row};

use crate::crypto::SecretCipher;
use crate::group_commit::{BoxFuture, Writer};
use crate::sqlite::{
    add_count, intent_conflict, lease_conflict, parse_intent_status, parse_job_status, parse_review_status,
    review_status_str, subject,
};
use crate::types::*;
use crate::{JobWakeups, RecordRef, Result, Store, StoreError};

/// The channel a trigger on `jobs` notifies when a job becomes queued (migration 0006).
const JOBS_CHANNEL: &str = "ledgerlink_jobs";

mod platform;

const POOL_SIZE: u32 = 8;

/// The PostgreSQL-backed [`Store`].
#[derive(Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
    /// The group-committing writer the engine's writes go through (see `group_commit`), on a connection of its
    /// own beside the pool.
    writer: Writer<sqlx::Postgres>,
    cipher: SecretCipher,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password, so it is not kept, let alone printed.
        f.debug_struct("PgStore").field("pool_size", &self.pool.size()).finish_non_exhaustive()
    }
}

/// `LISTEN ledgerlink_jobs` on a connection of its own (taken from the pool for as long as the feed lives).
struct PgJobWakeups {
    listener: PgListener,
}

#[async_trait]
impl JobWakeups for PgJobWakeups {
    async fn next(&mut self) -> Result<()> {
        // `None`: the connection was lost and has been re-established; a notification may have been missed in
        // between, so this counts as a wake-up too.
        self.listener.try_recv().await?;
        Ok(())
    }
}

/// A record's link to an object of another connection, whichever side the record is on. The indexes that serve
/// it lead with the record id (migration 0008): see the test below for why that matters.
const FIND_LINK: &str = "SELECT * FROM links
     WHERE (a_connection = $1 AND a_object = $2 AND a_id = $3 AND b_connection = $4 AND b_object = $5)
        OR (b_connection = $1 AND b_object = $2 AND b_id = $3 AND a_connection = $4 AND a_object = $5)
     ORDER BY updated_at DESC, id DESC
     LIMIT 1";

impl PgStore {
    /// Connects to `postgres://…` and brings the schema up to date.
    pub async fn open(url: &str, cipher: SecretCipher) -> Result<PgStore> {
        let pool = PgPoolOptions::new().max_connections(POOL_SIZE).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let writer_url = url.to_owned();
        let writer = Writer::start(async move { Ok(PgConnection::connect(&writer_url).await?) }).await?;
        Ok(PgStore { pool, writer, cipher })
    }

    /// The stored (sealed) `credentials` column of a connection, exactly as written. For tests that prove
    /// secrets are not stored in the clear.
    #[doc(hidden)]
    pub async fn raw_credentials_column(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT credentials FROM connections WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("credentials")?),
            None => None,
        })
    }

    /// Closes the pool, waiting for connections to be returned (so the database can be dropped afterwards).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn lease_conflict(&self, id: JobId, worker: &str) -> StoreError {
        match self.get_job(id).await {
            Ok(Some(job)) => lease_conflict(&job, worker),
            Ok(None) => StoreError::NotFound { what: "job", id: id.to_string() },
            Err(e) => e,
        }
    }
}

impl PgStore {
    /// Inserts a job with this status unless one with the same idempotency key exists.
    async fn insert_job(&self, job: &NewJob, status: &'static str) -> Result<Enqueued> {
        let now = Utc::now();
        let job = job.clone();
        self.write(move |conn| {
            let job = job.clone();
            Box::pin(async move {
                let inserted = sqlx::query(
                    "INSERT INTO jobs (kind, idempotency_key, flow, connection, payload, status, run_at, attempts,
                                       max_attempts, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $9, $6, 0, $7, $8, $8)
                     ON CONFLICT (idempotency_key) DO NOTHING
                     RETURNING id",
                )
                .bind(&job.kind)
                .bind(&job.idempotency_key)
                .bind(&job.flow)
                .bind(&job.connection)
                .bind(&job.payload)
                .bind(job.run_at)
                .bind(job.max_attempts)
                .bind(now)
                .bind(status)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some(row) = inserted {
                    return Ok(Enqueued::Inserted(row.try_get("id")?));
                }
                let row = sqlx::query("SELECT id FROM jobs WHERE idempotency_key = $1")
                    .bind(&job.idempotency_key)
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(Enqueued::Duplicate(row.try_get("id")?))
            })
        })
        .await
    }

    /// Runs a write through the group commit (see `group_commit`).
    async fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, Result<T>> + Send + Sync + 'static,
    {
        self.writer.write(op).await
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn web(&self) -> Option<&dyn crate::WebStore> {
        Some(self)
    }

    // ----- connections -----

    async fn put_connection(&self, conn: &NewConnection) -> Result<Connection> {
        let now = Utc::now();
        let row = sqlx::query(
            "INSERT INTO connections (name, system, config, credentials, credentials_version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 1, $5, $5)
             ON CONFLICT (name) DO UPDATE SET system = excluded.system, config = excluded.config,
                 credentials = excluded.credentials,
                 credentials_version = connections.credentials_version + 1,
                 updated_at = excluded.updated_at
             RETURNING *",
        )
        .bind(&conn.name)
        .bind(&conn.system)
        .bind(&conn.config)
        .bind(self.cipher.seal(&conn.credentials))
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        connection_from_row(&row, &self.cipher)
    }

    async fn get_connection(&self, name: &str) -> Result<Option<Connection>> {
        let row =
            sqlx::query("SELECT * FROM connections WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        row.map(|r| connection_from_row(&r, &self.cipher)).transpose()
    }

    async fn list_connections(&self) -> Result<Vec<Connection>> {
        let rows = sqlx::query("SELECT * FROM connections ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(|r| connection_from_row(r, &self.cipher)).collect()
    }

    async fn update_credentials(
        &self,
        name: &str,
        expected_version: i64,
        credentials: &serde_json::Value,
    ) -> Result<i64> {
        let row = sqlx::query(
            "UPDATE connections SET credentials = $1, credentials_version = credentials_version + 1, updated_at = $2
             WHERE name = $3 AND credentials_version = $4
             RETURNING credentials_version",
        )
        .bind(self.cipher.seal(credentials))
        .bind(Utc::now())
        .bind(name)
        .bind(expected_version)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(row.try_get("credentials_version")?);
        }
        let current = sqlx::query("SELECT credentials_version FROM connections WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        match current {
            None => Err(StoreError::NotFound { what: "connection", id: name.to_string() }),
            Some(row) => {
                let version: i64 = row.try_get("credentials_version")?;
                Err(StoreError::Conflict(format!(
                    "credentials of connection `{name}` are at version {version}, not {expected_version}: \
                     another refresher rotated them first"
                )))
            }
        }
    }

    // ----- jobs -----

    async fn enqueue(&self, job: &NewJob) -> Result<Enqueued> {
        self.insert_job(job, "queued").await
    }

    async fn enqueue_done(&self, job: &NewJob) -> Result<Enqueued> {
        self.insert_job(job, "done").await
    }

    async fn claim_jobs(&self, worker: &str, now: DateTime<Utc>, lease: Duration, limit: u32) -> Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let owner = worker.to_owned();
        let rows = self
            .write(move |conn| {
                let owner = owner.clone();
                Box::pin(async move {
                    Ok(sqlx::query(
            "UPDATE jobs SET status = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1,
                             updated_at = $3
             WHERE id IN (
                 SELECT id FROM jobs
                 WHERE (status = 'queued' AND run_at <= $3) OR (status = 'running' AND lease_until < $3)
                 ORDER BY run_at, id
                 LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             RETURNING *",
        )
        .bind(&owner)
        .bind(now + lease)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?)
                })
            })
            .await?;
        let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        jobs.sort_by_key(|j| (j.run_at, j.id));
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
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (owner, connections) = (worker.to_owned(), connections.to_vec());
        let rows = self
            .write(move |conn| {
                let (owner, connections) = (owner.clone(), connections.clone());
                Box::pin(async move {
                    Ok(sqlx::query(
            "UPDATE jobs SET status = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1,
                             updated_at = $3
             WHERE id IN (
                 SELECT id FROM jobs
                 WHERE ((status = 'queued' AND run_at <= $3) OR (status = 'running' AND lease_until < $3))
                   AND (connection IS NULL OR connection = ANY($5))
                 ORDER BY run_at, id
                 LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             RETURNING *",
        )
        .bind(&owner)
        .bind(now + lease)
        .bind(now)
        .bind(i64::from(limit))
        .bind(&connections)
        .fetch_all(&mut *conn)
        .await?)
                })
            })
            .await?;
        let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        jobs.sort_by_key(|j| (j.run_at, j.id));
        Ok(jobs)
    }

    async fn due_connections(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT connection FROM jobs
             WHERE connection IS NOT NULL
               AND ((status = 'queued' AND run_at <= $1) OR (status = 'running' AND lease_until < $1))
             ORDER BY connection",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("connection")?)).collect()
    }

    async fn complete_job(&self, id: JobId, worker: &str, now: DateTime<Utc>) -> Result<()> {
        let owner = worker.to_owned();
        let done = self
            .write(move |conn| {
                let owner = owner.clone();
                Box::pin(async move {
                    Ok(sqlx::query(
                        "UPDATE jobs SET status = 'done', lease_owner = NULL, lease_until = NULL, updated_at = $1
             WHERE id = $2 AND status = 'running' AND lease_owner = $3",
                    )
                    .bind(now)
                    .bind(id)
                    .bind(&owner)
                    .execute(&mut *conn)
                    .await?)
                })
            })
            .await?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(self.lease_conflict(id, worker).await) }
    }

    async fn fail_job(
        &self,
        id: JobId,
        worker: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (owner, error) = (worker.to_owned(), error.to_owned());
        let failed = self
            .write(move |conn| {
                let (owner, error) = (owner.clone(), error.clone());
                Box::pin(async move {
                    Ok(sqlx::query(
                        "UPDATE jobs SET status = CASE WHEN $1 IS NULL THEN 'dead' ELSE 'queued' END,
                             run_at = COALESCE($1, run_at), last_error = $2,
                             lease_owner = NULL, lease_until = NULL, updated_at = $3
             WHERE id = $4 AND status = 'running' AND lease_owner = $5",
                    )
                    .bind(retry_at)
                    .bind(&error)
                    .bind(now)
                    .bind(id)
                    .bind(&owner)
                    .execute(&mut *conn)
                    .await?)
                })
            })
            .await?;
        if failed.rows_affected() == 1 { Ok(()) } else { Err(self.lease_conflict(id, worker).await) }
    }

    async fn park_job(&self, id: JobId, worker: &str, review: ReviewId, now: DateTime<Utc>) -> Result<()> {
        let owner = worker.to_owned();
        let parked = self
            .write(move |conn| {
                let owner = owner.clone();
                Box::pin(async move {
                    Ok(sqlx::query(
            "UPDATE jobs SET status = 'parked', review_id = $1, lease_owner = NULL, lease_until = NULL, updated_at = $2
             WHERE id = $3 AND status = 'running' AND lease_owner = $4",
        )
        .bind(review)
        .bind(now)
        .bind(id)
        .bind(&owner)
        .execute(&mut *conn)
        .await?)
                })
            })
            .await?;
        if parked.rows_affected() == 1 { Ok(()) } else { Err(self.lease_conflict(id, worker).await) }
    }

    async fn requeue_job(&self, id: JobId, now: DateTime<Utc>) -> Result<()> {
        // A running job is never requeued: its worker may still be writing, and a second run would race it.
        let requeued = sqlx::query(
            "UPDATE jobs SET status = 'queued', run_at = $1, attempts = 0, lease_owner = NULL, lease_until = NULL,
                             review_id = NULL, updated_at = $1
             WHERE id = $2 AND status <> 'running'",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if requeued.rows_affected() == 1 {
            return Ok(());
        }
        match self.get_job(id).await? {
            None => Err(StoreError::NotFound { what: "job", id: id.to_string() }),
            Some(job) => Err(StoreError::Conflict(format!(
                "job {id} is running (leased to {}); it can be requeued once it has finished or its lease has expired",
                job.lease_owner.as_deref().unwrap_or("nobody")
            ))),
        }
    }

    async fn recover_leases(&self, owner: Option<&str>, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'queued', run_at = $1, lease_owner = NULL, lease_until = NULL, updated_at = $1
             WHERE status = 'running' AND ($2::text IS NULL OR lease_owner = $2::text)",
        )
        .bind(now)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs
             WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR flow = $2) AND ($3 IS NULL OR kind = $3)
             ORDER BY id DESC
             LIMIT $4",
        )
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.flow)
        .bind(&filter.kind)
        .bind(filter.limit.map(i64::from))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn count_jobs(&self) -> Result<JobCounts> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetch_all(&self.pool).await?;
        let mut counts = JobCounts::default();
        for row in rows {
            let status: String = row.try_get("status")?;
            add_count(&mut counts, &status, row.try_get("n")?)?;
        }
        Ok(counts)
    }

    // ----- links -----

    async fn put_link(&self, link: &Link) -> Result<()> {
        let link = link.clone();
        self.write(move |conn| {
            let link = link.clone();
            Box::pin(async move {
                Ok(sqlx::query(
                    "INSERT INTO links (a_connection, a_object, a_id, b_connection, b_object, b_id,
                                a_version, b_version, a_hash, b_hash, flow, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (a_connection, a_object, a_id, b_connection, b_object) DO UPDATE SET
                 b_id = excluded.b_id, a_version = excluded.a_version, b_version = excluded.b_version,
                 a_hash = excluded.a_hash, b_hash = excluded.b_hash, flow = excluded.flow,
                 updated_at = excluded.updated_at",
                )
                .bind(&link.a.connection)
                .bind(&link.a.object)
                .bind(&link.a.id)
                .bind(&link.b.connection)
                .bind(&link.b.object)
                .bind(&link.b.id)
                .bind(&link.a_version)
                .bind(&link.b_version)
                .bind(&link.a_hash)
                .bind(&link.b_hash)
                .bind(&link.flow)
                .bind(link.updated_at)
                .execute(&mut *conn)
                .await?)
            })
        })
        .await?;
        Ok(())
    }

    async fn find_link(&self, from: &RecordRef, to_connection: &str, to_object: &str) -> Result<Option<Link>> {
        let row = sqlx::query(FIND_LINK)
        .bind(&from.connection)
        .bind(&from.object)
        .bind(&from.id)
        .bind(to_connection)
        .bind(to_object)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(link_from_row).transpose()
    }

    async fn list_links(&self, connection: &str, object: &str) -> Result<Vec<Link>> {
        let rows = sqlx::query(
            "SELECT * FROM links
             WHERE (a_connection = $1 AND a_object = $2) OR (b_connection = $1 AND b_object = $2)
             ORDER BY id",
        )
        .bind(connection)
        .bind(object)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(link_from_row).collect()
    }

    // ----- write intents -----

    async fn begin_intent(&self, intent: &NewWriteIntent) -> Result<WriteIntent> {
        let intent = intent.clone();
        let row = self
            .write(move |conn| {
                let intent = intent.clone();
                Box::pin(async move {
                    Ok(sqlx::query(
            "INSERT INTO write_intents (key, flow, job_id, connection, object, action, payload, status, attempts,
                                        created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 1, $8)
             ON CONFLICT (key) DO UPDATE SET attempts = write_intents.attempts + 1
             RETURNING *",
        )
        .bind(&intent.key)
        .bind(&intent.flow)
        .bind(intent.job_id)
        .bind(&intent.connection)
        .bind(&intent.object)
        .bind(&intent.action)
        .bind(&intent.payload)
        .bind(intent.created_at)
        .fetch_one(&mut *conn)
        .await?)
                })
            })
            .await?;
        intent_from_row(&row)
    }

    async fn complete_intent(
        &self,
        key: &str,
        result_id: &str,
        response: &serde_json::Value,
        now: DateTime<Utc>,
        audit: &NewAuditEntry,
    ) -> Result<()> {
        // Completing twice with the same result is harmless (a retried commit); a different result id would mean
        // two external records for one intent, which must surface rather than be papered over. One statement
        // for both rows: each statement is a round trip on the writer's connection, which every job's writes
        // share, and the audit entry is written only when the intent was completed.
        let (id, response, k, audit) = (result_id.to_owned(), response.clone(), key.to_owned(), audit.clone());
        let done = self
            .write(move |conn| {
                let (id, response, k, audit) = (id.clone(), response.clone(), k.clone(), audit.clone());
                Box::pin(async move {
                    let query = sqlx::query(
                        "WITH done AS (
                             UPDATE write_intents SET status = 'done', result_id = $1, response = $2, completed_at = $3
                             WHERE key = $4 AND (status = 'pending' OR result_id = $1)
                             RETURNING key)
                         INSERT INTO audit_log (at, flow, job_id, connection, object, record_id, action, outcome, before,
                                                after, error)
                         SELECT $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 FROM done
                         RETURNING id",
                    )
                    .bind(id)
                    .bind(response)
                    .bind(now)
                    .bind(k);
                    Ok(bind_audit(query, &audit)
                    .fetch_optional(&mut *conn)
                    .await?
                    .is_some())
                })
            })
            .await?;
        if done {
            return Ok(());
        }
        match self.get_intent(key).await? {
            None => Err(StoreError::NotFound { what: "write intent", id: key.to_string() }),
            Some(existing) => Err(intent_conflict(&existing, result_id)),
        }
    }

    async fn refuse_intent(&self, key: &str, next_request_key: &str, reason: &str) -> Result<()> {
        sqlx::query("UPDATE write_intents SET response = $1 WHERE key = $2 AND status = 'pending'")
            .bind(serde_json::json!({"refused": reason, "request_key": next_request_key}))
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_intent(&self, key: &str) -> Result<Option<WriteIntent>> {
        let row =
            sqlx::query("SELECT * FROM write_intents WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
        row.as_ref().map(intent_from_row).transpose()
    }

    // ----- change cursors -----

    async fn get_cursor(&self, connection: &str, object: &str, flow: &str) -> Result<Option<ChangeCursor>> {
        let row = sqlx::query("SELECT * FROM change_cursors WHERE connection = $1 AND object = $2 AND flow = $3")
            .bind(connection)
            .bind(object)
            .bind(flow)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(cursor_from_row).transpose()
    }

    async fn put_cursor(&self, cursor: &ChangeCursor) -> Result<()> {
        let cursor = cursor.clone();
        self.write(move |conn| {
            let cursor = cursor.clone();
            Box::pin(async move {
                Ok(sqlx::query(
                    "INSERT INTO change_cursors (connection, object, flow, position, seen, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (connection, object, flow) DO UPDATE SET
                 position = excluded.position, seen = excluded.seen, updated_at = excluded.updated_at",
                )
                .bind(&cursor.connection)
                .bind(&cursor.object)
                .bind(&cursor.flow)
                .bind(cursor.position)
                .bind(&cursor.seen)
                .bind(cursor.updated_at)
                .execute(&mut *conn)
                .await?)
            })
        })
        .await?;
        Ok(())
    }

    // ----- runs -----

    async fn start_run(&self, run: &NewRun) -> Result<RunId> {
        let run = run.clone();
        self.write(move |conn| {
            let run = run.clone();
            Box::pin(async move {
                let row = sqlx::query("INSERT INTO runs (flow, trigger, started_at) VALUES ($1, $2, $3) RETURNING id")
                    .bind(&run.flow)
                    .bind(&run.trigger)
                    .bind(run.started_at)
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(row.try_get("id")?)
            })
        })
        .await
    }

    async fn finish_run(&self, id: RunId, outcome: &RunOutcome, now: DateTime<Utc>) -> Result<()> {
        let outcome = outcome.clone();
        self.write(move |conn| {
            let outcome = outcome.clone();
            Box::pin(async move {
                let done = sqlx::query("UPDATE runs SET finished_at = $1, outcome = $2 WHERE id = $3")
                    .bind(now)
                    .bind(Json(outcome))
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                if done.rows_affected() == 1 {
                    Ok(())
                } else {
                    Err(StoreError::NotFound { what: "run", id: id.to_string() })
                }
            })
        })
        .await
    }

    async fn list_runs(&self, flow: Option<&str>, limit: u32) -> Result<Vec<Run>> {
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE ($1 IS NULL OR flow = $1) ORDER BY started_at DESC, id DESC LIMIT $2",
        )
        .bind(flow)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    // ----- audit log -----

    async fn append_audit(&self, entry: &NewAuditEntry) -> Result<i64> {
        let entry = entry.clone();
        let row = self
            .write(move |conn| {
                let entry = entry.clone();
                Box::pin(async move {
                    let query = sqlx::query(
            "INSERT INTO audit_log (at, flow, job_id, connection, object, record_id, action, outcome, before, after,
                                    error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             RETURNING id",
        );
                    Ok(bind_audit(query, &entry)
        .fetch_one(&mut *conn)
        .await?)
                })
            })
            .await?;
        Ok(row.try_get("id")?)
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log
             WHERE ($1 IS NULL OR flow = $1) AND ($2 IS NULL OR connection = $2) AND ($3 IS NULL OR object = $3)
               AND ($4 IS NULL OR record_id = $4)
             ORDER BY at DESC, id DESC
             LIMIT $5",
        )
        .bind(&filter.flow)
        .bind(&filter.connection)
        .bind(&filter.object)
        .bind(&filter.record_id)
        .bind(filter.limit.map(i64::from))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    // ----- review items -----

    async fn create_review(&self, item: &NewReviewItem) -> Result<ReviewId> {
        let row = sqlx::query(
            "INSERT INTO review_items (flow, job_id, kind, reason, subject_connection, subject_object, subject_id,
                                       details, status, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', $9)
             RETURNING id",
        )
        .bind(&item.flow)
        .bind(item.job_id)
        .bind(&item.kind)
        .bind(&item.reason)
        .bind(item.subject.as_ref().map(|s| s.connection.as_str()))
        .bind(item.subject.as_ref().map(|s| s.object.as_str()))
        .bind(item.subject.as_ref().map(|s| s.id.as_str()))
        .bind(&item.details)
        .bind(item.created_at)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    async fn reviews_for_job(&self, job_id: JobId) -> Result<Vec<ReviewItem>> {
        let rows = sqlx::query("SELECT * FROM review_items WHERE job_id = $1 ORDER BY id")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(review_from_row).collect()
    }

    async fn get_review(&self, id: ReviewId) -> Result<Option<ReviewItem>> {
        let row = sqlx::query("SELECT * FROM review_items WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(review_from_row).transpose()
    }

    async fn list_reviews(&self, status: Option<ReviewStatus>) -> Result<Vec<ReviewItem>> {
        let rows = sqlx::query("SELECT * FROM review_items WHERE ($1 IS NULL OR status = $1) ORDER BY id")
            .bind(status.map(review_status_str))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(review_from_row).collect()
    }

    async fn resolve_review(
        &self,
        id: ReviewId,
        resolution: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<ReviewItem> {
        let row = sqlx::query(
            "UPDATE review_items SET status = 'resolved', resolution = $1, resolved_at = $2
             WHERE id = $3 AND status = 'open'
             RETURNING *",
        )
        .bind(resolution)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return review_from_row(&row);
        }
        match self.get_review(id).await? {
            None => Err(StoreError::NotFound { what: "review item", id: id.to_string() }),
            Some(_) => Err(StoreError::Conflict(format!("review item {id} is already resolved"))),
        }
    }

    // ----- reports -----

    async fn put_report(&self, report: &NewReport) -> Result<(Report, bool)> {
        // Insert-or-nothing in one statement; a report already there for the period is read back unchanged.
        let row = sqlx::query(
            "INSERT INTO reports (flow, kind, period, title, text, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (flow, period) DO NOTHING
             RETURNING *",
        )
        .bind(&report.flow)
        .bind(&report.kind)
        .bind(&report.period)
        .bind(&report.title)
        .bind(&report.text)
        .bind(&report.body)
        .bind(report.created_at)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok((report_from_row(&row)?, true));
        }
        let row = sqlx::query("SELECT * FROM reports WHERE flow = $1 AND period = $2")
            .bind(&report.flow)
            .bind(&report.period)
            .fetch_one(&self.pool)
            .await?;
        Ok((report_from_row(&row)?, false))
    }

    async fn get_report(&self, id: i64) -> Result<Option<Report>> {
        let row = sqlx::query("SELECT * FROM reports WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(report_from_row).transpose()
    }

    async fn list_reports(&self, flow: Option<&str>, limit: u32) -> Result<Vec<Report>> {
        let rows = sqlx::query(
            "SELECT * FROM reports WHERE ($1::TEXT IS NULL OR flow = $1) ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(flow)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(report_from_row).collect()
    }

    // ----- named leases -----

    async fn try_acquire_lease(&self, name: &str, owner: &str, now: DateTime<Utc>, ttl: Duration) -> Result<bool> {
        // The conflict arm only fires for an expired lease or our own; otherwise nothing is returned. PostgreSQL
        // locks the conflicting row and re-checks the WHERE against its newest version, so two takers of one
        // expired lease cannot both win.
        let row = sqlx::query(
            "INSERT INTO leases (name, owner, held_until, acquired_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET
                 owner = excluded.owner,
                 held_until = excluded.held_until,
                 acquired_at = CASE WHEN leases.owner = excluded.owner AND leases.held_until >= $4
                                    THEN leases.acquired_at ELSE excluded.acquired_at END
             WHERE leases.held_until < $4 OR leases.owner = excluded.owner
             RETURNING owner",
        )
        .bind(name)
        .bind(owner)
        .bind(now + ttl)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM leases WHERE name = $1 AND owner = $2")
            .bind(name)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn lease_holder(&self, name: &str, now: DateTime<Utc>) -> Result<Option<Lease>> {
        let row = sqlx::query("SELECT * FROM leases WHERE name = $1 AND held_until >= $2")
            .bind(name)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    async fn list_leases(&self, prefix: &str, now: DateTime<Utc>) -> Result<Vec<Lease>> {
        // A prefix compare rather than LIKE, so `_` and `%` in names mean themselves.
        let rows = sqlx::query(
            "SELECT * FROM leases WHERE left(name, char_length($1)) = $1 AND held_until >= $2 ORDER BY name",
        )
        .bind(prefix)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lease_from_row).collect()
    }

    async fn release_leases_of(&self, owner: Option<&str>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM leases WHERE $1::text IS NULL OR owner = $1::text")
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn job_wakeups(&self) -> Result<Option<Box<dyn JobWakeups>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(JOBS_CHANNEL).await?;
        Ok(Some(Box::new(PgJobWakeups { listener })))
    }
}

// ----- row decoding -----

/// Binds an audit entry's eleven columns, in table order, after the query's other parameters.
fn bind_audit<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    entry: &'q NewAuditEntry,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(entry.at)
        .bind(&entry.flow)
        .bind(entry.job_id)
        .bind(&entry.connection)
        .bind(&entry.object)
        .bind(&entry.record_id)
        .bind(&entry.action)
        .bind(&entry.outcome)
        .bind(&entry.before)
        .bind(&entry.after)
        .bind(&entry.error)
}

fn connection_from_row(row: &PgRow, cipher: &SecretCipher) -> Result<Connection> {
    let sealed: String = row.try_get("credentials")?;
    Ok(Connection {
        name: row.try_get("name")?,
        system: row.try_get("system")?,
        config: row.try_get("config")?,
        credentials: cipher.open(&sealed)?,
        credentials_version: row.try_get("credentials_version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn job_from_row(row: &PgRow) -> Result<Job> {
    let status: String = row.try_get("status")?;
    Ok(Job {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        idempotency_key: row.try_get("idempotency_key")?,
        flow: row.try_get("flow")?,
        connection: row.try_get("connection")?,
        payload: row.try_get("payload")?,
        status: parse_job_status(&status)?,
        run_at: row.try_get("run_at")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row.try_get("lease_until")?,
        last_error: row.try_get("last_error")?,
        review_id: row.try_get("review_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn link_from_row(row: &PgRow) -> Result<Link> {
    Ok(Link {
        a: RecordRef {
            connection: row.try_get("a_connection")?,
            object: row.try_get("a_object")?,
            id: row.try_get("a_id")?,
        },
        b: RecordRef {
            connection: row.try_get("b_connection")?,
            object: row.try_get("b_object")?,
            id: row.try_get("b_id")?,
        },
        a_version: row.try_get("a_version")?,
        b_version: row.try_get("b_version")?,
        a_hash: row.try_get("a_hash")?,
        b_hash: row.try_get("b_hash")?,
        flow: row.try_get("flow")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn intent_from_row(row: &PgRow) -> Result<WriteIntent> {
    let status: String = row.try_get("status")?;
    Ok(WriteIntent {
        key: row.try_get("key")?,
        flow: row.try_get("flow")?,
        job_id: row.try_get("job_id")?,
        connection: row.try_get("connection")?,
        object: row.try_get("object")?,
        action: row.try_get("action")?,
        payload: row.try_get("payload")?,
        status: parse_intent_status(&status)?,
        result_id: row.try_get("result_id")?,
        response: row.try_get("response")?,
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
        completed_at: row.try_get("completed_at")?,
    })
}

fn cursor_from_row(row: &PgRow) -> Result<ChangeCursor> {
    Ok(ChangeCursor {
        connection: row.try_get("connection")?,
        object: row.try_get("object")?,
        flow: row.try_get("flow")?,
        position: row.try_get("position")?,
        seen: row.try_get("seen")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn run_from_row(row: &PgRow) -> Result<Run> {
    let outcome: Option<Json<RunOutcome>> = row.try_get("outcome")?;
    Ok(Run {
        id: row.try_get("id")?,
        flow: row.try_get("flow")?,
        trigger: row.try_get("trigger")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        outcome: outcome.map(|Json(o)| o),
    })
}

fn audit_from_row(row: &PgRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        entry: NewAuditEntry {
            at: row.try_get("at")?,
            flow: row.try_get("flow")?,
            job_id: row.try_get("job_id")?,
            connection: row.try_get("connection")?,
            object: row.try_get("object")?,
            record_id: row.try_get("record_id")?,
            action: row.try_get("action")?,
            outcome: row.try_get("outcome")?,
            before: row.try_get("before")?,
            after: row.try_get("after")?,
            error: row.try_get("error")?,
        },
    })
}

fn report_from_row(row: &PgRow) -> Result<Report> {
    Ok(Report {
        id: row.try_get("id")?,
        report: NewReport {
            flow: row.try_get("flow")?,
            kind: row.try_get("kind")?,
            period: row.try_get("period")?,
            title: row.try_get("title")?,
            text: row.try_get("text")?,
            body: row.try_get("body")?,
            created_at: row.try_get("created_at")?,
        },
    })
}

fn review_from_row(row: &PgRow) -> Result<ReviewItem> {
    let status: String = row.try_get("status")?;
    Ok(ReviewItem {
        id: row.try_get("id")?,
        item: NewReviewItem {
            flow: row.try_get("flow")?,
            job_id: row.try_get("job_id")?,
            kind: row.try_get("kind")?,
            reason: row.try_get("reason")?,
            subject: subject(
                row.try_get("subject_connection")?,
                row.try_get("subject_object")?,
                row.try_get("subject_id")?,
            ),
            details: row.try_get("details")?,
            created_at: row.try_get("created_at")?,
        },
        status: parse_review_status(&status)?,
        resolution: row.try_get("resolution")?,
        resolved_at: row.try_get("resolved_at")?,
    })
}

fn lease_from_row(row: &PgRow) -> Result<Lease> {
    Ok(Lease {
        name: row.try_get("name")?,
        owner: row.try_get("owner")?,
        until: row.try_get("held_until")?,
        acquired_at: row.try_get("acquired_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDatabase;
    use sqlx::Executor;

    /// A prepared statement switches to a generic plan after a few runs, planned without the parameters'
    /// values. With indexes that led with connection and object, that plan took each side's half of the
    /// look-up through the other side's index, bounded by connections and objects only: every look-up read all
    /// the links between the two objects (thousands of entries after thousands of invoices). The generic plan
    /// must bound both halves by the record id.
    #[tokio::test]
    async fn link_lookups_are_bounded_by_the_record_id_in_a_generic_plan() {
        let Some(db) = TestDatabase::create().await else { return };
        let store = PgStore::open(&db.url, SecretCipher::for_tests()).await.unwrap();
        for i in 0..200 {
            let link = Link {
                a: RecordRef::new("salesforce", "Opportunity", format!("006{i:015}")),
                b: RecordRef::new("quickbooks", "Invoice", i.to_string()),
                a_version: None,
                b_version: None,
                a_hash: None,
                b_hash: None,
                flow: None,
                updated_at: Utc::now(),
            };
            store.put_link(&link).await.unwrap();
        }
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        conn.execute("SET plan_cache_mode = force_generic_plan").await.unwrap();
        // Not analysed (as in a young database) and small: without this the table would be read whole, and the
        // question is which index each half uses.
        conn.execute("SET enable_seqscan = off").await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!("PREPARE find_link (text, text, text, text, text) AS {FIND_LINK}"))).await.unwrap();
        let lines: Vec<String> = sqlx::query_scalar(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
             EXECUTE find_link('salesforce', 'Opportunity', '006000000000000007', 'quickbooks', 'Invoice')",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let plan = lines.join("\n");
        let conditions: Vec<&str> = lines.iter().map(String::as_str).filter(|l| l.contains("Index Cond")).collect();
        assert_eq!(conditions.len(), 2, "one index look-up per side:\n{plan}");
        assert!(conditions.iter().any(|c| c.contains("a_id = $3")), "the a side is looked up by its id:\n{plan}");
        assert!(conditions.iter().any(|c| c.contains("b_id = $3")), "the b side is looked up by its id:\n{plan}");
        let scans = lines.iter().filter(|l| l.contains("Index Scan"));
        assert!(scans.clone().count() >= 2 && scans.clone().all(|l| l.contains("actual rows=0") || l.contains("actual rows=1")), "each index read at most one entry:\n{plan}");
        let found = sqlx::query(FIND_LINK)
            .bind("salesforce")
            .bind("Opportunity")
            .bind("006000000000000007")
            .bind("quickbooks")
            .bind("Invoice")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(link_from_row(&found).unwrap().b.id, "7");
    }
}
