//! A proactive per-connection rate limiter: keeps one company/org under its published limits instead of
//! bouncing off throttles.
//!
//! Layout: [`Limiter`] is built from a [`RateLimitPolicy`] and is cheap to clone (every clone shares the same
//! state, so all connector clones of one connection draw from one allowance). [`Limiter::acquire`] (single calls)
//! and [`Limiter::acquire_batch`] (batch calls, which count against both the request and the batch allowance)
//! wait until the call may go and return a [`Permit`] that also holds one of the connection's concurrency slots
//! until it is dropped. [`Limiter::record_throttle`] counts throttles the system still answered, for benchmarks
//! and alerts.
//!
//! Why a sliding-window log rather than `governor`'s GCRA: QuickBooks counts requests per realm per minute, and
//! GCRA spreads an allowance of 500/min evenly (one call every 120 ms), which slows a burst of 30 writes that the
//! realm would accept at once. A log of the grant instants of the last `limit` calls gives exactly "at most
//! `limit` calls in any window of one minute", lets bursts through, and makes a time scale for tests trivial
//! (the window is `60 s / speedup`). Its memory is bounded by the limit (500 instants). Grants are timestamped just
//! before sending, after the concurrency slot is held, so a call waiting for a slot never ages in the window.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::RateLimitPolicy;

/// The window every per-minute limit is counted over, before scaling.
pub const WINDOW: Duration = Duration::from_secs(60);

/// How much longer the limiter's window is than the system's (2% longer: 1.2 s of slack on a minute). A grant
/// is timestamped when the call leaves, but the system counts it when it arrives; arrivals spread by network
/// latency could otherwise put one call too many into the system's window.
pub const WINDOW_MARGIN_FACTOR: f64 = 1.02;

/// "At most `limit` grants in any `period`", as the instants of the most recent grants.
#[derive(Debug)]
struct Window {
    limit: usize,
    period: Duration,
    /// Held by the caller being served, also while it waits for room, so callers are served in arrival order
    /// (tokio's mutex is fair) and a late caller cannot overtake an early one.
    turn: Mutex<()>,
    /// The grant instants; locked only for a moment, so [`Window::usage`] can read them while a caller waits.
    grants: std::sync::Mutex<VecDeque<Instant>>,
}

/// How full a window is right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUsage {
    /// Grants within the last window.
    pub used: usize,
    /// The most the window allows.
    pub limit: usize,
    /// When the oldest of those grants leaves the window (`None` when it is empty).
    pub next_room_at: Option<Instant>,
}

impl Window {
    fn new(limit: u32, period: Duration) -> Self {
        let limit = limit.max(1) as usize;
        Window {
            limit,
            period,
            turn: Mutex::new(()),
            grants: std::sync::Mutex::new(VecDeque::with_capacity(limit)),
        }
    }

    fn lock_grants(&self) -> std::sync::MutexGuard<'_, VecDeque<Instant>> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the grants that have left the window by `now`.
    fn expire(&self, grants: &mut VecDeque<Instant>, now: Instant) {
        while grants.front().is_some_and(|t| now.duration_since(*t) >= self.period) {
            grants.pop_front();
        }
    }

    /// Waits until one more grant fits, then records it; says whether it had to wait.
    async fn grant(&self) -> bool {
        let _turn = self.turn.lock().await;
        let mut waited = false;
        loop {
            let now = Instant::now();
            let oldest = {
                let mut grants = self.lock_grants();
                self.expire(&mut grants, now);
                if grants.len() < self.limit {
                    grants.push_back(now);
                    return waited;
                }
                *grants.front().expect("a full window is not empty")
            };
            // Full: the oldest grant leaves the window at `oldest + period`.
            waited = true;
            tokio::time::sleep_until(oldest + self.period).await;
        }
    }

    fn usage(&self) -> WindowUsage {
        let now = Instant::now();
        let mut grants = self.lock_grants();
        self.expire(&mut grants, now);
        WindowUsage { used: grants.len(), limit: self.limit, next_room_at: grants.front().map(|t| *t + self.period) }
    }
}

#[derive(Debug)]
struct Inner {
    requests: Option<Window>,
    batches: Option<Window>,
    slots: Option<Arc<Semaphore>>,
    speedup: f64,
    throttled: AtomicU64,
    granted: AtomicU64,
    delayed: AtomicU64,
}

/// One connection's allowance. Clones share it.
#[derive(Debug, Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

/// Leave to send one call. Holds a concurrency slot until dropped: keep it alive until the answer is read.
#[derive(Debug)]
pub struct Permit {
    _slot: Option<OwnedSemaphorePermit>,
}

impl Limiter {
    /// A limiter at real speed for `policy`.
    pub fn new(policy: &RateLimitPolicy) -> Self {
        Self::with_speedup(policy, 1.0)
    }

    /// A limiter whose clock runs `speedup` times faster than real time: its minute lasts `60 s / speedup`. The
    /// sandboxes' `time_scale` is the same number, so a test runs both at one speed (e.g. 50: a minute's allowance
    /// refills in 1.2 s). A speed-up that is not a positive number is treated as 1.
    pub fn with_speedup(policy: &RateLimitPolicy, speedup: f64) -> Self {
        let speedup = if speedup.is_finite() && speedup > 0.0 { speedup } else { 1.0 };
        let period = WINDOW.div_f64(speedup).mul_f64(WINDOW_MARGIN_FACTOR);
        Limiter {
            inner: Arc::new(Inner {
                requests: policy.requests_per_minute.map(|n| Window::new(n, period)),
                batches: policy.batch_requests_per_minute.map(|n| Window::new(n, period)),
                slots: policy.max_concurrent.map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
                speedup,
                throttled: AtomicU64::new(0),
                granted: AtomicU64::new(0),
                delayed: AtomicU64::new(0),
            }),
        }
    }

    /// A limiter that never waits (still counts throttles).
    pub fn unlimited() -> Self {
        Self::new(&RateLimitPolicy {
            requests_per_minute: None,
            max_concurrent: None,
            batch_requests_per_minute: None,
            max_batch_items: None,
            daily_budget: None,
        })
    }

    /// How much faster than real time this limiter's clock runs (1.0 = real time).
    pub fn speedup(&self) -> f64 {
        self.inner.speedup
    }

    /// How full the batch allowance is right now (`None`: this connection has no batch allowance). A batch
    /// writer reads it to decide whether a partial batch may leave or should keep filling: while the allowance
    /// is scarce, each batch call it spends should carry as many items as it can.
    pub fn batch_usage(&self) -> Option<WindowUsage> {
        self.inner.batches.as_ref().map(Window::usage)
    }

    /// How long this limiter's windows last (a minute, divided by the speed-up, plus the margin).
    pub fn window_period(&self) -> Duration {
        WINDOW.div_f64(self.inner.speedup).mul_f64(WINDOW_MARGIN_FACTOR)
    }

    /// Waits for leave to send one single call.
    pub async fn acquire(&self) -> Permit {
        self.acquire_inner(false).await
    }

    /// Waits for leave to send one batch call: it counts against the request allowance and the batch allowance.
    pub async fn acquire_batch(&self) -> Permit {
        self.acquire_inner(true).await
    }

    async fn acquire_inner(&self, batch: bool) -> Permit {
        let slot = match &self.inner.slots {
            // The semaphore is never closed, so acquiring can only fail if it were; then run unslotted.
            Some(sem) => sem.clone().acquire_owned().await.ok(),
            None => None,
        };
        let mut waited = false;
        if batch && let Some(w) = &self.inner.batches {
            waited |= w.grant().await;
        }
        if let Some(w) = &self.inner.requests {
            waited |= w.grant().await;
        }
        self.inner.granted.fetch_add(1, Ordering::Relaxed);
        if waited {
            self.inner.delayed.fetch_add(1, Ordering::Relaxed);
        }
        Permit { _slot: slot }
    }

    /// Notes that the system throttled a call despite the limiter (a 429 or its equivalent).
    pub fn record_throttle(&self) {
        self.inner.throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// Throttles received so far on this connection.
    pub fn throttled_count(&self) -> u64 {
        self.inner.throttled.load(Ordering::Relaxed)
    }

    /// Permits handed out so far.
    pub fn granted_count(&self) -> u64 {
        self.inner.granted.load(Ordering::Relaxed)
    }

    /// Permits that had to wait for the window (the limiter held the caller back).
    pub fn delayed_count(&self) -> u64 {
        self.inner.delayed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn policy(per_minute: Option<u32>, concurrent: Option<u32>, batch: Option<u32>) -> RateLimitPolicy {
        RateLimitPolicy {
            requests_per_minute: per_minute,
            max_concurrent: concurrent,
            batch_requests_per_minute: batch,
            max_batch_items: None,
            daily_budget: None,
        }
    }

    /// Asserts no window of `period` holds more than `limit` of the (sorted) instants.
    fn assert_windowed(instants: &[Instant], limit: usize, period: Duration) {
        for (i, start) in instants.iter().enumerate() {
            let inside = instants[i..].iter().take_while(|t| t.duration_since(*start) < period).count();
            assert!(inside <= limit, "{inside} grants within one window, limit {limit}");
        }
    }

    #[tokio::test]
    async fn no_window_holds_more_than_the_limit() {
        let lim = Limiter::with_speedup(&policy(Some(5), None, None), 200.0); // window 300 ms
        let period = WINDOW.mul_f64(0.005);
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..12 {
            let _p = lim.acquire().await;
            at.push(Instant::now());
        }
        assert_windowed(&at, 5, period);
        // 12 grants at 5 per window need at least two full windows.
        assert!(start.elapsed() >= period * 2, "{:?}", start.elapsed());
        assert_eq!(lim.granted_count(), 12);
        assert!(lim.delayed_count() >= 2, "at least the 6th and 11th grants wait");
    }

    #[tokio::test]
    async fn batch_calls_count_against_both_allowances() {
        let lim = Limiter::with_speedup(&policy(Some(100), None, Some(2)), 200.0);
        let start = Instant::now();
        for _ in 0..3 {
            let _p = lim.acquire_batch().await;
        }
        assert!(start.elapsed() >= WINDOW.mul_f64(0.005), "the third batch waits for the window");
        // Single calls are not held back by the batch allowance.
        let t = Instant::now();
        let _p = lim.acquire().await;
        assert!(t.elapsed() < WINDOW.mul_f64(0.005));
    }

    #[tokio::test]
    async fn batch_usage_reports_the_grants_of_the_last_window() {
        let lim = Limiter::with_speedup(&policy(Some(100), None, Some(4)), 10.0); // window 6.12 s
        assert_eq!(lim.batch_usage(), Some(WindowUsage { used: 0, limit: 4, next_room_at: None }));
        let before = Instant::now();
        drop(lim.acquire_batch().await);
        let after = Instant::now();
        drop(lim.acquire_batch().await);
        drop(lim.acquire().await); // single calls do not count against the batch allowance
        let usage = lim.batch_usage().unwrap();
        assert_eq!((usage.used, usage.limit), (2, 4));
        let room = usage.next_room_at.unwrap();
        assert!(room >= before + lim.window_period() && room <= after + lim.window_period(), "the first grant leaves first");
        assert_eq!(Limiter::unlimited().batch_usage(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn permits_cap_calls_in_flight_across_clones() {
        let lim = Limiter::with_speedup(&policy(None, Some(3), None), 100.0);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (lim, in_flight, peak) = (lim.clone(), in_flight.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let _p = lim.acquire().await;
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(lim.granted_count(), 20);
    }

    #[tokio::test]
    async fn throttles_are_counted_and_unlimited_never_waits() {
        let lim = Limiter::unlimited();
        let t = Instant::now();
        for _ in 0..1000 {
            let _p = lim.acquire().await;
        }
        assert!(t.elapsed() < Duration::from_secs(1));
        lim.clone().record_throttle();
        lim.record_throttle();
        assert_eq!(lim.throttled_count(), 2);
        assert_eq!(Limiter::with_speedup(&policy(None, None, None), -3.0).speedup(), 1.0);
    }
}
