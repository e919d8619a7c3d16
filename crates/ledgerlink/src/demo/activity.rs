//! The demo's activity beyond closing deals: one act per shipped template, each done the way a user of the two
//! systems would do it (edit an account, record a payment, change a price), followed by a wait until the effect
//! shows in the *other* system. Every act reports a [`Check`]: what was done, what was seen, and whether it held.
//! The checks read the sandboxes, never the engine's own counters, so the summary says what the systems hold.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledgerlink_connectors::{Connector, FindQuery, Record};
use ledgerlink_engine::executor::to_decimal;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::{Scenario, rec, s, say};

/// How long one act may take to show on the other side before it counts as failed.
const ACT_LIMIT: Duration = Duration::from_secs(60);

/// The outcome of one act.
#[derive(Debug, Clone)]
pub struct Check {
    /// The template the act exercises.
    pub template: &'static str,
    /// What a user did and what should follow, in words.
    pub what: String,
    pub ok: bool,
    /// What was seen (the value that arrived, or what was still missing at the deadline).
    pub seen: String,
}

impl Check {
    pub fn json(&self) -> Value {
        json!({"template": self.template, "what": self.what, "ok": self.ok, "seen": self.seen})
    }
}

/// Waits until `probe` returns `Some`, re-reading every 100 ms, for at most `limit`. Returns the last answer.
async fn wait_until<F, Fut>(limit: Duration, mut probe: F) -> anyhow::Result<Option<String>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<String>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(seen) = probe().await? {
            return Ok(Some(seen));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn check(template: &'static str, what: String, seen: Option<String>, missing: &str) -> Check {
    let ok = seen.is_some();
    let seen = seen.unwrap_or_else(|| format!("not seen within {} s: {missing}", ACT_LIMIT.as_secs()));
    say(&format!("  {} {what} → {seen}", if ok { "✓" } else { "✗" }));
    Check { template, what, ok, seen }
}

async fn one(c: &Arc<dyn Connector>, object: &str, field: &str, value: Value) -> anyhow::Result<Option<Record>> {
    let q = FindQuery { object: object.into(), equals: vec![(field.into(), value)], fields: vec![], limit: Some(2) };
    Ok(c.find(&q).await?.into_iter().next())
}

/// A JSON number written from a `Decimal` exactly as its text (the wire form both APIs take).
fn number(d: Decimal) -> Value {
    serde_json::from_str(&d.to_string()).unwrap_or(Value::Null)
}

/// `salesforce-closed-won-to-quickbooks-invoice` with its options: the first deal, won with payment terms, a
/// discount on the whole deal and its own sales rep, shows all three on its QuickBooks invoice (term and due
/// date, a discount line, the rep's class on every line).
pub async fn closed_won_options(qb: &Arc<dyn Connector>, scenario: &Scenario) -> anyhow::Result<Vec<Check>> {
    const TEMPLATE: &str = "salesforce-closed-won-to-quickbooks-invoice";
    let Some(first) = scenario.opportunities.first() else { return Ok(Vec::new()) };
    let invoices = scenario.invoices_by_opportunity(qb).await?;
    let what = format!(
        "“{}” won on {} terms with {} % off the deal, sold by {}",
        first.name,
        super::FIRST_DEAL_TERM,
        super::FIRST_DEAL_DISCOUNT,
        super::FIRST_DEAL_OWNER
    );
    let Some(inv) = invoices.get(&first.id).and_then(|v| v.first()) else {
        return Ok(vec![check(TEMPLATE, what, None, "no invoice")]);
    };
    let lines = inv.get("Line").and_then(Value::as_array).cloned().unwrap_or_default();
    let percent = lines
        .iter()
        .find(|l| l["DetailType"] == "DiscountLineDetail")
        .and_then(|l| to_decimal(&l["DiscountLineDetail"]["DiscountPercent"]).ok());
    let classes: Vec<String> = lines.iter().filter(|l| l["DetailType"] == "SalesItemLineDetail").map(|l| s(&rec(l["SalesItemLineDetail"]["ClassRef"].clone()), "name")).collect();
    let term = inv.get("SalesTermRef").map(|t| s(&rec(t.clone()), "name")).unwrap_or_default();
    let days = match (chrono::NaiveDate::parse_from_str(&s(inv, "TxnDate"), "%Y-%m-%d"), chrono::NaiveDate::parse_from_str(&s(inv, "DueDate"), "%Y-%m-%d")) {
        (Ok(t), Ok(d)) => (d - t).num_days(),
        _ => -1,
    };
    let ok = term == super::FIRST_DEAL_TERM
        && days == 30
        && percent == Some(Decimal::from(super::FIRST_DEAL_DISCOUNT))
        && !classes.is_empty()
        && classes.iter().all(|c| c == super::FIRST_DEAL_OWNER);
    let seen = format!(
        "invoice {}: term {term}, due {} ({days} days), discount line {} %, class {}, total {}",
        s(inv, "DocNumber"),
        s(inv, "DueDate"),
        percent.map(|p| p.normalize().to_string()).unwrap_or_else(|| "none".into()),
        classes.first().cloned().unwrap_or_else(|| "none".into()),
        inv.get("TotalAmt").map(Value::to_string).unwrap_or_default()
    );
    let c = check(TEMPLATE, what, ok.then_some(seen.clone()), &seen);
    Ok(vec![c])
}

/// `salesforce-account-to-quickbooks-customer` and `quickbooks-customer-to-salesforce-account`: a phone number
/// changed in Salesforce reaches the QuickBooks customer; a website entered in QuickBooks reaches the account.
pub async fn customer_edits(sf: &Arc<dyn Connector>, qb: &Arc<dyn Connector>, scenario: &Scenario) -> anyhow::Result<Vec<Check>> {
    let mut checks = Vec::new();
    let Some((account_id, account_name)) = scenario.new_accounts.first().cloned() else { return Ok(checks) };
    let Some(customer) = one(qb, "Customer", "DisplayName", json!(account_name)).await? else {
        checks.push(check(
            "salesforce-account-to-quickbooks-customer",
            format!("account “{account_name}” has a QuickBooks customer"),
            None,
            "no customer of that name",
        ));
        return Ok(checks);
    };
    let customer_id = s(&customer, "Id");

    let phone = "(503) 555-0142";
    say(&format!("sales updates the phone of “{account_name}” in Salesforce to {phone}"));
    sf.update("Account", &account_id, &rec(json!({"Phone": phone}))).await?;
    let seen = wait_until(ACT_LIMIT, || async {
        let c = qb.get("Customer", &customer_id, &[]).await?.unwrap_or_default();
        let now = c.get("PrimaryPhone").and_then(|p| p.get("FreeFormNumber")).and_then(Value::as_str).unwrap_or_default().to_string();
        Ok((now == phone).then(|| format!("QuickBooks customer {customer_id} phone {now}")))
    })
    .await?;
    checks.push(check("salesforce-account-to-quickbooks-customer", format!("Salesforce phone edit on “{account_name}”"), seen, "phone unchanged"));

    let website = "https://www.example-customer.test";
    say(&format!("finance enters the website of “{account_name}” in QuickBooks: {website}"));
    qb.update("Customer", &customer_id, &rec(json!({"WebAddr": {"URI": website}}))).await?;
    let seen = wait_until(ACT_LIMIT, || async {
        let a = sf.get("Account", &account_id, &["Id".into(), "Website".into()]).await?.unwrap_or_default();
        let now = s(&a, "Website");
        Ok((now == website).then(|| format!("Salesforce account Website {now}")))
    })
    .await?;
    checks.push(check("quickbooks-customer-to-salesforce-account", format!("QuickBooks website edit on “{account_name}”"), seen, "website unchanged"));
    Ok(checks)
}

/// `quickbooks-invoice-status-to-salesforce`: finance records a full payment on one invoice and a partial
/// payment on another; the opportunities show Paid and Partially Paid with the amount still due, and each one's
/// Account shows what its QuickBooks customer still owes and when it last paid.
pub async fn payments(sf: &Arc<dyn Connector>, qb: &Arc<dyn Connector>, scenario: &Scenario) -> anyhow::Result<Vec<Check>> {
    const TEMPLATE: &str = "quickbooks-invoice-status-to-salesforce";
    let mut checks = Vec::new();
    let per_opp = scenario.invoices_by_opportunity(qb).await?;
    let mut picked = scenario.opportunities.iter().filter_map(|o| per_opp.get(&o.id).and_then(|v| v.first()).map(|inv| (o, inv.clone())));
    let plan = [("Paid", Decimal::ONE), ("Partially Paid", Decimal::new(4, 1))];
    for (n, (status, share)) in plan.into_iter().enumerate() {
        let Some((opp, invoice)) = picked.next() else { break };
        let total = to_decimal(&invoice["TotalAmt"]).map_err(|e| anyhow::anyhow!(e))?;
        let amount = (total * share).round_dp(2);
        let due = total - amount;
        say(&format!("finance records a payment of {amount} USD on invoice {} (total {total} USD)", s(&invoice, "DocNumber")));
        qb.create(
            "Payment",
            &rec(json!({
                "CustomerRef": invoice["CustomerRef"],
                "TotalAmt": number(amount),
                "Line": [{"Amount": number(amount), "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}],
            })),
            &format!("demo-payment-{}-{n}", opp.id),
        )
        .await?;
        let fields = ["Id", "QuickBooks_Payment_Status__c", "QuickBooks_Amount_Due__c"].map(String::from);
        let seen = wait_until(ACT_LIMIT, || async {
            let o = sf.get("Opportunity", &opp.id, &fields).await?.unwrap_or_default();
            let shown = s(&o, "QuickBooks_Payment_Status__c");
            let amount_due = o.get("QuickBooks_Amount_Due__c").map(to_decimal).transpose().ok().flatten();
            Ok((shown == status && amount_due == Some(due)).then(|| format!("opportunity shows {shown}, {due} USD due")))
        })
        .await?;
        checks.push(check(TEMPLATE, format!("{status}: payment of {amount} of {total} USD"), seen, "status or amount due not updated"));
        checks.push(account_standing(sf, qb, &opp.id, &invoice).await?);
    }
    Ok(checks)
}

/// The Account of `opp` shows what the customer of `invoice` still owes (the sum of its open balances, read from
/// QuickBooks now) and a last payment date.
async fn account_standing(sf: &Arc<dyn Connector>, qb: &Arc<dyn Connector>, opp: &str, invoice: &Record) -> anyhow::Result<Check> {
    const TEMPLATE: &str = "quickbooks-invoice-status-to-salesforce";
    let account_id = sf.get("Opportunity", opp, &["Id".into(), "AccountId".into()]).await?.map(|o| s(&o, "AccountId")).unwrap_or_default();
    let customer = invoice.get("CustomerRef").and_then(|c| c.get("value")).cloned().unwrap_or(Value::Null);
    let q = FindQuery {
        object: "Invoice".into(),
        equals: vec![("CustomerRef".into(), customer), ("Balance >".into(), json!(0))],
        fields: vec!["Id".into(), "Balance".into()],
        limit: None,
    };
    let mut owed = Decimal::ZERO;
    for inv in qb.find(&q).await? {
        owed += inv.get("Balance").map(to_decimal).transpose().map_err(|e| anyhow::anyhow!(e))?.unwrap_or_default();
    }
    let fields = ["Id", "Name", "QuickBooks_Payment_Status__c", "QuickBooks_Amount_Due__c", "QuickBooks_Last_Payment_Date__c"].map(String::from);
    let seen = wait_until(ACT_LIMIT, || async {
        let a = sf.get("Account", &account_id, &fields).await?.unwrap_or_default();
        let due = a.get("QuickBooks_Amount_Due__c").map(to_decimal).transpose().ok().flatten();
        let paid = s(&a, "QuickBooks_Last_Payment_Date__c");
        Ok((due == Some(owed) && !paid.is_empty())
            .then(|| format!("account “{}”: {}, {owed} USD due, last payment {paid}", s(&a, "Name"), s(&a, "QuickBooks_Payment_Status__c"))))
    })
    .await?;
    Ok(check(TEMPLATE, format!("the account's standing ({owed} USD still owed in QuickBooks)"), seen, "account amount due or last payment not updated"))
}

/// `salesforce-products-to-quickbooks-items`: sales raises a list price in Salesforce, and it becomes the item's
/// price in QuickBooks; finance then changes the item's price in QuickBooks, and it reaches the price book.
pub async fn price_changes(sf: &Arc<dyn Connector>, qb: &Arc<dyn Connector>) -> anyhow::Result<Vec<Check>> {
    const TEMPLATE: &str = "salesforce-products-to-quickbooks-items";
    let mut checks = Vec::new();
    let standard = one(sf, "Pricebook2", "IsStandard", json!(true)).await?.ok_or_else(|| anyhow::anyhow!("no standard price book"))?;
    let q = FindQuery {
        object: "PricebookEntry".into(),
        equals: vec![("Pricebook2Id".into(), standard["Id"].clone())],
        fields: ["Id", "Product2Id", "UnitPrice"].map(String::from).to_vec(),
        limit: Some(1),
    };
    let Some(entry) = sf.find(&q).await?.into_iter().next() else { return Ok(checks) };
    let (entry_id, product_id) = (s(&entry, "Id"), s(&entry, "Product2Id"));
    let product = sf.get("Product2", &product_id, &["Id".into(), "Name".into()]).await?.unwrap_or_default();
    let name = s(&product, "Name");
    // The product has been in use for a while: its item and price are already paired up (one sync has run).
    let described = format!("{name}: renewal of the support plan for one year");
    sf.update("Product2", &product_id, &rec(json!({"Description": described}))).await?;
    let paired = wait_until(ACT_LIMIT, || async {
        let Some(item) = one(qb, "Item", "Name", json!(name)).await? else { return Ok(None) };
        Ok((s(&item, "Description") == described).then(String::new))
    })
    .await?;
    if paired.is_none() {
        checks.push(check(TEMPLATE, format!("product “{name}” has its QuickBooks item"), None, "item not updated from the product"));
        return Ok(checks);
    }
    let old = to_decimal(&entry["UnitPrice"]).map_err(|e| anyhow::anyhow!(e))?;
    let raised = (old * Decimal::new(110, 2)).round_dp(2);
    say(&format!("sales raises the list price of “{name}” from {old} to {raised} USD"));
    sf.update("PricebookEntry", &entry_id, &rec(json!({"UnitPrice": number(raised)}))).await?;
    // A price lives on the price book entry; the flow runs when the product itself changes (see the template).
    sf.update("Product2", &product_id, &rec(json!({"Description": format!("{name} (list price {raised} USD)")}))).await?;
    let item_price = |want: Decimal| {
        let (qb, name) = (qb.clone(), name.clone());
        async move {
            let Some(item) = one(&qb, "Item", "Name", json!(name)).await? else { return Ok(None) };
            let now = item.get("UnitPrice").map(to_decimal).transpose().ok().flatten();
            Ok((now == Some(want)).then(|| format!("QuickBooks item {} price {want} USD", s(&item, "Id"))))
        }
    };
    let seen = wait_until(ACT_LIMIT, || item_price(raised)).await?;
    checks.push(check(TEMPLATE, format!("Salesforce list price of “{name}” → {raised} USD"), seen.clone(), "item price unchanged"));
    if seen.is_none() {
        return Ok(checks);
    }

    let item = one(qb, "Item", "Name", json!(name)).await?.unwrap_or_default();
    let finance = raised + Decimal::new(5, 0);
    say(&format!("finance sets the price of item “{name}” in QuickBooks to {finance} USD"));
    qb.update("Item", &s(&item, "Id"), &rec(json!({"UnitPrice": number(finance)}))).await?;
    sf.update("Product2", &product_id, &rec(json!({"Description": format!("{name} (repriced by finance)")}))).await?;
    let seen = wait_until(ACT_LIMIT, || async {
        let e = sf.get("PricebookEntry", &entry_id, &["Id".into(), "UnitPrice".into()]).await?.unwrap_or_default();
        let now = e.get("UnitPrice").map(to_decimal).transpose().ok().flatten();
        Ok((now == Some(finance)).then(|| format!("standard price book entry {finance} USD")))
    })
    .await?;
    checks.push(check(TEMPLATE, format!("QuickBooks price of “{name}” → {finance} USD"), seen, "price book unchanged"));
    Ok(checks)
}

/// `quickbooks-estimate-to-salesforce-opportunity`: finance drafts an estimate for a customer in QuickBooks; the
/// sales team finds it in Salesforce as an opportunity with the estimate's products and amount.
pub async fn estimate(sf: &Arc<dyn Connector>, qb: &Arc<dyn Connector>, scenario: &Scenario) -> anyhow::Result<Vec<Check>> {
    const TEMPLATE: &str = "quickbooks-estimate-to-salesforce-opportunity";
    let Some((_, account_name)) = scenario.new_accounts.get(1).cloned() else { return Ok(Vec::new()) };
    let Some(customer) = one(qb, "Customer", "DisplayName", json!(account_name)).await? else { return Ok(Vec::new()) };
    let items = qb.find(&FindQuery { object: "Item".into(), equals: vec![("Type".into(), json!("Service"))], fields: vec![], limit: Some(2) }).await?;
    let lines: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let qty = Decimal::from(i + 2);
            let price = item.get("UnitPrice").map(to_decimal).transpose().ok().flatten().filter(|p| !p.is_zero()).unwrap_or(Decimal::new(250, 0));
            json!({"DetailType": "SalesItemLineDetail", "Amount": number(price * qty), "Description": s(item, "Name"),
                   "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": number(qty), "UnitPrice": number(price), "TaxCodeRef": {"value": "NON"}}})
        })
        .collect();
    say(&format!("finance drafts an estimate with {} lines for “{account_name}” in QuickBooks", lines.len()));
    let est = qb.create("Estimate", &rec(json!({"CustomerRef": {"value": customer["Id"]}, "Line": lines})), "demo-estimate-1").await?;
    let (est_id, total) = (s(&est, "Id"), to_decimal(&est["TotalAmt"]).map_err(|e| anyhow::anyhow!(e))?);
    let fields = ["Id", "Name", "Amount", "StageName"].map(String::from).to_vec();
    let seen = wait_until(ACT_LIMIT, || async {
        let q = FindQuery { object: "Opportunity".into(), equals: vec![("QuickBooks_Estimate_Id__c".into(), json!(est_id))], fields: fields.clone(), limit: Some(2) };
        let Some(opp) = sf.find(&q).await?.into_iter().next() else { return Ok(None) };
        let amount = opp.get("Amount").map(to_decimal).transpose().ok().flatten();
        let lq = FindQuery { object: "OpportunityLineItem".into(), equals: vec![("OpportunityId".into(), opp["Id"].clone())], fields: vec!["Id".into()], limit: None };
        let lines = sf.find(&lq).await?.len();
        Ok((amount == Some(total) && lines == items.len())
            .then(|| format!("opportunity “{}” ({}), {lines} products, {total} USD", s(&opp, "Name"), s(&opp, "StageName"))))
    })
    .await?;
    Ok(vec![check(TEMPLATE, format!("QuickBooks estimate {} for “{account_name}”, {total} USD", s(&est, "DocNumber")), seen, "no opportunity with the estimate's amount and products")])
}

/// `quickbooks-overdue-invoice-follow-up`: time passes (the sweep runs as it would 45 days from now) and every
/// invoice still unpaid is overdue: one Task for the account owner each, the account flagged, one Slack message
/// each. The invoice paid in full earlier gets nothing. Then finance records the payments of one flagged
/// account's open invoices, and the flag comes off.
pub async fn overdue(engine: &ledgerlink_engine::Engine, sf: &Arc<dyn Connector>, qb: &Arc<dyn Connector>, scenario: &Scenario, slack_base: &str) -> anyhow::Result<Vec<Check>> {
    const TEMPLATE: &str = "quickbooks-overdue-invoice-follow-up";
    let per_opp = scenario.invoices_by_opportunity(qb).await?;
    let mut unpaid = 0;
    for invoices in per_opp.values() {
        for inv in invoices {
            let current = qb.get("Invoice", &s(inv, "Id"), &[]).await?.unwrap_or_default();
            if current.get("Balance").map(to_decimal).transpose().ok().flatten().is_some_and(|b| b > Decimal::ZERO) {
                unpaid += 1;
            }
        }
    }
    let later = chrono::Utc::now() + chrono::Duration::days(45);
    say(&format!("45 days later: the overdue sweep runs as of {} ({unpaid} invoices still unpaid)", later.date_naive()));
    let flow = engine.flows.get(TEMPLATE).cloned().ok_or_else(|| anyhow::anyhow!("{TEMPLATE} is not installed"))?;
    ledgerlink_engine::triggers::tick(engine, &flow, later).await?;
    let seen = wait_until(ACT_LIMIT, || async {
        let q = FindQuery { object: "Task".into(), equals: vec![], fields: vec!["Id".into(), "Subject".into()], limit: None };
        let tasks = sf.find(&q).await?.into_iter().filter(|t| s(t, "Subject").starts_with("Overdue invoice")).count();
        let posted = slack_messages(slack_base).await?;
        Ok((tasks == unpaid && posted >= unpaid).then(|| format!("{tasks} follow-up tasks, {posted} Slack messages")))
    })
    .await?;
    let mut checks = vec![check(TEMPLATE, format!("{unpaid} unpaid invoices fall overdue"), seen, "tasks or Slack messages missing")];
    checks.push(overdue_paid(sf, qb, scenario, &per_opp).await?);
    Ok(checks)
}

/// Pays every open invoice of one flagged account's customer; the account's overdue flag must come off.
async fn overdue_paid(sf: &Arc<dyn Connector>, qb: &Arc<dyn Connector>, scenario: &Scenario, per_opp: &std::collections::BTreeMap<String, Vec<Record>>) -> anyhow::Result<Check> {
    const TEMPLATE: &str = "quickbooks-overdue-invoice-follow-up";
    const FLAG: &str = "QuickBooks_Overdue__c";
    let mut flagged = None;
    for opp in &scenario.opportunities {
        let Some(inv) = per_opp.get(&opp.id).and_then(|v| v.first()) else { continue };
        let account_id = sf.get("Opportunity", &opp.id, &["Id".into(), "AccountId".into()]).await?.map(|o| s(&o, "AccountId")).unwrap_or_default();
        let account = sf.get("Account", &account_id, &["Id".into(), "Name".into(), FLAG.into()]).await?.unwrap_or_default();
        if account.get(FLAG) == Some(&json!(true)) {
            flagged = Some((account_id, s(&account, "Name"), inv["CustomerRef"].clone()));
            break;
        }
    }
    let Some((account_id, name, customer)) = flagged else {
        return Ok(check(TEMPLATE, "a paid-up account loses its overdue flag".into(), None, "no account was flagged"));
    };
    let q = FindQuery { object: "Invoice".into(), equals: vec![("CustomerRef".into(), customer["value"].clone()), ("Balance >".into(), json!(0))], fields: vec![], limit: None };
    let open = qb.find(&q).await?;
    say(&format!("finance records the payment of “{name}”'s {} open invoices", open.len()));
    for inv in &open {
        let balance = inv.get("Balance").map(to_decimal).transpose().map_err(|e| anyhow::anyhow!(e))?.unwrap_or_default();
        qb.create(
            "Payment",
            &rec(json!({"CustomerRef": customer, "TotalAmt": number(balance),
                        "Line": [{"Amount": number(balance), "LinkedTxn": [{"TxnId": inv["Id"], "TxnType": "Invoice"}]}]})),
            &format!("demo-overdue-payment-{}", s(inv, "Id")),
        )
        .await?;
    }
    let seen = wait_until(ACT_LIMIT, || async {
        let a = sf.get("Account", &account_id, &["Id".into(), FLAG.into()]).await?.unwrap_or_default();
        Ok((a.get(FLAG) == Some(&json!(false))).then(|| format!("account “{name}” no longer flagged overdue")))
    })
    .await?;
    Ok(check(TEMPLATE, format!("“{name}” pays its overdue invoices"), seen, "overdue flag still set"))
}

/// `salesforce-quickbooks-weekly-reconciliation`: Monday's run compares the week's closed-won deals with its
/// invoices, keeps the report and posts it.
pub async fn reconciliation(engine: &ledgerlink_engine::Engine) -> anyhow::Result<Vec<Check>> {
    const TEMPLATE: &str = "salesforce-quickbooks-weekly-reconciliation";
    let flow = engine.flows.get(TEMPLATE).cloned().ok_or_else(|| anyhow::anyhow!("{TEMPLATE} is not installed"))?;
    // The first scheduled run after today covers the week that holds today.
    let monday = chrono::Utc::now() + chrono::Duration::days(7);
    say("Monday morning: the weekly reconciliation of closed-won deals against invoices runs");
    ledgerlink_engine::triggers::tick(engine, &flow, monday).await?;
    let seen = wait_until(ACT_LIMIT, || async {
        let reports = engine.store.list_reports(Some(TEMPLATE), 1).await?;
        Ok(reports.first().map(|r| format!("report {}: {}", r.id, r.report.text.lines().take(3).collect::<Vec<_>>().join(" / "))))
    })
    .await?;
    Ok(vec![check(TEMPLATE, "weekly closed-won vs invoiced".into(), seen, "no report kept")])
}

/// How many messages the Slack sandbox has received.
async fn slack_messages(base: &str) -> anyhow::Result<usize> {
    let v: Value = ledgerlink_connectors::http::client().get(format!("{base}/sandbox/admin/messages")).send().await?.json().await?;
    Ok(v["messages"].as_array().map_or(0, Vec::len))
}
