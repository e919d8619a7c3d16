//! `salesforce-products-to-quickbooks-items`, end to end: a new product with a standard price becomes a QuickBooks
//! service item (name, SKU, description, price, income account); a price changed in QuickBooks reaches the standard
//! price book, and one changed in Salesforce reaches the item (each carried when the product is next synced); a
//! re-run writes nothing.

use std::collections::BTreeMap;

use ledgerlink_connectors::{FindQuery, Record};
use ledgerlink_engine::executor::to_decimal;
use ledgerlink_engine::{Engine, EngineSettings, connections, poller, templates, worker};
use ledgerlink_sandbox::{quickbooks, salesforce};
use ledgerlink_store::{AuditFilter, MasterKey, SecretCipher};
use rust_decimal::Decimal;
use serde_json::{Value, json};

const FLOW: &str = "salesforce-products-to-quickbooks-items";

fn rec(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_become_items_and_prices_meet_in_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/p.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    let engine = Engine::new(store.clone(), connections::build_all(store.clone()).await.unwrap(), vec![templates::load(FLOW, &BTreeMap::new()).unwrap()], EngineSettings::default()).unwrap();
    let (sf, qb) = (engine.connector("salesforce").unwrap().clone(), engine.connector("quickbooks").unwrap().clone());
    let flow = engine.flows[FLOW].clone();
    engine.prime().await.unwrap();
    let sync = || async {
        poller::poll_once(&engine, &flow).await.unwrap();
        worker::drain(&engine).await.unwrap();
    };
    let touch = |desc: &'static str, id: String| {
        let sf = sf.clone();
        async move { sf.update("Product2", &id, &rec(json!({"Description": desc}))).await.unwrap() }
    };

    let pb = sf.find(&FindQuery { object: "Pricebook2".into(), equals: vec![("IsStandard".into(), json!(true))], ..Default::default() }).await.unwrap();
    let product = sf.create("Product2", &rec(json!({"Name": "Solar Panel Install", "ProductCode": "SPI-100", "Description": "Roof survey and install", "IsActive": true})), "k").await.unwrap();
    let product_id = product["Id"].as_str().unwrap().to_string();
    let entry = sf
        .create("PricebookEntry", &rec(json!({"Pricebook2Id": pb[0]["Id"], "Product2Id": product_id, "UnitPrice": 1200.00, "IsActive": true})), "k")
        .await
        .unwrap();
    let entry_id = entry["Id"].as_str().unwrap().to_string();
    sync().await;

    let items = qb.find(&FindQuery { object: "Item".into(), equals: vec![("Name".into(), json!("Solar Panel Install"))], ..Default::default() }).await.unwrap();
    assert_eq!(items.len(), 1, "one item for the product");
    let item = &items[0];
    let item_id = item["Id"].as_str().unwrap().to_string();
    assert_eq!(item["Sku"], "SPI-100");
    assert_eq!(item["Description"], "Roof survey and install");
    assert_eq!(item["Type"], "Service");
    assert_eq!(item["IncomeAccountRef"]["value"], "1");
    assert_eq!(to_decimal(&item["UnitPrice"]).unwrap(), Decimal::new(1200, 0));

    let entry_price = || {
        let sf = sf.clone();
        let id = entry_id.clone();
        async move { to_decimal(&sf.get("PricebookEntry", &id, &["Id".into(), "UnitPrice".into()]).await.unwrap().unwrap()["UnitPrice"]).unwrap() }
    };
    let item_price = || {
        let qb = qb.clone();
        let id = item_id.clone();
        async move { to_decimal(&qb.get("Item", &id, &[]).await.unwrap().unwrap()["UnitPrice"]).unwrap() }
    };

    // Finance raises the price in QuickBooks: it reaches the standard price book.
    qb.update("Item", &item_id, &rec(json!({"UnitPrice": 1350.00}))).await.unwrap();
    touch("Roof survey, install and permit", product_id.clone()).await;
    sync().await;
    assert_eq!(entry_price().await, Decimal::new(1350, 0));
    assert_eq!(qb.get("Item", &item_id, &[]).await.unwrap().unwrap()["Description"], "Roof survey, install and permit");

    // Sales changes the list price in Salesforce: it reaches the item.
    sf.update("PricebookEntry", &entry_id, &rec(json!({"UnitPrice": 1400.00}))).await.unwrap();
    touch("Roof survey, install, permit", product_id.clone()).await;
    sync().await;
    assert_eq!(item_price().await, Decimal::new(1400, 0));
    assert_eq!(entry_price().await, Decimal::new(1400, 0));

    // The same product again: nothing written.
    let writes = store.list_audit(&AuditFilter::default()).await.unwrap().iter().filter(|a| a.entry.outcome == "ok").count();
    let job = ledgerlink_engine::triggers::run_now(&engine, &flow, Some(&product_id)).await.unwrap();
    worker::drain(&engine).await.unwrap();
    assert_eq!(store.get_job(job).await.unwrap().unwrap().status, ledgerlink_store::JobStatus::Done);
    let after = store.list_audit(&AuditFilter::default()).await.unwrap().iter().filter(|a| a.entry.outcome == "ok").count();
    assert_eq!(after, writes, "a re-run changes nothing");
    assert_eq!(qb.find(&FindQuery { object: "Item".into(), equals: vec![("Sku".into(), json!("SPI-100"))], ..Default::default() }).await.unwrap().len(), 1);
}

/// A product whose item already exists in QuickBooks (made by another flow, at the old price) and whose list price
/// was then raised in Salesforce: on the first sync, with no common base, "newest wins" must pick the price
/// change, not the item, even though this same run has just written the item's name and description.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_does_not_count_its_own_writes_as_the_newest_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/p.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    let engine = Engine::new(store.clone(), connections::build_all(store.clone()).await.unwrap(), vec![templates::load(FLOW, &BTreeMap::new()).unwrap()], EngineSettings::default()).unwrap();
    let (sf, qb) = (engine.connector("salesforce").unwrap().clone(), engine.connector("quickbooks").unwrap().clone());
    let flow = engine.flows[FLOW].clone();

    let pb = sf.find(&FindQuery { object: "Pricebook2".into(), equals: vec![("IsStandard".into(), json!(true))], ..Default::default() }).await.unwrap();
    let product = sf.create("Product2", &rec(json!({"Name": "Battery Service", "ProductCode": "BAT-SVC", "Description": "Yearly check", "IsActive": true})), "k").await.unwrap();
    let product_id = product["Id"].as_str().unwrap().to_string();
    let entry = sf
        .create("PricebookEntry", &rec(json!({"Pricebook2Id": pb[0]["Id"], "Product2Id": product_id, "UnitPrice": 300.00, "IsActive": true})), "k")
        .await
        .unwrap();
    let item = qb.create("Item", &rec(json!({"Name": "Battery Service", "Type": "Service", "UnitPrice": 300.00, "IncomeAccountRef": {"value": "1"}})), "first-sync-item").await.unwrap();
    engine.prime().await.unwrap();
    // QuickBooks' clock runs ten minutes ahead of Salesforce's: whatever this run writes to the item is stamped
    // later than any Salesforce edit, so only the item's time from before the run can tell which change is newer.
    let r = ledgerlink_connectors::http::client()
        .post(format!("{}/sandbox/admin/clock/advance", qbo.base_url))
        .json(&json!({"seconds": 600}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    // Later, sales raises the list price and edits the product: the flow's first run for it.
    sf.update("PricebookEntry", entry["Id"].as_str().unwrap(), &rec(json!({"UnitPrice": 330.00}))).await.unwrap();
    sf.update("Product2", &product_id, &rec(json!({"Description": "Yearly check and report"}))).await.unwrap();
    poller::poll_once(&engine, &flow).await.unwrap();
    worker::drain(&engine).await.unwrap();

    let item = qb.get("Item", item["Id"].as_str().unwrap(), &[]).await.unwrap().unwrap();
    assert_eq!(item["Description"], "Yearly check and report", "the run wrote the item's details first");
    assert_eq!(to_decimal(&item["UnitPrice"]).unwrap(), Decimal::new(330, 0), "the raised list price reached the item");
    let entry = sf.get("PricebookEntry", entry["Id"].as_str().unwrap(), &["Id".into(), "UnitPrice".into()]).await.unwrap().unwrap();
    assert_eq!(to_decimal(&entry["UnitPrice"]).unwrap(), Decimal::new(330, 0), "and was not put back to the item's old price");
}
