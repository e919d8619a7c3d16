//! The QuickBooks sandbox over real HTTP on loopback: OAuth rotation, auth failures, entity rules, invoice math,
//! the query language, `requestid` replay and the state file.

use std::path::PathBuf;

use ledgerlink_sandbox::RunningSandbox;
use ledgerlink_sandbox::clock::Clock;
use ledgerlink_sandbox::quickbooks::{QuickbooksOptions, start};
use serde_json::{Value, json};

struct Qb {
    sb: RunningSandbox,
    http: reqwest::Client,
    token: String,
}

impl Qb {
    async fn boot(state_file: Option<PathBuf>) -> Qb {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sb = start(QuickbooksOptions {
            state_file,
            clock: Clock::new(),
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
        assert!(
            resp.headers().contains_key("intuit_tid"),
            "every response carries intuit_tid"
        );
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

    async fn query(&self, q: &str) -> (u16, Value) {
        self.send(
            self.http
                .get(self.url("query"))
                .bearer_auth(&self.token)
                .query(&[("query", q), ("minorversion", "75")]),
        )
        .await
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/sandbox/admin/{path}", self.sb.base_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "admin {path}");
        resp.json().await.unwrap()
    }

    async fn refresh(&self, refresh_token: &str) -> (u16, Value) {
        let req = self
            .http
            .post(self.sb.info_str("token_url"))
            .basic_auth(
                self.sb.info_str("client_id"),
                Some(self.sb.info_str("client_secret")),
            )
            .header("Accept", "application/json")
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ]);
        self.send(req).await
    }
}

fn fault_code(body: &Value) -> &str {
    body["Fault"]["Error"][0]["code"]
        .as_str()
        .unwrap_or_default()
}

fn detail(body: &Value) -> &str {
    body["Fault"]["Error"][0]["Detail"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn startup_info_and_discovery_point_at_the_sandbox() {
    let qb = Qb::boot(None).await;
    let base = qb.sb.base_url.clone();
    assert_eq!(qb.sb.info_str("system"), "quickbooks");
    assert_eq!(qb.sb.info_str("api_base"), format!("{base}/v3"));
    assert!(
        qb.sb
            .info_str("realm_id")
            .chars()
            .all(|c| c.is_ascii_digit())
    );
    for key in [
        "client_id",
        "client_secret",
        "refresh_token",
        "verifier_token",
    ] {
        assert!(!qb.sb.info_str(key).is_empty(), "{key}");
    }
    for path in ["openid_configuration", "openid_sandbox_configuration"] {
        let doc: Value = qb
            .http
            .get(format!("{base}/.well-known/{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            doc["token_endpoint"],
            format!("{base}/oauth2/v1/tokens/bearer")
        );
        assert_eq!(
            doc["revocation_endpoint"],
            format!("{base}/oauth2/v1/tokens/revoke")
        );
        for key in [
            "issuer",
            "authorization_endpoint",
            "userinfo_endpoint",
            "jwks_uri",
        ] {
            assert!(doc[key].as_str().unwrap().starts_with(&base), "{key}");
        }
    }
    let (status, info) = qb
        .get(&format!("companyinfo/{}", qb.sb.info_str("realm_id")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(info["CompanyInfo"]["Country"], "US");
    assert!(
        info["CompanyInfo"]["CompanyName"]
            .as_str()
            .unwrap()
            .contains("Juniper")
    );
    assert!(info["time"].as_str().unwrap().contains('T'));
    qb.sb.stop().await;
}

#[tokio::test]
async fn refresh_tokens_rotate_and_old_ones_die_after_24_hours() {
    let mut qb = Qb::boot(None).await;
    let first = qb.sb.info_str("refresh_token").to_string();
    let (status, a) = qb.refresh(&first).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["token_type"], "bearer");
    assert_eq!(a["expires_in"], 3600);
    assert_eq!(a["x_refresh_token_expires_in"], 8726400);
    let second = a["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second, first);

    // The superseded token still works within 24 h, and each use issues yet another token.
    let (status, b) = qb.refresh(&first).await;
    assert_eq!(status, 200, "{b}");
    assert_ne!(b["refresh_token"], a["refresh_token"]);
    qb.token = b["access_token"].as_str().unwrap().to_string();
    assert_eq!(qb.get("customer/1").await.0, 200);

    qb.admin("clock/advance", json!({"seconds": 25 * 3600}))
        .await;
    let (status, e) = qb.refresh(&first).await;
    assert_eq!(status, 400);
    assert_eq!(e["error"], "invalid_grant");
    let (status, e) = qb.refresh(&second).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "second was superseded by the third"
    );
    let (status, c) = qb.refresh(b["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "the newest token still works: {c}");
    let (status, e) = qb.refresh("AB11nonsense").await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")));

    // Wrong client secret.
    let req = qb
        .http
        .post(qb.sb.info_str("token_url"))
        .basic_auth(qb.sb.info_str("client_id"), Some("wrong"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", c["refresh_token"].as_str().unwrap()),
        ]);
    let (status, e) = qb.send(req).await;
    assert_eq!((status, e["error"].as_str()), (401, Some("invalid_client")));

    // Authorization code: minted by the admin API, exchanged once, client credentials in the form.
    let minted = qb
        .admin(
            "authorization-codes",
            json!({"redirect_uri": "http://localhost/cb"}),
        )
        .await;
    assert_eq!(minted["realmId"], qb.sb.info_str("realm_id"));
    let code = minted["code"].as_str().unwrap();
    let exchange = |code: &str| {
        qb.http.post(qb.sb.info_str("token_url")).form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", "http://localhost/cb"),
            ("client_id", qb.sb.info_str("client_id")),
            ("client_secret", qb.sb.info_str("client_secret")),
        ])
    };
    let (status, t) = qb.send(exchange(code)).await;
    assert_eq!(status, 200, "{t}");
    let (status, e) = qb.send(exchange(code)).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "a code is single-use"
    );

    // Revoking the refresh token ends the grant: its access token stops working too.
    let req = qb
        .http
        .post(format!("{}/oauth2/v1/tokens/revoke", qb.sb.base_url))
        .basic_auth(
            qb.sb.info_str("client_id"),
            Some(qb.sb.info_str("client_secret")),
        )
        .json(&json!({"token": t["refresh_token"]}));
    assert_eq!(qb.send(req).await.0, 200);
    qb.token = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(qb.get("customer/1").await.0, 401);
    qb.sb.stop().await;
}

#[tokio::test]
async fn authentication_and_authorization_failures() {
    let mut qb = Qb::boot(None).await;
    let (status, body) = qb.send(qb.http.get(qb.url("customer/1"))).await;
    assert_eq!(status, 401);
    assert_eq!(body["fault"]["error"][0]["code"], "3200");
    assert_eq!(body["fault"]["type"], "AUTHENTICATION");
    assert!(body["time"].is_i64());
    assert_eq!(body["batchItemResponse"], json!([]));

    assert_eq!(qb.get("customer/1").await.0, 200);
    let expired = qb.admin("expire-tokens", json!({})).await;
    assert!(expired["expired"].as_u64().unwrap() >= 1);
    let (status, body) = qb.get("customer/1").await;
    assert_eq!(status, 401);
    assert!(
        body["fault"]["error"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("Token expired")
    );
    assert_eq!(
        body["fault"]["error"][0]["message"],
        "message=AuthenticationFailed; errorCode=003200; statusCode=401"
    );

    let (_, fresh) = qb.refresh(qb.sb.info_str("refresh_token")).await;
    qb.token = fresh["access_token"].as_str().unwrap().to_string();
    let url = format!("{}/company/1234567/customer/1", qb.sb.info_str("api_base"));
    let (status, body) = qb.send(qb.http.get(url).bearer_auth(&qb.token)).await;
    assert_eq!(status, 403);
    assert_eq!(body["Fault"]["type"], "AuthorizationFault");

    let (status, body) = qb.get("spaceship/1").await;
    assert_eq!(status, 400);
    assert_eq!(body["Fault"]["type"], "ValidationFault");
    assert!(detail(&body).contains("spaceship"));

    let calls: Value = qb
        .http
        .get(format!("{}/sandbox/admin/calls", qb.sb.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let calls = calls.as_array().unwrap();
    assert!(
        calls
            .iter()
            .any(|c| c["status"] == 403 && c["method"] == "GET")
    );
    assert!(calls.iter().any(|c| c["status"] == 401));
    qb.sb.stop().await;
}

#[tokio::test]
async fn customer_create_read_full_and_sparse_update() {
    let qb = Qb::boot(None).await;
    let (status, created) = qb
        .post("customer?minorversion=75", json!({"DisplayName": "Granite Peak Brewing", "CompanyName": "Granite Peak", "Notes": "VIP"}))
        .await;
    assert_eq!(status, 200, "{created}");
    let c = &created["Customer"];
    assert_eq!(c["SyncToken"], "0");
    assert_eq!(c["Active"], true);
    assert_eq!(c["domain"], "QBO");
    assert_eq!(c["sparse"], false);
    assert_eq!(c["Balance"], json!(0.0));
    assert!(
        c["MetaData"]["CreateTime"]
            .as_str()
            .unwrap()
            .ends_with("-07:00")
    );
    let id = c["Id"].as_str().unwrap().to_string();
    assert!(id.parse::<u64>().is_ok());
    let (status, read) = qb.get(&format!("customer/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(read["Customer"], *c);

    // Sparse: only the given field changes.
    let (status, sparse) = qb
        .post("customer", json!({"Id": id, "SyncToken": "0", "sparse": true, "PrimaryEmailAddr": {"Address": "orders@granite.example"}}))
        .await;
    assert_eq!(status, 200, "{sparse}");
    assert_eq!(sparse["Customer"]["SyncToken"], "1");
    assert_eq!(sparse["Customer"]["Notes"], "VIP");
    assert_eq!(sparse["Customer"]["CompanyName"], "Granite Peak");

    // Full: writable fields left out are gone.
    let (status, full) = qb
        .post(
            "customer",
            json!({"Id": id, "SyncToken": "1", "DisplayName": "Granite Peak Brewing Co"}),
        )
        .await;
    assert_eq!(status, 200, "{full}");
    let f = &full["Customer"];
    assert_eq!(f["SyncToken"], "2");
    assert!(
        f.get("Notes").is_none()
            && f.get("CompanyName").is_none()
            && f.get("PrimaryEmailAddr").is_none()
    );
    assert_eq!(f["MetaData"]["CreateTime"], c["MetaData"]["CreateTime"]);

    // Stale SyncToken.
    let (status, stale) = qb
        .post(
            "customer?operation=update",
            json!({"Id": id, "SyncToken": "1", "sparse": true, "Notes": "x"}),
        )
        .await;
    assert_eq!((status, fault_code(&stale)), (400, "5010"));
    assert_eq!(stale["Fault"]["Error"][0]["Message"], "Stale Object Error");

    // Duplicate DisplayName, compared without case.
    let (status, dup) = qb
        .post("customer", json!({"DisplayName": "marigold's TEA room"}))
        .await;
    assert_eq!((status, fault_code(&dup)), (400, "6240"));
    assert_eq!(dup["Fault"]["type"], "ValidationFault");
    assert!(dup["time"].is_string());

    // Required field.
    let (status, missing) = qb.post("customer", json!({"Notes": "no name"})).await;
    assert_eq!((status, fault_code(&missing)), (400, "2020"));

    // Customers are deactivated, not deleted.
    let (status, del) = qb
        .post(
            "customer?operation=delete",
            json!({"Id": id, "SyncToken": "2"}),
        )
        .await;
    assert_eq!((status, fault_code(&del)), (400, "6000"));
    let (status, off) = qb
        .post(
            "customer",
            json!({"Id": id, "SyncToken": "2", "sparse": true, "Active": false}),
        )
        .await;
    assert_eq!((status, &off["Customer"]["Active"]), (200, &json!(false)));
    let (_, q) = qb
        .query(&format!("select * from Customer where Id = '{id}'"))
        .await;
    assert!(
        q["QueryResponse"].get("Customer").is_none(),
        "inactive rows are hidden by default"
    );
    let (_, q) = qb
        .query(&format!(
            "select * from Customer where Id = '{id}' and Active in (true, false)"
        ))
        .await;
    assert_eq!(q["QueryResponse"]["Customer"][0]["Id"], id);

    let (status, nf) = qb.get("customer/99999").await;
    assert_eq!((status, fault_code(&nf)), (400, "610"));
    qb.sb.stop().await;
}

#[tokio::test]
async fn invoices_compute_totals_and_guard_doc_numbers() {
    let qb = Qb::boot(None).await;
    let (_, customer) = qb
        .post("customer", json!({"DisplayName": "Fern & Stone Cafe"}))
        .await;
    let cid = customer["Customer"]["Id"].as_str().unwrap().to_string();
    let (_, item) = qb
        .query("select * from Item where Name = 'Garden Design'")
        .await;
    let item_id = item["QueryResponse"]["Item"][0]["Id"]
        .as_str()
        .unwrap()
        .to_string();

    let body = json!({
        "CustomerRef": {"value": cid},
        "DocNumber": "A-100",
        "Line": [
            {"DetailType": "SalesItemLineDetail", "Amount": 285.0, "SalesItemLineDetail": {"ItemRef": {"value": item_id}, "Qty": 3, "UnitPrice": 95}},
            {"DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": item_id}, "Qty": 1.5, "UnitPrice": 33.335}},
            {"DetailType": "DiscountLineDetail", "DiscountLineDetail": {"PercentBased": true, "DiscountPercent": 10}}
        ]
    });
    let (status, created) = qb.post("invoice", body.clone()).await;
    assert_eq!(status, 200, "{created}");
    let inv = &created["Invoice"];
    // 285.00 + round(1.5 × 33.335 = 50.0025) = 50.00 → 335.00; 10 % = 33.50 → 301.50
    assert_eq!(inv["Line"][1]["Amount"], json!(50.0));
    assert_eq!(inv["Line"][2]["DetailType"], "SubTotalLineDetail");
    assert_eq!(inv["Line"][2]["Amount"], json!(335.0));
    assert_eq!(inv["Line"][3]["Amount"], json!(33.5));
    assert_eq!(inv["TotalAmt"], json!(301.5));
    assert_eq!(inv["Balance"], json!(301.5));
    assert_eq!(inv["Line"][0]["Id"], "1");
    assert_eq!(inv["Line"][0]["LineNum"], 1);
    assert_eq!(inv["CustomerRef"]["name"], "Fern & Stone Cafe");
    assert_eq!(inv["CurrencyRef"]["value"], "USD");
    assert_eq!(
        inv["Line"][0]["SalesItemLineDetail"]["ItemRef"]["name"],
        "Garden Design"
    );
    let (_, c) = qb.get(&format!("customer/{cid}")).await;
    assert_eq!(c["Customer"]["Balance"], json!(301.5));

    // Fixed discount on a second invoice (duplicates allowed explicitly).
    let (status, dup) = qb.post("invoice", body.clone()).await;
    assert_eq!((status, fault_code(&dup)), (400, "6140"));
    assert!(detail(&dup).contains("A-100"));
    let mut fixed = body.clone();
    fixed["Line"][2] = json!({"DetailType": "DiscountLineDetail", "Amount": 35.0, "DiscountLineDetail": {"PercentBased": false}});
    let (status, second) = qb
        .post(
            "invoice?include=allowduplicatedocnum&minorversion=75",
            fixed,
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["Invoice"]["TotalAmt"], json!(300.0));
    let (_, c) = qb.get(&format!("customer/{cid}")).await;
    assert_eq!(c["Customer"]["Balance"], json!(601.5));

    // Amount that disagrees with Qty × UnitPrice.
    let mut wrong = body.clone();
    wrong["DocNumber"] = json!("A-101");
    wrong["Line"][0]["Amount"] = json!(280.0);
    let (status, f) = qb.post("invoice", wrong).await;
    assert_eq!((status, fault_code(&f)), (400, "6000"));
    assert!(detail(&f).contains("Line 1"), "{f}");

    // Bad references and missing fields.
    let (status, f) = qb
        .post("invoice", json!({"CustomerRef": {"value": "4242"}, "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 5}]}))
        .await;
    assert_eq!((status, fault_code(&f)), (400, "2500"));
    let (status, f) = qb
        .post("invoice", json!({"CustomerRef": {"value": cid}, "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 5, "SalesItemLineDetail": {"ItemRef": {"value": "999"}}}]}))
        .await;
    assert_eq!((status, fault_code(&f)), (400, "2500"));
    let (status, f) = qb
        .post(
            "invoice",
            json!({"Line": [{"DetailType": "SalesItemLineDetail", "Amount": 5}]}),
        )
        .await;
    assert_eq!((status, fault_code(&f)), (400, "2020"));

    // Delete: the deleted envelope, the customer balance drops back.
    let id = inv["Id"].as_str().unwrap();
    let (status, stale) = qb
        .post(
            "invoice?operation=delete",
            json!({"Id": id, "SyncToken": "7"}),
        )
        .await;
    assert_eq!((status, fault_code(&stale)), (400, "5010"));
    let (status, deleted) = qb
        .post(
            "invoice?operation=delete",
            json!({"Id": id, "SyncToken": "0"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        deleted["Invoice"],
        json!({"domain": "QBO", "status": "Deleted", "Id": id})
    );
    let (_, c) = qb.get(&format!("customer/{cid}")).await;
    assert_eq!(c["Customer"]["Balance"], json!(300.0));
    assert_eq!(fault_code(&qb.get(&format!("invoice/{id}")).await.1), "610");
    qb.sb.stop().await;
}

#[tokio::test]
async fn query_language_over_http() {
    let qb = Qb::boot(None).await;
    let (status, r) = qb
        .query("select * from Customer where DisplayName = 'Marigold\\'s Tea Room'")
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["QueryResponse"]["Customer"][0]["DisplayName"],
        "Marigold's Tea Room"
    );
    assert_eq!(r["QueryResponse"]["startPosition"], 1);
    assert_eq!(r["QueryResponse"]["maxResults"], 1);

    let (_, r) = qb.query("SELECT * FROM Customer WHERE DisplayName IN ('Bayview Dental Group', 'Quill Street Books') ORDERBY DisplayName DESC").await;
    let names: Vec<&str> = r["QueryResponse"]["Customer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["DisplayName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Quill Street Books", "Bayview Dental Group"]);

    let (_, r) = qb
        .query("select * from Customer where DisplayName LIKE '%Vine%'")
        .await;
    assert_eq!(
        r["QueryResponse"]["Customer"][0]["DisplayName"],
        "Ortega Family Vineyards"
    );

    let (_, all) = qb.query("select count(*) from Customer").await;
    let total = all["QueryResponse"]["totalCount"].as_u64().unwrap();
    assert!(total >= 10, "{all}");
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let (_, page) = qb
            .query(&format!(
                "select * from Customer order by DisplayName startposition {start} maxresults 4"
            ))
            .await;
        let Some(rows) = page["QueryResponse"]["Customer"].as_array() else {
            break;
        };
        assert_eq!(page["QueryResponse"]["startPosition"], start);
        assert_eq!(page["QueryResponse"]["maxResults"], rows.len());
        seen.extend(
            rows.iter()
                .map(|c| c["DisplayName"].as_str().unwrap().to_string()),
        );
        start += 4;
    }
    assert_eq!(seen.len() as u64, total);
    let mut sorted = seen.clone();
    sorted.sort_by_key(|s| s.to_lowercase());
    assert_eq!(seen, sorted);

    let (_, none) = qb
        .query("select * from Invoice where TotalAmt > '999999'")
        .await;
    assert_eq!(none["QueryResponse"], json!({}));
    let (_, skus) = qb
        .query("select *, Sku from Item where Sku = 'MUL-CY'")
        .await;
    assert_eq!(skus["QueryResponse"]["Item"][0]["Name"], "Mulch");
    let (_, open) = qb.query("select * from Invoice where Balance > 0 and MetaData.LastUpdatedTime >= '2000-01-01' orderby TotalAmt").await;
    assert!(open["QueryResponse"]["Invoice"].as_array().unwrap().len() >= 3);

    let (status, bad) = qb.query("select * from Customer wher Id = '1'").await;
    assert_eq!((status, fault_code(&bad)), (400, "4000"));
    assert_eq!(bad["Fault"]["Error"][0]["Message"], "Error parsing query");
    assert!(
        detail(&bad).starts_with("QueryParserError: Encountered"),
        "{bad}"
    );
    assert!(detail(&bad).contains("at line 1, column 24"), "{bad}");
    let (status, or) = qb
        .query("select * from Customer where Id = '1' OR Id = '2'")
        .await;
    assert_eq!((status, fault_code(&or)), (400, "4000"));
    let (status, curly) = qb
        .query("select * from Customer where DisplayName = \u{2019}x\u{2019}")
        .await;
    assert_eq!((status, fault_code(&curly)), (400, "4000"));

    // python-quickbooks posts the query as application/text.
    let req = qb
        .http
        .post(qb.url("query"))
        .bearer_auth(&qb.token)
        .header("Content-Type", "application/text")
        .body("SELECT * FROM Item WHERE Type = 'Service' MAXRESULTS 2");
    let (status, r) = qb.send(req).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["QueryResponse"]["maxResults"], 2);
    qb.sb.stop().await;
}

#[tokio::test]
async fn requestid_replays_the_first_response() {
    let qb = Qb::boot(None).await;
    let body = json!({"DisplayName": "Copperline Electric"});
    let (s1, first) = qb
        .post("customer?requestid=create-copperline-1", body.clone())
        .await;
    let (s2, second) = qb
        .post("customer?requestid=create-copperline-1", body.clone())
        .await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, second, "replayed verbatim");
    let (_, q) = qb
        .query("select count(*) from Customer where DisplayName = 'Copperline Electric'")
        .await;
    assert_eq!(q["QueryResponse"]["totalCount"], 1);

    // A different requestid runs the operation again (and hits the duplicate-name rule).
    let (status, dup) = qb
        .post("customer?requestid=create-copperline-2", body.clone())
        .await;
    assert_eq!((status, fault_code(&dup)), (400, "6240"));
    let (status, again) = qb
        .post(
            "customer?requestid=create-copperline-2",
            json!({"DisplayName": "Other"}),
        )
        .await;
    assert_eq!((status, again), (400, dup), "faults are replayed too");

    let long = "x".repeat(51);
    let (status, f) = qb
        .post(
            &format!("customer?requestid={long}"),
            json!({"DisplayName": "Long"}),
        )
        .await;
    assert_eq!((status, fault_code(&f)), (400, "6000"));
    assert_eq!(
        detail(&f),
        "cannot enter more than 50 characters in the request_id field"
    );

    let calls: Value = qb
        .http
        .get(format!("{}/sandbox/admin/calls", qb.sb.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        calls
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["requestid"] == "create-copperline-1" && c["status"] == 200)
    );
    qb.sb.stop().await;
}

#[tokio::test]
async fn state_file_round_trip() {
    let path = std::env::temp_dir().join(format!("ledgerlink-qbo-{}.json", uuid::Uuid::new_v4()));
    let qb = Qb::boot(Some(path.clone())).await;
    let realm = qb.sb.info_str("realm_id").to_string();
    let client_id = qb.sb.info_str("client_id").to_string();
    let (_, created) = qb
        .post(
            "customer?requestid=persist-1",
            json!({"DisplayName": "Saved Across Restarts"}),
        )
        .await;
    let id = created["Customer"]["Id"].as_str().unwrap().to_string();
    qb.admin("clock/advance", json!({"seconds": 7200})).await;
    qb.sb.stop().await;
    assert!(path.exists());

    let qb = Qb::boot(Some(path.clone())).await;
    assert_eq!(qb.sb.info_str("realm_id"), realm);
    assert_eq!(qb.sb.info_str("client_id"), client_id);
    let (status, read) = qb.get(&format!("customer/{id}")).await;
    assert_eq!(
        status, 200,
        "the startup access token is valid after the restart: {read}"
    );
    assert_eq!(read["Customer"]["DisplayName"], "Saved Across Restarts");
    let (_, replay) = qb
        .post(
            "customer?requestid=persist-1",
            json!({"DisplayName": "Saved Across Restarts"}),
        )
        .await;
    assert_eq!(
        replay, created,
        "stored requestid replies survive a restart"
    );
    let state: Value = qb
        .http
        .get(format!("{}/sandbox/admin/state", qb.sb.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        state["entities"]["Customer"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["Id"] == id)
    );

    // Reset re-seeds: the customer created above is gone, the sample company is back.
    qb.admin("reset", json!({})).await;
    assert_eq!(
        fault_code(&qb.get(&format!("customer/{id}")).await.1),
        "610"
    );
    assert_eq!(qb.get("customer/1").await.0, 200);
    qb.sb.stop().await;
    let _ = std::fs::remove_file(&path);
}
