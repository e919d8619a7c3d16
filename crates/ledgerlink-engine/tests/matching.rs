//! The match cascade, table-driven, against both sandboxes: exact → normalised name → fuzzy; one candidate links,
//! none creates, several (or any fuzzy ones) go to review with their scores and nothing is written; resolving the
//! review resumes the waiting job with the decision.

use std::collections::BTreeMap;
use std::sync::Arc;

use ledgerlink_connectors::{Connector, FindQuery, Record};
use ledgerlink_engine::review::{self, Decision};
use ledgerlink_engine::{Engine, EngineSettings, connections, poller, worker};
use ledgerlink_sandbox::{quickbooks, salesforce};
use ledgerlink_store::{JobStatus, MasterKey, ReviewStatus, SecretCipher};
use serde_json::{Value, json};

const FLOW: &str = r#"
[flow]
name = "accounts-to-customers"
description = "Match each new Salesforce account to a QuickBooks customer, or create one."

[trigger]
type = "poll"
connection = "salesforce"
object = "Account"
fields = ["Id", "Name", "SystemModstamp"]

[[steps]]
id = "contact"
type = "find"
connection = "salesforce"
object = "Contact"
fields = ["Id", "Email"]
[steps.equals]
AccountId = 'record.Id'

[[steps]]
id = "customer"
type = "find_or_create"
connection = "quickbooks"
object = "Customer"
source = { connection = "salesforce", object = "Account", id = 'record.Id' }
match = [
  { field = "DisplayName", value = 'record.Name' },
  { field = "PrimaryEmailAddr", value = 'size(contact) > 0 ? contact[0].Email : null' },
  { field = "DisplayName", value = 'record.Name', how = "normalized" },
  { field = "DisplayName", value = 'record.Name', how = "fuzzy", threshold = 0.9 },
]
[steps.create]
DisplayName = 'record.Name'
"#;

fn rec(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

async fn customers(qb: &Arc<dyn Connector>) -> Vec<Record> {
    qb.find(&FindQuery { object: "Customer".into(), ..Default::default() }).await.unwrap()
}

#[derive(Debug)]
enum Expect {
    Linked(&'static str),
    Created,
    Review { candidates: usize, fuzzy: bool },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cascade_links_creates_or_asks_and_resumes_after_review() {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/m.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    let flow = ledgerlink_flow::parse_flow(FLOW, "accounts.toml", &BTreeMap::new()).unwrap();
    let engine = Engine::new(store.clone(), connections::build_all(store.clone()).await.unwrap(), vec![flow], EngineSettings::default()).unwrap();
    let (sf, qb) = (engine.connector("salesforce").unwrap().clone(), engine.connector("quickbooks").unwrap().clone());
    let flow = engine.flows["accounts-to-customers"].clone();
    poller::poll_once(&engine, &flow).await.unwrap(); // baseline

    // What QuickBooks already has.
    for (name, email) in [
        ("Cedar Lane Bakery", None),
        ("Harborview Marine Supply", Some("ap@harborview.example")),
        ("Granite Peak Outfitters, LLC", None),
        ("Bright Path Tutoring", None),
        ("Bright-Path Tutoring Inc.", None),
    ] {
        let mut c = json!({"DisplayName": name});
        if let Some(e) = email {
            c["PrimaryEmailAddr"] = json!({"Address": e});
        }
        qb.create("Customer", &rec(c), &format!("seed-{name}")).await.unwrap();
    }
    let before = customers(&qb).await.len();

    // (Salesforce account name, its contact's email, what must happen)
    let table: &[(&str, Option<&str>, Expect)] = &[
        ("Cedar Lane Bakery", None, Expect::Linked("Cedar Lane Bakery")),
        ("Harbor View Marine", Some("ap@harborview.example"), Expect::Linked("Harborview Marine Supply")),
        ("GRANITE PEAK OUTFITTERS", None, Expect::Linked("Granite Peak Outfitters, LLC")),
        ("Bright Path Tutoring LLC", None, Expect::Review { candidates: 2, fuzzy: false }),
        ("Cedar Lane Bakeries", None, Expect::Review { candidates: 1, fuzzy: true }),
        ("Quantum Widget Works", None, Expect::Created),
    ];
    let mut accounts = Vec::new();
    for (name, email, _) in table {
        let a = sf.create("Account", &rec(json!({"Name": name})), "k").await.unwrap();
        let id = a["Id"].as_str().unwrap().to_string();
        if let Some(e) = email {
            sf.create("Contact", &rec(json!({"AccountId": id, "LastName": "Payables", "Email": e})), "k").await.unwrap();
        }
        accounts.push(id);
    }
    poller::poll_once(&engine, &flow).await.unwrap();
    worker::drain(&engine).await.unwrap();

    let after: Vec<Record> = customers(&qb).await;
    let name_of = |id: &str| after.iter().find(|c| c["Id"] == id).map(|c| c["DisplayName"].as_str().unwrap().to_string());
    let reviews = store.list_reviews(Some(ReviewStatus::Open)).await.unwrap();
    for ((name, _, expect), account) in table.iter().zip(&accounts) {
        let link = store.find_link(&ledgerlink_model::RecordRef::new("salesforce", "Account", account), "quickbooks", "Customer").await.unwrap();
        match expect {
            Expect::Linked(target) => assert_eq!(link.map(|l| name_of(&l.b.id)), Some(Some(target.to_string())), "{name}"),
            Expect::Created => assert_eq!(link.map(|l| name_of(&l.b.id)), Some(Some(name.to_string())), "{name}"),
            Expect::Review { candidates, fuzzy } => {
                assert!(link.is_none(), "{name}: nothing linked before a person decides");
                let item = reviews.iter().find(|r| r.item.subject.as_ref().map(|s| s.id.as_str()) == Some(account)).unwrap_or_else(|| panic!("{name}: no review item"));
                let listed = item.item.details["candidates"].as_array().unwrap();
                assert_eq!(listed.len(), *candidates, "{name}: {}", item.item.reason);
                assert!(listed.iter().all(|c| c["score"].as_f64().unwrap() >= 0.9));
                assert_eq!(item.item.reason.contains("similar name"), *fuzzy, "{}", item.item.reason);
            }
        }
    }
    assert_eq!(after.len(), before + 1, "only the unmatched account created a customer");
    let parked = store.list_jobs(&ledgerlink_store::JobFilter { status: Some(JobStatus::Parked), ..Default::default() }).await.unwrap();
    assert_eq!(parked.len(), 2, "the two ambiguous accounts wait");

    // A person decides: the first ambiguous account is "Bright-Path Tutoring Inc.", the fuzzy one is a new customer.
    let inc_id = after.iter().find(|c| c["DisplayName"] == "Bright-Path Tutoring Inc.").unwrap()["Id"].as_str().unwrap().to_string();
    let review_of = |account: &str| reviews.iter().find(|r| r.item.subject.as_ref().unwrap().id == account).unwrap().id;
    let wrong = review::resolve(store.as_ref(), review_of(&accounts[3]), &Decision::Link { target_id: "999999".into() }, chrono::Utc::now()).await;
    assert!(matches!(wrong, Err(review::ResolveError::NotACandidate(..))), "only a candidate can be chosen");
    review::resolve(store.as_ref(), review_of(&accounts[3]), &Decision::Link { target_id: inc_id.clone() }, chrono::Utc::now()).await.unwrap();
    review::resolve(store.as_ref(), review_of(&accounts[4]), &Decision::Create, chrono::Utc::now()).await.unwrap();
    let twice = review::resolve(store.as_ref(), review_of(&accounts[4]), &Decision::Create, chrono::Utc::now()).await;
    assert!(matches!(twice, Err(review::ResolveError::AlreadyResolved(_))));
    worker::drain(&engine).await.unwrap();

    let link = |a: &str| {
        let store = store.clone();
        let a = a.to_string();
        async move { store.find_link(&ledgerlink_model::RecordRef::new("salesforce", "Account", a), "quickbooks", "Customer").await.unwrap().unwrap().b.id }
    };
    assert_eq!(link(&accounts[3]).await, inc_id);
    let created = link(&accounts[4]).await;
    let final_customers = customers(&qb).await;
    assert_eq!(final_customers.iter().find(|c| c["Id"] == created.as_str()).unwrap()["DisplayName"], "Cedar Lane Bakeries");
    assert_eq!(final_customers.len(), before + 2);
    let counts = store.count_jobs().await.unwrap();
    assert_eq!((counts.parked, counts.dead, counts.queued), (0, 0, 0), "{counts:?}");
}
