//! Fault injection shared by the sandboxes: throttles, server errors, slow answers, dropped connections and expired
//! tokens, each at a configurable rate, drawn from a seeded generator so a failing run can be repeated.
//!
//! A sandbox asks [`Faults::draw`] once per API request and acts on the [`Fault`] it gets, rendering it in its own
//! system's envelope. Server errors and dropped connections can strike *after* the request was applied (the
//! `after_write_share`): the client then cannot tell whether its write happened — the case exactly-once delivery
//! has to survive. Admin routes (`GET/POST/DELETE /sandbox/admin/faults`) read and set a [`FaultConfig`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Rates are probabilities per API request, 0.0–1.0. Everything is off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Answer 429 (QuickBooks) / the system's throttle answer.
    pub rate_429: f64,
    /// Answer 500/502/503.
    pub rate_5xx: f64,
    /// Delay the answer by `slow_ms`.
    pub slow_rate: f64,
    pub slow_ms: u64,
    /// Close the connection without an answer.
    pub drop_rate: f64,
    /// Treat the caller's access token as expired (401), as if it lapsed early.
    pub token_expiry_rate: f64,
    /// Of the 5xx and dropped answers, the share that happen after the request was applied.
    pub after_write_share: f64,
    /// Seed of the generator (same seed, same sequence of faults).
    pub seed: u64,
}

impl FaultConfig {
    /// Checks every rate is a probability; names the first that is not.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("rate_429", self.rate_429),
            ("rate_5xx", self.rate_5xx),
            ("slow_rate", self.slow_rate),
            ("drop_rate", self.drop_rate),
            ("token_expiry_rate", self.token_expiry_rate),
            ("after_write_share", self.after_write_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("`{name}` must be between 0 and 1, got {v}"));
            }
        }
        Ok(())
    }
}

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Throttle,
    /// A server error; `after_write` means apply the request first, then fail.
    ServerError { status: u16, after_write: bool },
    Slow(Duration),
    Drop { after_write: bool },
    ExpireToken,
}

/// The live fault settings of one sandbox. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Faults {
    inner: Arc<Mutex<(FaultConfig, StdRng)>>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults { inner: Arc::new(Mutex::new((FaultConfig::default(), StdRng::seed_from_u64(0)))) }
    }
}

impl Faults {
    pub fn config(&self) -> FaultConfig {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    pub fn set(&self, config: FaultConfig) -> Result<(), String> {
        config.validate()?;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let seed = config.seed;
        *g = (config, StdRng::seed_from_u64(seed));
        Ok(())
    }

    pub fn clear(&self) {
        let _ = self.set(FaultConfig::default());
    }

    /// Draws the fault for one request. At most one fault strikes a request; they are tried in a fixed order.
    pub fn draw(&self) -> Fault {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (cfg, rng) = &mut *g;
        if *cfg == (FaultConfig { seed: cfg.seed, ..FaultConfig::default() }) {
            return Fault::None;
        }
        let mut hit = |rate: f64| rate > 0.0 && rng.random::<f64>() < rate;
        if hit(cfg.token_expiry_rate) {
            return Fault::ExpireToken;
        }
        if hit(cfg.rate_429) {
            return Fault::Throttle;
        }
        if hit(cfg.rate_5xx) {
            let after_write = hit(cfg.after_write_share);
            let status = [500, 502, 503][rng.random_range(0..3)];
            return Fault::ServerError { status, after_write };
        }
        if hit(cfg.drop_rate) {
            let after_write = hit(cfg.after_write_share);
            return Fault::Drop { after_write };
        }
        if hit(cfg.slow_rate) {
            return Fault::Slow(Duration::from_millis(cfg.slow_ms));
        }
        Fault::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_rates_are_validated() {
        let f = Faults::default();
        assert!((0..1000).all(|_| f.draw() == Fault::None));
        assert!(f.set(FaultConfig { rate_5xx: 1.5, ..Default::default() }).unwrap_err().contains("rate_5xx"));
    }

    #[test]
    fn rates_are_roughly_honoured_and_repeatable_by_seed() {
        let f = Faults::default();
        f.set(FaultConfig { rate_429: 0.2, seed: 7, ..Default::default() }).unwrap();
        let a: Vec<Fault> = (0..2000).map(|_| f.draw()).collect();
        let throttles = a.iter().filter(|x| **x == Fault::Throttle).count();
        assert!((300..500).contains(&throttles), "{throttles}");
        f.set(FaultConfig { rate_429: 0.2, seed: 7, ..Default::default() }).unwrap();
        let b: Vec<Fault> = (0..2000).map(|_| f.draw()).collect();
        assert_eq!(a, b);
    }
}
