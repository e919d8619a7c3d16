//! The Salesforce connector against the Salesforce sandbox over loopback HTTP.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use futures::StreamExt;
use ledgerlink_connectors::auth::{MemoryTokenStore, OAuthTokens, TokenStore};
use ledgerlink_connectors::salesforce::{SalesforceConfig, SalesforceConnector};
use ledgerlink_connectors::{Connector, ConnectorError, FindQuery, Record, http};
use ledgerlink_sandbox::RunningSandbox;
use ledgerlink_sandbox::salesforce::{SalesforceOptions, start};
use serde_json::{Value, json};

struct Fixture {
    sandbox: RunningSandbox,
    store: Arc<MemoryTokenStore>,
    sf: Arc<SalesforceConnector>,
}

async fn fixture_with(opts: SalesforceOptions) -> Fixture {
    let sandbox = start(opts).await.unwrap();
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
    let sf = Arc::new(SalesforceConnector::new(config, store.clone() as Arc<dyn TokenStore>, http::client()));
    Fixture { sandbox, store, sf }
}

async fn fixture() -> Fixture {
    fixture_with(SalesforceOptions::default()).await
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

fn id_of(r: &Record) -> String {
    r["Id"].as_str().unwrap().to_string()
}

async fn admin(f: &Fixture, path: &str, body: Value) {
    let resp =
        http::client().post(format!("{}/sandbox/admin/{path}", f.sandbox.base_url)).json(&body).send().await.unwrap();
    assert!(resp.status().is_success(), "admin {path}: {}", resp.status());
}

#[tokio::test]
async fn test_connection_and_limits() {
    let f = fixture().await;
    let name = f.sf.test_connection().await.unwrap();
    assert!(!name.is_empty());
    assert_eq!(f.sf.system(), "salesforce");
    let (used, max) = f.sf.api_usage().expect("Sforce-Limit-Info is recorded");
    assert!(used >= 1 && max >= used, "{used}/{max}");
    assert_eq!(f.sf.rate_limit_policy().daily_budget, Some(max));
}

#[tokio::test]
async fn find_handles_apostrophes_and_default_fields() {
    let f = fixture().await;
    let found = f.sf.find(&find("Account", vec![("Name", json!("O'Brien Logistics"))])).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let acc = &found[0];
    assert_eq!(acc["BillingCity"], json!("Boston"));
    assert!(acc.get("attributes").is_none());
    assert!(f.sf.change_timestamp(acc).is_some());

    let none = f.sf.find(&find("Account", vec![("Name", json!("Nobody's \\ Here\n"))])).await.unwrap();
    assert!(none.is_empty());

    let limited =
        FindQuery { object: "Account".into(), fields: vec!["Name".into()], limit: Some(2), ..Default::default() };
    let rows = f.sf.find(&limited).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].contains_key("Id") && rows[0].contains_key("Name"));
    assert!(!rows[0].contains_key("BillingCity"));
}

#[tokio::test]
async fn get_create_update_round_trip() {
    let f = fixture().await;
    let created =
        f.sf.create("Account", &record(json!({"Name": "Dana's Garden Supply", "BillingCity": "Reno"})), "ignored")
            .await
            .unwrap();
    let id = id_of(&created);
    assert_eq!(created["Name"], json!("Dana's Garden Supply"));
    assert!(created.contains_key("SystemModstamp"), "created record is read back: {created:?}");

    let got = f.sf.get("Account", &id, &["Name".to_string()]).await.unwrap().unwrap();
    assert_eq!(got["Name"], json!("Dana's Garden Supply"));
    assert!(got.get("attributes").is_none());

    let updated = f.sf.update("Account", &id, &record(json!({"BillingCity": "Sparks"}))).await.unwrap();
    assert_eq!(updated["BillingCity"], json!("Sparks"));
    assert_eq!(updated["Name"], json!("Dana's Garden Supply"));

    assert_eq!(f.sf.get("Account", "001000000000000AAA", &[]).await.unwrap(), None);
    match f.sf.update("Account", "001000000000000AAA", &record(json!({"Name": "x"}))).await.unwrap_err() {
        ConnectorError::NotFound { .. } => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let f = fixture().await;
    match f.sf.create("Account", &record(json!({"BillingCity": "Nowhere"})), "k").await.unwrap_err() {
        ConnectorError::Validation { code, field, .. } => {
            assert_eq!(code, "REQUIRED_FIELD_MISSING");
            assert_eq!(field.as_deref(), Some("Name"));
        }
        other => panic!("{other:?}"),
    }
    match f.sf.query("SELECT Id FROM Account WHERE").await.unwrap_err() {
        ConnectorError::Validation { code, .. } => assert_eq!(code, "MALFORMED_QUERY"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn upsert_by_external_id_creates_then_updates() {
    let f = fixture().await;
    let (id1, created1) = f
        .sf
        .upsert_by_external_id("Account", "QuickBooks_Customer_Id__c", "9001", &record(json!({"Name": "Upsert Co"})))
        .await
        .unwrap();
    assert!(created1);
    let (id2, created2) =
        f.sf.upsert_by_external_id("Account", "QuickBooks_Customer_Id__c", "9001", &record(json!({"Phone": "555"})))
            .await
            .unwrap();
    assert!(!created2);
    assert_eq!(id1, id2);
    let got = f.sf.get("Account", &id1, &[]).await.unwrap().unwrap();
    assert_eq!(got["Phone"], json!("555"));
    assert_eq!(got["QuickBooks_Customer_Id__c"], json!("9001"));
    assert_eq!(got["Name"], json!("Upsert Co"));
}

#[tokio::test]
async fn expired_session_is_refreshed_once_even_under_concurrency() {
    let f = fixture().await;
    let original = f.store.current().unwrap();
    admin(&f, "expire-sessions", json!({})).await;
    f.sf.find(&find("Account", vec![("Name", json!("Acme Corporation"))])).await.unwrap();
    assert_eq!(f.store.save_count(), 1);
    let now = f.store.current().unwrap();
    assert_ne!(now.access_token, original.access_token);
    assert!(now.refresh_token.is_some(), "the refresh token is kept when the response has none");

    admin(&f, "expire-sessions", json!({})).await;
    let results: Vec<_> = futures::stream::iter(0..8)
        .map(|_| {
            let sf = f.sf.clone();
            async move { sf.find(&find("Account", vec![("Name", json!("O'Brien Logistics"))])).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for r in results {
        assert_eq!(r.unwrap().len(), 1);
    }
    assert_eq!(f.store.save_count(), 2);
    assert_eq!(f.sf.token_manager().refresh_count(), 2);
}

#[tokio::test]
async fn dead_refresh_token_asks_for_reauthorisation() {
    let f = fixture().await;
    f.store
        .save(&OAuthTokens {
            access_token: "stale".into(),
            refresh_token: Some("bogus".into()),
            access_expires_at: Utc::now() + TimeDelta::hours(1),
            refresh_expires_at: None,
        })
        .await
        .unwrap();
    match f.sf.test_connection().await.unwrap_err() {
        ConnectorError::Unauthorized { message } => assert!(message.contains("re-authorised"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn changes_since_follows_next_records_url_oldest_first() {
    let f = fixture_with(SalesforceOptions { query_page_size: 3, ..Default::default() }).await;
    let before = Utc::now() - TimeDelta::seconds(1);
    let mut created = Vec::new();
    for i in 0..7 {
        let r =
            f.sf.create(
                "Contact",
                &record(json!({"LastName": format!("Pager {i}"), "Email": format!("p{i}@x.example")})),
                "",
            )
            .await
            .unwrap();
        created.push(id_of(&r));
    }
    let changes = f.sf.changes_since("Contact", before, &["LastName".to_string()]).await.unwrap();
    let ids: Vec<String> = changes.records.iter().map(id_of).collect();
    for id in &created {
        assert!(ids.contains(id), "{id} missing from {ids:?}");
    }
    let stamps: Vec<_> = changes.records.iter().map(|r| f.sf.change_timestamp(r).unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
    let mut dedup = ids.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), ids.len());

    // All pages of a plain query, more than one page long.
    let all = f.sf.query("SELECT Id, Name FROM Account").await.unwrap();
    assert!(all.len() > 3, "{}", all.len());

    let later = f.sf.changes_since("Contact", Utc::now() + TimeDelta::hours(1), &[]).await.unwrap();
    assert!(later.records.is_empty());
}
