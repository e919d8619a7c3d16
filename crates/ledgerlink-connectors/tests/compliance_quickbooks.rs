//! The connector compliance suite for QuickBooks, against the QuickBooks sandbox with faults switched on.

#[macro_use]
mod compliance;

use std::sync::Arc;

use chrono::TimeDelta;
use compliance::System;
use ledgerlink_connectors::auth::{MemoryTokenStore, TokenStore};
use ledgerlink_connectors::limiter::Limiter;
use ledgerlink_connectors::quickbooks::{QuickbooksConfig, QuickbooksConnector, quickbooks_policy};
use ledgerlink_connectors::retry::RetryPolicy;
use ledgerlink_connectors::{Connector, Record, http};
use ledgerlink_model::QboRealmId;
use ledgerlink_sandbox::RunningSandbox;
use ledgerlink_sandbox::quickbooks::{QuickbooksOptions, start};
use serde_json::{Value, json};

/// The limiter's minute (and the sandbox's) lasts 1.2 s here, so the limiter is checked against the sandbox's
/// own enforcement of Intuit's limits at the same pace.
/// QuickBooks' per-minute limits run this much faster than real time, in the sandbox and in the connector alike.
const SANDBOX_LIMIT_SPEEDUP: f64 = 50.0;
/// A throttle's default one-minute wait lasts 60 ms.
const RETRY_SCALE: f64 = 0.001;

struct Quickbooks {
    sandbox: RunningSandbox,
    qbo: Arc<QuickbooksConnector>,
}

impl Quickbooks {
    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) {
        let mut req = http::client().request(method, format!("{}/sandbox/admin/{path}", self.sandbox.base_url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        assert!(status.is_success(), "admin {path}: {status} {}", resp.text().await.unwrap_or_default());
    }
}

#[async_trait::async_trait]
impl System for Quickbooks {
    const NAME: &'static str = "quickbooks";
    const PAGINATION_COUNT: usize = 1_005;

    async fn start() -> Self {
        let sandbox = start(QuickbooksOptions::default()).await.unwrap();
        let store = Arc::new(MemoryTokenStore::with_tokens(
            sandbox.info_str("access_token"),
            sandbox.info_str("refresh_token"),
            TimeDelta::hours(1),
        ));
        let config = QuickbooksConfig {
            api_base: sandbox.info_str("api_base").to_string(),
            token_url: sandbox.info_str("token_url").to_string(),
            realm_id: QboRealmId::parse(sandbox.info_str("realm_id")).unwrap(),
            client_id: sandbox.info_str("client_id").to_string(),
            client_secret: sandbox.info_str("client_secret").into(),
            minor_version: 75,
        };
        let qbo = QuickbooksConnector::new(config, store as Arc<dyn TokenStore>, http::client())
            .with_limiter(Limiter::with_speedup(&quickbooks_policy(), SANDBOX_LIMIT_SPEEDUP));
        let system = Quickbooks { sandbox, qbo: Arc::new(qbo) };
        system.admin(reqwest::Method::POST, "limits", Some(json!({"time_scale": SANDBOX_LIMIT_SPEEDUP}))).await;
        system
    }

    async fn set_faults(&self, faults: Value) {
        self.admin(reqwest::Method::POST, "faults", Some(faults)).await;
    }

    async fn clear_faults(&self) {
        self.admin(reqwest::Method::DELETE, "faults", None).await;
    }

    async fn expire_tokens(&self) {
        self.admin(reqwest::Method::POST, "expire-tokens", Some(json!({}))).await;
    }

    fn refresh_count(&self) -> u64 {
        self.qbo.token_manager().refresh_count()
    }

    fn connector(&self) -> Arc<dyn Connector> {
        self.qbo.clone()
    }

    fn sample_create(&self, i: usize) -> (String, Record) {
        let record = json!({
            "DisplayName": format!("Compliance Customer {i:05}"),
            "CompanyName": "Compliance Holdings",
            "PrimaryEmailAddr": {"Address": format!("c{i}@compliance.example")},
        });
        ("Customer".into(), record.as_object().unwrap().clone())
    }

    fn unique_field(&self) -> &'static str {
        "DisplayName"
    }

    fn invalid_create(&self) -> Option<(String, Record)> {
        // No DisplayName and no name part: QBO refuses it (2020, required parameter missing).
        Some(("Customer".into(), json!({"Notes": "nameless"}).as_object().unwrap().clone()))
    }

    fn throttles_received(&self) -> Option<u64> {
        Some(self.qbo.limiter().throttled_count())
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { max_attempts: 12, ..RetryPolicy::default() }.scaled(RETRY_SCALE)
    }
}

compliance_suite!(Quickbooks);
