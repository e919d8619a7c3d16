//! `quickbooks-invoice-status-to-salesforce`, end to end: an invoice's status, amount due, due date and last payment
//! date reach its Salesforce opportunity as payments are recorded in QuickBooks; an invoice past due shows Overdue;
//! a re-run over the same data writes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use ledgerlink_connectors::{Connector, FindQuery, Record};
use ledgerlink_engine::executor::to_decimal;
use ledgerlink_engine::{Engine, EngineSettings, connections, poller, templates, worker};
use ledgerlink_sandbox::{quickbooks, salesforce};
use ledgerlink_store::{AuditFilter, MasterKey, SecretCipher};
use rust_decimal::Decimal;
use serde_json::{Value, json};

const FLOW: &str = "quickbooks-invoice-status-to-salesforce";

fn rec(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

async fn admin(base: &str, path: &str, body: Value) {
    let r = ledgerlink_connectors::http::client().post(format!("{base}/sandbox/admin/{path}")).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap());
}

async fn opp_fields(sf: &Arc<dyn Connector>, id: &str) -> Record {
    let fields: Vec<String> = ["Id", "QuickBooks_Payment_Status__c", "QuickBooks_Amount_Due__c", "QuickBooks_Due_Date__c", "QuickBooks_Last_Payment_Date__c"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    sf.get("Opportunity", id, &fields).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_in_quickbooks_show_on_the_opportunity() {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/s.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    for (name, ty) in [
        ("QuickBooks_Payment_Status__c", "Text"),
        ("QuickBooks_Amount_Due__c", "Currency"),
        ("QuickBooks_Due_Date__c", "Date"),
        ("QuickBooks_Last_Payment_Date__c", "Date"),
    ] {
        admin(&sfdc.base_url, "fields", json!({"object": "Opportunity", "name": name, "type": ty})).await;
    }
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    let flow = templates::load(FLOW, &BTreeMap::new()).unwrap();
    let engine = Engine::new(store.clone(), connections::build_all(store.clone()).await.unwrap(), vec![flow], EngineSettings::default()).unwrap();
    let (sf, qb) = (engine.connector("salesforce").unwrap().clone(), engine.connector("quickbooks").unwrap().clone());
    let flow = engine.flows[FLOW].clone();
    engine.prime().await.unwrap();
    let sync = || async {
        poller::poll_once(&engine, &flow).await.unwrap();
        worker::drain(&engine).await.unwrap();
    };

    // A won deal invoiced in QuickBooks (as the closed-won template leaves it): DocNumber SF-<opp>, id written back.
    let customer = qb.find(&FindQuery { object: "Customer".into(), limit: Some(1), ..Default::default() }).await.unwrap().remove(0);
    let item = qb.find(&FindQuery { object: "Item".into(), limit: Some(1), ..Default::default() }).await.unwrap().remove(0);
    let account = sf.create("Account", &rec(json!({"Name": "Status Watchers"})), "k").await.unwrap();
    let mut invoice_of = BTreeMap::new();
    let mut opps = Vec::new();
    for (i, txn, due) in [("on-time", "2026-11-20", "2099-12-31"), ("late", "2020-01-01", "2020-01-31")] {
        let opp = sf
            .create("Opportunity", &rec(json!({"Name": format!("Deal {i}"), "AccountId": account["Id"], "StageName": "Closed Won", "CloseDate": "2026-11-20"})), "k")
            .await
            .unwrap();
        let opp_id = opp["Id"].as_str().unwrap().to_string();
        let inv = qb
            .create(
                "Invoice",
                &rec(json!({
                    "CustomerRef": {"value": customer["Id"]}, "DocNumber": format!("SF-{opp_id}"), "TxnDate": txn, "DueDate": due,
                    "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 200.00,
                              "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": 1, "UnitPrice": 200.00, "TaxCodeRef": {"value": "NON"}}}]
                })),
                &format!("status-test-invoice-{i}"),
            )
            .await
            .unwrap();
        sf.update("Opportunity", &opp_id, &rec(json!({"QuickBooks_Invoice_Id__c": inv["Id"]}))).await.unwrap();
        invoice_of.insert(opp_id.clone(), inv);
        opps.push(opp_id);
    }
    sync().await;
    let (on_time, late) = (&opps[0], &opps[1]);
    let total = to_decimal(&invoice_of[on_time]["TotalAmt"]).unwrap();
    let o = opp_fields(&sf, on_time).await;
    assert_eq!(o["QuickBooks_Payment_Status__c"], "Open");
    assert_eq!(to_decimal(&o["QuickBooks_Amount_Due__c"]).unwrap(), total);
    assert_eq!(o["QuickBooks_Due_Date__c"], "2099-12-31");
    assert!(o["QuickBooks_Last_Payment_Date__c"].is_null());
    assert_eq!(opp_fields(&sf, late).await["QuickBooks_Payment_Status__c"], "Overdue", "past its due date by the sandbox clock");

    // A partial payment, then the rest.
    let pay = |amount: Decimal, date: &'static str, n: u32| {
        let qb = qb.clone();
        let inv_id = invoice_of[on_time]["Id"].clone();
        let cust = customer["Id"].clone();
        async move {
            qb.create(
                "Payment",
                &rec(json!({"CustomerRef": {"value": cust}, "TotalAmt": amount.to_string().parse::<f64>().unwrap(), "TxnDate": date,
                            "Line": [{"Amount": amount.to_string().parse::<f64>().unwrap(), "LinkedTxn": [{"TxnId": inv_id, "TxnType": "Invoice"}]}]})),
                &format!("status-test-payment-{n}"),
            )
            .await
            .unwrap();
        }
    };
    pay(Decimal::new(7500, 2), "2026-11-21", 1).await;
    sync().await;
    let o = opp_fields(&sf, on_time).await;
    assert_eq!(o["QuickBooks_Payment_Status__c"], "Partially Paid");
    assert_eq!(to_decimal(&o["QuickBooks_Amount_Due__c"]).unwrap(), total - Decimal::new(7500, 2));
    assert_eq!(o["QuickBooks_Last_Payment_Date__c"], "2026-11-21");

    pay(total - Decimal::new(7500, 2), "2026-11-22", 2).await;
    sync().await;
    let o = opp_fields(&sf, on_time).await;
    assert_eq!(o["QuickBooks_Payment_Status__c"], "Paid");
    assert_eq!(to_decimal(&o["QuickBooks_Amount_Due__c"]).unwrap(), Decimal::ZERO);
    assert_eq!(o["QuickBooks_Last_Payment_Date__c"], "2026-11-22");

    // The same data again: nothing is written.
    let writes = store.list_audit(&AuditFilter::default()).await.unwrap().len();
    for inv in invoice_of.values() {
        let id = inv["Id"].as_str().unwrap();
        ledgerlink_engine::triggers::run_now(&engine, &flow, Some(id)).await.unwrap();
    }
    worker::drain(&engine).await.unwrap();
    assert_eq!(store.list_audit(&AuditFilter::default()).await.unwrap().len(), writes, "a re-run changes nothing");
}
