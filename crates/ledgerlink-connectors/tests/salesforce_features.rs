//! The Salesforce connector's typed access, Collections batching, change feed, budget guard, idempotent creates,
//! JWT bearer auth and TLS, against the Salesforce sandbox over loopback.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, TimeDelta, Utc};
use ledgerlink_connectors::auth::{MemoryTokenStore, TokenStore};
use ledgerlink_connectors::salesforce::model::{Account, Contact, Opportunity};
use ledgerlink_connectors::salesforce::{
    BudgetReserve, ChangeFeed, CollectionsWriter, FeedState, SObject, SalesforceAuth, SalesforceConfig,
    SalesforceConnector,
};
use ledgerlink_connectors::{Connector, ConnectorError, FindQuery, Record, http};
use ledgerlink_sandbox::RunningSandbox;
use ledgerlink_sandbox::faults::{Fault, FaultConfig, Faults};
use ledgerlink_sandbox::salesforce::{SalesforceOptions, start};
use rust_decimal::Decimal;
use serde_json::{Value, json};

struct Fixture {
    sandbox: RunningSandbox,
    /// Trusts the sandbox's certificate when it serves TLS.
    client: reqwest::Client,
    sf: Arc<SalesforceConnector>,
}

fn config(sandbox: &RunningSandbox) -> SalesforceConfig {
    SalesforceConfig {
        instance_url: sandbox.info_str("instance_url").to_string(),
        token_url: sandbox.info_str("token_url").to_string(),
        api_version: sandbox.info_str("api_version").to_string(),
        client_id: sandbox.info_str("client_id").to_string(),
        client_secret: sandbox.info_str("client_secret").into(),
    }
}

fn store_for(sandbox: &RunningSandbox) -> Arc<MemoryTokenStore> {
    Arc::new(MemoryTokenStore::with_tokens(
        sandbox.info_str("access_token"),
        sandbox.info_str("refresh_token"),
        TimeDelta::hours(1),
    ))
}

async fn fixture_with(
    opts: SalesforceOptions,
    adjust: impl FnOnce(SalesforceConnector) -> SalesforceConnector,
) -> Fixture {
    let sandbox = start(opts).await.unwrap();
    let client = match sandbox.info.get("cert_pem_path").and_then(Value::as_str) {
        Some(path) => http::client_with_root_pem(std::path::Path::new(path)).unwrap(),
        None => http::client(),
    };
    let store = store_for(&sandbox);
    let sf = adjust(SalesforceConnector::new(config(&sandbox), store as Arc<dyn TokenStore>, client.clone()));
    Fixture { sandbox, client, sf: Arc::new(sf) }
}

async fn fixture() -> Fixture {
    fixture_with(SalesforceOptions::default(), |c| c).await
}

fn record(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

impl Fixture {
    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.client.request(method, format!("{}/sandbox/admin/{path}", self.sandbox.base_url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "admin {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The API calls the sandbox logged whose path contains `part`.
    async fn calls_to(&self, method: &str, part: &str) -> usize {
        let calls = self.admin(reqwest::Method::GET, "calls", None).await;
        calls
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["method"] == method && c["path"].as_str().unwrap_or_default().contains(part))
            .count()
    }

    async fn used_today(&self) -> u64 {
        self.admin(reqwest::Method::GET, "limits", None).await["used"].as_u64().unwrap()
    }
}

#[tokio::test]
async fn typed_records_round_trip_with_exact_amounts_and_custom_fields() {
    let f = fixture().await;
    let typed = f.sf.typed();
    let mut account =
        Account { name: Some("Typed O'Hara & Sons".into()), billing_city: Some("Tulsa".into()), ..Default::default() };
    account.extra.insert("QuickBooks_Customer_Id__c".into(), json!("typed-1"));
    let account_id = typed.create(&account).await.unwrap();

    let got: Account = typed.get(&account_id).await.unwrap().expect("the account exists");
    assert_eq!(got.id.as_deref(), Some(account_id.as_str()));
    assert_eq!(got.name.as_deref(), Some("Typed O'Hara & Sons"));
    assert_eq!(got.extra.get("QuickBooks_Customer_Id__c"), Some(&json!("typed-1")));
    assert!(got.system_modstamp.is_some());
    assert!(!got.extra.contains_key("attributes"));

    let amount = Decimal::from_str("1234567.89").unwrap();
    let opp = Opportunity {
        account_id: Some(account_id.clone()),
        name: Some("Typed deal".into()),
        stage_name: Some("Prospecting".into()),
        close_date: NaiveDate::from_ymd_opt(2025, 6, 30),
        amount: Some(amount),
        // Read-only: must not be sent (the sandbox refuses read-only fields like Salesforce does).
        is_won: Some(true),
        ..Default::default()
    };
    let opp_id = typed.create(&opp).await.unwrap();
    let q = typed.select::<Opportunity>().unwrap().eq("Name", &json!("Typed deal")).unwrap().build();
    let rows: Vec<Opportunity> = typed.query(&q).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id.as_deref(), Some(opp_id.as_str()));
    assert_eq!(rows[0].amount, Some(amount));
    assert_eq!(rows[0].is_won, Some(false));
    assert_eq!(rows[0].close_date, NaiveDate::from_ymd_opt(2025, 6, 30));
    let money = rows[0].amount_money(ledgerlink_model::money::Currency::USD).unwrap().unwrap();
    assert_eq!(money.to_string(), "1234567.89 USD");

    // Sparse typed update: only the fields set are written.
    let change = Opportunity { stage_name: Some("Closed Won".into()), ..Default::default() };
    typed.update(&opp_id, &change).await.unwrap();
    let after: Opportunity = typed.get(&opp_id).await.unwrap().unwrap();
    assert_eq!(after.stage_name.as_deref(), Some("Closed Won"));
    assert_eq!(after.is_won, Some(true), "IsWon follows the stage");
    assert_eq!(after.amount, Some(amount));
    assert_eq!(after.name.as_deref(), Some("Typed deal"));

    // Typed upsert by the External ID.
    let (same, created) = typed
        .upsert(
            "QuickBooks_Customer_Id__c",
            "typed-1",
            &Account { phone: Some("555-0100".into()), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!((same.as_str(), created), (account_id.as_str(), false));
    let (other, created) = typed
        .upsert(
            "QuickBooks_Customer_Id__c",
            "typed-2",
            &Account { name: Some("Typed Two".into()), ..Default::default() },
        )
        .await
        .unwrap();
    assert!(created && other != account_id);

    assert!(typed.get::<Contact>("003000000000000AAA").await.unwrap().is_none());
    assert_eq!(Contact::OBJECT, "Contact");
}

#[tokio::test]
async fn five_hundred_concurrent_creates_take_at_most_three_collections_calls() {
    let f = fixture().await;
    let writer = CollectionsWriter::new(f.sf.clone(), "Contact").unwrap();
    let creates = (0..500).map(|i| {
        let writer = writer.clone();
        async move {
            let rec = if i == 250 {
                // Missing LastName: refused on its own, the others in its batch still succeed (allOrNone false).
                record(json!({"FirstName": "No last name"}))
            } else {
                record(json!({"LastName": format!("Batch {i:03}"), "Email": format!("b{i}@x.example")}))
            };
            (i, writer.create(rec).await)
        }
    });
    let results = futures::future::join_all(creates).await;
    let mut ids = std::collections::HashSet::new();
    for (i, r) in &results {
        if *i == 250 {
            match r {
                Err(ConnectorError::Validation { code, field, .. }) => {
                    assert_eq!(code, "REQUIRED_FIELD_MISSING");
                    assert_eq!(field.as_deref(), Some("LastName"));
                }
                other => panic!("record 250: {other:?}"),
            }
        } else {
            let outcome = r.as_ref().unwrap_or_else(|e| panic!("record {i}: {e}"));
            assert!(outcome.created);
            assert!(ids.insert(outcome.id.clone()), "id {} handed out twice", outcome.id);
        }
    }
    assert_eq!(ids.len(), 499);
    let calls = f.calls_to("POST", "/composite/sobjects").await;
    assert!((1..=3).contains(&calls), "{calls} Collections calls for 500 creates");
    assert_eq!(f.calls_to("POST", "/sobjects/Contact").await, 0, "no single-record creates");

    // Each caller got its own record's id: the record behind id i has LastName "Batch i".
    for (i, r) in results.iter().filter(|(i, _)| i % 97 == 0 && *i != 250) {
        let id = &r.as_ref().unwrap().id;
        let rec = f.sf.get("Contact", id, &["LastName".into()]).await.unwrap().unwrap();
        assert_eq!(rec["LastName"], json!(format!("Batch {i:03}")));
    }
}

#[tokio::test]
async fn collections_update_and_upsert_report_per_record() {
    let f = fixture().await;
    let accounts = CollectionsWriter::new(f.sf.clone(), "Account").unwrap();
    let a = accounts.create(record(json!({"Name": "Coll A"}))).await.unwrap();
    let b = accounts.create(record(json!({"Name": "Coll B"}))).await.unwrap();
    let (ua, ub, bad) = tokio::join!(
        accounts.update(&a.id, record(json!({"BillingCity": "Austin"}))),
        accounts.update(&b.id, record(json!({"BillingCity": "Boise"}))),
        accounts.update("001000000000000AAA", record(json!({"BillingCity": "Nowhere"}))),
    );
    assert_eq!(ua.unwrap().id, a.id);
    assert!(!ub.unwrap().created);
    assert!(matches!(bad, Err(ConnectorError::NotFound { .. } | ConnectorError::Validation { .. })), "{bad:?}");
    assert_eq!(f.sf.get("Account", &a.id, &[]).await.unwrap().unwrap()["BillingCity"], json!("Austin"));
    assert_eq!(f.calls_to("PATCH", "/composite/sobjects").await, 1, "the three updates went in one call");

    let field = "QuickBooks_Customer_Id__c";
    f.sf.update("Account", &a.id, &record(json!({field: "coll-a"}))).await.unwrap();
    let (existing, fresh, missing) = tokio::join!(
        accounts.upsert(field, record(json!({field: "coll-a", "Phone": "1"}))),
        accounts.upsert(field, record(json!({field: "coll-new", "Name": "Coll New"}))),
        accounts.upsert(field, record(json!({"Name": "No key"}))),
    );
    let existing = existing.unwrap();
    assert_eq!((existing.id.as_str(), existing.created), (a.id.as_str(), false));
    assert!(fresh.unwrap().created);
    match missing.unwrap_err() {
        ConnectorError::Validation { field: Some(name), .. } => assert_eq!(name, field),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.sf.get("Account", &a.id, &[]).await.unwrap().unwrap()["Phone"], json!("1"));
}

#[tokio::test]
async fn change_feed_overlaps_deduplicates_and_reports_deletions() {
    let f = fixture().await;
    let start = Utc::now() - TimeDelta::seconds(1);
    let fields = vec!["LastName".to_string()];
    let mut feed = ChangeFeed::new("Contact", &fields, FeedState::starting_at(start))
        .unwrap()
        .with_overlap(TimeDelta::minutes(10));
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = f.sf.create("Contact", &record(json!({"LastName": format!("Feed {i}")})), "").await.unwrap();
        ids.push(f.sf.record_id(&r).unwrap());
    }
    let first = feed.poll(&f.sf).await.unwrap();
    // The sample org was seeded a moment before `start`; only this test's records are compared.
    let seen: Vec<String> = first
        .changed
        .iter()
        .filter(|r| r["LastName"].as_str().is_some_and(|n| n.starts_with("Feed ")))
        .filter_map(|r| f.sf.record_id(r))
        .collect();
    assert_eq!(seen, ids, "each create once, oldest first");
    assert!(first.deleted.is_empty() && !first.deletions_incomplete);

    // The overlap re-reads the same window; nothing is delivered twice.
    let again = feed.poll(&f.sf).await.unwrap();
    assert!(again.changed.is_empty(), "{:?}", again.changed);

    // A change to a record already seen is a new version: delivered again.
    f.sf.update("Contact", &ids[1], &record(json!({"LastName": "Feed 1b"}))).await.unwrap();
    let third = feed.poll(&f.sf).await.unwrap();
    assert_eq!(third.changed.len(), 1);
    assert_eq!(third.changed[0]["LastName"], json!("Feed 1b"));

    // Deletions come from deleted/, reported in whole minutes up to the org's clock: move it past the minute.
    f.sf.delete("Contact", &ids[2]).await.unwrap();
    f.admin(reqwest::Method::POST, "clock/advance", Some(json!({"seconds": 120}))).await;
    let until = Utc::now() + TimeDelta::minutes(3);
    let fourth = feed.poll_until(&f.sf, until).await.unwrap();
    assert_eq!(fourth.deleted.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), vec![ids[2].as_str()]);

    // The position survives a checkpoint: a resumed feed repeats nothing.
    let saved = serde_json::to_string(feed.state()).unwrap();
    let state: FeedState = serde_json::from_str(&saved).unwrap();
    assert_eq!(&state, feed.state());
    let mut resumed = ChangeFeed::new("Contact", &fields, state).unwrap().with_overlap(TimeDelta::minutes(10));
    let fifth = resumed.poll_until(&f.sf, until).await.unwrap();
    assert!(fifth.changed.is_empty() && fifth.deleted.is_empty(), "{fifth:?}");

    // queryAll still sees the deleted record; query does not.
    let q = format!("SELECT Id, IsDeleted FROM Contact WHERE Id = '{}'", ids[2]);
    assert!(f.sf.query(&q).await.unwrap().is_empty());
    let all = f.sf.query_all(&q).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["IsDeleted"], json!(true));

    // The raw feeds.
    let window_start = start - TimeDelta::minutes(1);
    let deleted = f.sf.deleted_since("Contact", window_start, until).await.unwrap();
    assert!(deleted.records.iter().any(|d| d.id == ids[2]));
    assert!(deleted.latest_date_covered.is_some() && deleted.earliest_date_available.is_some());
    let updated = f.sf.updated_since("Contact", window_start, until).await.unwrap();
    assert!(updated.ids.contains(&ids[0]) && updated.ids.contains(&ids[1]));
    assert!(!updated.ids.contains(&ids[2]), "deleted records are not in updated/");
    match f.sf.deleted_since("Contact", until, start).await.unwrap_err() {
        ConnectorError::Validation { message, .. } => {
            assert!(message.contains("end after it starts"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_budget_guard_stops_at_the_reserve_without_calling() {
    let f = fixture_with(SalesforceOptions { daily_api_limit: 100, ..Default::default() }, |c| {
        c.with_budget(BudgetReserve::Percent(5), Duration::from_secs(3600))
    })
    .await;
    f.admin(reqwest::Method::POST, "limits", Some(json!({"daily": 100, "used": 93}))).await;
    let q = FindQuery { object: "Account".into(), limit: Some(1), ..Default::default() };
    let mut ok = 0;
    let err = loop {
        match f.sf.find(&q).await {
            Ok(_) => ok += 1,
            Err(e) => break e,
        }
        assert!(ok < 10, "the guard never tripped");
    };
    // 93 → 96 used in three calls; then 4 remain, below the reserve of 5.
    assert_eq!(ok, 3);
    match &err {
        ConnectorError::BudgetExhausted { message } => {
            assert!(message.contains("4 of the org's 100"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!ledgerlink_connectors::retry::should_retry(&err), "a spent budget is checkpointed, not retried");
    assert_eq!(f.used_today().await, 96, "the refused call never reached the org");
    assert_eq!(f.sf.api_usage(), Some((96, 100)));
    assert_eq!(f.sf.rate_limit_policy().daily_budget, Some(100));

    // A guard with no reserve lets calls through to the org, whose own refusal is classified as the budget.
    let g = fixture_with(SalesforceOptions { daily_api_limit: 100, ..Default::default() }, |c| {
        c.with_budget(BudgetReserve::Calls(0), Duration::ZERO)
    })
    .await;
    g.admin(reqwest::Method::POST, "limits", Some(json!({"daily": 100, "used": 100}))).await;
    assert!(matches!(g.sf.find(&q).await.unwrap_err(), ConnectorError::BudgetExhausted { .. }));
}

/// A seed whose first fault draws are `wanted`, then nothing, so one request is struck deterministically.
fn seed_for(base: FaultConfig, wanted: Fault) -> FaultConfig {
    for seed in 0..100_000 {
        let faults = Faults::default();
        let config = FaultConfig { seed, ..base.clone() };
        faults.set(config.clone()).unwrap();
        if faults.draw() == wanted && (0..6).all(|_| faults.draw() == Fault::None) {
            return config;
        }
    }
    panic!("no seed gives {wanted:?}");
}

#[tokio::test]
async fn an_unknown_create_outcome_is_settled_by_looking() {
    let f = fixture().await;
    let base = FaultConfig { drop_rate: 0.3, ..Default::default() };

    // The connection drops after the create was applied: the record is found and returned, not made twice.
    let applied = seed_for(FaultConfig { after_write_share: 1.0, ..base.clone() }, Fault::Drop { after_write: true });
    f.admin(reqwest::Method::POST, "faults", Some(serde_json::to_value(&applied).unwrap())).await;
    let rec = record(json!({"Name": "Dropped After Write", "BillingCity": "Macon"}));
    let created = f.sf.create("Account", &rec, "k1").await.unwrap();
    f.admin(reqwest::Method::DELETE, "faults", None).await;
    let found =
        f.sf.find(&FindQuery {
            object: "Account".into(),
            equals: vec![("Name".into(), json!("Dropped After Write"))],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(f.sf.record_id(&created), f.sf.record_id(&found[0]));

    // The connection drops before: the look-up finds nothing and says a retry is safe.
    let lost = seed_for(FaultConfig { after_write_share: 0.0, ..base }, Fault::Drop { after_write: false });
    f.admin(reqwest::Method::POST, "faults", Some(serde_json::to_value(&lost).unwrap())).await;
    let rec = record(json!({"Name": "Dropped Before Write"}));
    match f.sf.create("Account", &rec, "k2").await.unwrap_err() {
        ConnectorError::Transient { outcome_unknown, message } => {
            assert!(!outcome_unknown, "{message}");
            assert!(message.contains("safe to create again"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    f.admin(reqwest::Method::DELETE, "faults", None).await;
    let found =
        f.sf.find(&FindQuery {
            object: "Account".into(),
            equals: vec![("Name".into(), json!("Dropped Before Write"))],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(found.is_empty());
}

#[tokio::test]
async fn creates_with_an_idempotency_field_are_upserts() {
    let f = fixture_with(SalesforceOptions::default(), |c| {
        c.with_idempotency_field("Account", "QuickBooks_Customer_Id__c").unwrap()
    })
    .await;
    let rec = record(json!({"Name": "Idem Co"}));
    let first = f.sf.create("Account", &rec, "idem-key-1").await.unwrap();
    let second = f.sf.create("Account", &rec, "idem-key-1").await.unwrap();
    assert_eq!(f.sf.record_id(&first), f.sf.record_id(&second));
    assert_eq!(first["QuickBooks_Customer_Id__c"], json!("idem-key-1"));
    let held =
        f.sf.find(&FindQuery {
            object: "Account".into(),
            equals: vec![("Name".into(), json!("Idem Co"))],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    // The record's own value wins over the key.
    let own =
        f.sf.create("Account", &record(json!({"Name": "Own Key", "QuickBooks_Customer_Id__c": "own-7"})), "ignored")
            .await
            .unwrap();
    assert_eq!(own["QuickBooks_Customer_Id__c"], json!("own-7"));
    assert!(matches!(f.sf.create("Account", &rec, "").await.unwrap_err(), ConnectorError::Validation { .. }));
}

/// A throwaway 2048-bit test key (PKCS#8) and a self-signed certificate for it, used only by this test.
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDP+F7IYsPrVoDx\nFMmjqsUEYp6kGfesIVThG/Qp8/jqNLAAnXnxtnUnr3Um+xxqG5jkmyrWByVJSgXi\nFIuEGota9zQEqYrhNNxwSbYKdPhNeoHnwrfOnAW08mbAdSVWczBfX1f31JkJsQgS\npCXz8A+jWG1vcaUMSlEXK+xT/zMHZejwDBq+AgWvMudMDA5V0/IN1WHS9ADS5R2a\nRRcBG2k4A62nxbT+buUX4WYeoGl/04oD7OR2xKY+Cp/OG22bmtK3LhI3Y7354PGS\nj4Ps7hu2s6BoTi6oqmy9GQtXU4e7xyQ6XhyreCYP1n8GyzE4dEmMYFJK4x2hvKeD\nyDJmu6erAgMBAAECggEAFXSTtAulwmffD0AW714k9jywY3tUVxCXP6QRI/+KAgDj\n2Xm672oPRcQEYOb4zvpAOJweJrd/rBh0E+y3r1jHtgpDy76sAmuK2cDDruoosGGU\n+P0t1lBisattA1TylavLj+33rCyQNJ+WwXQ9gCBCP2wA2kWjV+nA2j71930gCBar\n3W73aJ/Ll8EoNTBfGY7tamPmMRIpItdZy3sxobXkaiILtYRDqC2uehIIxVonv3qA\n0zPdbycGj9NBHgHVTEyH2TQ5UsWKpv9ZGL5na01Kr02csj7g6Qf7GlENUi4vERI2\nKQaYdMQjGw820z7SCAULl4oFVRkhxi5I/HyVVl1qQQKBgQD4NWDBkvzG9c8bQyOo\nuH3L50SjhyQY6H1qsb0tkMW35CKaQCNVaYWWTwPPjWIfrCljIQ+1ssNvCLWlX0Ya\nu0d4j0itpF8izsAXSEOfvHwC4yLN6dcmvB4vHWstii7NYQ8J4M/YRgBL/lJ+f31o\nIPp8UH1NoXbuiYlpsX+cQYL26wKBgQDWf6JcnDR/Gj2wZOTGv8whzAW5pXpdawB9\nsqVDptaJZl1CwCDK1OTQqKZaBADgbEg0/r48pFItnZoOQdDTTBdLoFr57RsujMJB\nB13joea/emSKiK3M9JKYv9nNMh/qkEkA1wTHqtSG7qAIFXMiK8/RCTcSwUv3lnWY\nzYxJUp9iQQKBgQCZbmWhQ3t+gfTEpXwlj+YzZYLIk4F85Dqi+bw3roaKZjv9nig5\nZEFv6OgyJPPDIGl1HbrYVuj4einPUFXFsH89x1TmAfXNToDv43vqAlmmb0HUh/i3\nuRHvjf/y5riHvLfPI2lYB+2nDE9yYtziwYAV2KuckXMzgVGwREjeDqEmgQKBgHOn\n5Fq9Gw1Bj+uxqy2DM0Ux5hBgqmb+kAg2sCeXKOxzFmwsfkH/otTjarb0m6hmmlSA\n2wCFtY3FAdEYKcoUqCbt8r/52gMygHdhyn03ydyK2PVdlyEA6p6UK5MZqN3oKITc\na0Zh1TBgMEfLkQXmy6oxptFlCloYdZYLls3eT/RBAoGAd5+/IeBvepfmPfuQOJnA\n7FtCTEfORoHcXvaWAz54Mxapb77O9ca7s2UhSM91Y1yD/cHKvJMMxahIQafWBlpa\nWm3mPFJ0OrdQRXn+Iyht7vRFVbpyJxQyrtEbIwhyuAgBkI4fENwmLurO3vTgm94r\n8SJCkV7UX3ti0g2mN5X/ZJ8=\n-----END PRIVATE KEY-----";
const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIDFzCCAf+gAwIBAgIUO7KPK15Qkg8rjyNn3B04mgqOh1cwDQYJKoZIhvcNAQEL\nBQAwGjEYMBYGA1UEAwwPbGVkZ2VybGluay10ZXN0MCAXDTI2MTEyMTA2MDYxNVoY\nDzIxMjYxMDI4MDYwNjE1WjAaMRgwFgYDVQQDDA9sZWRnZXJsaW5rLXRlc3QwggEi\nMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQDP+F7IYsPrVoDxFMmjqsUEYp6k\nGfesIVThG/Qp8/jqNLAAnXnxtnUnr3Um+xxqG5jkmyrWByVJSgXiFIuEGota9zQE\nqYrhNNxwSbYKdPhNeoHnwrfOnAW08mbAdSVWczBfX1f31JkJsQgSpCXz8A+jWG1v\ncaUMSlEXK+xT/zMHZejwDBq+AgWvMudMDA5V0/IN1WHS9ADS5R2aRRcBG2k4A62n\nxbT+buUX4WYeoGl/04oD7OR2xKY+Cp/OG22bmtK3LhI3Y7354PGSj4Ps7hu2s6Bo\nTi6oqmy9GQtXU4e7xyQ6XhyreCYP1n8GyzE4dEmMYFJK4x2hvKeDyDJmu6erAgMB\nAAGjUzBRMB0GA1UdDgQWBBQWgEqNJAntY0uVt17XZlrjMPMZ5TAfBgNVHSMEGDAW\ngBQWgEqNJAntY0uVt17XZlrjMPMZ5TAPBgNVHRMBAf8EBTADAQH/MA0GCSqGSIb3\nDQEBCwUAA4IBAQDCsPvz5/AftJZtgjvebIlKKrXtycCmimKqSuLmAccDrabXkddV\nsSYXO74WisARy1QrqpitrtCs2a1bFIhBHy/JWM1J21Ljc0DL5bbaqpl0FMxMvhay\nH7ss3Xeyck9U59ZOLvQkKui9KhYHj1coikIM8jtYqbf+TCRYLVQX6L3qbTbDYodY\npokFxxfkiIXzBEfP0RDN8DCVMAgQCeRMZd22SfSDufD0lCOKvO1L+XLnVE7rNwoL\n+1zQ2N11xP0kYQwZDF1VUz/FUDUNlNYlN2OYfc+o+oY3hgZU07zGcNs+57Pi6VP4\nHLz12fWzL+6Bdqf/VemtbPQWzxoP5EfM0XYF\n-----END CERTIFICATE-----";

#[tokio::test]
async fn jwt_bearer_mints_tokens_and_re_mints_after_the_session_ends() {
    let f = fixture().await;
    f.admin(reqwest::Method::POST, "connected-app/certificate", Some(json!({"pem": TEST_CERT}))).await;
    let auth = SalesforceAuth::JwtBearer {
        client_id: f.sandbox.info_str("client_id").into(),
        username: f.sandbox.info_str("username").into(),
        private_key_pem: TEST_KEY.into(),
        audience: "https://login.salesforce.com".into(),
    };
    assert!(!format!("{auth:?}").contains("PRIVATE"), "the key is redacted");
    let store = Arc::new(MemoryTokenStore::default());
    let sf = SalesforceConnector::with_auth(config(&f.sandbox), auth.clone(), store.clone(), http::client()).unwrap();
    sf.test_connection().await.unwrap();
    assert_eq!(sf.token_manager().refresh_count(), 1, "the first call minted a token");
    let first = store.current().unwrap();
    assert!(first.refresh_token.is_none());

    f.admin(reqwest::Method::POST, "expire-sessions", Some(json!({}))).await;
    sf.find(&FindQuery { object: "Account".into(), limit: Some(1), ..Default::default() }).await.unwrap();
    assert_eq!(sf.token_manager().refresh_count(), 2, "a refused session mints a new assertion");
    assert_ne!(store.current().unwrap().access_token, first.access_token);

    // A user the org does not know is refused with a message naming what to check.
    let stranger = SalesforceAuth::JwtBearer {
        client_id: f.sandbox.info_str("client_id").into(),
        username: "nobody@example.com".into(),
        private_key_pem: TEST_KEY.into(),
        audience: "https://login.salesforce.com".into(),
    };
    let sf = SalesforceConnector::with_auth(
        config(&f.sandbox),
        stranger,
        Arc::new(MemoryTokenStore::default()),
        http::client(),
    )
    .unwrap();
    match sf.test_connection().await.unwrap_err() {
        ConnectorError::Unauthorized { message } => {
            assert!(message.contains("nobody@example.com"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let bad_key = SalesforceAuth::JwtBearer {
        client_id: "x".into(),
        username: "y".into(),
        private_key_pem: "not a key".into(),
        audience: "https://login.salesforce.com".into(),
    };
    assert!(
        SalesforceConnector::with_auth(
            config(&f.sandbox),
            bad_key,
            Arc::new(MemoryTokenStore::default()),
            http::client()
        )
        .is_err()
    );
}

#[tokio::test]
async fn tls_sandbox_is_trusted_through_its_root_certificate_only() {
    let f = fixture_with(SalesforceOptions { tls: true, ..Default::default() }, |c| c).await;
    assert!(f.sandbox.base_url.starts_with("https://"), "{}", f.sandbox.base_url);
    assert!(!f.sf.test_connection().await.unwrap().is_empty());
    let found =
        f.sf.find(&FindQuery {
            object: "Account".into(),
            equals: vec![("Name".into(), json!("O'Brien Logistics"))],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1);

    // Verification stays on: a client without the sandbox's root refuses the connection.
    let untrusting = SalesforceConnector::new(config(&f.sandbox), store_for(&f.sandbox), http::client());
    match untrusting.test_connection().await.unwrap_err() {
        ConnectorError::Transient { outcome_unknown, .. } => {
            assert!(!outcome_unknown, "the handshake failed before sending")
        }
        other => panic!("{other:?}"),
    }

    let missing = http::client_with_root_pem(std::path::Path::new("/nonexistent/cert.pem")).unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/cert.pem"), "{missing}");
}
