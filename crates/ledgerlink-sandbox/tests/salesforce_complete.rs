//! The Salesforce sandbox's second round over real HTTP(S) on loopback: TLS, the authorize page, JWT bearer, the
//! daily budget and injected faults, sObject Collections, Composite, the change feeds, describe depth, child
//! subqueries and date literals, and Task.

use std::time::{Duration as StdDuration, Instant};

use base64::Engine;
use ledgerlink_sandbox::salesforce::SalesforceOptions;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

mod support;
use support::Org;

impl Org {
    async fn rows(&self, soql: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/query?q={}", urlencoding::encode(soql)))
            .await;
        assert_eq!(status, StatusCode::OK, "{soql}: {body}");
        body["records"].as_array().unwrap().clone()
    }

    async fn admin(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .request(method, format!("{}/sandbox/admin/{path}", self.sb.base_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.json().await.unwrap())
    }

    async fn admin_ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.admin(Method::POST, path, body).await;
        assert!(status.is_success(), "admin {path}: {status} {v}");
        v
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

    async fn account_id(&self, name: &str) -> String {
        let rows = self
            .rows(&format!("SELECT Id FROM Account WHERE Name = '{name}'"))
            .await;
        rows[0]["Id"].as_str().unwrap().to_string()
    }
}

fn error_code(body: &Value) -> &str {
    body[0]["errorCode"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error array: {body}"))
}

#[tokio::test]
async fn tls_serves_https_with_the_certificate_it_wrote() {
    let org = Org::start(SalesforceOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    assert!(
        org.sb.base_url.starts_with("https://127.0.0.1:"),
        "{}",
        org.sb.base_url
    );
    assert_eq!(org.sb.info_str("instance_url"), org.sb.base_url);
    let pem = std::fs::read_to_string(org.sb.info_str("cert_pem_path")).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let (status, body) = org.get("/sobjects/Account/describe").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The token endpoint answers over TLS too, with the https instance URL.
    let (status, tok) = org
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", org.sb.info_str("refresh_token")),
            ("client_id", org.sb.info_str("client_id")),
            ("client_secret", org.sb.info_str("client_secret")),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert_eq!(tok["instance_url"], org.sb.base_url);
    // A client that does not trust the certificate is refused.
    let stranger = Client::new();
    assert!(stranger.get(org.url("/limits")).send().await.is_err());
}

#[tokio::test]
async fn authorize_page_signs_in_and_redirects_with_a_code() {
    let org = Org::default().await;
    let client_id = org.sb.info_str("client_id");
    let redirect = "https://app.example/callback";
    let page = org
        .http
        .get(format!("{}/services/oauth2/authorize", org.sb.base_url))
        .query(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect),
            ("state", "xyz"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<form") && html.contains(org.sb.info_str("username")),
        "{html}"
    );

    let decide = |decision: &'static str, password: String| {
        let form = vec![
            ("response_type", "code".to_string()),
            ("client_id", client_id.to_string()),
            ("redirect_uri", redirect.to_string()),
            ("state", "xyz".to_string()),
            ("username", org.sb.info_str("username").to_string()),
            ("password", password),
            ("decision", decision.to_string()),
        ];
        org.http
            .post(format!("{}/services/oauth2/authorize", org.sb.base_url))
            .form(&form)
            .send()
    };
    // A wrong password shows the form again with a message, no redirect.
    let wrong = decide("allow", "nope".into()).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::OK);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("check your username and password")
    );
    // Deny → access_denied with the state.
    let denied = decide("deny", String::new()).await.unwrap();
    assert_eq!(denied.status(), StatusCode::FOUND);
    let location = denied.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(redirect)
            && location.contains("error=access_denied")
            && location.contains("state=xyz")
    );
    // Allow → a code that the token endpoint exchanges once.
    let password = org.sb.info_str("password").to_string();
    let allowed = decide("allow", password).await.unwrap();
    assert_eq!(allowed.status(), StatusCode::FOUND);
    let location = url::Url::parse(allowed.headers()["location"].to_str().unwrap()).unwrap();
    let params: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(params["state"], "xyz");
    let code = params["code"].clone();
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
        ("client_id", client_id),
        ("client_secret", org.sb.info_str("client_secret")),
    ];
    let (status, tok) = org.token_request(&exchange).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert!(tok["refresh_token"].is_string());
    assert_eq!(tok["instance_url"], org.sb.base_url);
    let (status, again) = org.token_request(&exchange).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // An unknown client gets an error page, never a redirect.
    let bad = org
        .http
        .get(format!("{}/services/oauth2/authorize?response_type=code&client_id=nope&redirect_uri={redirect}", org.sb.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sign_jwt(key: &rsa::RsaPrivateKey, claims: &Value) -> String {
    use rsa::signature::{SignatureEncoding, Signer};
    let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
    let body = b64(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{body}");
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone());
    let sig = signer.sign(signing_input.as_bytes()).to_bytes();
    format!("{signing_input}.{}", b64(&sig))
}

#[tokio::test]
async fn jwt_bearer_checks_the_assertion_against_the_registered_certificate() {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let org = Org::default().await;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let other = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    // The connected app's certificate: self-signed by the same key.
    let der = key.to_pkcs8_der().unwrap();
    let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
    let key_pair =
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["jwt.example".to_string()])
        .unwrap()
        .self_signed(&key_pair)
        .unwrap();

    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64, sub: &str, aud: &str| json!({"iss": org.sb.info_str("client_id"), "sub": sub, "aud": aud, "exp": exp});
    let username = org.sb.info_str("username").to_string();
    let org_ref = &org;
    let grant = |assertion: String| async move {
        org_ref
            .token_request(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ])
            .await
    };
    let good = sign_jwt(
        &key,
        &claims(now + 180, &username, "https://login.salesforce.com"),
    );
    // Nothing registered yet.
    let (status, body) = grant(good.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{body}"
    );

    let (status, _) = org
        .admin(
            Method::POST,
            "connected-app/certificate",
            json!({"pem": cert.pem()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, tok) = grant(good).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert!(
        tok.get("refresh_token").is_none(),
        "the JWT flow issues no refresh token"
    );
    let session = tok["access_token"].as_str().unwrap();
    let resp = org
        .http
        .get(org.url("/limits"))
        .bearer_auth(session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // The sandbox's own URL is an accepted audience too.
    let (status, _) = grant(sign_jwt(
        &key,
        &claims(now + 180, &username, &org.sb.base_url),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    // Wrong key, expired, unknown user, wrong audience, wrong issuer: each refused with its own reason.
    let (_, e) = grant(sign_jwt(
        &other,
        &claims(now + 180, &username, "https://login.salesforce.com"),
    ))
    .await;
    assert!(
        e["error_description"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{e}"
    );
    let (_, e) = grant(sign_jwt(
        &key,
        &claims(now - 10, &username, "https://login.salesforce.com"),
    ))
    .await;
    assert_eq!(e["error_description"], "expired authorization code");
    let (_, e) = grant(sign_jwt(
        &key,
        &claims(
            now + 180,
            "ghost@example.com",
            "https://login.salesforce.com",
        ),
    ))
    .await;
    assert_eq!(e["error"], "invalid_grant");
    let (_, e) = grant(sign_jwt(
        &key,
        &claims(now + 180, &username, "https://evil.example"),
    ))
    .await;
    assert_eq!(e["error_description"], "audience is invalid");
    let mut wrong_iss = claims(now + 180, &username, "https://login.salesforce.com");
    wrong_iss["iss"] = json!("someone-else");
    let (_, e) = grant(sign_jwt(&key, &wrong_iss)).await;
    assert_eq!(e["error"], "invalid_client_id");

    // A bare public key registers as well.
    let pub_pem = other
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    let (status, _) = org
        .admin(
            Method::POST,
            "connected-app/certificate",
            json!({"pem": pub_pem}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = grant(sign_jwt(
        &other,
        &claims(now + 180, &username, "https://login.salesforce.com"),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    // Garbage is refused at registration, naming the problem.
    let (status, e) = org
        .admin(
            Method::POST,
            "connected-app/certificate",
            json!({"pem": "hello"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("PEM"), "{e}");
}

#[tokio::test]
async fn revoked_sessions_answer_invalid_session_id() {
    let org = Org::default().await;
    let resp = org
        .http
        .post(format!("{}/services/oauth2/revoke", org.sb.base_url))
        .form(&[("token", org.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, body) = org.get("/limits").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "INVALID_SESSION_ID");
}

#[tokio::test]
async fn the_daily_budget_is_reported_enforced_and_renewed_each_day() {
    let org = Org::start(SalesforceOptions {
        daily_api_limit: 5,
        access_token_ttl: chrono::Duration::days(30),
        ..Default::default()
    })
    .await;
    for n in 1..=5 {
        let resp = org.try_send(Method::GET, "/limits", None).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()["sforce-limit-info"],
            format!("api-usage={n}/5").as_str()
        );
        if n == 5 {
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["DailyApiRequests"], json!({"Max": 5, "Remaining": 0}));
        }
    }
    let resp = org.try_send(Method::GET, "/limits", None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["sforce-limit-info"], "api-usage=5/5");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    // Raising the allowance through the admin API lets calls through again.
    let v = org.admin_ok("limits", json!({"daily": 6})).await;
    assert_eq!(v["remaining"], 1);
    assert_eq!(org.get("/limits").await.0, StatusCode::OK);
    assert_eq!(org.get("/limits").await.0, StatusCode::FORBIDDEN);
    // The next sandbox day starts afresh.
    org.admin_ok("clock/advance", json!({"seconds": 86_400}))
        .await;
    let resp = org.try_send(Method::GET, "/limits", None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["sforce-limit-info"], "api-usage=1/6");
    let (status, e) = org.admin(Method::POST, "limits", json!({"daly": 3})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
}

#[tokio::test]
async fn injected_faults_take_salesforce_shapes() {
    let org = Org::default().await;
    // Server errors.
    org.admin_ok("faults", json!({"rate_5xx": 1.0})).await;
    let (status, body) = org.get("/limits").await;
    assert!(status.is_server_error(), "{status}");
    assert_eq!(error_code(&body), "UNKNOWN_EXCEPTION");
    // Applied then failed: the record exists although the client saw a 5xx.
    org.admin_ok("faults", json!({"rate_5xx": 1.0, "after_write_share": 1.0}))
        .await;
    let (status, _) = org
        .post("/sobjects/Account", json!({"Name": "Half Written Ltd"}))
        .await;
    assert!(status.is_server_error());
    org.admin(Method::DELETE, "faults", json!({})).await;
    assert_eq!(
        org.rows("SELECT Id FROM Account WHERE Name = 'Half Written Ltd'")
            .await
            .len(),
        1
    );
    // Throttle: Salesforce's 403, with the concurrency message (not the daily one).
    org.admin_ok("faults", json!({"rate_429": 1.0})).await;
    let (status, body) = org.get("/limits").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "REQUEST_LIMIT_EXCEEDED");
    assert!(
        body[0]["message"]
            .as_str()
            .unwrap()
            .contains("ConcurrentPerOrgLongTxn")
    );
    // Dropped connection: no answer at all.
    org.admin_ok("faults", json!({"drop_rate": 1.0})).await;
    let err = org
        .try_send(Method::GET, "/limits", None)
        .await
        .expect_err("the connection is dropped");
    assert!(!err.is_status(), "{err}");
    // Dropped after the write: the client saw nothing, the record is there.
    org.admin_ok(
        "faults",
        json!({"drop_rate": 1.0, "after_write_share": 1.0}),
    )
    .await;
    assert!(
        org.try_send(
            Method::POST,
            "/sobjects/Account",
            Some(json!({"Name": "Ghost Write Inc"}))
        )
        .await
        .is_err()
    );
    // Slow answers.
    org.admin_ok("faults", json!({"slow_rate": 1.0, "slow_ms": 300}))
        .await;
    let started = Instant::now();
    assert_eq!(org.get("/limits").await.0, StatusCode::OK);
    assert!(started.elapsed() >= StdDuration::from_millis(300));
    org.admin(Method::DELETE, "faults", json!({})).await;
    assert_eq!(
        org.rows("SELECT Id FROM Account WHERE Name = 'Ghost Write Inc'")
            .await
            .len(),
        1
    );
    // Expired session: 401 now and for good (the client must refresh).
    org.admin_ok("faults", json!({"token_expiry_rate": 1.0}))
        .await;
    let (status, body) = org.get("/limits").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "INVALID_SESSION_ID")
    );
    let (_, cfg) = org.admin(Method::DELETE, "faults", json!({})).await;
    assert_eq!(cfg["token_expiry_rate"], 0.0);
    assert_eq!(org.get("/limits").await.0, StatusCode::UNAUTHORIZED);
    // Bad settings are refused, naming the field.
    let (status, e) = org
        .admin(Method::POST, "faults", json!({"rate_5xx": 2.0}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("rate_5xx"));
    // Faults never touch the admin routes or OAuth.
    org.admin_ok("faults", json!({"rate_5xx": 1.0})).await;
    let (status, tok) = org
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", org.sb.info_str("refresh_token")),
            ("client_id", org.sb.info_str("client_id")),
            ("client_secret", org.sb.info_str("client_secret")),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{tok}");
}

#[tokio::test]
async fn collections_create_update_upsert_and_delete_with_all_or_none() {
    let org = Org::default().await;
    let (status, out) = org
        .post(
            "/composite/sobjects",
            json!({"allOrNone": false, "records": [
                {"attributes": {"type": "Account"}, "Name": "Coll One"},
                {"attributes": {"type": "Contact"}, "LastName": "Collins"},
                {"attributes": {"type": "Account"}, "Website": "no-name.example"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out[0]["success"], true);
    assert_eq!(out[1]["success"], true);
    assert_eq!(out[2]["success"], false);
    assert_eq!(out[2]["errors"][0]["statusCode"], "REQUIRED_FIELD_MISSING");
    assert_eq!(out[2]["errors"][0]["fields"], json!(["Name"]));
    let acc = out[0]["id"].as_str().unwrap().to_string();
    let contact = out[1]["id"].as_str().unwrap().to_string();

    // allOrNone: one bad record and nothing is written.
    let (_, out) = org
        .post(
            "/composite/sobjects",
            json!({"allOrNone": true, "records": [
                {"attributes": {"type": "Account"}, "Name": "Rolled Back Co"},
                {"attributes": {"type": "Account"}, "Nope__c": 1},
            ]}),
        )
        .await;
    assert_eq!(
        out[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(out[1]["errors"][0]["statusCode"], "INVALID_FIELD");
    assert!(
        org.rows("SELECT Id FROM Account WHERE Name = 'Rolled Back Co'")
            .await
            .is_empty()
    );

    let (_, out) = org
        .patch(
            "/composite/sobjects",
            json!({"records": [
                {"attributes": {"type": "Account"}, "id": acc, "Phone": "555-0101"},
                {"attributes": {"type": "Contact"}, "id": contact, "Email": "not-an-email"},
            ]}),
        )
        .await;
    assert_eq!(out[0]["success"], true);
    assert_eq!(out[1]["errors"][0]["statusCode"], "INVALID_EMAIL_ADDRESS");
    let (_, read) = org.get(&format!("/sobjects/Account/{acc}")).await;
    assert_eq!(read["Phone"], "555-0101");

    // Upsert by external id: created, then updated; results say which.
    let body = json!({"records": [
        {"attributes": {"type": "Account"}, "QuickBooks_Customer_Id__c": "QB-900", "Name": "Upserted One"},
        {"attributes": {"type": "Account"}, "QuickBooks_Customer_Id__c": "QB-901", "Name": "Upserted Two"},
    ]});
    let (status, out) = org
        .patch(
            "/composite/sobjects/Account/QuickBooks_Customer_Id__c",
            body.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(
        (out[0]["created"].clone(), out[1]["created"].clone()),
        (json!(true), json!(true))
    );
    let (_, again) = org
        .patch(
            "/composite/sobjects/Account/QuickBooks_Customer_Id__c",
            body,
        )
        .await;
    assert_eq!(again[0]["created"], false);
    assert_eq!(again[0]["id"], out[0]["id"]);
    let (_, missing) = org
        .patch(
            "/composite/sobjects/Account/QuickBooks_Customer_Id__c",
            json!({"records": [{"attributes": {"type": "Account"}, "Name": "No Key"}]}),
        )
        .await;
    assert_eq!(missing[0]["success"], false);

    // Retrieve and delete.
    let ids = format!("{},{}", acc, out[0]["id"].as_str().unwrap());
    let (_, got) = org
        .get(&format!(
            "/composite/sobjects/Account?ids={ids}&fields=Name,Phone"
        ))
        .await;
    assert_eq!(got[0]["Name"], "Coll One");
    assert_eq!(got[1]["Name"], "Upserted One");
    let (_, del) = org
        .send(
            Method::DELETE,
            &format!("/composite/sobjects?ids={ids},{acc}"),
            None,
        )
        .await;
    assert_eq!(del[0]["success"], true);
    assert_eq!(del[1]["success"], true);
    assert_eq!(del[2]["errors"][0]["statusCode"], "ENTITY_IS_DELETED");

    // More than 200 records is refused whole.
    let many: Vec<Value> = (0..201)
        .map(|i| json!({"attributes": {"type": "Account"}, "Name": format!("N{i}")}))
        .collect();
    let (status, e) = org
        .post("/composite/sobjects", json!({"records": many}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&e), "EXCEEDED_ID_LIMIT");
    let two_hundred: Vec<Value> = (0..200)
        .map(|i| json!({"attributes": {"type": "Account"}, "Name": format!("Bulk {i}")}))
        .collect();
    let (status, out) = org
        .post("/composite/sobjects", json!({"records": two_hundred}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(out.as_array().unwrap().iter().all(|r| r["success"] == true));
}

#[tokio::test]
async fn composite_resolves_references_and_rolls_back_all_or_none() {
    let org = Org::default().await;
    let before = org.get("/limits").await.1["DailyApiRequests"]["Remaining"]
        .as_u64()
        .unwrap();
    let (status, out) = org
        .post(
            "/composite",
            json!({"allOrNone": false, "compositeRequest": [
                {"method": "POST", "url": "/services/data/v59.0/sobjects/Account", "referenceId": "newAccount",
                 "body": {"Name": "Composite Corp"}},
                {"method": "POST", "url": "/services/data/v59.0/sobjects/Contact", "referenceId": "newContact",
                 "body": {"LastName": "Ref", "AccountId": "@{newAccount.id}"}},
                {"method": "GET", "url": "/services/data/v59.0/query?q=SELECT+Id,Name+FROM+Account+WHERE+Id='@{newAccount.id}'",
                 "referenceId": "readBack"},
                {"method": "GET", "url": "/services/data/v59.0/sobjects/Contact/@{newContact.id}?fields=AccountId",
                 "referenceId": "contact"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let r = out["compositeResponse"].as_array().unwrap();
    assert_eq!(r[0]["httpStatusCode"], 201);
    assert!(
        r[0]["httpHeaders"]["Location"]
            .as_str()
            .unwrap()
            .ends_with(r[0]["body"]["id"].as_str().unwrap())
    );
    assert_eq!(r[2]["body"]["records"][0]["Name"], "Composite Corp");
    assert_eq!(r[3]["body"]["AccountId"], r[0]["body"]["id"]);
    // The whole composite call counted once (plus the /limits call itself).
    let after = org.get("/limits").await.1["DailyApiRequests"]["Remaining"]
        .as_u64()
        .unwrap();
    assert_eq!(before - after, 2);

    // allOrNone: the second subrequest fails, the first is undone, the rest halted.
    let (_, out) = org
        .post(
            "/composite",
            json!({"allOrNone": true, "compositeRequest": [
                {"method": "POST", "url": "/services/data/v59.0/sobjects/Account", "referenceId": "a", "body": {"Name": "Undone Inc"}},
                {"method": "POST", "url": "/services/data/v59.0/sobjects/Opportunity", "referenceId": "b",
                 "body": {"Name": "No stage", "AccountId": "@{a.id}"}},
                {"method": "GET", "url": "/services/data/v59.0/sobjects/Account/@{a.id}", "referenceId": "c"},
            ]}),
        )
        .await;
    let r = out["compositeResponse"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["body"][0]["errorCode"], "PROCESSING_HALTED");
    assert_eq!(r[1]["body"][0]["errorCode"], "REQUIRED_FIELD_MISSING");
    assert_eq!(r[2]["body"][0]["errorCode"], "PROCESSING_HALTED");
    assert!(
        org.rows("SELECT Id FROM Account WHERE Name = 'Undone Inc'")
            .await
            .is_empty()
    );

    // Without allOrNone a bad reference halts only the subrequest that uses it.
    let (_, out) = org
        .post(
            "/composite",
            json!({"compositeRequest": [
                {"method": "GET", "url": "/services/data/v59.0/sobjects/Account/@{nothing.id}", "referenceId": "x"},
                {"method": "GET", "url": "/services/data/v59.0/limits", "referenceId": "y"},
            ]}),
        )
        .await;
    let r = out["compositeResponse"].as_array().unwrap();
    assert_eq!(r[0]["body"][0]["errorCode"], "PROCESSING_HALTED");
    assert!(
        r[0]["body"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nothing.id")
    );
    assert_eq!(r[1]["httpStatusCode"], 200);
    // 26 subrequests are too many.
    let many: Vec<Value> = (0..26)
        .map(|i| json!({"method": "GET", "url": "/services/data/v59.0/limits", "referenceId": format!("r{i}")}))
        .collect();
    let (status, _) = org
        .post("/composite", json!({"compositeRequest": many}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn updated_and_deleted_feeds_list_changes_in_the_window() {
    let org = Org::default().await;
    let start = chrono::Utc::now() - chrono::Duration::minutes(2);
    let (_, a) = org
        .post("/sobjects/Account", json!({"Name": "Feed Alpha"}))
        .await;
    let (_, b) = org
        .post("/sobjects/Account", json!({"Name": "Feed Beta"}))
        .await;
    let (status, _) = org
        .send(
            Method::DELETE,
            &format!("/sobjects/Account/{}", b["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The window's end is rounded down to the minute, so move past it.
    org.admin_ok("clock/advance", json!({"seconds": 120})).await;
    let end = chrono::Utc::now() + chrono::Duration::minutes(2);
    let q = format!(
        "?start={}&end={}",
        urlencoding::encode(&start.to_rfc3339()),
        urlencoding::encode(&end.to_rfc3339())
    );
    let (status, upd) = org.get(&format!("/sobjects/Account/updated/{q}")).await;
    assert_eq!(status, StatusCode::OK, "{upd}");
    let ids = upd["ids"].as_array().unwrap();
    assert!(ids.contains(&a["id"]) && !ids.contains(&b["id"]), "{upd}");
    assert!(upd["latestDateCovered"].is_string());
    let (_, del) = org.get(&format!("/sobjects/Account/deleted/{q}")).await;
    let deleted = del["deletedRecords"].as_array().unwrap();
    assert_eq!(deleted.len(), 1, "{del}");
    assert_eq!(deleted[0]["id"], b["id"]);
    assert!(del["earliestDateAvailable"].is_string());
    let (status, e) = org
        .get("/sobjects/Account/updated/?start=2024-01-02T00:00:00Z&end=2024-01-01T00:00:00Z")
        .await;
    assert_eq!(
        (status, error_code(&e)),
        (StatusCode::BAD_REQUEST, "INVALID_REPLICATION_DATE")
    );
    let (status, e) = org.get("/sobjects/Account/updated/").await;
    assert_eq!(
        (status, error_code(&e)),
        (StatusCode::BAD_REQUEST, "MISSING_ARGUMENT")
    );
}

#[tokio::test]
async fn describe_has_depth_and_custom_fields() {
    let org = Org::default().await;
    org.admin_ok(
        "fields",
        json!({"object": "Opportunity", "name": "Payment_Status__c", "type": "Text"}),
    )
    .await;
    let (_, d) = org.get("/sobjects/Opportunity/describe").await;
    assert_eq!(d["label"], "Opportunity");
    let field = |name: &str| {
        d["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()
            .clone()
    };
    let custom = field("Payment_Status__c");
    assert_eq!(
        (custom["custom"].clone(), custom["label"].clone()),
        (json!(true), json!("Payment Status"))
    );
    assert_eq!(field("Amount")["soapType"], "xsd:double");
    assert_eq!(field("AccountId")["referenceTo"], json!(["Account"]));
    assert_eq!(field("AccountId")["relationshipName"], "Account");
    assert_eq!(field("IsWon")["updateable"], false);
    assert_eq!(field("Name")["length"], 255);
    let stages = field("StageName")["picklistValues"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(stages, 8);
    let children = d["childRelationships"].as_array().unwrap();
    assert!(
        children
            .iter()
            .any(|c| c["relationshipName"] == "OpportunityLineItems"
                && c["field"] == "OpportunityId")
    );
    let (_, global) = org.get("/sobjects").await;
    let names: Vec<&str> = global["sobjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"Task") && names.contains(&"PricebookEntry"),
        "{names:?}"
    );
    let (status, _) = org.get("/sobjects/Task/describe/").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn child_subqueries_and_date_literals() {
    let org = Org::start(SalesforceOptions {
        access_token_ttl: chrono::Duration::days(30),
        ..Default::default()
    })
    .await;
    let rows = org
        .rows(
            "SELECT Name, Account.Name, (SELECT Quantity, UnitPrice, Product2.Name FROM OpportunityLineItems ORDER BY Quantity DESC) \
             FROM Opportunity WHERE HasOpportunityLineItem = true ORDER BY Name LIMIT 3",
        )
        .await;
    assert!(!rows.is_empty());
    for r in &rows {
        let lines = &r["OpportunityLineItems"];
        assert_eq!(lines["done"], true);
        let records = lines["records"].as_array().unwrap();
        assert_eq!(lines["totalSize"], records.len());
        assert!(records[0]["Product2"]["Name"].is_string(), "{r}");
        assert_eq!(records[0]["attributes"]["type"], "OpportunityLineItem");
    }
    // A parent with no children carries null.
    let acc_rows = org
        .rows("SELECT Name, (SELECT Id FROM Opportunities) FROM Account WHERE Name = 'Acme Corporation'")
        .await;
    assert!(acc_rows[0]["Opportunities"].is_object());
    let (_, fresh) = org
        .post("/sobjects/Account", json!({"Name": "Childless"}))
        .await;
    let rows = org
        .rows(&format!(
            "SELECT Name, (SELECT Id FROM Contacts) FROM Account WHERE Id = '{}'",
            fresh["id"].as_str().unwrap()
        ))
        .await;
    assert!(rows[0]["Contacts"].is_null());
    // An unknown relationship is an error that points at it.
    let (status, e) = org
        .get(&format!(
            "/query?q={}",
            urlencoding::encode("SELECT Id, (SELECT Id FROM Lines) FROM Opportunity")
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&e), "INVALID_TYPE");
    assert!(
        e[0]["message"].as_str().unwrap().contains("Column:28"),
        "{e}"
    );

    // Date literals against the sandbox clock.
    for literal in [
        "TODAY",
        "THIS_WEEK",
        "THIS_MONTH",
        "THIS_QUARTER",
        "THIS_YEAR",
        "LAST_N_DAYS:1",
        "NEXT_N_DAYS:0",
    ] {
        let rows = org
            .rows(&format!(
                "SELECT Id FROM Account WHERE Id = '{}' AND CreatedDate = {literal}",
                fresh["id"].as_str().unwrap()
            ))
            .await;
        let expected = usize::from(literal != "NEXT_N_DAYS:0");
        assert_eq!(rows.len(), expected, "{literal}");
    }
    for literal in [
        "LAST_WEEK",
        "LAST_MONTH",
        "LAST_YEAR",
        "N_DAYS_AGO:3",
        "LAST_N_MONTHS:2",
    ] {
        let rows = org
            .rows(&format!(
                "SELECT Id FROM Account WHERE Id = '{}' AND CreatedDate = {literal}",
                fresh["id"].as_str().unwrap()
            ))
            .await;
        assert!(rows.is_empty(), "{literal}");
    }
    org.admin_ok("clock/advance", json!({"seconds": 3 * 86_400}))
        .await;
    let rows = org
        .rows(&format!(
            "SELECT Id FROM Account WHERE Id = '{}' AND CreatedDate = N_DAYS_AGO:3",
            fresh["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn tasks_default_their_status_and_close_when_completed() {
    let org = Org::default().await;
    let acc = org.account_id("Acme Corporation").await;
    let (status, created) = org
        .post(
            "/sobjects/Task",
            json!({"Subject": "Send invoice", "WhatId": acc}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let (_, t) = org.get(&format!("/sobjects/Task/{id}")).await;
    assert_eq!(
        (
            t["Status"].clone(),
            t["Priority"].clone(),
            t["IsClosed"].clone()
        ),
        (json!("Not Started"), json!("Normal"), json!(false))
    );
    let (status, _) = org
        .patch(
            &format!("/sobjects/Task/{id}"),
            json!({"Status": "Completed"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let rows = org
        .rows(&format!(
            "SELECT IsClosed, What.Name FROM Task WHERE Id = '{id}'"
        ))
        .await;
    assert_eq!(rows[0]["IsClosed"], true);
    assert_eq!(rows[0]["What"]["Name"], "Acme Corporation");
    let (status, e) = org
        .patch(
            &format!("/sobjects/Task/{id}"),
            json!({"Status": "Done-ish"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&e)),
        (
            StatusCode::BAD_REQUEST,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
        )
    );
    let rows = org
        .rows(&format!(
            "SELECT Name, (SELECT Subject FROM Tasks) FROM Account WHERE Id = '{acc}'"
        ))
        .await;
    assert_eq!(rows[0]["Tasks"]["records"][0]["Subject"], "Send invoice");
}

#[tokio::test]
async fn the_page_size_setting_drives_next_records_url() {
    let org = Org::default().await;
    org.admin_ok("settings", json!({"query_page_size": 4}))
        .await;
    let (_, first) = org
        .get(&format!(
            "/query?q={}",
            urlencoding::encode("SELECT Id FROM Account")
        ))
        .await;
    assert_eq!(first["done"], false);
    assert_eq!(first["records"].as_array().unwrap().len(), 4);
    let next = first["nextRecordsUrl"].as_str().unwrap();
    assert!(
        next.starts_with("/services/data/v59.0/query/"),
        "a bare path: {next}"
    );
    let (status, e) = org
        .admin(Method::POST, "settings", json!({"query_page_size": 0}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    let (_, s) = org.admin(Method::GET, "settings", json!({})).await;
    assert_eq!(s["query_page_size"], 4);
}
