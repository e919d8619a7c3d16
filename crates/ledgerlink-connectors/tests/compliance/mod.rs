//! The connector compliance harness: the same checks for every system, run against that system's sandbox with
//! fault injection switched on.
//!
//! Layout: [`System`] is what a system provides (start its sandbox, switch faults, hand out its connector, make
//! sample records); the `check_*` functions are the checks, each generic over a `System`; [`compliance_suite!`]
//! turns them into one `#[tokio::test]` per check. [`CHAOS`] is the fault mix of the idempotency check.
//!
//! How to plug a system in (e.g. `tests/compliance_salesforce.rs`):
//!
//! ```ignore
//! #[macro_use]
//! mod compliance;
//! use compliance::{System, Fixture};
//!
//! struct Salesforce { /* the running sandbox, the token store, the connector */ }
//!
//! #[async_trait::async_trait]
//! impl System for Salesforce {
//!     const NAME: &'static str = "salesforce";
//!     const PAGINATION_COUNT: usize = 2_005;           // one page and a bit, at the system's page size
//!     async fn start() -> Self { /* start the sandbox, build the connector with a time-scaled limiter */ }
//!     async fn set_faults(&self, faults: serde_json::Value) { /* POST {base}/sandbox/admin/faults */ }
//!     async fn clear_faults(&self) { /* DELETE {base}/sandbox/admin/faults */ }
//!     async fn expire_tokens(&self) { /* make the server refuse the current access token */ }
//!     fn refresh_count(&self) -> u64 { /* the connector's token manager refresh count */ }
//!     fn connector(&self) -> Arc<dyn Connector> { … }
//!     fn sample_create(&self, i: usize) -> (String, Record) { ("Account".into(), record with Name = "Compliance {i}") }
//!     fn unique_field(&self) -> &'static str { "Name" }
//!     fn invalid_create(&self) -> Option<(String, Record)> { Some(("Account".into(), record without Name)) }
//!     fn retry_policy(&self) -> RetryPolicy { RetryPolicy::default().scaled(0.001) }
//!     fn lookup(&self, object: &str, record: &Record) -> Option<FindQuery> { Some(find by unique field) }
//!     fn throttles_received(&self) -> Option<u64> { Some(the limiter's throttled_count()) }
//! }
//!
//! compliance_suite!(Salesforce);
//! ```
//!
//! Rules the checks rely on: `sample_create(i)` must give a different value of `unique_field()` for every `i`
//! and never one the seed data already uses; the connector must be built with time scales small enough that a
//! throttle's `Retry-After` (QuickBooks' default is a minute) and the limiter's minute cost milliseconds.

#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use futures::StreamExt;
use ledgerlink_connectors::retry::{self, RetryPolicy};
use ledgerlink_connectors::{Connector, ConnectorError, FindQuery, Record};
use serde_json::{Value, json};

/// The fault mix of the idempotency check: 10% server errors, 5% throttles, 5% dropped connections and 5%
/// early token expiry, half of the server errors and drops striking after the write was applied.
pub fn chaos(seed: u64) -> Value {
    json!({
        "rate_429": 0.05,
        "rate_5xx": 0.10,
        "slow_rate": 0.0,
        "slow_ms": 0,
        "drop_rate": 0.05,
        "token_expiry_rate": 0.05,
        "after_write_share": 0.5,
        "seed": seed,
    })
}

/// Alias kept for readers of the layout paragraph.
pub const CHAOS: fn(u64) -> Value = chaos;

/// What a system provides to be checked. One value is one running sandbox with one connection to it.
#[async_trait::async_trait]
pub trait System: Sized + Send + Sync + 'static {
    /// `quickbooks`, `salesforce`, … (used in messages).
    const NAME: &'static str;
    /// How many records the pagination check creates: more than one page of the connector's own paging.
    const PAGINATION_COUNT: usize;

    /// Starts a fresh sandbox and connects to it.
    async fn start() -> Self;
    /// Switches fault injection on with a `FaultConfig` JSON (`rate_429`, `rate_5xx`, `drop_rate`,
    /// `token_expiry_rate`, `after_write_share`, `seed`, …).
    async fn set_faults(&self, faults: Value);
    /// Switches fault injection off.
    async fn clear_faults(&self);
    /// Makes the sandbox refuse the connection's current access token (as if it expired early).
    async fn expire_tokens(&self);
    /// How many token refreshes the connection has performed.
    fn refresh_count(&self) -> u64;
    /// The connection under test.
    fn connector(&self) -> Arc<dyn Connector>;
    /// The `i`-th sample record to create: `(object, record)`. Distinct `unique_field()` value per `i`.
    fn sample_create(&self, i: usize) -> (String, Record);
    /// A field whose value identifies one sample record (used to count what the sandbox holds).
    fn unique_field(&self) -> &'static str;
    /// A create the system must refuse as invalid, if the system has one.
    fn invalid_create(&self) -> Option<(String, Record)> {
        None
    }
    /// The retry policy the checks use (scale it down: the checks must run in seconds).
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { max_attempts: 12, ..RetryPolicy::default() }.scaled(0.001)
    }
    /// Throttles the connection received so far, if its limiter counts them. With faults off, the pagination
    /// check (more calls than one limit-minute allows) requires none: the limiter must keep the connection
    /// under the sandbox's enforced limits rather than bounce off them.
    fn throttles_received(&self) -> Option<u64> {
        None
    }
    /// The lookup [`retry::create_idempotent`] runs after an unknown outcome; `None` when the system replays
    /// repeated idempotency keys itself (QuickBooks `requestid`).
    fn lookup(&self, object: &str, record: &Record) -> Option<FindQuery> {
        let _ = (object, record);
        None
    }
}

/// Builds one `#[tokio::test]` per check for a [`System`] (declare the module with `#[macro_use]`).
macro_rules! compliance_suite {
    ($system:ty) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn compliance_auth_refresh_on_401() {
            compliance::check_auth_refresh::<$system>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn compliance_throttle_retry_after_is_honoured() {
            compliance::check_retry_after::<$system>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn compliance_creates_under_faults_are_exactly_once() {
            compliance::check_idempotent_creates::<$system>(40, 7).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn compliance_invalid_create_is_a_validation_error_under_faults() {
            compliance::check_invalid_create::<$system>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn compliance_pagination_returns_every_row_once() {
            compliance::check_pagination::<$system>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn compliance_change_feed_sees_every_create() {
            compliance::check_change_feed::<$system>(25).await;
        }
    };
}

/// The value of the unique field of a sample record, as text.
fn unique_value<S: System>(sys: &S, record: &Record) -> Value {
    record
        .get(sys.unique_field())
        .cloned()
        .unwrap_or_else(|| panic!("{}: sample records must carry `{}`", S::NAME, sys.unique_field()))
}

/// How many records of `object` the system holds with `field = value`.
pub async fn count_matching(connector: &dyn Connector, object: &str, field: &str, value: &Value) -> usize {
    let q = FindQuery { object: object.into(), equals: vec![(field.into(), value.clone())], ..Default::default() };
    connector.find(&q).await.unwrap_or_else(|e| panic!("counting {object} with {field} = {value}: {e}")).len()
}

/// Creates samples `range` concurrently (faults off), returning their ids in order.
pub async fn create_samples<S: System>(sys: &S, range: std::ops::Range<usize>, key_prefix: &str) -> Vec<String> {
    let connector = sys.connector();
    let policy = sys.retry_policy();
    let results: Vec<(usize, Result<Record, ConnectorError>)> = futures::stream::iter(range)
        .map(|i| {
            let connector = connector.clone();
            let policy = policy.clone();
            let (object, record) = sys.sample_create(i);
            let key = format!("{key_prefix}-{i}");
            async move {
                let r = retry::create_idempotent(connector.as_ref(), &policy, &object, &record, &key, None).await;
                (i, r)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut results = results;
    results.sort_by_key(|(i, _)| *i);
    results
        .into_iter()
        .map(|(i, r)| {
            let rec = r.unwrap_or_else(|e| panic!("{}: creating sample {i} failed: {e}", S::NAME));
            connector.record_id(&rec).unwrap_or_else(|| panic!("{}: created sample {i} has no id: {rec:?}", S::NAME))
        })
        .collect()
}

/// (a) A refused access token is refreshed once and the call succeeds.
pub async fn check_auth_refresh<S: System>() {
    let sys = S::start().await;
    let connector = sys.connector();
    connector.test_connection().await.unwrap_or_else(|e| panic!("{}: first call failed: {e}", S::NAME));
    let before = sys.refresh_count();
    sys.expire_tokens().await;
    connector
        .test_connection()
        .await
        .unwrap_or_else(|e| panic!("{}: the call after the token expired was not recovered: {e}", S::NAME));
    assert_eq!(sys.refresh_count(), before + 1, "{}: exactly one refresh after a 401", S::NAME);
    // The new token works without another refresh.
    connector.test_connection().await.unwrap();
    assert_eq!(sys.refresh_count(), before + 1, "{}: the refreshed token is reused", S::NAME);
}

/// (b) A throttle is classified as `RateLimited` with a delay, and the retry helper waits at least that long
/// before the next attempt.
pub async fn check_retry_after<S: System>() {
    let sys = S::start().await;
    let connector = sys.connector();
    sys.set_faults(json!({"rate_429": 1.0, "seed": 1})).await;
    let err = connector.test_connection().await.expect_err("every call is throttled");
    let ConnectorError::RateLimited { retry_after: Some(server_delay), .. } = err.clone() else {
        panic!("{}: a throttle must be RateLimited with a delay, got {err:?}", S::NAME);
    };
    let policy = RetryPolicy { max_attempts: 3, base_delay: Duration::ZERO, ..sys.retry_policy() };
    let expected_wait = server_delay.mul_f64(policy.time_scale);
    let mut attempts: Vec<Instant> = Vec::new();
    let result = retry::retry(&policy, |attempt| {
        attempts.push(Instant::now());
        let connector = connector.clone();
        let sys = &sys;
        async move {
            let r = connector.test_connection().await;
            if attempt == 1 {
                // The throttle is lifted only after the first attempt has been refused.
                sys.clear_faults().await;
            }
            r
        }
    })
    .await;
    result.unwrap_or_else(|e| panic!("{}: the retry after the throttle failed: {e}", S::NAME));
    assert_eq!(attempts.len(), 2, "{}: one throttled attempt, one success", S::NAME);
    let gap = attempts[1].duration_since(attempts[0]);
    assert!(gap >= expected_wait, "{}: waited {gap:?}, the system asked for {expected_wait:?} (scaled)", S::NAME);
}

/// (c) Under [`chaos`], `n` concurrent logical creates (each retried with one idempotency key) all end done or
/// with a retryable error class, and the sandbox then holds exactly one record per logical create; the ones
/// that ran out of attempts are completed (same key, faults off) without making a second record.
pub async fn check_idempotent_creates<S: System>(n: usize, seed: u64) {
    let sys = S::start().await;
    let connector = sys.connector();
    let policy = sys.retry_policy();
    sys.set_faults(chaos(seed)).await;
    let outcomes: Vec<(usize, Result<Record, ConnectorError>)> = futures::stream::iter(0..n)
        .map(|i| {
            let connector = connector.clone();
            let policy = policy.clone();
            let (object, record) = sys.sample_create(i);
            let lookup = sys.lookup(&object, &record);
            async move {
                let key = format!("compliance-create-{i}");
                let r = retry::create_idempotent(connector.as_ref(), &policy, &object, &record, &key, lookup.as_ref())
                    .await;
                (i, r)
            }
        })
        .buffer_unordered(6)
        .collect()
        .await;
    sys.clear_faults().await;

    let mut failed = Vec::new();
    for (i, outcome) in &outcomes {
        match outcome {
            Ok(rec) => assert!(connector.record_id(rec).is_some(), "{}: create {i} returned no id", S::NAME),
            Err(e) => {
                assert!(
                    matches!(e.class(), "rate_limited" | "transient" | "unauthorized"),
                    "{}: create {i} ended with the wrong error class {}: {e}",
                    S::NAME,
                    e.class()
                );
                failed.push(*i);
            }
        }
    }
    // Finish the ones that ran out of attempts, exactly as the engine would: same key, later.
    for i in &failed {
        let (object, record) = sys.sample_create(*i);
        let lookup = sys.lookup(&object, &record);
        retry::create_idempotent(
            connector.as_ref(),
            &policy,
            &object,
            &record,
            &format!("compliance-create-{i}"),
            lookup.as_ref(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: completing create {i} without faults failed: {e}", S::NAME));
    }
    for i in 0..n {
        let (object, record) = sys.sample_create(i);
        let value = unique_value(&sys, &record);
        let held = count_matching(connector.as_ref(), &object, sys.unique_field(), &value).await;
        assert_eq!(held, 1, "{}: logical create {i} ({value}) left {held} records", S::NAME);
    }
    // Where the system replays idempotency keys, the same key again returns the same record.
    let (object, record) = sys.sample_create(0);
    if sys.lookup(&object, &record).is_none() {
        let again = connector
            .create(&object, &record, "compliance-create-0")
            .await
            .unwrap_or_else(|e| panic!("{}: replaying create 0: {e}", S::NAME));
        let value = unique_value(&sys, &record);
        let held = connector
            .find(&FindQuery {
                object: object.clone(),
                equals: vec![(sys.unique_field().into(), value)],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(held.len(), 1, "{}: a replayed key made a second record", S::NAME);
        assert_eq!(connector.record_id(&again), connector.record_id(&held[0]), "{}: replayed key", S::NAME);
    }
}

/// An invalid create ends as a `Validation` error even with faults on (it is retried through the transient
/// faults, then refused for what it is, and never retried after that).
pub async fn check_invalid_create<S: System>() {
    let sys = S::start().await;
    let Some((object, record)) = sys.invalid_create() else {
        return;
    };
    sys.set_faults(chaos(11)).await;
    let connector = sys.connector();
    let policy = RetryPolicy { max_attempts: 30, ..sys.retry_policy() };
    let err = retry::create_idempotent(connector.as_ref(), &policy, &object, &record, "compliance-invalid", None)
        .await
        .expect_err("the invalid record must be refused");
    sys.clear_faults().await;
    assert_eq!(err.class(), "validation", "{}: {err}", S::NAME);
}

/// (d) Reading more than one page returns every row exactly once, and a limit is respected.
pub async fn check_pagination<S: System>() {
    let sys = S::start().await;
    let connector = sys.connector();
    let n = S::PAGINATION_COUNT;
    let ids = create_samples(&sys, 0..n, "compliance-page").await;
    let (object, _) = sys.sample_create(0);
    let all = connector
        .find(&FindQuery { object: object.clone(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{}: reading every {object}: {e}", S::NAME));
    let seen: Vec<String> = all.iter().filter_map(|r| connector.record_id(r)).collect();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "{}: a row appeared on two pages", S::NAME);
    for id in &ids {
        assert!(unique.contains(id), "{}: created {object} {id} is missing from the pages", S::NAME);
    }
    let limited = connector
        .find(&FindQuery { object: object.clone(), limit: Some((n - 1) as u32), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(limited.len(), n - 1, "{}: the limit must be respected across pages", S::NAME);
    if let Some(throttles) = sys.throttles_received() {
        assert_eq!(throttles, 0, "{}: the limiter let calls run into the system's throttle", S::NAME);
    }
}

/// (e) The change feed from before a set of creates sees every one of them, oldest first, and nothing is seen
/// from a point after them.
pub async fn check_change_feed<S: System>(n: usize) {
    let sys = S::start().await;
    let connector = sys.connector();
    let before = Utc::now() - TimeDelta::seconds(2);
    let ids = create_samples(&sys, 0..n, "compliance-feed").await;
    let (object, _) = sys.sample_create(0);
    let changes = connector
        .changes_since(&object, before, &[sys.unique_field().to_string()])
        .await
        .unwrap_or_else(|e| panic!("{}: reading changes of {object}: {e}", S::NAME));
    let seen: HashSet<String> = changes.records.iter().filter_map(|r| connector.record_id(r)).collect();
    for id in &ids {
        assert!(seen.contains(id), "{}: the change feed missed created {object} {id}", S::NAME);
    }
    let stamps: Vec<_> = changes.records.iter().map(|r| connector.change_timestamp(r)).collect();
    assert!(stamps.iter().all(Option::is_some), "{}: every change carries its timestamp", S::NAME);
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{}: changes must come oldest first", S::NAME);
    let later = connector.changes_since(&object, Utc::now() + TimeDelta::hours(1), &[]).await.unwrap();
    assert!(later.records.is_empty(), "{}: nothing changed in the future", S::NAME);
}
