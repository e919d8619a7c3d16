//! The QuickBooks sandbox's newer surfaces over real HTTP on loopback: request limits, injected faults (including
//! real dropped connections), batch, change data capture, webhooks (signed, aggregated, retried), multicurrency,
//! terms, classes, custom fields and estimate conversion, and the sandbox clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use ledgerlink_sandbox::RunningSandbox;
use ledgerlink_sandbox::quickbooks::{QuickbooksLimits, QuickbooksOptions, start};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Qb {
    sb: RunningSandbox,
    http: reqwest::Client,
    token: String,
}

impl Qb {
    async fn boot(limits: QuickbooksLimits) -> Qb {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sb = start(QuickbooksOptions {
            limits,
            ..Default::default()
        })
        .await
        .unwrap();
        let token = sb.info_str("access_token").to_string();
        Qb {
            sb,
            http: reqwest::Client::new(),
            token,
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/company/{}/{}",
            self.sb.info_str("api_base"),
            self.sb.info_str("realm_id"),
            path
        )
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(self.url(path)).bearer_auth(&self.token))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(&self.token)
                .json(&body),
        )
        .await
    }

    async fn admin(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}/sandbox/admin/{path}", self.sb.base_url))
                .json(&body),
        )
        .await
    }

    async fn admin_get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/sandbox/admin/{path}", self.sb.base_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn code(body: &Value) -> &str {
    body["Fault"]["Error"][0]["code"]
        .as_str()
        .unwrap_or_default()
}

fn off() -> QuickbooksLimits {
    QuickbooksLimits {
        enabled: false,
        ..Default::default()
    }
}

#[tokio::test]
async fn limits_answer_429_code_3001_without_retry_after_and_reopen_after_the_window() {
    // 60× time: a limit "minute" lasts one second.
    let qb = Qb::boot(QuickbooksLimits {
        per_minute: 5,
        time_scale: 60.0,
        ..Default::default()
    })
    .await;
    for _ in 0..5 {
        assert_eq!(qb.get("customer/1").await.0, 200);
    }
    let resp = qb
        .http
        .get(qb.url("customer/1"))
        .bearer_auth(&qb.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(
        resp.headers().get("retry-after").is_none(),
        "Intuit sends no Retry-After"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "3001");
    assert_eq!(body["Fault"]["type"], "SERVICE");
    assert_eq!(
        body["Fault"]["Error"][0]["Detail"],
        "The request limit was reached.  Try again later"
    );
    // The window slides: poll until it admits again (well within a few scaled minutes).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if qb.get("customer/1").await.0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the window never reopened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Batch calls have their own budget; admin and OAuth are never limited.
    let (s, l) = qb
        .admin("limits", json!({"per_minute": 100, "batch_per_minute": 1}))
        .await;
    assert_eq!((s, l["batch_per_minute"].as_u64()), (200, Some(1)));
    let batch = json!({"BatchItemRequest": [{"bId": "q", "Query": "select * from Term"}]});
    assert_eq!(qb.post("batch", batch.clone()).await.0, 200);
    assert_eq!(code(&qb.post("batch", batch).await.1), "3001");
    let (s, e) = qb.admin("limits", json!({"time_scale": 0})).await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("time_scale"));
    qb.sb.stop().await;
}

#[tokio::test]
async fn default_limits_allow_ten_concurrent_calls() {
    let qb = Arc::new(Qb::boot(QuickbooksLimits::default()).await);
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let qb = qb.clone();
            tokio::spawn(async move { qb.get("customer/1").await.0 })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn injected_faults_throttle_fail_expire_and_drop_for_real() {
    let qb = Qb::boot(off()).await;
    let (s, e) = qb.admin("faults", json!({"rate_5xx": 2.0})).await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("rate_5xx"));

    qb.admin("faults", json!({"rate_429": 1.0})).await;
    let (s, b) = qb.get("customer/1").await;
    assert_eq!((s, code(&b)), (429, "3001"));
    // OAuth and admin are untouched by faults.
    assert!(qb.admin_get("faults").await["rate_429"].as_f64() == Some(1.0));

    qb.admin("faults", json!({"token_expiry_rate": 1.0})).await;
    let (s, b) = qb.get("customer/1").await;
    assert_eq!(s, 401);
    assert_eq!(
        b["fault"]["error"][0]["code"], "3200",
        "the lower-case 401 document"
    );

    // A server error after the write: the customer exists, and the requestid replays the first answer (the 5xx).
    qb.admin("faults", json!({"rate_5xx": 1.0, "after_write_share": 1.0}))
        .await;
    let (s, b) = qb
        .post(
            "customer?requestid=fault-after-write",
            json!({"DisplayName": "Written Anyway"}),
        )
        .await;
    assert!(s >= 500, "{s}");
    assert_eq!(b["Fault"]["type"], "SystemFault");
    qb.admin("faults", json!({})).await;
    let (s, replay) = qb
        .post(
            "customer?requestid=fault-after-write",
            json!({"DisplayName": "Written Anyway"}),
        )
        .await;
    assert_eq!(
        s, 200,
        "the stored reply of the write that happened: {replay}"
    );
    assert_eq!(replay["Customer"]["DisplayName"], "Written Anyway");

    // A dropped connection is a transport error, not an HTTP answer.
    qb.admin("faults", json!({"drop_rate": 1.0})).await;
    let err = qb
        .http
        .get(qb.url("customer/1"))
        .bearer_auth(&qb.token)
        .send()
        .await;
    assert!(err.is_err(), "expected a connection error, got {err:?}");
    let (s, _) = qb
        .send(
            qb.http
                .delete(format!("{}/sandbox/admin/faults", qb.sb.base_url)),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(qb.get("customer/1").await.0, 200);

    qb.admin("faults", json!({"slow_rate": 1.0, "slow_ms": 300}))
        .await;
    let t = Instant::now();
    assert_eq!(qb.get("customer/1").await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    qb.sb.stop().await;
}

#[tokio::test]
async fn batch_items_are_serial_independent_and_bounded() {
    let qb = Qb::boot(off()).await;
    let (s, b) = qb
        .post(
            "batch",
            json!({"BatchItemRequest": [
                {"bId": "1", "operation": "create", "Customer": {"DisplayName": "Batch Fresh"}},
                {"bId": "2", "operation": "create", "Invoice": {"CustomerRef": {"value": "12"}, "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 10, "SalesItemLineDetail": {"ItemRef": {"value": "3"}}}]}},
                {"bId": "3", "operation": "create", "Customer": {"DisplayName": "Batch Fresh"}},
                {"bId": "q", "Query": "select * from Customer where DisplayName = 'Batch Fresh'"}
            ]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let items = b["BatchItemResponse"].as_array().unwrap();
    assert_eq!(items[0]["Customer"]["Id"], "12");
    assert_eq!(
        code(&json!({"Fault": items[1]["Fault"]})),
        "2500",
        "an item cannot see an earlier item's creation"
    );
    assert_eq!(code(&json!({"Fault": items[2]["Fault"]})), "6240");
    assert!(
        items[3]["QueryResponse"].get("Customer").is_none(),
        "nor can a query in the same batch"
    );
    let many: Vec<Value> = (0..31)
        .map(|i| json!({"bId": i.to_string(), "Query": "select * from Term"}))
        .collect();
    let (s, b) = qb.post("batch", json!({"BatchItemRequest": many})).await;
    assert_eq!((s, code(&b)), (400, "6000"));
    let long = "x".repeat(37);
    let (s, b) = qb
        .post(
            &format!("batch?requestid={long}"),
            json!({"BatchItemRequest": [{"bId": "1", "Query": "select * from Term"}]}),
        )
        .await;
    assert_eq!((s, code(&b)), (400, "6000"));
    qb.sb.stop().await;
}

#[tokio::test]
async fn cdc_reports_changes_and_deletions_within_thirty_days() {
    let qb = Qb::boot(off()).await;
    // The seed is written at start; move the sandbox clock past it so only this test's changes are new.
    qb.admin("clock/advance", json!({"seconds": 10})).await;
    let since = ledgerlink_sandbox::quickbooks::time::meta_time(
        chrono::Utc::now() + chrono::Duration::seconds(5),
    );
    let (_, inv) = qb
        .post("invoice", json!({"CustomerRef": {"value": "2"}, "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 90, "SalesItemLineDetail": {"ItemRef": {"value": "3"}}}]}))
        .await;
    let id = inv["Invoice"]["Id"].as_str().unwrap().to_string();
    qb.post(
        "invoice?operation=delete",
        json!({"Id": id, "SyncToken": "0"}),
    )
    .await;
    let (s, cdc) = qb
        .send(qb.http.get(qb.url("cdc")).bearer_auth(&qb.token).query(&[
            ("entities", "Invoice,Customer"),
            ("changedSince", since.as_str()),
        ]))
        .await;
    assert_eq!(s, 200, "{cdc}");
    let qr = &cdc["CDCResponse"][0]["QueryResponse"];
    assert_eq!(
        qr[0]["Invoice"][0],
        json!({"domain": "QBO", "status": "Deleted", "Id": id, "MetaData": qr[0]["Invoice"][0]["MetaData"]})
    );
    assert!(
        qr[1].get("Customer").is_none(),
        "the customer's balance moved but the customer was not written"
    );
    qb.admin("clock/advance", json!({"seconds": 31 * 86400}))
        .await;
    // A month later the access token has long expired: refresh (the refresh token lives 101 days).
    let (_, tokens) = qb
        .send(
            qb.http
                .post(qb.sb.info_str("token_url"))
                .basic_auth(
                    qb.sb.info_str("client_id"),
                    Some(qb.sb.info_str("client_secret")),
                )
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", qb.sb.info_str("refresh_token")),
                ]),
        )
        .await;
    let fresh = tokens["access_token"].as_str().unwrap().to_string();
    let (s, b) = qb
        .send(
            qb.http
                .get(qb.url("cdc"))
                .bearer_auth(&fresh)
                .query(&[("entities", "Invoice"), ("changedSince", since.as_str())]),
        )
        .await;
    assert_eq!((s, code(&b)), (400, "6000"), "{b}");
    qb.sb.stop().await;
}

#[tokio::test]
async fn overdue_follows_due_dates_and_the_sandbox_clock() {
    let qb = Qb::boot(off()).await;
    let (_, inv) = qb
        .post("invoice", json!({"CustomerRef": {"value": "5"}, "SalesTermRef": {"value": "2"}, "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 75, "SalesItemLineDetail": {"ItemRef": {"value": "3"}}}]}))
        .await;
    let id = inv["Invoice"]["Id"].as_str().unwrap().to_string();
    let due = |v: &Value| {
        v["Invoice"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["Id"] == id)
    };
    assert!(!due(&qb.admin_get("overdue").await));
    qb.admin("clock/advance", json!({"seconds": 16 * 86400}))
        .await;
    assert!(
        due(&qb.admin_get("overdue").await),
        "Net 15 is past after 16 days"
    );
    qb.sb.stop().await;
}

#[tokio::test]
async fn multicurrency_needs_the_preference_and_converts_home_amounts() {
    let qb = Qb::boot(off()).await;
    let (s, b) = qb
        .post(
            "customer",
            json!({"DisplayName": "Berlin Gartenbau", "CurrencyRef": {"value": "EUR"}}),
        )
        .await;
    assert_eq!((s, code(&b)), (400, "6000"));
    let (_, prefs) = qb.get("preferences").await;
    let token = prefs["Preferences"]["SyncToken"].clone();
    let (s, p) = qb.post("preferences", json!({"Id": "1", "SyncToken": token, "sparse": true, "CurrencyPrefs": {"MultiCurrencyEnabled": true}})).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        p["Preferences"]["CurrencyPrefs"]["HomeCurrency"]["value"],
        "USD"
    );
    let (_, c) = qb
        .post(
            "customer",
            json!({"DisplayName": "Berlin Gartenbau", "CurrencyRef": {"value": "EUR"}}),
        )
        .await;
    let cid = c["Customer"]["Id"].as_str().unwrap().to_string();
    let (s, inv) = qb
        .post("invoice", json!({"CustomerRef": {"value": cid}, "ExchangeRate": 1.1, "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 100.05, "SalesItemLineDetail": {"ItemRef": {"value": "3"}}}]}))
        .await;
    assert_eq!(s, 200, "{inv}");
    assert_eq!(inv["Invoice"]["CurrencyRef"]["value"], "EUR");
    assert_eq!(
        inv["Invoice"]["HomeTotalAmt"],
        json!(110.06),
        "100.05 × 1.1 = 110.055 → 110.06"
    );
    let (s, b) = qb
        .post("invoice", json!({"CustomerRef": {"value": cid}, "CurrencyRef": {"value": "GBP"}, "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 1, "SalesItemLineDetail": {"ItemRef": {"value": "3"}}}]}))
        .await;
    assert_eq!(
        (s, code(&b)),
        (400, "6000"),
        "the invoice currency must be the customer's"
    );
    let (_, prefs) = qb.get("preferences").await;
    let (s, b) = qb
        .post("preferences", json!({"Id": "1", "SyncToken": prefs["Preferences"]["SyncToken"], "sparse": true, "CurrencyPrefs": {"MultiCurrencyEnabled": false}}))
        .await;
    assert_eq!(
        (s, code(&b)),
        (400, "6000"),
        "multicurrency cannot be turned off"
    );
    qb.sb.stop().await;
}

/// A webhook receiver on loopback: records (signature, body) and answers the statuses in `script`, then 200.
/// What an invoice made from a Salesforce deal carries: a term found by name (due date from its days), a class
/// made for the rep, a text custom field, and the estimate it converts, which then shows as closed.
#[tokio::test]
async fn terms_classes_custom_fields_and_converted_estimates() {
    let qb = Qb::boot(off()).await;
    let (_, q) = qb.get("query?query=select%20*%20from%20Term%20where%20Name%20%3D%20%27Net%2015%27").await;
    let terms = q["QueryResponse"]["Term"].as_array().unwrap();
    assert_eq!((terms.len(), terms[0]["DueDays"].as_f64()), (1, Some(15.0)), "{q}");
    let term = terms[0]["Id"].clone();
    let (s, c) = qb.post("class", json!({"Name": "Maria Chen"})).await;
    assert_eq!(s, 200, "{c}");
    let class = c["Class"]["Id"].clone();
    let (s, b) = qb.post("class", json!({"Name": "Maria Chen"})).await;
    assert_eq!((s, code(&b)), (400, "6240"), "class names are unique");

    let line = |qty: u32| json!({"DetailType": "SalesItemLineDetail", "Amount": 95 * qty, "SalesItemLineDetail": {"ItemRef": {"value": "2"}, "Qty": qty, "UnitPrice": 95, "ClassRef": {"value": class}}});
    let (_, est) = qb.post("estimate", json!({"CustomerRef": {"value": "1"}, "Line": [line(2)]})).await;
    let est_id = est["Estimate"]["Id"].as_str().unwrap().to_string();
    let (s, b) = qb
        .post("invoice", json!({"CustomerRef": {"value": "2"}, "LinkedTxn": [{"TxnId": est_id, "TxnType": "Estimate"}], "Line": [line(2)]}))
        .await;
    assert_eq!((s, code(&b)), (400, "6000"), "an estimate of another customer: {b}");
    let (s, b) = qb
        .post("invoice", json!({"CustomerRef": {"value": "1"}, "CustomField": [{"DefinitionId": "1", "Type": "StringType", "StringValue": "a rep name far longer than thirty-one characters"}], "Line": [line(2)]}))
        .await;
    assert_eq!((s, code(&b)), (400, "6000"), "custom field text is at most 31 characters: {b}");

    let (s, inv) = qb
        .post(
            "invoice",
            json!({"CustomerRef": {"value": "1"}, "TxnDate": "2026-03-01", "SalesTermRef": {"value": term},
                   "CustomField": [{"DefinitionId": "1", "Name": "Sales Rep", "Type": "StringType", "StringValue": "Maria Chen"}],
                   "LinkedTxn": [{"TxnId": est_id, "TxnType": "Estimate"}], "Line": [line(2)]}),
        )
        .await;
    assert_eq!(s, 200, "{inv}");
    let inv = &inv["Invoice"];
    assert_eq!((inv["SalesTermRef"]["name"].as_str(), inv["DueDate"].as_str()), (Some("Net 15"), Some("2026-03-16")));
    assert_eq!(inv["Line"][0]["SalesItemLineDetail"]["ClassRef"], json!({"value": class, "name": "Maria Chen"}));
    assert_eq!(inv["CustomField"][0]["StringValue"], "Maria Chen");
    assert_eq!(inv["LinkedTxn"], json!([{"TxnId": est_id, "TxnType": "Estimate"}]));
    let (_, est) = qb.get(&format!("estimate/{est_id}")).await;
    assert_eq!(est["Estimate"]["TxnStatus"], "Closed", "{est}");
    assert_eq!(est["Estimate"]["LinkedTxn"], json!([{"TxnId": inv["Id"], "TxnType": "Invoice"}]));
    qb.sb.stop().await;
}

async fn receiver(script: Vec<u16>) -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let script = Arc::new(Mutex::new(script));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), String::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break (head.to_string(), body.to_string());
                    }
                }
            };
            let sig = head
                .lines()
                .find_map(|l| l.strip_prefix("intuit-signature: ").map(str::to_string))
                .unwrap_or_default();
            seen.lock().unwrap().push((sig, body));
            let status = {
                let mut s = script.lock().unwrap();
                if s.is_empty() { 200 } else { s.remove(0) }
            };
            let _ = s
                .write_all(format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .await;
        }
    });
    (url, got)
}

async fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn webhooks_are_aggregated_signed_and_retried() {
    let qb = Qb::boot(off()).await;
    let verifier = qb.sb.info_str("verifier_token").to_string();
    let (legacy_url, legacy) = receiver(vec![500, 503]).await;
    let (ce_url, ce) = receiver(vec![]).await;
    let (s, _) = qb
        .admin("webhooks", json!({"url": legacy_url, "format": "legacy"}))
        .await;
    assert_eq!(s, 200);
    qb.admin(
        "webhooks",
        json!({"url": ce_url, "format": "cloudevents", "entities": ["Customer"]}),
    )
    .await;
    let (s, e) = qb.admin("webhooks", json!({"url": "ftp://x"})).await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("url"));
    // Retries at 10 s, 20 s, … divided by 1000.
    qb.admin(
        "webhooks/config",
        json!({"retry_time_scale": 1000.0, "window_ms": 300}),
    )
    .await;

    let (_, c) = qb
        .post("customer", json!({"DisplayName": "Hooked Customer"}))
        .await;
    let cid = c["Customer"]["Id"].as_str().unwrap().to_string();
    qb.post(
        "customer",
        json!({"Id": cid, "SyncToken": "0", "sparse": true, "Notes": "one"}),
    )
    .await;
    qb.post(
        "customer",
        json!({"Id": cid, "SyncToken": "1", "sparse": true, "Notes": "two"}),
    )
    .await;
    qb.post("invoice", json!({"CustomerRef": {"value": cid}, "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 5, "SalesItemLineDetail": {"ItemRef": {"value": "3"}}}]})).await;

    let verify = |sig: &str, body: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(verifier.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        mac.verify_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(sig)
                .unwrap(),
        )
        .is_ok()
    };
    // Two failures, then success: three attempts of the same body.
    let attempts = wait_for(|| {
        let g = legacy.lock().unwrap();
        (g.len() >= 3).then(|| g.clone())
    })
    .await;
    assert!(
        attempts.iter().all(|(_, b)| *b == attempts[0].1),
        "retries repeat the same payload"
    );
    let (sig, body) = &attempts[0];
    assert!(
        verify(sig, body),
        "intuit-signature is base64(HMAC-SHA256(verifier, body))"
    );
    let doc: Value = serde_json::from_str(body).unwrap();
    let entities = doc["eventNotifications"][0]["dataChangeEvent"]["entities"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        doc["eventNotifications"][0]["realmId"],
        qb.sb.info_str("realm_id")
    );
    let ops: Vec<(String, String)> = entities
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["operation"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(ops.contains(&("Customer".into(), "Create".into())));
    assert!(ops.contains(&("Invoice".into(), "Create".into())));
    assert_eq!(
        ops.iter()
            .filter(|o| **o == ("Customer".into(), "Update".into()))
            .count(),
        1,
        "two updates aggregate into one event"
    );

    let events = wait_for(|| ce.lock().unwrap().first().cloned()).await;
    assert!(verify(&events.0, &events.1));
    let list: Value = serde_json::from_str(&events.1).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"].as_str().unwrap().starts_with("qbo.customer.")),
        "filtered to Customer"
    );
    assert_eq!(list[0]["specversion"], "1.0");
    assert_eq!(list[0]["intuitentityid"], cid);

    let log = qb.admin_get("webhooks/deliveries").await;
    let first = log
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["format"] == "legacy")
        .unwrap()
        .clone();
    let states: Vec<Option<u64>> = first["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64())
        .collect();
    assert_eq!(&states[..3], &[Some(500), Some(503), Some(200)]);
    assert_eq!(first["state"], "delivered");
    qb.sb.stop().await;
}
