//! `quickbooks-overdue-invoice-follow-up`, end to end against the sandboxes: an invoice that becomes overdue by
//! the passage of time alone gets one Task for its Account's owner, the Account's overdue flag and one Slack
//! message; later sweeps add nothing; paying the invoice clears the flag without another message.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Duration, Utc};
use ledgerlink_connectors::{Connector, FindQuery, Record};
use ledgerlink_engine::executor::{self, PlannedWrite};
use ledgerlink_engine::{Engine, EngineSettings, connections, notifications, templates, triggers, worker};
use ledgerlink_sandbox::{quickbooks, salesforce, slack};
use ledgerlink_store::{AuditFilter, JobFilter, JobStatus, MasterKey, NewConnection, SecretCipher, Store};
use serde_json::{Value, json};

const FLOW: &str = "quickbooks-overdue-invoice-follow-up";
const FLAG: &str = "QuickBooks_Overdue__c";

fn rec(v: Value) -> Record {
    v.as_object().unwrap().clone()
}

async fn admin(base: &str, path: &str, body: Value) {
    let r = ledgerlink_connectors::http::client().post(format!("{base}/sandbox/admin/{path}")).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.text().await.unwrap());
}

async fn slack_messages(base: &str) -> Vec<Value> {
    let r = ledgerlink_connectors::http::client().get(format!("{base}/sandbox/admin/messages")).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    v.as_array().cloned().or_else(|| v["messages"].as_array().cloned()).unwrap_or_default()
}

async fn tasks_on(sf: &Arc<dyn Connector>, account: &str) -> Vec<Record> {
    let fields = ["Id", "Subject", "OwnerId", "WhatId", "Status", "Priority", "Description"].map(String::from).to_vec();
    sf.find(&FindQuery { object: "Task".into(), equals: vec![("WhatId".into(), json!(account))], fields, limit: None }).await.unwrap()
}

async fn flag_of(sf: &Arc<dyn Connector>, account: &str) -> Value {
    sf.get("Account", account, &[FLAG.to_string()]).await.unwrap().unwrap()[FLAG].clone()
}

/// Fires the sweep as the schedule would at `at` and runs it; every job must finish (none dead, none parked).
async fn sweep_at(engine: &Engine, store: &Arc<dyn Store>, at: chrono::DateTime<Utc>) {
    let flow = engine.flows[FLOW].clone();
    triggers::tick(engine, &flow, at).await.unwrap();
    worker::drain(engine).await.unwrap();
    for status in [JobStatus::Dead, JobStatus::Parked] {
        let stuck = store.list_jobs(&JobFilter { status: Some(status), ..Default::default() }).await.unwrap();
        assert!(stuck.is_empty(), "jobs {status:?}: {stuck:#?}\nreviews: {:#?}", store.list_reviews(None).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_falling_overdue_gets_one_task_one_flag_one_message_and_payment_clears_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let store = ledgerlink_store::open(&format!("sqlite://{}/s.sqlite", dir.path().display()), SecretCipher::new(MasterKey::load(dir.path(), None).unwrap()))
        .await
        .unwrap();
    let qbo = quickbooks::start(quickbooks::QuickbooksOptions::default()).await.unwrap();
    let sfdc = salesforce::start(salesforce::SalesforceOptions::default()).await.unwrap();
    let hook = slack::start(slack::SlackOptions::default()).await.unwrap();
    admin(&sfdc.base_url, "fields", json!({"object": "Account", "name": FLAG, "type": "Checkbox"})).await;
    store.put_connection(&connections::from_sandbox_info("quickbooks", &qbo.info).unwrap()).await.unwrap();
    store.put_connection(&connections::from_sandbox_info("salesforce", &sfdc.info).unwrap()).await.unwrap();
    store
        .put_connection(&NewConnection {
            name: "slack".into(),
            system: "slack".into(),
            config: json!({}),
            credentials: json!({"webhook_url": hook.info["webhook_url"]}),
        })
        .await
        .unwrap();
    let flow = templates::load(FLOW, &BTreeMap::new()).unwrap();
    let engine = Engine::with_notifiers(
        store.clone(),
        connections::build_all(store.clone()).await.unwrap(),
        notifications::build_all(store.clone()).await.unwrap(),
        vec![flow],
        EngineSettings::default(),
    )
    .unwrap();
    let (sf, qb) = (engine.connector("salesforce").unwrap().clone(), engine.connector("quickbooks").unwrap().clone());
    engine.prime().await.unwrap();

    // An account owned by a sales rep (not the integration user), a won deal, and its invoice due in three days.
    let users = sf.find(&FindQuery { object: "User".into(), fields: vec!["Id".into(), "Name".into()], ..Default::default() }).await.unwrap();
    let owner = users.iter().find(|u| u["Name"].as_str().is_some_and(|n| n.starts_with("Maria"))).expect("the seeded rep Maria").clone();
    let owner_id = owner["Id"].as_str().unwrap().to_string();
    let account = sf.create("Account", &rec(json!({"Name": "Late Payers Ltd", "OwnerId": owner_id})), "k").await.unwrap();
    let account_id = account["Id"].as_str().unwrap().to_string();
    let opp = sf
        .create("Opportunity", &rec(json!({"Name": "Late Payers renewal", "AccountId": account_id, "StageName": "Closed Won", "CloseDate": "2026-11-01"})), "k")
        .await
        .unwrap();
    let opp_id = opp["Id"].as_str().unwrap().to_string();
    let customer = qb.find(&FindQuery { object: "Customer".into(), limit: Some(1), ..Default::default() }).await.unwrap().remove(0);
    let item = qb.find(&FindQuery { object: "Item".into(), equals: vec![("Type".into(), json!("Service"))], limit: Some(1), ..Default::default() }).await.unwrap().remove(0);
    let today = Utc::now().date_naive();
    let invoice = qb
        .create(
            "Invoice",
            &rec(json!({
                "CustomerRef": {"value": customer["Id"]}, "DocNumber": format!("SF-{opp_id}"),
                "TxnDate": (today - Duration::days(27)).to_string(), "DueDate": (today + Duration::days(3)).to_string(),
                "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 480.25,
                          "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": 1, "UnitPrice": 480.25, "TaxCodeRef": {"value": "NON"}}}]
            })),
            "overdue-test-invoice",
        )
        .await
        .unwrap();
    let doc = invoice["DocNumber"].as_str().unwrap().to_string();

    // Today: not yet due. The sweep touches nothing of ours (the sandbox's own seeded overdue invoice has no SF- number).
    sweep_at(&engine, &store, Utc::now() + Duration::hours(1)).await;
    assert!(tasks_on(&sf, &account_id).await.is_empty());
    assert_ne!(flag_of(&sf, &account_id).await, json!(true));
    assert!(slack_messages(&hook.base_url).await.is_empty(), "nothing to say yet");

    // Five days later, with no edit to the invoice, it is overdue. A dry run first: it plans the Task, the flag
    // and the message, and does none of them.
    admin(&qbo.base_url, "clock/advance", json!({"seconds": 5 * 86_400})).await;
    let flow = engine.flows[FLOW].clone();
    let plan = executor::plan_flow(&engine, &flow, triggers::firing_record(&flow, Utc::now() + Duration::days(5))).await.unwrap();
    let planned_notice = |plan: &executor::Plan| {
        plan.writes.iter().any(|w| matches!(w, PlannedWrite::Notify { connection, title, .. } if connection == "slack" && *title == format!("Invoice {doc} is overdue")))
    };
    assert!(planned_notice(&plan), "{plan:#?}");
    assert!(plan.writes.iter().any(|w| matches!(w, PlannedWrite::Create { object, .. } if object == "Task")), "{plan:#?}");
    assert!(plan.writes.iter().any(|w| matches!(w, PlannedWrite::Update { object, id, .. } if object == "Account" && *id == account_id)), "{plan:#?}");
    assert!(tasks_on(&sf, &account_id).await.is_empty() && slack_messages(&hook.base_url).await.is_empty(), "a dry run does nothing");
    sweep_at(&engine, &store, Utc::now() + Duration::days(5)).await;
    let tasks = tasks_on(&sf, &account_id).await;
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    let task = &tasks[0];
    assert_eq!(task["OwnerId"], json!(owner_id), "the Task is for the Account's owner");
    assert_eq!(task["Subject"], json!(format!("Overdue invoice {doc} — follow up with Late Payers Ltd")));
    assert_eq!(task["Status"], "Not Started");
    assert_eq!(task["Priority"], "High");
    assert!(task["Description"].as_str().unwrap().contains("480.25"), "{task:?}");
    assert_eq!(flag_of(&sf, &account_id).await, json!(true));
    let messages = slack_messages(&hook.base_url).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let text = messages[0]["text"].as_str().unwrap();
    assert!(text.contains(&format!("Invoice {doc} is overdue")) && text.contains("Late Payers Ltd") && text.contains("480.25"), "{text}");

    // The next sweeps change nothing: no second Task, no second message, no write (and a dry run plans none).
    let plan = executor::plan_flow(&engine, &flow, triggers::firing_record(&flow, Utc::now() + Duration::days(6))).await.unwrap();
    assert!(plan.writes.is_empty(), "{plan:#?}");
    let writes = store.list_audit(&AuditFilter::default()).await.unwrap().len();
    sweep_at(&engine, &store, Utc::now() + Duration::days(6)).await;
    sweep_at(&engine, &store, Utc::now() + Duration::days(6) + Duration::hours(2)).await;
    assert_eq!(tasks_on(&sf, &account_id).await.len(), 1);
    assert_eq!(slack_messages(&hook.base_url).await.len(), 1);
    assert_eq!(store.list_audit(&AuditFilter::default()).await.unwrap().len(), writes, "a re-run writes nothing");

    // Paid in full: the next sweep clears the flag and posts nothing.
    qb.create(
        "Payment",
        &rec(json!({"CustomerRef": {"value": customer["Id"]}, "TotalAmt": 480.25,
                    "Line": [{"Amount": 480.25, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}]})),
        "overdue-test-payment",
    )
    .await
    .unwrap();
    sweep_at(&engine, &store, Utc::now() + Duration::days(7)).await;
    assert_eq!(flag_of(&sf, &account_id).await, json!(false), "paying the invoice clears the flag");
    assert_eq!(tasks_on(&sf, &account_id).await.len(), 1, "the Task stays (closing it is the owner's call)");
    assert_eq!(slack_messages(&hook.base_url).await.len(), 1, "no message when a flag clears");
}
