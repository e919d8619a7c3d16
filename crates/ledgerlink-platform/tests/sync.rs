//! End to end over real HTTP with the QuickBooks sandbox: an invoice pushed through the API appears in
//! QuickBooks with the right lines, tax and total; a payment recorded in QuickBooks comes back as the platform
//! invoice's payment status and as a signed webhook; disconnecting stops both directions and reconnecting resumes.

mod common;

use common::{eventually, receiver, world};
use ledgerlink_connectors::FindQuery;
use ledgerlink_platform::webhooks::{SIGNATURE_HEADER, verify_signature};
use ledgerlink_platform::{QbRef, SyncStatus};
use rust_decimal::Decimal;
use serde_json::{Value, json};

fn dec(v: &Value) -> Decimal {
    match v {
        Value::String(s) => s.parse().unwrap(),
        Value::Number(n) => n.to_string().parse().unwrap(),
        other => panic!("not an amount: {other}"),
    }
}

/// Settings for the sandbox company: new products post to "Services"; the platform's VAT rate maps to the
/// Sonoma County sales tax code (7.25 % + 1.25 %).
async fn configure(w: &common::World, ws: &str) {
    let lists = w.platform.company_lists(ws).await.unwrap();
    let income = lists.income_accounts.iter().find(|a| a.name == "Services").expect("the sandbox has a Services income account");
    let sonoma = lists.tax_codes.iter().find(|t| t.name == "Sonoma County").expect("the sandbox has the Sonoma County tax code");
    let mut s = w.platform.load_settings(ws).await.unwrap();
    s.invoices.income_account = Some(QbRef { id: income.id.clone(), name: income.name.clone() });
    s.tax_codes.insert("sales-tax".into(), QbRef { id: sonoma.id.clone(), name: sonoma.name.clone() });
    w.platform.save_settings(ws, &s).await.unwrap();
}

async fn push_catalogue(w: &common::World, token: &str) {
    for (path, body) in [
        ("/api/v1/platform/clients", json!({"id": "cl-1", "name": "Northwind Garden Co", "email": "billing@northwind.example"})),
        ("/api/v1/platform/services", json!({"id": "svc-design", "name": "Garden design", "unit_price": "95.00"})),
        ("/api/v1/platform/services", json!({"id": "svc-plants", "name": "Planting", "unit_price": "12.50"})),
        ("/api/v1/platform/tax-rates", json!({"id": "sales-tax", "name": "Sales tax", "rate_percent": "8.5"})),
    ] {
        let (status, resp) = w.post(token, path, &body, None).await;
        assert_eq!(status, 201, "{path}: {resp}");
    }
}

fn invoice(id: &str, number: &str) -> Value {
    json!({
        "id": id, "number": number, "client_id": "cl-1", "currency": "USD", "issue_date": "2026-11-02", "due_date": "2026-12-02",
        "lines": [
            {"service_id": "svc-design", "quantity": "3", "unit_price": "95.00", "description": "Design sessions"},
            {"service_id": "svc-plants", "quantity": "7", "unit_price": "12.345", "tax_rate_id": "sales-tax"},
        ],
    })
}

async fn synced(w: &common::World, token: &str, path: &str) -> Value {
    eventually(20, &format!("{path} synced"), || async {
        let (status, rec) = w.get(token, path).await;
        assert_eq!(status, 200, "{rec}");
        (rec["sync"]["status"] == "synced").then_some(rec)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_invoice_reaches_quickbooks_and_payments_come_back_signed() {
    let w = world().await;
    let (ws, token) = w.workspace("Northwind Platform").await;
    w.connect(&ws).await;
    let test = w.platform.test_connection(&ws).await.unwrap();
    assert!(test.ok, "{test:?}");
    assert_eq!(test.company_name.as_deref(), Some("Juniper & Finch Landscape Design"));
    assert!(test.checks.iter().all(|c| c.ok) && test.checks.len() == 3);
    configure(&w, &ws).await;
    let (hook_url, received) = receiver(vec![]).await;
    let (status, sub) = w.post(&token, "/api/v1/platform/webhooks", &json!({"url": hook_url, "events": ["invoice.payment_updated"]}), None).await;
    assert_eq!(status, 201, "{sub}");
    let secret = sub["secret"].as_str().unwrap().to_string();

    push_catalogue(&w, &token).await;
    let (status, rec) = w.post(&token, "/api/v1/platform/invoices", &invoice("inv-1001", "P-1001"), None).await;
    assert_eq!(status, 201, "{rec}");
    assert_eq!(rec["sync"]["status"], "pending", "accepted before QuickBooks is called");

    let rec = synced(&w, &token, "/api/v1/platform/invoices/inv-1001").await;
    let qb_id = rec["sync"]["quickbooks_id"].as_str().unwrap().to_string();

    // In QuickBooks: the right customer, lines, amounts, tax and total.
    let qb = w.quickbooks(&ws).await;
    let inv = qb.get("Invoice", &qb_id, &[]).await.unwrap().expect("the invoice is in QuickBooks");
    assert_eq!(inv["DocNumber"], "P-1001");
    let customer = qb.get("Customer", inv["CustomerRef"]["value"].as_str().unwrap(), &[]).await.unwrap().unwrap();
    assert_eq!(customer["DisplayName"], "Northwind Garden Co");
    assert_eq!(customer["PrimaryEmailAddr"]["Address"], "billing@northwind.example");
    let lines: Vec<&Value> = inv["Line"].as_array().unwrap().iter().filter(|l| l["DetailType"] == "SalesItemLineDetail").collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(dec(&lines[0]["Amount"]), Decimal::new(28500, 2));
    assert_eq!(lines[0]["SalesItemLineDetail"]["TaxCodeRef"]["value"], "NON");
    // 7 × 12.345 = 86.415 → 86.42 (half away from zero).
    assert_eq!(dec(&lines[1]["Amount"]), Decimal::new(8642, 2));
    assert_eq!(lines[1]["SalesItemLineDetail"]["TaxCodeRef"]["value"], "TAX");
    // "Garden design" matched the company's existing "Garden Design" product; "Planting" was created under the
    // income account chosen in the settings.
    let design_item = qb.get("Item", lines[0]["SalesItemLineDetail"]["ItemRef"]["value"].as_str().unwrap(), &[]).await.unwrap().unwrap();
    assert_eq!(design_item["Name"], "Garden Design");
    let planting = qb.get("Item", lines[1]["SalesItemLineDetail"]["ItemRef"]["value"].as_str().unwrap(), &[]).await.unwrap().unwrap();
    assert_eq!(planting["Name"], "Planting");
    assert_eq!(planting["IncomeAccountRef"]["name"], "Services");
    // Sonoma County: 7.25 % of 86.42 = 6.27, 1.25 % = 1.08 (each rounded), total tax 7.35.
    assert_eq!(dec(&inv["TxnTaxDetail"]["TotalTax"]), Decimal::new(735, 2));
    let total = Decimal::new(28500 + 8642 + 735, 2);
    assert_eq!(dec(&inv["TotalAmt"]), total);
    assert_eq!(dec(&rec["sync"]["quickbooks_total"]), total);
    assert_eq!(rec["payment"]["status"], "unpaid");

    // A repeat push of the same invoice writes nothing new.
    let (status, _) = w.post(&token, "/api/v1/platform/invoices", &invoice("inv-1001", "P-1001"), None).await;
    assert_eq!(status, 200);
    let all = qb.find(&FindQuery { object: "Invoice".into(), equals: vec![("DocNumber".into(), json!("P-1001"))], ..Default::default() }).await.unwrap();
    assert_eq!(all.len(), 1, "one invoice in QuickBooks");

    // The finance team records a partial payment in QuickBooks.
    let pay = |amount: &str, date: &str| {
        // QuickBooks takes JSON numbers; they are written from the decimal text, never through a float.
        let n: Value = serde_json::from_str(amount).unwrap();
        json!({"CustomerRef": inv["CustomerRef"], "TotalAmt": n, "TxnDate": date,
               "Line": [{"Amount": n, "LinkedTxn": [{"TxnId": qb_id, "TxnType": "Invoice"}]}]})
    };
    let serde_json::Value::Object(p1) = pay("100.00", "2026-11-10") else { unreachable!() };
    qb.create("Payment", &p1, "test-payment-1").await.unwrap();
    let rec = eventually(20, "partially paid", || async {
        let (_, r) = w.get(&token, "/api/v1/platform/invoices/inv-1001/payment").await;
        (r["payment"]["status"] == "partially_paid").then_some(r)
    })
    .await;
    assert_eq!(dec(&rec["payment"]["amount_paid"]), Decimal::new(10000, 2));
    assert_eq!(dec(&rec["payment"]["balance"]), total - Decimal::new(10000, 2));
    assert_eq!(rec["payment"]["last_payment_date"], "2026-11-10");

    let rest = (total - Decimal::new(10000, 2)).to_string();
    let serde_json::Value::Object(p2) = pay(&rest, "2026-11-20") else { unreachable!() };
    qb.create("Payment", &p2, "test-payment-2").await.unwrap();
    let rec = eventually(20, "paid", || async {
        let (_, r) = w.get(&token, "/api/v1/platform/invoices/inv-1001").await;
        (r["payment"]["status"] == "paid").then_some(r)
    })
    .await;
    assert_eq!(dec(&rec["payment"]["amount_paid"]), total);
    assert_eq!(dec(&rec["payment"]["balance"]), Decimal::ZERO);
    assert_eq!(rec["payment"]["last_payment_date"], "2026-11-20");

    // Two signed webhooks: partially paid, then paid. The receiver verifies each signature.
    let events = eventually(20, "two webhooks", || async {
        let got = received.0.lock().unwrap().clone();
        (got.len() >= 2).then_some(got)
    })
    .await;
    let mut statuses = Vec::new();
    for (headers, body) in &events {
        let sig = headers.get(SIGNATURE_HEADER).unwrap().to_str().unwrap();
        verify_signature(&secret, sig, body, chrono::Utc::now().timestamp(), 300).expect("the signature verifies");
        assert!(verify_signature("whsec_wrong", sig, body, chrono::Utc::now().timestamp(), 300).is_err());
        let mut tampered = body.to_vec();
        tampered[10] ^= 1;
        assert!(verify_signature(&secret, sig, &tampered, chrono::Utc::now().timestamp(), 300).is_err());
        assert!(verify_signature(&secret, sig, body, chrono::Utc::now().timestamp() + 3600, 300).is_err(), "an old delivery is a replay");
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["type"], "invoice.payment_updated");
        assert_eq!(event["workspace_id"], ws.as_str());
        assert_eq!(event["data"]["invoice_id"], "inv-1001");
        statuses.push(event["data"]["payment"]["status"].as_str().unwrap().to_string());
    }
    assert_eq!(statuses[..2], ["partially_paid", "paid"]);

    // Each delivery is listed with its attempt.
    let (_, deliveries) = w.get(&token, "/api/v1/platform/webhook-deliveries").await;
    let d = deliveries["data"].as_array().unwrap();
    assert!(d.len() >= 2);
    assert!(d.iter().all(|d| d["status"] == "done" && d["attempts"][0]["status_code"] == 200), "{deliveries}");

    // Every QuickBooks write is in the audit log.
    let audit = w.store.list_audit(&ledgerlink_store::AuditFilter { flow: Some("platform".into()), ..Default::default() }).await.unwrap();
    let created: Vec<&str> = audit.iter().filter(|a| a.entry.outcome == "ok").map(|a| a.entry.object.as_str()).collect();
    for object in ["Customer", "Item", "Invoice"] {
        assert!(created.contains(&object), "{object} create audited: {created:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_stops_both_directions_and_reconnect_resumes() {
    let w = world().await;
    let (ws, token) = w.workspace("Disconnecting Co").await;
    w.connect(&ws).await;
    configure(&w, &ws).await;
    push_catalogue(&w, &token).await;
    w.post(&token, "/api/v1/platform/invoices", &invoice("inv-1", "D-1"), None).await;
    let rec = synced(&w, &token, "/api/v1/platform/invoices/inv-1").await;
    let qb_id = rec["sync"]["quickbooks_id"].as_str().unwrap().to_string();
    let qb = w.quickbooks(&ws).await;

    let name = ledgerlink_platform::integration::connection_name(&ws);
    let before = w.store.get_connection(&name).await.unwrap().unwrap();
    let old_refresh = before.credentials["refresh_token"].as_str().unwrap().to_string();
    let old_access = before.credentials["access_token"].as_str().unwrap().to_string();
    let done = w.platform.disconnect(&ws).await.unwrap();
    assert!(done.revoked && done.revoke_error.is_none(), "{done:?}");
    // The tokens are gone from the store; the company stays named for the card.
    let after = w.store.get_connection(&name).await.unwrap().unwrap();
    assert!(after.credentials.get("refresh_token").is_none() && after.credentials.get("access_token").is_none(), "tokens deleted");
    assert_eq!(after.config["realm_id"], before.config["realm_id"]);
    // QuickBooks recorded the revocation, and the old tokens no longer work there.
    let revocations: Vec<Value> = w.http.get(format!("{}/sandbox/admin/revocations", w.qbo.base_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(revocations.len(), 1, "{revocations:?}");
    assert!(revocations[0]["refresh_tokens_sha256"].as_array().unwrap().contains(&json!(ledgerlink_sandbox::quickbooks::oauth::fingerprint(&old_refresh))));
    let refreshed = w
        .http
        .post(w.qbo.info_str("token_url"))
        .basic_auth(w.qbo.info_str("client_id"), Some(w.qbo.info_str("client_secret")))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", old_refresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 400, "the old refresh token is refused");
    assert_eq!(refreshed.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let realm = w.qbo.info_str("realm_id");
    let read = w.http.get(format!("{}/v3/company/{realm}/companyinfo/{realm}", w.qbo.base_url)).bearer_auth(&old_access).send().await.unwrap();
    assert_eq!(read.status(), 401, "the old access token is refused");

    let test = w.platform.test_connection(&ws).await.unwrap();
    assert!(!test.ok);
    assert!(test.message.contains("Connect QuickBooks"), "{test:?}");

    // Outbound: a push is stored and answered, but nothing reaches QuickBooks.
    let (status, _) = w.post(&token, "/api/v1/platform/invoices", &invoice("inv-2", "D-2"), None).await;
    assert_eq!(status, 201);
    // Inbound: a payment recorded in QuickBooks is not read.
    let inv = qb.get("Invoice", &qb_id, &[]).await.unwrap().unwrap();
    let serde_json::Value::Object(p) = json!({"CustomerRef": inv["CustomerRef"], "TotalAmt": 50,
        "Line": [{"Amount": 50, "LinkedTxn": [{"TxnId": qb_id, "TxnType": "Invoice"}]}]}) else { unreachable!() };
    qb.create("Payment", &p, "test-payment-disconnected").await.unwrap();
    // The worker pauses the queued sync (rather than spending its attempts).
    eventually(20, "the sync task paused", || async {
        let tasks = w.store.list_tasks(&ws, Some("sync.record"), 50).await.unwrap();
        tasks.iter().any(|t| t.status == ledgerlink_store::TaskStatus::Paused).then_some(())
    })
    .await;
    // Several payment polls have passed (200 ms each) by the time the pause is seen and these reads return.
    for _ in 0..3 {
        w.platform.run_due(8).await.unwrap();
        assert_eq!(w.platform.poll_payments(&ws).await.unwrap(), 0, "no payment is read while disconnected");
    }
    let (_, r2) = w.get(&token, "/api/v1/platform/invoices/inv-2").await;
    assert_eq!(r2["sync"]["status"], "pending");
    let (_, r1) = w.get(&token, "/api/v1/platform/invoices/inv-1").await;
    assert_eq!(r1["payment"]["status"], "unpaid");
    let found = qb.find(&FindQuery { object: "Invoice".into(), equals: vec![("DocNumber".into(), json!("D-2"))], ..Default::default() }).await.unwrap();
    assert!(found.is_empty(), "nothing was written while disconnected");
    // Data on both sides is kept.
    assert!(qb.get("Invoice", &qb_id, &[]).await.unwrap().is_some());
    assert_eq!(r1["sync"]["status"], "synced");

    // Reconnect (a new sign-in): the paused push goes out and the payment comes in.
    w.connect(&ws).await;
    let r2 = synced(&w, &token, "/api/v1/platform/invoices/inv-2").await;
    assert!(r2["sync"]["quickbooks_id"].is_string());
    eventually(20, "the payment made while disconnected is read", || async {
        let (_, r) = w.get(&token, "/api/v1/platform/invoices/inv-1").await;
        (r["payment"]["status"] == "partially_paid").then_some(())
    })
    .await;
    let rec = w.platform.get_record(&ws, ledgerlink_platform::RecordKind::Invoice, "inv-2").await.unwrap();
    assert_eq!(rec.sync.status, SyncStatus::Synced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expenses_become_bills_or_expenses_against_the_chosen_accounts() {
    let w = world().await;
    let (ws, token) = w.workspace("Expenses").await;
    w.connect(&ws).await;
    let expense = |id: &str, amount: &str| {
        json!({"id": id, "workflow_id": "wf-spring-planting", "vendor": "Redwood Nursery Supply", "date": "2026-11-05",
               "currency": "USD", "amount": amount, "description": "Seedlings"})
    };
    // No expense account chosen yet: the expense waits for the setting, saying which.
    w.post(&token, "/api/v1/platform/expenses", &expense("ex-1", "240.10"), None).await;
    let rec = eventually(20, "expense needs review", || async {
        let (_, r) = w.get(&token, "/api/v1/platform/expenses/ex-1").await;
        (r["sync"]["status"] == "needs_review").then_some(r)
    })
    .await;
    assert!(rec["sync"]["error"].as_str().unwrap().contains("chart-of-accounts"), "{rec}");

    // Choosing the account in the settings releases it: a bill to the existing vendor.
    let lists = w.platform.company_lists(&ws).await.unwrap();
    let account = lists.expense_accounts.first().expect("the sandbox has expense accounts").clone();
    let bank = lists.payment_accounts.iter().find(|a| a.detail == "Bank").expect("a bank account").clone();
    let mut s = w.platform.load_settings(&ws).await.unwrap();
    s.expenses.expense_account = Some(QbRef { id: account.id.clone(), name: account.name.clone() });
    w.platform.save_settings(&ws, &s).await.unwrap();
    let rec = synced(&w, &token, "/api/v1/platform/expenses/ex-1").await;
    assert_eq!(rec["sync"]["quickbooks_type"], "Bill");
    let qb = w.quickbooks(&ws).await;
    let bill = qb.get("Bill", rec["sync"]["quickbooks_id"].as_str().unwrap(), &[]).await.unwrap().unwrap();
    assert_eq!(dec(&bill["TotalAmt"]), Decimal::new(24010, 2));
    assert_eq!(bill["Line"][0]["AccountBasedExpenseLineDetail"]["AccountRef"]["value"], account.id.as_str());
    assert!(bill["Line"][0]["Description"].as_str().unwrap().contains("wf-spring-planting"));
    let vendor = qb.get("Vendor", bill["VendorRef"]["value"].as_str().unwrap(), &[]).await.unwrap().unwrap();
    assert_eq!(vendor["DisplayName"], "Redwood Nursery Supply", "the existing vendor, not a new one");

    // As expenses paid from the bank account: a Purchase.
    s.expenses.post_as = ledgerlink_platform::ExpensePostAs::Expense;
    s.expenses.payment_account = Some(QbRef { id: bank.id.clone(), name: bank.name.clone() });
    w.platform.save_settings(&ws, &s).await.unwrap();
    w.post(&token, "/api/v1/platform/expenses", &expense("ex-2", "19.99"), None).await;
    let rec = synced(&w, &token, "/api/v1/platform/expenses/ex-2").await;
    assert_eq!(rec["sync"]["quickbooks_type"], "Purchase");
    let purchase = qb.get("Purchase", rec["sync"]["quickbooks_id"].as_str().unwrap(), &[]).await.unwrap().unwrap();
    assert_eq!(purchase["AccountRef"]["value"], bank.id.as_str());
    assert_eq!(purchase["PaymentType"], "Cash");
    assert_eq!(dec(&purchase["TotalAmt"]), Decimal::new(1999, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_and_unmapped_invoices_wait_for_the_settings_then_sync() {
    let w = world().await;
    let (ws, token) = w.workspace("Held").await;
    w.connect(&ws).await;
    let mut s = w.platform.load_settings(&ws).await.unwrap();
    s.invoices.auto_push = false;
    w.platform.save_settings(&ws, &s).await.unwrap();
    push_catalogue(&w, &token).await;
    let (status, rec) = w.post(&token, "/api/v1/platform/invoices", &invoice("inv-h", "H-1"), None).await;
    assert_eq!(status, 201);
    assert_eq!(rec["sync"]["status"], "held", "automatic push is off: {rec}");
    let (_, rate) = w.get(&token, "/api/v1/platform/tax-rates/sales-tax").await;
    assert_eq!(rate["sync"]["status"], "needs_review", "an unmapped tax rate asks for its mapping");

    // Push switched on, but the tax rate is still unmapped: the invoice says what to map.
    s.invoices.auto_push = true;
    w.platform.save_settings(&ws, &s).await.unwrap();
    let rec = eventually(20, "invoice needs review", || async {
        let (_, r) = w.get(&token, "/api/v1/platform/invoices/inv-h").await;
        (r["sync"]["status"] == "needs_review").then_some(r)
    })
    .await;
    assert!(rec["sync"]["error"].as_str().unwrap().contains("sales-tax"), "{rec}");

    // Mapping the rate (and the income account for new products) lets it through.
    configure(&w, &ws).await;
    let (_, rate) = w.get(&token, "/api/v1/platform/tax-rates/sales-tax").await;
    assert_eq!(rate["sync"]["status"], "synced");
    let rec = synced(&w, &token, "/api/v1/platform/invoices/inv-h").await;
    assert_eq!(dec(&rec["sync"]["quickbooks_total"]), Decimal::new(28500 + 8642 + 735, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_quickbooks_refuses_still_disconnects_and_says_why() {
    let w = world().await;
    let (ws, _token) = w.workspace("Unreachable revoke").await;
    w.connect(&ws).await;
    // The revocation endpoint is down: a port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let name = ledgerlink_platform::integration::connection_name(&ws);
    let conn = w.store.get_connection(&name).await.unwrap().unwrap();
    let mut config = conn.config.clone();
    config["revoke_url"] = json!(format!("http://{closed}/v2/oauth2/tokens/revoke"));
    w.store
        .put_connection(&ledgerlink_store::NewConnection { name: name.clone(), system: conn.system, config, credentials: conn.credentials })
        .await
        .unwrap();

    let done = w.platform.disconnect(&ws).await.unwrap();
    assert!(!done.revoked);
    let why = done.revoke_error.expect("the failure is said");
    assert!(why.contains("could not be reached"), "{why}");
    assert_eq!(done.status.state, ledgerlink_platform::ConnectionState::Disconnected);
    let after = w.store.get_connection(&name).await.unwrap().unwrap();
    assert!(after.credentials.get("refresh_token").is_none(), "the tokens are deleted here all the same");
    let revocations: Vec<Value> = w.http.get(format!("{}/sandbox/admin/revocations", w.qbo.base_url)).send().await.unwrap().json().await.unwrap();
    assert!(revocations.is_empty());
    // Disconnecting again is a no-op.
    let again = w.platform.disconnect(&ws).await.unwrap();
    assert!(again.revoke_error.is_none() && !again.revoked);
}

/// The audit log's QuickBooks writes of one object, as (action, record id), oldest first.
async fn writes(w: &common::World, object: &str) -> Vec<(String, String)> {
    let audit = w.store.list_audit(&ledgerlink_store::AuditFilter { flow: Some("platform".into()), ..Default::default() }).await.unwrap();
    audit
        .iter()
        .filter(|a| a.entry.object == object && a.entry.outcome == "ok")
        .rev()
        .map(|a| (a.entry.action.clone(), a.entry.record_id.clone().unwrap_or_default()))
        .collect()
}

async fn synced_version(w: &common::World, token: &str, path: &str, version: i64) -> Value {
    eventually(20, &format!("{path} version {version} synced"), || async {
        let (_, rec) = w.get(token, path).await;
        (rec["sync"]["status"] == "synced" && rec["version"] == version).then_some(rec)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_clients_and_services_update_quickbooks_and_unchanged_pushes_write_nothing() {
    let w = world().await;
    let (ws, token) = w.workspace("Edits").await;
    w.connect(&ws).await;
    configure(&w, &ws).await;
    let client = json!({"id": "cl-7", "name": "Bramble & Thorn Nursery", "email": "ap@bramble.example", "phone": "(555) 201-0000"});
    let service = json!({"id": "svc-prune", "name": "Hedge pruning", "description": "Per hour", "unit_price": "48.00"});
    assert_eq!(w.post(&token, "/api/v1/platform/clients", &client, None).await.0, 201);
    assert_eq!(w.post(&token, "/api/v1/platform/services", &service, None).await.0, 201);
    let c = synced(&w, &token, "/api/v1/platform/clients/cl-7").await;
    let s = synced(&w, &token, "/api/v1/platform/services/svc-prune").await;
    let customer_id = c["sync"]["quickbooks_id"].as_str().unwrap().to_string();
    let item_id = s["sync"]["quickbooks_id"].as_str().unwrap().to_string();
    let qb = w.quickbooks(&ws).await;
    let customer = qb.get("Customer", &customer_id, &[]).await.unwrap().unwrap();
    let item = qb.get("Item", &item_id, &[]).await.unwrap().unwrap();
    assert_eq!(writes(&w, "Customer").await, vec![("create".to_string(), customer_id.clone())]);

    // The same client and service pushed again: nothing is written to QuickBooks.
    assert_eq!(w.post(&token, "/api/v1/platform/clients", &client, None).await.0, 200);
    assert_eq!(w.post(&token, "/api/v1/platform/services", &service, None).await.0, 200);
    w.platform.drain().await.unwrap();
    assert_eq!(qb.get("Customer", &customer_id, &[]).await.unwrap().unwrap()["SyncToken"], customer["SyncToken"]);
    assert_eq!(qb.get("Item", &item_id, &[]).await.unwrap().unwrap()["SyncToken"], item["SyncToken"]);
    assert_eq!(writes(&w, "Customer").await.len(), 1);
    assert_eq!(writes(&w, "Item").await.len(), 1);

    // Meanwhile the finance team adds a note to the customer in QuickBooks; the platform does not own that field.
    let serde_json::Value::Object(note) = json!({"Notes": "Prefers paper invoices"}) else { unreachable!() };
    qb.update("Customer", &customer_id, &note).await.unwrap();

    // Renamed with a new email; the service gets a new name and price.
    let edited = json!({"id": "cl-7", "name": "Bramble and Thorn Nursery Ltd", "email": "accounts@bramble.example", "phone": "(555) 201-0000"});
    assert_eq!(w.post(&token, "/api/v1/platform/clients", &edited, None).await.0, 200);
    let repriced = json!({"id": "svc-prune", "name": "Hedge pruning and shaping", "description": "Per hour", "unit_price": "52.50"});
    assert_eq!(w.post(&token, "/api/v1/platform/services", &repriced, None).await.0, 200);
    let c = synced_version(&w, &token, "/api/v1/platform/clients/cl-7", 2).await;
    let s = synced_version(&w, &token, "/api/v1/platform/services/svc-prune", 2).await;
    assert_eq!(c["sync"]["quickbooks_id"], customer_id.as_str(), "the same customer, updated");
    assert_eq!(s["sync"]["quickbooks_id"], item_id.as_str(), "the same product, updated");

    let updated = qb.get("Customer", &customer_id, &[]).await.unwrap().unwrap();
    assert_eq!(updated["DisplayName"], "Bramble and Thorn Nursery Ltd");
    assert_eq!(updated["PrimaryEmailAddr"]["Address"], "accounts@bramble.example");
    assert_eq!(updated["PrimaryPhone"]["FreeFormNumber"], "(555) 201-0000");
    assert_eq!(updated["Notes"], "Prefers paper invoices", "a field the platform does not own is left alone");
    let token_of = |v: &Value| v.as_str().unwrap().parse::<u64>().unwrap();
    assert_eq!(token_of(&updated["SyncToken"]), token_of(&customer["SyncToken"]) + 2, "one note, one sparse update");
    let item = qb.get("Item", &item_id, &[]).await.unwrap().unwrap();
    assert_eq!(item["Name"], "Hedge pruning and shaping");
    assert_eq!(dec(&item["UnitPrice"]), Decimal::new(5250, 2));
    assert_eq!(writes(&w, "Customer").await, vec![("create".to_string(), customer_id.clone()), ("update".to_string(), customer_id.clone())]);
    // Only the changed fields were sent.
    let audit = w.store.list_audit(&ledgerlink_store::AuditFilter { flow: Some("platform".into()), ..Default::default() }).await.unwrap();
    let sent = audit.iter().find(|a| a.entry.object == "Customer" && a.entry.action == "update").unwrap().entry.after.clone().unwrap();
    let mut fields: Vec<&String> = sent.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(fields, ["DisplayName", "PrimaryEmailAddr"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quickbooks_notification_brings_a_payment_back_at_once() {
    // Payments are polled only once an hour here: what arrives promptly came through the notification.
    let w = common::world_with(ledgerlink_platform::PlatformOptions { payment_poll: std::time::Duration::from_secs(3600), ..common::options() }).await;
    let (ws, token) = w.workspace("Notified").await;
    w.connect(&ws).await;
    configure(&w, &ws).await;
    let (hook_url, received) = receiver(vec![]).await;
    let (status, sub) = w.post(&token, "/api/v1/platform/webhooks", &json!({"url": hook_url, "events": ["invoice.payment_updated"]}), None).await;
    assert_eq!(status, 201, "{sub}");
    // The QuickBooks app's webhook endpoint points at the platform's notification route.
    let endpoint = format!("{}{}", w.base, ledgerlink_platform::api::QUICKBOOKS_NOTIFICATIONS_PATH);
    let reg = w.http.post(format!("{}/sandbox/admin/webhooks", w.qbo.base_url)).json(&json!({"url": endpoint, "entities": ["Payment", "Invoice"]})).send().await.unwrap();
    assert_eq!(reg.status(), 200);

    push_catalogue(&w, &token).await;
    w.post(&token, "/api/v1/platform/invoices", &invoice("inv-n1", "N-1"), None).await;
    let rec = synced(&w, &token, "/api/v1/platform/invoices/inv-n1").await;
    let qb_id = rec["sync"]["quickbooks_id"].as_str().unwrap().to_string();
    let qb = w.quickbooks(&ws).await;
    let inv = qb.get("Invoice", &qb_id, &[]).await.unwrap().unwrap();
    let serde_json::Value::Object(p) = json!({"CustomerRef": inv["CustomerRef"], "TotalAmt": inv["TotalAmt"], "TxnDate": "2026-11-21",
        "Line": [{"Amount": inv["TotalAmt"], "LinkedTxn": [{"TxnId": qb_id, "TxnType": "Invoice"}]}]}) else { unreachable!() };
    qb.create("Payment", &p, "notified-payment").await.unwrap();

    let rec = eventually(20, "paid through the notification", || async {
        let (_, r) = w.get(&token, "/api/v1/platform/invoices/inv-n1").await;
        (r["payment"]["status"] == "paid").then_some(r)
    })
    .await;
    assert_eq!(rec["payment"]["last_payment_date"], "2026-11-21");
    let events = eventually(20, "the platform's webhook", || async {
        let got = received.0.lock().unwrap().clone();
        (!got.is_empty()).then_some(got)
    })
    .await;
    let event: Value = serde_json::from_slice(&events[0].1).unwrap();
    assert_eq!(event["data"]["payment"]["status"], "paid");
    // QuickBooks' deliveries to the endpoint were accepted, and a read was queued through the task queue.
    let deliveries: Vec<Value> = w.http.get(format!("{}/sandbox/admin/webhooks/deliveries", w.qbo.base_url)).send().await.unwrap().json().await.unwrap();
    assert!(!deliveries.is_empty() && deliveries.iter().all(|d| d["attempts"][0]["status"] == 200), "{deliveries:?}");
    let reads = w.store.list_tasks(&ws, Some(ledgerlink_platform::notifications::TASK_PAYMENTS), 50).await.unwrap();
    assert!(!reads.is_empty());

    // A delivery with a wrong signature is refused and queues nothing; a re-delivery queues nothing new.
    let body = deliveries[0]["body"].as_str().unwrap().to_string();
    let forged = w.http.post(&endpoint).header("intuit-signature", "bm90IGEgc2lnbmF0dXJl").body(body.clone()).send().await.unwrap();
    assert_eq!(forged.status(), 401);
    let unsigned = w.http.post(&endpoint).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let again = w.http.post(&endpoint).header("intuit-signature", deliveries[0]["signature"].as_str().unwrap()).body(body).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["queued"], 0, "Intuit's retry of the same delivery");
    assert_eq!(w.store.list_tasks(&ws, Some(ledgerlink_platform::notifications::TASK_PAYMENTS), 50).await.unwrap().len(), reads.len());
}

/// QuickBooks refuses a client whose name holds a colon (it marks sub-customers). The platform shows why; pushed
/// again with the name fixed, the client is created, even though QuickBooks answers a repeated request with its
/// first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_quickbooks_refused_syncs_once_the_admin_fixes_it() {
    let w = world().await;
    let (ws, token) = w.workspace("Refused").await;
    w.connect(&ws).await;
    configure(&w, &ws).await;
    let bad = json!({"id": "cl-9", "name": "Hollow: Oak Landscapes", "email": "ap@hollowoak.example"});
    assert_eq!(w.post(&token, "/api/v1/platform/clients", &bad, None).await.0, 201);
    let rec = eventually(20, "client refused", || async {
        let (_, r) = w.get(&token, "/api/v1/platform/clients/cl-9").await;
        (r["sync"]["status"] != "pending" && r["sync"]["status"] != "synced").then_some(r)
    })
    .await;
    assert!(rec["sync"]["error"].as_str().unwrap_or_default().contains(':'), "the reason is shown: {rec}");

    let fixed = json!({"id": "cl-9", "name": "Hollow Oak Landscapes", "email": "ap@hollowoak.example"});
    assert_eq!(w.post(&token, "/api/v1/platform/clients", &fixed, None).await.0, 200);
    let rec = synced_version(&w, &token, "/api/v1/platform/clients/cl-9", 2).await;
    let qb = w.quickbooks(&ws).await;
    let customer = qb.get("Customer", rec["sync"]["quickbooks_id"].as_str().unwrap(), &[]).await.unwrap().unwrap();
    assert_eq!(customer["DisplayName"], "Hollow Oak Landscapes");
    let named = qb
        .find(&FindQuery { object: "Customer".into(), equals: vec![("DisplayName".into(), json!("Hollow Oak Landscapes"))], ..Default::default() })
        .await
        .unwrap();
    assert_eq!(named.len(), 1, "created once");
}
