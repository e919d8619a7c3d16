//! Rows of the store. Plain data; both backends map to and from these.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use ledgerlink_model::RecordRef;

pub type JobId = i64;
pub type RunId = i64;
pub type ReviewId = i64;

/// A connection as given by the user or the OAuth callback. `credentials` is sealed before it is written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewConnection {
    pub name: String,
    /// `quickbooks`, `salesforce`, …
    pub system: String,
    /// Non-secret settings (base URL, realm id, API version).
    pub config: serde_json::Value,
    /// Secret material (client secret, access and refresh tokens). Never logged.
    pub credentials: serde_json::Value,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Connection {
    pub name: String,
    pub system: String,
    pub config: serde_json::Value,
    /// Decrypted on read.
    #[serde(skip_serializing)]
    pub credentials: serde_json::Value,
    /// Bumped on every credential change (compare-and-swap for token rotation).
    pub credentials_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("system", &self.system)
            .field("config", &self.config)
            .field("credentials", &"[redacted]")
            .field("credentials_version", &self.credentials_version)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Done,
    /// Failed its last attempt; kept with its error for retry or replay.
    Dead,
    /// Waiting on a review item.
    Parked,
}

impl JobStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Dead => "dead",
            JobStatus::Parked => "parked",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "done" => JobStatus::Done,
            "dead" => JobStatus::Dead,
            "parked" => JobStatus::Parked,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewJob {
    /// What kind of work (`flow.record`, `flow.poll`, …); the engine's registry maps it to a handler.
    pub kind: String,
    /// Unique: a second enqueue with the same key is a no-op. This is how a re-delivered change creates nothing.
    pub idempotency_key: String,
    pub flow: Option<String>,
    /// The connection whose limits this job spends, if any.
    pub connection: Option<String>,
    pub payload: serde_json::Value,
    pub run_at: DateTime<Utc>,
    pub max_attempts: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub kind: String,
    pub idempotency_key: String,
    pub flow: Option<String>,
    pub connection: Option<String>,
    pub payload: serde_json::Value,
    pub status: JobStatus,
    pub run_at: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub review_id: Option<ReviewId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Inserted(JobId),
    /// A job with this idempotency key already existed.
    Duplicate(JobId),
}

impl Enqueued {
    pub fn id(&self) -> JobId {
        match self {
            Enqueued::Inserted(id) | Enqueued::Duplicate(id) => *id,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub flow: Option<String>,
    pub kind: Option<String>,
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounts {
    pub queued: i64,
    pub running: i64,
    pub done: i64,
    pub dead: i64,
    pub parked: i64,
}

/// (a) ↔ (b): the same thing in two systems, with, per side, the version and the hash of the fields we last wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub a: RecordRef,
    pub b: RecordRef,
    pub a_version: Option<String>,
    pub b_version: Option<String>,
    pub a_hash: Option<String>,
    pub b_hash: Option<String>,
    /// The flow that made the link (informational).
    pub flow: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    Pending,
    Done,
}

/// Recorded before an external create, with the idempotency key the call carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewWriteIntent {
    /// Deterministic: derived from (flow, source record, action). Unique.
    pub key: String,
    pub flow: String,
    pub job_id: Option<JobId>,
    pub connection: String,
    pub object: String,
    pub action: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteIntent {
    pub key: String,
    pub flow: String,
    pub job_id: Option<JobId>,
    pub connection: String,
    pub object: String,
    pub action: String,
    pub payload: serde_json::Value,
    pub status: IntentStatus,
    pub result_id: Option<String>,
    pub response: Option<serde_json::Value>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// Where a poller is in one object's change stream, plus the (id, version) pairs seen inside the overlap window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeCursor {
    pub connection: String,
    pub object: String,
    pub flow: String,
    /// High-water mark of the change timestamp already processed.
    pub position: DateTime<Utc>,
    /// Ids (with versions) at or after `position - overlap`, so a re-read of the overlap is recognised.
    pub seen: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewRun {
    pub flow: String,
    /// `poll`, `webhook`, `schedule`, `manual`.
    pub trigger: String,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunOutcome {
    pub records_seen: i64,
    pub jobs_enqueued: i64,
    pub writes: i64,
    pub errors: i64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub flow: String,
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<RunOutcome>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAuditEntry {
    pub at: DateTime<Utc>,
    pub flow: Option<String>,
    pub job_id: Option<JobId>,
    pub connection: String,
    pub object: String,
    pub record_id: Option<String>,
    /// `create`, `update`, `delete`, `void`, …
    pub action: String,
    /// `ok`, `error`, `replayed`.
    pub outcome: String,
    /// Redacted before it gets here: the engine strips secrets.
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(flatten)]
    pub entry: NewAuditEntry,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditFilter {
    pub flow: Option<String>,
    pub connection: Option<String>,
    pub object: Option<String>,
    pub record_id: Option<String>,
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    Open,
    Resolved,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewReviewItem {
    pub flow: Option<String>,
    pub job_id: Option<JobId>,
    /// `ambiguous_match`, `validation`, `unmapped_account`, …
    pub kind: String,
    /// In words a finance admin understands.
    pub reason: String,
    pub subject: Option<RecordRef>,
    /// Candidates with their scores, or the offending values.
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReviewItem {
    pub id: ReviewId,
    #[serde(flatten)]
    pub item: NewReviewItem,
    pub status: ReviewStatus,
    pub resolution: Option<serde_json::Value>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// A named lease held by `owner` until `until` (inclusive); after that anyone may take it over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub name: String,
    pub owner: String,
    pub until: DateTime<Utc>,
    /// When the current owner first took it (renewals keep it), so a holder's tenure can be told.
    pub acquired_at: DateTime<Utc>,
}

/// A report a flow produced (a weekly reconciliation, …), kept so people can read it again later. One per
/// (flow, period): a re-run for the same period finds the report already there instead of making a second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewReport {
    pub flow: String,
    /// What sort of report (`reconciliation`).
    pub kind: String,
    /// The period it covers, as the flow names it (`2026-W47`); unique per flow.
    pub period: String,
    pub title: String,
    /// The whole report in plain text, as a person reads it.
    pub text: String,
    /// The same, structured (counts, each finding with its amounts as decimal strings and currency).
    pub body: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub id: i64,
    #[serde(flatten)]
    pub report: NewReport,
}
