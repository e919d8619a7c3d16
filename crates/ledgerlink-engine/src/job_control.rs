//! What a person can do to a job: retry a dead-lettered one, or replay a finished one. Both put the same job back
//! in the queue; running a flow again is safe because every create is found through its link or its key first.

use chrono::{DateTime, Utc};
use ledgerlink_store::{Job, JobId, JobStatus, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum JobControlError {
    #[error("job {0} does not exist")]
    NotFound(JobId),
    #[error("job {id} is {status}: {hint}")]
    WrongState { id: JobId, status: &'static str, hint: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

async fn load(store: &dyn Store, id: JobId) -> Result<Job, JobControlError> {
    store.get_job(id).await?.ok_or(JobControlError::NotFound(id))
}

/// Puts a dead-lettered job back in the queue, its attempts reset.
pub async fn retry(store: &dyn Store, id: JobId, now: DateTime<Utc>) -> Result<Job, JobControlError> {
    let job = load(store, id).await?;
    match job.status {
        JobStatus::Dead => {}
        JobStatus::Parked => {
            return Err(JobControlError::WrongState { id, status: "waiting for review", hint: "resolve its review item instead (`ledgerlink review resolve`)" });
        }
        JobStatus::Done => return Err(JobControlError::WrongState { id, status: "done", hint: "use replay to run a finished job again" }),
        JobStatus::Queued | JobStatus::Running => return Err(JobControlError::WrongState { id, status: job.status.as_str(), hint: "it will run (or is running) already" }),
    }
    store.requeue_job(id, now).await?;
    load(store, id).await
}

/// Runs a finished (or dead) job again.
pub async fn replay(store: &dyn Store, id: JobId, now: DateTime<Utc>) -> Result<Job, JobControlError> {
    let job = load(store, id).await?;
    match job.status {
        JobStatus::Done | JobStatus::Dead => {}
        JobStatus::Parked => {
            return Err(JobControlError::WrongState { id, status: "waiting for review", hint: "resolve its review item instead (`ledgerlink review resolve`)" });
        }
        JobStatus::Queued | JobStatus::Running => return Err(JobControlError::WrongState { id, status: job.status.as_str(), hint: "it will run (or is running) already" }),
    }
    store.requeue_job(id, now).await?;
    load(store, id).await
}
