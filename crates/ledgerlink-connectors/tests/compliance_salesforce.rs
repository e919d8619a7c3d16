//! The connector compliance suite for Salesforce, against the Salesforce sandbox with faults switched on.
//!
//! Salesforce has no request id, so exactly-once creates rest on the connector's own create path (after an
//! unknown outcome it looks the record up before reporting) and on the harness's lookup by the sample's unique
//! `Name` (used when the connector's own look-up could not run, for instance because it was faulted too).

#[macro_use]
mod compliance;

use std::sync::Arc;

use chrono::TimeDelta;
use compliance::System;
use ledgerlink_connectors::auth::{MemoryTokenStore, TokenStore};
use ledgerlink_connectors::salesforce::{SalesforceConfig, SalesforceConnector};
use ledgerlink_connectors::{Connector, FindQuery, Record, http};
use ledgerlink_sandbox::RunningSandbox;
use ledgerlink_sandbox::salesforce::{SalesforceOptions, start};
use serde_json::{Value, json};

/// Rows per query batch. Salesforce's default is 2,000, and clients may ask for batches down to 200
/// (`Sforce-Query-Options: batchSize`); a smaller page keeps the pagination check quick while still crossing
/// page boundaries.
const PAGE_SIZE: usize = 500;

struct Salesforce {
    sandbox: RunningSandbox,
    sf: Arc<SalesforceConnector>,
}

impl Salesforce {
    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) {
        let mut req = http::client().request(
            method,
            format!("{}/sandbox/admin/{path}", self.sandbox.base_url),
        );
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        assert!(
            status.is_success(),
            "admin {path}: {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }
}

#[async_trait::async_trait]
impl System for Salesforce {
    const NAME: &'static str = "salesforce";
    const PAGINATION_COUNT: usize = PAGE_SIZE + 5;

    async fn start() -> Self {
        let sandbox = start(SalesforceOptions {
            query_page_size: PAGE_SIZE,
            ..Default::default()
        })
        .await
        .unwrap();
        let store = Arc::new(MemoryTokenStore::with_tokens(
            sandbox.info_str("access_token"),
            sandbox.info_str("refresh_token"),
            TimeDelta::hours(1),
        ));
        let config = SalesforceConfig {
            instance_url: sandbox.info_str("instance_url").to_string(),
            token_url: sandbox.info_str("token_url").to_string(),
            api_version: sandbox.info_str("api_version").to_string(),
            client_id: sandbox.info_str("client_id").to_string(),
            client_secret: sandbox.info_str("client_secret").into(),
        };
        let sf = SalesforceConnector::new(config, store as Arc<dyn TokenStore>, http::client());
        Salesforce {
            sandbox,
            sf: Arc::new(sf),
        }
    }

    async fn set_faults(&self, faults: Value) {
        self.admin(reqwest::Method::POST, "faults", Some(faults))
            .await;
    }

    async fn clear_faults(&self) {
        self.admin(reqwest::Method::DELETE, "faults", None).await;
    }

    async fn expire_tokens(&self) {
        self.admin(reqwest::Method::POST, "expire-sessions", Some(json!({})))
            .await;
    }

    fn refresh_count(&self) -> u64 {
        self.sf.token_manager().refresh_count()
    }

    fn connector(&self) -> Arc<dyn Connector> {
        self.sf.clone()
    }

    fn sample_create(&self, i: usize) -> (String, Record) {
        let record = json!({"Name": format!("Compliance {i:05}"), "BillingCity": "Faultville"});
        ("Account".into(), record.as_object().unwrap().clone())
    }

    fn unique_field(&self) -> &'static str {
        "Name"
    }

    fn invalid_create(&self) -> Option<(String, Record)> {
        // Name is required on Account.
        Some((
            "Account".into(),
            json!({"BillingCity": "Nowhere"})
                .as_object()
                .unwrap()
                .clone(),
        ))
    }

    fn lookup(&self, object: &str, record: &Record) -> Option<FindQuery> {
        let name = record.get("Name")?.clone();
        Some(FindQuery {
            object: object.into(),
            equals: vec![("Name".into(), name)],
            ..Default::default()
        })
    }
}

compliance_suite!(Salesforce);

/// The exactly-once check again, over more fault sequences and more creates than the shared suite runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_creates_are_exactly_once_across_fault_seeds() {
    for seed in [1, 2, 3, 4] {
        compliance::check_idempotent_creates::<Salesforce>(80, seed).await;
    }
}
