//! Writes to one Salesforce org from concurrent jobs leave as sObject Collections calls: hundreds of updates and
//! creates become a handful of `/composite/sobjects` calls, each caller still gets its own record's result (one
//! refused record fails alone), the daily budget guard still stops them, and `batch_writes = false` turns it off.
//! Concurrent reads by id, and finds by one record-id field, share calls the same way (`batch_reads = false` turns
//! that off). Calls are counted from the Salesforce sandbox's own call log.

use std::collections::BTreeMap;
use std::sync::Arc;

use ledgerlink_connectors::{Connector, ConnectorError, FindQuery, Record};
use ledgerlink_engine::{Engine, EngineSettings, connections, poller, worker};
use ledgerlink_sandbox::{RunningSandbox, salesforce};
use ledgerlink_store::{MasterKey, SecretCipher, Store};
use serde_json::{Value, json};

/// Runs every future at once, each on its own task (so they are truly concurrent), and returns their results
/// in order.
async fn join_all<F, T>(futs: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

fn rec(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

struct H {
    store: Arc<dyn Store>,
    sf: Arc<dyn Connector>,
    sfdc: RunningSandbox,
    _dir: tempfile::TempDir,
}

async fn harness(batch_writes: Option<bool>) -> H {
    harness_with(batch_writes.map(|b| json!({"batch_writes": b})).unwrap_or(json!({}))).await
}

/// A harness whose Salesforce connection has these settings on top of the sandbox's.
async fn harness_with(settings: Value) -> H {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/s.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    let mut conn = connections::from_sandbox_info("salesforce", &sfdc.info).unwrap();
    for (k, v) in settings.as_object().unwrap() {
        conn.config[k] = v.clone();
    }
    store.put_connection(&conn).await.unwrap();
    let sf = connections::build_all(store.clone()).await.unwrap()["salesforce"].clone();
    H { store, sf, sfdc, _dir: dir }
}

impl H {
    async fn calls(&self) -> Vec<Value> {
        let http = ledgerlink_connectors::http::client();
        let v: Value = http.get(format!("{}/sandbox/admin/calls", self.sfdc.base_url)).send().await.unwrap().json().await.unwrap();
        v.as_array().cloned().unwrap_or_default()
    }

    /// (method, path) of every call after the first `skip`.
    async fn calls_since(&self, skip: usize) -> Vec<(String, String)> {
        self.calls().await.into_iter().skip(skip).map(|c| (c["method"].as_str().unwrap_or("").to_string(), c["path"].as_str().unwrap_or("").to_string())).collect()
    }

    async fn admin(&self, path: &str, body: Value) {
        let http = ledgerlink_connectors::http::client();
        let r = http.post(format!("{}/sandbox/admin/{path}", self.sfdc.base_url)).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }
}

fn count(calls: &[(String, String)], method: &str, pred: impl Fn(&str) -> bool) -> usize {
    calls.iter().filter(|(m, p)| m == method && pred(p)).count()
}

fn is_collection(p: &str) -> bool {
    p.ends_with("/composite/sobjects")
}

fn is_single_account(p: &str) -> bool {
    p.contains("/sobjects/Account")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_and_updates_leave_as_collections_calls_with_per_record_results() {
    let h = harness(None).await;
    let n: usize = 250;
    let before = h.calls().await.len();

    // Creates.
    let creates = join_all((0..n).map(|i| {
        let sf = h.sf.clone();
        async move { sf.create("Account", &rec(json!({"Name": format!("Collections Client {i:03}")})), &format!("k{i}")).await }
    }))
    .await;
    let ids: Vec<String> = creates.iter().map(|r| r.as_ref().unwrap()["Id"].as_str().unwrap().to_string()).collect();
    for (i, r) in creates.iter().enumerate() {
        let r = r.as_ref().unwrap();
        assert_eq!(r["Name"], format!("Collections Client {i:03}"), "each caller gets its own record back");
        assert!(r.get("SystemModstamp").is_some_and(|v| v.is_string()), "{r:?}");
    }
    let calls = h.calls_since(before).await;
    let posts = count(&calls, "POST", is_collection);
    let limit = n.div_ceil(200) + 2;
    assert!(posts >= 1 && posts <= limit, "{posts} Collections creates for {n} records: {calls:?}");
    assert_eq!(count(&calls, "POST", is_single_account), 0, "no single creates");

    // Updates, one of them refused: it fails alone.
    let before = h.calls().await.len();
    let bad = 137;
    let updates = join_all(ids.iter().enumerate().map(|(i, id)| {
        let sf = h.sf.clone();
        let id = id.clone();
        async move {
            let fields = if i == bad { rec(json!({"NumberOfEmployees": "many"})) } else { rec(json!({"Phone": format!("555-{i:04}")})) };
            sf.update("Account", &id, &fields).await
        }
    }))
    .await;
    for (i, r) in updates.iter().enumerate() {
        if i == bad {
            match r {
                Err(ConnectorError::Validation { code, .. }) => assert!(!code.is_empty()),
                other => panic!("record {i}: expected its own refusal, got {other:?}"),
            }
        } else {
            let r = r.as_ref().unwrap_or_else(|e| panic!("record {i}: {e}"));
            assert_eq!(r["Id"], ids[i].as_str());
            assert_eq!(r["Phone"], format!("555-{i:04}"), "record {i} gets its own stored value");
            assert!(r.get("SystemModstamp").is_some_and(|v| v.is_string()));
        }
    }
    let calls = h.calls_since(before).await;
    let patches = count(&calls, "PATCH", is_collection);
    assert!(patches >= 1 && patches <= limit, "{patches} Collections updates for {n} records: {calls:?}");
    assert_eq!(count(&calls, "PATCH", is_single_account), 0, "no single-record PATCH");
    let reads = count(&calls, "GET", |p| p.contains("/composite/sobjects/Account"));
    assert!(reads <= limit, "{reads} read-backs: one per batch, not one per record");
    assert_eq!(count(&calls, "GET", |p| p.contains("/sobjects/Account/")), 0, "no single reads");
    eprintln!("{n} creates and {n} updates: {posts} + {patches} Collections calls, {reads} read-backs; {} calls in all", calls.len());

    // What Salesforce holds.
    let stored = h.sf.find(&FindQuery { object: "Account".into(), equals: vec![], fields: vec!["Id".into(), "Name".into(), "Phone".into()], limit: None }).await.unwrap();
    let by_id: BTreeMap<&str, &Record> = stored.iter().map(|r| (r["Id"].as_str().unwrap(), r)).collect();
    for (i, id) in ids.iter().enumerate() {
        let r = by_id[id.as_str()];
        if i == bad {
            assert!(r["Phone"].is_null(), "the refused record is unchanged");
        } else {
            assert_eq!(r["Phone"], format!("555-{i:04}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_budget_guard_stops_batched_writes_before_they_are_sent() {
    let h = harness(None).await;
    let a = h.sf.create("Account", &rec(json!({"Name": "Budget Ltd"})), "k").await.unwrap();
    let id = a["Id"].as_str().unwrap().to_string();
    // 10 calls left of 1,000: under the 5% reserve the guard keeps back.
    h.admin("limits", json!({"daily": 1000, "used": 990})).await;
    h.sf.get("Account", &id, &[]).await.unwrap();
    let before = h.calls().await.len();
    let results = join_all((0..5).map(|i| {
        let sf = h.sf.clone();
        let id = id.clone();
        async move { sf.update("Account", &id, &rec(json!({"Phone": format!("555-900{i}")}))).await }
    }))
    .await;
    for r in &results {
        assert!(matches!(r, Err(ConnectorError::BudgetExhausted { .. })), "{r:?}");
    }
    assert!(h.calls_since(before).await.is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_writes_false_sends_single_calls() {
    let h = harness(Some(false)).await;
    let a = h.sf.create("Account", &rec(json!({"Name": "Single Calls Co"})), "k").await.unwrap();
    let id = a["Id"].as_str().unwrap().to_string();
    let before = h.calls().await.len();
    let r = h.sf.update("Account", &id, &rec(json!({"Phone": "555-0001"}))).await.unwrap();
    assert_eq!(r["Phone"], "555-0001");
    let calls = h.calls_since(before).await;
    assert_eq!(count(&calls, "PATCH", is_single_account), 1, "{calls:?}");
    assert_eq!(count(&calls, "PATCH", is_collection), 0, "{calls:?}");
}

/// The engine's write-backs from concurrent jobs: a flow that stamps every changed account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_backs_from_concurrent_jobs_are_coalesced_and_do_not_echo() {
    let h = harness(None).await;
    let flow = r#"
[flow]
name = "stamp-accounts"
description = "Writes a description back to every changed account."
[trigger]
type = "poll"
connection = "salesforce"
object = "Account"
fields = ["Id", "Name", "SystemModstamp"]
[[steps]]
id = "stamp"
type = "update"
connection = "salesforce"
object = "Account"
record_id = 'record.Id'
[steps.fields]
Description = '"seen: " + record.Name'
"#;
    let flow = ledgerlink_flow::parse_flow(flow, "stamp.toml", &BTreeMap::new()).unwrap();
    let settings = EngineSettings { concurrency: 16, ..EngineSettings::default() };
    let engine = Engine::new(h.store.clone(), connections::build_all(h.store.clone()).await.unwrap(), vec![flow], settings).unwrap();
    let flow = engine.flows["stamp-accounts"].clone();
    let sf = engine.connector("salesforce").unwrap().clone();
    poller::poll_once(&engine, &flow).await.unwrap();
    let n = 40;
    let made = join_all((0..n).map(|i| {
        let sf = sf.clone();
        async move { sf.create("Account", &rec(json!({"Name": format!("Stamped {i}")})), "k").await.unwrap() }
    }))
    .await;

    let before = h.calls().await.len();
    assert_eq!(poller::poll_once(&engine, &flow).await.unwrap().enqueued, n);
    worker::drain(&engine).await.unwrap();
    let calls = h.calls_since(before).await;
    let patches = count(&calls, "PATCH", is_collection);
    assert_eq!(count(&calls, "PATCH", is_single_account), 0, "no single-record PATCH");
    assert!(patches >= 1 && patches < n / 2, "{patches} Collections calls for {n} write-backs");
    eprintln!("{n} write-backs from 16 concurrent jobs: {patches} Collections calls");
    for a in &made {
        let got = sf.get("Account", a["Id"].as_str().unwrap(), &["Description".into()]).await.unwrap().unwrap();
        assert_eq!(got["Description"], format!("seen: {}", a["Name"].as_str().unwrap()));
    }
    // The write-backs come back through the poll as our own: no new jobs.
    assert_eq!(poller::poll_once(&engine, &flow).await.unwrap().enqueued, 0);
}

fn is_query(p: &str) -> bool {
    p.ends_with("/query")
}

/// Accounts with `contacts[i]` contacts each, created before the reads under test.
async fn accounts_with_contacts(h: &H, contacts: &[usize]) -> Vec<String> {
    let mut ids = Vec::new();
    for (i, n) in contacts.iter().enumerate() {
        let a = h.sf.create("Account", &rec(json!({"Name": format!("Reader {i:02} Ltd")})), &format!("a{i}")).await.unwrap();
        let id = a["Id"].as_str().unwrap().to_string();
        for c in 0..*n {
            let contact = rec(json!({"LastName": format!("Contact {i:02}-{c}"), "AccountId": id}));
            h.sf.create("Contact", &contact, &format!("c{i}-{c}")).await.unwrap();
        }
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_share_calls_and_each_caller_gets_its_own_answer() {
    let h = harness(None).await;
    let n = 60;
    let contacts: Vec<usize> = (0..n).map(|i| i % 3).collect();
    let ids = accounts_with_contacts(&h, &contacts).await;
    // An id of the right shape that names no account: its caller gets "not found", the others their records.
    let missing = format!("{}AAA", &ids[0][..12]);
    let mut asked: Vec<String> = ids.clone();
    asked.push(missing.clone());
    // A 15-character id names the same record as its 18-character form.
    asked.push(ids[5][..15].to_string());

    let before = h.calls().await.len();
    let gets = join_all(asked.iter().cloned().map(|id| {
        let sf = h.sf.clone();
        async move { sf.get("Account", &id, &["Id".to_string(), "Name".to_string()]).await }
    }))
    .await;
    let finds = join_all(asked.iter().cloned().map(|id| {
        let sf = h.sf.clone();
        async move {
            let q = FindQuery {
                object: "Contact".into(),
                equals: vec![("AccountId".into(), json!(id))],
                fields: vec!["Id".into(), "LastName".into()],
                limit: None,
            };
            sf.find(&q).await
        }
    }))
    .await;
    let calls = h.calls_since(before).await;

    for (i, id) in ids.iter().enumerate() {
        let got = gets[i].as_ref().unwrap().as_ref().unwrap_or_else(|| panic!("account {i} not found"));
        assert_eq!(got["Id"], id.as_str());
        assert_eq!(got["Name"], format!("Reader {i:02} Ltd"), "caller {i} gets its own account");
        let mut names: Vec<String> = finds[i].as_ref().unwrap().iter().map(|c| c["LastName"].as_str().unwrap().to_string()).collect();
        names.sort();
        let expected: Vec<String> = (0..contacts[i]).map(|c| format!("Contact {i:02}-{c}")).collect();
        assert_eq!(names, expected, "caller {i} gets its account's contacts and no other's");
        assert!(finds[i].as_ref().unwrap().iter().all(|c| !c.contains_key("AccountId")), "only the fields asked for");
    }
    assert_eq!(gets[n].as_ref().unwrap(), &None, "the id that names no account is not found");
    assert!(finds[n].as_ref().unwrap().is_empty());
    assert_eq!(gets[n + 1].as_ref().unwrap().as_ref().unwrap()["Name"], "Reader 05 Ltd", "a 15-character id");
    assert_eq!(finds[n + 1].as_ref().unwrap().len(), contacts[5]);

    let retrieves = count(&calls, "GET", |p| p.ends_with("/composite/sobjects/Account"));
    let queries = count(&calls, "GET", is_query);
    assert_eq!(count(&calls, "GET", |p| p.contains("/sobjects/Account/")), 0, "no single reads: {calls:?}");
    // At most two calls of a shape are out at once; every other read waits for one and shares the next. Usually
    // that is 3 calls for the 62 reads; the bound leaves room for a test thread descheduled while it starts them
    // on a loaded machine (reads that start after the first calls came back go in further calls).
    let bound = asked.len() / 4;
    assert!(retrieves >= 1 && retrieves <= bound, "{retrieves} retrieves for {} gets", asked.len());
    assert!(queries >= 1 && queries <= bound, "{queries} queries for {} finds", asked.len());
    eprintln!("{} gets and {} finds: {retrieves} retrieves and {queries} queries", asked.len(), asked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_the_org_refuses_fails_alone_and_reads_can_be_sent_singly() {
    let h = harness(None).await;
    let ids = accounts_with_contacts(&h, &[1, 1, 1, 1]).await;
    // Reads of one shape, one of them for a field the org does not have: refused with its own error, while a
    // concurrent read with good fields is answered.
    let results = join_all(ids.iter().cloned().enumerate().map(|(i, id)| {
        let sf = h.sf.clone();
        async move {
            let fields = if i == 2 { vec!["Id".to_string(), "No_Such_Field__c".to_string()] } else { vec!["Id".to_string(), "Name".to_string()] };
            sf.get("Account", &id, &fields).await
        }
    }))
    .await;
    for (i, r) in results.iter().enumerate() {
        if i == 2 {
            assert!(matches!(r, Err(ConnectorError::Validation { .. })), "the bad field is named in a refusal: {r:?}");
        } else {
            assert_eq!(r.as_ref().unwrap().as_ref().unwrap()["Name"], format!("Reader {i:02} Ltd"));
        }
    }

    let single = harness_with(json!({"batch_reads": false})).await;
    let ids = accounts_with_contacts(&single, &[1, 1, 1]).await;
    let before = single.calls().await.len();
    let gets = join_all(ids.iter().cloned().map(|id| {
        let sf = single.sf.clone();
        async move { sf.get("Account", &id, &["Id".to_string(), "Name".to_string()]).await.unwrap().unwrap() }
    }))
    .await;
    assert_eq!(gets.len(), 3);
    let calls = single.calls_since(before).await;
    assert_eq!(count(&calls, "GET", |p| p.contains("/sobjects/Account/")), 3, "one read each: {calls:?}");
    assert_eq!(count(&calls, "GET", |p| p.ends_with("/composite/sobjects/Account")), 0);
}
