//! Intuit's request limits, enforced per realm: requests per minute, concurrent requests and batch calls per minute.
//!
//! Layout: [`QuickbooksLimits`] is the configuration (on by default at Intuit's numbers: 500 requests/min,
//! 10 concurrent, 120 batch calls/min); [`Limiter::acquire`] admits one API request or refuses it, and the
//! returned [`Permit`] frees the concurrency slot when the answer is done. Windows are *sliding*: a request is
//! admitted when fewer than `per_minute` requests were admitted in the last minute. A "minute" is real time divided
//! by `time_scale` (60 → one second) so benchmarks run fast. A refusal is answered 429 with fault code 3001 and,
//! like Intuit, without a `Retry-After` header: clients must back off on their own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The limits in force. `POST /sandbox/admin/limits` replaces the fields it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuickbooksLimits {
    pub enabled: bool,
    /// Requests per minute per realm, batch calls included (Intuit: 500).
    pub per_minute: u32,
    /// Requests in flight per realm (Intuit: 10).
    pub concurrent: u32,
    /// Batch calls per minute per realm (Intuit: 120).
    pub batch_per_minute: u32,
    /// How much faster than real time a limit "minute" passes (1 = real time).
    pub time_scale: f64,
}

impl Default for QuickbooksLimits {
    fn default() -> Self {
        QuickbooksLimits {
            enabled: true,
            per_minute: 500,
            concurrent: 10,
            batch_per_minute: 120,
            time_scale: 1.0,
        }
    }
}

impl QuickbooksLimits {
    /// Names the first field that makes no sense.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(format!(
                "`time_scale` must be a positive number, got {}",
                self.time_scale
            ));
        }
        for (name, v) in [
            ("per_minute", self.per_minute),
            ("concurrent", self.concurrent),
            ("batch_per_minute", self.batch_per_minute),
        ] {
            if v == 0 {
                return Err(format!(
                    "`{name}` must be at least 1 (turn limits off with \"enabled\": false)"
                ));
            }
        }
        Ok(())
    }

    fn window(&self) -> Duration {
        Duration::from_secs(60).div_f64(self.time_scale)
    }
}

#[derive(Debug, Default)]
struct Usage {
    requests: VecDeque<Instant>,
    batches: VecDeque<Instant>,
    in_flight: u32,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    PerMinute,
    Concurrent,
    BatchPerMinute,
}

/// The limiter of one sandbox. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Limiter {
    config: Arc<Mutex<QuickbooksLimits>>,
    usage: Arc<Mutex<HashMap<String, Usage>>>,
}

/// An admitted request; dropping it frees its concurrency slot.
#[derive(Debug)]
pub struct Permit {
    usage: Option<(Arc<Mutex<HashMap<String, Usage>>>, String)>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((usage, realm)) = self.usage.take() {
            let mut g = usage.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(u) = g.get_mut(&realm) {
                u.in_flight = u.in_flight.saturating_sub(1);
            }
        }
    }
}

impl Limiter {
    pub fn new(config: QuickbooksLimits) -> Self {
        Limiter {
            config: Arc::new(Mutex::new(config)),
            usage: Arc::default(),
        }
    }

    pub fn config(&self) -> QuickbooksLimits {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the configuration and forgets past usage (a new regime starts now).
    pub fn set(&self, config: QuickbooksLimits) -> Result<(), String> {
        config.validate()?;
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        for u in usage.values_mut() {
            u.requests.clear();
            u.batches.clear();
        }
        Ok(())
    }

    /// Admits one request to `realm` (a batch call when `batch`) or says which limit refuses it.
    pub fn acquire(&self, realm: &str, batch: bool) -> Result<Permit, Refusal> {
        let cfg = self.config();
        if !cfg.enabled {
            return Ok(Permit { usage: None });
        }
        let now = Instant::now();
        let window = cfg.window();
        let mut g = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let u = g.entry(realm.to_string()).or_default();
        for q in [&mut u.requests, &mut u.batches] {
            while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                q.pop_front();
            }
        }
        if u.in_flight >= cfg.concurrent {
            return Err(Refusal::Concurrent);
        }
        if u.requests.len() >= cfg.per_minute as usize {
            return Err(Refusal::PerMinute);
        }
        if batch && u.batches.len() >= cfg.batch_per_minute as usize {
            return Err(Refusal::BatchPerMinute);
        }
        u.requests.push_back(now);
        if batch {
            u.batches.push_back(now);
        }
        u.in_flight += 1;
        Ok(Permit {
            usage: Some((self.usage.clone(), realm.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_minute_concurrent_and_batch_limits() {
        let l = Limiter::new(QuickbooksLimits {
            per_minute: 3,
            concurrent: 2,
            batch_per_minute: 1,
            ..Default::default()
        });
        let a = l.acquire("r", false).unwrap();
        let b = l.acquire("r", true).unwrap();
        assert_eq!(l.acquire("r", false).unwrap_err(), Refusal::Concurrent);
        assert!(l.acquire("other", false).is_ok(), "limits are per realm");
        drop(a);
        assert_eq!(l.acquire("r", true).unwrap_err(), Refusal::BatchPerMinute);
        let _c = l.acquire("r", false).unwrap();
        drop(b);
        assert_eq!(l.acquire("r", false).unwrap_err(), Refusal::PerMinute);
        assert!(
            l.set(QuickbooksLimits {
                time_scale: 0.0,
                ..Default::default()
            })
            .unwrap_err()
            .contains("time_scale")
        );
    }
}
