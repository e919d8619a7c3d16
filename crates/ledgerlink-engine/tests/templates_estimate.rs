//! `quickbooks-estimate-to-salesforce-opportunity`, end to end against both sandboxes: an estimate becomes one
//! opportunity with the right account, amount, stage, close date and products (found through the products
//! template's link, by name, or created); an edited estimate updates the opportunity and its products in place
//! and removes the line taken off; a run that lost every link (a crash between create and link) finds the
//! opportunity and its products again instead of making second ones.

mod support;

use ledgerlink_connectors::Record;
use ledgerlink_engine::executor::to_decimal;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use support::{H, harness, harness_on, rec};

const FLOW: &str = "quickbooks-estimate-to-salesforce-opportunity";
const PRODUCTS: &str = "salesforce-products-to-quickbooks-items";

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

async fn opportunities_of(h: &H, estimate: &str) -> Vec<Record> {
    h.find(&h.sf, "Opportunity", vec![("QuickBooks_Estimate_Id__c", json!(estimate))]).await
}

/// The opportunity's products as (product id, quantity, unit price, discount, total), by product.
async fn lines_of(h: &H, opp: &str) -> Vec<(String, Decimal, Decimal, Decimal, Decimal, String)> {
    let mut out: Vec<_> = h
        .find(&h.sf, "OpportunityLineItem", vec![("OpportunityId", json!(opp))])
        .await
        .iter()
        .map(|l| {
            let d = |k: &str| to_decimal(&l[k]).unwrap_or_else(|e| panic!("{k}: {e} in {l:?}"));
            (l["Product2Id"].as_str().unwrap().to_string(), d("Quantity"), d("UnitPrice"), d("Discount"), d("TotalPrice"), l["Id"].as_str().unwrap().to_string())
        })
        .collect();
    out.sort();
    out
}

fn sales_line(id: Option<&str>, item: &Record, qty: u32, price: &str) -> Value {
    let mut l = json!({"DetailType": "SalesItemLineDetail", "Amount": (dec(price) * Decimal::from(qty)).to_string().parse::<f64>().unwrap(),
        "Description": format!("{} × {qty}", item["Name"].as_str().unwrap()),
        "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": qty, "UnitPrice": price.parse::<f64>().unwrap(), "TaxCodeRef": {"value": "NON"}}});
    if let Some(id) = id {
        l["Id"] = json!(id);
    }
    l
}

fn discount(percent: u32) -> Value {
    json!({"DetailType": "DiscountLineDetail", "DiscountLineDetail": {"PercentBased": true, "DiscountPercent": percent}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_estimate_becomes_one_opportunity_with_its_products_and_follows_its_edits() {
    let h = harness(&[PRODUCTS, FLOW], &[]).await;
    h.sf_field("Opportunity", "QuickBooks_Estimate_Id__c").await;
    h.sf_field("OpportunityLineItem", "QuickBooks_Estimate_Line_Id__c").await;
    // Before the flows start: the account (to be matched by normalised name), a product that only shares its
    // name with a QuickBooks item (no price yet), and the QuickBooks side of the deal.
    let account = h.sf_create("Account", json!({"Name": "Acme Solar, Inc."})).await;
    let battery_product = h.sf_create("Product2", json!({"Name": "Battery Pack", "IsActive": true})).await;
    let customer = h.qb_create("Customer", json!({"DisplayName": "Acme Solar"})).await;
    let battery = h.qb_create("Item", json!({"Name": "Battery Pack", "Type": "Service", "UnitPrice": 400, "IncomeAccountRef": {"value": "1"}})).await;
    let survey = h.qb_create("Item", json!({"Name": "Site Survey", "Sku": "SURV-1", "Type": "Service", "UnitPrice": 250, "IncomeAccountRef": {"value": "1"}})).await;
    h.engine.prime().await.unwrap();

    // A product made in Salesforce: the products template makes its QuickBooks item and links the two.
    let pb = h.find(&h.sf, "Pricebook2", vec![("IsStandard", json!(true))]).await[0]["Id"].as_str().unwrap().to_string();
    let panel_product = h.sf_create("Product2", json!({"Name": "Solar Panel Install", "ProductCode": "SPI-100", "IsActive": true})).await;
    h.sf_create("PricebookEntry", json!({"Pricebook2Id": pb, "Product2Id": panel_product, "UnitPrice": 1200, "IsActive": true})).await;
    h.settle().await;
    let panel_id = h.linked("salesforce", "Product2", &panel_product, "quickbooks", "Item").await.expect("the products template linked the item");
    let panel = h.qb.get("Item", &panel_id, &[]).await.unwrap().unwrap();

    // The estimate: three item lines and 10 % off the whole estimate.
    let estimate = h
        .qb_create(
            "Estimate",
            json!({"CustomerRef": {"value": customer["Id"]}, "TxnDate": "2026-11-20", "ExpirationDate": "2026-12-31",
                   "Line": [sales_line(None, &panel, 2, "1200"), sales_line(None, &survey, 1, "250"), sales_line(None, &battery, 3, "400"), discount(10)]}),
        )
        .await;
    let est_id = estimate["Id"].as_str().unwrap().to_string();
    assert_eq!(to_decimal(&estimate["TotalAmt"]).unwrap(), dec("3465"), "3850 less 10 %");
    assert!(h.settle().await > 0);

    let opps = opportunities_of(&h, &est_id).await;
    assert_eq!(opps.len(), 1, "one opportunity for the estimate");
    let opp = &opps[0];
    let opp_id = opp["Id"].as_str().unwrap().to_string();
    assert_eq!(opp["Name"], format!("Estimate {} - Acme Solar", estimate["DocNumber"].as_str().unwrap()));
    assert_eq!(opp["AccountId"], account.as_str(), "the existing account, matched by its normalised name");
    assert_eq!(opp["StageName"], "Proposal/Price Quote");
    assert_eq!(opp["CloseDate"], "2026-12-31", "the estimate's expiration date");
    assert_eq!(opp["Pricebook2Id"], pb.as_str());
    assert_eq!(to_decimal(&opp["Amount"]).unwrap(), dec("3465"), "the opportunity is worth what the estimate is");
    assert_eq!(h.linked("quickbooks", "Customer", customer["Id"].as_str().unwrap(), "salesforce", "Account").await.as_deref(), Some(account.as_str()));

    let survey_product = h.linked("quickbooks", "Item", survey["Id"].as_str().unwrap(), "salesforce", "Product2").await.expect("a product for the survey item");
    let created = h.sf.get("Product2", &survey_product, &[]).await.unwrap().unwrap();
    assert_eq!((created["Name"].as_str(), created["ProductCode"].as_str()), (Some("Site Survey"), Some("SURV-1")));
    let mut want = vec![
        (panel_product.clone(), dec("2"), dec("1200"), dec("10"), dec("2160")),
        (survey_product.clone(), dec("1"), dec("250"), dec("10"), dec("225")),
        (battery_product.clone(), dec("3"), dec("400"), dec("10"), dec("1080")),
    ];
    want.sort();
    let lines = lines_of(&h, &opp_id).await;
    assert_eq!(lines.iter().map(|l| (l.0.clone(), l.1, l.2, l.3, l.4)).collect::<Vec<_>>(), want, "one product per estimate line, through the link, by name, and created");
    let line_ids: std::collections::BTreeMap<String, String> = lines.iter().map(|l| (l.0.clone(), l.5.clone())).collect();
    // The battery product (matched by name) got its standard price at the item's price.
    let entries = h.find(&h.sf, "PricebookEntry", vec![("Product2Id", json!(battery_product)), ("Pricebook2Id", json!(pb))]).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(to_decimal(&entries[0]["UnitPrice"]).unwrap(), dec("400"));

    // The customer accepts a changed estimate: one more panel, a lower battery price, no survey.
    let current = h.qb.get("Estimate", &est_id, &[]).await.unwrap().unwrap();
    let ids: Vec<String> = current["Line"].as_array().unwrap().iter().filter(|l| l["DetailType"] == "SalesItemLineDetail").map(|l| l["Id"].as_str().unwrap().to_string()).collect();
    h.qb.update("Estimate", &est_id, &rec(json!({"TxnStatus": "Accepted", "Line": [sales_line(Some(&ids[0]), &panel, 3, "1200"), sales_line(Some(&ids[2]), &battery, 3, "380"), discount(10)]})))
        .await
        .unwrap();
    assert!(h.settle().await > 0);
    let opps = opportunities_of(&h, &est_id).await;
    assert_eq!(opps.len(), 1, "still one opportunity");
    assert_eq!(opps[0]["Id"], opp_id.as_str());
    assert_eq!(opps[0]["StageName"], "Closed Won", "an accepted estimate is a won deal");
    let total = to_decimal(&h.qb.get("Estimate", &est_id, &[]).await.unwrap().unwrap()["TotalAmt"]).unwrap();
    assert_eq!(total, dec("4266"));
    assert_eq!(to_decimal(&opps[0]["Amount"]).unwrap(), total);
    let lines = lines_of(&h, &opp_id).await;
    let mut want = vec![
        (panel_product.clone(), dec("3"), dec("1200"), dec("10"), dec("3240"), line_ids[&panel_product].clone()),
        (battery_product.clone(), dec("3"), dec("380"), dec("10"), dec("1026"), line_ids[&battery_product].clone()),
    ];
    want.sort();
    assert_eq!(lines, want, "the kept lines are updated in place, the removed one is gone");
    let audit = h.store.list_audit(&Default::default()).await.unwrap();
    assert!(audit.iter().any(|a| a.entry.action == "delete" && a.entry.record_id.as_deref() == Some(line_ids[&survey_product].as_str())));

    // The same estimate again changes nothing.
    assert_eq!(h.rerun(FLOW, "quickbooks", "Estimate", std::slice::from_ref(&est_id)).await, 0);

    // A run that lost every link and intent (as after a crash between a create and its link): the opportunity
    // and its products are found by their estimate keys, nothing is created twice.
    let fresh = harness_on(h.qbo.clone(), h.sfdc.clone(), &[FLOW], &[]).await;
    assert_eq!(fresh.rerun(FLOW, "quickbooks", "Estimate", std::slice::from_ref(&est_id)).await, 0, "nothing to write");
    assert_eq!(opportunities_of(&h, &est_id).await.len(), 1);
    assert_eq!(lines_of(&h, &opp_id).await, want);
    assert_eq!(fresh.linked("quickbooks", "Estimate", &est_id, "salesforce", "Opportunity").await.as_deref(), Some(opp_id.as_str()), "linked again");
    let counts = h.store.count_jobs().await.unwrap();
    assert_eq!((counts.dead, counts.parked), (0, 0));
}
