//! Every shipped template, re-run over the same data, changes nothing.
//!
//! For each name in `templates::TEMPLATES` this starts fresh sandboxes and an engine running that template alone,
//! plays the template's scenario (data a user would have, one settle of the flow, which must write something),
//! then delivers every source record of the scenario to the flow again as a fresh job and checks that no write
//! follows (the audit log does not grow). A template without a scenario fails the test by name.
//!
//! Adding a template: write `async fn <something>(h: &H) -> Vec<Replay>` below and add one arm to [`scenario`]
//! with the template's name. The function prepares what the flow needs (custom fields, existing records), calls
//! `h.engine.prime()`, makes the changes the flow reacts to, calls `h.settle()` (for a scheduled flow:
//! `triggers::run_now(&h.engine, &h.engine.flows[NAME], None)` first), and returns what to deliver again:
//! `Replay::Records` for record-triggered flows, `Replay::Firing` for scheduled ones.

mod support;

use std::future::Future;
use std::pin::Pin;

use ledgerlink_engine::templates;
use serde_json::json;
use support::{H, harness, rec};

/// What to deliver to the flow again.
enum Replay {
    /// Records `ids` of `object`, read now from connection `connection` (poll and webhook triggers).
    Records { connection: &'static str, object: &'static str, ids: Vec<String> },
    /// One more firing now (schedule triggers, and record triggers with a schedule).
    Firing,
}

type Scenario = for<'a> fn(&'a H) -> Pin<Box<dyn Future<Output = Vec<Replay>> + 'a>>;

/// The re-run scenario of each template, by name.
fn scenario(name: &str) -> Option<Scenario> {
    Some(match name {
        "salesforce-closed-won-to-quickbooks-invoice" => |h| Box::pin(closed_won(h)),
        "salesforce-account-to-quickbooks-customer" => |h| Box::pin(account_to_customer(h)),
        "quickbooks-customer-to-salesforce-account" => |h| Box::pin(customer_to_account(h)),
        "quickbooks-invoice-status-to-salesforce" => |h| Box::pin(invoice_status(h)),
        "salesforce-products-to-quickbooks-items" => |h| Box::pin(products(h)),
        "quickbooks-estimate-to-salesforce-opportunity" => |h| Box::pin(estimate(h)),
        "quickbooks-overdue-invoice-follow-up" => |h| Box::pin(overdue(h)),
        "salesforce-quickbooks-weekly-reconciliation" => |h| Box::pin(reconciliation(h)),
        _ => return None,
    })
}

/// Parameters a scenario installs its template with: the reconciliation's email copy goes to the Slack sandbox
/// (this harness starts no mail server; the SMTP delivery is proven in `templates_reconciliation.rs`).
fn params(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        "salesforce-quickbooks-weekly-reconciliation" => &[("email", "slack")],
        _ => &[],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_template_rerun_over_the_same_data_changes_nothing() {
    let missing: Vec<&str> = templates::names()
        .into_iter()
        .filter(|n| scenario(n).is_none())
        .collect();
    assert!(missing.is_empty(), "no re-run scenario for template(s) {missing:?}: add one to `scenario` in {}", file!());
    for name in templates::names() {
        let Some(play) = scenario(name) else { continue };
        let h = harness(&[name], params(name)).await;
        let replays = play(&h).await;
        assert!(h.writes().await > 0, "{name}: the scenario must make the flow write something, or the re-run proves nothing");
        assert!(
            replays.iter().any(|r| matches!(r, Replay::Firing) || matches!(r, Replay::Records { ids, .. } if !ids.is_empty())),
            "{name}: the scenario names nothing to re-run"
        );
        for r in &replays {
            match r {
                Replay::Records { connection, object, ids } => {
                    let writes = h.rerun(name, connection, object, ids).await;
                    assert_eq!(writes, 0, "{name}: re-running {object} {ids:?} wrote {writes} time(s)");
                }
                Replay::Firing => {
                    let before = h.writes().await;
                    ledgerlink_engine::triggers::run_now(&h.engine, &h.engine.flows[name], None).await.unwrap();
                    h.settle().await;
                    let writes = h.writes().await - before;
                    assert_eq!(writes, 0, "{name}: one more firing wrote {writes} time(s)");
                }
            }
        }
        let dead = h.store.list_jobs(&ledgerlink_store::JobFilter { status: Some(ledgerlink_store::JobStatus::Dead), ..Default::default() }).await.unwrap();
        assert!(dead.is_empty(), "{name}: jobs died: {dead:#?}");
        let parked = h.store.list_reviews(None).await.unwrap();
        assert!(parked.is_empty(), "{name}: runs wait for review: {parked:#?}");
    }
}

async fn closed_won(h: &H) -> Vec<Replay> {
    h.engine.prime().await.unwrap();
    let pb = h.find(&h.sf, "Pricebook2", vec![("IsStandard", json!(true))]).await[0]["Id"].as_str().unwrap().to_string();
    let entries = h.find(&h.sf, "PricebookEntry", vec![("Pricebook2Id", json!(pb))]).await;
    let account = h.sf_create("Account", json!({"Name": "Rerun Dental Group"})).await;
    let opp = h
        .sf_create("Opportunity", json!({"Name": "Rerun fit-out", "AccountId": account, "StageName": "Prospecting", "CloseDate": "2026-11-20", "Pricebook2Id": pb}))
        .await;
    for (i, qty) in [(0usize, 2), (1, 1)] {
        h.sf_create("OpportunityLineItem", json!({"OpportunityId": opp, "PricebookEntryId": entries[i]["Id"], "Quantity": qty})).await;
    }
    h.sf.update("Opportunity", &opp, &rec(json!({"StageName": "Closed Won"}))).await.unwrap();
    h.settle().await;
    vec![Replay::Records { connection: "salesforce", object: "Opportunity", ids: vec![opp] }]
}

async fn account_to_customer(h: &H) -> Vec<Replay> {
    h.engine.prime().await.unwrap();
    let account = h.sf_create("Account", json!({"Name": "Rerun Robotics", "Phone": "555-0101", "BillingCity": "Austin"})).await;
    h.sf_create("Contact", json!({"AccountId": account, "FirstName": "Ada", "LastName": "Rerun", "Email": "ada@rerun.example"})).await;
    h.settle().await;
    vec![Replay::Records { connection: "salesforce", object: "Account", ids: vec![account] }]
}

async fn customer_to_account(h: &H) -> Vec<Replay> {
    h.engine.prime().await.unwrap();
    let c = h.qb_create("Customer", json!({"DisplayName": "Rerun Bakery", "PrimaryPhone": {"FreeFormNumber": "555-0102"}})).await;
    h.settle().await;
    vec![Replay::Records { connection: "quickbooks", object: "Customer", ids: vec![c["Id"].as_str().unwrap().to_string()] }]
}

async fn invoice_status(h: &H) -> Vec<Replay> {
    for (name, ty) in [
        ("QuickBooks_Payment_Status__c", "Text"),
        ("QuickBooks_Amount_Due__c", "Currency"),
        ("QuickBooks_Due_Date__c", "Date"),
        ("QuickBooks_Last_Payment_Date__c", "Date"),
    ] {
        h.admin(&h.sfdc, "/sandbox/admin/fields", json!({"object": "Opportunity", "name": name, "type": ty})).await;
    }
    for (name, ty) in [
        ("QuickBooks_Payment_Status__c", "Text"),
        ("QuickBooks_Amount_Due__c", "Currency"),
        ("QuickBooks_Overdue_Invoices__c", "Number"),
        ("QuickBooks_Overdue_Amount__c", "Currency"),
        ("QuickBooks_Last_Payment_Date__c", "Date"),
    ] {
        h.admin(&h.sfdc, "/sandbox/admin/fields", json!({"object": "Account", "name": name, "type": ty})).await;
    }
    h.engine.prime().await.unwrap();
    let customer = h.qb_create("Customer", json!({"DisplayName": "Rerun Florist"})).await;
    let item = h.find(&h.qb, "Item", vec![]).await.remove(0);
    let account = h.sf_create("Account", json!({"Name": "Rerun Florist"})).await;
    let opp = h.sf_create("Opportunity", json!({"Name": "Rerun flowers", "AccountId": account, "StageName": "Closed Won", "CloseDate": "2026-11-20"})).await;
    let inv = h
        .qb_create(
            "Invoice",
            json!({"CustomerRef": {"value": customer["Id"]}, "DocNumber": format!("SF-{opp}"), "TxnDate": "2026-11-20", "DueDate": "2099-12-31",
                   "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 120.0,
                             "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": 1, "UnitPrice": 120.0, "TaxCodeRef": {"value": "NON"}}}]}),
        )
        .await;
    h.sf.update("Opportunity", &opp, &rec(json!({"QuickBooks_Invoice_Id__c": inv["Id"]}))).await.unwrap();
    h.settle().await;
    vec![Replay::Records { connection: "quickbooks", object: "Invoice", ids: vec![inv["Id"].as_str().unwrap().to_string()] }]
}

async fn products(h: &H) -> Vec<Replay> {
    h.engine.prime().await.unwrap();
    let pb = h.find(&h.sf, "Pricebook2", vec![("IsStandard", json!(true))]).await[0]["Id"].as_str().unwrap().to_string();
    let product = h.sf_create("Product2", json!({"Name": "Rerun Widget", "ProductCode": "RW-1", "Description": "A widget", "IsActive": true})).await;
    h.sf_create("PricebookEntry", json!({"Pricebook2Id": pb, "Product2Id": product, "UnitPrice": 99.5, "IsActive": true})).await;
    h.settle().await;
    vec![Replay::Records { connection: "salesforce", object: "Product2", ids: vec![product] }]
}

async fn estimate(h: &H) -> Vec<Replay> {
    h.sf_field("Opportunity", "QuickBooks_Estimate_Id__c").await;
    h.sf_field("OpportunityLineItem", "QuickBooks_Estimate_Line_Id__c").await;
    h.engine.prime().await.unwrap();
    let customer = h.qb_create("Customer", json!({"DisplayName": "Rerun Roofing"})).await;
    let item = h.qb_create("Item", json!({"Name": "Rerun Shingles", "Type": "Service", "UnitPrice": 35, "IncomeAccountRef": {"value": "1"}})).await;
    let estimate = h
        .qb_create(
            "Estimate",
            json!({"CustomerRef": {"value": customer["Id"]}, "TxnDate": "2026-11-20",
                   "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 700.0,
                             "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": 20, "UnitPrice": 35, "TaxCodeRef": {"value": "NON"}}}]}),
        )
        .await;
    h.settle().await;
    vec![Replay::Records { connection: "quickbooks", object: "Estimate", ids: vec![estimate["Id"].as_str().unwrap().to_string()] }]
}

async fn overdue(h: &H) -> Vec<Replay> {
    h.admin(&h.sfdc, "/sandbox/admin/fields", json!({"object": "Account", "name": "QuickBooks_Overdue__c", "type": "Checkbox"})).await;
    h.engine.prime().await.unwrap();
    let customer = h.qb_create("Customer", json!({"DisplayName": "Rerun Latecomers"})).await;
    let item = h.find(&h.qb, "Item", vec![]).await.remove(0);
    let account = h.sf_create("Account", json!({"Name": "Rerun Latecomers"})).await;
    let opp = h.sf_create("Opportunity", json!({"Name": "Rerun late deal", "AccountId": account, "StageName": "Closed Won", "CloseDate": "2026-01-20"})).await;
    let due = (chrono::Utc::now().date_naive() - chrono::Duration::days(10)).to_string();
    let inv = h
        .qb_create(
            "Invoice",
            json!({"CustomerRef": {"value": customer["Id"]}, "DocNumber": format!("SF-{opp}"), "TxnDate": "2026-01-20", "DueDate": due,
                   "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 64.5,
                             "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": 1, "UnitPrice": 64.5, "TaxCodeRef": {"value": "NON"}}}]}),
        )
        .await;
    // The backup sweep sees the new invoice, already past due: a Task, the flag, a message.
    h.settle().await;
    vec![Replay::Records { connection: "quickbooks", object: "Invoice", ids: vec![inv["Id"].as_str().unwrap().to_string()] }, Replay::Firing]
}

async fn reconciliation(h: &H) -> Vec<Replay> {
    // A deal won three days ago, invoiced in full, and one not invoiced: the week's report names the second.
    let day = (chrono::Utc::now().date_naive() - chrono::Duration::days(3)).to_string();
    let account = h.sf_create("Account", json!({"Name": "Rerun Reconciled"})).await;
    let billed = h.sf_create("Opportunity", json!({"Name": "Rerun billed", "AccountId": account, "StageName": "Closed Won", "CloseDate": day, "Amount": 640})).await;
    h.sf_create("Opportunity", json!({"Name": "Rerun forgotten", "AccountId": account, "StageName": "Closed Won", "CloseDate": day, "Amount": 99})).await;
    let customer = h.qb_create("Customer", json!({"DisplayName": "Rerun Reconciled"})).await;
    let item = h.find(&h.qb, "Item", vec![]).await.remove(0);
    h.qb_create(
        "Invoice",
        json!({"CustomerRef": {"value": customer["Id"]}, "DocNumber": format!("SF-{billed}"), "TxnDate": day,
               "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 640,
                         "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": 1, "UnitPrice": 640, "TaxCodeRef": {"value": "NON"}}}]}),
    )
    .await;
    ledgerlink_engine::triggers::run_now(&h.engine, &h.engine.flows["salesforce-quickbooks-weekly-reconciliation"], None).await.unwrap();
    h.settle().await;
    let reports = h.store.list_reports(Some("salesforce-quickbooks-weekly-reconciliation"), 10).await.unwrap();
    assert_eq!(reports.len(), 1, "the week's report is kept");
    assert!(reports[0].report.text.contains("Rerun forgotten"), "{}", reports[0].report.text);
    vec![Replay::Firing]
}
