//! The daily API budget of a Salesforce org, watched from every answer.
//!
//! Layout: [`BudgetGuard`] keeps the last `Sforce-Limit-Info` usage (`api-usage=used/max`) and refuses new calls
//! with [`ConnectorError::BudgetExhausted`] once fewer than a [`BudgetReserve`] remain. It fails fast instead of
//! sleeping: the allowance is a rolling 24-hour window, so waiting inside a call would hold a sync for hours; the
//! engine checkpoints on that error and resumes later. After [`BudgetGuard::recheck_after`] one probe call is let
//! through, so the guard learns when the org has calls again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::ConnectorError;

/// How many calls to keep back for everything else that uses the org (people, other integrations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetReserve {
    /// A share of the daily maximum, in percent (0–100).
    Percent(u8),
    /// A fixed number of calls.
    Calls(u64),
}

impl Default for BudgetReserve {
    fn default() -> Self {
        BudgetReserve::Percent(5)
    }
}

impl BudgetReserve {
    /// The reserve in calls for a daily maximum of `max`.
    pub fn calls(&self, max: u64) -> u64 {
        match *self {
            BudgetReserve::Percent(p) => max.saturating_mul(u64::from(p.min(100))) / 100,
            BudgetReserve::Calls(n) => n,
        }
    }
}

/// How long a guard that has tripped refuses calls before letting one probe through.
pub const DEFAULT_RECHECK_AFTER: Duration = Duration::from_secs(15 * 60);

/// Watches `Sforce-Limit-Info` and stops calls before the daily budget is spent.
#[derive(Debug)]
pub struct BudgetGuard {
    used: AtomicU64,
    /// 0 until an answer has said what the maximum is.
    max: AtomicU64,
    reserve: BudgetReserve,
    recheck_after: Duration,
    /// When the usage was last learned from an answer (or a probe was last let through).
    observed_at: Mutex<Option<Instant>>,
}

impl Default for BudgetGuard {
    fn default() -> Self {
        BudgetGuard::new(BudgetReserve::default(), DEFAULT_RECHECK_AFTER)
    }
}

impl BudgetGuard {
    pub fn new(reserve: BudgetReserve, recheck_after: Duration) -> Self {
        BudgetGuard {
            used: AtomicU64::new(0),
            max: AtomicU64::new(0),
            reserve,
            recheck_after,
            observed_at: Mutex::new(None),
        }
    }

    pub fn reserve(&self) -> BudgetReserve {
        self.reserve
    }

    pub fn recheck_after(&self) -> Duration {
        self.recheck_after
    }

    /// Records the usage an answer reported.
    pub fn observe(&self, used: u64, max: u64) {
        self.used.store(used, Ordering::Relaxed);
        self.max.store(max, Ordering::Relaxed);
        *self.observed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// The last usage seen: (calls used, daily maximum).
    pub fn usage(&self) -> Option<(u64, u64)> {
        let max = self.max.load(Ordering::Relaxed);
        (max > 0).then(|| (self.used.load(Ordering::Relaxed), max))
    }

    /// Calls left before the maximum, when known.
    pub fn remaining(&self) -> Option<u64> {
        self.usage().map(|(used, max)| max.saturating_sub(used))
    }

    /// Whether a call may be made now. Refuses, without waiting, when fewer calls than the reserve remain and
    /// the usage was learned less than [`Self::recheck_after`] ago; otherwise lets the call through (a call
    /// after that interval is the probe that learns whether the budget has recovered).
    pub fn check(&self) -> Result<(), ConnectorError> {
        let Some((used, max)) = self.usage() else {
            return Ok(());
        };
        let remaining = max.saturating_sub(used);
        let reserve = self.reserve.calls(max);
        if remaining >= reserve && remaining > 0 {
            return Ok(());
        }
        let mut observed = self.observed_at.lock().unwrap_or_else(|e| e.into_inner());
        if observed.is_none_or(|at| at.elapsed() >= self.recheck_after) {
            // One probe per interval: the next callers wait for its answer to update the usage.
            *observed = Some(Instant::now());
            return Ok(());
        }
        Err(ConnectorError::BudgetExhausted {
            message: format!(
                "{remaining} of the org's {max} daily API calls remain, below the reserve of {reserve}: stopping \
                 until the budget recovers (checked again after {} s)",
                self.recheck_after.as_secs()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_in_calls() {
        assert_eq!(BudgetReserve::default().calls(100_000), 5_000);
        assert_eq!(BudgetReserve::Percent(10).calls(15), 1);
        assert_eq!(BudgetReserve::Percent(200).calls(50), 50);
        assert_eq!(BudgetReserve::Calls(7).calls(100), 7);
    }

    #[test]
    fn unknown_usage_lets_calls_through() {
        let g = BudgetGuard::default();
        assert!(g.check().is_ok());
        assert_eq!(g.usage(), None);
    }

    #[test]
    fn trips_below_the_reserve_then_probes_after_the_interval() {
        let g = BudgetGuard::new(BudgetReserve::Percent(5), Duration::from_secs(3600));
        g.observe(94, 100);
        assert!(g.check().is_ok());
        g.observe(95, 100);
        assert!(g.check().is_ok(), "exactly the reserve left is still allowed");
        g.observe(96, 100);
        match g.check().unwrap_err() {
            ConnectorError::BudgetExhausted { message } => {
                assert!(message.contains("4 of the org's 100"), "{message}");
                assert!(message.contains("reserve of 5"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(g.remaining(), Some(4));

        let g = BudgetGuard::new(BudgetReserve::Calls(0), Duration::ZERO);
        g.observe(100, 100);
        assert!(g.check().is_ok(), "a probe goes through once the interval has passed");
    }

    #[test]
    fn a_spent_budget_trips_even_with_no_reserve() {
        let g = BudgetGuard::new(BudgetReserve::Calls(0), Duration::from_secs(3600));
        g.observe(100, 100);
        assert!(matches!(g.check(), Err(ConnectorError::BudgetExhausted { .. })));
    }
}
