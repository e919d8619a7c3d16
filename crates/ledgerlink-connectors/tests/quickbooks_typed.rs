//! Typed calls, the batch writer, change data capture and webhooks of the QuickBooks connector, against the
//! QuickBooks sandbox over loopback HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use futures::StreamExt;
use ledgerlink_connectors::auth::{MemoryTokenStore, TokenStore};
use ledgerlink_connectors::limiter::Limiter;
use ledgerlink_connectors::quickbooks::batch::BatchWriter;
use ledgerlink_connectors::quickbooks::model::*;
use ledgerlink_connectors::quickbooks::{
    QueryBuilder, QuickbooksConfig, QuickbooksConnector, quickbooks_policy, webhook,
};
use ledgerlink_connectors::retry::RetryPolicy;
use ledgerlink_connectors::{ConnectorError, Record, http};
use ledgerlink_model::QboRealmId;
use ledgerlink_sandbox::RunningSandbox;
use ledgerlink_sandbox::quickbooks::{QuickbooksOptions, start};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// QuickBooks' per-minute limits run this much faster than real time, in the sandbox and in the connector alike.
const SANDBOX_LIMIT_SPEEDUP: f64 = 50.0;

struct Fixture {
    sandbox: RunningSandbox,
    qbo: Arc<QuickbooksConnector>,
}

async fn fixture() -> Fixture {
    let sandbox = start(QuickbooksOptions::default()).await.unwrap();
    let qbo = connector(&sandbox, Limiter::with_speedup(&quickbooks_policy(), SANDBOX_LIMIT_SPEEDUP));
    let f = Fixture { sandbox, qbo: Arc::new(qbo) };
    f.admin(reqwest::Method::POST, "limits", Some(json!({"time_scale": SANDBOX_LIMIT_SPEEDUP}))).await;
    f
}

/// A connector to the sandbox's company that draws on `limiter`.
fn connector(sandbox: &RunningSandbox, limiter: Limiter) -> QuickbooksConnector {
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
    QuickbooksConnector::new(config, store as Arc<dyn TokenStore>, http::client()).with_limiter(limiter)
}

impl Fixture {
    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = http::client().request(method, format!("{}/sandbox/admin/{path}", self.sandbox.base_url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        assert!(resp.status().is_success(), "admin {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    async fn batch_calls(&self) -> usize {
        let calls = self.admin(reqwest::Method::GET, "calls", None).await;
        calls.as_array().unwrap().iter().filter(|c| c["path"].as_str().is_some_and(|p| p.ends_with("/batch"))).count()
    }
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

async fn first<T: QboEntity>(f: &Fixture) -> T {
    let q = QueryBuilder::new(T::NAME).unwrap();
    f.qbo.query_entities::<T>(&q, Some(1)).await.unwrap().into_iter().next().expect("seeded")
}

#[tokio::test]
async fn typed_customer_create_read_update_query_and_deactivate_only() {
    let f = fixture().await;
    let new = Customer {
        display_name: Some("Typed O'Neil".into()),
        primary_email_addr: Some(EmailAddress { address: "typed@oneil.example".into() }),
        ..Default::default()
    };
    let created = f.qbo.create_entity(&new, "typed-customer-1").await.unwrap();
    let id = created.id.clone().unwrap();
    assert_eq!(created.sync_token.as_deref(), Some("0"));
    let again = f.qbo.create_entity(&new, "typed-customer-1").await.unwrap();
    assert_eq!(again.id, created.id, "the same key replays the first create");

    let mut read: Customer = f.qbo.read_entity(&id).await.unwrap().unwrap();
    assert_eq!(read.display_name.as_deref(), Some("Typed O'Neil"));
    assert!(!read.extra.is_empty(), "fields the model does not name are kept: {:?}", read.extra.keys());
    assert!(f.qbo.read_entity::<Customer>("987654").await.unwrap().is_none());

    // Read-modify-write of the whole value, unknown fields included.
    read.notes = Some("VIP".into());
    let updated = f.qbo.update_sparse(&read).await.unwrap();
    assert_eq!(updated.notes.as_deref(), Some("VIP"));
    assert_eq!(updated.display_name.as_deref(), Some("Typed O'Neil"));
    assert_eq!(updated.sync_token.as_deref(), Some("1"));

    // A stale SyncToken is a conflict.
    let stale =
        Customer { id: Some(id.clone()), sync_token: Some("0".into()), notes: Some("x".into()), ..Default::default() };
    assert!(matches!(f.qbo.update_sparse(&stale).await, Err(ConnectorError::Conflict { .. })));

    let q = QueryBuilder::new("Customer").unwrap().eq("DisplayName", &json!("Typed O'Neil")).unwrap();
    let found: Vec<Customer> = f.qbo.query_entities(&q, None).await.unwrap();
    assert_eq!(found.len(), 1);
    assert!(f.qbo.query_entities::<Invoice>(&q, None).await.is_err(), "a Customer query cannot yield invoices");

    let e = f.qbo.delete_entity::<Customer>(&id, "1").await.unwrap_err();
    assert!(e.to_string().contains("inactive"), "{e}");
    assert!(f.qbo.create_entity(&CompanyInfo::default(), "k").await.is_err());
}

#[tokio::test]
async fn typed_invoice_payment_void_and_delete_with_exact_amounts() {
    let f = fixture().await;
    let customer: Customer = first(&f).await;
    let item: Item = first(&f).await;
    let item_ref = Ref::to(item.id.clone().unwrap());
    let invoice = Invoice {
        customer_ref: Some(Ref::to(customer.id.clone().unwrap())),
        line: Some(vec![
            Line::sales_item(item_ref.clone(), d("3"), d("17.991"), d("53.97")),
            Line::sales_item(item_ref.clone(), d("2"), d("1275"), d("2550.00")),
        ]),
        ..Default::default()
    };
    let inv = f.qbo.create_entity(&invoice, "typed-invoice-1").await.unwrap();
    assert_eq!(inv.total_amt, Some(d("2603.97")));
    assert_eq!(inv.balance, Some(d("2603.97")));

    let payment = Payment {
        customer_ref: invoice.customer_ref.clone(),
        total_amt: Some(d("1000.00")),
        line: Some(vec![Line::applied_to(inv.id.as_deref().unwrap(), "Invoice", d("600.01"))]),
        ..Default::default()
    };
    let pay = f.qbo.create_entity(&payment, "typed-payment-1").await.unwrap();
    assert_eq!(pay.unapplied_amt, Some(d("399.99")));
    let inv_now: Invoice = f.qbo.read_entity(inv.id.as_deref().unwrap()).await.unwrap().unwrap();
    assert_eq!(inv_now.balance, Some(d("2003.96")));

    let voided: Payment =
        f.qbo.void_entity(pay.id.as_deref().unwrap(), pay.sync_token.as_deref().unwrap()).await.unwrap();
    assert_eq!(voided.total_amt, Some(Decimal::ZERO));

    let inv_now: Invoice = f.qbo.read_entity(inv.id.as_deref().unwrap()).await.unwrap().unwrap();
    let voided_inv: Invoice =
        f.qbo.void_entity(inv.id.as_deref().unwrap(), inv_now.sync_token.as_deref().unwrap()).await.unwrap();
    assert_eq!(voided_inv.balance, Some(Decimal::ZERO));
    assert!(f.qbo.void_entity::<Bill>("1", "0").await.unwrap_err().to_string().contains("cannot be voided"));

    let second = f.qbo.create_entity(&invoice, "typed-invoice-2").await.unwrap();
    f.qbo.delete_entity::<Invoice>(second.id.as_deref().unwrap(), "0").await.unwrap();
    assert!(f.qbo.read_entity::<Invoice>(second.id.as_deref().unwrap()).await.unwrap().is_none());

    let info: CompanyInfo = f.qbo.read_entity(f.qbo.realm_id()).await.unwrap().unwrap();
    assert_eq!(info.company_name.as_deref(), Some("Juniper & Finch Landscape Design"));
    let prefs: Preferences = f.qbo.read_entity("").await.unwrap().unwrap();
    assert!(prefs.currency_prefs.is_some());
}

#[tokio::test]
async fn cdc_separates_deleted_rows_and_refuses_old_starts() {
    let f = fixture().await;
    let since = Utc::now() - TimeDelta::seconds(2);
    let customer: Customer = first(&f).await;
    let item: Item = first(&f).await;
    let c = f
        .qbo
        .create_entity(&Customer { display_name: Some("Feed Customer".into()), ..Default::default() }, "feed-c")
        .await
        .unwrap();
    let invoice = Invoice {
        customer_ref: Some(Ref::to(customer.id.unwrap())),
        line: Some(vec![Line::sales_item(Ref::to(item.id.unwrap()), d("1"), d("10"), d("10"))]),
        ..Default::default()
    };
    let inv = f.qbo.create_entity(&invoice, "feed-inv").await.unwrap();
    f.qbo.delete_entity::<Invoice>(inv.id.as_deref().unwrap(), "0").await.unwrap();

    let changes = f.qbo.cdc(&["Customer", "Invoice"], since).await.unwrap();
    let customers = changes.of("Customer");
    assert!(customers.live.iter().any(|r| r["Id"] == json!(c.id.clone().unwrap())));
    let invoices = changes.of("Invoice");
    assert!(invoices.deleted.iter().any(|d| Some(&d.id) == inv.id.as_ref()), "{invoices:?}");
    assert!(!invoices.live.iter().any(|r| r["Id"] == json!(inv.id.clone().unwrap())), "a deleted row is not live");

    let e = f.qbo.cdc(&["Customer"], Utc::now() - TimeDelta::days(31)).await.unwrap_err();
    assert!(e.to_string().contains("30 days"), "{e}");
    assert!(f.qbo.cdc(&["TimeActivity"], since).await.is_err());
}

fn customer_body(name: &str) -> Record {
    json!({"DisplayName": name}).as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_writer_coalesces_100_creates_into_at_most_4_calls() {
    let f = fixture().await;
    let writer = BatchWriter::new(f.qbo.clone(), Duration::from_millis(50), RetryPolicy::default().scaled(0.001));
    let before = f.batch_calls().await;
    let results: Vec<Result<Record, ConnectorError>> = futures::stream::iter(0..100)
        .map(|i| {
            let w = writer.clone();
            async move {
                w.create("Customer", customer_body(&format!("Batch Customer {i:03}")), &format!("batch-{i}")).await
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    let mut ids: Vec<String> = results.into_iter().map(|r| r.unwrap()["Id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    let calls = f.batch_calls().await - before;
    assert!((1..=4).contains(&calls), "{calls} batch calls for 100 creates");
    assert_eq!(writer.batch_calls() as usize, calls);

    // Per-item faults reach their own caller only: a duplicate name fails, its neighbour succeeds.
    let (dup, fresh) = tokio::join!(
        writer.create("Customer", customer_body("Batch Customer 000"), "batch-dup"),
        writer.create("Customer", customer_body("Batch Customer Fresh"), "batch-fresh"),
    );
    assert!(matches!(dup, Err(ConnectorError::Validation { ref code, .. }) if code == "6240"), "{dup:?}");
    assert!(fresh.is_ok());
}

/// Sends 40 creates 5 ms apart through a writer with a 1 ms linger on `qbo`; returns the batch calls it made.
async fn trickle_creates(qbo: Arc<QuickbooksConnector>, tag: &str) -> u64 {
    let writer = BatchWriter::new(qbo, Duration::from_millis(1), RetryPolicy::default().scaled(0.001));
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut pending = Vec::new();
    for i in 0..40 {
        tick.tick().await;
        let w = writer.clone();
        let (name, key) = (format!("Trickle {tag} {i:02}"), format!("trickle-{tag}-{i}"));
        pending.push(tokio::spawn(async move { w.create("Customer", customer_body(&name), &key).await }));
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
    writer.batch_calls()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_batches_keep_filling_while_the_batch_allowance_is_scarce() {
    let f = fixture().await;
    // A minute lasts 12 s for these limiters; a partial batch is held at most 4 of 120 of it (408 ms).
    let policy = quickbooks_policy();
    let spent = Limiter::with_speedup(&policy, 5.0);
    for _ in 0..60 {
        drop(spent.acquire_batch().await);
    }
    assert_eq!(spent.batch_usage().map(|u| (u.used, u.limit)), Some((60, 120)));
    // Half the allowance is spent: writes arriving every 5 ms wait for company, so 40 of them fill one batch of
    // 30 and one of 10 (sent when its hold ends).
    let calls = trickle_creates(Arc::new(connector(&f.sandbox, spent.clone())), "spent").await;
    assert!(calls <= 2, "{calls} batch calls for 40 creates while the allowance was scarce");
    assert_eq!(spent.batch_usage().map(|u| u.used), Some(60 + calls as usize));
    // With the allowance untouched, each write leaves at its linger instead of waiting for company.
    let fresh = Limiter::with_speedup(&policy, 5.0);
    let calls = trickle_creates(Arc::new(connector(&f.sandbox, fresh)), "fresh").await;
    assert!(calls >= 20, "only {calls} batch calls for 40 creates 5 ms apart with a 1 ms linger and room to spare");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_writes_under_faults_happen_exactly_once() {
    let f = fixture().await;
    let writer = BatchWriter::new(
        f.qbo.clone(),
        Duration::from_millis(20),
        RetryPolicy { max_attempts: 15, ..RetryPolicy::default() }.scaled(0.001),
    );
    f.admin(
        reqwest::Method::POST,
        "faults",
        Some(json!({"rate_429": 0.05, "rate_5xx": 0.2, "drop_rate": 0.1, "token_expiry_rate": 0.05, "after_write_share": 0.5, "seed": 3})),
    )
    .await;
    let results: Vec<(usize, Result<Record, ConnectorError>)> = futures::stream::iter(0..90)
        .map(|i| {
            let w = writer.clone();
            async move {
                (i, w.create("Customer", customer_body(&format!("Chaos Batch {i:03}")), &format!("chaos-{i}")).await)
            }
        })
        .buffer_unordered(90)
        .collect()
        .await;
    f.admin(reqwest::Method::DELETE, "faults", None).await;
    for (i, r) in &results {
        if let Err(e) = r {
            assert!(e.is_retryable(), "item {i} ended with {e}");
        }
    }
    let q = QueryBuilder::new("Customer").unwrap().compare("DisplayName", "LIKE", &json!("Chaos Batch %")).unwrap();
    let rows: Vec<Customer> = f.qbo.query_entities(&q, None).await.unwrap();
    let mut names: Vec<String> = rows.into_iter().filter_map(|c| c.display_name).collect();
    let total = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), total, "no create happened twice");
    let mut done = 0;
    for (i, r) in &results {
        if r.is_ok() {
            done += 1;
            assert!(
                names.binary_search(&format!("Chaos Batch {i:03}")).is_ok(),
                "create {i} reported done but is missing"
            );
        }
    }
    assert!(done > 0, "some creates must get through the faults");
}

/// Receives webhook POSTs on loopback: the raw body and the signature header of each.
type Received = Arc<Mutex<Vec<(Vec<u8>, String)>>>;

async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let sig =
                    headers.get(webhook::SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                sink.lock().unwrap().push((body.to_vec(), sig));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

#[tokio::test]
async fn webhooks_in_both_formats_verify_and_parse() {
    let f = fixture().await;
    let verifier = f.sandbox.info_str("verifier_token").to_string();
    let (legacy_url, legacy) = receiver().await;
    let (cloud_url, cloud) = receiver().await;
    f.admin(reqwest::Method::POST, "webhooks/config", Some(json!({"window_ms": 20}))).await;
    f.admin(reqwest::Method::POST, "webhooks", Some(json!({"url": legacy_url, "format": "legacy"}))).await;
    f.admin(reqwest::Method::POST, "webhooks", Some(json!({"url": cloud_url, "format": "cloudevents"}))).await;
    let c = f
        .qbo
        .create_entity(&Customer { display_name: Some("Hooked Customer".into()), ..Default::default() }, "hook-1")
        .await
        .unwrap();
    let id = c.id.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (legacy.lock().unwrap().is_empty() || cloud.lock().unwrap().is_empty())
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for got in [legacy, cloud] {
        let posts = got.lock().unwrap().clone();
        assert!(!posts.is_empty(), "no webhook arrived");
        let (body, sig) = &posts[0];
        assert!(webhook::verify(&verifier, body, sig), "the signature must verify");
        assert!(!webhook::verify("wrong-token", body, sig));
        let events = webhook::parse(body).unwrap();
        let ev = events.iter().find(|e| e.id == id).unwrap_or_else(|| panic!("{events:?}"));
        assert_eq!(ev.entity, "Customer");
        assert_eq!(ev.operation, "Create");
        assert_eq!(ev.realm_id, f.qbo.realm_id());
    }
}
