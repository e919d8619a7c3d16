//! `quickbooks-invoice-status-to-salesforce`, end to end: an invoice's status, amount due, due date and last payment
//! date reach its Salesforce opportunity, and its customer's amount due, overdue invoices and last payment reach the
//! Account, as payments are recorded in QuickBooks; an invoice past due shows Overdue, also one that falls due with
//! no change at all (the daily schedule); a re-run over the same data writes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use ledgerlink_connectors::{Connector, FindQuery, Record};
use ledgerlink_engine::executor::to_decimal;
use ledgerlink_engine::{Engine, EngineSettings, connections, poller, templates, triggers, worker};
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

/// The account fields a rep would look at: (status, amount due, overdue invoices, overdue amount, last payment).
async fn account_standing(sf: &Arc<dyn Connector>, id: &str) -> (String, Decimal, Decimal, Decimal, Value) {
    let fields: Vec<String> = ACCOUNT_FIELDS.iter().map(|(f, _)| f.to_string()).collect();
    let a = sf.get("Account", id, &fields).await.unwrap().unwrap();
    let amount = |f: &str| to_decimal(&a[f]).unwrap_or_else(|e| panic!("{f}: {e} in {a:?}"));
    (
        a["QuickBooks_Payment_Status__c"].as_str().unwrap_or_default().to_string(),
        amount("QuickBooks_Amount_Due__c"),
        amount("QuickBooks_Overdue_Invoices__c"),
        amount("QuickBooks_Overdue_Amount__c"),
        a["QuickBooks_Last_Payment_Date__c"].clone(),
    )
}

const ACCOUNT_FIELDS: &[(&str, &str)] = &[
    ("QuickBooks_Payment_Status__c", "Text"),
    ("QuickBooks_Amount_Due__c", "Currency"),
    ("QuickBooks_Overdue_Invoices__c", "Number"),
    ("QuickBooks_Overdue_Amount__c", "Currency"),
    ("QuickBooks_Last_Payment_Date__c", "Date"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_in_quickbooks_show_on_the_opportunity_and_the_account() {
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
    for (name, ty) in ACCOUNT_FIELDS {
        admin(&sfdc.base_url, "fields", json!({"object": "Account", "name": name, "type": ty})).await;
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

    // Won deals invoiced in QuickBooks (as the closed-won template leaves them): DocNumber SF-<opp>, id written
    // back; the account's customer has nothing else open.
    let customer = qb.create("Customer", &rec(json!({"DisplayName": "Status Watchers"})), "status-test-customer").await.unwrap();
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
    let account_id = account["Id"].as_str().unwrap().to_string();
    let late_total = to_decimal(&invoice_of[late]["TotalAmt"]).unwrap();
    assert_eq!(
        account_standing(&sf, &account_id).await,
        ("Overdue".to_string(), total + late_total, Decimal::ONE, late_total, Value::Null),
        "the account: both invoices due, the late one overdue, no payment yet"
    );

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
    assert_eq!(
        account_standing(&sf, &account_id).await,
        ("Overdue".to_string(), total - Decimal::new(7500, 2) + late_total, Decimal::ONE, late_total, json!("2026-11-21")),
        "a partial payment lowers the account's amount due and dates its last payment"
    );

    pay(total - Decimal::new(7500, 2), "2026-11-22", 2).await;
    sync().await;
    let o = opp_fields(&sf, on_time).await;
    assert_eq!(o["QuickBooks_Payment_Status__c"], "Paid");
    assert_eq!(to_decimal(&o["QuickBooks_Amount_Due__c"]).unwrap(), Decimal::ZERO);
    assert_eq!(o["QuickBooks_Last_Payment_Date__c"], "2026-11-22");
    assert_eq!(
        account_standing(&sf, &account_id).await,
        ("Overdue".to_string(), late_total, Decimal::ONE, late_total, json!("2026-11-22")),
        "paid in full: only the late invoice is still due"
    );

    // The late one is paid too: the account is paid up.
    qb.create(
        "Payment",
        &rec(json!({"CustomerRef": {"value": customer["Id"]}, "TotalAmt": late_total.to_string().parse::<f64>().unwrap(), "TxnDate": "2026-11-23",
                    "Line": [{"Amount": late_total.to_string().parse::<f64>().unwrap(), "LinkedTxn": [{"TxnId": invoice_of[late]["Id"], "TxnType": "Invoice"}]}]})),
        "status-test-payment-late",
    )
    .await
    .unwrap();
    sync().await;
    assert_eq!(opp_fields(&sf, late).await["QuickBooks_Payment_Status__c"], "Paid");
    assert_eq!(
        account_standing(&sf, &account_id).await,
        ("Paid up".to_string(), Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, json!("2026-11-23")),
    );


    // The same data again: nothing is written.
    let writes = store.list_audit(&AuditFilter::default()).await.unwrap().len();
    for inv in invoice_of.values() {
        let id = inv["Id"].as_str().unwrap();
        ledgerlink_engine::triggers::run_now(&engine, &flow, Some(id)).await.unwrap();
    }
    worker::drain(&engine).await.unwrap();
    assert_eq!(store.list_audit(&AuditFilter::default()).await.unwrap().len(), writes, "a re-run changes nothing");

    // A new invoice due in three days: Open. Five days on, with no change to it, the daily schedule shows it
    // Overdue on the opportunity and on the account.
    let opp = sf
        .create("Opportunity", &rec(json!({"Name": "Deal soon due", "AccountId": account["Id"], "StageName": "Closed Won", "CloseDate": "2026-11-20"})), "k")
        .await
        .unwrap();
    let soon = opp["Id"].as_str().unwrap().to_string();
    let today = chrono::Utc::now().date_naive();
    let inv = qb
        .create(
            "Invoice",
            &rec(json!({
                "CustomerRef": {"value": customer["Id"]}, "DocNumber": format!("SF-{soon}"), "DueDate": (today + chrono::Duration::days(3)).to_string(),
                "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 90.10,
                          "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": 1, "UnitPrice": 90.10, "TaxCodeRef": {"value": "NON"}}}]
            })),
            "status-test-invoice-soon",
        )
        .await
        .unwrap();
    sync().await;
    assert_eq!(opp_fields(&sf, &soon).await["QuickBooks_Payment_Status__c"], "Open");
    let soon_total = to_decimal(&inv["TotalAmt"]).unwrap();
    assert_eq!(account_standing(&sf, &account_id).await.0, "Open");
    triggers::tick(&engine, &flow, chrono::Utc::now() + chrono::Duration::days(5)).await.unwrap();
    worker::drain(&engine).await.unwrap();
    assert_eq!(opp_fields(&sf, &soon).await["QuickBooks_Payment_Status__c"], "Overdue", "the schedule notices a due date passing");
    assert_eq!(
        account_standing(&sf, &account_id).await,
        ("Overdue".to_string(), soon_total, Decimal::ONE, soon_total, json!("2026-11-23")),
    );
}
