//! Deletes and deactivations in two-way customer sync, with the two shipped templates: a Salesforce account deleted
//! (or its `Active__c` checkbox cleared) and a QuickBooks customer made inactive each follow the flow's policy —
//! deactivate (and reactivate), delete, ignore, review — in both directions, once, and our own deactivation coming
//! back through the other flow writes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use ledgerlink_connectors::{Connector, FindQuery, Record};
use ledgerlink_engine::{Engine, EngineSettings, connections, poller, templates, worker};
use ledgerlink_model::RecordRef;
use ledgerlink_sandbox::{RunningSandbox, quickbooks, salesforce};
use ledgerlink_store::{AuditFilter, MasterKey, ReviewStatus, SecretCipher, Store};
use serde_json::{Value, json};

const OUT: &str = "salesforce-account-to-quickbooks-customer";
const BACK: &str = "quickbooks-customer-to-salesforce-account";

struct H {
    engine: Engine,
    store: Arc<dyn Store>,
    sf: Arc<dyn Connector>,
    qb: Arc<dyn Connector>,
    _qbo: RunningSandbox,
    _sfdc: RunningSandbox,
    _dir: tempfile::TempDir,
}

/// Both templates with the same removal policies (as their documentation asks), and the `Active__c` checkbox.
async fn harness(on_account_removed: &str, on_customer_removed: &str) -> H {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/r.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    let http = ledgerlink_connectors::http::client();
    let r = http
        .post(format!("{}/sandbox/admin/fields", sfdc.base_url))
        .json(&json!({"object": "Account", "name": "Active__c", "type": "Checkbox"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    let params: BTreeMap<String, String> = [
        ("on_account_removed", on_account_removed),
        ("on_customer_removed", on_customer_removed),
        ("account_active_field", "Active__c"),
        ("policy", "newest_wins"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let flows = vec![templates::load(OUT, &params).unwrap(), templates::load(BACK, &params).unwrap()];
    let engine = Engine::new(store.clone(), connections::build_all(store.clone()).await.unwrap(), flows, EngineSettings::default()).unwrap();
    let (sf, qb) = (engine.connector("salesforce").unwrap().clone(), engine.connector("quickbooks").unwrap().clone());
    engine.prime().await.unwrap();
    H { engine, store, sf, qb, _qbo: qbo, _sfdc: sfdc, _dir: dir }
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

    /// A synced account/customer pair, settled: (account id, customer id).
    async fn pair(&self, name: &str) -> (String, String) {
        let a = self.sf.create("Account", &rec(json!({"Name": name, "Phone": "555-0100"})), "k").await.unwrap();
        let id = a["Id"].as_str().unwrap().to_string();
        self.settle().await;
        let link = self.store.find_link(&RecordRef::new("salesforce", "Account", &id), "quickbooks", "Customer").await.unwrap().expect("linked");
        let c = self.customer(&link.b.id).await;
        assert_eq!(c["PrimaryPhone"]["FreeFormNumber"], "555-0100");
        assert_eq!(c["Active"], true);
        (id, link.b.id)
    }

    async fn customer(&self, id: &str) -> Record {
        self.qb.get("Customer", id, &[]).await.unwrap().unwrap()
    }

    async fn account(&self, id: &str) -> Option<Record> {
        self.sf.get("Account", id, &["Id".into(), "Name".into(), "Phone".into(), "Active__c".into()]).await.unwrap()
    }

    async fn set_customer_active(&self, id: &str, active: bool) {
        self.qb.update("Customer", id, &rec(json!({"Active": active}))).await.unwrap();
    }

    async fn open_reviews(&self) -> Vec<ledgerlink_store::ReviewItem> {
        self.store.list_reviews(Some(ReviewStatus::Open)).await.unwrap()
    }

    async fn accounts_named(&self, name: &str) -> usize {
        self.sf.find(&FindQuery { object: "Account".into(), equals: vec![("Name".into(), json!(name))], fields: vec!["Id".into()], limit: None }).await.unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivate_policy_follows_a_deleted_account_once_and_its_echo_writes_nothing() {
    let h = harness("deactivate", "deactivate").await;
    let (account, customer) = h.pair("Gone Gardens").await;
    h.sf.delete("Account", &account).await.unwrap();
    assert_eq!(h.settle().await, 1, "one write: the customer made inactive; its echo through the other flow writes nothing");
    assert_eq!(h.customer(&customer).await["Active"], false);
    assert_eq!(h.accounts_named("Gone Gardens").await, 0, "the deleted account is not re-created");
    assert_eq!(h.settle().await, 0, "quiet afterwards");
    // A later change to the customer does not bring the account back either.
    h.set_customer_active(&customer, true).await;
    h.qb.update("Customer", &customer, &rec(json!({"PrimaryPhone": {"FreeFormNumber": "555-0199"}}))).await.unwrap();
    assert_eq!(h.settle().await, 0);
    assert_eq!(h.accounts_named("Gone Gardens").await, 0);
    assert!(h.open_reviews().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivate_policy_mirrors_a_customer_deactivation_and_reactivation_to_the_checkbox() {
    let h = harness("deactivate", "deactivate").await;
    let (account, customer) = h.pair("Seasonal Skis").await;
    h.set_customer_active(&customer, false).await;
    assert_eq!(h.settle().await, 1, "one write: Active__c cleared on the account");
    assert_eq!(h.account(&account).await.unwrap()["Active__c"], false);
    assert_eq!(h.settle().await, 0, "the checkbox we cleared does not come back as a change");
    h.set_customer_active(&customer, true).await;
    assert_eq!(h.settle().await, 1, "reactivated: one write, Active__c set again");
    assert_eq!(h.account(&account).await.unwrap()["Active__c"], true);
    assert_eq!(h.customer(&customer).await["Active"], true);
    assert_eq!(h.settle().await, 0);
    // Fields sync again once both are active.
    h.sf.update("Account", &account, &rec(json!({"Phone": "555-0177"}))).await.unwrap();
    assert_eq!(h.settle().await, 1);
    assert_eq!(h.customer(&customer).await["PrimaryPhone"]["FreeFormNumber"], "555-0177");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivate_policy_mirrors_the_account_checkbox_to_the_customer_and_back() {
    let h = harness("deactivate", "deactivate").await;
    let (account, customer) = h.pair("Checkbox Chairs").await;
    h.sf.update("Account", &account, &rec(json!({"Active__c": false}))).await.unwrap();
    assert_eq!(h.settle().await, 1, "one write: the customer made inactive");
    assert_eq!(h.customer(&customer).await["Active"], false);
    assert_eq!(h.settle().await, 0);
    h.sf.update("Account", &account, &rec(json!({"Active__c": true}))).await.unwrap();
    assert_eq!(h.settle().await, 1, "reactivated");
    assert_eq!(h.customer(&customer).await["Active"], true);
    assert_eq!(h.settle().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_policy_deletes_the_account_and_deactivates_the_customer_quickbooks_cannot_delete() {
    let h = harness("delete", "delete").await;
    // QuickBooks → Salesforce: the account is deleted.
    let (account, customer) = h.pair("Closing Clocks").await;
    h.set_customer_active(&customer, false).await;
    assert_eq!(h.settle().await, 1, "one write: the account deleted");
    assert!(h.account(&account).await.is_none(), "the account is deleted");
    let audit = h.store.list_audit(&AuditFilter::default()).await.unwrap();
    assert!(audit.iter().any(|a| a.entry.action == "delete" && a.entry.record_id.as_deref() == Some(account.as_str()) && a.entry.outcome == "ok"));
    assert_eq!(h.settle().await, 0);
    // Salesforce → QuickBooks: QuickBooks does not delete customers; it is made inactive.
    let (account, customer) = h.pair("Folding Fans").await;
    h.sf.delete("Account", &account).await.unwrap();
    assert_eq!(h.settle().await, 1);
    assert_eq!(h.customer(&customer).await["Active"], false);
    assert_eq!(h.settle().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_policy_changes_nothing_files_nothing_and_recreates_nothing() {
    let h = harness("ignore", "ignore").await;
    let (account, customer) = h.pair("Steady Stones").await;
    h.sf.delete("Account", &account).await.unwrap();
    assert_eq!(h.settle().await, 0);
    assert_eq!(h.customer(&customer).await["Active"], true, "the customer is left as it is");
    let (account2, customer2) = h.pair("Quiet Quarries").await;
    h.set_customer_active(&customer2, false).await;
    assert_eq!(h.settle().await, 0);
    assert!(h.account(&account2).await.unwrap()["Active__c"].is_null(), "the account is left as it is");
    assert!(h.open_reviews().await.is_empty());
    // The customer of the deleted account changes: the account is not re-created.
    h.qb.update("Customer", &customer, &rec(json!({"PrimaryPhone": {"FreeFormNumber": "555-0144"}}))).await.unwrap();
    assert_eq!(h.settle().await, 0);
    assert_eq!(h.accounts_named("Steady Stones").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_policy_asks_once_per_removal_and_writes_nothing() {
    let h = harness("review", "review").await;
    let (account, customer) = h.pair("Pondering Pottery").await;
    h.sf.delete("Account", &account).await.unwrap();
    assert_eq!(h.settle().await, 0, "nothing written");
    assert_eq!(h.customer(&customer).await["Active"], true);
    let open = h.open_reviews().await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].item.kind, "sync_removed");
    assert!(open[0].item.reason.contains(&account) && open[0].item.reason.contains("deleted"), "{}", open[0].item.reason);
    assert_eq!(h.settle().await, 0);
    assert_eq!(h.open_reviews().await.len(), 1, "asked once");

    let (account2, customer2) = h.pair("Musing Mugs").await;
    h.set_customer_active(&customer2, false).await;
    assert_eq!(h.settle().await, 0);
    assert!(h.account(&account2).await.unwrap()["Active__c"].is_null());
    let open = h.open_reviews().await;
    assert_eq!(open.len(), 2);
    assert!(open.iter().any(|r| r.item.reason.contains(&customer2) && r.item.reason.contains("deactivated")), "{open:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_removed_before_it_was_ever_linked_is_not_copied() {
    let h = harness("deactivate", "deactivate").await;
    // Created and deleted between two polls: the poll sees only the delete.
    let a = h.sf.create("Account", &rec(json!({"Name": "Fleeting Fabrics"})), "k").await.unwrap();
    h.sf.delete("Account", a["Id"].as_str().unwrap()).await.unwrap();
    // A customer created inactive in QuickBooks.
    h.qb.create("Customer", &rec(json!({"DisplayName": "Dormant Dyes", "Active": false})), "dormant").await.unwrap();
    assert_eq!(h.settle().await, 0);
    let customers = h.qb.find(&FindQuery { object: "Customer".into(), equals: vec![("DisplayName".into(), json!("Fleeting Fabrics"))], fields: vec![], limit: None }).await.unwrap();
    assert!(customers.is_empty(), "{customers:?}");
    assert_eq!(h.accounts_named("Dormant Dyes").await, 0);
}
