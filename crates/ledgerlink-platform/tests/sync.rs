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
    let design_item = qb.get("Item", lines[0]["SalesItemLineDetail"]["ItemRef"]["value"].as_str().unwrap(), &[]).await.unwrap().unwrap();
    assert_eq!(design_item["Name"], "Garden design");
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

    w.platform.disconnect(&ws).await.unwrap();
    assert_eq!(w.platform.test_connection(&ws).await.unwrap().ok, false);

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

    // Reconnect: the paused push goes out and the payment comes in.
    let realm = w.qbo.info_str("realm_id").to_string();
    let name = ledgerlink_platform::integration::connection_name(&ws);
    w.platform.connect(&ws, &name, "Juniper & Finch Landscape Design", &realm).await.unwrap();
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
