//! Salesforce Closed-Won → QuickBooks invoice, end to end over real HTTP against both sandboxes, on SQLite and
//! (when `LEDGERLINK_TEST_POSTGRES_URL` is set) PostgreSQL. Each test asserts what a finance user would check in
//! QuickBooks: one invoice per won deal, the right customer, exact line amounts and totals.

use std::collections::BTreeMap;
use std::sync::Arc;

use ledgerlink_connectors::{Connector, FindQuery, Record};
use ledgerlink_engine::executor::to_decimal;
use ledgerlink_engine::{Engine, EngineSettings, connections, poller, templates, worker};
use ledgerlink_sandbox::{RunningSandbox, quickbooks, salesforce};
use ledgerlink_store::testing::TestDatabase;
use ledgerlink_store::{ChangeCursor, JobStatus, MasterKey, NewJob, SecretCipher, Store};
use rust_decimal::Decimal;
use serde_json::{Value, json};

const FLOW: &str = "salesforce-closed-won-to-quickbooks-invoice";

struct Harness {
    engine: Engine,
    sf: Arc<dyn Connector>,
    qb: Arc<dyn Connector>,
    _qbo: RunningSandbox,
    _sfdc: RunningSandbox,
    _dir: tempfile::TempDir,
    _pg: Option<TestDatabase>,
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

async fn open_store(backend: Backend, dir: &std::path::Path) -> Option<(Arc<dyn Store>, Option<TestDatabase>)> {
    let cipher = SecretCipher::new(MasterKey::load(dir, None).unwrap());
    match backend {
        Backend::Sqlite => Some((ledgerlink_store::open(&format!("sqlite://{}/t.sqlite", dir.display()), cipher).await.unwrap(), None)),
        Backend::Postgres => {
            let db = TestDatabase::create().await?;
            let store = ledgerlink_store::open(&db.url, cipher).await.unwrap();
            Some((store, Some(db)))
        }
    }
}

async fn harness(backend: Backend) -> Option<Harness> {
    let dir = tempfile::tempdir().unwrap();
    let (store, pg) = open_store(backend, dir.path()).await?;
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    let connectors = connections::build_all(store.clone()).await.unwrap();
    let flow = templates::load(FLOW, &BTreeMap::new()).unwrap();
    let settings = EngineSettings { worker_id: "test".into(), ..EngineSettings::default() };
    let engine = Engine::new(store, connectors, vec![flow], settings).unwrap();
    let sf = engine.connector("salesforce").unwrap().clone();
    let qb = engine.connector("quickbooks").unwrap().clone();
    Some(Harness { engine, sf, qb, _qbo: qbo, _sfdc: sfdc, _dir: dir, _pg: pg })
}

fn rec(v: Value) -> Record {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

impl Harness {
    async fn find(&self, c: &Arc<dyn Connector>, object: &str, equals: Vec<(&str, Value)>, fields: &[&str]) -> Vec<Record> {
        c.find(&FindQuery {
            object: object.into(),
            equals: equals.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            limit: None,
        })
        .await
        .unwrap()
    }

    /// Standard price book id and its entries (id, unit price).
    async fn price_book(&self) -> (String, Vec<(String, Decimal)>) {
        let pb = self.find(&self.sf, "Pricebook2", vec![("IsStandard", json!(true))], &["Id"]).await;
        let pb_id = pb[0]["Id"].as_str().unwrap().to_string();
        let entries = self.find(&self.sf, "PricebookEntry", vec![("Pricebook2Id", json!(pb_id))], &["Id", "UnitPrice"]).await;
        let entries = entries.iter().map(|e| (e["Id"].as_str().unwrap().to_string(), to_decimal(&e["UnitPrice"]).unwrap())).collect();
        (pb_id, entries)
    }

    async fn account(&self, name: &str, email: Option<&str>) -> String {
        let a = self.sf.create("Account", &rec(json!({"Name": name, "BillingCity": "Boise", "BillingState": "ID"})), "k").await.unwrap();
        let id = a["Id"].as_str().unwrap().to_string();
        if let Some(email) = email {
            self.sf.create("Contact", &rec(json!({"AccountId": id, "FirstName": "Pat", "LastName": "Doe", "Email": email})), "k").await.unwrap();
        }
        id
    }

    /// An open opportunity with `lines` = (entry index, quantity, discount %).
    async fn opportunity(&self, account: &str, name: &str, lines: &[(usize, u32, u32)]) -> String {
        let (pb, entries) = self.price_book().await;
        let o = self
            .sf
            .create("Opportunity", &rec(json!({"Name": name, "AccountId": account, "StageName": "Prospecting", "CloseDate": "2026-11-20", "Pricebook2Id": pb})), "k")
            .await
            .unwrap();
        let id = o["Id"].as_str().unwrap().to_string();
        for (entry, qty, disc) in lines {
            let mut l = json!({"OpportunityId": id, "PricebookEntryId": entries[*entry].0, "Quantity": qty});
            if *disc > 0 {
                l["Discount"] = json!(disc);
            }
            self.sf.create("OpportunityLineItem", &rec(l), "k").await.unwrap();
        }
        id
    }

    async fn set_stage(&self, opp: &str, stage: &str) {
        self.sf.update("Opportunity", opp, &rec(json!({"StageName": stage}))).await.unwrap();
    }

    /// One poll, then every due job, until nothing is due.
    async fn sync(&self) {
        let flow = self.engine.flows.get(FLOW).unwrap().clone();
        for _ in 0..3 {
            poller::poll_once(&self.engine, &flow).await.unwrap();
            worker::drain(&self.engine).await.unwrap();
        }
    }

    async fn invoices_for(&self, opp: &str) -> Vec<Record> {
        let all = self.find(&self.qb, "Invoice", vec![], &[]).await;
        all.into_iter().filter(|i| i.get("PrivateNote").and_then(Value::as_str).unwrap_or_default().contains(opp)).collect()
    }

    async fn opp_field(&self, opp: &str, field: &str) -> Value {
        self.sf.get("Opportunity", opp, &["Id".into(), field.into()]).await.unwrap().unwrap().get(field).cloned().unwrap_or(Value::Null)
    }
}

fn sales_lines(inv: &Record) -> Vec<&Value> {
    inv["Line"].as_array().unwrap().iter().filter(|l| l["DetailType"] == "SalesItemLineDetail").collect()
}

async fn closed_won_creates_one_exact_invoice(backend: Backend) {
    let Some(h) = harness(backend).await else { return };
    h.sync().await; // the flow starts watching now
    let (_, entries) = h.price_book().await;
    let acct = h.account("Pinecrest Veterinary Clinic", Some("billing@pinecrest.example")).await;
    let opp = h.opportunity(&acct, "Pinecrest — clinic fit-out", &[(0, 3, 10), (1, 2, 0), (2, 1, 15)]).await;
    h.sync().await;
    assert!(h.invoices_for(&opp).await.is_empty(), "an open opportunity must not be invoiced");

    h.set_stage(&opp, "Closed Won").await;
    h.sync().await;
    let invoices = h.invoices_for(&opp).await;
    assert_eq!(invoices.len(), 1, "exactly one invoice for the won deal");
    let inv = &invoices[0];

    // Exact line amounts: quantity × unit price × (1 − discount).
    let expected: Vec<Decimal> = [(0usize, 3u32, 10u32), (1, 2, 0), (2, 1, 15)]
        .iter()
        .map(|(e, q, d)| {
            let gross = entries[*e].1 * Decimal::from(*q);
            (gross - gross * Decimal::from(*d) / dec("100")).round_dp(2)
        })
        .collect();
    let lines = sales_lines(inv);
    assert_eq!(lines.len(), 3);
    for (line, want) in lines.iter().zip(&expected) {
        assert_eq!(to_decimal(&line["Amount"]).unwrap(), *want, "line {line}");
    }
    let total: Decimal = expected.iter().sum();
    assert_eq!(to_decimal(&inv["TotalAmt"]).unwrap(), total);
    assert_eq!(to_decimal(&inv["Balance"]).unwrap(), total);
    // …and it equals what Salesforce says the deal is worth.
    assert_eq!(to_decimal(&h.opp_field(&opp, "Amount").await).unwrap(), total);

    // The customer was created from the account, and the invoice id written back to the opportunity.
    let customer = h.qb.get("Customer", inv["CustomerRef"]["value"].as_str().unwrap(), &[]).await.unwrap().unwrap();
    assert_eq!(customer["DisplayName"], "Pinecrest Veterinary Clinic");
    assert_eq!(h.opp_field(&opp, "QuickBooks_Invoice_Id__c").await, inv["Id"]);
    assert!(!inv["DocNumber"].as_str().unwrap_or_default().is_empty(), "the invoice has a document number");

    // Nothing is queued, nothing is dead, nothing waits for review.
    let counts = h.engine.store.count_jobs().await.unwrap();
    assert_eq!((counts.queued, counts.running, counts.dead, counts.parked), (0, 0, 0, 0));
    assert!(h.engine.store.list_reviews(None).await.unwrap().is_empty());
    // The audit log holds the writes: customer, items, invoice, write-back.
    let audit = h.engine.store.list_audit(&Default::default()).await.unwrap();
    assert!(audit.iter().any(|a| a.entry.object == "Invoice" && a.entry.action == "create" && a.entry.outcome == "ok"));
    assert!(audit.iter().any(|a| a.entry.object == "Opportunity" && a.entry.action == "update"));
}

async fn redelivered_and_reclosed_changes_create_nothing(backend: Backend) {
    let Some(h) = harness(backend).await else { return };
    h.sync().await;
    let acct = h.account("O'Hare & Sons Masonry", None).await;
    let opp = h.opportunity(&acct, "O'Hare — chimney rebuild", &[(0, 1, 0)]).await;
    h.set_stage(&opp, "Closed Won").await;
    h.sync().await;
    assert_eq!(h.invoices_for(&opp).await.len(), 1);
    let customers = h.find(&h.qb, "Customer", vec![("DisplayName", json!("O'Hare & Sons Masonry"))], &[]).await;
    assert_eq!(customers.len(), 1, "the apostrophe name is found, not doubled");

    // The same change delivered again: rewind the cursor so the poll reads everything once more.
    let flow = h.engine.flows.get(FLOW).unwrap().clone();
    let (connection, object, _) = flow.trigger.source().unwrap();
    h.engine
        .store
        .put_cursor(&ChangeCursor {
            connection: connection.to_string(),
            object: object.to_string(),
            flow: FLOW.into(),
            position: chrono::Utc::now() - chrono::Duration::hours(1),
            seen: json!({}),
            updated_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    h.sync().await;
    // An older version of the record, from before the invoice id was written back, delivered late under a new
    // key: the flow's condition holds for it, and the link table is what stops a second invoice.
    let mut record = h.sf.get("Opportunity", &opp, &[]).await.unwrap().unwrap();
    record.insert("QuickBooks_Invoice_Id__c".into(), Value::Null);
    h.engine
        .store
        .enqueue(&NewJob {
            kind: poller::JOB_FLOW_RECORD.into(),
            idempotency_key: "manual-replay-1".into(),
            flow: Some(FLOW.into()),
            connection: Some("salesforce".into()),
            payload: json!({"record": record}),
            run_at: chrono::Utc::now(),
            max_attempts: 3,
        })
        .await
        .unwrap();
    worker::drain(&h.engine).await.unwrap();
    assert_eq!(h.invoices_for(&opp).await.len(), 1, "a re-delivered change creates nothing new");

    // Re-opened and closed again: still one invoice.
    h.set_stage(&opp, "Negotiation/Review").await;
    h.sync().await;
    h.set_stage(&opp, "Closed Won").await;
    h.sync().await;
    assert_eq!(h.invoices_for(&opp).await.len(), 1, "re-closing does not bill twice");

    // A second deal for the same account reuses the customer through the link table.
    let opp2 = h.opportunity(&acct, "O'Hare — patio", &[(1, 2, 0)]).await;
    h.set_stage(&opp2, "Closed Won").await;
    h.sync().await;
    let inv2 = h.invoices_for(&opp2).await;
    assert_eq!(inv2.len(), 1);
    assert_eq!(inv2[0]["CustomerRef"]["value"], customers[0]["Id"]);
    assert!(h.engine.stats.snapshot().duplicates_prevented > 0);
    let dead = h.engine.store.list_jobs(&ledgerlink_store::JobFilter { status: Some(JobStatus::Dead), ..Default::default() }).await.unwrap();
    assert!(dead.is_empty(), "no dead jobs: {dead:?}");
    let reviews = h.engine.store.list_reviews(None).await.unwrap();
    assert!(reviews.is_empty(), "nothing waits for review: {reviews:?}");
}

async fn existing_customers_are_matched_by_name_and_email(backend: Backend) {
    let Some(h) = harness(backend).await else { return };
    h.sync().await;
    let existing = h.find(&h.qb, "Customer", vec![], &[]).await;
    let by_name = existing[0].clone();
    let with_email = existing
        .iter()
        .skip(1)
        .find(|c| c.get("PrimaryEmailAddr").and_then(|e| e.get("Address")).is_some())
        .expect("the seeded company has a customer with an email")
        .clone();
    let before = existing.len();

    let a1 = h.account(by_name["DisplayName"].as_str().unwrap(), None).await;
    let a2 = h.account("A Name QuickBooks Has Never Seen", with_email["PrimaryEmailAddr"]["Address"].as_str()).await;
    let o1 = h.opportunity(&a1, "matched by name", &[(0, 1, 0)]).await;
    let o2 = h.opportunity(&a2, "matched by email", &[(0, 1, 0)]).await;
    h.set_stage(&o1, "Closed Won").await;
    h.set_stage(&o2, "Closed Won").await;
    h.sync().await;

    assert_eq!(h.invoices_for(&o1).await[0]["CustomerRef"]["value"], by_name["Id"]);
    assert_eq!(h.invoices_for(&o2).await[0]["CustomerRef"]["value"], with_email["Id"]);
    assert_eq!(h.find(&h.qb, "Customer", vec![], &[]).await.len(), before, "no customer was created");
    assert_eq!(h.engine.stats.snapshot().customers_matched, 2);
}

async fn dry_run_plans_the_writes_and_makes_none(backend: Backend) {
    let Some(h) = harness(backend).await else { return };
    h.sync().await;
    let acct = h.account("Lakeshore Rowing Club", Some("treasurer@lakeshore.example")).await;
    let opp = h.opportunity(&acct, "Lakeshore — boathouse", &[(0, 2, 0), (1, 1, 10)]).await;
    h.set_stage(&opp, "Closed Won").await;
    let customers_before = h.find(&h.qb, "Customer", vec![], &[]).await.len();
    let record = h.sf.get("Opportunity", &opp, &[]).await.unwrap().unwrap();
    let flow = h.engine.flows.get(FLOW).unwrap().clone();

    let plan = ledgerlink_engine::executor::plan_flow(&h.engine, &flow, Value::Object(record)).await.unwrap();
    use ledgerlink_engine::executor::PlannedWrite;
    let creates: Vec<&str> = plan
        .writes
        .iter()
        .filter_map(|w| match w {
            PlannedWrite::Create { object, .. } => Some(object.as_str()),
            _ => None,
        })
        .collect();
    assert!(creates.contains(&"Customer") && creates.contains(&"Invoice"), "{plan:?}");
    let invoice = plan.writes.iter().find_map(|w| match w {
        PlannedWrite::Create { object, fields, .. } if object == "Invoice" => Some(fields.clone()),
        _ => None,
    });
    assert_eq!(invoice.unwrap()["Line"].as_array().unwrap().len(), 2, "the planned invoice has both lines");
    assert!(plan.writes.iter().any(|w| matches!(w, PlannedWrite::Update { object, after, .. } if object == "Opportunity" && after["QuickBooks_Invoice_Id__c"] == "(new Invoice)")));

    // Nothing happened anywhere.
    assert_eq!(h.find(&h.qb, "Customer", vec![], &[]).await.len(), customers_before);
    assert!(h.invoices_for(&opp).await.is_empty());
    assert!(h.engine.store.list_audit(&Default::default()).await.unwrap().is_empty());
    assert!(h.engine.store.find_link(&ledgerlink_model::RecordRef::new("salesforce", "Account", &acct), "quickbooks", "Customer").await.unwrap().is_none());
    assert_eq!(h.engine.stats.snapshot().records_created, 0);

    // The real run then does what was planned.
    h.sync().await;
    assert_eq!(h.invoices_for(&opp).await.len(), 1);
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Backend::Sqlite).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Backend::Postgres).await } )* }
    };
}

on_both_backends!(
    closed_won_creates_one_exact_invoice,
    redelivered_and_reclosed_changes_create_nothing,
    existing_customers_are_matched_by_name_and_email,
    dry_run_plans_the_writes_and_makes_none,
);
