//! Counters of what the engine did in this process, for progress lines, the summary and `/api/v1/status`.
//! The durable truth is in the store (audit log, links); these are cheap live figures.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Stats {
    pub changes_seen: AtomicU64,
    pub jobs_enqueued: AtomicU64,
    pub jobs_done: AtomicU64,
    pub jobs_retried: AtomicU64,
    pub jobs_dead: AtomicU64,
    pub jobs_parked: AtomicU64,
    pub records_created: AtomicU64,
    pub records_updated: AtomicU64,
    /// Records deleted by `delete` steps (an opportunity product whose estimate line was removed).
    pub records_deleted: AtomicU64,
    pub records_matched: AtomicU64,
    pub invoices_created: AtomicU64,
    pub customers_created: AtomicU64,
    pub customers_matched: AtomicU64,
    /// A create that did not happen because what it would create already exists (the link table or a completed
    /// write intent said so): a re-closed deal, a re-delivered change, a retry after a crash.
    pub duplicates_prevented: AtomicU64,
    /// Updates not sent because the target already held those values.
    pub writes_skipped_unchanged: AtomicU64,
    /// Changes whose job already existed (our own write-back read back, or a re-read after a restart).
    pub changes_already_handled: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub changes_seen: u64,
    pub jobs_enqueued: u64,
    pub jobs_done: u64,
    pub jobs_retried: u64,
    pub jobs_dead: u64,
    pub jobs_parked: u64,
    pub records_created: u64,
    pub records_updated: u64,
    pub records_deleted: u64,
    pub records_matched: u64,
    pub invoices_created: u64,
    pub customers_created: u64,
    pub customers_matched: u64,
    pub duplicates_prevented: u64,
    pub writes_skipped_unchanged: u64,
    pub changes_already_handled: u64,
    pub errors: u64,
}

impl Stats {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            changes_seen: g(&self.changes_seen),
            jobs_enqueued: g(&self.jobs_enqueued),
            jobs_done: g(&self.jobs_done),
            jobs_retried: g(&self.jobs_retried),
            jobs_dead: g(&self.jobs_dead),
            jobs_parked: g(&self.jobs_parked),
            records_created: g(&self.records_created),
            records_updated: g(&self.records_updated),
            records_deleted: g(&self.records_deleted),
            records_matched: g(&self.records_matched),
            invoices_created: g(&self.invoices_created),
            customers_created: g(&self.customers_created),
            customers_matched: g(&self.customers_matched),
            duplicates_prevented: g(&self.duplicates_prevented),
            writes_skipped_unchanged: g(&self.writes_skipped_unchanged),
            changes_already_handled: g(&self.changes_already_handled),
            errors: g(&self.errors),
        }
    }
}
