//! The platform API over real HTTP: idempotency, workspace isolation, token scope and revocation, webhook
//! retries and signatures, validation errors, the reconciliation pass, and the OpenAPI document.

mod common;

use common::{eventually, receiver, world};
use ledgerlink_platform::tokens::token_hash;
use ledgerlink_platform::webhooks::{SIGNATURE_HEADER, verify_signature};
use ledgerlink_platform::{MatchDecision, RecordKind};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_the_first_answer_and_refuses_a_different_body() {
    let w = world().await;
    let (_ws, token) = w.workspace("Idem").await;
    let client = json!({"id": "cl-1", "name": "Acme Plumbing"});
    let (s1, b1) = w.post(&token, "/api/v1/platform/clients", &client, Some("key-1")).await;
    assert_eq!(s1, 201, "{b1}");

    // A repeat gets the first answer: same status and same body, even though the record is no longer new.
    let resp = w
        .http
        .post(format!("{}/api/v1/platform/clients", w.base))
        .bearer_auth(&token)
        .header("Idempotency-Key", "key-1")
        .json(&client)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(resp.json::<Value>().await.unwrap(), b1);

    // The same key with a different body is refused.
    let (s3, b3) = w.post(&token, "/api/v1/platform/clients", &json!({"id": "cl-1", "name": "Acme Heating"}), Some("key-1")).await;
    assert_eq!(s3, 409, "{b3}");
    assert_eq!(b3["error"]["code"], "conflict");
    let (_, stored) = w.get(&token, "/api/v1/platform/clients/cl-1").await;
    assert_eq!(stored["data"]["name"], "Acme Plumbing", "the refused request changed nothing");

    // Without a key, the same push is an ordinary update (200, unchanged).
    let (s4, _) = w.post(&token, "/api/v1/platform/clients", &client, None).await;
    assert_eq!(s4, 200);

    // An error answer is replayed too (a 422 stays a 422).
    let bad = json!({"id": "bad id!", "name": "x"});
    let (s5, b5) = w.post(&token, "/api/v1/platform/clients", &bad, Some("key-bad")).await;
    assert_eq!(s5, 422);
    assert_eq!(b5["error"]["field"], "id");
    assert_eq!(w.post(&token, "/api/v1/platform/clients", &bad, Some("key-bad")).await, (s5, b5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_store_one_record_and_get_one_answer() {
    let w = world().await;
    let (ws, token) = w.workspace("Concurrent").await;
    let body = json!({"id": "inv-9", "client_id": "cl-1", "currency": "USD", "issue_date": "2026-11-01",
                      "lines": [{"service_id": "s", "quantity": "1", "unit_price": "10.00"}]});
    let mut calls = Vec::new();
    for _ in 0..6 {
        calls.push(w.post(&token, "/api/v1/platform/invoices", &body, Some("same-key")));
    }
    let answers = futures::future::join_all(calls).await;
    for a in &answers {
        assert_eq!(a, &answers[0], "every concurrent repeat gets the first answer");
    }
    assert_eq!(answers[0].0, 201);
    let tasks = w.store.list_tasks(&ws, Some("sync.record"), 50).await.unwrap();
    assert_eq!(tasks.len(), 1, "one record version, one sync task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspaces_see_only_their_own_records() {
    let w = world().await;
    let (_a, token_a) = w.workspace("Alpha").await;
    let (_b, token_b) = w.workspace("Beta").await;
    let (s, _) = w.post(&token_a, "/api/v1/platform/clients", &json!({"id": "shared-id", "name": "Alpha's client"}), None).await;
    assert_eq!(s, 201);

    // B cannot read A's record: 404, exactly as for a record that does not exist.
    let (s, body) = w.get(&token_b, "/api/v1/platform/clients/shared-id").await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(w.get(&token_b, "/api/v1/platform/clients/never-existed").await.0, 404);
    let (_, list) = w.get(&token_b, "/api/v1/platform/clients").await;
    assert_eq!(list["data"], json!([]));

    // The same id in B is B's own record; A's stays A's.
    let (s, _) = w.post(&token_b, "/api/v1/platform/clients", &json!({"id": "shared-id", "name": "Beta's client"}), None).await;
    assert_eq!(s, 201, "B's first push of this id creates B's record");
    assert_eq!(w.get(&token_a, "/api/v1/platform/clients/shared-id").await.1["data"]["name"], "Alpha's client");
    assert_eq!(w.get(&token_b, "/api/v1/platform/clients/shared-id").await.1["data"]["name"], "Beta's client");

    // Idempotency keys are per workspace too: B reusing A's key with another body is not a conflict.
    w.post(&token_a, "/api/v1/platform/services", &json!({"id": "s1", "name": "Design"}), Some("k")).await;
    let (s, _) = w.post(&token_b, "/api/v1/platform/services", &json!({"id": "s1", "name": "Other"}), Some("k")).await;
    assert_eq!(s, 201);

    // Webhook subscriptions are per workspace.
    let (_, sub) = w.post(&token_a, "/api/v1/platform/webhooks", &json!({"url": "http://127.0.0.1:9/h"}), None).await;
    let id = sub["subscription"]["id"].as_str().unwrap();
    let del = w.http.delete(format!("{}/api/v1/platform/webhooks/{id}", w.base)).bearer_auth(&token_b).send().await.unwrap();
    assert_eq!(del.status().as_u16(), 404);
    assert_eq!(w.get(&token_b, "/api/v1/platform/webhooks").await.1["data"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stored_hashed_scoped_and_revocable() {
    let w = world().await;
    let ws = w.platform.create_workspace("Tokens").await.unwrap();
    let issued = w.platform.issue_token(&ws.id, "billing sync").await.unwrap();
    assert!(issued.token.starts_with("llp_") && issued.token.len() > 60);
    assert!(!format!("{issued:?}").contains(&issued.token), "Debug never prints the token");

    // Only the hash is stored: no stored document contains the token.
    let docs = w.store.list_docs(&ws.id, "token").await.unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].id, token_hash(&issued.token));
    assert!(!docs[0].body.to_string().contains(&issued.token));
    assert!(!docs[0].body.to_string().contains(&issued.token[4..]));

    let (s, me) = w.get(&issued.token, "/api/v1/platform/workspace").await;
    assert_eq!(s, 200);
    assert_eq!(me["workspace"]["id"], ws.id.as_str());

    for bad in ["", "Bearer", "llp_0000", "not-a-token"] {
        let resp = w.http.get(format!("{}/api/v1/platform/clients", w.base)).header("Authorization", format!("Bearer {bad}")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "token `{bad}`");
    }
    assert_eq!(w.http.get(format!("{}/api/v1/platform/clients", w.base)).send().await.unwrap().status().as_u16(), 401);

    let other = w.platform.issue_token(&ws.id, "second").await.unwrap();
    let revoked = w.platform.revoke_token(&ws.id, &issued.info.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let (s, body) = w.get(&issued.token, "/api/v1/platform/clients").await;
    assert_eq!(s, 401, "a revoked token stops working at once: {body}");
    assert_eq!(w.get(&other.token, "/api/v1/platform/clients").await.0, 200, "other tokens keep working");
    let listed = w.platform.list_tokens(&ws.id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|t| t.id == issued.info.id && t.revoked_at.is_some()));
    // Another workspace cannot revoke this workspace's token.
    let ws2 = w.platform.create_workspace("Other").await.unwrap();
    assert!(w.platform.revoke_token(&ws2.id, &other.info.id).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_webhook_deliveries_are_retried_with_backoff_and_every_attempt_recorded() {
    let w = world().await;
    let (ws, token) = w.workspace("Hooks").await;
    w.connect(&ws).await;
    // The receiver fails twice (503, 500), then accepts.
    let (url, received) = receiver(vec![503, 500]).await;
    let (_, sub) = w.post(&token, "/api/v1/platform/webhooks", &json!({"url": url}), None).await;
    let secret = sub["secret"].as_str().unwrap().to_string();
    assert!(!w.store.list_docs(&ws, "webhook_subscription").await.unwrap()[0].body.to_string().contains(&secret), "the secret is stored sealed");

    // A synced invoice, then a payment in QuickBooks produces one event.
    let mut s = w.platform.load_settings(&ws).await.unwrap();
    let lists = w.platform.company_lists(&ws).await.unwrap();
    let services = lists.income_accounts.iter().find(|a| a.name == "Services").unwrap();
    s.invoices.income_account = Some(ledgerlink_platform::QbRef { id: services.id.clone(), name: services.name.clone() });
    w.platform.save_settings(&ws, &s).await.unwrap();
    w.post(&token, "/api/v1/platform/clients", &json!({"id": "c", "name": "Hook Client Ltd"}), None).await;
    w.post(&token, "/api/v1/platform/services", &json!({"id": "s", "name": "Hook service"}), None).await;
    w.post(&token, "/api/v1/platform/invoices", &json!({"id": "i", "client_id": "c", "currency": "USD", "issue_date": "2026-11-01",
        "lines": [{"service_id": "s", "quantity": "2", "unit_price": "40.00"}]}), None).await;
    let qb_id = eventually(20, "invoice synced", || async {
        let (_, r) = w.get(&token, "/api/v1/platform/invoices/i").await;
        r["sync"]["quickbooks_id"].as_str().map(str::to_string)
    })
    .await;
    let qb = w.quickbooks(&ws).await;
    let inv = qb.get("Invoice", &qb_id, &[]).await.unwrap().unwrap();
    let Value::Object(p) = json!({"CustomerRef": inv["CustomerRef"], "TotalAmt": 80, "Line": [{"Amount": 80, "LinkedTxn": [{"TxnId": qb_id, "TxnType": "Invoice"}]}]}) else {
        unreachable!()
    };
    qb.create("Payment", &p, "hook-payment").await.unwrap();

    let delivery = eventually(30, "delivered after two failures", || async {
        let (_, d) = w.get(&token, "/api/v1/platform/webhook-deliveries").await;
        let first = d["data"][0].clone();
        (first["status"] == "done").then_some(first)
    })
    .await;
    let attempts = delivery["attempts"].as_array().unwrap();
    let codes: Vec<i64> = attempts.iter().map(|a| a["status_code"].as_i64().unwrap()).collect();
    assert_eq!(codes, [503, 500, 200]);
    assert_eq!(attempts.iter().map(|a| a["ok"].as_bool().unwrap()).collect::<Vec<_>>(), [false, false, true]);
    let at = |n: usize| chrono::DateTime::parse_from_rfc3339(attempts[n]["at"].as_str().unwrap()).unwrap();
    assert!(at(1) - at(0) >= chrono::Duration::milliseconds(50), "the retry waited");
    assert!(at(2) - at(1) >= chrono::Duration::milliseconds(100), "and waited longer the second time");

    // The three requests carried the same event, each signed anew and verifiable.
    let got = received.0.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|(_, b)| b == &got[0].1), "the same bytes on every attempt");
    for (headers, body) in &got {
        let sig = headers.get(SIGNATURE_HEADER).unwrap().to_str().unwrap();
        verify_signature(&secret, sig, body, chrono::Utc::now().timestamp(), 300).unwrap();
        assert_eq!(headers.get("ledgerlink-event").unwrap(), "invoice.payment_updated");
    }
    let event: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(event["data"]["payment"]["status"], "paid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_refused_with_the_field_named() {
    let w = world().await;
    let (_ws, token) = w.workspace("Validation").await;
    for (path, body, field) in [
        ("/api/v1/platform/clients", json!({"id": "c", "name": " "}), "name"),
        ("/api/v1/platform/clients", json!({"id": "c", "name": "A", "email": "nope"}), "email"),
        ("/api/v1/platform/services", json!({"id": "s", "name": "A:B"}), "name"),
        ("/api/v1/platform/tax-rates", json!({"id": "t", "name": "VAT", "rate_percent": "120"}), "rate_percent"),
        ("/api/v1/platform/invoices", json!({"id": "i", "client_id": "c", "currency": "USD", "issue_date": "2026-11-01", "lines": []}), "lines"),
        ("/api/v1/platform/invoices", json!({"id": "i", "client_id": "c", "currency": "DOLLARS", "issue_date": "2026-11-01",
            "lines": [{"service_id": "s", "quantity": "1", "unit_price": "1"}]}), "currency"),
        ("/api/v1/platform/invoices", json!({"id": "i", "client_id": "c", "currency": "USD", "issue_date": "2026-11-01",
            "lines": [{"service_id": "s", "quantity": "0", "unit_price": "1"}]}), "lines[0].quantity"),
        ("/api/v1/platform/expenses", json!({"id": "e", "workflow_id": "w", "vendor": "V", "date": "2026-11-01", "currency": "USD", "amount": "-5"}), "amount"),
    ] {
        let (s, b) = w.post(&token, path, &body, None).await;
        assert_eq!(s, 422, "{path} {body}: {b}");
        assert_eq!(b["error"]["field"], field, "{b}");
    }
    // Amounts are decimal strings, never floats.
    let (s, b) = w.post(&token, "/api/v1/platform/services", &json!({"id": "s", "name": "A", "unit_price": 9.99}), None).await;
    assert_eq!(s, 422, "{b}");
    let (s, _) = w.post(&token, "/api/v1/platform/unknown-things", &json!({}), None).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_shows_matches_near_matches_and_missing_and_stores_confirmations() {
    let w = world().await;
    let (ws, token) = w.workspace("Reconcile").await;
    w.connect(&ws).await;
    // Matching only: clients without a match wait for the admin instead of becoming new customers.
    let mut s = w.platform.load_settings(&ws).await.unwrap();
    s.customers.create_unmatched = false;
    w.platform.save_settings(&ws, &s).await.unwrap();
    for body in [
        json!({"id": "c-bay", "name": "Bayview Dental Group, Inc."}),
        json!({"id": "c-quill", "name": "Someone", "email": "hello@quillstreet.example"}),
        json!({"id": "c-tide", "name": "Tidewater Yaht Club"}),
        json!({"id": "c-new", "name": "Brand New Customer"}),
    ] {
        w.post(&token, "/api/v1/platform/clients", &body, None).await;
    }
    let status = |id: &'static str| {
        let w = &w;
        let token = &token;
        async move { w.get(token, &format!("/api/v1/platform/clients/{id}")).await.1["sync"]["status"].clone() }
    };
    eventually(20, "clients matched or waiting for review", || async {
        let all = [status("c-bay").await, status("c-quill").await, status("c-tide").await, status("c-new").await];
        (all == [json!("synced"), json!("synced"), json!("needs_review"), json!("needs_review")]).then_some(())
    })
    .await;
    let r = w.platform.reconciliation(&ws).await.unwrap();
    let row = |id: &str| r.clients.iter().find(|c| c.platform_id == id).unwrap().clone();
    let state = |id: &str| serde_json::to_value(row(id).state).unwrap();
    // Matched by name (legal form and punctuation ignored) and by email; synced, so linked.
    assert_eq!(state("c-bay"), "linked");
    assert_eq!(row("c-bay").candidates[0].name, "Bayview Dental Group");
    assert_eq!(state("c-quill"), "linked");
    assert_eq!(row("c-quill").candidates[0].name, "Quill Street Books");
    assert_eq!(state("c-tide"), "near_match");
    let tide = row("c-tide");
    assert_eq!(tide.candidates[0].name, "Tidewater Yacht Club");
    assert!(tide.candidates[0].score > 0.9 && tide.candidates[0].score < 1.0, "{tide:?}");
    assert_eq!(state("c-new"), "missing");
    assert!(row("c-new").candidates.is_empty());
    assert!(r.unmatched_customers.iter().any(|c| c.name == "Tidewater Yacht Club"));
    assert!(!r.unmatched_customers.iter().any(|c| c.name == "Bayview Dental Group"));

    // The admin confirms the near-match; the link is what the sync uses.
    let customers = w.quickbooks(&ws).await.find(&ledgerlink_connectors::FindQuery { object: "Customer".into(),
        equals: vec![("DisplayName".into(), json!("Tidewater Yacht Club"))], ..Default::default() }).await.unwrap();
    let tide_id = customers[0]["Id"].as_str().unwrap().to_string();
    w.platform.confirm(&ws, &[MatchDecision { kind: RecordKind::Client, platform_id: "c-tide".into(), quickbooks_id: tide_id.clone() }]).await.unwrap();
    let r = w.platform.reconciliation(&ws).await.unwrap();
    let tide = r.clients.iter().find(|c| c.platform_id == "c-tide").unwrap();
    assert_eq!(serde_json::to_value(tide.state).unwrap(), "linked");
    assert_eq!(tide.candidates[0].quickbooks_id, tide_id);
    // And the client waiting for that decision syncs to the confirmed customer.
    let rec = eventually(20, "confirmed client synced", || async {
        let (_, r) = w.get(&token, "/api/v1/platform/clients/c-tide").await;
        (r["sync"]["status"] == "synced").then_some(r)
    })
    .await;
    assert_eq!(rec["sync"]["quickbooks_id"], tide_id.as_str());
    assert!(w.platform.confirm(&ws, &[MatchDecision { kind: RecordKind::Client, platform_id: "c-tide".into(), quickbooks_id: "999999".into() }]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_served_and_stable() {
    let w = world().await;
    let resp = w.http.get(format!("{}/api/v1/openapi.json", w.base)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/api/v1/platform/invoices", "/api/v1/platform/invoices/{id}/payment", "/api/v1/platform/webhooks"] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    insta::assert_json_snapshot!("openapi", doc);
}
