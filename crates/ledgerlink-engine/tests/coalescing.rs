//! Pending creates to one QuickBooks company leave as batch calls: twenty deals closing at once become a handful of
//! `POST /batch` calls rather than sixty single creates — and still one invoice each.

use std::collections::BTreeMap;

use ledgerlink_connectors::{FindQuery, Record};
use ledgerlink_engine::{Engine, EngineSettings, connections, poller, templates, worker};
use ledgerlink_sandbox::{quickbooks, salesforce};
use ledgerlink_store::{MasterKey, SecretCipher};
use serde_json::{Value, json};

const FLOW: &str = "salesforce-closed-won-to-quickbooks-invoice";

fn rec(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_are_coalesced_into_batch_calls() {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/c.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    let settings = EngineSettings { concurrency: 16, ..EngineSettings::default() };
    let engine = Engine::new(store.clone(), connections::build_all(store.clone()).await.unwrap(), vec![templates::load(FLOW, &BTreeMap::new()).unwrap()], settings).unwrap();
    let sf = engine.connector("salesforce").unwrap().clone();
    let qb = engine.connector("quickbooks").unwrap().clone();
    let flow = engine.flows[FLOW].clone();
    poller::poll_once(&engine, &flow).await.unwrap();

    let pb = sf.find(&FindQuery { object: "Pricebook2".into(), equals: vec![("IsStandard".into(), json!(true))], ..Default::default() }).await.unwrap();
    let entries = sf.find(&FindQuery { object: "PricebookEntry".into(), equals: vec![("Pricebook2Id".into(), pb[0]["Id"].clone())], ..Default::default() }).await.unwrap();
    let n = 20;
    let mut opps = Vec::new();
    for i in 0..n {
        let a = sf.create("Account", &rec(json!({"Name": format!("Batch Client {i}")})), "k").await.unwrap();
        let o = sf
            .create("Opportunity", &rec(json!({"Name": format!("Batch deal {i}"), "AccountId": a["Id"], "StageName": "Prospecting", "CloseDate": "2026-11-20", "Pricebook2Id": pb[0]["Id"]})), "k")
            .await
            .unwrap();
        sf.create("OpportunityLineItem", &rec(json!({"OpportunityId": o["Id"], "PricebookEntryId": entries[i % entries.len()]["Id"], "Quantity": 2})), "k").await.unwrap();
        sf.update("Opportunity", o["Id"].as_str().unwrap(), &rec(json!({"StageName": "Closed Won"}))).await.unwrap();
        opps.push(o["Id"].as_str().unwrap().to_string());
    }
    let before: Vec<Value> = reqwest_calls(&qbo.base_url).await;
    poller::poll_once(&engine, &flow).await.unwrap();
    worker::drain(&engine).await.unwrap();

    let calls: Vec<Value> = reqwest_calls(&qbo.base_url).await.into_iter().skip(before.len()).collect();
    let posts = |suffix: &str| calls.iter().filter(|c| c["method"] == "POST" && c["path"].as_str().unwrap_or("").split('?').next().unwrap_or("").ends_with(suffix)).count();
    let (batches, single_invoices, single_customers) = (posts("/batch"), posts("/invoice"), posts("/customer"));
    assert_eq!((single_invoices, single_customers), (0, 0), "creates go through batches");
    assert!(batches >= 1 && batches < 2 * n, "{batches} batch calls for {n} deals (each needs a customer and an invoice)");
    eprintln!("{n} deals: {batches} batch calls");

    // Still exactly one invoice per deal.
    let invoices = qb.find(&FindQuery { object: "Invoice".into(), ..Default::default() }).await.unwrap();
    for o in &opps {
        let k = invoices.iter().filter(|i| i.get("PrivateNote").and_then(Value::as_str).unwrap_or("").contains(o.as_str())).count();
        assert_eq!(k, 1, "{o}");
    }
}

async fn reqwest_calls(base: &str) -> Vec<Value> {
    let http = ledgerlink_connectors::http::client();
    let v: Value = http.get(format!("{base}/sandbox/admin/calls")).send().await.unwrap().json().await.unwrap();
    match v {
        Value::Array(a) => a,
        other => other.get("calls").and_then(Value::as_array).cloned().unwrap_or_default(),
    }
}
