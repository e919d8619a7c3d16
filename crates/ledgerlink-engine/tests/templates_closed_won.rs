//! `salesforce-closed-won-to-quickbooks-invoice` with its options in use, end to end against both sandboxes:
//! what finance checks on the QuickBooks invoice (lines merged by product, the deal discount line, term and due
//! date, the rep's class or custom field, the currency and the customer for it, the estimate it converts) and on
//! the opportunity (invoice id and number), and that a deal is billed once: a changed amount goes to review
//! with both amounts named, a deal whose estimate finance already converted is linked to that invoice.

mod support;

use ledgerlink_connectors::Record;
use ledgerlink_engine::executor::to_decimal;
use ledgerlink_engine::review::{self, Decision};
use ledgerlink_store::{ReviewItem, ReviewStatus};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use support::{H, harness, rec};

const FLOW: &str = "salesforce-closed-won-to-quickbooks-invoice";

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn amount(v: &Value) -> Decimal {
    to_decimal(v).unwrap_or_else(|e| panic!("{e}: {v}"))
}

/// Two products of our own in the standard price book: (seat licence entry at 120, onboarding entry at 1,500).
async fn products(h: &H) -> (String, String, String) {
    let pb = h.find(&h.sf, "Pricebook2", vec![("IsStandard", json!(true))]).await[0]["Id"].as_str().unwrap().to_string();
    let mut entries = Vec::new();
    for (name, price) in [("Seat Licence", 120), ("Onboarding Package", 1500)] {
        let product = h.sf_create("Product2", json!({"Name": name, "IsActive": true})).await;
        entries.push(h.sf_create("PricebookEntry", json!({"Pricebook2Id": pb, "Product2Id": product, "UnitPrice": price, "IsActive": true})).await);
    }
    (pb, entries.remove(0), entries.remove(0))
}

/// A deal with `fields` and `lines` = (price book entry, quantity, discount %), then won.
async fn won_deal(h: &H, pb: &str, account: &str, fields: Value, lines: &[(&str, u32, u32)]) -> String {
    let mut opp = json!({"Name": "Deal", "AccountId": account, "StageName": "Prospecting", "CloseDate": "2026-11-20", "Pricebook2Id": pb});
    for (k, v) in fields.as_object().unwrap() {
        opp[k] = v.clone();
    }
    let id = h.sf_create("Opportunity", opp).await;
    for (entry, qty, discount) in lines {
        let mut l = json!({"OpportunityId": id, "PricebookEntryId": entry, "Quantity": qty});
        if *discount > 0 {
            l["Discount"] = json!(discount);
        }
        h.sf_create("OpportunityLineItem", l).await;
    }
    h.sf.update("Opportunity", &id, &rec(json!({"StageName": "Closed Won"}))).await.unwrap();
    id
}

async fn invoices_of(h: &H, opp: &str) -> Vec<Record> {
    h.find(&h.qb, "Invoice", vec![("DocNumber", json!(format!("SF-{opp}")))]).await
}

async fn open_reviews(h: &H) -> Vec<ReviewItem> {
    h.store.list_reviews(Some(ReviewStatus::Open)).await.unwrap()
}

fn item_lines(invoice: &Record) -> Vec<&Value> {
    invoice["Line"].as_array().unwrap().iter().filter(|l| l["DetailType"] == "SalesItemLineDetail").collect()
}

async fn user_named(h: &H, name: &str) -> String {
    h.find(&h.sf, "User", vec![("Name", json!(name))]).await[0]["Id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terms_deal_discount_merged_lines_and_the_reps_class_then_a_changed_amount_goes_to_review() {
    let h = harness(
        &[FLOW],
        &[("terms_field", "Payment_Terms__c"), ("deal_discount_field", "Deal_Discount__c"), ("group_lines", "product"), ("sales_rep", "class")],
    )
    .await;
    h.sf_field("Opportunity", "Payment_Terms__c").await;
    h.admin(&h.sfdc, "/sandbox/admin/fields", json!({"object": "Opportunity", "name": "Deal_Discount__c", "type": "Percent"})).await;
    let (pb, seat, onboarding) = products(&h).await;
    h.engine.prime().await.unwrap();

    let account = h.sf_create("Account", json!({"Name": "Northwind Traders", "BillingCity": "Tacoma"})).await;
    let maria = user_named(&h, "Maria Chen").await;
    let fields = json!({"OwnerId": maria, "Payment_Terms__c": "Net 15", "Deal_Discount__c": 10});
    let opp = won_deal(&h, &pb, &account, fields, &[(&seat, 2, 0), (&onboarding, 1, 10), (&seat, 3, 0)]).await;
    assert!(h.settle().await > 0);

    let invoices = invoices_of(&h, &opp).await;
    assert_eq!(invoices.len(), 1, "one invoice for the deal");
    let inv = &invoices[0];
    let lines = item_lines(inv);
    assert_eq!(lines.len(), 2, "the two seat lines are one invoice line: {lines:?}");
    assert_eq!(lines[0]["SalesItemLineDetail"]["ItemRef"]["name"], "Seat Licence");
    assert_eq!(amount(&lines[0]["SalesItemLineDetail"]["Qty"]), dec("5"));
    assert_eq!(amount(&lines[0]["Amount"]), dec("600"));
    assert_eq!(lines[1]["SalesItemLineDetail"]["ItemRef"]["name"], "Onboarding Package");
    assert_eq!(amount(&lines[1]["Amount"]), dec("1350"), "1,500 less the line's 10 %");
    assert!(lines[1]["Description"].as_str().unwrap().contains("10% discount"));
    let discount: Vec<&Value> = inv["Line"].as_array().unwrap().iter().filter(|l| l["DetailType"] == "DiscountLineDetail").collect();
    assert_eq!(discount.len(), 1, "the deal discount is a line of its own");
    assert_eq!(discount[0]["DiscountLineDetail"]["PercentBased"], true);
    assert_eq!(amount(&discount[0]["DiscountLineDetail"]["DiscountPercent"]), dec("10"));
    assert_eq!(amount(&discount[0]["Amount"]), dec("195"));
    assert_eq!(amount(&inv["TotalAmt"]), dec("1755"), "1,950 of products less 10 % on the deal");
    assert_eq!(inv["SalesTermRef"]["name"], "Net 15");
    assert_eq!(inv["TxnDate"], "2026-11-20");
    assert_eq!(inv["DueDate"], "2026-12-05", "the close date plus the term's 15 days");
    let classes = h.find(&h.qb, "Class", vec![("Name", json!("Maria Chen"))]).await;
    assert_eq!(classes.len(), 1, "the owner's class was created");
    for l in &lines {
        assert_eq!(l["SalesItemLineDetail"]["ClassRef"]["value"], classes[0]["Id"], "every line carries the rep's class");
    }
    let o = h.sf.get("Opportunity", &opp, &[]).await.unwrap().unwrap();
    assert_eq!(o["QuickBooks_Invoice_Id__c"], inv["Id"]);
    assert_eq!(o["QuickBooks_Invoice_Number__c"], json!(format!("SF-{opp}")));

    // The same deal again writes nothing.
    assert_eq!(h.rerun(FLOW, "salesforce", "Opportunity", std::slice::from_ref(&opp)).await, 0);

    // One more seat after invoicing: no second invoice, a person is told both amounts.
    let extra = h.sf_create("OpportunityLineItem", json!({"OpportunityId": opp, "PricebookEntryId": seat, "Quantity": 1})).await;
    h.sf.update("Opportunity", &opp, &rec(json!({"Description": "one more seat"}))).await.unwrap();
    assert_eq!(h.settle().await, 0, "nothing is written");
    let reviews = open_reviews(&h).await;
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert_eq!(reviews[0].item.kind, "amount_changed");
    let reason = &reviews[0].item.reason;
    assert!(reason.contains(&format!("invoiced 1,755.00 USD on invoice SF-{opp}; opportunity now 1,863.00 USD")), "{reason}");
    assert_eq!(invoices_of(&h, &opp).await.len(), 1);

    // Retrying without a fix asks again; it never makes a second invoice. Dismissing ends it.
    review::resolve(h.store.as_ref(), reviews[0].id, &Decision::Retry, chrono::Utc::now()).await.unwrap();
    assert_eq!(h.settle().await, 0);
    let again = open_reviews(&h).await;
    assert_eq!((again.len(), again[0].item.kind.as_str()), (1, "amount_changed"));
    review::resolve(h.store.as_ref(), again[0].id, &Decision::Dismiss, chrono::Utc::now()).await.unwrap();
    assert_eq!(h.settle().await, 0);
    assert!(open_reviews(&h).await.is_empty());
    assert_eq!(invoices_of(&h, &opp).await.len(), 1, "still one invoice");

    // The extra seat taken off again: the deal is worth its invoice, nothing to say or write.
    h.sf.delete("OpportunityLineItem", &extra).await.unwrap();
    h.sf.update("Opportunity", &opp, &rec(json!({"Description": "back to the invoiced deal"}))).await.unwrap();
    assert_eq!(h.settle().await, 0);
    assert!(open_reviews(&h).await.is_empty());
    let counts = h.store.count_jobs().await.unwrap();
    assert_eq!(counts.dead, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_term_quickbooks_does_not_have_goes_to_review_and_nothing_is_written() {
    let h = harness(&[FLOW], &[("terms_field", "Payment_Terms__c")]).await;
    h.sf_field("Opportunity", "Payment_Terms__c").await;
    let (pb, seat, _) = products(&h).await;
    h.engine.prime().await.unwrap();
    let account = h.sf_create("Account", json!({"Name": "Blue Heron Studio"})).await;
    let opp = won_deal(&h, &pb, &account, json!({"Payment_Terms__c": "Net 45"}), &[(&seat, 1, 0)]).await;
    h.settle().await;
    let reviews = open_reviews(&h).await;
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].item.kind, "unknown_term");
    assert!(reviews[0].item.reason.contains("`Net 45`"), "{}", reviews[0].item.reason);
    assert!(invoices_of(&h, &opp).await.is_empty(), "no invoice with a guessed due date");
    let o = h.sf.get("Opportunity", &opp, &[]).await.unwrap().unwrap();
    assert_eq!(o["QuickBooks_Invoice_Id__c"], Value::Null);

    // Finance adds the term in QuickBooks; retrying the review invoices the deal with it.
    h.qb_create("Term", json!({"Name": "Net 45", "DueDays": 45})).await;
    review::resolve(h.store.as_ref(), reviews[0].id, &Decision::Retry, chrono::Utc::now()).await.unwrap();
    h.settle().await;
    let invoices = invoices_of(&h, &opp).await;
    assert_eq!(invoices.len(), 1);
    assert_eq!((invoices[0]["SalesTermRef"]["name"].as_str(), invoices[0]["DueDate"].as_str()), (Some("Net 45"), Some("2027-01-04")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rep_in_an_invoice_custom_field_and_a_deal_discount_as_an_amount() {
    let h = harness(
        &[FLOW],
        &[("sales_rep", "custom_field"), ("sales_rep_field_id", "2"), ("deal_discount_field", "Deal_Discount_Amount__c"), ("deal_discount_kind", "amount")],
    )
    .await;
    h.admin(&h.sfdc, "/sandbox/admin/fields", json!({"object": "Opportunity", "name": "Deal_Discount_Amount__c", "type": "Currency"})).await;
    let (pb, seat, _) = products(&h).await;
    h.engine.prime().await.unwrap();
    let account = h.sf_create("Account", json!({"Name": "Copperline Brewing"})).await;
    let james = user_named(&h, "James Okafor").await;
    let opp = won_deal(&h, &pb, &account, json!({"OwnerId": james, "Deal_Discount_Amount__c": 99.5}), &[(&seat, 4, 0)]).await;
    h.settle().await;
    let inv = &invoices_of(&h, &opp).await[0];
    let fields = inv["CustomField"].as_array().unwrap();
    assert!(
        fields.iter().any(|f| f["DefinitionId"] == "2" && f["StringValue"] == "James Okafor" && f["Type"] == "StringType"),
        "{fields:?}"
    );
    assert!(item_lines(inv).iter().all(|l| l["SalesItemLineDetail"].get("ClassRef").is_none()), "no class without sales_rep = class");
    let discount = inv["Line"].as_array().unwrap().iter().find(|l| l["DetailType"] == "DiscountLineDetail").unwrap();
    assert_eq!(discount["DiscountLineDetail"]["PercentBased"], false);
    assert_eq!(amount(&inv["TotalAmt"]), dec("380.5"), "480 less 99.50");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deal_in_another_currency_is_invoiced_to_the_accounts_customer_for_that_currency() {
    let h = harness(&[FLOW], &[("currency_field", "CurrencyIsoCode")]).await;
    h.admin(&h.sfdc, "/sandbox/admin/fields", json!({"object": "Opportunity", "name": "CurrencyIsoCode", "type": "Picklist"})).await;
    let (pb, seat, _) = products(&h).await;

    // Without multi-currency in QuickBooks, a euro deal is refused there and goes to review: no conversion.
    h.engine.prime().await.unwrap();
    let elsewhere = h.sf_create("Account", json!({"Name": "Skagen Design"})).await;
    let early = won_deal(&h, &pb, &elsewhere, json!({"CurrencyIsoCode": "EUR"}), &[(&seat, 1, 0)]).await;
    h.settle().await;
    let reviews = open_reviews(&h).await;
    assert_eq!(reviews.len(), 1);
    assert!(reviews[0].item.reason.contains("multicurrency is off"), "{}", reviews[0].item.reason);
    assert!(invoices_of(&h, &early).await.is_empty());
    review::resolve(h.store.as_ref(), reviews[0].id, &Decision::Dismiss, chrono::Utc::now()).await.unwrap();
    h.settle().await;

    h.qb.update("Preferences", "1", &rec(json!({"CurrencyPrefs": {"MultiCurrencyEnabled": true}}))).await.unwrap();
    let account = h.sf_create("Account", json!({"Name": "Fjord Analytics"})).await;
    let usd = won_deal(&h, &pb, &account, json!({"Name": "Fjord US", "CurrencyIsoCode": "USD"}), &[(&seat, 2, 0)]).await;
    h.settle().await;
    assert!(open_reviews(&h).await.is_empty(), "{:?}", open_reviews(&h).await);
    let usd_invoice = &invoices_of(&h, &usd).await[0];
    assert_eq!(usd_invoice["CurrencyRef"]["value"], "USD");
    let home = h.qb.get("Customer", usd_invoice["CustomerRef"]["value"].as_str().unwrap(), &[]).await.unwrap().unwrap();
    assert_eq!((home["DisplayName"].as_str(), home["CurrencyRef"]["value"].as_str()), (Some("Fjord Analytics"), Some("USD")));

    // QuickBooks itself refuses a euro invoice for that dollar customer.
    let refused = h
        .qb
        .create(
            "Invoice",
            &rec(json!({"CustomerRef": {"value": home["Id"]}, "CurrencyRef": {"value": "EUR"}, "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 10, "SalesItemLineDetail": {"ItemRef": {"value": usd_invoice["Line"][0]["SalesItemLineDetail"]["ItemRef"]["value"]}}}]})),
            "test-eur-on-usd",
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("currency"), "{refused}");

    let eur = won_deal(&h, &pb, &account, json!({"Name": "Fjord EU", "CurrencyIsoCode": "EUR"}), &[(&seat, 3, 0)]).await;
    h.settle().await;
    let eur_invoice = &invoices_of(&h, &eur).await[0];
    assert_eq!(eur_invoice["CurrencyRef"]["value"], "EUR");
    assert_eq!(amount(&eur_invoice["TotalAmt"]), dec("360"));
    let eu_customer = h.qb.get("Customer", eur_invoice["CustomerRef"]["value"].as_str().unwrap(), &[]).await.unwrap().unwrap();
    assert_eq!((eu_customer["DisplayName"].as_str(), eu_customer["CurrencyRef"]["value"].as_str()), (Some("Fjord Analytics (EUR)"), Some("EUR")));

    // A second euro deal of the account goes to the same euro customer.
    let eur2 = won_deal(&h, &pb, &account, json!({"Name": "Fjord EU 2", "CurrencyIsoCode": "EUR"}), &[(&seat, 1, 0)]).await;
    h.settle().await;
    assert_eq!(invoices_of(&h, &eur2).await[0]["CustomerRef"]["value"], eu_customer["Id"]);
    assert_eq!(h.find(&h.qb, "Customer", vec![("DisplayName", json!("Fjord Analytics (EUR)"))]).await.len(), 1);
    assert_eq!(h.rerun(FLOW, "salesforce", "Opportunity", &[usd, eur, eur2]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deal_from_an_estimate_is_billed_once_whether_or_not_finance_converted_it() {
    let h = harness(&[FLOW], &[("estimate_id_field", "QuickBooks_Estimate_Id__c")]).await;
    h.sf_field("Opportunity", "QuickBooks_Estimate_Id__c").await;
    let (pb, seat, _) = products(&h).await;
    h.engine.prime().await.unwrap();
    let customer = h.qb_create("Customer", json!({"DisplayName": "Harbor Lights Cafe"})).await;
    let item = h.qb_create("Item", json!({"Name": "Seat Licence", "Type": "Service", "UnitPrice": 120, "IncomeAccountRef": {"value": "1"}})).await;
    let estimate = |qty: u32| {
        json!({"CustomerRef": {"value": customer["Id"]}, "TxnDate": "2026-11-01", "Line": [
            {"DetailType": "SalesItemLineDetail", "Amount": 120 * qty, "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": qty, "UnitPrice": 120}}]})
    };
    let account = h.sf_create("Account", json!({"Name": "Harbor Lights Cafe"})).await;

    // Finance converted the first estimate in QuickBooks already.
    let converted = h.qb_create("Estimate", estimate(5)).await;
    let mut by_finance = estimate(5);
    by_finance["LinkedTxn"] = json!([{"TxnId": converted["Id"], "TxnType": "Estimate"}]);
    let finance_invoice = h.qb_create("Invoice", by_finance).await;
    let e = h.qb.get("Estimate", converted["Id"].as_str().unwrap(), &[]).await.unwrap().unwrap();
    assert_eq!(e["TxnStatus"], "Closed", "QuickBooks shows a converted estimate as closed");
    assert_eq!(e["LinkedTxn"], json!([{"TxnId": finance_invoice["Id"], "TxnType": "Invoice"}]));
    let opp_a = won_deal(&h, &pb, &account, json!({"Name": "From estimate A", "QuickBooks_Estimate_Id__c": converted["Id"]}), &[(&seat, 5, 0)]).await;

    // The second one is still open.
    let open = h.qb_create("Estimate", estimate(2)).await;
    let opp_b = won_deal(&h, &pb, &account, json!({"Name": "From estimate B", "QuickBooks_Estimate_Id__c": open["Id"]}), &[(&seat, 2, 0)]).await;
    h.settle().await;
    assert!(open_reviews(&h).await.is_empty(), "{:?}", open_reviews(&h).await);

    assert!(invoices_of(&h, &opp_a).await.is_empty(), "no second invoice for the converted estimate");
    let a = h.sf.get("Opportunity", &opp_a, &[]).await.unwrap().unwrap();
    assert_eq!(a["QuickBooks_Invoice_Id__c"], finance_invoice["Id"], "the deal points at finance's invoice");
    assert_eq!(a["QuickBooks_Invoice_Number__c"], finance_invoice["DocNumber"]);

    let b_invoices = invoices_of(&h, &opp_b).await;
    assert_eq!(b_invoices.len(), 1);
    assert_eq!(b_invoices[0]["LinkedTxn"], json!([{"TxnId": open["Id"], "TxnType": "Estimate"}]));
    let e = h.qb.get("Estimate", open["Id"].as_str().unwrap(), &[]).await.unwrap().unwrap();
    assert_eq!(e["TxnStatus"], "Closed", "the estimate now shows as converted");
    assert_eq!(e["LinkedTxn"], json!([{"TxnId": b_invoices[0]["Id"], "TxnType": "Invoice"}]));
    let all = h.find(&h.qb, "Invoice", vec![("CustomerRef", customer["Id"].clone())]).await;
    assert_eq!(all.len(), 2, "one invoice per estimate");

    assert_eq!(h.rerun(FLOW, "salesforce", "Opportunity", &[opp_a, opp_b]).await, 0);
}

/// QuickBooks answers a repeated `requestid` with its first answer. A customer it refused (a colon in the name is
/// reserved for sub-customers) must be created once the name is fixed and the review retried, not refused again
/// from the replayed answer; and still only once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_quickbooks_refused_succeeds_after_the_cause_is_fixed_and_still_only_once() {
    let h = harness(&[FLOW], &[]).await;
    h.settle().await; // the baseline
    let (pb, seat, _) = products(&h).await;
    let account = h.sf_create("Account", json!({"Name": "Colon: Holdings"})).await;
    let opp = won_deal(&h, &pb, &account, json!({}), &[(&seat, 2, 0)]).await;
    h.settle().await;
    let reviews = open_reviews(&h).await;
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert!(reviews[0].item.reason.contains("must not contain ':'"), "{}", reviews[0].item.reason);
    assert!(invoices_of(&h, &opp).await.is_empty());

    // Finance renames the account and retries.
    h.sf.update("Account", &account, &rec(json!({"Name": "Colon Holdings"}))).await.unwrap();
    review::resolve(h.store.as_ref(), reviews[0].id, &Decision::Retry, chrono::Utc::now()).await.unwrap();
    h.settle().await;
    assert!(open_reviews(&h).await.is_empty(), "{:?}", open_reviews(&h).await);
    let customers = h.find(&h.qb, "Customer", vec![("DisplayName", json!("Colon Holdings"))]).await;
    assert_eq!(customers.len(), 1);
    let invoices = invoices_of(&h, &opp).await;
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0]["CustomerRef"]["value"], customers[0]["Id"]);
    assert_eq!(amount(&invoices[0]["TotalAmt"]), dec("240"));

    // Redelivered and re-run: nothing more.
    assert_eq!(h.rerun(FLOW, "salesforce", "Opportunity", std::slice::from_ref(&opp)).await, 0);
    assert_eq!(h.find(&h.qb, "Customer", vec![("DisplayName", json!("Colon Holdings"))]).await.len(), 1);
}
