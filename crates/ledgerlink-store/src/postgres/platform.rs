//! [`PlatformStore`] on PostgreSQL: the same statements as the SQLite backend, with native timestamps and JSONB;
//! claiming uses FOR UPDATE SKIP LOCKED so several processes can share the task queue.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use super::PgStore;
use crate::platform::*;
use crate::sqlite::platform::{finish_parts, not_found, parse_task_status, rev_conflict, task_lease_conflict};
use crate::{Result, SecretCipher, StoreError};

#[async_trait]
impl PlatformStore for PgStore {
    fn secrets(&self) -> &SecretCipher {
        &self.cipher
    }

    async fn insert_doc(&self, workspace: &str, kind: &str, id: &str, body: &serde_json::Value, now: DateTime<Utc>)
    -> Result<(PlatformDoc, bool)> {
        let inserted = sqlx::query(
            "INSERT INTO platform_docs (workspace_id, kind, id, body, rev, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 1, $5, $5) ON CONFLICT DO NOTHING",
        )
        .bind(workspace)
        .bind(kind)
        .bind(id)
        .bind(Json(body))
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let doc = self.get_doc(workspace, kind, id).await?.ok_or_else(|| not_found(workspace, kind, id))?;
        Ok((doc, inserted))
    }

    async fn put_doc(&self, workspace: &str, kind: &str, id: &str, body: &serde_json::Value, now: DateTime<Utc>)
    -> Result<PlatformDoc> {
        let row = sqlx::query(
            "INSERT INTO platform_docs (workspace_id, kind, id, body, rev, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 1, $5, $5)
             ON CONFLICT (workspace_id, kind, id) DO UPDATE SET body = excluded.body,
                 rev = platform_docs.rev + 1, updated_at = excluded.updated_at
             RETURNING *",
        )
        .bind(workspace)
        .bind(kind)
        .bind(id)
        .bind(Json(body))
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        doc_from_row(&row)
    }

    async fn update_doc(
        &self,
        workspace: &str,
        kind: &str,
        id: &str,
        expected_rev: i64,
        body: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<PlatformDoc> {
        let row = sqlx::query(
            "UPDATE platform_docs SET body = $5, rev = rev + 1, updated_at = $6
             WHERE workspace_id = $1 AND kind = $2 AND id = $3 AND rev = $4 RETURNING *",
        )
        .bind(workspace)
        .bind(kind)
        .bind(id)
        .bind(expected_rev)
        .bind(Json(body))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => doc_from_row(&row),
            None => Err(match self.get_doc(workspace, kind, id).await? {
                Some(doc) => rev_conflict(&doc, expected_rev),
                None => not_found(workspace, kind, id),
            }),
        }
    }

    async fn get_doc(&self, workspace: &str, kind: &str, id: &str) -> Result<Option<PlatformDoc>> {
        let row = sqlx::query("SELECT * FROM platform_docs WHERE workspace_id = $1 AND kind = $2 AND id = $3")
            .bind(workspace)
            .bind(kind)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(doc_from_row).transpose()
    }

    async fn find_doc(&self, kind: &str, id: &str) -> Result<Option<PlatformDoc>> {
        let row = sqlx::query("SELECT * FROM platform_docs WHERE kind = $1 AND id = $2 ORDER BY workspace_id LIMIT 1")
            .bind(kind)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(doc_from_row).transpose()
    }

    async fn list_docs(&self, workspace: &str, kind: &str) -> Result<Vec<PlatformDoc>> {
        let rows = sqlx::query("SELECT * FROM platform_docs WHERE workspace_id = $1 AND kind = $2 ORDER BY id")
            .bind(workspace)
            .bind(kind)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(doc_from_row).collect()
    }

    async fn delete_doc(&self, workspace: &str, kind: &str, id: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM platform_docs WHERE workspace_id = $1 AND kind = $2 AND id = $3")
            .bind(workspace)
            .bind(kind)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn enqueue_task(&self, task: &NewPlatformTask) -> Result<(i64, bool)> {
        let inserted = sqlx::query(
            "INSERT INTO platform_tasks (workspace_id, kind, dedupe_key, payload, status, run_at, attempts, max_attempts,
                                         created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'queued', $5, 0, $6, $7, $7)
             ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        )
        .bind(&task.workspace_id)
        .bind(&task.kind)
        .bind(&task.dedupe_key)
        .bind(Json(&task.payload))
        .bind(task.run_at)
        .bind(task.max_attempts)
        .bind(Utc::now())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = inserted {
            return Ok((row.try_get("id")?, true));
        }
        let row = sqlx::query("SELECT id FROM platform_tasks WHERE dedupe_key = $1")
            .bind(&task.dedupe_key)
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("id")?, false))
    }

    async fn claim_tasks(&self, owner: &str, now: DateTime<Utc>, lease: Duration, limit: u32) -> Result<Vec<PlatformTask>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "UPDATE platform_tasks SET status = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1,
                                       updated_at = $3
             WHERE id IN (
                 SELECT id FROM platform_tasks
                 WHERE (status = 'queued' AND run_at <= $3) OR (status = 'running' AND lease_until < $3)
                 ORDER BY run_at, id LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             RETURNING *",
        )
        .bind(owner)
        .bind(now + lease)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut tasks = rows.iter().map(task_from_row).collect::<Result<Vec<_>>>()?;
        tasks.sort_by_key(|t| (t.run_at, t.id));
        Ok(tasks)
    }

    async fn finish_task(&self, id: i64, owner: &str, outcome: &TaskOutcome, now: DateTime<Utc>) -> Result<()> {
        let (status, run_at, error, give_back) = finish_parts(outcome);
        let n = sqlx::query(
            "UPDATE platform_tasks SET status = $3, run_at = COALESCE($4, run_at), last_error = $5,
                 attempts = attempts - $6, lease_owner = NULL, lease_until = NULL, updated_at = $7
             WHERE id = $1 AND status = 'running' AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(status)
        .bind(run_at)
        .bind(error)
        .bind(give_back)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 1 {
            return Ok(());
        }
        Err(match self.get_task(id).await? {
            Some(task) => task_lease_conflict(&task, owner),
            None => StoreError::NotFound { what: "platform task", id: id.to_string() },
        })
    }

    async fn resume_tasks(&self, workspace: &str, now: DateTime<Utc>) -> Result<u64> {
        let n = sqlx::query(
            "UPDATE platform_tasks SET status = 'queued', run_at = $2, updated_at = $2
             WHERE workspace_id = $1 AND status = 'paused'",
        )
        .bind(workspace)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    async fn get_task(&self, id: i64) -> Result<Option<PlatformTask>> {
        let row = sqlx::query("SELECT * FROM platform_tasks WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn list_tasks(&self, workspace: &str, kind: Option<&str>, limit: u32) -> Result<Vec<PlatformTask>> {
        let rows = sqlx::query(
            "SELECT * FROM platform_tasks WHERE workspace_id = $1 AND ($2::text IS NULL OR kind = $2)
             ORDER BY id DESC LIMIT $3",
        )
        .bind(workspace)
        .bind(kind)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    async fn record_attempt(&self, a: &TaskAttempt) -> Result<()> {
        sqlx::query(
            "INSERT INTO platform_task_attempts (task_id, attempt, at, ok, status_code, error, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (task_id, attempt) DO UPDATE SET at = excluded.at, ok = excluded.ok,
                 status_code = excluded.status_code, error = excluded.error, duration_ms = excluded.duration_ms",
        )
        .bind(a.task_id)
        .bind(a.attempt)
        .bind(a.at)
        .bind(a.ok)
        .bind(a.status_code)
        .bind(&a.error)
        .bind(a.duration_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_attempts(&self, task_id: i64) -> Result<Vec<TaskAttempt>> {
        let rows = sqlx::query("SELECT * FROM platform_task_attempts WHERE task_id = $1 ORDER BY attempt")
            .bind(task_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(TaskAttempt {
                    task_id: row.try_get("task_id")?,
                    attempt: row.try_get("attempt")?,
                    at: row.try_get("at")?,
                    ok: row.try_get("ok")?,
                    status_code: row.try_get("status_code")?,
                    error: row.try_get("error")?,
                    duration_ms: row.try_get("duration_ms")?,
                })
            })
            .collect()
    }
}

fn doc_from_row(row: &PgRow) -> Result<PlatformDoc> {
    Ok(PlatformDoc {
        workspace_id: row.try_get("workspace_id")?,
        kind: row.try_get("kind")?,
        id: row.try_get("id")?,
        body: row.try_get("body")?,
        rev: row.try_get("rev")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn task_from_row(row: &PgRow) -> Result<PlatformTask> {
    let status: String = row.try_get("status")?;
    Ok(PlatformTask {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        kind: row.try_get("kind")?,
        dedupe_key: row.try_get("dedupe_key")?,
        payload: row.try_get("payload")?,
        status: parse_task_status(&status)?,
        run_at: row.try_get("run_at")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row.try_get("lease_until")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
