//! The Salesforce sandbox over real HTTP on loopback: OAuth, sessions, CRUD and the org's rules, external-id
//! upsert, SOQL with paging, the limit header and the state file.

use chrono::Duration;
use ledgerlink_sandbox::salesforce::SalesforceOptions;
use reqwest::StatusCode;
use serde_json::{Value, json};

mod support;
use support::Org;

impl Org {
    async fn query(&self, soql: &str) -> (StatusCode, Value) {
        self.get(&format!("/query?q={}", urlencoding::encode(soql)))
            .await
    }

    async fn rows(&self, soql: &str) -> Vec<Value> {
        let (status, body) = self.query(soql).await;
        assert_eq!(status, StatusCode::OK, "{soql}: {body}");
        assert_eq!(body["done"], true);
        body["records"].as_array().unwrap().clone()
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/sandbox/admin/{path}", self.sb.base_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "admin {path}: {}",
            resp.status()
        );
        resp.json().await.unwrap()
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.sb.info_str("token_url"))
            .form(form)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.json().await.unwrap())
    }
}

fn error_code(body: &Value) -> &str {
    body[0]["errorCode"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error array: {body}"))
}

fn dec(v: &Value) -> rust_decimal::Decimal {
    v.to_string()
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {v}"))
}

#[tokio::test]
async fn startup_line_has_working_credentials() {
    let org = Org::default().await;
    let info = &org.sb.info;
    assert_eq!(info["system"], "salesforce");
    assert_eq!(info["instance_url"], info["base_url"]);
    assert_eq!(info["api_version"], "59.0");
    let org_id = info["org_id"].as_str().unwrap();
    assert!(org_id.starts_with("00D") && org_id.len() == 18);
    assert!(ledgerlink_model::SalesforceId::parse(org_id).is_ok());
    let (status, body) = org.get("/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["query"], "/services/data/v59.0/query");

    let versions: Value = org
        .http
        .get(format!("{}/services/data/", org.sb.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        versions
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["version"] == "59.0" && v["url"] == "/services/data/v59.0")
    );
    let resp = org
        .http
        .get(format!("{}/services/data/v42.0/sobjects", org.sb.base_url))
        .bearer_auth(&org.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(&resp.json().await.unwrap()), "NOT_FOUND");
    org.sb.stop().await;
}

#[tokio::test]
async fn refresh_token_flow_and_session_expiry() {
    let mut org = Org::default().await;
    let (id, secret, refresh) = (
        org.sb.info_str("client_id").to_string(),
        org.sb.info_str("client_secret").to_string(),
        org.sb.info_str("refresh_token").to_string(),
    );

    org.admin("expire-sessions", json!({})).await;
    let resp = org
        .http
        .get(org.url("/sobjects/Account"))
        .bearer_auth(&org.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("Sforce-Limit-Info").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    );

    let (status, tok) = org
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("refresh_token", &refresh),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["instance_url"], org.sb.base_url.as_str());
    assert!(tok["issued_at"].as_str().unwrap().parse::<i64>().is_ok());
    assert!(!tok["signature"].as_str().unwrap().is_empty());
    assert!(
        tok["id"]
            .as_str()
            .unwrap()
            .contains(org.sb.info_str("org_id"))
    );
    assert!(
        tok.get("refresh_token").is_none(),
        "refresh tokens are not rotated"
    );
    org.token = tok["access_token"].as_str().unwrap().to_string();
    assert_eq!(org.get("/sobjects/Account").await.0, StatusCode::OK);

    // The same refresh token keeps working, also with the client in HTTP Basic.
    let resp = org
        .http
        .post(org.sb.info_str("token_url"))
        .basic_auth(&id, Some(&secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let (status, err) = org
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("refresh_token", "nope"),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        err,
        json!({"error": "invalid_grant", "error_description": "expired access/refresh token"})
    );
    let (status, err) = org
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", &id),
            ("client_secret", "wrong"),
            ("refresh_token", &refresh),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_client");

    // Access tokens expire on the sandbox clock.
    org.admin("clock/advance", json!({"seconds": 2 * 3600 + 1}))
        .await;
    assert_eq!(
        org.get("/sobjects/Account").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Password and authorization-code grants.
    let password = org.sb.info_str("password").to_string();
    let username = org.sb.info_str("username").to_string();
    let (status, tok) = org
        .token_request(&[
            ("grant_type", "password"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("username", &username),
            ("password", &password),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    let code = org
        .admin(
            "authorization-codes",
            json!({"redirect_uri": "http://localhost/cb"}),
        )
        .await;
    let code = code["code"].as_str().unwrap().to_string();
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", &id),
        ("client_secret", &secret),
        ("code", &code),
        ("redirect_uri", "http://localhost/cb"),
    ];
    let (status, tok) = org.token_request(&form).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert!(tok["refresh_token"].as_str().is_some());
    let (status, err) = org.token_request(&form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "codes are single-use");
    assert_eq!(err["error"], "invalid_grant");

    // Revoking the new access token ends that session.
    org.token = tok["access_token"].as_str().unwrap().to_string();
    assert_eq!(org.get("/limits").await.0, StatusCode::OK);
    let resp = org
        .http
        .post(format!("{}/services/oauth2/revoke", org.sb.base_url))
        .form(&[("token", org.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(org.get("/limits").await.0, StatusCode::UNAUTHORIZED);
    org.sb.stop().await;
}

#[tokio::test]
async fn crud_keeps_system_fields_and_soft_deletes() {
    let org = Org::default().await;
    let (status, created) = org
        .post(
            "/sobjects/Account",
            json!({"Name": "Trailhead Bikes", "Phone": "555-0100", "AnnualRevenue": 1250000.75}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["success"], true);
    assert_eq!(created["errors"], json!([]));
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("001") && id.len() == 18);
    assert!(ledgerlink_model::SalesforceId::parse(&id).is_ok());

    let (status, rec) = org.get(&format!("/sobjects/Account/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        rec["attributes"],
        json!({"type": "Account", "url": format!("/services/data/v59.0/sobjects/Account/{id}")})
    );
    assert_eq!(rec["Name"], "Trailhead Bikes");
    assert_eq!(rec["AnnualRevenue"].to_string(), "1250000.75");
    assert_eq!(rec["IsDeleted"], false);
    let created_at = rec["CreatedDate"].as_str().unwrap().to_string();
    assert_eq!(created_at.len(), "2024-01-15T10:30:00.000+0000".len());
    assert!(
        created_at.ends_with("+0000") && created_at.as_bytes()[19] == b'.',
        "{created_at}"
    );
    assert_eq!(rec["SystemModstamp"], created_at.as_str());
    let api_user = rec["CreatedById"].as_str().unwrap();
    assert_eq!(rec["OwnerId"], api_user);
    assert!(api_user.starts_with("005"));

    org.admin("clock/advance", json!({"seconds": 90})).await;
    let (status, _) = org
        .patch(
            &format!("/sobjects/Account/{id}"),
            json!({"phone": "555-0199"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, rec) = org
        .get(&format!(
            "/sobjects/Account/{id}?fields=Name,Phone,LastModifiedDate"
        ))
        .await;
    assert_eq!(rec["Phone"], "555-0199");
    assert!(
        rec.get("AnnualRevenue").is_none(),
        "only the asked fields: {rec}"
    );
    let modified = rec["LastModifiedDate"].as_str().unwrap();
    assert!(
        modified > created_at.as_str(),
        "{modified} should be after {created_at}"
    );
    let (status, err) = org
        .get(&format!("/sobjects/Account/{id}?fields=Name,Bogus"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "INVALID_FIELD");

    let (status, _) = org
        .send(
            reqwest::Method::DELETE,
            &format!("/sobjects/Account/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, err) = org.get(&format!("/sobjects/Account/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&err), "ENTITY_IS_DELETED");
    let soql = format!(
        "SELECT Id, IsDeleted FROM Account WHERE Id = '{}'",
        &id[..15]
    );
    assert!(org.rows(&soql).await.is_empty());
    let (status, all) = org
        .get(&format!("/queryAll?q={}", urlencoding::encode(&soql)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["records"][0]["IsDeleted"], true);

    let (status, err) = org.get("/sobjects/Account/001000000000000AAA").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&err), "NOT_FOUND");
    let (status, _) = org.get("/sobjects/Widget__c/001000000000000AAA").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    org.sb.stop().await;
}

#[tokio::test]
async fn required_unknown_and_read_only_fields_are_refused() {
    let org = Org::default().await;
    let (status, err) = org
        .post("/sobjects/Opportunity", json!({"Name": "No stage"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "REQUIRED_FIELD_MISSING");
    assert_eq!(err[0]["fields"], json!(["StageName", "CloseDate"]));

    let (status, err) = org
        .post(
            "/sobjects/Account",
            json!({"Name": "X", "Colour__c": "red"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "INVALID_FIELD");
    assert!(err[0]["message"].as_str().unwrap().contains("Colour__c"));

    let body = json!({"Name": "Won?", "StageName": "Prospecting", "CloseDate": "2024-06-30", "IsWon": true});
    let (status, err) = org.post("/sobjects/Opportunity", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "INVALID_FIELD_FOR_INSERT_UPDATE");
    assert_eq!(err[0]["fields"], json!(["IsWon"]));

    let body = json!({"Name": "Bad stage", "StageName": "Maybe", "CloseDate": "2024-06-30"});
    let (_, err) = org.post("/sobjects/Opportunity", body).await;
    assert_eq!(error_code(&err), "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
    let (_, err) = org
        .post(
            "/sobjects/Opportunity",
            json!({"Name": "Bad date", "StageName": "Prospecting", "CloseDate": "30/06/2024"}),
        )
        .await;
    assert_eq!(error_code(&err), "JSON_PARSER_ERROR");
    assert!(err[0]["message"].as_str().unwrap().contains("CloseDate"));
    let (_, err) = org
        .post(
            "/sobjects/Contact",
            json!({"LastName": "Nobody", "AccountId": "001000000000000AAA"}),
        )
        .await;
    assert_eq!(error_code(&err), "INVALID_CROSS_REFERENCE_KEY");
    let (status, err) = org
        .send(reqwest::Method::POST, "/sobjects/Account", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "REQUIRED_FIELD_MISSING");
    org.sb.stop().await;
}

#[tokio::test]
async fn stage_drives_is_won_and_line_items_roll_up_into_amount() {
    let org = Org::default().await;
    let account = org
        .rows("SELECT Id FROM Account WHERE Name = 'Acme Corporation'")
        .await[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let body = json!({"AccountId": account, "Name": "Acme - Expansion", "StageName": "Prospecting", "CloseDate": "2030-03-31"});
    let (status, created) = org.post("/sobjects/Opportunity", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let opp = created["id"].as_str().unwrap().to_string();
    assert!(opp.starts_with("006"));
    let (_, rec) = org.get(&format!("/sobjects/Opportunity/{opp}")).await;
    assert_eq!(
        (
            rec["IsClosed"].clone(),
            rec["IsWon"].clone(),
            rec["HasOpportunityLineItem"].clone()
        ),
        (json!(false), json!(false), json!(false))
    );

    let entries = org
        .rows("SELECT Id, UnitPrice, Product2Id FROM PricebookEntry WHERE Pricebook2.IsStandard = true AND Product2.ProductCode IN ('LIC-SYNC', 'SVC-HOUR') ORDER BY Product2.ProductCode")
        .await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (sync, hour) = (
        entries[0]["Id"].as_str().unwrap(),
        entries[1]["Id"].as_str().unwrap(),
    );
    assert_eq!(dec(&entries[0]["UnitPrice"]), "450.00".parse().unwrap());

    let line = json!({"OpportunityId": opp, "PricebookEntryId": sync, "Quantity": 3, "UnitPrice": 199.99, "Discount": 12.5});
    let (status, l1) = org.post("/sobjects/OpportunityLineItem", line).await;
    assert_eq!(status, StatusCode::CREATED, "{l1}");
    let l1 = l1["id"].as_str().unwrap().to_string();
    assert!(l1.starts_with("00k"));
    let (_, rec) = org
        .get(&format!("/sobjects/OpportunityLineItem/{l1}"))
        .await;
    // 3 × 199.99 × (1 − 0.125) = 524.97375 → 524.97
    assert_eq!(dec(&rec["TotalPrice"]), "524.97".parse().unwrap());
    assert_eq!(dec(&rec["ListPrice"]), "450.00".parse().unwrap());
    assert_eq!(rec["Product2Id"], entries[0]["Product2Id"]);

    let (status, l2) = org
        .post(
            "/sobjects/OpportunityLineItem",
            json!({"OpportunityId": opp, "PricebookEntryId": hour, "Quantity": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{l2}");
    let l2 = l2["id"].as_str().unwrap().to_string();
    let (_, rec) = org
        .get(&format!("/sobjects/OpportunityLineItem/{l2}"))
        .await;
    assert_eq!(
        dec(&rec["UnitPrice"]),
        "165.00".parse().unwrap(),
        "unit price defaults from the entry"
    );
    assert_eq!(dec(&rec["TotalPrice"]), "330.00".parse().unwrap());

    let (_, before) = org.get(&format!("/sobjects/Opportunity/{opp}")).await;
    assert_eq!(dec(&before["Amount"]), "854.97".parse().unwrap());
    assert_eq!(before["HasOpportunityLineItem"], true);

    let both = json!({"OpportunityId": opp, "PricebookEntryId": hour, "Quantity": 1, "UnitPrice": 10, "TotalPrice": 10});
    let (status, err) = org.post("/sobjects/OpportunityLineItem", both).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "FIELD_INTEGRITY_EXCEPTION");
    let (_, err) = org
        .post(
            "/sobjects/OpportunityLineItem",
            json!({"OpportunityId": opp, "Quantity": 1}),
        )
        .await;
    assert_eq!(error_code(&err), "REQUIRED_FIELD_MISSING");
    assert_eq!(err[0]["fields"], json!(["PricebookEntryId"]));

    org.admin("clock/advance", json!({"seconds": 5})).await;
    let (status, _) = org
        .patch(
            &format!("/sobjects/OpportunityLineItem/{l2}"),
            json!({"Quantity": 4}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, after) = org.get(&format!("/sobjects/Opportunity/{opp}")).await;
    assert_eq!(dec(&after["Amount"]), "1184.97".parse().unwrap());
    assert!(after["SystemModstamp"].as_str().unwrap() > before["SystemModstamp"].as_str().unwrap());

    let (status, _) = org
        .send(
            reqwest::Method::DELETE,
            &format!("/sobjects/OpportunityLineItem/{l1}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, after) = org.get(&format!("/sobjects/Opportunity/{opp}")).await;
    assert_eq!(dec(&after["Amount"]), "660.00".parse().unwrap());

    let (status, _) = org
        .patch(
            &format!("/sobjects/Opportunity/{opp}"),
            json!({"StageName": "Closed Won"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, won) = org.get(&format!("/sobjects/Opportunity/{opp}")).await;
    assert_eq!(
        (won["IsClosed"].clone(), won["IsWon"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(dec(&won["Probability"]), 100.into());
    let (_, err) = org
        .patch(
            &format!("/sobjects/Opportunity/{opp}"),
            json!({"IsClosed": false}),
        )
        .await;
    assert_eq!(error_code(&err), "INVALID_FIELD_FOR_INSERT_UPDATE");

    // A custom price needs a standard one first.
    let (_, product) = org
        .post(
            "/sobjects/Product2",
            json!({"Name": "Gift Card", "IsActive": true}),
        )
        .await;
    let custom_book = org
        .rows("SELECT Id FROM Pricebook2 WHERE IsStandard = false")
        .await[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, err) = org
        .post("/sobjects/PricebookEntry", json!({"Pricebook2Id": custom_book, "Product2Id": product["id"], "UnitPrice": 25, "IsActive": true}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "STANDARD_PRICE_NOT_DEFINED");
    org.sb.stop().await;
}

#[tokio::test]
async fn external_id_upsert_creates_updates_and_reports_ambiguity() {
    let org = Org::default().await;
    let path = "/sobjects/Account/QuickBooks_Customer_Id__c/QB-900";
    let (status, body) = org.patch(path, json!({"Name": "Upserted Ltd"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["created"], true);
    assert_eq!(body["success"], true);
    let id = body["id"].as_str().unwrap().to_string();

    let (status, body) = org.patch(path, json!({"Name": "Upserted Limited"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"id": id, "success": true, "errors": [], "created": false})
    );
    let (_, rec) = org.get(&format!("/sobjects/Account/{id}")).await;
    assert_eq!(rec["Name"], "Upserted Limited");
    assert_eq!(rec["QuickBooks_Customer_Id__c"], "QB-900");

    let (status, _) = org
        .post(
            "/sobjects/Account",
            json!({"Name": "Twin", "QuickBooks_Customer_Id__c": "qb-900"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = org.patch(path, json!({"Name": "Ambiguous"})).await;
    assert_eq!(status, StatusCode::MULTIPLE_CHOICES);
    let urls = body.as_array().unwrap();
    assert_eq!(urls.len(), 2);
    assert!(urls.iter().all(|u| {
        u.as_str()
            .unwrap()
            .starts_with("/services/data/v59.0/sobjects/Account/001")
    }));
    assert_eq!(
        org.rows("SELECT Id FROM Account WHERE Name = 'Ambiguous'")
            .await
            .len(),
        0,
        "nothing changed"
    );

    let (status, err) = org
        .patch("/sobjects/Account/Name/Acme", json!({"Phone": "1"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "INVALID_FIELD");
    assert!(err[0]["message"].as_str().unwrap().contains("Name"));
    let (status, err) = org.patch("/sobjects/Account/Nope__c/1", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err[0]["message"].as_str().unwrap().contains("Nope__c"));

    // A custom external id defined through the admin API.
    org.admin("fields", json!({"object": "Contact", "name": "QB_Contact_Id__c", "type": "Text", "externalId": true})).await;
    let (status, body) = org
        .patch(
            "/sobjects/Contact/QB_Contact_Id__c/C-1",
            json!({"LastName": "Ngata"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = org
        .patch(
            "/sobjects/Contact/QB_Contact_Id__c/C-2?updateOnly=true",
            json!({"LastName": "X"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    org.sb.stop().await;
}

#[tokio::test]
async fn soql_filters_orders_counts_and_reports_errors() {
    let org = Org::default().await;
    let rows = org
        .rows(r"SELECT Id, Name FROM Account WHERE Name = 'O\'Brien Logistics'")
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["Name"], "O'Brien Logistics");
    assert_eq!(rows[0]["attributes"]["type"], "Account");
    assert_eq!(
        org.rows("SELECT Id FROM Account WHERE Name LIKE 'o\\'brien%'")
            .await
            .len(),
        1
    );

    let rows = org.rows("SELECT Name, BillingState FROM Account WHERE (BillingState = 'CO' OR BillingState = 'TX') AND Industry != 'Energy' ORDER BY Name").await;
    let names: Vec<&str> = rows.iter().map(|r| r["Name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["Globex Health", "Initech Software", "Summit Outdoor Gear"]
    );

    let rows = org
        .rows("SELECT Name FROM Account ORDER BY Name DESC LIMIT 3")
        .await;
    let names: Vec<&str> = rows.iter().map(|r| r["Name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "Summit Outdoor Gear",
            "O'Brien Logistics",
            "Müller Feinmechanik GmbH"
        ]
    );
    let rows = org
        .rows("SELECT Name FROM Account ORDER BY Name DESC LIMIT 2 OFFSET 1")
        .await;
    assert_eq!(rows[0]["Name"], "O'Brien Logistics");

    let (_, count) = org
        .query("SELECT COUNT() FROM Opportunity WHERE IsWon = true")
        .await;
    assert_eq!(count["totalSize"], 3, "{count}");
    assert_eq!(count["records"], json!([]));
    let (_, closed) = org
        .query("select count() from opportunity where not IsClosed = false")
        .await;
    assert_eq!(closed["totalSize"], 4);

    let rows = org.rows("SELECT Name, Account.Name, Owner.Name FROM Opportunity WHERE Account.Name = 'acme corporation'").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["Account"]["Name"], "Acme Corporation");
    assert_eq!(rows[0]["Account"]["attributes"]["type"], "Account");
    let lines = org.rows("SELECT Quantity, PricebookEntry.Product2.Name FROM OpportunityLineItem WHERE Opportunity.Name = 'Acme - Warehouse Rollout' ORDER BY Quantity DESC").await;
    assert_eq!(
        lines[0]["PricebookEntry"]["Product2"]["Name"],
        "Barcode Scanner X2"
    );

    // Change tracking on SystemModstamp, with the datetime spelled three ways.
    org.admin("clock/advance", json!({"seconds": 3600})).await;
    let mark = org.admin("clock/advance", json!({"seconds": 1})).await["now"]
        .as_str()
        .unwrap()
        .to_string();
    let target = org
        .rows("SELECT Id FROM Account WHERE Name = 'Initech Software'")
        .await[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    org.admin("clock/advance", json!({"seconds": 1})).await;
    assert_eq!(
        org.patch(
            &format!("/sobjects/Account/{target}"),
            json!({"Rating": null})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        org.patch(
            &format!("/sobjects/Account/{target}"),
            json!({"Phone": "(512) 555-0000"})
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    let zulu = format!("{}Z", &mark[..19]);
    let millis = format!("{}Z", &mark[..23]);
    for literal in [mark.as_str(), zulu.as_str(), millis.as_str()] {
        let rows = org
            .rows(&format!(
                "SELECT Id, SystemModstamp FROM Account WHERE SystemModstamp > {literal}"
            ))
            .await;
        assert_eq!(rows.len(), 1, "{literal}: {rows:?}");
        assert_eq!(rows[0]["Id"], target.as_str());
    }
    assert_eq!(
        org.rows("SELECT Id FROM Opportunity WHERE CloseDate < TODAY AND IsWon = true")
            .await
            .len(),
        3
    );

    let (status, err) = org
        .query("SELECT Id FROM Account WHERE Name = 'x' ORDER Name")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "MALFORMED_QUERY");
    let msg = err[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("Row:1:Column:47") && msg.contains("expected BY"),
        "{msg}"
    );
    let (status, err) = org.query("SELECT Id, Nmae FROM Account").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "INVALID_FIELD");
    let msg = err[0]["message"].as_str().unwrap();
    assert!(msg.contains("'Nmae'") && msg.contains("Column:12"), "{msg}");
    let (_, err) = org
        .query("SELECT Id FROM Account WHERE AnnualRevenue > '5'")
        .await;
    assert_eq!(error_code(&err), "INVALID_FIELD");
    let (_, err) = org.query("SELECT Id FROM Invoice__c").await;
    assert_eq!(error_code(&err), "INVALID_TYPE");
    let (_, err) = org.get("/query").await;
    assert_eq!(error_code(&err), "MALFORMED_QUERY");
    org.sb.stop().await;
}

#[tokio::test]
async fn query_pages_follow_next_records_url() {
    let org = Org::start(SalesforceOptions {
        query_page_size: 5,
        ..Default::default()
    })
    .await;
    let (status, first) = org
        .query("SELECT Id, Name FROM Contact ORDER BY LastName")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["totalSize"], 12);
    assert_eq!(first["done"], false);
    let mut seen: Vec<String> = first["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen.len(), 5);
    let mut next = first["nextRecordsUrl"].as_str().map(str::to_string);
    let mut pages = 1;
    while let Some(path) = next {
        assert!(path.starts_with("/services/data/v59.0/query/01g"), "{path}");
        let resp = org
            .http
            .get(format!("{}{path}", org.sb.base_url))
            .bearer_auth(&org.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let page: Value = resp.json().await.unwrap();
        assert_eq!(page["totalSize"], 12);
        seen.extend(
            page["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["Id"].as_str().unwrap().to_string()),
        );
        next = page["nextRecordsUrl"].as_str().map(str::to_string);
        assert_eq!(page["done"], next.is_none());
        pages += 1;
    }
    assert_eq!(pages, 3);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 12);
    let (status, err) = org.get("/query/01gXXXXXXXXXXXXXXX-5").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "INVALID_QUERY_LOCATOR");
    org.sb.stop().await;
}

#[tokio::test]
async fn every_api_response_reports_usage() {
    let org = Org::default().await;
    let usage = |resp: &reqwest::Response| {
        resp.headers()
            .get("Sforce-Limit-Info")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    let r1 = org
        .http
        .get(org.url("/limits"))
        .bearer_auth(&org.token)
        .send()
        .await
        .unwrap();
    let r2 = org
        .http
        .get(org.url("/sobjects/Account/bad"))
        .bearer_auth(&org.token)
        .send()
        .await
        .unwrap();
    assert_eq!(usage(&r1), "api-usage=1/100000");
    assert_eq!(usage(&r2), "api-usage=2/100000");
    assert_eq!(r2.status(), StatusCode::NOT_FOUND);
    let limits: Value = r1.json().await.unwrap();
    assert_eq!(limits["DailyApiRequests"]["Remaining"], 99_999);
    org.admin("clock/advance", json!({"seconds": 86_400})).await;
    // A new day starts a new count (the session outlived by a day, so refresh first).
    let (_, tok) = org
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", org.sb.info_str("client_id")),
            ("client_secret", org.sb.info_str("client_secret")),
            ("refresh_token", org.sb.info_str("refresh_token")),
        ])
        .await;
    let r3 = org
        .http
        .get(org.url("/limits"))
        .bearer_auth(tok["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(usage(&r3), "api-usage=1/100000");
    let calls: Value = org
        .http
        .get(format!("{}/sandbox/admin/calls", org.sb.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(calls.as_array().unwrap().iter().any(|c| c["path"] == "/services/data/v59.0/sobjects/Account/bad" && c["status"] == 404));
    org.sb.stop().await;
}

#[tokio::test]
async fn state_file_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("ledgerlink-sf-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("salesforce.json");
    let opts = || SalesforceOptions {
        state_file: Some(file.clone()),
        access_token_ttl: Duration::hours(2),
        ..Default::default()
    };

    let org = Org::start(opts()).await;
    let (_, created) = org
        .post(
            "/sobjects/Account",
            json!({"Name": "Persisted Pty", "AnnualRevenue": 0.1}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    org.admin(
        "fields",
        json!({"object": "Account", "name": "Region__c", "type": "Text"}),
    )
    .await;
    assert_eq!(
        org.patch(
            &format!("/sobjects/Account/{id}"),
            json!({"Region__c": "APAC"})
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    let first_info = org.sb.info.clone();
    org.sb.stop().await;
    assert!(file.exists());

    let org = Org::start(opts()).await;
    assert_eq!(org.sb.info["client_id"], first_info["client_id"]);
    assert_eq!(org.sb.info["refresh_token"], first_info["refresh_token"]);
    assert_eq!(org.sb.info["org_id"], first_info["org_id"]);
    let (status, rec) = org.get(&format!("/sobjects/Account/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rec["Region__c"], "APAC");
    assert_eq!(rec["AnnualRevenue"].to_string(), "0.1");
    // The old session was persisted too.
    let resp = org
        .http
        .get(org.url("/limits"))
        .bearer_auth(first_info["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    org.sb.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn admin_reset_restores_the_sample_org() {
    let org = Org::default().await;
    let (_, before) = org.query("SELECT COUNT() FROM Account").await;
    org.post("/sobjects/Account", json!({"Name": "Temporary"}))
        .await;
    org.admin("reset", json!({})).await;
    let (status, after) = org.query("SELECT COUNT() FROM Account").await;
    assert_eq!(status, StatusCode::OK, "sessions survive a reset");
    assert_eq!(after["totalSize"], before["totalSize"]);
    let state: Value = org
        .http
        .get(format!("{}/sandbox/admin/state", org.sb.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["records"]["Account"].as_array().unwrap().len(), 10);
    org.sb.stop().await;

    let empty = Org::start(SalesforceOptions {
        seed: false,
        ..Default::default()
    })
    .await;
    assert_eq!(
        empty.query("SELECT COUNT() FROM Account").await.1["totalSize"],
        0
    );
    assert_eq!(
        empty
            .rows("SELECT Id FROM Pricebook2 WHERE IsStandard = true")
            .await
            .len(),
        1
    );
    empty.sb.stop().await;
}
