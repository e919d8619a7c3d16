//! Decisions on review items, and how a waiting job resumes with them.
//!
//! A job that hit something the engine must not guess is parked with a review item. A person decides with
//! [`resolve`] (from the CLI or the API); the decision is stored on the item and the job is requeued. When it
//! runs again, the executor reads the decisions made on its items ([`Decisions`]) and applies them at the same
//! point: link the chosen candidate, create a new record, run again as is (data fixed at the source), or dismiss.

use chrono::{DateTime, Utc};
use ledgerlink_model::RecordRef;
use ledgerlink_store::{JobId, ReviewId, ReviewItem, ReviewStatus, Store, StoreError};
use serde::{Deserialize, Serialize};

/// What a person decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// Use this existing record (one of the candidates).
    Link { target_id: String },
    /// None of the candidates: create a new record.
    Create,
    /// The cause was fixed at the source: run the job again as it is.
    Retry,
    /// Do nothing for this record; the job ends.
    Dismiss,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("review item {0} does not exist")]
    NotFound(ReviewId),
    #[error("review item {0} is already resolved")]
    AlreadyResolved(ReviewId),
    #[error("`{decision}` does not apply to a `{kind}` review item; use {allowed}")]
    NotApplicable { decision: &'static str, kind: String, allowed: &'static str },
    #[error("`{0}` is not one of the candidates of this review item ({1})")]
    NotACandidate(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Decision {
    fn name(&self) -> &'static str {
        match self {
            Decision::Link { .. } => "link",
            Decision::Create => "create",
            Decision::Retry => "retry",
            Decision::Dismiss => "dismiss",
        }
    }
}

/// Candidate ids listed in an ambiguous-match item.
pub fn candidate_ids(item: &ReviewItem) -> Vec<String> {
    item.item.details["candidates"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Records the decision and requeues the job that waits on the item.
pub async fn resolve(store: &dyn Store, id: ReviewId, decision: &Decision, now: DateTime<Utc>) -> Result<ReviewItem, ResolveError> {
    let item = store.get_review(id).await?.ok_or(ResolveError::NotFound(id))?;
    if item.status == ReviewStatus::Resolved {
        return Err(ResolveError::AlreadyResolved(id));
    }
    let is_match = item.item.kind == "ambiguous_match";
    match decision {
        Decision::Link { target_id } => {
            if !is_match {
                return Err(ResolveError::NotApplicable { decision: decision.name(), kind: item.item.kind.clone(), allowed: "retry or dismiss" });
            }
            let ids = candidate_ids(&item);
            if !ids.contains(target_id) {
                return Err(ResolveError::NotACandidate(target_id.clone(), ids.join(", ")));
            }
        }
        Decision::Create if !is_match => {
            return Err(ResolveError::NotApplicable { decision: decision.name(), kind: item.item.kind.clone(), allowed: "retry or dismiss" });
        }
        _ => {}
    }
    let value = serde_json::to_value(decision).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let resolved = match store.resolve_review(id, &value, now).await {
        Err(StoreError::Conflict(_)) => return Err(ResolveError::AlreadyResolved(id)),
        other => other?,
    };
    if let Some(job) = item.item.job_id {
        store.requeue_job(job, now).await?;
    }
    Ok(resolved)
}

/// The decisions made on one job's review items, read when the job runs again.
#[derive(Debug, Default, Clone)]
pub struct Decisions {
    items: Vec<(Option<RecordRef>, Option<String>, Decision)>,
}

impl Decisions {
    pub async fn load(store: &dyn Store, job: Option<JobId>) -> Result<Decisions, StoreError> {
        let Some(job) = job else { return Ok(Decisions::default()) };
        let mut items = Vec::new();
        for r in store.reviews_for_job(job).await? {
            if r.status != ReviewStatus::Resolved {
                continue;
            }
            let Some(decision) = r.resolution.as_ref().and_then(|v| serde_json::from_value::<Decision>(v.clone()).ok()) else { continue };
            let step = r.item.details.get("step").and_then(|s| s.as_str()).map(str::to_string);
            items.push((r.item.subject.clone(), step, decision));
        }
        Ok(Decisions { items })
    }

    /// Whether a person dismissed this job.
    pub fn dismissed(&self) -> bool {
        self.items.iter().any(|(_, _, d)| *d == Decision::Dismiss)
    }

    /// The latest decision about matching `subject` in `step`.
    pub fn for_match(&self, subject: &RecordRef, step: &str) -> Option<&Decision> {
        self.items
            .iter()
            .rev()
            .find(|(s, st, d)| s.as_ref() == Some(subject) && st.as_deref() == Some(step) && matches!(d, Decision::Link { .. } | Decision::Create))
            .map(|(_, _, d)| d)
    }
}
