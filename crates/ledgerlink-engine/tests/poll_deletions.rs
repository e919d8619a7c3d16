//! The poll trigger sees deletes when a flow asks for them (`deletions = true`): a deleted Salesforce account
//! (from the recycle bin) and a deleted QuickBooks invoice (from the change feed) each become one job whose record
//! carries the system's own deletion marker, once; without the option they do not. QuickBooks refuses to delete a
//! customer (it deactivates), and a deactivated customer is an ordinary change.

use std::collections::BTreeMap;
use std::sync::Arc;

use ledgerlink_connectors::{Connector, ConnectorError, FindQuery, Record};
use ledgerlink_engine::{Engine, EngineSettings, connections, poller};
use ledgerlink_sandbox::{RunningSandbox, quickbooks, salesforce};
use ledgerlink_store::{MasterKey, SecretCipher};
use serde_json::{Value, json};

fn rec(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

fn flow(name: &str, connection: &str, object: &str, deletions: bool, condition: &str) -> String {
    format!(
        r#"
[flow]
name = "{name}"
description = "Watches {object} deletions."
[trigger]
type = "poll"
connection = "{connection}"
object = "{object}"
fields = ["Id"]
deletions = {deletions}
[when]
condition = '{condition}'
[[steps]]
id = "again"
type = "get"
connection = "{connection}"
object = "{object}"
record_id = 'record.Id'
fields = ["Id"]
"#
    )
}

struct H {
    engine: Engine,
    sf: Arc<dyn Connector>,
    qb: Arc<dyn Connector>,
    _sandboxes: (RunningSandbox, RunningSandbox),
    _dir: tempfile::TempDir,
}

async fn harness() -> H {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/d.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    let deleted_qb = r#"has(record.status) && record.status == "Deleted""#;
    let flows = [
        flow("sf-deleted", "salesforce", "Account", true, "record.IsDeleted == true"),
        flow("sf-deleted-unasked", "salesforce", "Account", false, "has(record.IsDeleted) && record.IsDeleted == true"),
        flow("qb-deleted", "quickbooks", "Invoice", true, deleted_qb),
        flow("qb-deleted-unasked", "quickbooks", "Invoice", false, deleted_qb),
        flow("qb-inactive", "quickbooks", "Customer", false, "record.Active == false"),
    ]
    .iter()
    .map(|f| ledgerlink_flow::parse_flow(f, "d.toml", &BTreeMap::new()).unwrap())
    .collect();
    let engine = Engine::new(store.clone(), connections::build_all(store.clone()).await.unwrap(), flows, EngineSettings::default()).unwrap();
    let (sf, qb) = (engine.connector("salesforce").unwrap().clone(), engine.connector("quickbooks").unwrap().clone());
    engine.prime().await.unwrap();
    H { engine, sf, qb, _sandboxes: (qbo, sfdc), _dir: dir }
}

impl H {
    async fn poll(&self, flow: &str) -> usize {
        poller::poll_once(&self.engine, &self.engine.flows[flow]).await.unwrap().enqueued
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_reach_the_flows_that_ask_for_them_once() {
    let h = harness().await;
    for f in ["sf-deleted", "sf-deleted-unasked", "qb-deleted", "qb-deleted-unasked", "qb-inactive"] {
        h.poll(f).await;
    }

    // Salesforce: an account created and deleted.
    let a = h.sf.create("Account", &rec(json!({"Name": "Short Lived Ltd"})), "k").await.unwrap();
    h.sf.delete("Account", a["Id"].as_str().unwrap()).await.unwrap();
    assert_eq!(h.poll("sf-deleted").await, 1, "one job for the delete");
    assert_eq!(h.poll("sf-deleted").await, 0, "once");
    assert_eq!(h.poll("sf-deleted-unasked").await, 0, "not asked for");

    // QuickBooks: an invoice created and deleted (transactions are deleted; the change feed reports them).
    let customer = h.qb.create("Customer", &rec(json!({"DisplayName": "Deleting Deli"})), "c1").await.unwrap();
    let items = h.qb.find(&FindQuery { object: "Item".into(), ..Default::default() }).await.unwrap();
    let item = items.iter().find(|i| i["Type"] == "Service").or(items.first()).unwrap();
    let invoice = h
        .qb
        .create(
            "Invoice",
            &rec(json!({"CustomerRef": {"value": customer["Id"]}, "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 10, "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": 1, "UnitPrice": 10}}]})),
            "i1",
        )
        .await
        .unwrap();
    let invoice_id = invoice["Id"].as_str().unwrap();
    h.qb.delete("Invoice", invoice_id).await.unwrap();
    assert!(h.qb.get("Invoice", invoice_id, &[]).await.unwrap().is_none());
    assert_eq!(h.poll("qb-deleted").await, 1, "one job for the delete");
    assert_eq!(h.poll("qb-deleted").await, 0, "once");
    assert_eq!(h.poll("qb-deleted-unasked").await, 0, "not asked for");

    // QuickBooks customers are not deleted but made inactive: an ordinary change that every poll sees.
    match h.qb.delete("Customer", customer["Id"].as_str().unwrap()).await {
        Err(ConnectorError::Validation { message, .. }) => assert!(message.contains("inactive"), "{message}"),
        other => panic!("{other:?}"),
    }
    h.qb.update("Customer", customer["Id"].as_str().unwrap(), &rec(json!({"Active": false}))).await.unwrap();
    assert_eq!(h.poll("qb-inactive").await, 1, "the deactivation is seen");
}
