//! Two-way customer sync between Salesforce and QuickBooks: two flows, one from each side, over the same linked
//! records. Edits on both sides at once settle in a bounded number of writes (no echo loops), and each conflict
//! policy — source of truth, newest wins, review — settles a conflict its way.

use std::collections::BTreeMap;
use std::sync::Arc;

use ledgerlink_connectors::{Connector, Record};
use ledgerlink_engine::{Engine, EngineSettings, connections, poller, worker};
use ledgerlink_sandbox::{RunningSandbox, quickbooks, salesforce};
use ledgerlink_store::{AuditFilter, MasterKey, ReviewStatus, SecretCipher, Store};
use serde_json::{Value, json};

fn flows(sf_policy: &str, qb_policy: &str) -> (String, String) {
    let out = format!(
        r#"
[flow]
name = "accounts-to-customers"
description = "Salesforce accounts to QuickBooks customers, two-way on phone and website."
[trigger]
type = "poll"
connection = "salesforce"
object = "Account"
fields = ["Id", "Name", "Phone", "Website", "SystemModstamp"]
[[steps]]
id = "customer"
type = "find_or_create"
connection = "quickbooks"
object = "Customer"
source = {{ connection = "salesforce", object = "Account", id = 'record.Id' }}
match = [{{ field = "DisplayName", value = 'record.Name' }}]
[steps.create]
DisplayName = 'record.Name'
"PrimaryPhone.FreeFormNumber" = 'has(record.Phone) ? record.Phone : null'
"WebAddr.URI" = 'has(record.Website) ? record.Website : null'
[[steps]]
id = "sync"
type = "sync"
connection = "quickbooks"
object = "Customer"
record_id = 'customer.Id'
source = {{ connection = "salesforce", object = "Account", id = 'record.Id' }}
policy = "{sf_policy}"
fields = {{ Phone = "PrimaryPhone.FreeFormNumber", Website = "WebAddr.URI" }}
"#
    );
    let back = format!(
        r#"
[flow]
name = "customers-to-accounts"
description = "QuickBooks customers to Salesforce accounts, two-way on phone and website."
[trigger]
type = "poll"
connection = "quickbooks"
object = "Customer"
fields = ["Id"]
[[steps]]
id = "account"
type = "find_or_create"
connection = "salesforce"
object = "Account"
source = {{ connection = "quickbooks", object = "Customer", id = 'record.Id' }}
match = [{{ field = "Name", value = 'record.DisplayName' }}]
[steps.create]
Name = 'record.DisplayName'
[[steps]]
id = "sync"
type = "sync"
connection = "salesforce"
object = "Account"
record_id = 'account.Id'
source = {{ connection = "quickbooks", object = "Customer", id = 'record.Id' }}
policy = "{qb_policy}"
fields = {{ "PrimaryPhone.FreeFormNumber" = "Phone", "WebAddr.URI" = "Website" }}
"#
    );
    (out, back)
}

struct H {
    engine: Engine,
    store: Arc<dyn Store>,
    sf: Arc<dyn Connector>,
    qb: Arc<dyn Connector>,
    qbo: RunningSandbox,
    _sfdc: RunningSandbox,
    _dir: tempfile::TempDir,
}

async fn harness(sf_policy: &str, qb_policy: &str) -> H {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/t.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    let (a, b) = flows(sf_policy, qb_policy);
    let flows = vec![
        ledgerlink_flow::parse_flow(&a, "out.toml", &BTreeMap::new()).unwrap(),
        ledgerlink_flow::parse_flow(&b, "back.toml", &BTreeMap::new()).unwrap(),
    ];
    let engine = Engine::new(store.clone(), connections::build_all(store.clone()).await.unwrap(), flows, EngineSettings::default()).unwrap();
    let (sf, qb) = (engine.connector("salesforce").unwrap().clone(), engine.connector("quickbooks").unwrap().clone());
    engine.prime().await.unwrap();
    H { engine, store, sf, qb, qbo, _sfdc: sfdc, _dir: dir }
}

fn rec(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

impl H {
    async fn writes(&self) -> usize {
        self.store.list_audit(&AuditFilter::default()).await.unwrap().iter().filter(|a| a.entry.outcome == "ok").count()
    }

    /// Polls both flows and runs every job until a whole round finds nothing new; returns the writes it made.
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
        panic!("the two flows did not settle within 12 rounds: a loop");
    }

    async fn customer(&self, account: &str) -> Record {
        let link = self.store.find_link(&ledgerlink_model::RecordRef::new("salesforce", "Account", account), "quickbooks", "Customer").await.unwrap().unwrap();
        self.qb.get("Customer", &link.b.id, &[]).await.unwrap().unwrap()
    }

    async fn account(&self, id: &str) -> Record {
        self.sf.get("Account", id, &["Id".into(), "Phone".into(), "Website".into()]).await.unwrap().unwrap()
    }

    /// A synced account/customer pair, settled.
    async fn pair(&self, name: &str) -> (String, String) {
        let a = self.sf.create("Account", &rec(json!({"Name": name, "Phone": "555-0100", "Website": "https://start.example"})), "k").await.unwrap();
        let id = a["Id"].as_str().unwrap().to_string();
        self.settle().await;
        let c = self.customer(&id).await;
        assert_eq!(c["PrimaryPhone"]["FreeFormNumber"], "555-0100");
        (id, c["Id"].as_str().unwrap().to_string())
    }

    /// Both sides edited before either is synced: Salesforce first, QuickBooks a few seconds later (its clock moved).
    async fn edit_both(&self, account: &str, customer: &str, sf_phone: &str, qb_phone: &str) {
        self.sf.update("Account", account, &rec(json!({"Phone": sf_phone}))).await.unwrap();
        let http = ledgerlink_connectors::http::client();
        http.post(format!("{}/sandbox/admin/clock/advance", self.qbo.base_url)).json(&json!({"seconds": 3})).send().await.unwrap();
        self.qb.update("Customer", customer, &rec(json!({"PrimaryPhone": {"FreeFormNumber": qb_phone}}))).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_side_is_copied_once_and_its_echo_stops() {
    let h = harness("newest_wins", "newest_wins").await;
    let (account, _customer) = h.pair("One Side Outfitters").await;
    h.sf.update("Account", &account, &rec(json!({"Website": "https://new.example"}))).await.unwrap();
    assert_eq!(h.settle().await, 1, "one write to QuickBooks; its echo writes nothing back");
    assert_eq!(h.customer(&account).await["WebAddr"]["URI"], "https://new.example");
    assert_eq!(h.settle().await, 0, "quiet afterwards");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_on_both_sides_at_once_settle_in_bounded_writes_newest_wins() {
    let h = harness("newest_wins", "newest_wins").await;
    let (account, customer) = h.pair("Both Sides Bakery").await;
    for round in 0..5 {
        let (sf_phone, qb_phone) = (format!("555-1{round}11"), format!("555-2{round}22"));
        h.edit_both(&account, &customer, &sf_phone, &qb_phone).await;
        let writes = h.settle().await;
        let audit: Vec<_> = h.store.list_audit(&AuditFilter::default()).await.unwrap().into_iter().take(writes).map(|a| (a.entry.flow, a.entry.object, a.entry.after)).collect();
        assert!(writes <= 2, "round {round}: {writes} writes: {audit:?}");
        // QuickBooks changed last: its value wins on both sides.
        assert_eq!(h.account(&account).await["Phone"], qb_phone.as_str(), "round {round}");
        assert_eq!(h.customer(&account).await["PrimaryPhone"]["FreeFormNumber"], qb_phone.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_of_truth_policy_keeps_salesforce_values() {
    // Salesforce is the system of record: it wins going out, and the flow coming back lets it win too.
    let h = harness("source_wins", "target_wins").await;
    let (account, customer) = h.pair("Truthful Tiles").await;
    h.edit_both(&account, &customer, "555-0333", "555-0444").await;
    assert!(h.settle().await <= 2);
    assert_eq!(h.account(&account).await["Phone"], "555-0333");
    assert_eq!(h.customer(&account).await["PrimaryPhone"]["FreeFormNumber"], "555-0333");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_policy_writes_nothing_and_asks() {
    let h = harness("review", "review").await;
    let (account, customer) = h.pair("Careful Carpentry").await;
    h.edit_both(&account, &customer, "555-0555", "555-0666").await;
    assert_eq!(h.settle().await, 0, "nothing written while the conflict is open");
    assert_eq!(h.account(&account).await["Phone"], "555-0555");
    assert_eq!(h.customer(&account).await["PrimaryPhone"]["FreeFormNumber"], "555-0666");
    let open = h.store.list_reviews(Some(ReviewStatus::Open)).await.unwrap();
    assert!(!open.is_empty());
    assert!(open.iter().all(|r| r.item.kind == "sync_conflict" && r.item.reason.contains("555-0555") && r.item.reason.contains("555-0666")), "{open:?}");
}
