//! Retrying connector calls: exponential backoff with full jitter, honouring the system's `Retry-After`.
//!
//! Layout: [`RetryPolicy`] says how many attempts and how long to wait (with a time scale for tests);
//! [`retry`] runs any call under it, retrying only errors that [`ConnectorError::is_retryable`] says can succeed
//! later; [`create_idempotent`] is the one safe way to repeat a create: it sends the same idempotency key every
//! time and, when a failure left the outcome unknown and the system has no key replay, looks the record up
//! before creating it again.
//!
//! Why a small loop of our own rather than `backon`: the delay depends on the error (a throttle's `Retry-After`
//! must win over the computed backoff, and is honoured even above the backoff cap because the system said so),
//! the create path must run a lookup between attempts, and tests need a time scale; each of those is a custom
//! hook in `backon`, and together they are more code than the loop.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng;

use crate::{Connector, ConnectorError, FindQuery, Record};

/// How a call is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The backoff before the second attempt; doubled for each later one.
    pub base_delay: Duration,
    /// The computed backoff never exceeds this (a `Retry-After` from the system may).
    pub max_delay: Duration,
    /// Every wait is multiplied by this (1.0 = real time; tests use e.g. 0.001).
    pub time_scale: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            time_scale: 1.0,
        }
    }
}

impl RetryPolicy {
    /// The same policy with every wait multiplied by `scale`.
    pub fn scaled(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }

    /// The unscaled backoff ceiling before attempt `attempt + 1` (after `attempt` failures, 1-based):
    /// `base × 2^(attempt-1)`, capped at `max_delay`.
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The wait after the `attempt`-th failure with `error`: a random point of the backoff ceiling ("full
    /// jitter", so many callers failing together do not retry together), but never less than the system's
    /// `Retry-After`. Scaled by `time_scale`.
    pub fn delay(&self, attempt: u32, error: &ConnectorError) -> Duration {
        let ceiling = self.backoff_ceiling(attempt);
        let jittered = if ceiling.is_zero() { ceiling } else { ceiling.mul_f64(rand::rng().random_range(0.0..=1.0)) };
        let wait = match error.retry_after() {
            Some(server) => jittered.max(server),
            None => jittered,
        };
        self.scale(wait)
    }

    fn scale(&self, d: Duration) -> Duration {
        if self.time_scale.is_finite() && self.time_scale > 0.0 { d.mul_f64(self.time_scale) } else { d }
    }
}

/// Whether the retry loop tries `error` again. Everything [`ConnectorError::is_retryable`] accepts, except a
/// spent budget: that resets with the day, so retrying within seconds only spends more of nothing; the engine
/// checkpoints and stops instead.
pub fn should_retry(error: &ConnectorError) -> bool {
    error.is_retryable() && !matches!(error, ConnectorError::BudgetExhausted { .. })
}

/// Runs `call` (given the 1-based attempt number) until it succeeds, fails with an error not worth retrying, or
/// `max_attempts` are spent; the last error is returned.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, mut call: F) -> Result<T, ConnectorError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, ConnectorError>>,
{
    let max = policy.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        match call(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < max && should_retry(&e) => {
                let wait = policy.delay(attempt, &e);
                tracing::debug!(attempt, class = e.class(), wait_ms = wait.as_millis() as u64, "retrying after {e}");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Creates a record at most once however often it must be retried.
///
/// Every attempt sends the same `idempotency_key` (QuickBooks answers a repeated `requestid` with the first
/// result). For systems without such a replay, pass `lookup`: a query that finds the record this create makes
/// (e.g. by an external id). After a failure whose outcome is unknown (sent, no answer), the record is looked
/// up first and returned if exactly one matches, instead of being created again. More than one match is
/// reported as a validation error (for a person to resolve), since creating another would only make things worse.
pub async fn create_idempotent(
    connector: &dyn Connector,
    policy: &RetryPolicy,
    object: &str,
    record: &Record,
    idempotency_key: &str,
    lookup: Option<&FindQuery>,
) -> Result<Record, ConnectorError> {
    // Sticky: once any attempt may have been applied, every later attempt looks first.
    let maybe_applied = AtomicBool::new(false);
    retry(policy, |_attempt| {
        let maybe_applied = &maybe_applied;
        async move {
            if maybe_applied.load(Ordering::SeqCst)
                && let Some(query) = lookup
            {
                let found = connector.find(query).await?;
                match found.len() {
                    0 => {}
                    1 => return Ok(found.into_iter().next().expect("one row")),
                    n => {
                        return Err(ConnectorError::Validation {
                            code: "ambiguous_lookup".into(),
                            field: None,
                            message: format!(
                                "{n} {object} records match the lookup for idempotency key {idempotency_key}: \
                                 resolve the duplicates before retrying"
                            ),
                        });
                    }
                }
            }
            let result = connector.create(object, record, idempotency_key).await;
            if let Err(ConnectorError::Transient { outcome_unknown: true, .. }) = &result {
                maybe_applied.store(true, Ordering::SeqCst);
            }
            result
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient(unknown: bool) -> ConnectorError {
        ConnectorError::Transient { message: "boom".into(), outcome_unknown: unknown }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_retry_after_wins() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..Default::default()
        };
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(p.backoff_ceiling(3), Duration::from_millis(400));
        assert_eq!(p.backoff_ceiling(30), Duration::from_secs(1));
        for attempt in 1..6 {
            assert!(p.delay(attempt, &transient(false)) <= p.backoff_ceiling(attempt));
        }
        let throttled = ConnectorError::RateLimited { retry_after: Some(Duration::from_secs(7)), message: "x".into() };
        assert!(p.delay(1, &throttled) >= Duration::from_secs(7), "Retry-After is honoured above the cap");
        assert!(p.clone().scaled(0.001).delay(1, &throttled) >= Duration::from_millis(7));
        assert!(p.scaled(0.001).delay(1, &throttled) <= Duration::from_millis(8));
    }

    #[tokio::test]
    async fn retries_only_retryable_errors_and_stops_at_max_attempts() {
        let p = RetryPolicy { max_attempts: 4, base_delay: Duration::from_millis(1), ..Default::default() };
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(&p, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(transient(true)) }
        })
        .await;
        assert!(matches!(r, Err(ConnectorError::Transient { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = retry(&p, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(ConnectorError::Validation { code: "6240".into(), message: "dup".into(), field: None }) }
        })
        .await;
        assert!(matches!(r, Err(ConnectorError::Validation { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "validation errors are not retried");

        let r = retry(&p, |attempt| async move { if attempt < 3 { Err(transient(false)) } else { Ok(attempt) } }).await;
        assert_eq!(r.unwrap(), 3);

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = retry(&p, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(ConnectorError::BudgetExhausted { message: "daily".into() }) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a spent budget is not retried within the call");
    }

    #[tokio::test]
    async fn waits_at_least_the_retry_after() {
        let p = RetryPolicy { max_attempts: 2, base_delay: Duration::ZERO, ..Default::default() };
        let start = tokio::time::Instant::now();
        let r = retry(&p, |attempt| async move {
            if attempt == 1 {
                Err(ConnectorError::RateLimited {
                    retry_after: Some(Duration::from_millis(80)),
                    message: "slow".into(),
                })
            } else {
                Ok(())
            }
        })
        .await;
        assert!(r.is_ok());
        assert!(start.elapsed() >= Duration::from_millis(80), "{:?}", start.elapsed());
    }
}
