//! What the platform connector (`ledgerlink-platform`) keeps: JSON documents per workspace and a durable task
//! queue of its own.
//!
//! Why documents: the platform's records (workspaces, token hashes, settings, clients, invoices, idempotency
//! answers, webhook subscriptions) are many small shapes that only the platform crate interprets; one table of
//! `(workspace, kind, id) → JSON` with a revision for compare-and-swap keeps both backends small and lets the
//! domain crate own the types. Why a task queue of its own rather than the engine's `jobs`: the engine's worker
//! claims every job in `jobs` and refuses kinds it does not know, so platform work would be dead-lettered by
//! any engine sharing the store. Tasks that cannot run while a workspace is disconnected are `paused` and
//! resumed on reconnect, instead of burning their attempts.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::{Result, SecretCipher};

/// One stored document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformDoc {
    pub workspace_id: String,
    pub kind: String,
    pub id: String,
    pub body: serde_json::Value,
    /// 1 on insert, +1 on every write.
    pub rev: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Running,
    Done,
    /// Out of attempts, or failed for a reason retrying cannot fix.
    Dead,
    /// Waiting for the workspace to be reconnected.
    Paused,
}

impl TaskStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Done => "done",
            TaskStatus::Dead => "dead",
            TaskStatus::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        Some(match s {
            "queued" => TaskStatus::Queued,
            "running" => TaskStatus::Running,
            "done" => TaskStatus::Done,
            "dead" => TaskStatus::Dead,
            "paused" => TaskStatus::Paused,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewPlatformTask {
    pub workspace_id: String,
    /// `sync.record`, `webhook.deliver`, …
    pub kind: String,
    /// Unique across all tasks: a second enqueue with the same key returns the first task.
    pub dedupe_key: String,
    pub payload: serde_json::Value,
    pub run_at: DateTime<Utc>,
    pub max_attempts: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformTask {
    pub id: i64,
    pub workspace_id: String,
    pub kind: String,
    pub dedupe_key: String,
    pub payload: serde_json::Value,
    pub status: TaskStatus,
    pub run_at: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How a claimed task's attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    Done,
    /// Try again at `at` (backoff chosen by the caller).
    Retry { at: DateTime<Utc>, error: String },
    Dead { error: String },
    /// Not run: the workspace is disconnected. Attempts are given back.
    Paused { reason: String },
}

/// One attempt of one task, as the UI shows it (a webhook delivery's HTTP status, a sync call's error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAttempt {
    pub task_id: i64,
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// The platform connector's storage, implemented by both backends (contract tests in `tests/contract.rs`).
/// A supertrait of [`crate::Store`], so one `Arc<dyn Store>` serves the engine and the platform.
#[async_trait]
pub trait PlatformStore: Send + Sync {
    /// Seals and opens secrets (webhook signing secrets) with the store's master key.
    fn secrets(&self) -> &SecretCipher;

    /// Inserts the document unless `(workspace, kind, id)` exists. Returns the stored document and whether it
    /// was inserted by this call (false: someone else's, unchanged).
    async fn insert_doc(&self, workspace: &str, kind: &str, id: &str, body: &serde_json::Value, now: DateTime<Utc>)
    -> Result<(PlatformDoc, bool)>;
    /// Creates or replaces the document (rev + 1).
    async fn put_doc(&self, workspace: &str, kind: &str, id: &str, body: &serde_json::Value, now: DateTime<Utc>)
    -> Result<PlatformDoc>;
    /// Replaces the document only while it is at `expected_rev`; `Conflict` otherwise, `NotFound` if absent.
    async fn update_doc(
        &self,
        workspace: &str,
        kind: &str,
        id: &str,
        expected_rev: i64,
        body: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<PlatformDoc>;
    async fn get_doc(&self, workspace: &str, kind: &str, id: &str) -> Result<Option<PlatformDoc>>;
    /// The document of `kind` with `id` in whichever workspace holds it (ids of that kind must be global).
    async fn find_doc(&self, kind: &str, id: &str) -> Result<Option<PlatformDoc>>;
    /// Every document of `kind` in the workspace, by id.
    async fn list_docs(&self, workspace: &str, kind: &str) -> Result<Vec<PlatformDoc>>;
    /// Removes the document; whether it existed.
    async fn delete_doc(&self, workspace: &str, kind: &str, id: &str) -> Result<bool>;

    /// Inserts the task unless one with its dedupe key exists. Returns its id and whether it was inserted.
    async fn enqueue_task(&self, task: &NewPlatformTask) -> Result<(i64, bool)>;
    /// Claims up to `limit` due tasks (queued and due, or running with an expired lease) for `owner` until
    /// `now + lease`, incrementing attempts. PostgreSQL uses FOR UPDATE SKIP LOCKED.
    async fn claim_tasks(&self, owner: &str, now: DateTime<Utc>, lease: Duration, limit: u32) -> Result<Vec<PlatformTask>>;
    /// Records the outcome of the attempt `owner` claimed; `Conflict` if the lease is no longer `owner`'s.
    async fn finish_task(&self, id: i64, owner: &str, outcome: &TaskOutcome, now: DateTime<Utc>) -> Result<()>;
    /// Paused tasks of the workspace become due now. Returns how many.
    async fn resume_tasks(&self, workspace: &str, now: DateTime<Utc>) -> Result<u64>;
    async fn get_task(&self, id: i64) -> Result<Option<PlatformTask>>;
    /// The workspace's tasks, newest first, optionally of one kind.
    async fn list_tasks(&self, workspace: &str, kind: Option<&str>, limit: u32) -> Result<Vec<PlatformTask>>;
    /// Records one attempt (idempotent per `(task_id, attempt)`: a re-record replaces it).
    async fn record_attempt(&self, attempt: &TaskAttempt) -> Result<()>;
    /// A task's attempts, oldest first.
    async fn list_attempts(&self, task_id: i64) -> Result<Vec<TaskAttempt>>;
}

/// Implements [`PlatformStore`] for a wrapper around another store by passing every call to `self.$inner`
/// (any expression of a type that implements it, such as an `Arc<dyn Store>`). Wrappers of [`crate::Store`]
/// (timing, recording) need the supertrait too; this keeps them one line.
#[macro_export]
macro_rules! delegate_platform_store {
    ($ty:ty, $inner:ident) => {
        #[$crate::__async_trait::async_trait]
        impl $crate::PlatformStore for $ty {
            fn secrets(&self) -> &$crate::SecretCipher {
                self.$inner.secrets()
            }
            async fn insert_doc(
                &self,
                workspace: &str,
                kind: &str,
                id: &str,
                body: &$crate::__serde_json::Value,
                now: $crate::__chrono::DateTime<$crate::__chrono::Utc>,
            ) -> $crate::Result<($crate::PlatformDoc, bool)> {
                self.$inner.insert_doc(workspace, kind, id, body, now).await
            }
            async fn put_doc(
                &self,
                workspace: &str,
                kind: &str,
                id: &str,
                body: &$crate::__serde_json::Value,
                now: $crate::__chrono::DateTime<$crate::__chrono::Utc>,
            ) -> $crate::Result<$crate::PlatformDoc> {
                self.$inner.put_doc(workspace, kind, id, body, now).await
            }
            async fn update_doc(
                &self,
                workspace: &str,
                kind: &str,
                id: &str,
                expected_rev: i64,
                body: &$crate::__serde_json::Value,
                now: $crate::__chrono::DateTime<$crate::__chrono::Utc>,
            ) -> $crate::Result<$crate::PlatformDoc> {
                self.$inner.update_doc(workspace, kind, id, expected_rev, body, now).await
            }
            async fn get_doc(&self, workspace: &str, kind: &str, id: &str) -> $crate::Result<Option<$crate::PlatformDoc>> {
                self.$inner.get_doc(workspace, kind, id).await
            }
            async fn find_doc(&self, kind: &str, id: &str) -> $crate::Result<Option<$crate::PlatformDoc>> {
                self.$inner.find_doc(kind, id).await
            }
            async fn list_docs(&self, workspace: &str, kind: &str) -> $crate::Result<Vec<$crate::PlatformDoc>> {
                self.$inner.list_docs(workspace, kind).await
            }
            async fn delete_doc(&self, workspace: &str, kind: &str, id: &str) -> $crate::Result<bool> {
                self.$inner.delete_doc(workspace, kind, id).await
            }
            async fn enqueue_task(&self, task: &$crate::NewPlatformTask) -> $crate::Result<(i64, bool)> {
                self.$inner.enqueue_task(task).await
            }
            async fn claim_tasks(
                &self,
                owner: &str,
                now: $crate::__chrono::DateTime<$crate::__chrono::Utc>,
                lease: $crate::__chrono::Duration,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::PlatformTask>> {
                self.$inner.claim_tasks(owner, now, lease, limit).await
            }
            async fn finish_task(
                &self,
                id: i64,
                owner: &str,
                outcome: &$crate::TaskOutcome,
                now: $crate::__chrono::DateTime<$crate::__chrono::Utc>,
            ) -> $crate::Result<()> {
                self.$inner.finish_task(id, owner, outcome, now).await
            }
            async fn resume_tasks(&self, workspace: &str, now: $crate::__chrono::DateTime<$crate::__chrono::Utc>) -> $crate::Result<u64> {
                self.$inner.resume_tasks(workspace, now).await
            }
            async fn get_task(&self, id: i64) -> $crate::Result<Option<$crate::PlatformTask>> {
                self.$inner.get_task(id).await
            }
            async fn list_tasks(&self, workspace: &str, kind: Option<&str>, limit: u32) -> $crate::Result<Vec<$crate::PlatformTask>> {
                self.$inner.list_tasks(workspace, kind, limit).await
            }
            async fn record_attempt(&self, attempt: &$crate::TaskAttempt) -> $crate::Result<()> {
                self.$inner.record_attempt(attempt).await
            }
            async fn list_attempts(&self, task_id: i64) -> $crate::Result<Vec<$crate::TaskAttempt>> {
                self.$inner.list_attempts(task_id).await
            }
        }
    };
}
