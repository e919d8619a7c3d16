//! The embedded backend: one SQLite file, for a single ledgerlink process.
//!
//! Layout: [`SqliteStore::open`] parses the URL, creates the file and its directory, sets WAL, `synchronous=NORMAL`,
//! foreign keys and a 5 s busy timeout on every pooled connection, then runs the embedded migrations. The
//! [`Store`] impl follows, grouped like the trait; then the status/conflict helpers that the PostgreSQL backend
//! shares, and this backend's row decoding at the bottom.
//!
//! Timestamps are TEXT of fixed width (`%Y-%m-%dT%H:%M:%S%.6fZ`, always UTC), so that SQL comparisons of the
//! text (`run_at <= ?`) compare instants. JSON is TEXT. Every state change is one statement (`… RETURNING`), which
//! SQLite runs under its single write lock: that is what makes claiming atomic without explicit transactions.

use std::str::FromStr;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};

use crate::crypto::SecretCipher;
use crate::types::*;
use crate::{RecordRef, Result, Store, StoreError};

pub(crate) mod platform;

use crate::group_commit::{BoxFuture, Writer};

/// How long a statement waits for another connection's write lock before failing with "database is locked".
const BUSY_TIMEOUT: StdDuration = StdDuration::from_secs(5);
const POOL_SIZE: u32 = 8;

/// The SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    /// The group-committing writer the engine's writes go through (see `group_commit`); `None` for an in-memory
    /// database, whose one pooled connection is the database.
    writer: Option<Writer<sqlx::Sqlite>>,
    cipher: SecretCipher,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("pool_size", &self.pool.size()).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `sqlite://PATH` and brings its schema up to date.
    pub async fn open(url: &str, cipher: SecretCipher) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::UnsupportedUrl(url.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory && let Some(parent) = options.get_filename().parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Database(sqlx::Error::Configuration(
                    format!("cannot create directory {} for the SQLite store: {e}", parent.display()).into(),
                ))
            })?;
        }
        let mut pool = SqlitePoolOptions::new().max_connections(POOL_SIZE);
        if in_memory {
            // An in-memory database lives and dies with its one connection, so exactly one is opened and kept.
            pool = pool.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
        }
        let pool = pool.connect_with(options.clone()).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let writer = if in_memory {
            None
        } else {
            let options = options.clone();
            Some(Writer::start(async move { Ok(options.connect().await?) }).await?)
        };
        Ok(SqliteStore { pool, writer, cipher })
    }

    /// The stored (sealed) `credentials` column of a connection, exactly as written. For tests that prove
    /// secrets are not stored in the clear.
    #[doc(hidden)]
    pub async fn raw_credentials_column(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT credentials FROM connections WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("credentials")?),
            None => None,
        })
    }

    /// Runs a write: through the group commit of a file store, straight on the pool for an in-memory one.
    async fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + Sync + 'static,
    {
        match &self.writer {
            Some(writer) => writer.write(op).await,
            None => {
                let mut conn = self.pool.acquire().await?;
                op(&mut conn).await
            }
        }
    }

    async fn lease_conflict(&self, id: JobId, worker: &str) -> StoreError {
        match self.get_job(id).await {
            Ok(Some(job)) => lease_conflict(&job, worker),
            Ok(None) => StoreError::NotFound { what: "job", id: id.to_string() },
            Err(e) => e,
        }
    }
}

pub(crate) fn lease_conflict(job: &Job, worker: &str) -> StoreError {
    StoreError::Conflict(format!(
        "job {} is {} with lease held by {}, not by worker `{worker}`",
        job.id,
        job.status.as_str(),
        job.lease_owner.as_deref().map_or_else(|| "nobody".to_string(), |o| format!("`{o}`")),
    ))
}

/// The fixed-width text form of a timestamp; see the module docs for why the width matters.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn json(v: &serde_json::Value) -> String {
    v.to_string()
}

impl SqliteStore {
    /// Inserts a job with this status unless one with the same idempotency key exists.
    async fn insert_job(&self, job: &NewJob, status: &'static str) -> Result<Enqueued> {
        let now = ts(Utc::now());
        let job = job.clone();
        self.write(move |conn| {
            let (job, now) = (job.clone(), now.clone());
            Box::pin(async move {
                let inserted = sqlx::query(
                    "INSERT INTO jobs (kind, idempotency_key, flow, connection, payload, status, run_at, attempts,
                                       max_attempts, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?9, ?6, 0, ?7, ?8, ?8)
                     ON CONFLICT (idempotency_key) DO NOTHING
                     RETURNING id",
                )
                .bind(&job.kind)
                .bind(&job.idempotency_key)
                .bind(&job.flow)
                .bind(&job.connection)
                .bind(json(&job.payload))
                .bind(ts(job.run_at))
                .bind(job.max_attempts)
                .bind(now)
                .bind(status)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some(row) = inserted {
                    return Ok(Enqueued::Inserted(row.try_get("id")?));
                }
                let row = sqlx::query("SELECT id FROM jobs WHERE idempotency_key = ?1")
                    .bind(&job.idempotency_key)
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(Enqueued::Duplicate(row.try_get("id")?))
            })
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn web(&self) -> Option<&dyn crate::WebStore> {
        Some(self)
    }

    // ----- connections -----

    async fn put_connection(&self, conn: &NewConnection) -> Result<Connection> {
        let now = ts(Utc::now());
        let row = sqlx::query(
            "INSERT INTO connections (name, system, config, credentials, credentials_version, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)
             ON CONFLICT (name) DO UPDATE SET system = excluded.system, config = excluded.config,
                 credentials = excluded.credentials,
                 credentials_version = connections.credentials_version + 1,
                 updated_at = excluded.updated_at
             RETURNING *",
        )
        .bind(&conn.name)
        .bind(&conn.system)
        .bind(json(&conn.config))
        .bind(self.cipher.seal(&conn.credentials))
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        connection_from_row(&row, &self.cipher)
    }

    async fn get_connection(&self, name: &str) -> Result<Option<Connection>> {
        let row =
            sqlx::query("SELECT * FROM connections WHERE name = ?1").bind(name).fetch_optional(&self.pool).await?;
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
            "UPDATE connections SET credentials = ?1, credentials_version = credentials_version + 1, updated_at = ?2
             WHERE name = ?3 AND credentials_version = ?4
             RETURNING credentials_version",
        )
        .bind(self.cipher.seal(credentials))
        .bind(ts(Utc::now()))
        .bind(name)
        .bind(expected_version)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(row.try_get("credentials_version")?);
        }
        let current = sqlx::query("SELECT credentials_version FROM connections WHERE name = ?1")
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
        let worker = worker.to_string();
        let rows = self
            .write(move |conn| {
                let worker = worker.clone();
                Box::pin(async move {
                    Ok(sqlx::query(
                        "UPDATE jobs SET status = 'running', lease_owner = ?1, lease_until = ?2,
                                         attempts = attempts + 1, updated_at = ?3
                         WHERE id IN (
                             SELECT id FROM jobs
                             WHERE (status = 'queued' AND run_at <= ?3) OR (status = 'running' AND lease_until < ?3)
                             ORDER BY run_at, id
                             LIMIT ?4)
                         RETURNING *",
                    )
                    .bind(worker)
                    .bind(ts(now + lease))
                    .bind(ts(now))
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
        // SQLite has no arrays: the names travel as one JSON array, unpacked by json_each.
        let names = serde_json::to_string(connections)
            .map_err(|e| StoreError::Corrupt(format!("connection names cannot be encoded: {e}")))?;
        let worker = worker.to_string();
        let rows = self
            .write(move |conn| {
                let (worker, names) = (worker.clone(), names.clone());
                Box::pin(async move {
                    Ok(sqlx::query(
                        "UPDATE jobs SET status = 'running', lease_owner = ?1, lease_until = ?2,
                                         attempts = attempts + 1, updated_at = ?3
                         WHERE id IN (
                             SELECT id FROM jobs
                             WHERE ((status = 'queued' AND run_at <= ?3) OR (status = 'running' AND lease_until < ?3))
                               AND (connection IS NULL OR connection IN (SELECT value FROM json_each(?5)))
                             ORDER BY run_at, id
                             LIMIT ?4)
                         RETURNING *",
                    )
                    .bind(worker)
                    .bind(ts(now + lease))
                    .bind(ts(now))
                    .bind(i64::from(limit))
                    .bind(names)
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
               AND ((status = 'queued' AND run_at <= ?1) OR (status = 'running' AND lease_until < ?1))
             ORDER BY connection",
        )
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("connection")?)).collect()
    }

    async fn complete_job(&self, id: JobId, worker: &str, now: DateTime<Utc>) -> Result<()> {
        let owner = worker.to_string();
        let done = self
            .write(move |conn| {
                let owner = owner.clone();
                Box::pin(async move {
                    Ok(sqlx::query(
                        "UPDATE jobs SET status = 'done', lease_owner = NULL, lease_until = NULL, updated_at = ?1
                         WHERE id = ?2 AND status = 'running' AND lease_owner = ?3",
                    )
                    .bind(ts(now))
                    .bind(id)
                    .bind(owner)
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
        let (owner, error) = (worker.to_string(), error.to_string());
        let failed = self
            .write(move |conn| {
                let (owner, error) = (owner.clone(), error.clone());
                Box::pin(async move {
                    Ok(sqlx::query(
                        "UPDATE jobs SET status = CASE WHEN ?1 IS NULL THEN 'dead' ELSE 'queued' END,
                                         run_at = COALESCE(?1, run_at), last_error = ?2,
                                         lease_owner = NULL, lease_until = NULL, updated_at = ?3
                         WHERE id = ?4 AND status = 'running' AND lease_owner = ?5",
                    )
                    .bind(retry_at.map(ts))
                    .bind(error)
                    .bind(ts(now))
                    .bind(id)
                    .bind(owner)
                    .execute(&mut *conn)
                    .await?)
                })
            })
            .await?;
        if failed.rows_affected() == 1 { Ok(()) } else { Err(self.lease_conflict(id, worker).await) }
    }

    async fn park_job(&self, id: JobId, worker: &str, review: ReviewId, now: DateTime<Utc>) -> Result<()> {
        let owner = worker.to_string();
        let parked = self
            .write(move |conn| {
                let owner = owner.clone();
                Box::pin(async move {
                    Ok(sqlx::query(
                        "UPDATE jobs SET status = 'parked', review_id = ?1, lease_owner = NULL, lease_until = NULL,
                                         updated_at = ?2
                         WHERE id = ?3 AND status = 'running' AND lease_owner = ?4",
                    )
                    .bind(review)
                    .bind(ts(now))
                    .bind(id)
                    .bind(owner)
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
            "UPDATE jobs SET status = 'queued', run_at = ?1, attempts = 0, lease_owner = NULL, lease_until = NULL,
                             review_id = NULL, updated_at = ?1
             WHERE id = ?2 AND status <> 'running'",
        )
        .bind(ts(now))
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
            "UPDATE jobs SET status = 'queued', run_at = ?1, lease_owner = NULL, lease_until = NULL, updated_at = ?1
             WHERE status = 'running' AND (?2 IS NULL OR lease_owner = ?2)",
        )
        .bind(ts(now))
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR flow = ?2) AND (?3 IS NULL OR kind = ?3)
             ORDER BY id DESC
             LIMIT COALESCE(?4, -1)",
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
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
                .bind(ts(link.updated_at))
                .execute(&mut *conn)
                .await
                .map(|_| ())?)
            })
        })
        .await
    }

    async fn find_link(&self, from: &RecordRef, to_connection: &str, to_object: &str) -> Result<Option<Link>> {
        let row = sqlx::query(
            "SELECT * FROM links
             WHERE (a_connection = ?1 AND a_object = ?2 AND a_id = ?3 AND b_connection = ?4 AND b_object = ?5)
                OR (b_connection = ?1 AND b_object = ?2 AND b_id = ?3 AND a_connection = ?4 AND a_object = ?5)
             ORDER BY updated_at DESC, id DESC
             LIMIT 1",
        )
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
             WHERE (a_connection = ?1 AND a_object = ?2) OR (b_connection = ?1 AND b_object = ?2)
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 1, ?8)
             ON CONFLICT (key) DO UPDATE SET attempts = write_intents.attempts + 1
             RETURNING *",
        )
        .bind(&intent.key)
        .bind(&intent.flow)
        .bind(intent.job_id)
        .bind(&intent.connection)
        .bind(&intent.object)
        .bind(&intent.action)
        .bind(json(&intent.payload))
        .bind(ts(intent.created_at))
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
        // two external records for one intent, which must surface rather than be papered over.
        let (id, response, k, audit) = (result_id.to_string(), json(response), key.to_string(), audit.clone());
        let done = self
            .write(move |conn| {
                let (id, response, k, audit) = (id.clone(), response.clone(), k.clone(), audit.clone());
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE write_intents SET status = 'done', result_id = ?1, response = ?2, completed_at = ?3
                         WHERE key = ?4 AND (status = 'pending' OR result_id = ?1)",
                    )
                    .bind(id)
                    .bind(response)
                    .bind(ts(now))
                    .bind(k)
                    .execute(&mut *conn)
                    .await?;
                    if done.rows_affected() != 1 {
                        return Ok(false);
                    }
                    insert_audit(conn, &audit).await?;
                    Ok(true)
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
        sqlx::query("UPDATE write_intents SET response = ?1 WHERE key = ?2 AND status = 'pending'")
            .bind(json(&serde_json::json!({"refused": reason, "request_key": next_request_key})))
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_intent(&self, key: &str) -> Result<Option<WriteIntent>> {
        let row =
            sqlx::query("SELECT * FROM write_intents WHERE key = ?1").bind(key).fetch_optional(&self.pool).await?;
        row.as_ref().map(intent_from_row).transpose()
    }

    // ----- change cursors -----

    async fn get_cursor(&self, connection: &str, object: &str, flow: &str) -> Result<Option<ChangeCursor>> {
        let row = sqlx::query("SELECT * FROM change_cursors WHERE connection = ?1 AND object = ?2 AND flow = ?3")
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (connection, object, flow) DO UPDATE SET
                 position = excluded.position, seen = excluded.seen, updated_at = excluded.updated_at",
                )
                .bind(&cursor.connection)
                .bind(&cursor.object)
                .bind(&cursor.flow)
                .bind(ts(cursor.position))
                .bind(json(&cursor.seen))
                .bind(ts(cursor.updated_at))
                .execute(&mut *conn)
                .await
                .map(|_| ())?)
            })
        })
        .await
    }

    // ----- runs -----

    async fn start_run(&self, run: &NewRun) -> Result<RunId> {
        let run = run.clone();
        self.write(move |conn| {
            let run = run.clone();
            Box::pin(async move {
                let row = sqlx::query("INSERT INTO runs (flow, trigger, started_at) VALUES (?1, ?2, ?3) RETURNING id")
                    .bind(&run.flow)
                    .bind(&run.trigger)
                    .bind(ts(run.started_at))
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(row.try_get("id")?)
            })
        })
        .await
    }

    async fn finish_run(&self, id: RunId, outcome: &RunOutcome, now: DateTime<Utc>) -> Result<()> {
        let outcome = serde_json::to_string(outcome).map_err(|e| StoreError::Corrupt(format!("run outcome: {e}")))?;
        self.write(move |conn| {
            let outcome = outcome.clone();
            Box::pin(async move {
                let done = sqlx::query("UPDATE runs SET finished_at = ?1, outcome = ?2 WHERE id = ?3")
                    .bind(ts(now))
                    .bind(outcome)
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
            "SELECT * FROM runs WHERE (?1 IS NULL OR flow = ?1) ORDER BY started_at DESC, id DESC LIMIT ?2",
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
        self.write(move |conn| {
            let entry = entry.clone();
            Box::pin(async move { insert_audit(conn, &entry).await })
        })
        .await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log
             WHERE (?1 IS NULL OR flow = ?1) AND (?2 IS NULL OR connection = ?2) AND (?3 IS NULL OR object = ?3)
               AND (?4 IS NULL OR record_id = ?4)
             ORDER BY at DESC, id DESC
             LIMIT COALESCE(?5, -1)",
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'open', ?9)
             RETURNING id",
        )
        .bind(&item.flow)
        .bind(item.job_id)
        .bind(&item.kind)
        .bind(&item.reason)
        .bind(item.subject.as_ref().map(|s| s.connection.as_str()))
        .bind(item.subject.as_ref().map(|s| s.object.as_str()))
        .bind(item.subject.as_ref().map(|s| s.id.as_str()))
        .bind(json(&item.details))
        .bind(ts(item.created_at))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    async fn reviews_for_job(&self, job_id: JobId) -> Result<Vec<ReviewItem>> {
        let rows = sqlx::query("SELECT * FROM review_items WHERE job_id = ?1 ORDER BY id")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(review_from_row).collect()
    }

    async fn get_review(&self, id: ReviewId) -> Result<Option<ReviewItem>> {
        let row = sqlx::query("SELECT * FROM review_items WHERE id = ?1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(review_from_row).transpose()
    }

    async fn list_reviews(&self, status: Option<ReviewStatus>) -> Result<Vec<ReviewItem>> {
        let rows = sqlx::query("SELECT * FROM review_items WHERE (?1 IS NULL OR status = ?1) ORDER BY id")
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
            "UPDATE review_items SET status = 'resolved', resolution = ?1, resolved_at = ?2
             WHERE id = ?3 AND status = 'open'
             RETURNING *",
        )
        .bind(json(resolution))
        .bind(ts(now))
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (flow, period) DO NOTHING
             RETURNING *",
        )
        .bind(&report.flow)
        .bind(&report.kind)
        .bind(&report.period)
        .bind(&report.title)
        .bind(&report.text)
        .bind(json(&report.body))
        .bind(ts(report.created_at))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok((report_from_row(&row)?, true));
        }
        let row = sqlx::query("SELECT * FROM reports WHERE flow = ?1 AND period = ?2")
            .bind(&report.flow)
            .bind(&report.period)
            .fetch_one(&self.pool)
            .await?;
        Ok((report_from_row(&row)?, false))
    }

    async fn get_report(&self, id: i64) -> Result<Option<Report>> {
        let row = sqlx::query("SELECT * FROM reports WHERE id = ?1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(report_from_row).transpose()
    }

    async fn list_reports(&self, flow: Option<&str>, limit: u32) -> Result<Vec<Report>> {
        let rows = sqlx::query(
            "SELECT * FROM reports WHERE (?1 IS NULL OR flow = ?1) ORDER BY created_at DESC, id DESC LIMIT ?2",
        )
        .bind(flow)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(report_from_row).collect()
    }

    // ----- named leases -----

    async fn try_acquire_lease(&self, name: &str, owner: &str, now: DateTime<Utc>, ttl: Duration) -> Result<bool> {
        // One upsert under SQLite's write lock: the conflict arm only fires for an expired lease or our own.
        let row = sqlx::query(
            "INSERT INTO leases (name, owner, held_until, acquired_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET
                 owner = excluded.owner,
                 held_until = excluded.held_until,
                 acquired_at = CASE WHEN leases.owner = excluded.owner AND leases.held_until >= ?4
                                    THEN leases.acquired_at ELSE excluded.acquired_at END
             WHERE leases.held_until < ?4 OR leases.owner = excluded.owner
             RETURNING owner",
        )
        .bind(name)
        .bind(owner)
        .bind(ts(now + ttl))
        .bind(ts(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM leases WHERE name = ?1 AND owner = ?2")
            .bind(name)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn lease_holder(&self, name: &str, now: DateTime<Utc>) -> Result<Option<Lease>> {
        let row = sqlx::query("SELECT * FROM leases WHERE name = ?1 AND held_until >= ?2")
            .bind(name)
            .bind(ts(now))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    async fn list_leases(&self, prefix: &str, now: DateTime<Utc>) -> Result<Vec<Lease>> {
        // A prefix compare rather than LIKE, so `_` and `%` in names mean themselves.
        let rows = sqlx::query(
            "SELECT * FROM leases WHERE substr(name, 1, length(?1)) = ?1 AND held_until >= ?2 ORDER BY name",
        )
        .bind(prefix)
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lease_from_row).collect()
    }

    async fn release_leases_of(&self, owner: Option<&str>) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM leases WHERE ?1 IS NULL OR owner = ?1").bind(owner).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}

// ----- shared helpers (also used by the PostgreSQL backend) -----

pub(crate) fn add_count(counts: &mut JobCounts, status: &str, n: i64) -> Result<()> {
    match JobStatus::parse(status) {
        Some(JobStatus::Queued) => counts.queued = n,
        Some(JobStatus::Running) => counts.running = n,
        Some(JobStatus::Done) => counts.done = n,
        Some(JobStatus::Dead) => counts.dead = n,
        Some(JobStatus::Parked) => counts.parked = n,
        None => {
            return Err(StoreError::Corrupt(format!("jobs.status holds unknown value `{status}`")));
        }
    }
    Ok(())
}

pub(crate) fn review_status_str(s: ReviewStatus) -> &'static str {
    match s {
        ReviewStatus::Open => "open",
        ReviewStatus::Resolved => "resolved",
    }
}

pub(crate) fn parse_review_status(s: &str) -> Result<ReviewStatus> {
    match s {
        "open" => Ok(ReviewStatus::Open),
        "resolved" => Ok(ReviewStatus::Resolved),
        other => Err(StoreError::Corrupt(format!("review_items.status holds unknown value `{other}`"))),
    }
}

pub(crate) fn parse_job_status(s: &str) -> Result<JobStatus> {
    JobStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("jobs.status holds unknown value `{s}`")))
}

pub(crate) fn parse_intent_status(s: &str) -> Result<IntentStatus> {
    match s {
        "pending" => Ok(IntentStatus::Pending),
        "done" => Ok(IntentStatus::Done),
        other => Err(StoreError::Corrupt(format!("write_intents.status holds unknown value `{other}`"))),
    }
}

pub(crate) fn intent_conflict(existing: &WriteIntent, result_id: &str) -> StoreError {
    StoreError::Conflict(format!(
        "write intent `{}` was already completed with result `{}`, not `{result_id}`",
        existing.key,
        existing.result_id.as_deref().unwrap_or("")
    ))
}

pub(crate) fn subject(connection: Option<String>, object: Option<String>, id: Option<String>) -> Option<RecordRef> {
    match (connection, object, id) {
        (Some(connection), Some(object), Some(id)) => Some(RecordRef { connection, object, id }),
        _ => None,
    }
}

// ----- row decoding -----

pub(crate) fn text_ts(row: &SqliteRow, col: &str) -> Result<DateTime<Utc>> {
    let text: String = row.try_get(col)?;
    parse_ts(col, &text)
}


/// Appends an audit entry on the writer's connection; returns its id.
async fn insert_audit(conn: &mut SqliteConnection, entry: &NewAuditEntry) -> Result<i64> {
    let row = sqlx::query(
        "INSERT INTO audit_log (at, flow, job_id, connection, object, record_id, action, outcome, before, after, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         RETURNING id",
    )
    .bind(ts(entry.at))
    .bind(&entry.flow)
    .bind(entry.job_id)
    .bind(&entry.connection)
    .bind(&entry.object)
    .bind(&entry.record_id)
    .bind(&entry.action)
    .bind(&entry.outcome)
    .bind(entry.before.as_ref().map(json))
    .bind(entry.after.as_ref().map(json))
    .bind(&entry.error)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("id")?)
}

fn opt_text_ts(row: &SqliteRow, col: &str) -> Result<Option<DateTime<Utc>>> {
    let text: Option<String> = row.try_get(col)?;
    text.map(|t| parse_ts(col, &t)).transpose()
}

fn parse_ts(col: &str, text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("column `{col}` holds `{text}`, not an RFC 3339 timestamp: {e}")))
}

fn text_json<T: DeserializeOwned>(row: &SqliteRow, col: &str) -> Result<T> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("column `{col}` is not valid JSON: {e}")))
}

pub(crate) fn opt_text_json<T: DeserializeOwned>(row: &SqliteRow, col: &str) -> Result<Option<T>> {
    let text: Option<String> = row.try_get(col)?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("column `{col}` is not valid JSON: {e}")))
    })
    .transpose()
}

fn connection_from_row(row: &SqliteRow, cipher: &SecretCipher) -> Result<Connection> {
    let sealed: String = row.try_get("credentials")?;
    Ok(Connection {
        name: row.try_get("name")?,
        system: row.try_get("system")?,
        config: text_json(row, "config")?,
        credentials: cipher.open(&sealed)?,
        credentials_version: row.try_get("credentials_version")?,
        created_at: text_ts(row, "created_at")?,
        updated_at: text_ts(row, "updated_at")?,
    })
}

fn job_from_row(row: &SqliteRow) -> Result<Job> {
    let status: String = row.try_get("status")?;
    Ok(Job {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        idempotency_key: row.try_get("idempotency_key")?,
        flow: row.try_get("flow")?,
        connection: row.try_get("connection")?,
        payload: text_json(row, "payload")?,
        status: parse_job_status(&status)?,
        run_at: text_ts(row, "run_at")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: opt_text_ts(row, "lease_until")?,
        last_error: row.try_get("last_error")?,
        review_id: row.try_get("review_id")?,
        created_at: text_ts(row, "created_at")?,
        updated_at: text_ts(row, "updated_at")?,
    })
}

fn link_from_row(row: &SqliteRow) -> Result<Link> {
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
        updated_at: text_ts(row, "updated_at")?,
    })
}

fn intent_from_row(row: &SqliteRow) -> Result<WriteIntent> {
    let status: String = row.try_get("status")?;
    Ok(WriteIntent {
        key: row.try_get("key")?,
        flow: row.try_get("flow")?,
        job_id: row.try_get("job_id")?,
        connection: row.try_get("connection")?,
        object: row.try_get("object")?,
        action: row.try_get("action")?,
        payload: text_json(row, "payload")?,
        status: parse_intent_status(&status)?,
        result_id: row.try_get("result_id")?,
        response: opt_text_json(row, "response")?,
        attempts: row.try_get("attempts")?,
        created_at: text_ts(row, "created_at")?,
        completed_at: opt_text_ts(row, "completed_at")?,
    })
}

fn cursor_from_row(row: &SqliteRow) -> Result<ChangeCursor> {
    Ok(ChangeCursor {
        connection: row.try_get("connection")?,
        object: row.try_get("object")?,
        flow: row.try_get("flow")?,
        position: text_ts(row, "position")?,
        seen: text_json(row, "seen")?,
        updated_at: text_ts(row, "updated_at")?,
    })
}

fn run_from_row(row: &SqliteRow) -> Result<Run> {
    Ok(Run {
        id: row.try_get("id")?,
        flow: row.try_get("flow")?,
        trigger: row.try_get("trigger")?,
        started_at: text_ts(row, "started_at")?,
        finished_at: opt_text_ts(row, "finished_at")?,
        outcome: opt_text_json(row, "outcome")?,
    })
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        entry: NewAuditEntry {
            at: text_ts(row, "at")?,
            flow: row.try_get("flow")?,
            job_id: row.try_get("job_id")?,
            connection: row.try_get("connection")?,
            object: row.try_get("object")?,
            record_id: row.try_get("record_id")?,
            action: row.try_get("action")?,
            outcome: row.try_get("outcome")?,
            before: opt_text_json(row, "before")?,
            after: opt_text_json(row, "after")?,
            error: row.try_get("error")?,
        },
    })
}

fn report_from_row(row: &SqliteRow) -> Result<Report> {
    Ok(Report {
        id: row.try_get("id")?,
        report: NewReport {
            flow: row.try_get("flow")?,
            kind: row.try_get("kind")?,
            period: row.try_get("period")?,
            title: row.try_get("title")?,
            text: row.try_get("text")?,
            body: text_json(row, "body")?,
            created_at: text_ts(row, "created_at")?,
        },
    })
}

fn review_from_row(row: &SqliteRow) -> Result<ReviewItem> {
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
            details: text_json(row, "details")?,
            created_at: text_ts(row, "created_at")?,
        },
        status: parse_review_status(&status)?,
        resolution: opt_text_json(row, "resolution")?,
        resolved_at: opt_text_ts(row, "resolved_at")?,
    })
}

fn lease_from_row(row: &SqliteRow) -> Result<Lease> {
    Ok(Lease {
        name: row.try_get("name")?,
        owner: row.try_get("owner")?,
        until: text_ts(row, "held_until")?,
        acquired_at: text_ts(row, "acquired_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_have_fixed_width_so_text_order_is_time_order() {
        let whole = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
        let fraction = whole + Duration::microseconds(7);
        assert_eq!(ts(whole), "2025-01-02T03:04:05.000000Z");
        assert_eq!(ts(fraction), "2025-01-02T03:04:05.000007Z");
        assert!(ts(whole) < ts(fraction));
        assert_eq!(parse_ts("t", &ts(fraction)).unwrap(), fraction);
        assert!(parse_ts("run_at", "yesterday").unwrap_err().to_string().contains("run_at"));
    }

    #[tokio::test]
    async fn file_store_uses_wal_normal_sync_and_foreign_keys_and_creates_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/store.db");
        let store =
            SqliteStore::open(&format!("sqlite://{}", path.display()), SecretCipher::for_tests()).await.unwrap();
        assert!(path.exists());
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&store.pool).await.unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&store.pool).await.unwrap();
        assert_eq!(sync, 1, "NORMAL");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&store.pool).await.unwrap();
        assert_eq!(fk, 1);
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(&store.pool).await.unwrap();
        assert_eq!(busy, 5000);
    }

    #[tokio::test]
    async fn in_memory_store_works_and_unknown_schemes_are_refused() {
        let store = crate::open("sqlite::memory:", SecretCipher::for_tests()).await.unwrap();
        assert_eq!(store.backend(), "sqlite");
        let conn = NewConnection {
            name: "qbo".into(),
            system: "quickbooks".into(),
            config: serde_json::json!({}),
            credentials: serde_json::json!({"token": "t"}),
        };
        store.put_connection(&conn).await.unwrap();
        assert_eq!(store.get_connection("qbo").await.unwrap().unwrap().credentials, conn.credentials);
        let err = crate::open("mysql://localhost/db", SecretCipher::for_tests()).await.err().unwrap();
        assert!(matches!(err, StoreError::UnsupportedUrl(ref u) if u == "mysql://localhost/db"), "{err:?}");
    }
}
