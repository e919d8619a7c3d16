//! The QuickBooks connector against the QuickBooks sandbox over loopback HTTP.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use futures::StreamExt;
use ledgerlink_connectors::auth::{MemoryTokenStore, OAuthTokens, TokenStore};
use ledgerlink_connectors::limiter::Limiter;
use ledgerlink_connectors::quickbooks::{QuickbooksConfig, QuickbooksConnector, quickbooks_policy};
use ledgerlink_connectors::{Connector, ConnectorError, FindQuery, Record, http};
use ledgerlink_model::{Currency, Invoice, InvoiceLine, QboRealmId};
use ledgerlink_sandbox::RunningSandbox;
use ledgerlink_sandbox::quickbooks::{QuickbooksOptions, start};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// QuickBooks' per-minute limits run this much faster than real time, in the sandbox and in the connector alike.
const SANDBOX_LIMIT_SPEEDUP: f64 = 50.0;

struct Fixture {
    sandbox: RunningSandbox,
    store: Arc<MemoryTokenStore>,
    qbo: Arc<QuickbooksConnector>,
}

async fn fixture() -> Fixture {
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
    // A limit "minute" lasts 1.2 s on both sides, so bulk tests run fast and still prove the limiter keeps the
    // realm under the sandbox's enforcement of Intuit's limits.
    let qbo = Arc::new(
        QuickbooksConnector::new(config, store.clone() as Arc<dyn TokenStore>, http::client())
            .with_limiter(Limiter::with_speedup(&quickbooks_policy(), SANDBOX_LIMIT_SPEEDUP)),
    );
    let f = Fixture { sandbox, store, qbo };
    admin(&f, "limits", json!({"time_scale": SANDBOX_LIMIT_SPEEDUP})).await;
    f
}

fn record(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

fn find(object: &str, equals: Vec<(&str, Value)>) -> FindQuery {
    FindQuery {
        object: object.into(),
        equals: equals.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        fields: vec![],
        limit: None,
    }
}

async fn admin(f: &Fixture, path: &str, body: Value) {
    let resp =
        http::client().post(format!("{}/sandbox/admin/{path}", f.sandbox.base_url)).json(&body).send().await.unwrap();
    assert!(resp.status().is_success(), "admin {path}: {}", resp.status());
}

fn id_of(r: &Record) -> String {
    r["Id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn test_connection_names_the_company() {
    let f = fixture().await;
    assert_eq!(f.qbo.test_connection().await.unwrap(), "Juniper & Finch Landscape Design");
    assert_eq!(f.qbo.system(), "quickbooks");
    assert_eq!(f.qbo.rate_limit_policy().requests_per_minute, Some(500));
    assert_eq!(f.store.save_count(), 0);
}

#[tokio::test]
async fn find_handles_apostrophes_and_emails_and_get_reads_by_id() {
    let f = fixture().await;
    let found = f.qbo.find(&find("Customer", vec![("DisplayName", json!("Marigold's Tea Room"))])).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["PrimaryEmailAddr"]["Address"], json!("rosa@marigoldstea.example"));

    let by_email =
        f.qbo.find(&find("Customer", vec![("PrimaryEmailAddr", json!("rosa@marigoldstea.example"))])).await.unwrap();
    assert_eq!(by_email.len(), 1);
    assert_eq!(id_of(&by_email[0]), id_of(&found[0]));

    let none = f.qbo.find(&find("Customer", vec![("DisplayName", json!("Nobody's Here"))])).await.unwrap();
    assert!(none.is_empty());

    let id = id_of(&found[0]);
    let got = f.qbo.get("Customer", &id, &[]).await.unwrap().unwrap();
    assert_eq!(got["DisplayName"], json!("Marigold's Tea Room"));
    assert!(f.qbo.change_timestamp(&got).is_some());
    assert_eq!(f.qbo.record_id(&got), Some(id));
    assert_eq!(f.qbo.get("Customer", "987654", &[]).await.unwrap(), None);

    // A created name with both a backslash and an apostrophe round-trips through find.
    let tricky = r"Dan's \ Sons";
    f.qbo.create("Customer", &record(json!({"DisplayName": tricky})), "tricky-1").await.unwrap();
    let found = f.qbo.find(&find("Customer", vec![("DisplayName", json!(tricky))])).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["DisplayName"], json!(tricky));
}

#[tokio::test]
async fn find_respects_limit() {
    let f = fixture().await;
    let q = FindQuery { object: "Customer".into(), limit: Some(3), ..Default::default() };
    assert_eq!(f.qbo.find(&q).await.unwrap().len(), 3);
    let active = f.qbo.find(&find("Customer", vec![("Active", json!(false))])).await.unwrap();
    assert!(active.iter().all(|c| c["Active"] == json!(false)), "{active:?}");
}

#[tokio::test]
async fn create_with_the_same_key_twice_makes_one_record() {
    let f = fixture().await;
    let rec = record(json!({"DisplayName": "Sequoia Cafe", "PrimaryEmailAddr": {"Address": "hi@sequoia.example"}}));
    let a = f.qbo.create("Customer", &rec, "link:sf:001:create").await.unwrap();
    let b = f.qbo.create("Customer", &rec, "link:sf:001:create").await.unwrap();
    assert_eq!(id_of(&a), id_of(&b));

    // Keys over 50 characters map to the same request id every time.
    let long_key = format!("flow:opportunity-to-invoice:{}:create-customer", "006000000000001AAA".repeat(3));
    let rec2 = record(json!({"DisplayName": "Redwood Bistro"}));
    let c = f.qbo.create("Customer", &rec2, &long_key).await.unwrap();
    let d = f.qbo.create("Customer", &rec2, &long_key).await.unwrap();
    assert_eq!(id_of(&c), id_of(&d));

    let all = f.qbo.query("SELECT * FROM Customer WHERE DisplayName = 'Sequoia Cafe'").await.unwrap();
    assert_eq!(all.len(), 1);

    // A different key for the same name is a real second create: QBO refuses the duplicate name.
    match f.qbo.create("Customer", &rec, "another-key").await.unwrap_err() {
        ConnectorError::Validation { code, .. } => assert_eq!(code, "6240"),
        other => panic!("expected a duplicate-name validation error, got {other:?}"),
    }
}

#[tokio::test]
async fn update_is_sparse_and_uses_the_current_sync_token() {
    let f = fixture().await;
    let created = f
        .qbo
        .create("Customer", &record(json!({"DisplayName": "Birch & Co", "CompanyName": "Birch"})), "birch")
        .await
        .unwrap();
    let id = id_of(&created);
    let first = f.qbo.update("Customer", &id, &record(json!({"CompanyName": "Birch Holdings"}))).await.unwrap();
    assert_eq!(first["CompanyName"], json!("Birch Holdings"));
    assert_eq!(first["DisplayName"], json!("Birch & Co"), "sparse update must keep other fields");
    // A caller's stale SyncToken is ignored: the connector reads the current one.
    let second = f.qbo.update("Customer", &id, &record(json!({"SyncToken": "0", "Notes": "VIP"}))).await.unwrap();
    assert_eq!(second["Notes"], json!("VIP"));
    let s1: u64 = first["SyncToken"].as_str().unwrap().parse().unwrap();
    let s2: u64 = second["SyncToken"].as_str().unwrap().parse().unwrap();
    assert_eq!(s2, s1 + 1);

    match f.qbo.update("Customer", "987654", &record(json!({"Notes": "x"}))).await.unwrap_err() {
        ConnectorError::NotFound { .. } => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn encoded_invoice_is_accepted_with_exact_totals() {
    let f = fixture().await;
    let customer = f.qbo.find(&find("Customer", vec![("DisplayName", json!("Bayview Dental Group"))])).await.unwrap();
    let items = f.qbo.find(&find("Item", vec![("Name", json!("Garden Design"))])).await.unwrap();
    let d = |s: &str| s.parse::<Decimal>().unwrap();
    let invoice = Invoice {
        customer_id: id_of(&customer[0]),
        customer_name: None,
        doc_number: Some("LL-1001".into()),
        txn_date: chrono::NaiveDate::from_ymd_opt(2024, 3, 1),
        due_date: chrono::NaiveDate::from_ymd_opt(2024, 3, 31),
        currency: Currency::USD,
        lines: vec![
            InvoiceLine {
                item_id: id_of(&items[0]),
                item_name: Some("Garden Design".into()),
                description: Some("Design hours".into()),
                quantity: d("3"),
                unit_price: d("19.99"),
                discount_percent: d("10"),
                service_date: None,
            },
            InvoiceLine {
                item_id: id_of(&items[0]),
                item_name: Some("Garden Design".into()),
                description: None,
                quantity: d("2"),
                unit_price: d("1500"),
                discount_percent: d("15"),
                service_date: None,
            },
        ],
        memo: Some("Spring project".into()),
        source_reference: Some("salesforce/Opportunity/006000000000001AAA".into()),
        discount: None,
        term_id: None,
        term_name: None,
        class_id: None,
        class_name: None,
        custom_fields: vec![],
        estimate_id: None,
    };
    let payload = f.qbo.encode_invoice(&invoice).unwrap();
    let created = f.qbo.create("Invoice", &payload, "inv-LL-1001").await.unwrap();
    assert_eq!(created["TotalAmt"].to_string().parse::<Decimal>().unwrap(), invoice.total().amount);
    assert_eq!(invoice.total().amount, d("2603.97"));
    assert_eq!(created["DocNumber"], json!("LL-1001"));
}

#[tokio::test]
async fn expired_token_is_refreshed_once_and_the_rotated_refresh_token_saved() {
    let f = fixture().await;
    let original = f.store.current().unwrap();
    admin(&f, "expire-tokens", json!({})).await;
    assert_eq!(f.qbo.test_connection().await.unwrap(), "Juniper & Finch Landscape Design");
    assert_eq!(f.store.save_count(), 1);
    let now = f.store.current().unwrap();
    assert_ne!(now.access_token, original.access_token);
    assert_ne!(now.refresh_token, original.refresh_token, "QBO rotates refresh tokens");
    assert!(now.access_expires_at > Utc::now() + TimeDelta::minutes(30));

    // Again, with many calls refused at the same time: still one refresh.
    admin(&f, "expire-tokens", json!({})).await;
    let results: Vec<_> = futures::stream::iter(0..8)
        .map(|_| {
            let qbo = f.qbo.clone();
            async move { qbo.find(&find("Customer", vec![("Active", json!(true))])).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for r in results {
        assert!(!r.unwrap().is_empty());
    }
    assert_eq!(f.store.save_count(), 2);
    assert_eq!(f.qbo.token_manager().refresh_count(), 2);
}

#[tokio::test]
async fn token_close_to_expiry_is_refreshed_before_the_call() {
    let f = fixture().await;
    let mut t = f.store.current().unwrap();
    t.access_expires_at = Utc::now() + TimeDelta::seconds(30);
    f.store.save(&t).await.unwrap();
    let saves = f.store.save_count();
    f.qbo.test_connection().await.unwrap();
    assert_eq!(f.store.save_count(), saves + 1);
}

#[tokio::test]
async fn dead_refresh_token_asks_for_reauthorisation() {
    let f = fixture().await;
    f.store
        .save(&OAuthTokens {
            access_token: "expired".into(),
            refresh_token: Some("not-a-real-refresh-token".into()),
            access_expires_at: Utc::now() - TimeDelta::minutes(1),
            refresh_expires_at: None,
        })
        .await
        .unwrap();
    match f.qbo.test_connection().await.unwrap_err() {
        ConnectorError::Unauthorized { message } => {
            assert!(message.contains("invalid_grant"), "{message}");
            assert!(message.contains("re-authorised"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bad_queries_are_validation_errors() {
    let f = fixture().await;
    match f.qbo.query("SELECT * FROM Customer WHERE DisplayName = 'unterminated").await.unwrap_err() {
        ConnectorError::Validation { code, .. } => assert_eq!(code, "4000"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn changes_since_pages_through_more_than_a_thousand_rows_oldest_first() {
    let f = fixture().await;
    let before = Utc::now() - TimeDelta::seconds(2);
    let n = 1010usize;
    let created: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let qbo = f.qbo.clone();
            async move {
                let rec = record(json!({"DisplayName": format!("Paging Customer {i:04}")}));
                qbo.create("Customer", &rec, &format!("paging-{i}")).await
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut created_ids: Vec<String> = created.into_iter().map(|r| id_of(&r.unwrap())).collect();
    created_ids.sort();

    let changes = f.qbo.changes_since("Customer", before, &[]).await.unwrap();
    assert!(changes.records.len() >= n, "{}", changes.records.len());
    let mut ids: Vec<String> = changes.records.iter().map(id_of).collect();
    let stamps: Vec<_> = changes.records.iter().map(|r| f.qbo.change_timestamp(r).unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "changes must be oldest first");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), changes.records.len(), "no row may appear twice across pages");
    assert!(created_ids.iter().all(|id| ids.binary_search(id).is_ok()));

    let all = f.qbo.query("SELECT * FROM Customer").await.unwrap();
    assert!(all.len() > n);
    // More than two limit-minutes' worth of calls (the sandbox enforces Intuit's limits at the same pace), and
    // the limiter kept every one under them.
    assert_eq!(f.qbo.limiter().throttled_count(), 0, "the limiter must keep the realm under its limits");

    // Nothing changed after a moment in the future.
    let later = f.qbo.changes_since("Customer", Utc::now() + TimeDelta::hours(1), &[]).await.unwrap();
    assert!(later.records.is_empty());
}

/// A record of an earlier page edited while a poll pages on moves to the end of the change order. Paging by row
/// number alone would then skip the row that crosses the page boundary; paging by time must not.
#[tokio::test]
async fn an_edit_while_a_poll_pages_on_does_not_make_it_skip_a_row() {
    let f = fixture().await;
    let before = Utc::now() - TimeDelta::seconds(2);
    // 1,020 customers, 30 to a sandbox-clock second: the first page (1,000 rows) ends inside a second.
    let mut seeded: Vec<String> = Vec::new();
    for second in 0..34 {
        let objects: Vec<Value> =
            (0..30).map(|i| json!({"Customer": {"DisplayName": format!("Keyset Customer {second:02}-{i:02}")}})).collect();
        let resp = http::client()
            .post(format!("{}/sandbox/admin/seed", f.sandbox.base_url))
            .json(&json!({"objects": objects}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "seed: {}", resp.status());
        let body: Value = resp.json().await.unwrap();
        seeded.extend(body["created"].as_array().unwrap().iter().map(|c| c["Customer"]["Id"].as_str().unwrap().to_string()));
        admin(&f, "clock/advance", json!({"seconds": 1})).await;
    }

    let first = f.qbo.changes_page("Customer", before, &[], None).await.unwrap();
    assert_eq!(first.records.len(), 1000);
    let mut token = first.next_page.clone();
    assert!(token.is_some(), "more than a page changed");
    let mut seen: Vec<Record> = first.records.clone();

    // Someone edits the first customer of the page just read, a minute later on the sandbox clock.
    admin(&f, "clock/advance", json!({"seconds": 60})).await;
    let edited = id_of(&first.records[0]);
    f.qbo.update("Customer", &edited, &record(json!({"Notes": "edited while the poll was paging"}))).await.unwrap();

    while let Some(at) = token {
        let page = f.qbo.changes_page("Customer", before, &[], Some(&at)).await.unwrap();
        seen.extend(page.records);
        token = page.next_page;
    }
    let ids: std::collections::BTreeSet<String> = seen.iter().map(id_of).collect();
    let missed: Vec<&String> = seeded.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(missed.is_empty(), "rows skipped by the poll: {missed:?}");
    let versions_of_edited = seen.iter().filter(|r| id_of(r) == edited).count();
    assert_eq!(versions_of_edited, 2, "the edited customer is read before and after its edit");
}
