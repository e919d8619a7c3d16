//! With both sandboxes injecting server errors, throttles, dropped connections, slow answers and token expiry —
//! half of them after the write was applied — every closed opportunity still ends with exactly one invoice, and
//! the audit log accounts for every create: each invoice QuickBooks holds has its successful create in the log,
//! and the failed attempts are there too, with their errors.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ledgerlink_connectors::{FindQuery, Record};
use ledgerlink_engine::{Engine, EngineSettings, connections, poller, templates, worker};
use ledgerlink_sandbox::{quickbooks, salesforce};
use ledgerlink_store::{MasterKey, SecretCipher};
use serde_json::{Value, json};

const FLOW: &str = "salesforce-closed-won-to-quickbooks-invoice";
const SPEEDUP: f64 = 60.0;

fn rec(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

async fn admin(base: &str, path: &str, body: Value) {
    let http = ledgerlink_connectors::http::client();
    let r = http.post(format!("{base}/sandbox/admin/{path}")).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_faults_every_deal_is_invoiced_exactly_once_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/f.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let limits = quickbooks::QuickbooksLimits { time_scale: SPEEDUP, ..Default::default() };
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions { limits, ..Default::default() }).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    let mut qb_conn = connections::from_sandbox_info("quickbooks", &qbo.info).unwrap();
    qb_conn.config["rate_limit_speedup"] = json!(SPEEDUP);
    store.put_connection(&qb_conn).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    let settings = EngineSettings {
        worker_id: "faults".into(),
        max_attempts: 40,
        retry_base: chrono::Duration::milliseconds(20),
        retry_max: chrono::Duration::milliseconds(100),
        ..EngineSettings::default()
    };
    let flow = templates::load(FLOW, &BTreeMap::new()).unwrap();
    let engine = Engine::new(store.clone(), connections::build_all(store.clone()).await.unwrap(), vec![flow], settings).unwrap();
    let (sf, qb) = (engine.connector("salesforce").unwrap().clone(), engine.connector("quickbooks").unwrap().clone());
    let flow = engine.flows[FLOW].clone();
    poller::poll_once(&engine, &flow).await.unwrap();

    // The sales team's deals, closed before the weather turns.
    let pb = sf.find(&FindQuery { object: "Pricebook2".into(), equals: vec![("IsStandard".into(), json!(true))], ..Default::default() }).await.unwrap();
    let pb = pb[0]["Id"].as_str().unwrap().to_string();
    let entries = sf.find(&FindQuery { object: "PricebookEntry".into(), equals: vec![("Pricebook2Id".into(), json!(pb))], ..Default::default() }).await.unwrap();
    let n = 30;
    let mut opps = Vec::new();
    for i in 0..n {
        let acct = sf.create("Account", &rec(json!({"Name": format!("Stormy Weather Client {}", i % 12)})), "k").await.unwrap();
        let o = sf
            .create("Opportunity", &rec(json!({"Name": format!("Deal {i}"), "AccountId": acct["Id"], "StageName": "Prospecting", "CloseDate": "2026-11-20", "Pricebook2Id": pb})), "k")
            .await
            .unwrap();
        let id = o["Id"].as_str().unwrap().to_string();
        for l in 0..(1 + i % 3) {
            let e = &entries[(i + l) % entries.len()];
            sf.create("OpportunityLineItem", &rec(json!({"OpportunityId": id, "PricebookEntryId": e["Id"], "Quantity": 1 + l})), "k").await.unwrap();
        }
        sf.update("Opportunity", &id, &rec(json!({"StageName": "Closed Won"}))).await.unwrap();
        opps.push(id);
    }

    let faults = json!({"rate_5xx": 0.10, "rate_429": 0.05, "drop_rate": 0.03, "slow_rate": 0.05, "slow_ms": 30,
                        "token_expiry_rate": 0.03, "after_write_share": 0.5, "seed": 20261121});
    admin(&qbo.base_url, "faults", faults.clone()).await;
    // Salesforce has no 429: its throttle is a 403 the connector waits out for seconds; the rest applies as is.
    let mut sf_faults = faults;
    sf_faults["rate_429"] = json!(0.0);
    admin(&sfdc.base_url, "faults", sf_faults).await;

    // The engine works through it: polls (which may fail too) and due jobs, until nothing is left to do.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let _ = poller::poll_once(&engine, &flow).await;
        worker::drain(&engine).await.unwrap();
        let c = store.count_jobs().await.unwrap();
        let linked = {
            let mut k = 0;
            for o in &opps {
                if store.find_link(&ledgerlink_model::RecordRef::new("salesforce", "Opportunity", o), "quickbooks", "Invoice").await.unwrap().is_some() {
                    k += 1;
                }
            }
            k
        };
        if linked == n && c.queued == 0 && c.running == 0 {
            break;
        }
        if c.parked > 0 {
            panic!("a transient fault sent a job to review: {:?}", store.list_reviews(None).await.unwrap().iter().map(|r| r.item.reason.clone()).collect::<Vec<_>>());
        }
        assert!(Instant::now() < deadline, "not done in time: {linked}/{n} invoiced, {c:?}");
        assert_eq!(c.dead, 0, "a job was dead-lettered: {:?}", store.list_jobs(&Default::default()).await.unwrap().iter().filter(|j| j.last_error.is_some()).map(|j| j.last_error.clone()).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    admin(&qbo.base_url, "faults", json!({})).await;
    admin(&sfdc.base_url, "faults", json!({})).await;

    // QuickBooks: exactly one invoice per deal.
    let invoices = qb.find(&FindQuery { object: "Invoice".into(), ..Default::default() }).await.unwrap();
    let mut per_opp: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for inv in &invoices {
        let note = inv.get("PrivateNote").and_then(Value::as_str).unwrap_or_default();
        if let Some(o) = opps.iter().find(|o| note.contains(o.as_str())) {
            per_opp.entry(o.as_str()).or_default().push(inv);
        }
    }
    let wrong: Vec<_> = opps.iter().filter(|o| per_opp.get(o.as_str()).map_or(0, Vec::len) != 1).collect();
    assert!(wrong.is_empty(), "deals without exactly one invoice: {wrong:?}");

    // The audit log: every invoice QuickBooks holds has a successful create, nothing else does, and the faults
    // show as failed attempts with their errors.
    let audit = store.list_audit(&ledgerlink_store::AuditFilter { object: Some("Invoice".into()), ..Default::default() }).await.unwrap();
    // "adopted": created by an earlier attempt whose answer was lost, found again by its number.
    let ok_ids: BTreeSet<String> =
        audit.iter().filter(|a| a.entry.outcome == "ok" || a.entry.outcome == "adopted").filter_map(|a| a.entry.record_id.clone()).collect();
    let held: BTreeSet<String> = per_opp.values().map(|v| v[0]["Id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ok_ids, held);
    let failed: Vec<_> = store.list_audit(&Default::default()).await.unwrap().into_iter().filter(|a| a.entry.outcome == "error").collect();
    assert!(failed.iter().all(|a| a.entry.error.as_deref().is_some_and(|e| !e.is_empty())));
    let st = engine.stats.snapshot();
    assert!(st.jobs_retried > 0, "the faults made jobs retry: {st:?}");
    assert_eq!(st.jobs_dead, 0);
    eprintln!("faults: {} retries, {} failed writes audited, {} duplicates prevented", st.jobs_retried, failed.len(), st.duplicates_prevented);
}
